//! HTTP/1.1 behaviour of the worker over a real connection: persistence,
//! pipelining, HTTP/1.0, request bodies in both framings, `Expect:
//! 100-continue`, the response framing the server chooses, HEAD, the headers
//! every answer carries, and the refusal to emit a header with CR or LF.
//! Malformed requests are in `malformed`.

use crate::harness::{App, Framing, WAIT, chunked, get, request};

// Each test below runs against both forms of the test application.
crate::harness::test_each_app!(
    keep_alive_serves_many_requests_on_one_connection,
    pipelined_requests_are_answered_in_order,
    many_pipelined_requests_in_one_write,
    http11_connection_close_is_honoured,
    http10_closes_by_default,
    http10_keep_alive_is_honoured,
    stream_over_http10_is_close_delimited,
    stream_over_http10_with_keep_alive_still_closes,
    request_body_with_content_length,
    request_body_chunked_with_extensions_and_trailers,
    request_body_chunked_with_uppercase_hex_and_empty_body,
    unread_content_length_body_is_not_parsed_as_a_request,
    unread_chunked_body_is_not_parsed_as_a_request,
    unread_body_is_skipped_without_pipelining,
    expect_100_continue_is_answered_before_the_body_is_sent,
    expect_100_continue_with_a_chunked_body,
    expect_100_continue_is_not_sent_when_the_app_does_not_read,
    head_gets_the_headers_without_a_body,
    every_response_has_date_and_server,
    response_header_with_crlf_is_refused,
    response_header_with_a_bare_lf_or_nul_is_refused,
    idle_keep_alive_connection_is_closed_after_keep_alive_seconds,
    server_answers_http11_with_http11,
    an_answer_is_not_lost_to_a_body_that_was_never_sent,
    whitespace_after_a_chunk_size_without_extension_is_refused,
);

fn keep_alive_serves_many_requests_on_one_connection(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let mut pids = Vec::new();
    for i in 0..50 {
        let response = conn.request(&get(&format!("/echo?i={i}")));
        response.assert_status(200);
        assert!(!response.connection_has("close"), "{response:#?}");
        assert_eq!(response.json()["query"], format!("i={i}"));
        pids.push(conn.request(&get("/pid")).text());
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "one connection, one worker");
}

fn pipelined_requests_are_answered_in_order(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let mut raw = Vec::new();
    raw.extend(get("/"));
    raw.extend(request("POST", "/echo?n=1", &[], b"first body"));
    raw.extend(get("/bytes?n=3"));
    raw.extend(get("/status?code=418"));
    raw.extend(get("/stream?chunks=2&size=4"));
    raw.extend(get("/nope"));
    raw.extend(b"POST /echo?n=2 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
    raw.extend(chunked(b"second body", &[3]));
    raw.extend(get("/status?code=204"));
    raw.extend(get("/echo?n=3"));
    conn.send(&raw);

    let r = conn.read_response();
    r.assert_status(200);
    assert_eq!(r.body, b"Hello, World!");
    let r = conn.read_response();
    assert_eq!(r.json()["body"], "first body");
    assert_eq!(r.json()["query"], "n=1");
    let r = conn.read_response();
    assert_eq!(r.body, b"xxx");
    conn.read_response().assert_status(418);
    let r = conn.read_response();
    assert_eq!(r.body, b"yyyyyyyy");
    conn.read_response().assert_status(404);
    let r = conn.read_response();
    assert_eq!(r.json()["body"], "second body");
    assert_eq!(r.json()["query"], "n=2");
    conn.read_response().assert_status(204);
    let r = conn.read_response();
    assert_eq!(r.json()["query"], "n=3");
}

fn many_pipelined_requests_in_one_write(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let raw: Vec<u8> = (0..200)
        .flat_map(|i| get(&format!("/echo?i={i}")))
        .collect();
    conn.send(&raw);
    for i in 0..200 {
        let r = conn.read_response();
        r.assert_status(200);
        assert_eq!(r.json()["query"], format!("i={i}"));
    }
}

fn http11_connection_close_is_honoured(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let response = conn.request(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    response.assert_status(200);
    assert!(response.connection_has("close"), "{response:#?}");
    conn.assert_closed();
}

fn http10_closes_by_default(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let response = conn.request(b"GET / HTTP/1.0\r\n\r\n");
    response.assert_status(200);
    assert_eq!(response.body, b"Hello, World!");
    assert!(!response.connection_has("keep-alive"), "{response:#?}");
    conn.assert_closed();
}

fn http10_keep_alive_is_honoured(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    for _ in 0..3 {
        let response = conn.request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        response.assert_status(200);
        assert_eq!(response.body, b"Hello, World!");
        assert!(response.connection_has("keep-alive"), "{response:#?}");
    }
    // The last one without the header: answered, then closed.
    conn.request(b"GET / HTTP/1.0\r\n\r\n").assert_status(200);
    conn.assert_closed();
}

fn stream_over_http10_is_close_delimited(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let response = conn.request(b"GET /stream?chunks=5&size=1000 HTTP/1.0\r\n\r\n");
    response.assert_status(200);
    assert_eq!(response.header("transfer-encoding"), None, "{response:#?}");
    assert_eq!(response.framing, Framing::Close);
    assert_eq!(response.body.len(), 5000);
    assert!(response.body.iter().all(|&b| b == b'y'));
}

fn stream_over_http10_with_keep_alive_still_closes(app: App) {
    // No length is known and HTTP/1.0 has no chunked: the only framing
    // left is the close, whatever the client asked for.
    let server = app.start();
    let mut conn = server.connect();
    let response =
        conn.request(b"GET /stream?chunks=2&size=10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    response.assert_status(200);
    assert_eq!(response.framing, Framing::Close);
    assert_eq!(response.body.len(), 20);
}

fn request_body_with_content_length(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let echo = conn
        .request(&request("PUT", "/echo", &[], b"0123456789"))
        .json();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["body"], "0123456789");
    assert_eq!(echo["body_length"], 10);
    // The connection is still in step for the next request.
    conn.request(&get("/")).assert_status(200);
}

fn request_body_chunked_with_extensions_and_trailers(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let raw = b"POST /echo HTTP/1.1\r\n\
        Host: localhost\r\n\
        Transfer-Encoding: chunked\r\n\
        \r\n\
        5;name=value\r\nhello\r\n\
        1;a;b=\"quoted\"\r\n \r\n\
        A\r\nworld12345\r\n\
        0;last=1\r\n\
        X-Trailer: one\r\n\
        X-Other: two\r\n\
        \r\n";
    let response = conn.request(raw);
    response.assert_status(200);
    let echo = response.json();
    assert_eq!(echo["body"], "hello world12345");
    assert_eq!(echo["body_length"], 16);
    conn.request(&get("/")).assert_status(200);
}

fn request_body_chunked_with_uppercase_hex_and_empty_body(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let body: Vec<u8> = (0..300).map(|i| b'a' + (i % 26) as u8).collect();
    let mut raw =
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend(b"12C\r\n");
    raw.extend(&body);
    raw.extend(b"\r\n0\r\n\r\n");
    let echo = conn.request(&raw).json();
    assert_eq!(echo["body_length"], 300);
    assert_eq!(echo["body"], String::from_utf8(body).unwrap());

    let echo = conn
        .request(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .json();
    assert_eq!(echo["body_length"], 0);
}

// `/` does not read the body; the server must skip it before parsing the
// next request on the connection. Otherwise a body is run as a request of
// its own: request smuggling.
const SMUGGLED: &[u8] = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";

fn unread_content_length_body_is_not_parsed_as_a_request(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let mut raw = request("POST", "/", &[], SMUGGLED);
    raw.extend(get("/echo?after"));
    conn.send(&raw);
    conn.read_response().assert_status(200);
    let r = conn.read_response();
    r.assert_status(200);
    assert_eq!(r.json()["query"], "after");
}

fn unread_chunked_body_is_not_parsed_as_a_request(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let mut raw =
        b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend(chunked(SMUGGLED, &[7]));
    raw.extend(get("/echo?after"));
    conn.send(&raw);
    conn.read_response().assert_status(200);
    let r = conn.read_response();
    r.assert_status(200);
    assert_eq!(r.json()["query"], "after");
}

fn unread_body_is_skipped_without_pipelining(app: App) {
    // One request at a time, each sent whole and answered before the next.
    let server = app.start();
    let mut conn = server.connect();
    conn.request(&request("POST", "/", &[], SMUGGLED))
        .assert_status(200);
    let r = conn.request(&get("/echo?after"));
    r.assert_status(200);
    assert_eq!(r.json()["query"], "after");
}

fn expect_100_continue_is_answered_before_the_body_is_sent(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    // The body has not been sent: the server can only answer 100 here.
    let interim = conn.read_response();
    interim.assert_status(100);
    assert_eq!(interim.version, "HTTP/1.1");
    conn.send(b"hello");
    let response = conn.read_response();
    response.assert_status(200);
    assert_eq!(response.json()["body"], "hello");
    conn.request(&get("/")).assert_status(200);
}

fn expect_100_continue_with_a_chunked_body(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    conn.send(
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    conn.read_response().assert_status(100);
    conn.send(&chunked(b"abc", &[1]));
    let response = conn.read_response();
    response.assert_status(200);
    assert_eq!(response.json()["body_length"], 3);
}

fn expect_100_continue_is_not_sent_when_the_app_does_not_read(app: App) {
    // `/` never reads the body: the final answer comes straight away, with
    // no 100 before it (RFC 9110 §10.1.1).
    let server = app.start();
    let mut conn = server.connect();
    conn.send(
        b"POST / HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let response = conn.read_response();
    response.assert_status(200);
    assert_eq!(response.body, b"Hello, World!");
    if response.connection_has("close") {
        conn.assert_closed();
    } else {
        // Kept open: the client may still send the body, which is skipped.
        conn.send(b"hello");
        let r = conn.request(&get("/echo?next"));
        r.assert_status(200);
        assert_eq!(r.json()["query"], "next");
    }
}

fn head_gets_the_headers_without_a_body(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    // HEAD then GET in one write: a body after the HEAD answer would be
    // read as the start of the GET answer and fail it.
    let mut raw = b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    raw.extend(b"HEAD /stream?chunks=3&size=5 HTTP/1.1\r\nHost: localhost\r\n\r\n");
    raw.extend(b"HEAD /bytes?n=1000 HTTP/1.1\r\nHost: localhost\r\n\r\n");
    raw.extend(get("/bytes?n=7"));
    conn.send(&raw);
    let head = conn.read_head_response();
    head.assert_status(200);
    assert!(head.header("content-type").is_some(), "{head:#?}");
    let head = conn.read_head_response();
    head.assert_status(200);
    let head = conn.read_head_response();
    head.assert_status(200);
    assert_eq!(head.header("content-length"), Some("1000"));
    let r = conn.read_response();
    r.assert_status(200);
    assert_eq!(r.body, b"xxxxxxx");
}

fn every_response_has_date_and_server(app: App) {
    let server = app.start();
    let mut responses = Vec::new();
    for target in ["/", "/nope", "/stream?chunks=2&size=2", "/status?code=204"] {
        responses.push((target.to_string(), server.get(target)));
    }
    responses.push(("/panic".into(), server.get("/panic")));
    responses.push((
        "a malformed request".into(),
        server.connect().request(b"GARBAGE\r\n\r\n"),
    ));
    let mut conn = server.connect();
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
    );
    let _interim = conn.read_response();
    conn.send(b"x");
    responses.push(("/echo after 100".into(), conn.read_response()));
    for (what, r) in responses {
        let date = r
            .header("date")
            .unwrap_or_else(|| panic!("{what}: no Date in {r:#?}"));
        // IMF-fixdate, RFC 9110 §5.6.7: "Sun, 06 Nov 1994 08:49:37 GMT".
        assert_eq!(date.len(), 29, "{what}: Date {date:?}");
        assert!(date.ends_with(" GMT"), "{what}: Date {date:?}");
        assert_eq!(&date[3..5], ", ", "{what}: Date {date:?}");
        let name = r
            .header("server")
            .unwrap_or_else(|| panic!("{what}: no Server in {r:#?}"));
        assert!(!name.is_empty());
    }
}

fn response_header_with_crlf_is_refused(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let response = conn.request(&get("/header?name=X-A&value=a%0D%0AInjected:%20yes"));
    response.assert_status(500);
    let raw = String::from_utf8_lossy(&response.raw).to_string();
    assert!(!raw.contains("Injected"), "{raw}");
    assert!(response.header("x-a").is_none(), "{raw}");
    // Whatever is left on the connection must not carry it either.
    if !response.connection_has("close") {
        conn.request(&get("/")).assert_status(200);
    }
    // And the server says why, in its error log.
    server
        .stderr
        .wait_for_match("an ERROR or WARNING line", WAIT, |l| {
            l.contains("[ERROR]") || l.contains("[WARNING]")
        });
}

fn response_header_with_a_bare_lf_or_nul_is_refused(app: App) {
    let server = app.start();
    for target in [
        "/header?name=X-A&value=a%0AInjected:%20yes",
        "/header?name=X-A&value=a%0DInjected:%20yes",
        "/header?name=X-A&value=a%00Injected",
        "/header?name=X-A%0D%0AInjected:%20yes&value=b",
        "/header?name=X%20A&value=b",
    ] {
        let response = server.get(target);
        assert_eq!(response.status, 500, "{target}: {response:#?}");
        let raw = String::from_utf8_lossy(&response.raw).to_string();
        assert!(!raw.contains("Injected"), "{target}: {raw}");
    }
}

fn idle_keep_alive_connection_is_closed_after_keep_alive_seconds(app: App) {
    let server = app.start_with(["--keep-alive", "1"]);
    let mut conn = server.connect();
    conn.request(&get("/")).assert_status(200);
    // Nothing more is sent; the server must hang up on its own (the read
    // timeout of the client is far longer than the keep-alive time).
    conn.assert_closed();
}

fn server_answers_http11_with_http11(app: App) {
    let server = app.start();
    let response = server.get("/");
    assert_eq!(response.version, "HTTP/1.1");
    assert_eq!(response.reason, "OK");
}

fn an_answer_is_not_lost_to_a_body_that_was_never_sent(app: App) {
    // The client announces a large body and sends only its start; the
    // server answers without reading it and closes. Closing with unread
    // input must not reset the connection under the answer in flight.
    let server = app.start();
    let mut conn = server.connect();
    let mut raw =
        b"GET /bytes?n=3000000 HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\n\r\n".to_vec();
    raw.extend(vec![b'b'; 100_000]);
    conn.send(&raw);
    let (raw, err) = conn.read_to_end();
    assert!(
        err.is_none(),
        "the connection was not closed cleanly: {err:?}"
    );
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert_eq!(raw.len() - head_end, 3_000_000, "the answer was cut short");
}

fn whitespace_after_a_chunk_size_without_extension_is_refused(app: App) {
    // RFC 9112 §7.1.1 allows BWS only before a `;`: `5 \r\n` could be read
    // otherwise by a proxy in front (a smuggling vector).
    let server = app.start();
    let mut conn = server.connect();
    let response = conn.request(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    );
    response.assert_status(400);
}
