//! The rgun gateway interface: what WSGI (PEP 3333) is for Python, as a
//! stable C ABI ([`ffi`], and `include/rgun.h` for C), with a safe Rust SDK
//! on top. An application is a function from a [`Request`] to a
//! [`Response`] plus one [`export_app!`] line.
//!
//! This crate depends on nothing of the server: an application built on it
//! links against nothing but `std`.

pub mod ffi;
pub mod grammar;

use std::borrow::Cow;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicPtr, Ordering};

/// What a handler or hook may fail with; anything `?` can convert.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// How many response headers are passed to the server without a heap
/// allocation.
const INLINE_HEADERS: usize = 16;

/// The server's table, kept for [`log`]; set before any hook or call runs.
static SERVER: AtomicPtr<ffi::Server> = AtomicPtr::new(core::ptr::null_mut());

/// Log levels for [`log`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Info,
    Debug,
}

/// Write one line to the server's error log. Before the server has called
/// the application (and outside rgun) it goes to standard error.
pub fn log(level: Level, message: &str) {
    let server = SERVER.load(Ordering::Acquire);
    if server.is_null() {
        eprintln!("{message}");
        return;
    }
    let level = match level {
        Level::Error => ffi::LOG_ERROR,
        Level::Warning => ffi::LOG_WARNING,
        Level::Info => ffi::LOG_INFO,
        Level::Debug => ffi::LOG_DEBUG,
    };
    // SAFETY: `server` came from the server, which keeps its table alive for
    // the life of the process; `message` is valid for the call.
    unsafe { ((*server).log)(level, ffi::Str::new(message.as_bytes())) }
}

/// The worker an init or shutdown hook runs in.
pub struct Worker<'a> {
    server: &'a ffi::Server,
}

impl Worker<'_> {
    /// The worker's index, 0-based, stable across its replacements.
    pub fn id(&self) -> u32 {
        self.server.worker_id
    }

    /// The part of the `APP` argument after the library path's `:`.
    pub fn app_arg(&self) -> &[u8] {
        // SAFETY: the server keeps `app_arg` alive for the process.
        unsafe { self.server.app_arg.as_bytes() }
    }
}

/// One request: borrowed views into the worker's buffers, valid while the
/// handler runs, and the body as a stream.
pub struct Request<'a> {
    raw: &'a ffi::Request,
    server: &'a ffi::Server,
    call: *mut ffi::Call,
}

impl<'a> Request<'a> {
    fn bytes(&self, s: ffi::Str) -> &'a [u8] {
        // SAFETY: the server guarantees every `Str` in the request is valid
        // for the call, which outlives `'a`.
        unsafe { s.as_bytes() }
    }

    fn text(&self, s: ffi::Str) -> &'a str {
        // The server only hands out ASCII for these fields (tokens, digits,
        // addresses); anything else would be a server bug, shown as empty.
        std::str::from_utf8(self.bytes(s)).unwrap_or("")
    }

    pub fn method(&self) -> &'a str {
        self.text(self.raw.method)
    }
    /// The path, percent-decoded (`PATH_INFO`), as bytes.
    pub fn path_bytes(&self) -> &'a [u8] {
        self.bytes(self.raw.path)
    }
    /// The path, percent-decoded, invalid UTF-8 replaced.
    pub fn path(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.path_bytes())
    }
    /// The request target exactly as sent.
    pub fn raw_uri(&self) -> &'a [u8] {
        self.bytes(self.raw.raw_uri)
    }
    /// The raw query string, without `?`.
    pub fn query(&self) -> &'a [u8] {
        self.bytes(self.raw.query)
    }
    pub fn script_name(&self) -> &'a [u8] {
        self.bytes(self.raw.script_name)
    }
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub fn protocol(&self) -> &'a str {
        self.text(self.raw.protocol)
    }
    /// `http` or `https`, as the server decided it.
    pub fn scheme(&self) -> &'a str {
        self.text(self.raw.scheme)
    }
    pub fn server_name(&self) -> &'a str {
        self.text(self.raw.server_name)
    }
    pub fn server_port(&self) -> u16 {
        self.raw.server_port
    }
    /// The peer's address; empty on a Unix socket.
    pub fn remote_addr(&self) -> &'a str {
        self.text(self.raw.remote_addr)
    }
    pub fn remote_port(&self) -> u16 {
        self.raw.remote_port
    }
    /// The client's address as the server decided it: the source a PROXY
    /// protocol header gave (then also [`remote_addr`](Self::remote_addr),
    /// as in Gunicorn), or the hop that a trusted proxy's `X-Forwarded-For`
    /// names (`--forwarded-allow-ips`); the peer's address otherwise.
    pub fn client_addr(&self) -> &'a str {
        self.text(self.raw.client_addr)
    }
    pub fn content_type(&self) -> Option<&'a [u8]> {
        Some(self.bytes(self.raw.content_type)).filter(|v| !v.is_empty())
    }
    /// The Content-Length the client sent, if it sent one.
    pub fn content_length(&self) -> Option<u64> {
        u64::try_from(self.raw.content_length).ok()
    }
    /// True when the body comes chunked (it is decoded before you see it).
    pub fn is_chunked(&self) -> bool {
        self.raw.body_chunked != 0
    }

    /// Every header field line, in the order received, names as sent.
    ///
    /// The iterator borrows the call's buffers, not `self`, so the body can
    /// still be read while it is alive.
    pub fn headers(&self) -> grammar::HeaderIter<'a> {
        self.lines().iter()
    }

    /// The first header of that name (compared without regard to case).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.lines().get(name.as_bytes())
    }

    fn lines(&self) -> grammar::HeaderLines<'a> {
        // SAFETY: the server guarantees `headers` points at `header_count`
        // lines whose names and values are valid for the call, which
        // outlives `'a`.
        unsafe { grammar::HeaderLines::of_request(self.raw) }
    }

    /// The request body, as a stream read from the connection on demand.
    pub fn body(&mut self) -> Body<'_> {
        Body {
            server: self.server,
            call: self.call,
            _request: std::marker::PhantomData,
        }
    }
}

/// The request body as [`io::Read`]: chunked framing is already decoded.
pub struct Body<'r> {
    server: &'r ffi::Server,
    call: *mut ffi::Call,
    _request: std::marker::PhantomData<&'r mut ()>,
}

impl io::Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `call` is the live call this body belongs to; `buf` is a
        // writable slice of `buf.len()` bytes.
        let n = unsafe { (self.server.read_body)(self.call, buf.as_mut_ptr(), buf.len()) };
        usize::try_from(n).map_err(|_| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "request body cannot be read",
            )
        })
    }
}

/// The response body's sink, for [`Response::stream`]: every write is sent
/// to the client before it returns.
pub struct BodyWriter<'c> {
    server: &'c ffi::Server,
    call: *mut ffi::Call,
}

impl BodyWriter<'_> {
    /// Send `len` bytes of `file` from `offset` (`None`: to its end) as the
    /// next piece of the body, with sendfile(2): no copy through this
    /// process.
    pub fn send_file(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: Option<u64>,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let offset = i64::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let len = match len {
            Some(n) => i64::try_from(n).map_err(|_| io::ErrorKind::InvalidInput)?,
            None => -1,
        };
        // SAFETY: `call` is live for this writer's lifetime; the descriptor
        // stays open for the call (the server does not keep it).
        let rc = unsafe { (self.server.send_file)(self.call, file.as_raw_fd(), offset, len) };
        if rc == ffi::OK {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "file could not be sent",
            ))
        }
    }
}

impl io::Write for BodyWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // SAFETY: `call` is live for this writer's lifetime; `data` is valid.
        let rc = unsafe { (self.server.write_body)(self.call, data.as_ptr(), data.len()) };
        if rc == ffi::OK {
            Ok(data.len())
        } else {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "response body cannot be written",
            ))
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a header name or value, or a body, can be given as.
pub trait IntoBytes<'a> {
    fn into_bytes(self) -> Cow<'a, [u8]>;
}

impl<'a> IntoBytes<'a> for &'a str {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}
impl<'a> IntoBytes<'a> for &'a [u8] {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self)
    }
}
impl<'a, const N: usize> IntoBytes<'a> for &'a [u8; N] {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self)
    }
}
impl<'a> IntoBytes<'a> for String {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Owned(self.into_bytes())
    }
}
impl<'a> IntoBytes<'a> for Vec<u8> {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Owned(self)
    }
}
impl<'a> IntoBytes<'a> for Cow<'a, [u8]> {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        self
    }
}
impl<'a> IntoBytes<'a> for Cow<'a, str> {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        match self {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        }
    }
}

/// A response header's name and value, borrowed or owned.
type HeaderField<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

type StreamFn<'a> = Box<dyn FnOnce(&mut BodyWriter<'_>) -> io::Result<()> + 'a>;

enum Payload<'a> {
    Bytes(Cow<'a, [u8]>),
    Stream(StreamFn<'a>),
}

/// A status, headers and a body: whole (the server adds Content-Length) or
/// streamed piece by piece (chunked on HTTP/1.1 unless you set
/// Content-Length yourself).
pub struct Response<'a> {
    status: u16,
    reason: Cow<'a, str>,
    headers: Vec<HeaderField<'a>>,
    payload: Payload<'a>,
}

impl<'a> Response<'a> {
    /// A response with this status, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            reason: Cow::Borrowed(""),
            headers: Vec::new(),
            payload: Payload::Bytes(Cow::Borrowed(&[])),
        }
    }

    /// A response with a `text/plain` body.
    pub fn text(status: u16, body: impl IntoBytes<'a>) -> Self {
        Response::new(status)
            .header("Content-Type", "text/plain")
            .body(body)
    }

    /// A reason phrase other than the standard one.
    pub fn reason(mut self, reason: impl Into<Cow<'a, str>>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Add a header. It is checked by the server, not here: a name that is no
    /// token or a value with a control byte other than HTAB (see
    /// [`grammar`]) turns the answer into a `500`.
    pub fn header(mut self, name: impl IntoBytes<'a>, value: impl IntoBytes<'a>) -> Self {
        self.headers.push((name.into_bytes(), value.into_bytes()));
        self
    }

    /// The whole body at once.
    pub fn body(mut self, body: impl IntoBytes<'a>) -> Self {
        self.payload = Payload::Bytes(body.into_bytes());
        self
    }

    /// A body produced piece by piece: each write reaches the client before
    /// the next is produced.
    pub fn stream(
        mut self,
        produce: impl FnOnce(&mut BodyWriter<'_>) -> io::Result<()> + 'a,
    ) -> Self {
        self.payload = Payload::Stream(Box::new(produce));
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    fn send(self, server: &ffi::Server, call: *mut ffi::Call) -> Result<(), Error> {
        let mut inline = [ffi::Header {
            name: ffi::Str::EMPTY,
            value: ffi::Str::EMPTY,
        }; INLINE_HEADERS];
        let spilled: Vec<ffi::Header>;
        let headers: &[ffi::Header] = if self.headers.len() <= INLINE_HEADERS {
            for (slot, (name, value)) in inline.iter_mut().zip(&self.headers) {
                *slot = ffi::Header {
                    name: ffi::Str::new(name),
                    value: ffi::Str::new(value),
                };
            }
            &inline[..self.headers.len()]
        } else {
            spilled = self
                .headers
                .iter()
                .map(|(n, v)| ffi::Header {
                    name: ffi::Str::new(n),
                    value: ffi::Str::new(v),
                })
                .collect();
            &spilled
        };
        let reason = ffi::Str::new(self.reason.as_bytes());
        match self.payload {
            Payload::Bytes(body) => {
                // SAFETY: `call` is live; every pointer is valid for the call.
                let rc = unsafe {
                    (server.respond)(
                        call,
                        self.status,
                        reason,
                        headers.as_ptr(),
                        headers.len(),
                        body.as_ptr(),
                        body.len(),
                    )
                };
                if rc != ffi::OK {
                    return Err("the server refused the response (see its log)".into());
                }
            }
            Payload::Stream(produce) => {
                // SAFETY: as above.
                let rc = unsafe {
                    (server.start_response)(
                        call,
                        self.status,
                        reason,
                        headers.as_ptr(),
                        headers.len(),
                    )
                };
                if rc != ffi::OK {
                    return Err("the server refused the response head (see its log)".into());
                }
                produce(&mut BodyWriter { server, call })?;
            }
        }
        Ok(())
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs `f`, turning a panic or an error into a logged [`ffi::ERR`].
fn guarded(what: &str, f: impl FnOnce() -> Result<(), Error>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => ffi::OK,
        Ok(Err(e)) => {
            log(Level::Error, &format!("application {what} failed: {e}"));
            ffi::ERR
        }
        Err(panic) => {
            let place = PANIC_LOCATION.take().unwrap_or_default();
            log(
                Level::Error,
                &format!(
                    "application {what} panicked at {place}: {}",
                    panic_message(&*panic)
                ),
            );
            ffi::ERR
        }
    }
}

thread_local! {
    /// Where the last panic on this thread happened, for `guarded`'s line.
    static PANIC_LOCATION: std::cell::Cell<Option<String>> = const { std::cell::Cell::new(None) };
}

/// The application's library carries its own copy of `std`, and so its own
/// panic hook: route it into one line of the server's error log instead of
/// a message and a backtrace on standard error. An application that wants
/// its own hook sets it in its init hook, after this ran.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let place = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            PANIC_LOCATION.set(Some(place));
        }));
    });
}

fn remember(server: *const ffi::Server) {
    if SERVER.swap(server.cast_mut(), Ordering::AcqRel).is_null() {
        install_panic_hook();
    }
}

#[doc(hidden)]
pub type HandlerFn = for<'a, 'b> fn(&'b mut Request<'a>) -> Result<Response<'b>, Error>;

/// The body of the `handle` trampoline that [`export_app!`] generates.
///
/// # Safety
/// The pointers must be those the server passed to `handle`.
#[doc(hidden)]
pub unsafe fn __handle(
    server: *const ffi::Server,
    call: *mut ffi::Call,
    request: *const ffi::Request,
    handler: HandlerFn,
) -> i32 {
    remember(server);
    // SAFETY: the server passes valid tables that outlive the call.
    let (server, raw) = unsafe { (&*server, &*request) };
    guarded("handler", || {
        let mut request = Request { raw, server, call };
        let response = handler(&mut request)?;
        response.send(server, call)
    })
}

/// The body of the `init` trampoline that [`export_app!`] generates.
///
/// # Safety
/// `server` must be the pointer the server passed to `init`.
#[doc(hidden)]
pub unsafe fn __init(
    server: *const ffi::Server,
    init: fn(&Worker<'_>) -> Result<(), Error>,
) -> i32 {
    remember(server);
    // SAFETY: the server's table lives as long as the process.
    let server = unsafe { &*server };
    guarded("init hook", || init(&Worker { server }))
}

/// The body of the `shutdown` trampoline that [`export_app!`] generates.
///
/// # Safety
/// `server` must be the pointer the server passed to `shutdown`.
#[doc(hidden)]
pub unsafe fn __shutdown(server: *const ffi::Server, shutdown: fn(&Worker<'_>)) {
    remember(server);
    // SAFETY: the server's table lives as long as the process.
    let server = unsafe { &*server };
    guarded("shutdown hook", || {
        shutdown(&Worker { server });
        Ok(())
    });
}

/// Export an application under a symbol name, for `rgun lib.so:NAME`.
///
/// ```ignore
/// fn hello(_req: &mut Request<'_>) -> Result<Response<'static>, Error> {
///     Ok(Response::text(200, &b"Hello, World!"[..]))
/// }
/// rgun_gateway::export_app!(app, handler = hello);
/// // or, with hooks run once per worker:
/// // rgun_gateway::export_app!(app, handler = hello, init = open_pool, shutdown = close_pool);
/// ```
#[macro_export]
macro_rules! export_app {
    ($name:ident, handler = $handler:path $(, init = $init:path)? $(, shutdown = $shutdown:path)? $(,)?) => {
        #[unsafe(no_mangle)]
        #[allow(non_upper_case_globals)]
        pub static $name: $crate::ffi::App = $crate::ffi::App {
            magic: $crate::ffi::APP_MAGIC,
            abi_version: $crate::ffi::ABI_VERSION,
            // Safe Rust cannot race: the handler is a plain `fn`, so any state
            // it shares lives in statics that must be `Sync`. That makes every
            // SDK application fit for `--threads`.
            flags: $crate::ffi::APP_THREAD_SAFE,
            init: $crate::__export_init!($($init)?),
            handle: {
                unsafe extern "C" fn __rgun_handle(
                    server: *const $crate::ffi::Server,
                    call: *mut $crate::ffi::Call,
                    request: *const $crate::ffi::Request,
                ) -> i32 {
                    // SAFETY: rgun calls this with its own valid pointers.
                    unsafe { $crate::__handle(server, call, request, $handler) }
                }
                Some(__rgun_handle)
            },
            shutdown: $crate::__export_shutdown!($($shutdown)?),
            reserved: ::core::ptr::null(),
        };
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_init {
    () => {
        None
    };
    ($init:path) => {{
        unsafe extern "C" fn __rgun_init(server: *const $crate::ffi::Server) -> i32 {
            // SAFETY: rgun calls this with its own valid table.
            unsafe { $crate::__init(server, $init) }
        }
        Some(__rgun_init)
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_shutdown {
    () => {
        None
    };
    ($shutdown:path) => {{
        unsafe extern "C" fn __rgun_shutdown(server: *const $crate::ffi::Server) {
            // SAFETY: rgun calls this with its own valid table.
            unsafe { $crate::__shutdown(server, $shutdown) }
        }
        Some(__rgun_shutdown)
    }};
}
