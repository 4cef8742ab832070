//! Strict parsing as data, in the manner of Gunicorn's `tests/requests`
//! corpus: one raw request, one expected status. Every refusal must come with
//! `Connection: close` and the server must then close the connection. A
//! table of valid near-misses checks that strictness has not turned into
//! refusing good requests. Framing rules follow RFC 9112 §6.1 and §6.3.

use crate::harness::{App, Conn, chunked};
use std::thread;

// Each test below runs against both forms of the test application.
crate::harness::test_each_app!(
    invalid_requests_are_refused_and_the_connection_closed,
    valid_near_misses_are_accepted,
    limits_follow_the_command_line,
    a_slow_but_complete_head_is_not_timed_out_early,
    a_refusal_to_head_is_a_head_alone,
    an_unread_body_is_skipped_and_the_next_request_answered,
    a_body_cut_short_gets_no_success,
    absolute_form_authority_is_the_host,
    reset_content_has_no_content,
    a_large_unread_chunked_body_closes_and_the_answer_says_so,
);

/// A request and the status it must get.
struct Case {
    name: &'static str,
    raw: Vec<u8>,
    status: u16,
}

fn case(name: &'static str, raw: impl AsRef<[u8]>, status: u16) -> Case {
    Case {
        name,
        raw: raw.as_ref().to_vec(),
        status,
    }
}

/// The limits the table's server runs with (the ones not given keep the
/// defaults: request line 8190, 100 fields, field 8190 bytes).
const BODY_LIMIT: usize = 1000;

fn invalid_requests() -> Vec<Case> {
    let long_target = format!("/{}", "a".repeat(9000));
    let many_fields: String = (0..101).map(|i| format!("X-F{i}: v\r\n")).collect();
    let long_field = format!("X-Long: {}\r\n", "v".repeat(9000));
    vec![
        // Framing, RFC 9112 §6.
        case(
            "Content-Length with Transfer-Encoding",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        case(
            "Transfer-Encoding before Content-Length",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            400,
        ),
        case(
            "Content-Length 12a",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 12a\r\n\r\nhello world!",
            400,
        ),
        case(
            "Content-Length -1",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            400,
        ),
        case(
            "Content-Length +5",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
            400,
        ),
        case(
            "empty Content-Length",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
            400,
        ),
        case(
            "two different Content-Length",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            400,
        ),
        case(
            "a Content-Length list of different values",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
            400,
        ),
        case(
            "Transfer-Encoding chunked, gzip",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
            400,
        ),
        case(
            "Transfer-Encoding identity",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
            400,
        ),
        case(
            "Transfer-Encoding gzip, chunked",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        case(
            "Transfer-Encoding in HTTP/1.0",
            "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        case(
            "invalid chunk size",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        case(
            "chunk data longer than its size",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        // Header syntax, RFC 9112 §5.
        case(
            "obs-fold with a space",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
            400,
        ),
        case(
            "obs-fold with a tab",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n",
            400,
        ),
        case(
            "whitespace between header name and colon",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",
            400,
        ),
        case(
            "NUL in a header value",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n",
            400,
        ),
        case(
            "control byte in a header value",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n",
            400,
        ),
        case(
            "non-token character in a header name",
            "GET / HTTP/1.1\r\nHost: a\r\nX@A: b\r\n\r\n",
            400,
        ),
        case(
            "header line without a colon",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A b\r\n\r\n",
            400,
        ),
        case("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", 400),
        case(
            "HTTP/1.1 with two Host",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
        ),
        // The request line, RFC 9112 §3.
        case("garbage request line", "GARBAGE\r\n\r\n", 400),
        case(
            "request line with no target",
            "GET HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        case("version HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        // Limits.
        case(
            "request line above --limit-request-line",
            format!("GET {long_target} HTTP/1.1\r\nHost: a\r\n\r\n"),
            414,
        ),
        case(
            "more fields than --limit-request-fields",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{many_fields}\r\n"),
            431,
        ),
        case(
            "field line above --limit-request-field_size",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{long_field}\r\n"),
            431,
        ),
        case(
            "Content-Length above --limit-request-body",
            format!(
                "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                BODY_LIMIT + 1
            ),
            413,
        ),
        case(
            "chunked body above --limit-request-body",
            format!(
                "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                BODY_LIMIT + 1,
                "b".repeat(BODY_LIMIT + 1)
            ),
            413,
        ),
        // Time: a head that never ends (--header-timeout 1).
        case("incomplete head", "GET / HTTP/1.1\r\nHost: a\r\n", 408),
        // Request line and Host, RFC 9112 §3.
        case(
            "a space inside the target",
            "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        case(
            "a byte outside US-ASCII in the target",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n".as_slice(),
            400,
        ),
        case(
            "a fragment in the target",
            "GET /#top HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        case(
            "a method longer than the request line limit",
            format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "A".repeat(9000)),
            400,
        ),
        case("empty Host", "GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
        case(
            "Host with two colons",
            "GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n",
            400,
        ),
        case(
            "Host with a bad port",
            "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n",
            400,
        ),
        case(
            "Host with an open bracket",
            "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
            400,
        ),
        case(
            "absolute-form target with userinfo",
            "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        case(
            "absolute-form target with no host",
            "GET http:///a HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        case(
            "bare LF ending the request line",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            400,
        ),
        case(
            "bare LF ending a field line",
            "GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n",
            400,
        ),
        case(
            "an expectation the server does not know",
            "GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n",
            417,
        ),
        case(
            "CONNECT to a server that is no proxy",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            501,
        ),
        // Bodies the application never reads are still checked, RFC 9112
        // §6.3 and §7.1: the answer is the server's 400, not the route's 200.
        case(
            "bad chunk size, body unread by the route",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n0123456789abcdef\r\n0\r\n\r\n",
            400,
        ),
        case(
            "chunk data longer than its size, body unread by the route",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello!!\r\n0\r\n\r\n",
            400,
        ),
        case(
            "bad chunked body on a request asking to close",
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\rhello\r\n0\r\n\r\n",
            400,
        ),
        case(
            "a bare ; as chunk extension",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        case(
            "a chunk extension name that is no token",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;bad[=x\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        case(
            "a trailer line that is no field line",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nno colon\r\n\r\n",
            400,
        ),
    ]
}

/// Requests that look like the invalid ones but are fine.
fn valid_requests() -> Vec<Case> {
    vec![
        case("HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", 200),
        case(
            "two identical Content-Length",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            200,
        ),
        case(
            "Transfer-Encoding Chunked in another case",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            200,
        ),
        case(
            "Content-Length exactly the body limit",
            format!(
                "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {BODY_LIMIT}\r\n\r\n{}",
                "b".repeat(BODY_LIMIT)
            ),
            200,
        ),
        case(
            "tabs and spaces around a header value",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: \t b \t\r\n\r\n",
            200,
        ),
        case(
            "a header value with obs-text",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\r\n\r\n".as_slice(),
            200,
        ),
        case(
            "100 fields including Host",
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
                (0..99)
                    .map(|i| format!("X-F{i}: v\r\n"))
                    .collect::<String>()
            ),
            200,
        ),
        case(
            "a request line of 8000 octets (RFC 9112 §3), under the limit",
            format!("GET /?{} HTTP/1.1\r\nHost: a\r\n\r\n", "q".repeat(7985)),
            200,
        ),
        case(
            "HTTP/1.2, served as HTTP/1.1 (RFC 9110 §2.5)",
            "GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            200,
        ),
        case(
            "OPTIONS * (RFC 9110 §9.3.7)",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            200,
        ),
        case(
            "chunk extensions by the grammar, with a quoted value",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 ; a ; b=c;d = \"e \\\" f\"\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
            200,
        ),
        case(
            "Host with a port",
            "GET / HTTP/1.1\r\nHost: a.example:8000\r\n\r\n",
            200,
        ),
        case(
            "Host as an IPv6 literal",
            "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            200,
        ),
        case(
            "a chunked body the route does not read",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\n",
            200,
        ),
        case(
            "absolute-form target",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            200,
        ),
    ]
}

/// Send each case on its own connection, in parallel, and collect every
/// mismatch so that one run reports them all.
fn run(app: App, cases: Vec<Case>, refusals: bool) {
    let server = app.start_with([
        "--limit-request-body".to_string(),
        BODY_LIMIT.to_string(),
        "--header-timeout".to_string(),
        "1".to_string(),
    ]);
    let addr = server.addr();
    let failures: Vec<String> = thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|case| {
                scope.spawn(move || {
                    let mut conn = Conn::tcp(addr);
                    // A refused request may be refused before it was all
                    // read; a reset while writing is then fine.
                    let _ = conn.try_send(&case.raw);
                    let response = match conn.try_read_response(false) {
                        Ok(r) => r,
                        Err(e) => return Some(format!("{}: no response: {e}", case.name)),
                    };
                    if response.status != case.status {
                        return Some(format!(
                            "{}: got {} instead of {}: {:?}",
                            case.name,
                            response.status,
                            case.status,
                            String::from_utf8_lossy(&response.raw)
                        ));
                    }
                    if refusals {
                        if !response.connection_has("close") {
                            return Some(format!(
                                "{}: {} without Connection: close",
                                case.name, response.status
                            ));
                        }
                        let (rest, err) = conn.read_to_end();
                        if !rest.is_empty() {
                            return Some(format!(
                                "{}: bytes after the refusal: {:?}",
                                case.name,
                                String::from_utf8_lossy(&rest)
                            ));
                        }
                        if let Some(e) = err
                            && e.kind() != std::io::ErrorKind::ConnectionReset
                        {
                            return Some(format!(
                                "{}: connection not closed after the refusal: {e}",
                                case.name
                            ));
                        }
                    }
                    None
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The server survived all of it.
    server.get("/").assert_status(200);
}

fn invalid_requests_are_refused_and_the_connection_closed(app: App) {
    run(app, invalid_requests(), true);
}

fn valid_near_misses_are_accepted(app: App) {
    run(app, valid_requests(), false);
}

fn limits_follow_the_command_line(app: App) {
    let server = app.start_with([
        "--limit-request-line",
        "100",
        "--limit-request-fields",
        "5",
        "--limit-request-field_size",
        "60",
    ]);
    let ok = |raw: String| {
        let response = server.connect().request(raw.as_bytes());
        assert_eq!(response.status, 200, "{raw:?}: {response:#?}");
    };
    let refused = |raw: String, status: u16| {
        let mut conn = server.connect();
        let _ = conn.try_send(raw.as_bytes());
        let response = conn.read_response();
        assert_eq!(response.status, status, "{raw:?}: {response:#?}");
        assert!(response.connection_has("close"));
    };
    ok(format!(
        "GET /?{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "q".repeat(50)
    ));
    refused(
        format!("GET /?{} HTTP/1.1\r\nHost: a\r\n\r\n", "q".repeat(150)),
        414,
    );
    let fields = |n: usize| -> String { (0..n).map(|i| format!("X-{i}: v\r\n")).collect() };
    ok(format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", fields(3)));
    refused(
        format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", fields(10)),
        431,
    );
    ok(format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: {}\r\n\r\n",
        "v".repeat(30)
    ));
    refused(
        format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: {}\r\n\r\n",
            "v".repeat(100)
        ),
        431,
    );
}

fn a_slow_but_complete_head_is_not_timed_out_early(app: App) {
    // The head arrives in two pieces, the second once the server has read
    // the first: it is served, not refused.
    let server = app.start_with(["--header-timeout", "5"]);
    let mut conn = server.connect();
    conn.send(b"GET / HTTP/1.1\r\nHo");
    conn.wait_until_server_read();
    conn.send(b"st: a\r\n\r\n");
    conn.read_response().assert_status(200);
}

fn a_refusal_to_head_is_a_head_alone(app: App) {
    // RFC 9110 §9.3.2: no content in answer to HEAD, the server's own
    // answers included (here: 400 for the missing Host).
    let server = app.start();
    let mut conn = server.connect();
    conn.send(b"HEAD / HTTP/1.1\r\n\r\n");
    let response = conn.read_head_response();
    response.assert_status(400);
    assert!(response.header("content-length").is_some());
    conn.assert_closed();
}

fn an_unread_body_is_skipped_and_the_next_request_answered(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    conn.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\n\
          POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nworld\
          GET /echo?n=3 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    conn.read_response().assert_status(200);
    conn.read_response().assert_status(200);
    let echo = conn.read_response();
    echo.assert_status(200);
    assert_eq!(echo.json()["query"], "n=3");
}

fn a_body_cut_short_gets_no_success(app: App) {
    // Content-Length 10, five bytes, then the client stops sending: the
    // request is incomplete (RFC 9112 §6.3), so it is not answered 200.
    let server = app.start();
    let mut conn = server.connect();
    conn.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello");
    conn.tcp_stream()
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown(SHUT_WR)");
    let (rest, _) = conn.read_to_end();
    assert!(
        rest.is_empty(),
        "an answer to an incomplete request: {:?}",
        String::from_utf8_lossy(&rest)
    );
    server.get("/").assert_status(200);
}

fn absolute_form_authority_is_the_host(app: App) {
    // RFC 9112 §3.2.2: the target's authority wins over Host.
    let server = app.start();
    let mut conn = server.connect();
    let echo = conn.request(b"GET http://other.example:8080/echo HTTP/1.1\r\nHost: a\r\n\r\n");
    echo.assert_status(200);
    assert_eq!(echo.json()["headers"]["host"], "other.example:8080");
}

fn reset_content_has_no_content(app: App) {
    // RFC 9110 §15.3.6: no content in a 205, and Content-Length: 0 says so.
    let server = app.start();
    let mut conn = server.connect();
    let response = conn.request(b"GET /status?code=205 HTTP/1.1\r\nHost: a\r\n\r\n");
    response.assert_status(205);
    assert_eq!(response.header("content-length"), Some("0"));
    assert!(response.body.is_empty());
    // The connection is still in step: the next answer is the next one.
    conn.request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .assert_status(200);
}

fn a_large_unread_chunked_body_closes_and_the_answer_says_so(app: App) {
    // More than the server skips (1 MiB) to a route that reads nothing: the
    // answer goes, the connection closes, and the answer announces it.
    let server = app.start();
    let mut conn = server.connect();
    let mut writer = conn.tcp_stream().try_clone().expect("clone the socket");
    let mut raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend(chunked(&vec![b'x'; 3 << 20], &[65_536]));
    let sender = thread::spawn(move || {
        use std::io::Write;
        // The server stops reading part-way: a reset here is expected.
        let _ = writer.write_all(&raw);
    });
    let response = conn.read_response();
    response.assert_status(200);
    assert!(response.connection_has("close"), "{response:#?}");
    sender.join().expect("writer thread");
}
