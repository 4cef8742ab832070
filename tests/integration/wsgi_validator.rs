//! The test application wrapped in `wsgiref.validate.validator`, the
//! standard library's PEP 3333 checker (`tests/python/validated_app.py`):
//! every route answers as without it, and nothing in the log says the
//! server broke the PEP (an AssertionError) or did something doubtful (a
//! WSGIWarning, made an error there).

use crate::harness::{Conn, Server, WAIT, chunked, get, request, wsgi_testapp_dir};
use crate::wsgi_harness::python_dir;

fn validated_server() -> Server {
    Server::builder("validated_app:app")
        .arg("--chdir")
        .arg(python_dir().to_str().unwrap())
        .arg("--pythonpath")
        .arg(wsgi_testapp_dir().to_str().unwrap())
        .start()
}

/// Nothing the validator says is in the log.
#[track_caller]
fn assert_validator_silent(server: &Server) {
    let log = server.stderr.text();
    for complaint in [
        "AssertionError",
        "WSGIWarning",
        "garbage collected without being closed",
    ] {
        assert!(!log.contains(complaint), "{complaint} in the log:\n{log}");
    }
}

#[test]
fn every_route_passes_the_validator() {
    let server = validated_server();
    let mut conn: Conn = server.connect();
    for (target, status) in [
        ("/", 200),
        ("/echo?x=1", 200),
        ("/bytes?n=1000", 200),
        ("/stream?chunks=3&size=10", 200),
        ("/status?code=204", 204),
        ("/status?code=304", 304),
        ("/status?code=418", 418),
        ("/sleep?ms=1", 200),
        ("/pid", 200),
        ("/header?name=X-B&value=c", 200),
        ("/nope", 404),
    ] {
        let response = conn.request(&get(target));
        assert_eq!(response.status, status, "{target}: {response:#?}");
    }
    assert_validator_silent(&server);
}

#[test]
fn bodies_pass_the_validator() {
    let server = validated_server();
    let mut conn = server.connect();
    let echo = conn
        .request(&request(
            "POST",
            "/echo",
            &[
                ("Content-Type", "text/plain"),
                ("X-Rep", "a"),
                ("X-Rep", "b"),
            ],
            b"a body",
        ))
        .json();
    assert_eq!(echo["body"], "a body");
    assert_eq!(echo["headers"]["x-rep"], "a, b");
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut raw =
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend(chunked(&body, &[1000, 7, 65_536]));
    let upload = conn.request(&raw).json();
    assert_eq!(upload["body_length"], body.len());
    conn.send(b"HEAD /bytes?n=10 HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let head = conn.read_head_response();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("10"));
    let mut http10 = server.connect();
    let stream = http10.request(b"GET /stream?chunks=2&size=5 HTTP/1.0\r\n\r\n");
    assert_eq!(stream.body, b"yyyyyyyyyy");
    assert_validator_silent(&server);
}

#[test]
fn an_exception_passes_through_the_validator_as_a_500() {
    let server = validated_server();
    server.get("/panic").assert_status(500);
    server.wait_for_log("RuntimeError: testapp: /panic asked for a failure", WAIT);
    server.get("/").assert_status(200);
    assert_validator_silent(&server);
}
