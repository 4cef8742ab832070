//! Every route of the test application (shared/spec/testapp.md), served by
//! the real binary: what the application says, passed through the server
//! unchanged. Framing and protocol details live in `http1`; worker death and
//! replacement in `lifecycle`.

use crate::harness::{App, Conn, Framing, Prng, chunked, get, request};
use sha2::{Digest, Sha256};

// Each test below runs against both forms of the test application.
crate::harness::test_each_app!(
    root_says_hello_with_content_length,
    echo_reports_the_request_as_the_app_saw_it,
    echo_decodes_percent_twenty_in_the_path_only,
    echo_over_http10_says_so,
    upload_five_megabytes_with_content_length,
    upload_five_megabytes_chunked,
    bytes_gives_exactly_n_bytes,
    stream_is_chunked_on_http11,
    status_204_has_no_body_and_no_content_headers,
    status_304_has_no_body,
    status_418_passes_through,
    sleep_answers_after_sleeping,
    pid_is_a_worker_not_the_master,
    panic_is_a_500,
    header_route_sets_the_header,
    unknown_path_is_404_with_a_body,
    routes_match_the_path_not_the_query,
    every_route_on_one_keep_alive_connection,
);

fn root_says_hello_with_content_length(app: App) {
    let server = app.start();
    let response = server.get("/");
    response.assert_status(200);
    assert_eq!(response.body, b"Hello, World!");
    assert_eq!(response.header("content-length"), Some("13"));
    assert_eq!(response.framing, Framing::ContentLength);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{response:#?}"
    );
}

fn echo_reports_the_request_as_the_app_saw_it(app: App) {
    let server = app.start();
    // `%6F` in the path decodes to `o`, so the route is /echo; the query
    // stays raw.
    let raw = request(
        "POST",
        "/ech%6F?q=a%20b&x=1",
        &[
            ("X-Rep", "one"),
            ("Content-Type", "text/plain"),
            ("X-Rep", "two"),
        ],
        b"hello body",
    );
    let response = server.connect().request(&raw);
    response.assert_status(200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
    );
    let echo = response.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["raw_uri"], "/ech%6F?q=a%20b&x=1");
    assert_eq!(echo["query"], "q=a%20b&x=1");
    assert_eq!(echo["headers"]["x-rep"], "one, two");
    assert_eq!(echo["headers"]["host"], "localhost");
    assert_eq!(echo["headers"]["content-type"], "text/plain");
    assert_eq!(echo["headers"]["content-length"], "10");
    assert_eq!(echo["body"], "hello body");
    assert_eq!(echo["body_length"], 10);
    assert_eq!(echo["remote_addr"], "127.0.0.1");
    // A direct client, no proxy in between: the client is the peer.
    assert_eq!(echo["client_addr"], echo["remote_addr"]);
    assert_eq!(echo["scheme"], "http");
    assert_eq!(echo["protocol"], "HTTP/1.1");
}

fn echo_decodes_percent_twenty_in_the_path_only(app: App) {
    let server = app.start();
    // A path with an encoded space cannot be /echo, so it is a 404; the
    // same encoded space in the query reaches the app raw.
    server.get("/echo%20x").assert_status(404);
    let echo = server.get("/echo?a%20b=c%20d").json();
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["raw_uri"], "/echo?a%20b=c%20d");
    assert_eq!(echo["query"], "a%20b=c%20d");
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["body_length"], 0);
}

fn echo_over_http10_says_so(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let response = conn.request(b"GET /echo HTTP/1.0\r\n\r\n");
    response.assert_status(200);
    assert_eq!(response.json()["protocol"], "HTTP/1.0");
}

/// 5 MB of bytes that are not all alike, so a lost or repeated piece shows.
fn five_megabytes() -> Vec<u8> {
    Prng::new(0x5eed).bytes(5 * 1024 * 1024)
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn upload_five_megabytes_with_content_length(app: App) {
    let server = app.start();
    let body = five_megabytes();
    let response = server
        .connect()
        .request(&request("POST", "/upload", &[], &body));
    response.assert_status(200);
    let json = response.json();
    assert_eq!(json["body_length"], body.len());
    assert_eq!(json["sha256"], sha256_hex(&body));
}

fn upload_five_megabytes_chunked(app: App) {
    let server = app.start();
    let body = five_megabytes();
    let mut raw =
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    // Uneven chunk sizes, some larger than the app's 64 KiB reads.
    raw.extend(chunked(&body, &[1, 70_000, 4096, 333, 65_536, 200_000]));
    let response = server.connect().request(&raw);
    response.assert_status(200);
    let json = response.json();
    assert_eq!(json["body_length"], body.len());
    assert_eq!(json["sha256"], sha256_hex(&body));
}

fn bytes_gives_exactly_n_bytes(app: App) {
    let server = app.start();
    let response = server.get("/bytes?n=100000");
    response.assert_status(200);
    assert_eq!(response.header("content-length"), Some("100000"));
    assert_eq!(response.body.len(), 100_000);
    assert!(response.body.iter().all(|&b| b == b'x'));
}

fn stream_is_chunked_on_http11(app: App) {
    let server = app.start();
    let response = server.get("/stream?chunks=5&size=1000");
    response.assert_status(200);
    assert_eq!(response.header("content-length"), None, "{response:#?}");
    assert!(
        matches!(response.framing, Framing::Chunked(_)),
        "{response:#?}"
    );
    assert_eq!(response.body.len(), 5000);
    assert!(response.body.iter().all(|&b| b == b'y'));
}

fn status_204_has_no_body_and_no_content_headers(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    // The 204 and a request behind it in one write: if any body bytes
    // followed the 204 they would corrupt the second answer.
    let mut raw = get("/status?code=204");
    raw.extend(get("/"));
    conn.send(&raw);
    let response = conn.read_response();
    response.assert_status(204);
    assert_eq!(response.header("content-type"), None, "{response:#?}");
    // RFC 9110 §8.6: no Content-Length in a 204; nor any body framing.
    assert_eq!(response.header("content-length"), None, "{response:#?}");
    assert_eq!(response.header("transfer-encoding"), None, "{response:#?}");
    let next = conn.read_response();
    next.assert_status(200);
    assert_eq!(next.body, b"Hello, World!");
}

fn status_304_has_no_body(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let mut raw = get("/status?code=304");
    raw.extend(get("/"));
    conn.send(&raw);
    let response = conn.read_response();
    response.assert_status(304);
    assert_eq!(response.header("transfer-encoding"), None, "{response:#?}");
    conn.read_response().assert_status(200);
}

fn status_418_passes_through(app: App) {
    let server = app.start();
    let response = server.get("/status?code=418");
    response.assert_status(418);
    assert_eq!(response.text(), "status 418");
}

fn sleep_answers_after_sleeping(app: App) {
    let server = app.start();
    let response = server.get("/sleep?ms=10");
    response.assert_status(200);
    assert_eq!(response.text(), "slept 10");
}

fn pid_is_a_worker_not_the_master(app: App) {
    let server = app.start();
    let response = server.get("/pid");
    response.assert_status(200);
    let pid: u32 = response.text().parse().expect("a decimal pid");
    assert_ne!(pid, server.pid(), "the master must not run the app");
    // It is the worker the master said it booted.
    assert_eq!(server.wait_for_workers(1), vec![pid]);
}

fn panic_is_a_500(app: App) {
    let server = app.start();
    server.get("/panic").assert_status(500);
}

fn header_route_sets_the_header(app: App) {
    let server = app.start();
    let response = server.get("/header?name=X-A&value=b");
    response.assert_status(200);
    assert_eq!(response.header("x-a"), Some("b"));
}

fn unknown_path_is_404_with_a_body(app: App) {
    let server = app.start();
    let response = server.get("/no/such/route");
    response.assert_status(404);
    assert!(!response.body.is_empty());
}

fn routes_match_the_path_not_the_query(app: App) {
    let server = app.start();
    let response = server.get("/?/echo");
    response.assert_status(200);
    assert_eq!(response.body, b"Hello, World!");
}

fn every_route_on_one_keep_alive_connection(app: App) {
    let server = app.start();
    let mut conn: Conn = server.connect();
    for (target, status) in [
        ("/", 200),
        ("/echo", 200),
        ("/bytes?n=10", 200),
        ("/stream?chunks=3&size=10", 200),
        ("/status?code=204", 204),
        ("/status?code=418", 418),
        ("/sleep?ms=1", 200),
        ("/pid", 200),
        ("/header?name=X-B&value=c", 200),
        ("/nope", 404),
        ("/", 200),
    ] {
        let response = conn.request(&get(target));
        assert_eq!(response.status, status, "{target}: {response:#?}");
    }
}
