//! The Python bridge's side of PEP 3333, through `tests/python/probe_app.py`:
//! every environ key and its type, wsgi.input's methods, write(), exc_info,
//! close() always called, wsgi.file_wrapper by sendfile, wsgi.errors into
//! the error log, bad responses refused as 500s; then the process model:
//! C extensions and multiprocessing in the embedded interpreter, --threads
//! with the GIL let go while the server waits, --preload, load failures.

use std::collections::HashSet;
use std::io::Write as _;

use serde_json::Value;

use crate::harness::{
    Conn, Framing, Prng, Server, TempDir, WAIT, chunked, get, request, unique_socket_path,
    wsgi_testapp_dir,
};
use crate::wsgi_harness::python_dir;

fn probe_with<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> Server {
    Server::builder("probe_app")
        .arg("--chdir")
        .arg(python_dir().to_str().unwrap())
        .args(args)
        .start()
}

fn probe() -> Server {
    probe_with(Vec::<String>::new())
}

fn post(conn: &mut Conn, target: &str, body: &[u8]) -> Value {
    let response = conn.request(&request("POST", target, &[], body));
    response.assert_status(200);
    response.json()
}

fn post_chunked(conn: &mut Conn, target: &str, body: &[u8], sizes: &[usize]) -> Value {
    let mut raw =
        format!("POST {target} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    raw.extend(chunked(body, sizes));
    let response = conn.request(&raw);
    response.assert_status(200);
    response.json()
}

// ---------------------------------------------------------------------------
// environ
// ---------------------------------------------------------------------------

#[test]
fn environ_has_every_key_with_its_type() {
    let server = probe();
    let mut conn = server.connect();
    let raw = request(
        "PUT",
        "/environ/caf%C3%A9%20x?q=%20&r",
        &[
            ("Content-Type", "text/plain; charset=utf-8"),
            ("X-Under_Score", "dropped"),
            ("Cookie", "a=1"),
            ("Cookie", "b=2"),
            ("Accept", "text/html"),
            ("accept", "text/plain"),
            ("X-Text", "café"),
        ],
        b"body",
    );
    let env = conn.request(&raw).json();
    let local = conn.tcp_stream().local_addr().unwrap();
    assert_eq!(env["REQUEST_METHOD"], "PUT");
    assert_eq!(env["SCRIPT_NAME"], "");
    // PEP 3333: the decoded path's bytes, each as one latin-1 character.
    assert_eq!(env["PATH_INFO"], "/environ/caf\u{c3}\u{a9} x");
    let bytes: Vec<u8> = b"/environ/caf\xc3\xa9 x".to_vec();
    assert_eq!(env["path_bytes"], serde_json::json!(bytes));
    assert_eq!(env["QUERY_STRING"], "q=%20&r");
    assert_eq!(env["RAW_URI"], "/environ/caf%C3%A9%20x?q=%20&r");
    assert_eq!(env["CONTENT_TYPE"], "text/plain; charset=utf-8");
    assert_eq!(env["CONTENT_LENGTH"], "4");
    assert_eq!(env["SERVER_NAME"], "127.0.0.1");
    assert_eq!(env["SERVER_PORT"], server.addr().port().to_string());
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(env["REMOTE_PORT"], local.port().to_string());
    assert_eq!(env["HTTP_HOST"], "localhost");
    assert_eq!(env["HTTP_COOKIE"], "a=1; b=2");
    assert_eq!(env["HTTP_ACCEPT"], "text/html, text/plain");
    // Header values too are their bytes as latin-1 (here UTF-8 'é').
    assert_eq!(env["HTTP_X_TEXT"], "caf\u{c3}\u{a9}");
    for absent in [
        "HTTP_CONTENT_TYPE",
        "HTTP_CONTENT_LENGTH",
        "HTTP_X_UNDER_SCORE",
    ] {
        assert!(env.get(absent).is_none(), "{absent} in {env:#}");
    }
    assert_eq!(env["wsgi.version"], serde_json::json!([1, 0]));
    assert_eq!(env["wsgi.url_scheme"], "http");
    assert_eq!(env["wsgi.run_once"], false);
    assert_eq!(env["wsgi.input_terminated"], "<class 'bool'>");
    assert_eq!(env["wsgi.input"], "<class 'rgun.Input'>");
    assert_eq!(env["wsgi.errors"], "<class 'rgun.ErrorStream'>");
    assert_eq!(env["wsgi.file_wrapper"], "<class 'type'>");
    // One worker, one thread.
    assert_eq!(env["wsgi.multithread"], false);
    assert_eq!(env["wsgi.multiprocess"], false);
    // Every CGI key is a str (the probe shows other types by name).
    for (key, value) in env.as_object().unwrap() {
        if !key.contains('.') && key != "path_bytes" {
            assert!(value.is_string(), "{key} is not a str: {value}");
        }
    }
    // No body, no CONTENT_LENGTH; and a second request on the connection
    // sees its own values, not the first one's.
    let env = conn.request(&get("/environ")).json();
    assert!(env.get("CONTENT_LENGTH").is_none(), "{env:#}");
    assert!(env.get("CONTENT_TYPE").is_none(), "{env:#}");
    assert!(env.get("HTTP_COOKIE").is_none(), "{env:#}");
    assert_eq!(env["QUERY_STRING"], "");
    assert_eq!(env["REQUEST_METHOD"], "GET");
}

#[test]
fn multithread_and_multiprocess_follow_the_flags() {
    let server = probe_with(["--workers", "2", "--threads", "3"]);
    let env = server.get("/environ").json();
    assert_eq!(env["wsgi.multithread"], true);
    assert_eq!(env["wsgi.multiprocess"], true);
}

#[test]
fn unix_socket_environ() {
    let path = unique_socket_path("wsgi-env");
    let server = Server::builder("probe_app")
        .arg("--chdir")
        .arg(python_dir().to_str().unwrap())
        .bind(format!("unix:{}", path.display()))
        .start();
    let env = Conn::unix(&path).request(&get("/environ")).json();
    assert_eq!(env["REMOTE_ADDR"], "");
    assert_eq!(env["REMOTE_PORT"], "");
    assert_eq!(env["SERVER_NAME"], "localhost");
    assert_eq!(env["SERVER_PORT"], "80");
    drop(server);
}

// ---------------------------------------------------------------------------
// wsgi.input
// ---------------------------------------------------------------------------

#[test]
fn input_read_in_pieces_and_whole() {
    let server = probe();
    let mut conn = server.connect();
    assert_eq!(
        post(&mut conn, "/read?size=4", b"abcdefghij"),
        serde_json::json!(["abcd", "efgh", "ij", ""])
    );
    assert_eq!(
        post(&mut conn, "/read", b"abcdefghij"),
        serde_json::json!(["abcdefghij"])
    );
    assert_eq!(
        post_chunked(&mut conn, "/read?size=4", b"abcdefghij", &[3, 1, 5]),
        serde_json::json!(["abcd", "efgh", "ij", ""])
    );
    assert_eq!(
        post_chunked(&mut conn, "/read-none", b"abcdefghij", &[2]),
        serde_json::json!("abcdefghij")
    );
    // No body at all.
    let r = conn.request(&get("/read"));
    assert_eq!(r.json(), serde_json::json!([""]));
    // A larger body read whole, both framings.
    let big = Prng::new(7).bytes(300_000);
    let text: String = big.iter().map(|&b| char::from(b)).collect();
    assert_eq!(post(&mut conn, "/read", &big)[0], text.as_str());
    assert_eq!(
        post_chunked(&mut conn, "/read", &big, &[70_000, 3, 1000])[0],
        text.as_str()
    );
}

#[test]
fn input_readline_readlines_and_iteration() {
    let server = probe();
    let mut conn = server.connect();
    let body = b"one\ntwo\n\nthree";
    assert_eq!(
        post(&mut conn, "/readline", body),
        serde_json::json!(["one\n", "two\n", "\n", "three"])
    );
    assert_eq!(
        post(&mut conn, "/readline?size=2", body),
        serde_json::json!(["on", "e\n", "tw", "o\n", "\n", "th", "re", "e"])
    );
    assert_eq!(
        post_chunked(&mut conn, "/readline", body, &[1, 2, 3]),
        serde_json::json!(["one\n", "two\n", "\n", "three"])
    );
    assert_eq!(
        post(&mut conn, "/readlines", body),
        serde_json::json!(["one\n", "two\n", "\n", "three"])
    );
    assert_eq!(
        post(&mut conn, "/readlines?hint=5", body),
        serde_json::json!(["one\n", "two\n"])
    );
    assert_eq!(
        post_chunked(&mut conn, "/iterate", body, &[5]),
        serde_json::json!(["one\n", "two\n", "\n", "three"])
    );
    // A line longer than readline's buffer.
    let long = format!("{}\nshort\n", "x".repeat(20_000));
    let lines = post(&mut conn, "/readline", long.as_bytes());
    assert_eq!(lines[0].as_str().unwrap().len(), 20_001);
    assert_eq!(lines[1], "short\n");
}

#[test]
fn input_methods_share_one_stream() {
    let server = probe();
    let mut conn = server.connect();
    let body = b"first line\n12345abcrest of it";
    let expected = serde_json::json!(["first line\n", "12345", "abc", "rest of it"]);
    assert_eq!(post(&mut conn, "/mixed", body), expected);
    assert_eq!(post_chunked(&mut conn, "/mixed", body, &[4, 9]), expected);
}

// ---------------------------------------------------------------------------
// start_response, write, exc_info, close
// ---------------------------------------------------------------------------

#[test]
fn write_callable_streams_before_the_iterable() {
    let server = probe();
    let mut conn = server.connect();
    let r = conn.request(&get("/write"));
    r.assert_status(200);
    assert_eq!(r.text(), "written then returned");
    assert!(matches!(r.framing, Framing::Chunked(_)), "{r:#?}");
    let r = conn.request(&get("/write-with-length"));
    assert_eq!(r.text(), "hello world");
    assert_eq!(r.framing, Framing::ContentLength);
}

#[test]
fn start_response_inside_the_iterable_and_empty_bodies() {
    let server = probe();
    let mut conn = server.connect();
    assert_eq!(conn.request(&get("/generator")).text(), "late start");
    let empty = conn.request(&get("/empty"));
    empty.assert_status(200);
    assert_eq!(empty.header("content-length"), Some("0"));
    assert!(empty.body.is_empty());
    // HEAD keeps the length the application declared for GET.
    conn.send(b"HEAD /head-length HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let head = conn.read_head_response();
    assert_eq!(head.header("content-length"), Some("5"));
    assert_eq!(conn.request(&get("/head-length")).text(), "hello");
}

#[test]
fn exc_info_replaces_the_head_before_the_body() {
    let server = probe();
    let r = server.get("/exc-info-before");
    r.assert_status(503);
    assert_eq!(r.header("x-replaced"), Some("yes"));
    assert_eq!(r.text(), "replaced");
}

#[test]
fn exc_info_after_the_body_began_reraises_and_cuts_the_answer() {
    let server = probe();
    let mut conn = server.connect();
    conn.send(&get("/exc-info-after"));
    let (answer, _) = conn.read_to_end();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("partial"), "{answer}");
    assert!(!answer.contains("never"), "{answer}");
    assert!(
        !answer.ends_with("0\r\n\r\n"),
        "the cut answer looks complete: {answer}"
    );
    server.wait_for_log("ValueError: probe: too late to change my mind", WAIT);
}

#[test]
fn start_response_twice_without_exc_info_is_an_error() {
    let server = probe();
    server.get("/start-twice").assert_status(500);
    server.wait_for_log("AssertionError", WAIT);
}

#[test]
fn close_is_called_on_success_failure_and_early_failure() {
    let server = probe();
    let mut conn = server.connect();
    let closed = |conn: &mut Conn| conn.request(&get("/closed")).json();
    assert_eq!(closed(&mut conn), 0);
    assert_eq!(conn.request(&get("/close")).text(), "abc");
    assert_eq!(closed(&mut conn), 1);
    // Failing before any body byte: a 500, and close() still called.
    conn.request(&get("/close-raise?after=0"))
        .assert_status(500);
    let mut conn = server.connect();
    assert_eq!(closed(&mut conn), 2);
    // Failing half-way: the answer is cut, close() still called.
    let mut cut = server.connect();
    cut.send(&get("/close-raise?after=1"));
    let (answer, _) = cut.read_to_end();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert_eq!(closed(&mut conn), 3);
    server.wait_for_log("RuntimeError: probe: failing half-way", WAIT);
}

// ---------------------------------------------------------------------------
// wsgi.file_wrapper, wsgi.errors
// ---------------------------------------------------------------------------

#[test]
fn file_wrapper_sends_a_real_file_by_sendfile() {
    let dir = TempDir::new("wsgi-file");
    let path = dir.join("data.bin");
    let data = Prng::new(42).bytes(100_000);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&data)
        .unwrap();
    let server = probe();
    let mut conn = server.connect();
    let target = format!("/file?path={}", path.display());
    let r = conn.request(&get(&target));
    r.assert_status(200);
    assert_eq!(r.body, data);
    // One piece: the whole file went by sendfile, not in 4096-byte blocks.
    assert_eq!(
        r.framing,
        Framing::Chunked(vec![data.len()]),
        "{:?}",
        r.framing
    );
    // From where the application left the file, for the length it said.
    let r = conn.request(&get(&format!("{target}&skip=1000&length=500")));
    assert_eq!(r.body, &data[1000..1500]);
    assert_eq!(r.framing, Framing::ContentLength);
    // Not a real file: iterated in the wrapper's blocks.
    let r = conn.request(&get("/file-bytesio"));
    assert_eq!(r.body, vec![b'z'; 10_000]);
    assert_eq!(r.framing, Framing::Chunked(vec![1000; 10]));
}

#[test]
fn wsgi_errors_lines_go_to_the_error_log() {
    let server = probe();
    server.get("/errors").assert_status(200);
    for line in [
        "probe: first line",
        "probe: second line",
        "probe: unfinished",
    ] {
        let logged = server.wait_for_log(line, WAIT);
        assert!(logged.contains("[ERROR]"), "{logged:?}");
    }
}

// ---------------------------------------------------------------------------
// Refused responses
// ---------------------------------------------------------------------------

#[test]
fn bad_responses_are_logged_500s() {
    let server = probe();
    for (target, logged) in [
        (
            "/str-body",
            "TypeError: the response iterable must yield bytes, not str",
        ),
        (
            "/no-start-response",
            "the response body began before start_response was called",
        ),
        ("/non-latin1-header", "is not latin-1"),
        ("/bad-status?status=OK", "is not a three-digit code"),
        ("/bad-status?status=2000%20Big", "is not a three-digit code"),
    ] {
        let r = server.get(target);
        assert_eq!(r.status, 500, "{target}: {r:#?}");
        server.wait_for_log(logged, WAIT);
    }
    // The worker lives on.
    server.get("/environ").assert_status(200);
}

#[test]
fn latin1_header_values_go_out_as_latin1_bytes() {
    let server = probe();
    let mut conn = server.connect();
    conn.send(b"GET /latin1-header HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let (answer, _) = conn.read_to_end();
    assert!(
        answer.windows(13).any(|w| w == b"X-Latin: caf\xe9"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}

// ---------------------------------------------------------------------------
// The interpreter and the process model
// ---------------------------------------------------------------------------

#[test]
fn c_extensions_import_and_sys_is_set_up_like_gunicorn() {
    let server = probe_with(["--pythonpath", "extra-dir"]);
    let info = server.get("/interpreter").json();
    // Modules written in C load into the embedded interpreter.
    assert_eq!(info["json_c"], "_json");
    assert_eq!(info["markupsafe"], "markupsafe._speedups");
    // The working directory comes first on sys.path, then --pythonpath
    // (made absolute).
    let path: Vec<&str> = info["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let dir = python_dir();
    assert_eq!(path[0], dir.to_str().unwrap(), "{path:?}");
    assert!(
        path.contains(&dir.join("extra-dir").to_str().unwrap()),
        "{path:?}"
    );
    // sys.executable is a Python, not rgun.
    let exe = info["executable"].as_str().unwrap();
    assert!(
        std::path::Path::new(exe).is_file() && !exe.ends_with("rgun"),
        "{exe}"
    );
    assert!(info["argv"][0].as_str().unwrap().ends_with("rgun"));
}

#[test]
fn multiprocessing_starts_real_python_children() {
    let server = probe();
    for method in ["spawn", "fork"] {
        let r = server.get(&format!("/multiprocessing?method={method}"));
        r.assert_status(200);
        let info = r.json();
        assert_eq!(info["squared"], 49, "{method}");
        let exe = info["executable"].as_str().unwrap();
        assert!(!exe.ends_with("rgun"), "{method}: {exe}");
        assert_ne!(info["child"], server.wait_for_workers(1)[0], "{method}");
    }
    server.get("/environ").assert_status(200);
}

#[test]
fn a_forked_child_does_not_keep_the_workers_signal_handlers() {
    let server = probe();
    let worker = server.wait_for_workers(1)[0];
    // SIGTERM ends the child at once (under the worker's handler it would
    // sleep on, and the worker itself would be told to stop).
    let r = server.get("/fork-term").json();
    assert_eq!(r["signal"], r["sigterm"], "{r}");
    assert_eq!(server.get("/interpreter").json()["pid"], worker);
    assert!(
        !server.stderr.text().contains("Handling signal"),
        "{}",
        server.stderr.text()
    );
}

#[test]
fn threads_run_requests_at_once() {
    let server = probe_with(["--threads", "4"]);
    let addr = server.addr();
    // Two requests meet at a barrier: they pass only if the worker runs
    // them at the same time (one thread would wait out the barrier).
    let idents: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(move || {
                    let r = Conn::tcp(addr).request(&get("/barrier"));
                    r.assert_status(200);
                    r.json()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_ne!(idents[0], idents[1]);
}

#[test]
fn the_gil_is_released_while_a_request_waits_for_its_body() {
    let server = probe_with(["--threads", "2"]);
    // A request whose body has not all come: its thread waits in the
    // server's read_body...
    let mut slow = server.connect();
    slow.send(b"POST /read HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234");
    slow.wait_until_server_read();
    // ...and another request runs Python meanwhile.
    let env = server.get("/environ").json();
    assert_eq!(env["REQUEST_METHOD"], "GET");
    slow.send(b"56789");
    assert_eq!(
        slow.read_response().json(),
        serde_json::json!(["0123456789"])
    );
}

#[test]
fn preload_imports_the_app_once_in_the_master() {
    let server = Server::builder("probe_app")
        .arg("--chdir")
        .arg(python_dir().to_str().unwrap())
        .args(["--preload", "--workers", "2"])
        .wait_for_workers(2)
        .start();
    let master = server.pid();
    let workers: HashSet<u32> = server.wait_for_workers(2).into_iter().collect();
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let info = server.get("/interpreter").json();
        assert_eq!(info["imported_in"], master, "{info}");
        seen.insert(info["pid"].as_u64().unwrap() as u32);
        if seen.len() == 2 {
            break;
        }
    }
    assert!(seen.is_subset(&workers), "{seen:?} not among {workers:?}");
    // A forked interpreter still forks and spawns.
    assert_eq!(
        server.get("/multiprocessing?method=fork").json()["squared"],
        49
    );
    assert_eq!(
        server.get("/multiprocessing?method=spawn").json()["squared"],
        49
    );
}

#[test]
fn default_callable_is_application_then_app() {
    // probe_app has `application`; testapp_wsgi only `app`.
    probe().get("/environ").assert_status(200);
    let server = Server::builder("testapp_wsgi")
        .arg("--chdir")
        .arg(wsgi_testapp_dir().to_str().unwrap())
        .start();
    assert_eq!(server.get("/").text(), "Hello, World!");
}

// ---------------------------------------------------------------------------
// Load failures
// ---------------------------------------------------------------------------

/// Start rgun on `app` and expect it to stop with `code`, its log holding a
/// line with every string in `mentions`; return the log.
fn assert_load_failure(app: &str, args: &[&str], code: i32, mentions: &[&str]) -> String {
    let mut server = Server::builder(app)
        .arg("--chdir")
        .arg(python_dir().to_str().unwrap())
        .args(args.iter().copied())
        .spawn();
    let status = server.wait_exit(WAIT);
    let log = server.stderr.text();
    assert_eq!(
        status.code(),
        Some(code),
        "{}; log:\n{log}",
        Server::describe(status)
    );
    assert!(!log.contains("panicked"), "a panic:\n{log}");
    let line = log
        .lines()
        .find(|l| mentions.iter().all(|m| l.contains(m)))
        .unwrap_or_else(|| panic!("no line mentions all of {mentions:?}:\n{log}"));
    assert!(line.contains("[ERROR]"), "{line}");
    log
}

#[test]
fn a_missing_module_is_one_line_naming_it() {
    let log = assert_load_failure(
        "no_such_module:app",
        &["--workers", "2"],
        4,
        &[
            "cannot load application",
            "'no_such_module'",
            "no module named",
        ],
    );
    assert!(!log.contains("Traceback"), "{log}");
    // With --preload the master finds out itself, before any worker.
    let log = assert_load_failure(
        "no_such_module:app",
        &["--preload"],
        4,
        &[
            "cannot load application",
            "no module named 'no_such_module'",
        ],
    );
    assert!(!log.contains("Booting worker"), "{log}");
}

#[test]
fn a_missing_or_uncallable_attribute_is_one_line() {
    assert_load_failure(
        "probe_app:nothing",
        &[],
        4,
        &["module 'probe_app' has no attribute 'nothing'"],
    );
    assert_load_failure(
        "probe_app:CLOSED",
        &[],
        4,
        &["CLOSED in module 'probe_app' is not callable"],
    );
}

#[test]
fn an_exception_at_import_is_logged_with_its_traceback() {
    let dir = TempDir::new("wsgi-broken");
    std::fs::write(
        dir.join("broken_app.py"),
        "import os\n\ndef helper():\n    raise ValueError('broken at import')\n\nhelper()\n",
    )
    .unwrap();
    let mut server = Server::builder("broken_app:app")
        .arg("--chdir")
        .arg(dir.join("").to_str().unwrap())
        .spawn();
    let status = server.wait_exit(WAIT);
    let log = server.stderr.text();
    // Gunicorn's APP_LOAD_ERROR: the application does not import.
    assert_eq!(status.code(), Some(4), "{log}");
    assert!(log.contains("Traceback (most recent call last)"), "{log}");
    assert!(log.contains("ValueError: broken at import"), "{log}");
    assert!(log.contains("broken_app.py\", line 4, in helper"), "{log}");
}
