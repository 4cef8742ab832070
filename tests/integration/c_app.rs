//! Applications written in C against `gateway/include/rgun.h`, compiled
//! with the system `cc` as an application author would, and served by the
//! real binary: the header is the contract for everything that is not Rust.

use crate::harness::{
    Framing, Prng, Server, TempDir, WAIT, chunked, compile_c_app, get, manifest_dir, request,
};

#[test]
fn c_hello_example_is_served() {
    let source = manifest_dir().join("examples/c/hello.c");
    assert!(source.exists(), "{} is missing", source.display());
    let dir = TempDir::new("c-hello");
    let lib = dir.join("libhello_c.so");
    compile_c_app(&source, &lib);
    let server = Server::builder(format!("{}:app", lib.display())).start();
    let response = server.get("/");
    response.assert_status(200);
    assert_eq!(response.text(), "Hello from C\n");

    // Its init hook logs through the server, into the error log.
    server.wait_for_log("hello_c: worker 0 ready (ABI 2)", WAIT);

    // `/echo-body` streams the body back with no length: chunked.
    let body = Prng::new(7).bytes(100_000);
    let mut conn = server.connect();
    let response = conn.request(&request("POST", "/echo-body", &[], &body));
    response.assert_status(200);
    assert!(
        matches!(response.framing, Framing::Chunked(_)),
        "{:?}",
        response.headers
    );
    assert!(response.body == body, "the echoed body differs");
    conn.request(&get("/nope")).assert_status(404);
}

/// A C application that reads the body in small pieces with `read_body`
/// and streams its answer with `start_response` and `write_body`.
const STREAMING_C_APP: &str = r#"
#include <stdio.h>
#include <string.h>
#include "rgun.h"

static int32_t handle(const rgun_server *server, rgun_call *call,
                      const rgun_request *request) {
    uint8_t buf[7];
    long total = 0;
    ssize_t n;
    while ((n = server->read_body(call, buf, sizeof buf)) > 0) total += n;
    if (n < 0) return RGUN_ERR;
    rgun_header headers[] = {{RGUN_STR("Content-Type"), RGUN_STR("text/plain")}};
    if (server->start_response(call, 200, RGUN_STR(""), headers, 1) != RGUN_OK)
        return RGUN_ERR;
    char line[64];
    int len = snprintf(line, sizeof line, "read %ld\n", total);
    if (server->write_body(call, (const uint8_t *)line, (size_t)len) != RGUN_OK)
        return RGUN_ERR;
    if (server->write_body(call, request->method.ptr, request->method.len) != RGUN_OK)
        return RGUN_ERR;
    return server->write_body(call, (const uint8_t *)"\n", 1);
}

const rgun_app app = {
    RGUN_APP_MAGIC, RGUN_ABI_VERSION, 0, NULL, handle, NULL, NULL,
};
"#;

#[test]
fn c_app_reads_a_body_and_streams_an_answer() {
    let dir = TempDir::new("c-stream");
    let source = dir.join("stream.c");
    std::fs::write(&source, STREAMING_C_APP).unwrap();
    let lib = dir.join("libstream_c.so");
    compile_c_app(&source, &lib);
    let server = Server::builder(format!("{}:app", lib.display())).start();
    let mut conn = server.connect();

    let response = conn.request(&request("PUT", "/", &[], &[b'z'; 1000]));
    response.assert_status(200);
    assert_eq!(response.text(), "read 1000\nPUT\n");

    let mut raw =
        b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend(chunked(&[b'q'; 333], &[10, 1, 100]));
    let response = conn.request(&raw);
    assert_eq!(response.text(), "read 333\nPOST\n");

    let response = conn.request(&get("/"));
    assert_eq!(response.text(), "read 0\nGET\n");
}
