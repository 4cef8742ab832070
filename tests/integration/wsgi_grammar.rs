//! One HTTP grammar for the server and the WSGI bridge (`rgun_gateway::
//! grammar`): a response header the server would refuse raises at
//! `start_response`, naming the header, as in Gunicorn
//! (`tests/python/grammar_app.py`); and a request that repeats a field that
//! is no list is refused by the worker's parser alike for a native and a
//! WSGI application.

use crate::harness::App;
use crate::harness::{Server, WAIT, get};
use crate::wsgi_harness::python_dir;

fn grammar_app() -> Server {
    Server::builder("grammar_app:app")
        .arg("--chdir")
        .arg(python_dir().to_str().unwrap())
        .start()
}

/// Each case of `grammar_app.py`'s `BAD`, and what the exception says of it
/// (Python's repr of the name and value, as the log shows them).
const REFUSED: &[(&str, &str)] = &[
    (
        "control-value",
        r"ValueError: header 'X-Bad' has invalid value 'a\x01b': no control characters but tab",
    ),
    (
        "escape-value",
        r"ValueError: header 'X-Colour' has invalid value '\x1b[31mred'",
    ),
    (
        "delete-value",
        r"ValueError: header 'X-Del' has invalid value 'a\x7f'",
    ),
    (
        "newline-value",
        r"ValueError: header 'X-Split' has invalid value 'a\r\nX-Injected: yes'",
    ),
    (
        "space-name",
        "ValueError: invalid header name 'X Bad': a header name is a token",
    ),
    (
        "colon-name",
        "ValueError: invalid header name 'X-Bad:': a header name is a token",
    ),
    (
        "empty-name",
        "ValueError: invalid header name '': a header name is a token",
    ),
    (
        "signed-length",
        "ValueError: header 'Content-Length' has invalid value '+5': Content-Length holds a byte that is no digit",
    ),
];

#[test]
fn start_response_raises_naming_a_header_the_server_would_refuse() {
    let server = grammar_app();
    for (case, message) in REFUSED {
        // Caught by the application: the exception is its to handle.
        let caught = server.get(&format!("/caught/{case}"));
        caught.assert_status(200);
        assert!(
            caught.text().starts_with(message),
            "{case}: the application caught {:?}",
            caught.text()
        );
        // Not caught: a 500, and the traceback in the error log names the
        // header.
        let r = server.get(&format!("/{case}"));
        r.assert_status(500);
        assert!(r.header("x-injected").is_none(), "{r:#?}");
        server.wait_for_log(&format!("Error handling request GET /{case}"), WAIT);
        server.wait_for_log(message, WAIT);
    }
    // The log says where the application gave it.
    server.wait_for_log("in app", WAIT);
    // A tab, a space and obs-text are field-value bytes: sent as given.
    let mut conn = server.connect();
    conn.send(b"GET /allowed HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let (answer, _) = conn.read_to_end();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    for line in [&b"\r\nX-Tab: a\tb c\r\n"[..], b"\r\nX-Latin: caf\xe9\r\n"] {
        assert!(
            answer.windows(line.len()).any(|w| w == line),
            "{line:?} in {text}"
        );
    }
    // The worker lives on.
    server.get("/caught/control-value").assert_status(200);
}

/// A request with these header lines (and a Host) to `/echo`, raw.
fn echo(fields: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut raw = String::from("POST /echo HTTP/1.1\r\nHost: localhost\r\n");
    for (name, value) in fields {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    raw.into_bytes()
}

/// RFC 9110 §5.3: a field that is no list, sent twice, is refused with 400
/// and the connection closed, before any application sees it. A list field
/// repeated is joined; Content-Length repeated with one value is that value
/// (RFC 9112 §6.3).
fn repeated_singletons_are_refused(server: &Server) {
    let refused: &[&[(&str, &str)]] = &[
        &[
            ("Content-Type", "application/json"),
            ("Content-Type", "text/html"),
            ("Content-Length", "2"),
        ],
        // The same value twice is still two lines of a single field.
        &[
            ("Content-Type", "application/json"),
            ("content-type", "application/json"),
            ("Content-Length", "2"),
        ],
        &[("Host", "other"), ("Content-Length", "2")],
        &[("Content-Length", "2"), ("Content-Length", "3")],
    ];
    for fields in refused {
        let mut conn = server.connect();
        let r = conn.request(&echo(fields, "{}"));
        r.assert_status(400);
        assert!(r.connection_has("close"), "{fields:?}: {r:#?}");
        conn.assert_closed();
    }

    let mut conn = server.connect();
    let r = conn.request(&echo(
        &[
            ("Content-Type", "application/json"),
            ("Accept", "text/html"),
            ("Accept", "text/plain"),
            ("Content-Length", "2"),
            ("Content-Length", "2"),
        ],
        "{}",
    ));
    r.assert_status(200);
    let echoed = r.json();
    assert_eq!(echoed["headers"]["content-type"], "application/json");
    assert_eq!(echoed["headers"]["accept"], "text/html, text/plain");
    assert_eq!(echoed["body"], "{}");
    // The connection goes on.
    conn.request(&get("/")).assert_status(200);
}

#[test]
fn repeated_singleton_fields_are_refused_before_a_native_app() {
    repeated_singletons_are_refused(&Server::testapp());
}

#[test]
fn repeated_singleton_fields_are_refused_before_a_wsgi_app() {
    repeated_singletons_are_refused(&App::Wsgi.start());
}
