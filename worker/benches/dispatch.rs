//! The cost of one request with no I/O: parse the head, hand it to an
//! application through the gateway interface, encode the answer. Run with
//! `cargo bench -p rgun-worker`; for instruction counts that do not depend
//! on the machine's load, run the bench binary under
//! `valgrind --tool=callgrind` (see scripts/bench).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rgun_gateway::{Error, Request, Response, export_app};
use rgun_worker::bench::Harness;

fn hello(request: &mut Request<'_>) -> Result<Response<'static>, Error> {
    match request.path_bytes() {
        b"/" => Ok(Response::text(200, "Hello, World!")),
        _ => Ok(Response::text(404, "not found")),
    }
}

export_app!(bench_app, handler = hello);

const WRK_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n";
const BROWSER_GET: &[u8] = b"GET /?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\nCookie: session=0123456789abcdef0123456789abcdef\r\nUpgrade-Insecure-Requests: 1\r\n\r\n";

fn dispatch(c: &mut Criterion) {
    let mut harness = Harness::new(&bench_app);
    assert!(harness.answer(WRK_GET).starts_with(b"HTTP/1.1 200 OK\r\n"));
    c.bench_function("GET / (wrk's request)", |b| {
        b.iter(|| black_box(harness.answer(black_box(WRK_GET)).len()))
    });
    c.bench_function("GET / (a browser's request)", |b| {
        b.iter(|| black_box(harness.answer(black_box(BROWSER_GET)).len()))
    });
    // The same with --metrics-bind: the counters, the request line and the
    // precise clock around the call.
    let mut metered = Harness::with_metrics(&bench_app, true);
    c.bench_function("GET / (wrk's request, metrics on)", |b| {
        b.iter(|| black_box(metered.answer(black_box(WRK_GET)).len()))
    });
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
