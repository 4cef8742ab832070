//! The same request must give the same answer however the network cuts it
//! up. Each request is sent once whole for a reference answer, then split at
//! every byte position, then in random pieces (a small seeded PRNG, so a
//! failure names its seed). Between pieces the test waits until the server
//! has read what was sent, so the server really sees the pieces apart.

use crate::harness::{App, Conn, Prng, Server};
use serde_json::Value;

// Each test below runs against both forms of the test application.
crate::harness::test_each_app!(
    chunked_request_split_at_every_byte,
    content_length_request_split_at_every_byte,
    pipelined_requests_in_random_pieces,
);

/// A POST with repeated headers, a chunked body with extensions, and
/// trailers: every state of the head and body parsers.
const CHUNKED: &[u8] = b"POST /echo?split=yes&x=%20 HTTP/1.1\r\n\
Host: localhost\r\n\
X-Rep: one\r\n\
User-Agent: split-test/1.0\r\n\
X-Rep: two\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Transfer-Encoding: chunked\r\n\
\r\n\
6;ext=1\r\nhello \r\n\
b\r\nsplit world\r\n\
1\r\n!\r\n\
0\r\n\
X-Trailer: t\r\n\
\r\n";

const WITH_LENGTH: &[u8] = b"PUT /echo?length HTTP/1.1\r\n\
Host: localhost\r\n\
X-Rep: a\r\n\
X-Rep: b\r\n\
Content-Length: 17\r\n\
\r\n\
hello split world";

fn reference(server: &Server, raw: &[u8]) -> Value {
    let body = if raw == CHUNKED {
        "hello split world!"
    } else {
        "hello split world"
    };
    let response = server.connect().request(raw);
    response.assert_status(200);
    let echo = response.json();
    // The reference itself must be right, or every comparison is moot.
    assert_eq!(echo["body"], body, "{echo}");
    assert!(
        echo["headers"]["x-rep"].as_str().unwrap().contains(", "),
        "{echo}"
    );
    echo
}

fn split_at_every_byte(app: App, raw: &[u8]) {
    let server = app.start();
    let expected = reference(&server, raw);
    // One keep-alive connection for all positions: the parser must also
    // start clean after each request.
    let mut conn = server.connect();
    for at in 1..raw.len() {
        conn.send(&raw[..at]);
        conn.wait_until_server_read();
        conn.send(&raw[at..]);
        let response = conn.read_response();
        assert_eq!(
            response.status,
            200,
            "split at byte {at} ({:?} | {:?}): {response:#?}",
            String::from_utf8_lossy(&raw[..at]),
            String::from_utf8_lossy(&raw[at..])
        );
        assert_eq!(response.json(), expected, "split at byte {at}");
    }
}

fn chunked_request_split_at_every_byte(app: App) {
    split_at_every_byte(app, CHUNKED);
}

fn content_length_request_split_at_every_byte(app: App) {
    split_at_every_byte(app, WITH_LENGTH);
}

fn pipelined_requests_in_random_pieces(app: App) {
    let server = app.start();
    let expected = [reference(&server, CHUNKED), reference(&server, WITH_LENGTH)];
    let mut both = CHUNKED.to_vec();
    both.extend_from_slice(WITH_LENGTH);
    for seed in 1..=60u64 {
        let mut rng = Prng::new(seed);
        let mut conn: Conn = server.connect();
        let mut rest = both.as_slice();
        while !rest.is_empty() {
            let n = rng.range(1, 24).min(rest.len());
            conn.send(&rest[..n]);
            rest = &rest[n..];
            // Sometimes let the pieces pile up, sometimes make the server
            // take each one alone.
            if rng.range(0, 1) == 1 {
                conn.wait_until_server_read();
            }
        }
        for (i, expected) in expected.iter().enumerate() {
            let response = conn.read_response();
            assert_eq!(
                response.status, 200,
                "seed {seed}, answer {i}: {response:#?}"
            );
            assert_eq!(&response.json(), expected, "seed {seed}, answer {i}");
        }
    }
}
