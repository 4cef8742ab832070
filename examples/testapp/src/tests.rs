//! The routes driven through the exported `app` table by a fake server that
//! records what the app hands over. This checks the app's side of the
//! contract only: framing, validation and the wire are the server's tests.

use std::sync::Mutex;
use std::time::Instant;

use rgun_gateway::ffi;
use sha2::{Digest, Sha256};

/// What one call handed to the fake server.
#[derive(Default)]
struct Call {
    body: Vec<u8>,
    read_at: usize,
    /// The `len` of every `read_body`, to check the 64 KiB pieces.
    reads: Vec<usize>,
    status: Option<u16>,
    headers: Vec<(String, Vec<u8>)>,
    /// True for `respond` (whole body), false for `start_response`.
    whole: bool,
    pieces: Vec<Vec<u8>>,
}

impl Call {
    fn header(&self, name: &str) -> Option<&[u8]> {
        let mut found = self.headers.iter().filter(|(n, _)| n == name);
        let value = found.next().map(|(_, v)| v.as_slice());
        assert!(found.next().is_none(), "header {name} set twice");
        value
    }
    fn body(&self) -> Vec<u8> {
        self.pieces.concat()
    }
    fn text(&self) -> String {
        String::from_utf8(self.body()).unwrap()
    }
}

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// # Safety
/// `call` must be the pointer `run` handed to the app, during that call.
unsafe fn call<'c>(call: *mut ffi::Call) -> &'c mut Call {
    // SAFETY: `run` passes a `&mut Call` cast to the opaque pointer, alive
    // and otherwise unused for the duration of the call.
    unsafe { &mut *call.cast::<Call>() }
}

fn owned(s: ffi::Str) -> Vec<u8> {
    // SAFETY: the app hands over slices valid for the callback.
    unsafe { s.as_bytes() }.to_vec()
}

fn record_head(call: &mut Call, status: u16, headers: *const ffi::Header, count: usize) {
    let headers = if count == 0 {
        &[][..]
    } else {
        // SAFETY: the app passes `count` headers valid for the callback.
        unsafe { std::slice::from_raw_parts(headers, count) }
    };
    call.status = Some(status);
    call.headers = headers
        .iter()
        .map(|h| (String::from_utf8(owned(h.name)).unwrap(), owned(h.value)))
        .collect();
}

unsafe extern "C" fn read_body(c: *mut ffi::Call, buf: *mut u8, len: usize) -> isize {
    // SAFETY: see `call`.
    let c = unsafe { call(c) };
    c.reads.push(len);
    // Hand out less than asked, as a socket does, to exercise the loops.
    let n = len.min(c.body.len() - c.read_at).min(50_000);
    // SAFETY: the app passed `len` writable bytes at `buf`, and n <= len.
    unsafe { std::ptr::copy_nonoverlapping(c.body[c.read_at..].as_ptr(), buf, n) };
    c.read_at += n;
    n as isize
}

unsafe extern "C" fn start_response(
    c: *mut ffi::Call,
    status: u16,
    _reason: ffi::Str,
    headers: *const ffi::Header,
    count: usize,
) -> i32 {
    // SAFETY: see `call`.
    let c = unsafe { call(c) };
    record_head(c, status, headers, count);
    ffi::OK
}

unsafe extern "C" fn write_body(c: *mut ffi::Call, data: *const u8, len: usize) -> i32 {
    // SAFETY: see `call`.
    let c = unsafe { call(c) };
    c.pieces.push(owned(ffi::Str { ptr: data, len }));
    ffi::OK
}

unsafe extern "C" fn respond(
    c: *mut ffi::Call,
    status: u16,
    _reason: ffi::Str,
    headers: *const ffi::Header,
    count: usize,
    body: *const u8,
    body_len: usize,
) -> i32 {
    // SAFETY: see `call`.
    let c = unsafe { call(c) };
    record_head(c, status, headers, count);
    c.whole = true;
    c.pieces.push(owned(ffi::Str {
        ptr: body,
        len: body_len,
    }));
    ffi::OK
}

unsafe extern "C" fn log(_level: i32, message: ffi::Str) {
    let line = String::from_utf8_lossy(&owned(message)).into_owned();
    LOG.lock().unwrap().push(line);
}

unsafe extern "C" fn send_file(_: *mut ffi::Call, _: i32, _: i64, _: i64) -> i32 {
    ffi::ERR
}

/// The server table, `static` because the SDK keeps a pointer to it.
struct Server(ffi::Server);
// SAFETY: the table is immutable and holds only function pointers and an
// empty string; sharing it between test threads is sound.
unsafe impl Sync for Server {}

static SERVER: Server = Server(ffi::Server {
    abi_version: ffi::ABI_VERSION,
    worker_id: 0,
    app_arg: ffi::Str::EMPTY,
    read_body,
    start_response,
    write_body,
    respond,
    log,
    send_file,
});

/// Calls the app as a server would for `method target`; returns what
/// `handle` returned and what it handed over.
fn run(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> (i32, Call) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<ffi::Header> = headers
        .iter()
        .map(|(n, v)| ffi::Header {
            name: ffi::Str::new(n.as_bytes()),
            value: ffi::Str::new(v.as_bytes()),
        })
        .collect();
    let request = ffi::Request {
        method: ffi::Str::new(method.as_bytes()),
        raw_uri: ffi::Str::new(target.as_bytes()),
        path: ffi::Str::new(path.as_bytes()),
        query: ffi::Str::new(query.as_bytes()),
        script_name: ffi::Str::EMPTY,
        protocol: ffi::Str::new(b"HTTP/1.1"),
        scheme: ffi::Str::new(b"http"),
        server_name: ffi::Str::new(b"localhost"),
        remote_addr: ffi::Str::new(b"127.0.0.1"),
        content_type: ffi::Str::EMPTY,
        headers: headers.as_ptr(),
        header_count: headers.len(),
        content_length: body.len() as i64,
        server_port: 8000,
        remote_port: 40000,
        body_chunked: 0,
        client_addr: ffi::Str::new(b"127.0.0.1"),
    };
    let mut call = Call {
        body: body.to_vec(),
        ..Call::default()
    };
    let handle = crate::app.handle.unwrap();
    // SAFETY: every pointer is valid for the call; `call` is the `Call` the
    // callbacks expect behind the opaque pointer.
    let rc = unsafe { handle(&SERVER.0, (&raw mut call).cast(), &request) };
    (rc, call)
}

fn get(target: &str) -> Call {
    let (rc, call) = run("GET", target, &[], b"");
    assert_eq!(rc, ffi::OK, "GET {target}");
    call
}

#[test]
fn exports_an_rgun_app() {
    assert_eq!(crate::app.magic, ffi::APP_MAGIC);
    assert_eq!(crate::app.abi_version, ffi::ABI_VERSION);
    assert_eq!(crate::app.flags, ffi::APP_THREAD_SAFE);
    assert!(crate::app.init.is_none() && crate::app.shutdown.is_none());
}

#[test]
fn hello() {
    let c = get("/");
    assert_eq!((c.status, c.whole), (Some(200), true));
    assert_eq!(c.headers, [("Content-Type".into(), b"text/plain".to_vec())]);
    assert_eq!(c.text(), "Hello, World!");
    // The query is ignored, and routes match the path alone.
    assert_eq!(get("/?a=b").text(), "Hello, World!");
    assert_eq!(run("POST", "/", &[], b"").1.text(), "Hello, World!");
}

#[test]
fn unknown_path() {
    let c = get("/nope");
    assert_eq!(c.status, Some(404));
    assert_eq!(c.header("Content-Type"), Some(&b"text/plain"[..]));
    assert_eq!(c.text(), "not found");
    assert_eq!(get("/echo/").status, Some(404));
}

#[test]
fn echo() {
    let headers = [
        ("Host", "example.com"),
        ("X-Multi", "a"),
        ("x-multi", "b"),
        ("X-Latin", "caf\u{e9}"),
        ("Content-Type", "text/plain"),
        ("Content-Length", "12"),
    ];
    let (rc, c) = run("PUT", "/echo?x=1&y=%20", &headers, b"hi \"there\"\n\xff");
    assert_eq!(rc, ffi::OK);
    assert_eq!(c.status, Some(200));
    assert_eq!(c.header("Content-Type"), Some(&b"application/json"[..]));
    // Byte for byte what testapp_wsgi.py answers for the same request (its
    // own header order puts Content-Type and Content-Length last). "é" comes
    // as UTF-8 and reads as two ISO-8859-1 characters, as PEP 3333 has it.
    let expected = concat!(
        r#"{"method": "PUT", "path": "/echo", "raw_uri": "/echo?x=1&y=%20", "query": "x=1&y=%20", "#,
        r#""headers": {"host": "example.com", "x-multi": "a, b", "x-latin": "caf\u00c3\u00a9", "#,
        r#""content-type": "text/plain", "content-length": "12"}, "#,
        r#""body": "hi \"there\"\n\ufffd", "body_length": 12, "#,
        r#""remote_addr": "127.0.0.1", "client_addr": "127.0.0.1", "scheme": "http", "#,
        r#""protocol": "HTTP/1.1"}"#
    );
    assert_eq!(c.text(), expected);
}

#[test]
fn echo_with_no_headers_or_body() {
    let c = get("/echo");
    assert!(
        c.text()
            .contains(r#""headers": {}, "body": "", "body_length": 0"#)
    );
}

#[test]
fn upload_reads_in_pieces_of_at_most_64k() {
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (rc, c) = run("POST", "/upload", &[], &body);
    assert_eq!(rc, ffi::OK);
    assert!(c.reads.len() > 1 && c.reads.iter().all(|&n| 0 < n && n <= 65536));
    let sha: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        c.text(),
        format!(r#"{{"body_length": 300000, "sha256": "{sha}"}}"#)
    );
    assert_eq!(c.header("Content-Type"), Some(&b"application/json"[..]));

    let empty = get("/upload").text();
    assert_eq!(
        empty,
        r#"{"body_length": 0, "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}"#
    );
}

#[test]
fn bytes() {
    for n in [0usize, 1, 13, 65536, 65537, 300_000] {
        let c = get(&format!("/bytes?n={n}"));
        assert_eq!((c.status, c.whole), (Some(200), true));
        assert_eq!(c.header("Content-Type"), Some(&b"text/plain"[..]));
        let body = c.body();
        assert!(body.len() == n && body.iter().all(|&b| b == b'x'), "n={n}");
    }
    assert!(get("/bytes").body().is_empty());
    assert!(get("/bytes?n=-5").body().is_empty());
    assert_eq!(run("GET", "/bytes?n=lots", &[], b"").0, ffi::ERR);
}

#[test]
fn stream_hands_over_each_piece_with_delays_between() {
    let started = Instant::now();
    let c = get("/stream?chunks=3&size=5&delay_ms=30");
    let elapsed = started.elapsed().as_millis();
    assert!((60..1000).contains(&elapsed), "took {elapsed} ms");
    assert_eq!((c.status, c.whole), (Some(200), false));
    assert_eq!(c.headers, [("Content-Type".into(), b"text/plain".to_vec())]);
    assert_eq!(c.pieces, vec![b"yyyyy".to_vec(); 3]);

    assert_eq!(get("/stream").pieces, [b"y"]);
    assert_eq!(get("/stream?chunks=2&size=0").pieces, vec![Vec::new(); 2]);
    assert!(get("/stream?chunks=0").pieces.is_empty());
    let big = get("/stream?chunks=2&size=70000").pieces;
    assert!(big.len() == 2 && big.iter().all(|p| p.len() == 70000));
    assert_eq!(run("GET", "/stream?delay_ms=-1", &[], b"").0, ffi::ERR);
}

#[test]
fn status() {
    let c = get("/status?code=418");
    assert_eq!((c.status, c.text().as_str()), (Some(418), "status 418"));
    assert_eq!(c.header("Content-Type"), Some(&b"text/plain"[..]));
    assert_eq!(get("/status").status, Some(200));
    for code in [204, 304] {
        let c = get(&format!("/status?code={code}"));
        assert_eq!(c.status, Some(code));
        assert!(c.headers.is_empty() && c.body().is_empty(), "{code}");
    }
    // Passed through for the server to judge.
    assert_eq!(get("/status?code=999").status, Some(999));
    assert_eq!(run("GET", "/status?code=70000", &[], b"").0, ffi::ERR);
    assert_eq!(run("GET", "/status?code=x", &[], b"").0, ffi::ERR);
}

#[test]
fn sleep() {
    let started = Instant::now();
    assert_eq!(get("/sleep?ms=50").text(), "slept 50");
    assert!(started.elapsed().as_millis() >= 50);
    assert_eq!(get("/sleep").text(), "slept 0");
    assert_eq!(run("GET", "/sleep?ms=-1", &[], b"").0, ffi::ERR);
}

#[test]
fn pid() {
    assert_eq!(get("/pid").text(), std::process::id().to_string());
}

#[test]
fn panic_is_an_error_return() {
    let (rc, c) = run("GET", "/panic", &[], b"");
    assert_eq!(rc, ffi::ERR);
    assert_eq!(c.status, None);
    let log = LOG.lock().unwrap();
    assert!(log.iter().any(|l| l.contains("/panic asked for a failure")));
}

#[test]
fn header_is_set_unchecked() {
    let c = get("/header?name=X-Evil&value=a%0D%0AInjected:+1");
    assert_eq!(c.status, Some(200));
    assert_eq!(c.header("X-Evil"), Some(&b"a\r\nInjected: 1"[..]));
    assert_eq!(c.header("Content-Type"), Some(&b"text/plain"[..]));
    assert_eq!(c.text(), "ok");
    assert_eq!(get("/header").header("X-Test"), Some(&b""[..]));
    assert_eq!(
        get("/header?name=A&value=%00%FF").header("A"),
        Some(&[0, 0xff][..])
    );
}
