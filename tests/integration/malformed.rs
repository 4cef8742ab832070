//! Strict parsing as data, in the manner of Gunicorn's `tests/requests`
//! corpus: one raw request, one expected status. Every refusal must come with
//! `Connection: close` and the server must then close the connection. A
//! table of valid near-misses checks that strictness has not turned into
//! refusing good requests. Framing rules follow RFC 9112 §6.1 and §6.3.

// `super::`, not `crate::`: wsgi_suite compiles this file again with its own harness.
use super::harness::{Conn, Server};
use std::thread;

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

/// The limits the table's server runs with (the ones not given keep
/// Gunicorn's defaults: request line 4094, 100 fields, field 8190 bytes).
const BODY_LIMIT: usize = 1000;

fn invalid_requests() -> Vec<Case> {
    let long_target = format!("/{}", "a".repeat(5000));
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
        case("version HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
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
            "a request line just under the limit",
            format!("GET /?{} HTTP/1.1\r\nHost: a\r\n\r\n", "q".repeat(4000)),
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
fn run(cases: Vec<Case>, refusals: bool) {
    let server = Server::testapp_with([
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

#[test]
fn invalid_requests_are_refused_and_the_connection_closed() {
    run(invalid_requests(), true);
}

#[test]
fn valid_near_misses_are_accepted() {
    run(valid_requests(), false);
}

#[test]
fn limits_follow_the_command_line() {
    let server = Server::testapp_with([
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

#[test]
fn a_slow_but_complete_head_is_not_timed_out_early() {
    // The head arrives in two pieces, the second once the server has read
    // the first: it is served, not refused.
    let server = Server::testapp_with(["--header-timeout", "5"]);
    let mut conn = server.connect();
    conn.send(b"GET / HTTP/1.1\r\nHo");
    conn.wait_until_server_read();
    conn.send(b"st: a\r\n\r\n");
    conn.read_response().assert_status(200);
}
