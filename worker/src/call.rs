//! One request handed to the application: the context behind the opaque
//! `rgun_call`, its lifecycle (set up, marked in hand for the abort
//! handler, finished), and the callbacks the application reaches it
//! through. The application runs synchronously on the calling thread: the
//! body is read by [`BodyReader`] and the answer written by [`Encoder`],
//! both waiting on this one socket through [`CallIo`]; the event loop
//! resumes when the call returns.

use std::os::fd::RawFd;

use rgun_gateway::ffi;
use rgun_gateway::grammar::HeaderLines;

use crate::abort;
use crate::access_log::Capture;
use crate::blocking::CallIo;
use crate::body::{BodyReader, Spill};
use crate::encode::{Encoder, EncoderSetup, Refusal};
use crate::parse::{Framing, Version};

/// The request's side that outlives the application call, for the caller.
pub struct Outcome {
    pub keep_alive: bool,
    /// How many bytes after the head the body took in the read buffer (the
    /// rest, or the spill's pending bytes, are the next request).
    pub input_used: usize,
    pub status: u16,
    pub body_bytes: u64,
    /// The request body's bytes read (decoded), and the answer's head
    /// bytes: for metrics.
    pub request_body_bytes: u64,
    pub head_bytes: u64,
    /// Part of the request body was never read: the client may still be
    /// sending it.
    pub body_unread: bool,
}

/// The state behind one `rgun_call`.
pub struct CallCtx<'a> {
    io: CallIo,
    body: BodyReader<'a>,
    enc: Encoder<'a>,
    method_is_head: bool,
    /// The response headers the access log shows, if it shows any.
    capture: Option<Capture<'a>>,
}

/// What a call starts from.
pub struct CallSetup<'a> {
    pub io: CallIo,
    /// The bytes after the head in the read buffer.
    pub input: &'a [u8],
    pub spill: &'a mut Spill,
    pub framing: Framing,
    pub body_limit: u64,
    pub expect_continue: bool,
    pub out: &'a mut Vec<u8>,
    pub out_pos: &'a mut usize,
    /// The `Date` field line (`DateCache::line`), CRLF included.
    pub date: &'a [u8],
    pub method_is_head: bool,
    pub version: Version,
    pub keep_alive: bool,
    pub capture: Option<Capture<'a>>,
}

impl<'a> CallCtx<'a> {
    pub fn new(mut setup: CallSetup<'a>) -> Self {
        if let Some(capture) = &mut setup.capture {
            capture.clear();
        }
        CallCtx {
            io: setup.io,
            body: BodyReader::new(
                setup.input,
                setup.spill,
                setup.framing,
                setup.body_limit,
                setup.expect_continue,
            ),
            enc: Encoder::new(EncoderSetup {
                out: setup.out,
                out_pos: setup.out_pos,
                io: setup.io,
                date: setup.date,
                method_is_head: setup.method_is_head,
                version: setup.version,
                keep_alive: setup.keep_alive,
            }),
            method_is_head: setup.method_is_head,
            capture: setup.capture,
        }
    }

    pub fn as_ffi(&mut self) -> *mut ffi::Call {
        (self as *mut CallCtx<'a>).cast()
    }

    /// Mark the call as in hand for the abort handler. Answers to earlier
    /// pipelined requests still unsent would make an abort answer land in
    /// their place: then the handler stays silent.
    pub fn enter(&self, line: &[u8]) {
        abort::enter(
            self.io.fd,
            self.enc.earlier_answers_unsent(),
            self.method_is_head,
            line,
        );
    }

    fn read_body(&mut self, buf: &mut [u8]) -> isize {
        match self.body.read(buf, &self.io, &mut self.enc) {
            Ok(n) => n as isize,
            Err(_) => -1,
        }
    }

    fn start_response(
        &mut self,
        status: u16,
        reason: &[u8],
        headers: HeaderLines<'_>,
        whole_body: Option<u64>,
    ) -> Result<(), Refusal> {
        let unread_ok = self.body.is_done() || self.body.fits_drain();
        self.enc
            .start_response(status, reason, headers, whole_body, unread_ok)?;
        if let Some(capture) = &mut self.capture {
            capture.record(headers);
        }
        Ok(())
    }

    /// The server's own answer to `OPTIONS *`, a question about the server
    /// rather than a resource (RFC 9110 §9.3.7): 200 with no content. The
    /// return code is the one an application's call would give.
    pub fn answer_options_asterisk(&mut self) -> i32 {
        match self.start_response(200, b"", HeaderLines::EMPTY, Some(0)) {
            Ok(()) => ffi::OK,
            Err(_) => ffi::ERR,
        }
    }

    /// After the application returned `rc`: finish the answer, or replace it
    /// with the server's error if nothing of it was sent; skip the unread
    /// body so that the connection can serve the next request. By
    /// reference: moving the call's state out costs a copy of it on every
    /// request.
    pub fn finish(&mut self, rc: i32) -> Outcome {
        abort::leave();
        let complete = rc == ffi::OK && self.enc.is_started() && !self.enc.is_failed();
        if complete && self.take_body_before_answer() {
            self.enc.finish_body();
        } else {
            if rc == ffi::OK && !self.enc.is_started() {
                log::error!("the application returned without starting a response");
            }
            // A client gone mid-body gets no answer; any other failure gets
            // the server's.
            let status = self.body.error().map_or(Some(500), |e| e.status());
            if let Some(capture) = &mut self.capture
                && !self.enc.is_committed()
            {
                capture.clear();
            }
            self.enc.replace_with_error(status);
        }
        if self.enc.keep_alive() && !self.body.is_done() {
            // The client may wait for the answer before it sends the rest of
            // the body: send the answer first, then skip the body.
            let kept = self.enc.flush_all().is_ok()
                && self
                    .body
                    .drain(&self.io, &mut self.enc, self.io.deadline_ms)
                    == Ok(true);
            if !kept {
                self.enc.end_connection();
            }
        }
        Outcome {
            body_unread: !self.body.is_done(),
            keep_alive: self.enc.keep_alive(),
            input_used: self.body.buffered_used(),
            status: self.enc.status(),
            body_bytes: self.enc.body_sent(),
            request_body_bytes: self.body.bytes_read(),
            head_bytes: self.enc.head_bytes(),
        }
    }

    /// The client sends the body whether the application read it or not:
    /// take it before answering, so that a body whose framing is broken or
    /// cut short (RFC 9112 §6.3: an invalid message) is answered with the
    /// server's error, not the application's 200. `false`: the body is
    /// broken and the answer must be replaced.
    fn take_body_before_answer(&mut self) -> bool {
        if self.enc.is_committed() || self.body.error().is_some() || !self.body.fits_drain() {
            return true;
        }
        match self
            .body
            .drain(&self.io, &mut self.enc, self.io.deadline_ms)
        {
            Ok(true) => true,
            // Too much to skip: the answer goes, then the connection, and
            // the answer says so.
            Ok(false) => {
                self.enc.announce_close();
                true
            }
            Err(e) => {
                self.body.fail(e);
                false
            }
        }
    }

    fn refused(&mut self, what: &str, refusal: &Refusal) -> i32 {
        log::error!("{what}: {refusal}; answering 500 instead");
        self.enc.fail();
        ffi::ERR
    }

    /// A body piece's result: a client that is gone fails the answer
    /// quietly (nothing to answer any more), any other refusal loudly.
    fn body_piece(&mut self, what: &str, result: Result<(), Refusal>) -> i32 {
        match result {
            Ok(()) => ffi::OK,
            Err(Refusal::ClientGone) => {
                self.enc.fail();
                ffi::ERR
            }
            Err(e) => self.refused(what, &e),
        }
    }
}

/// # Safety
/// `call` must be the pointer `dispatch` passed to the application, during
/// that call.
unsafe fn ctx<'c>(call: *mut ffi::Call) -> &'c mut CallCtx<'c> {
    // SAFETY: the caller's promise: `call` is a live `CallCtx` owned by the
    // dispatching frame, and no other reference to it is in use meanwhile.
    unsafe { &mut *call.cast::<CallCtx<'c>>() }
}

/// # Safety
/// `ptr..ptr+len` must be a valid slice for the call (or `len` 0).
unsafe fn bytes<'c>(ptr: *const u8, len: usize) -> &'c [u8] {
    if len == 0 || ptr.is_null() {
        return &[];
    }
    // SAFETY: the caller's promise.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// # Safety
/// `ptr..ptr+len` must be a valid writable slice (or `len` 0).
unsafe fn bytes_mut<'c>(ptr: *mut u8, len: usize) -> &'c mut [u8] {
    if len == 0 || ptr.is_null() {
        return &mut [];
    }
    // SAFETY: the caller's promise.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
}

/// `rgun_server.read_body`.
///
/// # Safety
/// `call` is the live call; `buf` holds `len` writable bytes.
pub unsafe extern "C" fn read_body(call: *mut ffi::Call, buf: *mut u8, len: usize) -> isize {
    // SAFETY: the caller's promise, as above.
    let (ctx, buf) = unsafe { (ctx(call), bytes_mut(buf, len)) };
    ctx.read_body(buf)
}

/// `rgun_server.start_response`.
///
/// # Safety
/// `call` is the live call; `reason` and the `count` headers are valid for
/// the call.
pub unsafe extern "C" fn start_response(
    call: *mut ffi::Call,
    status: u16,
    reason: ffi::Str,
    headers: *const ffi::Header,
    count: usize,
) -> i32 {
    // SAFETY: the caller's promise, as above.
    let (ctx, reason, headers) = unsafe {
        (
            ctx(call),
            reason.as_bytes(),
            HeaderLines::from_raw(headers, count),
        )
    };
    match ctx.start_response(status, reason, headers, None) {
        Ok(()) => ffi::OK,
        Err(e) => ctx.refused("start_response", &e),
    }
}

/// `rgun_server.write_body`.
///
/// # Safety
/// `call` is the live call; `data` holds `len` bytes.
pub unsafe extern "C" fn write_body(call: *mut ffi::Call, data: *const u8, len: usize) -> i32 {
    // SAFETY: the caller's promise, as above.
    let (ctx, data) = unsafe { (ctx(call), bytes(data, len)) };
    if ctx.enc.is_failed() {
        return ffi::ERR;
    }
    let result = ctx.enc.write_body(data);
    ctx.body_piece("write_body", result)
}

/// `rgun_server.respond`: a whole answer at once.
///
/// # Safety
/// `call` is the live call; `reason`, the `count` headers and the
/// `body_len` bytes of `body` are valid for the call.
pub unsafe extern "C" fn respond(
    call: *mut ffi::Call,
    status: u16,
    reason: ffi::Str,
    headers: *const ffi::Header,
    count: usize,
    body: *const u8,
    body_len: usize,
) -> i32 {
    // SAFETY: the caller's promise, as above.
    let (ctx, reason, headers, body) = unsafe {
        (
            ctx(call),
            reason.as_bytes(),
            HeaderLines::from_raw(headers, count),
            bytes(body, body_len),
        )
    };
    if let Err(e) = ctx.start_response(status, reason, headers, Some(body.len() as u64)) {
        return ctx.refused("respond", &e);
    }
    match ctx.enc.write_body(body) {
        Ok(()) => ffi::OK,
        Err(e) => ctx.refused("respond", &e),
    }
}

/// `rgun_server.send_file`.
///
/// # Safety
/// `call` is the live call; `fd` an open file the application owns.
pub unsafe extern "C" fn send_file(call: *mut ffi::Call, fd: RawFd, offset: i64, len: i64) -> i32 {
    // SAFETY: the caller's promise, as above.
    let ctx = unsafe { ctx(call) };
    if ctx.enc.is_failed() || offset < 0 {
        return ffi::ERR;
    }
    let result = ctx.enc.send_file(fd, offset, len);
    ctx.body_piece("send_file", result)
}

/// `rgun_server.log`.
///
/// # Safety
/// `message` must be valid for the call.
pub unsafe extern "C" fn log(level: i32, message: ffi::Str) {
    // SAFETY: the caller's promise.
    let message = String::from_utf8_lossy(unsafe { message.as_bytes() });
    let level = match level {
        ..=ffi::LOG_ERROR => log::Level::Error,
        ffi::LOG_WARNING => log::Level::Warn,
        ffi::LOG_DEBUG.. => log::Level::Debug,
        _ => log::Level::Info,
    };
    log::log!(level, "{message}");
}
