//! The access log (issue 12): every Gunicorn atom of `--access-logformat`
//! on a request whose every part is known, the default combined line,
//! `--access-log-json` against header values made to break it, a log that
//! cannot keep up (a pipe nobody reads) without the worker waiting on it,
//! and a bad format refused at startup.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use serde_json::Value;

use crate::harness::{
    App, Conn, Server, TempDir, WAIT, get, test_each_app, testapp, unique_socket_path,
};

test_each_app!(every_atom, json_line_survives_hostile_headers);

/// Every documented atom, `|` between them (no value below holds one).
const ALL_ATOMS: &str = "%(h)s|%(l)s|%(u)s|%(t)s|%(r)s|%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(b)s|\
%(f)s|%(a)s|%(T)s|%(M)s|%(D)s|%(L)s|%(p)s|%({X-Custom}i)s|%({x-test}O)s|%({QUERY_STRING}e)s|\
%({HTTP_X_CUSTOM}e)s|%({no-such}i)s|%({no-such}o)s|%({NO_SUCH}e)s|%(zz)s|100%%";

/// `alice:secret`, base64.
const BASIC_ALICE: &str = "Basic YWxpY2U6c2VjcmV0";

/// A request through `/header` (the test application sets `X-Test: tv` on
/// its answer), its path's `e` percent-encoded, with known headers.
fn atoms_request() -> Vec<u8> {
    format!(
        "GET /h%65ader?name=X-Test&value=tv HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: {BASIC_ALICE}\r\nReferer: http://ref/\r\nUser-Agent: atoms-agent\r\n\
         X-Custom: one\r\nx-custom: two\r\n\r\n"
    )
    .into_bytes()
}

fn every_atom(app: App) {
    let server = app.start_with(["--access-logfile", "-", "--access-logformat", ALL_ATOMS]);
    let mut conn = server.connect();
    let response = conn.request(&atoms_request());
    response.assert_status(200);
    let body_len = response.body.len();
    let pid = conn.request(&get("/pid")).text();
    let line = server.stdout.wait_for("/h%65ader", WAIT);
    let f: Vec<&str> = line.split('|').collect();
    assert_eq!(f.len(), 28, "{line:?}");
    assert_eq!(f[0], "127.0.0.1", "h");
    assert_eq!(f[1], "-", "l");
    assert_eq!(f[2], "alice", "u");
    assert!(is_clf_time(f[3]), "t: {:?}", f[3]);
    assert_eq!(f[4], "GET /h%65ader?name=X-Test&value=tv HTTP/1.1", "r");
    assert_eq!(f[5], "GET", "m");
    assert_eq!(f[6], "/header", "U: decoded");
    assert_eq!(f[7], "name=X-Test&value=tv", "q");
    assert_eq!(f[8], "HTTP/1.1", "H");
    assert_eq!(f[9], "200", "s");
    assert_eq!(f[10], body_len.to_string(), "B");
    assert_eq!(f[11], body_len.to_string(), "b");
    assert_eq!(f[12], "http://ref/", "f");
    assert_eq!(f[13], "atoms-agent", "a");
    // The four durations are one measurement in four units.
    let micros: u64 = f[16].parse().expect("D is a number");
    assert_eq!(f[14], (micros / 1_000_000).to_string(), "T");
    assert_eq!(f[15], (micros / 1_000).to_string(), "M");
    let decimal = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    assert_eq!(f[17], decimal, "L");
    assert_eq!(f[18], format!("<{pid}>"), "p: the worker's pid");
    assert_eq!(f[19], "two", "{{X-Custom}}i: the last line, as Gunicorn");
    assert_eq!(f[20], "tv", "{{x-test}}O: a response header, any case");
    assert_eq!(f[21], "name=X-Test&value=tv", "{{QUERY_STRING}}e");
    assert_eq!(
        f[22], "one, two",
        "{{HTTP_X_CUSTOM}}e: joined as in the environ"
    );
    assert_eq!(&f[23..27], ["-", "-", "-", "-"], "absent and unknown atoms");
    assert_eq!(f[27], "100%", "%% is a percent sign");
}

/// On a Unix socket: no remote address, and the server's name and port
/// from the Host header, as the WSGI bridge puts them in the environ.
#[test]
fn unix_socket_atoms() {
    let socket = unique_socket_path("alog");
    let format =
        "%(h)s|%({SERVER_NAME}e)s|%({SERVER_PORT}e)s|%({REMOTE_PORT}e)s|%({REMOTE_ADDR}e)s|%(r)s";
    let server = Server::builder(testapp())
        .bind(format!("unix:{}", socket.display()))
        .args(["--access-logfile", "-", "--access-logformat", format])
        .start();
    let mut conn = Conn::unix(&socket);
    conn.request(b"GET /bytes?n=1 HTTP/1.1\r\nHost: example.org:8443\r\n\r\n")
        .assert_status(200);
    let line = server.stdout.wait_for("/bytes?n=1", WAIT);
    assert_eq!(line, "-|example.org|8443|||GET /bytes?n=1 HTTP/1.1");
}

/// The forwarded client (issue 13) as `%({rgun.client_addr}e)s`: from the
/// trusted loopback peer its X-Forwarded-For names the client; `%(h)s`
/// stays the peer, as in Gunicorn.
#[test]
fn the_forwarded_client_is_an_environ_atom() {
    let format = "%(h)s|%({rgun.client_addr}e)s|%(r)s";
    let server = Server::builder(testapp())
        .args(["--access-logfile", "-", "--access-logformat", format])
        .start();
    let mut conn = server.connect();
    conn.request(
        b"GET /bytes?n=2 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7, 127.0.0.1\r\n\r\n",
    )
    .assert_status(200);
    conn.request(b"GET /bytes?n=3 HTTP/1.1\r\nHost: x\r\n\r\n")
        .assert_status(200);
    let forwarded = server.stdout.wait_for("/bytes?n=2", WAIT);
    assert_eq!(forwarded, "127.0.0.1|203.0.113.7|GET /bytes?n=2 HTTP/1.1");
    let direct = server.stdout.wait_for("/bytes?n=3", WAIT);
    assert_eq!(direct, "127.0.0.1|127.0.0.1|GET /bytes?n=3 HTTP/1.1");
}

/// `[21/Nov/2026:03:37:36 +0000]`
fn is_clf_time(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 28
        && b[0] == b'['
        && digits(1..3)
        && b[3] == b'/'
        && b[4..7].iter().all(u8::is_ascii_alphabetic)
        && b[7] == b'/'
        && digits(8..12)
        && b[12] == b':'
        && digits(13..15)
        && digits(16..18)
        && digits(19..21)
        && text.ends_with(" +0000]")
}

/// The default line, byte for byte but the time, for a request with a
/// quote and a backslash in its User-Agent and an empty answer; and the
/// same line from Gunicorn's default format given explicitly.
#[test]
fn default_line_is_apache_combined() {
    let gunicorn_default = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;
    for args in [
        vec!["--access-logfile", "-"],
        vec![
            "--access-logfile",
            "-",
            "--access-logformat",
            gunicorn_default,
        ],
    ] {
        let server = Server::testapp_with(args);
        let mut conn = server.connect();
        conn.request(b"GET /bytes?n=0 HTTP/1.1\r\nHost: x\r\nUser-Agent: a \"q\" \\b\r\n\r\n")
            .assert_status(200);
        conn.request(b"GET /bytes?n=5 HTTP/1.0\r\nReferer: http://r/\r\n\r\n")
            .assert_status(200);
        let empty = server.stdout.wait_for("n=0", WAIT);
        let (before, after) = split_time(&empty);
        assert_eq!(before, "127.0.0.1 - - ");
        assert_eq!(
            after,
            r#" "GET /bytes?n=0 HTTP/1.1" 200 - "-" "a \x22q\x22 \x5cb""#
        );
        let five = server.stdout.wait_for("n=5", WAIT);
        let (before, after) = split_time(&five);
        assert_eq!(before, "127.0.0.1 - - ");
        assert_eq!(after, r#" "GET /bytes?n=5 HTTP/1.0" 200 5 "http://r/" "-""#);
    }
}

/// The text before and after the `[time]` of a combined line.
fn split_time(line: &str) -> (&str, &str) {
    let open = line.find('[').expect("a time");
    let close = line.find(']').expect("a time");
    assert!(is_clf_time(&line[open..=close]), "{line:?}");
    (&line[..open], &line[close + 1..])
}

/// What a header value may hold (RFC 9110 §5.5: visible bytes, SP, HTAB,
/// obs-text) chosen to end a JSON string, object or line: quotes,
/// backslashes, escapes spelled out, a tab, and every byte from 0x80.
fn hostile_value() -> Vec<u8> {
    let mut value = br#"x" , "forged": "yes", "\"}\n{"status":999} \u0000"#.to_vec();
    value.extend_from_slice(b"\ttab\t");
    value.extend(0x80..=0xffu8);
    value.extend_from_slice(b" end");
    value
}

fn json_line_survives_hostile_headers(app: App) {
    let format = "%(h)s %(r)s %(s)s %(a)s %(B)s %(b)s %(L)s %({x-evil}i)s %({X-EVIL}i)s \
                  %({x-test}o)s %({http_x_evil}e)s %({absent}i)s";
    let server = app.start_with([
        "--access-logfile",
        "-",
        "--access-log-json",
        "--access-logformat",
        format,
    ]);
    let evil = hostile_value();
    let mut request =
        b"GET /header?name=X-Test&value=out HTTP/1.1\r\nHost: x\r\nUser-Agent: ua\"\\\r\nX-Evil: "
            .to_vec();
    request.extend_from_slice(&evil);
    request.extend_from_slice(b"\r\n\r\n");
    let mut conn = server.connect();
    conn.request(&request).assert_status(200);
    // A second request: its line must be a line of its own.
    conn.request(&get("/bytes?n=3")).assert_status(200);
    server.stdout.wait_for("n=3", WAIT);
    let lines: Vec<String> = server
        .stdout
        .lines()
        .into_iter()
        .filter(|l| l.starts_with('{'))
        .collect();
    assert_eq!(lines.len(), 2, "one line per request: {lines:#?}");
    let object: Value = serde_json::from_str(&lines[0])
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", lines[0]));
    let latin1: String = evil.iter().map(|&b| char::from(b)).collect();
    assert_eq!(object["remote_addr"], "127.0.0.1");
    assert_eq!(
        object["request"],
        "GET /header?name=X-Test&value=out HTTP/1.1"
    );
    assert_eq!(object["status"], 200);
    assert_eq!(object["user_agent"], "ua\"\\");
    assert!(object["bytes"].is_u64(), "{object}");
    assert!(object["duration"].is_f64(), "{object}");
    assert_eq!(object["request_headers"]["x-evil"], latin1.as_str());
    assert_eq!(object["request_headers"]["absent"], Value::Null);
    assert_eq!(object["response_headers"]["x-test"], "out");
    assert_eq!(object["environ"]["http_x_evil"], latin1.as_str());
    assert!(object.get("forged").is_none());
    let keys: Vec<&String> = object.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 9, "one key per field, x-evil once: {keys:?}");
    assert_eq!(object["request_headers"].as_object().unwrap().len(), 2);
    let second: Value = serde_json::from_str(&lines[1]).expect("the second line is JSON");
    assert_eq!(second["request"], "GET /bytes?n=3 HTTP/1.1");
    assert_eq!(second["bytes"], 3);
}

/// Without `--access-logformat`, a JSON line has the combined format's
/// fields and the request's parts and duration apart.
#[test]
fn json_default_fields() {
    let server = Server::testapp_with(["--access-logfile", "-", "--access-log-json"]);
    let mut conn = server.connect();
    let request =
        format!("GET /bytes?n=4 HTTP/1.1\r\nHost: x\r\nAuthorization: {BASIC_ALICE}\r\n\r\n");
    conn.request(request.as_bytes()).assert_status(200);
    let pid: u64 = conn.request(&get("/pid")).text().parse().unwrap();
    let line = server.stdout.wait_for("n=4", WAIT);
    let object: Value = serde_json::from_str(&line).expect("a JSON line");
    let expected = [
        "remote_addr",
        "user",
        "time",
        "request",
        "method",
        "path",
        "query",
        "protocol",
        "status",
        "bytes",
        "referer",
        "user_agent",
        "duration_us",
        "pid",
    ];
    assert_eq!(object.as_object().unwrap().len(), expected.len(), "{line}");
    // In this order on the line (serde_json's map sorts them).
    let at: Vec<usize> = expected
        .iter()
        .map(|k| {
            line.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("no {k}: {line}"))
        })
        .collect();
    assert!(at.is_sorted(), "{line}");
    assert_eq!(object["user"], "alice");
    assert_eq!(object["method"], "GET");
    assert_eq!(object["path"], "/bytes");
    assert_eq!(object["query"], "n=4");
    assert_eq!(object["protocol"], "HTTP/1.1");
    assert_eq!(object["bytes"], 4);
    assert_eq!(object["referer"], Value::Null);
    assert_eq!(object["pid"], pid);
    assert!(object["duration_us"].is_u64());
    let time = object["time"].as_str().unwrap();
    assert!(
        time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );
}

/// The access log is a pipe nobody reads: the worker goes on answering
/// (with a writer on its loop, the first full pipe would stop it), lines
/// that cannot wait are dropped and counted in a warning, and every line
/// is either written or counted.
#[test]
fn a_log_that_cannot_keep_up_does_not_stop_the_worker() {
    const REQUESTS: usize = 1000;
    let dir = TempDir::new("alog-fifo");
    let fifo = dir.join("access.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Open for reading first (without waiting for a writer), so that the
    // worker's open for writing succeeds; then read nothing.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let mut server = Server::testapp_with(["--access-logfile", fifo.to_str().unwrap()]);
    // Lines of about 4 KiB: a thousand is far more than the pipe and the
    // writer's backlog hold together.
    let agent = "a".repeat(4000);
    let mut conn = server.connect();
    for n in 0..REQUESTS {
        let request =
            format!("GET /bytes?n=1&r={n} HTTP/1.1\r\nHost: x\r\nUser-Agent: {agent}\r\n\r\n");
        conn.request(request.as_bytes()).assert_status(200);
    }
    drop(conn);
    // Now read: the writer gets through, then says what it dropped.
    set_blocking(&reader);
    let drain = std::thread::spawn(move || {
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        all
    });
    server.stderr.wait_for("the access log dropped", WAIT);
    server.signal(libc::SIGTERM);
    server.wait_exit(WAIT);
    server.stderr.wait_closed(WAIT);
    let dropped: usize = server
        .stderr
        .lines()
        .iter()
        .filter_map(|l| l.split("the access log dropped ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    let written = drain.join().unwrap();
    let lines = written.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let mut count = 0;
    for line in lines {
        assert!(
            line.starts_with(b"127.0.0.1 - - [") && line.ends_with(b"\""),
            "a whole line: {:?}",
            String::from_utf8_lossy(&line[..line.len().min(80)])
        );
        count += 1;
    }
    assert!(
        dropped > 0 && count > 0,
        "dropped {dropped}, written {count}"
    );
    assert_eq!(count + dropped, REQUESTS, "every line written or counted");
}

fn set_blocking(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor this test owns.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) };
    assert_eq!(rc, 0);
}

/// A format Python's `%` would refuse: one line naming it, exit 1.
#[test]
fn a_bad_format_is_refused_at_startup() {
    let mut server = Server::builder(testapp())
        .args(["--access-logformat", "%(h)s %"])
        .spawn();
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1));
    server.stderr.wait_closed(WAIT);
    let errors: Vec<String> = server
        .stderr
        .lines()
        .into_iter()
        .filter(|l| l.contains("ERROR"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("--access-logformat") && errors[0].contains("'%' at byte 6"),
        "{errors:?}"
    );
}
