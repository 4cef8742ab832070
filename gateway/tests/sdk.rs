//! The Rust SDK against a fake server: what `export_app!` trampolines hand
//! to the C ABI for each kind of response, and how panics, errors, the body
//! stream and the hooks come out. The server's own checks are not faked.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::sync::Mutex;

use rgun_gateway::{Error, IntoBytes, Request, Response, Worker, export_app, ffi};

type Headers = Vec<(Vec<u8>, Vec<u8>)>;

/// What one call handed to the fake server, and what it feeds back.
#[derive(Default)]
struct Call {
    body: Vec<u8>,
    read_at: usize,
    /// `read_body` answers -1 once the body is used up, as on a cut-off
    /// connection, instead of 0.
    body_fails: bool,
    /// `start_response` and `respond` answer `ERR`, as for a bad header.
    refuse_head: bool,
    heads: Vec<(u16, String, Headers)>,
    whole: Option<Vec<u8>>,
    pieces: Vec<Vec<u8>>,
}

/// Every line logged through the fake server, prefixed with its level.
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn logged(fragment: &str) -> bool {
    LOG.lock().unwrap().iter().any(|l| l.contains(fragment))
}

/// # Safety
/// `call` must be the pointer `run` handed to the app, during that call.
unsafe fn call<'c>(call: *mut ffi::Call) -> &'c mut Call {
    // SAFETY: `run` passes a `&mut Call` cast to the opaque pointer, alive
    // and otherwise unused while the app runs.
    unsafe { &mut *call.cast::<Call>() }
}

fn owned(s: ffi::Str) -> Vec<u8> {
    // SAFETY: the SDK hands over slices valid for the callback.
    unsafe { s.as_bytes() }.to_vec()
}

fn record_head(c: &mut Call, status: u16, reason: ffi::Str, h: *const ffi::Header, n: usize) {
    let headers = if n == 0 {
        &[][..]
    } else {
        // SAFETY: the SDK passes `n` headers valid for the callback.
        unsafe { std::slice::from_raw_parts(h, n) }
    };
    let headers = headers
        .iter()
        .map(|h| (owned(h.name), owned(h.value)))
        .collect();
    let reason = String::from_utf8(owned(reason)).unwrap();
    c.heads.push((status, reason, headers));
}

unsafe extern "C" fn read_body(c: *mut ffi::Call, buf: *mut u8, len: usize) -> isize {
    // SAFETY: see `call`.
    let c = unsafe { call(c) };
    let n = len.min(c.body.len() - c.read_at).min(3);
    if n == 0 && c.body_fails {
        return -1;
    }
    // SAFETY: the SDK passed `len` writable bytes at `buf`, and n <= len.
    unsafe { std::ptr::copy_nonoverlapping(c.body[c.read_at..].as_ptr(), buf, n) };
    c.read_at += n;
    n as isize
}

unsafe extern "C" fn start_response(
    c: *mut ffi::Call,
    status: u16,
    reason: ffi::Str,
    headers: *const ffi::Header,
    count: usize,
) -> i32 {
    // SAFETY: see `call`.
    let c = unsafe { call(c) };
    record_head(c, status, reason, headers, count);
    if c.refuse_head { ffi::ERR } else { ffi::OK }
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
    reason: ffi::Str,
    headers: *const ffi::Header,
    count: usize,
    body: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: see `call`.
    let c = unsafe { call(c) };
    record_head(c, status, reason, headers, count);
    c.whole = Some(owned(ffi::Str { ptr: body, len }));
    if c.refuse_head { ffi::ERR } else { ffi::OK }
}

unsafe extern "C" fn log(level: i32, message: ffi::Str) {
    let line = format!("{level} {}", String::from_utf8_lossy(&owned(message)));
    LOG.lock().unwrap().push(line);
}

unsafe extern "C" fn send_file(_: *mut ffi::Call, _: i32, _: i64, _: i64) -> i32 {
    ffi::ERR
}

/// The server table, `static` because the SDK keeps a pointer to it.
struct Server(ffi::Server);
// SAFETY: immutable, and holds only function pointers and a static string.
unsafe impl Sync for Server {}

static SERVER: Server = Server(ffi::Server {
    abi_version: ffi::ABI_VERSION,
    worker_id: 7,
    app_arg: ffi::Str::new(b"app"),
    read_body,
    start_response,
    write_body,
    respond,
    log,
    send_file,
});

/// The request every test sends, with `path` and `body` of its own.
fn run(app: &ffi::App, path: &str, body: &[u8], setup: impl FnOnce(&mut Call)) -> (i32, Call) {
    let headers = [
        ffi::Header {
            name: ffi::Str::new(b"Host"),
            value: ffi::Str::new(b"example.com"),
        },
        ffi::Header {
            name: ffi::Str::new(b"X-Twice"),
            value: ffi::Str::new(b"one"),
        },
        ffi::Header {
            name: ffi::Str::new(b"x-twice"),
            value: ffi::Str::new(b"two"),
        },
    ];
    let request = ffi::Request {
        method: ffi::Str::new(b"POST"),
        raw_uri: ffi::Str::new(b"/a%20b?q=1"),
        path: ffi::Str::new(path.as_bytes()),
        query: ffi::Str::new(b"q=1"),
        script_name: ffi::Str::EMPTY,
        protocol: ffi::Str::new(b"HTTP/1.1"),
        scheme: ffi::Str::new(b"https"),
        server_name: ffi::Str::new(b"example.com"),
        remote_addr: ffi::Str::new(b"::1"),
        content_type: ffi::Str::EMPTY,
        headers: headers.as_ptr(),
        header_count: headers.len(),
        content_length: -1,
        server_port: 443,
        remote_port: 5555,
        body_chunked: 1,
        client_addr: ffi::Str::new(b"2001:db8::7"),
    };
    let mut call = Call {
        body: body.to_vec(),
        ..Call::default()
    };
    setup(&mut call);
    // SAFETY: every pointer is valid for the call; `call` is the `Call` the
    // callbacks expect behind the opaque pointer.
    let rc = unsafe { (app.handle.unwrap())(&SERVER.0, (&raw mut call).cast(), &request) };
    (rc, call)
}

fn handler(request: &mut Request<'_>) -> Result<Response<'static>, Error> {
    match request.path_bytes() {
        b"/text" => Ok(Response::text(201, "made")),
        b"/reason" => Ok(Response::new(299).reason("Fine Indeed")),
        b"/many-headers" => Ok((0..20).fold(Response::new(200), |r, i| {
            r.header(format!("X-{i}"), i.to_string())
        })),
        b"/stream" => Ok(Response::new(200)
            .header("Content-Type", "text/plain")
            .stream(|out| {
                out.write_all(b"one")?;
                out.write_all(b"two")?;
                out.flush()
            })),
        b"/stream-fails" => Ok(Response::new(200).stream(|out| {
            out.write_all(b"partial")?;
            Err(std::io::Error::other("the producer failed"))
        })),
        b"/echo" => {
            let mut body = Vec::new();
            request.body().read_to_end(&mut body)?;
            Ok(Response::new(200).body(body))
        }
        b"/error" => Err("the handler gave up".into()),
        b"/panic" => panic!("the handler panicked on purpose"),
        b"/panic-string" => panic!("{}", String::from("a formatted panic")),
        b"/request" => {
            // The header iterator is held across a body read: it borrows
            // the call's buffers, not the request.
            let headers = request.headers();
            let mut body = String::new();
            request.body().read_to_string(&mut body)?;
            let twice: Vec<_> = headers
                .filter(|(n, _)| n.eq_ignore_ascii_case(b"x-twice"))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect();
            let facts = [
                request.method().to_string(),
                request.path().into_owned(),
                format!("{:?}", String::from_utf8_lossy(request.raw_uri())),
                format!("{:?}", String::from_utf8_lossy(request.query())),
                request.protocol().to_string(),
                request.scheme().to_string(),
                request.server_name().to_string(),
                request.server_port().to_string(),
                format!("{}:{}", request.remote_addr(), request.remote_port()),
                request.client_addr().to_string(),
                format!("{:?}", request.script_name()),
                format!("{:?}", request.content_type()),
                format!("{:?}", request.content_length()),
                request.is_chunked().to_string(),
                format!("{:?}", request.header("HOST").map(String::from_utf8_lossy)),
                twice.join("+"),
            ]
            .join(" ");
            Ok(Response::text(200, format!("{facts} body={body}")))
        }
        _ => Ok(Response::new(404)),
    }
}

fn init(worker: &Worker<'_>) -> Result<(), Error> {
    rgun_gateway::log(
        rgun_gateway::Level::Info,
        &format!(
            "init worker {} for {}",
            worker.id(),
            String::from_utf8_lossy(worker.app_arg())
        ),
    );
    Ok(())
}

fn shutdown(worker: &Worker<'_>) {
    rgun_gateway::log(
        rgun_gateway::Level::Debug,
        &format!("shutdown worker {}", worker.id()),
    );
}

fn failing_init(_: &Worker<'_>) -> Result<(), Error> {
    Err("no database".into())
}

export_app!(sdk_app, handler = handler, init = init, shutdown = shutdown);
export_app!(failing_app, handler = handler, init = failing_init);

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

#[test]
fn export_app_fills_the_table() {
    assert_eq!(sdk_app.magic, ffi::APP_MAGIC);
    assert_eq!(sdk_app.abi_version, ffi::ABI_VERSION);
    assert_eq!(sdk_app.flags, ffi::APP_THREAD_SAFE);
    assert!(sdk_app.init.is_some() && sdk_app.shutdown.is_some());
    assert!(sdk_app.reserved.is_null());
    assert!(failing_app.shutdown.is_none());
}

#[test]
fn whole_body_goes_through_respond() {
    let (rc, c) = run(&sdk_app, "/text", b"", |_| {});
    assert_eq!(rc, ffi::OK);
    assert_eq!(
        c.heads,
        [(
            201,
            String::new(),
            headers(&[("Content-Type", "text/plain")])
        )]
    );
    assert_eq!(c.whole.as_deref(), Some(&b"made"[..]));
    assert!(c.pieces.is_empty());

    let (_, c) = run(&sdk_app, "/reason", b"", |_| {});
    assert_eq!(c.heads, [(299, "Fine Indeed".into(), vec![])]);
    assert_eq!(c.whole.as_deref(), Some(&b""[..]));
}

#[test]
fn more_headers_than_fit_inline() {
    let (rc, c) = run(&sdk_app, "/many-headers", b"", |_| {});
    assert_eq!(rc, ffi::OK);
    let sent = &c.heads[0].2;
    assert_eq!(sent.len(), 20);
    assert!(sent.iter().enumerate().all(|(i, (n, v))| {
        *n == format!("X-{i}").into_bytes() && *v == i.to_string().into_bytes()
    }));
}

#[test]
fn stream_sends_the_head_then_each_write() {
    let (rc, c) = run(&sdk_app, "/stream", b"", |_| {});
    assert_eq!(rc, ffi::OK);
    assert_eq!(
        c.heads,
        [(
            200,
            String::new(),
            headers(&[("Content-Type", "text/plain")])
        )]
    );
    assert_eq!(c.whole, None);
    assert_eq!(c.pieces, [b"one", b"two"]);

    let (rc, c) = run(&sdk_app, "/stream-fails", b"", |_| {});
    assert_eq!(rc, ffi::ERR);
    assert_eq!(c.pieces, [b"partial"]);
    assert!(logged("the producer failed"));
}

#[test]
fn a_refused_head_is_an_error() {
    for path in ["/text", "/stream"] {
        let (rc, c) = run(&sdk_app, path, b"", |c| c.refuse_head = true);
        assert_eq!(rc, ffi::ERR, "{path}");
        assert!(
            c.pieces.is_empty(),
            "{path}: nothing written after a refusal"
        );
    }
    assert!(logged("the server refused the response"));
}

#[test]
fn errors_and_panics_become_err_and_are_logged() {
    for (path, message) in [
        ("/error", "the handler gave up"),
        ("/panic", "the handler panicked on purpose"),
        ("/panic-string", "a formatted panic"),
    ] {
        let (rc, c) = run(&sdk_app, path, b"", |_| {});
        assert_eq!(rc, ffi::ERR, "{path}");
        assert!(c.heads.is_empty(), "{path}");
        assert!(logged(&format!("{} ", ffi::LOG_ERROR)), "{path}");
        assert!(logged(message), "{path}");
    }
}

#[test]
fn body_is_read_in_pieces_to_the_end() {
    let body: Vec<u8> = (0..=255).collect();
    let (rc, c) = run(&sdk_app, "/echo", &body, |_| {});
    assert_eq!(rc, ffi::OK);
    assert_eq!(c.whole, Some(body));
}

#[test]
fn an_unreadable_body_is_an_error() {
    let (rc, c) = run(&sdk_app, "/echo", b"cut", |c| c.body_fails = true);
    assert_eq!(rc, ffi::ERR);
    assert!(c.heads.is_empty());
    assert!(logged("request body cannot be read"));
}

#[test]
fn request_accessors() {
    let (rc, c) = run(&sdk_app, "/request", b"hello", |_| {});
    assert_eq!(rc, ffi::OK);
    let text = String::from_utf8(c.whole.unwrap()).unwrap();
    assert_eq!(
        text,
        "POST /request \"/a%20b?q=1\" \"q=1\" HTTP/1.1 https example.com 443 ::1:5555 2001:db8::7 \
         [] None None true Some(\"example.com\") one+two body=hello"
    );
}

#[test]
fn hooks_run_and_log() {
    let init = sdk_app.init.unwrap();
    let shutdown = sdk_app.shutdown.unwrap();
    // SAFETY: the table lives for the whole test run.
    unsafe {
        assert_eq!(init(&SERVER.0), ffi::OK);
        shutdown(&SERVER.0);
    }
    assert!(logged(&format!("{} init worker 7 for app", ffi::LOG_INFO)));
    assert!(logged(&format!("{} shutdown worker 7", ffi::LOG_DEBUG)));

    // SAFETY: as above.
    assert_eq!(unsafe { (failing_app.init.unwrap())(&SERVER.0) }, ffi::ERR);
    assert!(logged("application init hook failed: no database"));
}

#[test]
fn into_bytes_borrows_what_it_can() {
    fn borrowed<'a>(v: impl IntoBytes<'a>) -> bool {
        matches!(v.into_bytes(), Cow::Borrowed(b"ab"))
    }
    fn owned<'a>(v: impl IntoBytes<'a>) -> bool {
        matches!(v.into_bytes(), Cow::Owned(v) if v == b"ab")
    }
    assert!(borrowed("ab"));
    assert!(borrowed(&b"ab"[..]));
    assert!(borrowed(b"ab"));
    assert!(borrowed(Cow::Borrowed(&b"ab"[..])));
    assert!(borrowed(Cow::Borrowed("ab")));
    assert!(owned(String::from("ab")));
    assert!(owned(b"ab".to_vec()));
    assert!(owned(Cow::<[u8]>::Owned(b"ab".to_vec())));
    assert!(owned(Cow::<str>::Owned("ab".into())));
}

#[test]
fn str_round_trips() {
    let s = ffi::Str::new(b"xyz");
    // SAFETY: `s` points into a static byte string.
    assert_eq!(unsafe { s.as_bytes() }, b"xyz");
    // SAFETY: an empty `Str` is never dereferenced.
    assert_eq!(unsafe { ffi::Str::EMPTY.as_bytes() }, b"");
    assert_eq!(ffi::APP_MAGIC.to_le_bytes(), *b"RGUN");
}
