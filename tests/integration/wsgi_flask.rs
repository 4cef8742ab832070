//! A real Flask application (`tests/python/flaskapp`, loaded through its
//! factory) served from a virtualenv named by VIRTUAL_ENV, as an operator
//! coming from Gunicorn runs one: JSON, forms, multipart uploads, a session
//! cookie, a streamed response, error handlers and 404s, send_file, and a
//! multiprocessing pool whose children must find Flask in the virtualenv.

use sha2::{Digest, Sha256};

use crate::harness::{Framing, Prng, Response, Server, WAIT, chunked, get, request};
use crate::wsgi_harness::{python_dir, test_venv};

fn flask_with(args: &[&str]) -> Server {
    let venv = test_venv();
    Server::builder("flaskapp:create_app()")
        .arg("--chdir")
        .arg(python_dir().to_str().unwrap())
        .env("VIRTUAL_ENV", venv.to_str().unwrap())
        .args(args.iter().copied())
        .start()
}

fn flask() -> Server {
    flask_with(&[])
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A multipart/form-data body: `(field, filename, content type, data)`;
/// no filename makes a plain field.
fn multipart(parts: &[(&str, Option<&str>, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "rgun-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (field, filename, content_type, data) in parts {
        body.extend(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(name) => body.extend(
                format!(
                    "Content-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n\
                     Content-Type: {content_type}\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend(
                format!("Content-Disposition: form-data; name=\"{field}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn flask_comes_from_the_virtualenv() {
    let server = flask();
    let venv = test_venv();
    let r = server.get("/");
    r.assert_status(200);
    assert_eq!(r.text(), "Hello from Flask");
    let about = server.get("/about").json();
    let flask_file = about["flask_file"].as_str().unwrap();
    assert!(
        flask_file.starts_with(venv.to_str().unwrap()),
        "flask imported from {flask_file}, not from {}",
        venv.display()
    );
    assert_eq!(about["prefix"], venv.to_str().unwrap());
    // The virtualenv's interpreter (`python`, or `python3` as the script
    // pip writes for the installed rgun names it).
    let executable = std::path::Path::new(about["executable"].as_str().unwrap());
    assert_eq!(executable.parent(), Some(venv.join("bin").as_path()));
    assert!(
        executable
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("python")),
        "{}",
        executable.display()
    );
    // markupsafe's C speedups load in the embedded interpreter.
    assert_eq!(about["markupsafe"], "markupsafe._speedups");
    assert_eq!(about["escaped"], "&lt;b&gt;&amp;&lt;/b&gt;");
}

#[test]
fn json_in_and_out() {
    let server = flask();
    let r = server.connect().request(&request(
        "POST",
        "/json",
        &[("Content-Type", "application/json")],
        br#"{"numbers": [1, 2, 3.5], "name": "caf\u00e9"}"#,
    ));
    r.assert_status(200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let json = r.json();
    assert_eq!(json["total"], 6.5);
    assert_eq!(json["received"]["name"], "café");
}

#[test]
fn url_encoded_and_multipart_forms() {
    let server = flask();
    let mut conn = server.connect();
    let form = conn
        .request(&request(
            "POST",
            "/form",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"a=1&b=x+y&a=2&c=%C3%A9",
        ))
        .json();
    assert_eq!(form["form"]["a"], serde_json::json!(["1", "2"]));
    assert_eq!(form["form"]["b"], serde_json::json!(["x y"]));
    assert_eq!(form["form"]["c"], serde_json::json!(["é"]));
    let (ctype, body) = multipart(&[("x", None, "", b"one"), ("y", None, "", b"two")]);
    let form = conn
        .request(&request(
            "POST",
            "/form",
            &[("Content-Type", &ctype)],
            &body,
        ))
        .json();
    assert_eq!(form["form"]["x"], serde_json::json!(["one"]));
    assert_eq!(form["form"]["y"], serde_json::json!(["two"]));
}

#[test]
fn multipart_file_upload_with_both_framings() {
    let server = flask();
    let mut conn = server.connect();
    let binary = Prng::new(3).bytes(300_000);
    let text = b"plain text file\r\nwith a CRLF inside\r\n".to_vec();
    let (ctype, body) = multipart(&[
        (
            "first",
            Some("data.bin"),
            "application/octet-stream",
            &binary,
        ),
        ("second", Some("notes.txt"), "text/plain", &text),
        ("comment", None, "", b"two files"),
    ]);
    let check = |r: Response| {
        r.assert_status(200);
        let json = r.json();
        let first = &json["files"]["first"];
        assert_eq!(first["filename"], "data.bin");
        assert_eq!(first["size"], binary.len());
        assert_eq!(first["sha256"], sha256_hex(&binary));
        let second = &json["files"]["second"];
        assert_eq!(second["filename"], "notes.txt");
        assert_eq!(second["content_type"], "text/plain");
        assert_eq!(second["sha256"], sha256_hex(&text));
        assert_eq!(json["form"]["comment"], "two files");
    };
    check(conn.request(&request(
        "POST",
        "/upload",
        &[("Content-Type", &ctype)],
        &body,
    )));
    // Chunked: no Content-Length, the body ends where the server says.
    let mut raw = format!(
        "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    raw.extend(chunked(&body, &[4096, 17, 65_536]));
    check(conn.request(&raw));
}

#[test]
fn session_lives_in_a_signed_cookie() {
    let server = flask();
    let r = server.get("/session/set?user=ann&lang=fr");
    r.assert_status(200);
    let set_cookie = r.header("set-cookie").expect("a session cookie");
    let cookie = set_cookie.split(';').next().unwrap();
    assert!(cookie.starts_with("session="), "{set_cookie}");
    let r = server
        .connect()
        .request(&request("GET", "/session", &[("Cookie", cookie)], b""));
    assert_eq!(r.json(), serde_json::json!({"user": "ann", "lang": "fr"}));
    // A cookie tampered with is not trusted.
    let forged = format!("{cookie}x");
    let r = server
        .connect()
        .request(&request("GET", "/session", &[("Cookie", &forged)], b""));
    assert_eq!(r.json(), serde_json::json!({}));
}

#[test]
fn streamed_response_goes_out_chunk_by_chunk() {
    let server = flask();
    let r = server.get("/stream?n=4");
    r.assert_status(200);
    assert_eq!(
        r.text(),
        "line 0 of /stream\nline 1 of /stream\nline 2 of /stream\nline 3 of /stream\n"
    );
    match &r.framing {
        Framing::Chunked(sizes) => assert_eq!(sizes.len(), 4, "{sizes:?}"),
        other => panic!("not chunked: {other:?}"),
    }
}

#[test]
fn error_handlers_and_not_found() {
    let server = flask();
    let mut conn = server.connect();
    let r = conn.request(&get("/teapot"));
    r.assert_status(418);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "teapot", "detail": "short and stout"})
    );
    let r = conn.request(&get("/no/such/page"));
    r.assert_status(404);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "not found", "path": "/no/such/page"})
    );
    let r = conn.request(&request("POST", "/", &[], b"x"));
    r.assert_status(405);
    assert_eq!(r.json()["error"], "Method Not Allowed");
    // An uncaught exception: Flask answers 500 and logs the traceback to
    // wsgi.errors, which is rgun's error log.
    let r = conn.request(&get("/boom"));
    r.assert_status(500);
    assert_eq!(r.json()["error"], "Internal Server Error");
    server.wait_for_log("Exception on /boom [GET]", WAIT);
    server.wait_for_log("ZeroDivisionError", WAIT);
    assert_eq!(conn.request(&get("/boom?d=2")).text(), "0");
}

#[test]
fn send_file_and_ranges() {
    let server = flask();
    let expected = std::fs::read(python_dir().join("flaskapp/static.txt")).unwrap();
    let mut conn = server.connect();
    let r = conn.request(&get("/file"));
    r.assert_status(200);
    assert_eq!(r.body, expected);
    assert_eq!(r.framing, Framing::ContentLength);
    let r = conn.request(&request("GET", "/file", &[("Range", "bytes=10-19")], b""));
    r.assert_status(206);
    assert_eq!(r.body, &expected[10..20]);
    conn.send(b"HEAD /file HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let head = conn.read_head_response();
    assert_eq!(
        head.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
    conn.request(&get("/")).assert_status(200);
}

#[test]
fn multiprocessing_children_run_the_virtualenv_python() {
    let server = flask();
    let r = server.get("/pool");
    r.assert_status(200);
    let json = r.json();
    assert_eq!(json["cube"], 27);
    assert_ne!(json["child"], json["parent"]);
}

#[test]
fn flask_with_threads_and_preload() {
    let server = flask_with(&["--threads", "4", "--workers", "2", "--preload"]);
    for _ in 0..20 {
        assert_eq!(server.get("/").text(), "Hello from Flask");
    }
    assert_eq!(server.get("/teapot").status, 418);
}
