//! One HTTP grammar for the server and the WSGI bridge (`rgun_gateway::
//! grammar`): a response header the server would refuse raises at
//! `start_response`, naming the header, as in Gunicorn
//! (`tests/python/grammar_app.py`).

use crate::harness::{Server, WAIT};
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
