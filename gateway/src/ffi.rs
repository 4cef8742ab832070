//! The gateway interface (version 2) as a C ABI: the types an rgun server and an
//! application exchange. `include/rgun.h` is the same contract for C; the
//! test `tests/header.rs` fails when the two drift apart.
//!
//! Every pointer the server hands to the application is valid only for the
//! duration of the call it is passed to. Nothing here allocates.

use core::ffi::c_void;

/// The ABI version this crate speaks. The server refuses an application that
/// exports a version outside [`MIN_ABI_VERSION`]`..=ABI_VERSION`.
///
/// The rule for versions: a change that an application built against the
/// previous version could misread makes a new version the server refuses
/// in old applications (or new ones in an old server); a field appended to
/// the end of [`Request`], which the server allocates and an older
/// application never reads past, makes a new version that the server still
/// serves the older one beside. Version 2 appended [`Request::client_addr`].
pub const ABI_VERSION: u32 = 2;

/// The oldest ABI version a server of this crate still loads: a version-1
/// application reads the same [`Request`] up to `body_chunked`.
pub const MIN_ABI_VERSION: u32 = 1;

/// `"RGUN"` read as a little-endian `u32`: the first field of [`App`], so that
/// a symbol that is not an rgun application is recognised as such.
pub const APP_MAGIC: u32 = u32::from_le_bytes(*b"RGUN");

/// Success, from a callback or a hook.
pub const OK: i32 = 0;
/// Failure, from a callback or a hook.
pub const ERR: i32 = -1;
/// From `init`: the application itself could not be loaded (a module that
/// does not import, a missing callable). The server stops with Gunicorn's
/// APP_LOAD_ERROR exit code (4) rather than its boot error (3).
pub const ERR_LOAD: i32 = -4;

/// Log levels for [`Server::log`], in the order of `syslog(3)`.
pub const LOG_ERROR: i32 = 3;
pub const LOG_WARNING: i32 = 4;
pub const LOG_INFO: i32 = 6;
pub const LOG_DEBUG: i32 = 7;

/// [`App::flags`]: the application's `handle` may be called from several
/// threads at once (for `--threads`).
pub const APP_THREAD_SAFE: u32 = 1;

/// A borrowed byte string: `len` bytes at `ptr`, not NUL-terminated.
/// `ptr` may be dangling when `len` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Str {
    pub ptr: *const u8,
    pub len: usize,
}

impl Str {
    pub const EMPTY: Str = Str {
        ptr: core::ptr::NonNull::<u8>::dangling().as_ptr(),
        len: 0,
    };

    pub const fn new(bytes: &[u8]) -> Str {
        Str {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// # Safety
    /// `ptr` must point at `len` readable bytes that outlive `'a`.
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the caller promises `ptr..ptr+len` is readable for 'a.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// One header field line, name and value as sent (the name's case kept).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub name: Str,
    pub value: Str,
}

/// What PEP 3333's `environ` holds, as slices into the worker's buffers.
#[repr(C)]
#[derive(Debug)]
pub struct Request {
    /// `REQUEST_METHOD`.
    pub method: Str,
    /// The request target exactly as sent (`RAW_URI`).
    pub raw_uri: Str,
    /// `PATH_INFO`: the path, percent-decoded, without the query.
    pub path: Str,
    /// `QUERY_STRING`: as sent, without the `?`.
    pub query: Str,
    /// `SCRIPT_NAME`: the mount point, empty by default.
    pub script_name: Str,
    /// `SERVER_PROTOCOL`: `HTTP/1.0` or `HTTP/1.1`.
    pub protocol: Str,
    /// `wsgi.url_scheme`: `http` or `https`.
    pub scheme: Str,
    /// `SERVER_NAME`.
    pub server_name: Str,
    /// `REMOTE_ADDR`; empty on a Unix socket.
    pub remote_addr: Str,
    /// `CONTENT_TYPE`; empty when the request has none.
    pub content_type: Str,
    /// Every header field line, in the order received.
    pub headers: *const Header,
    pub header_count: usize,
    /// `CONTENT_LENGTH`, or -1 when the request carries no Content-Length.
    pub content_length: i64,
    /// `SERVER_PORT`; 0 on a Unix socket.
    pub server_port: u16,
    /// `REMOTE_PORT`; 0 on a Unix socket.
    pub remote_port: u16,
    /// 1 when the body is sent chunked (the server decodes it).
    pub body_chunked: u8,
    /// Since ABI version 2: the client's address as the server decided
    /// it: the source a PROXY protocol header gave, or the hop that a
    /// trusted proxy's `X-Forwarded-For` names; `remote_addr` otherwise
    /// (empty on a Unix socket without either).
    pub client_addr: Str,
}

/// The server's side of one request: opaque to the application.
#[repr(C)]
pub struct Call {
    _private: [u8; 0],
}

/// Read up to `len` bytes of the request body into `buf`. Returns the count
/// read, 0 at the end of the body, or -1 when the body cannot be read (the
/// client went away, malformed chunked framing, the body limit).
pub type ReadBodyFn = unsafe extern "C" fn(call: *mut Call, buf: *mut u8, len: usize) -> isize;

/// Set the status and headers. May be called again, to replace them, until
/// the first body byte is written. `reason` may be empty: the standard
/// phrase is used. Returns [`ERR`] for an invalid status or header (a name
/// that is no token, a value with a control byte other than HTAB, a
/// Content-Length that is not 1*DIGIT: [`crate::grammar`]); the request
/// then ends in a `500`.
pub type StartResponseFn = unsafe extern "C" fn(
    call: *mut Call,
    status: u16,
    reason: Str,
    headers: *const Header,
    header_count: usize,
) -> i32;

/// Write one piece of the response body. Each piece is sent on before the
/// call returns (PEP 3333: the server must not delay a block), but for the
/// last piece of a response with a Content-Length, which may be batched.
pub type WriteBodyFn = unsafe extern "C" fn(call: *mut Call, data: *const u8, len: usize) -> i32;

/// `start_response` and one `write_body` with the whole body at once; the
/// server sets `Content-Length` from `body_len`.
pub type RespondFn = unsafe extern "C" fn(
    call: *mut Call,
    status: u16,
    reason: Str,
    headers: *const Header,
    header_count: usize,
    body: *const u8,
    body_len: usize,
) -> i32;

/// Send `len` bytes of the open file `fd` from `offset` as the next piece of
/// the body (`len` -1: to the end of the file), with sendfile(2) where the
/// framing allows. The application keeps and closes `fd`.
pub type SendFileFn = unsafe extern "C" fn(call: *mut Call, fd: i32, offset: i64, len: i64) -> i32;

/// Write one line to the server's error log.
pub type LogFn = unsafe extern "C" fn(level: i32, message: Str);

/// What the server offers the application: handed to every hook and call,
/// valid for the whole life of the worker process.
#[repr(C)]
pub struct Server {
    pub abi_version: u32,
    /// This worker's index (0-based), stable across its replacements.
    pub worker_id: u32,
    /// The part of the `APP` argument after the library path's `:`
    /// (the symbol name for a native app, `module:callable` for a bridge).
    pub app_arg: Str,
    pub read_body: ReadBodyFn,
    pub start_response: StartResponseFn,
    pub write_body: WriteBodyFn,
    pub respond: RespondFn,
    pub log: LogFn,
    pub send_file: SendFileFn,
}

pub type InitFn = unsafe extern "C" fn(server: *const Server) -> i32;
pub type HandleFn =
    unsafe extern "C" fn(server: *const Server, call: *mut Call, request: *const Request) -> i32;
pub type ShutdownFn = unsafe extern "C" fn(server: *const Server);

/// What an application exports, under the symbol named on the command line.
#[repr(C)]
pub struct App {
    /// [`APP_MAGIC`].
    pub magic: u32,
    /// [`ABI_VERSION`] the application was built against.
    pub abi_version: u32,
    /// [`APP_THREAD_SAFE`] or 0.
    pub flags: u32,
    /// Once per worker, after it starts and before its first request. A
    /// non-zero return stops the worker and the server (a boot error).
    pub init: Option<InitFn>,
    /// Once per request. A non-zero return before the response started
    /// becomes a `500`.
    pub handle: Option<HandleFn>,
    /// Once per worker, before it exits.
    pub shutdown: Option<ShutdownFn>,
    pub reserved: *const c_void,
}

// SAFETY: `App` is immutable static data (function pointers and a pointer
// that is always null in v1); sharing it between threads is sound.
unsafe impl Sync for App {}
