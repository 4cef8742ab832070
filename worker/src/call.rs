//! One request handed to the application: the context behind the opaque
//! `rgun_call`, and the callbacks the application reaches it through. The
//! application runs synchronously on the worker's thread, so the body is read
//! and the answer written here with blocking waits on this one socket; the
//! event loop resumes when the call returns.
//!
//! Framing is the server's: Content-Length when known, chunked on HTTP/1.1,
//! close-delimited on HTTP/1.0 (RFC 9112 §6). A failure before the first
//! byte of the answer is sent becomes the server's own error answer.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use rgun_gateway::ffi;

use crate::chunked::ChunkedDecoder;
use crate::parse::Framing;
use crate::response;
use crate::scoreboard::{Slot, monotonic_ms};

/// Unread request body the server will read and discard to keep a
/// connection alive; past this the connection is closed instead.
pub const MAX_DRAIN_BYTES: u64 = 1 << 20;
/// How long a blocking wait polls before it beats the heartbeat again.
const WAIT_SLICE_MS: u64 = 1000;

/// The socket a call reads and writes, with its time limit.
#[derive(Clone, Copy)]
pub struct CallIo {
    pub fd: RawFd,
    /// The longest wait for the client, and the whole call's deadline for
    /// its I/O: a client trickling a byte at a time cannot hold the worker
    /// past it.
    pub timeout_ms: u64,
    pub slot: &'static Slot,
    pub deadline_ms: u64,
}

impl CallIo {
    /// Wait until the socket is ready for `events`, beating the heartbeat:
    /// the worker is alive, only the peer is slow.
    fn wait(&self, events: libc::c_short) -> io::Result<()> {
        let deadline = (monotonic_ms() + self.timeout_ms).min(self.deadline_ms);
        loop {
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, WAIT_SLICE_MS as libc::c_int) };
            let now = monotonic_ms();
            self.slot.beat(now);
            if rc > 0 {
                return Ok(());
            }
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            if now >= deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
    }

    /// TCP_NODELAY (a Unix socket has no Nagle: the call just fails).
    fn set_nodelay(&self) {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a valid int option value on our socket.
        unsafe {
            libc::setsockopt(
                self.fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }

    /// Run a non-blocking system call until it makes progress: on EAGAIN
    /// wait for `events`, on EINTR try again.
    fn until_ready(
        &self,
        events: libc::c_short,
        mut call: impl FnMut() -> isize,
    ) -> io::Result<usize> {
        loop {
            let n = call();
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => self.wait(events)?,
                io::ErrorKind::Interrupted => {}
                _ => return Err(err),
            }
        }
    }

    /// Read what the socket has, waiting for at least one byte.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid writable region of `buf.len()` bytes.
        self.until_ready(libc::POLLIN, || unsafe {
            libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len())
        })
    }

    /// Write some of `data`, waiting until the socket takes at least one
    /// byte: the count written.
    pub fn write_some(&self, data: &[u8]) -> io::Result<usize> {
        // SAFETY: `data` is a valid readable region.
        self.until_ready(libc::POLLOUT, || unsafe {
            libc::write(self.fd, data.as_ptr().cast(), data.len())
        })
    }
}

/// Body bytes read from the socket during a call, kept by the worker across
/// calls: what follows the body in them belongs to the next request.
pub struct Spill {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Spill {
    pub fn new(size: usize) -> Spill {
        Spill {
            buf: vec![0; size],
            start: 0,
            end: 0,
        }
    }

    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn clear(&mut self) {
        (self.start, self.end) = (0, 0);
    }
}

/// Why the request body could not be read; what the client is answered
/// when the response has not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Malformed,
    TimedOut,
    Gone,
}

impl BodyError {
    fn status(self) -> Option<u16> {
        match self {
            BodyError::TooLarge => Some(413),
            BodyError::Malformed => Some(400),
            BodyError::TimedOut => Some(408),
            BodyError::Gone => None,
        }
    }

    fn from_io(err: &io::Error) -> BodyError {
        if err.kind() == io::ErrorKind::TimedOut {
            BodyError::TimedOut
        } else {
            BodyError::Gone
        }
    }
}

enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    Done,
}

/// How the answer's body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutFraming {
    /// HEAD, 204, 304: whatever the application writes is dropped.
    NoBody,
    Length(u64),
    Chunked,
    Close,
}

/// Why the server refused what the application asked.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("status {0} is not a final status code (200-599, RFC 9110 §15)")]
    Status(u16),
    #[error("invalid reason phrase")]
    Reason,
    #[error("invalid response header name {0:?}")]
    HeaderName(String),
    #[error("invalid value of response header {0:?} (CR, LF, NUL or another control byte)")]
    HeaderValue(String),
    #[error("invalid or conflicting Content-Length {0:?}")]
    ContentLength(String),
    #[error("the response has already started")]
    AlreadySent,
    #[error("body written before start_response")]
    NotStarted,
    #[error("body longer than the Content-Length it declared")]
    TooLong,
    #[error("sending a file failed: {0}")]
    File(String),
}

/// What the signal handler needs to answer the request in hand when the
/// worker is aborted (a timeout, or the application calling abort()).
static INFLIGHT_FD: AtomicI32 = AtomicI32::new(-1);
static INFLIGHT_COMMITTED: AtomicBool = AtomicBool::new(false);

static INFLIGHT_HEAD: AtomicBool = AtomicBool::new(false);

/// The abort answers, whole; a HEAD request gets them without their body.
const TIMEOUT_BODY: &str = "Gateway Timeout\n";
const TIMEOUT_ANSWER: &str = concat!(
    "HTTP/1.1 504 Gateway Timeout\r\nServer: rgun\r\nContent-Type: text/plain\r\n",
    "Content-Length: 16\r\nConnection: close\r\n\r\n",
    "Gateway Timeout\n"
);
const CRASH_BODY: &str = "Internal Server Error\n";
const CRASH_ANSWER: &str = concat!(
    "HTTP/1.1 500 Internal Server Error\r\nServer: rgun\r\nContent-Type: text/plain\r\n",
    "Content-Length: 22\r\nConnection: close\r\n\r\n",
    "Internal Server Error\n"
);

/// From the worker's SIGABRT handler: answer the request in hand if nothing
/// of its answer was sent yet. Only async-signal-safe calls.
pub fn answer_inflight_on_abort(timed_out: bool) {
    let fd = INFLIGHT_FD.load(Ordering::Relaxed);
    if fd >= 0 && !INFLIGHT_COMMITTED.load(Ordering::Relaxed) {
        let (answer, body) = if timed_out {
            (TIMEOUT_ANSWER, TIMEOUT_BODY)
        } else {
            (CRASH_ANSWER, CRASH_BODY)
        };
        let answer = if INFLIGHT_HEAD.load(Ordering::Relaxed) {
            &answer[..answer.len() - body.len()]
        } else {
            answer
        };
        // SAFETY: write(2) on a descriptor this process owns, from a static
        // buffer; async-signal-safe.
        unsafe { libc::write(fd, answer.as_ptr().cast(), answer.len()) };
    }
}

/// The request's side that outlives the application call, for the caller.
pub struct Outcome {
    pub keep_alive: bool,
    /// How many bytes after the head the body took in the read buffer (the
    /// rest, or the spill's pending bytes, are the next request).
    pub input_used: usize,
    pub status: u16,
    pub body_bytes: u64,
    /// Part of the request body was never read: the client may still be
    /// sending it.
    pub body_unread: bool,
}

/// The state behind one `rgun_call`.
pub struct CallCtx<'a> {
    io: CallIo,
    input: &'a [u8],
    input_pos: usize,
    spill: &'a mut Spill,
    body: BodyState,
    body_read: u64,
    body_limit: u64,
    body_error: Option<BodyError>,
    continue_pending: bool,
    out: &'a mut Vec<u8>,
    out_pos: &'a mut usize,
    date: &'a [u8],
    head_start: usize,
    /// The bytes of the written head, from `head_start`.
    head_len: usize,
    started: bool,
    committed: bool,
    failed: bool,
    framing: OutFraming,
    head_request: bool,
    minor: u8,
    keep_alive: bool,
    status: u16,
    body_sent: u64,
    nodelay: bool,
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
    pub date: &'a [u8],
    pub head_request: bool,
    pub minor: u8,
    pub keep_alive: bool,
}

impl<'a> CallCtx<'a> {
    pub fn new(setup: CallSetup<'a>) -> Self {
        let body = match setup.framing {
            Framing::None => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
        };
        let head_start = setup.out.len();
        CallCtx {
            io: setup.io,
            input: setup.input,
            input_pos: 0,
            spill: setup.spill,
            continue_pending: setup.expect_continue && !matches!(body, BodyState::Done),
            body,
            body_read: 0,
            body_limit: setup.body_limit,
            body_error: None,
            out: setup.out,
            out_pos: setup.out_pos,
            date: setup.date,
            head_start,
            head_len: 0,
            started: false,
            committed: false,
            failed: false,
            framing: OutFraming::Close,
            head_request: setup.head_request,
            minor: setup.minor,
            keep_alive: setup.keep_alive,
            status: 0,
            body_sent: 0,
            nodelay: false,
        }
    }

    pub fn as_ffi(&mut self) -> *mut ffi::Call {
        (self as *mut CallCtx<'a>).cast()
    }

    /// Mark the call as in hand for the abort handler. Answers to earlier
    /// pipelined requests still unsent would make an abort answer land in
    /// their place: then the handler stays silent.
    pub fn enter(&self) {
        INFLIGHT_COMMITTED.store(*self.out_pos < self.head_start, Ordering::Relaxed);
        INFLIGHT_HEAD.store(self.head_request, Ordering::Relaxed);
        INFLIGHT_FD.store(self.io.fd, Ordering::Relaxed);
    }

    fn available(&self) -> &[u8] {
        if self.input_pos < self.input.len() {
            &self.input[self.input_pos..]
        } else {
            self.spill.pending()
        }
    }

    fn consume(&mut self, n: usize) {
        if self.input_pos < self.input.len() {
            self.input_pos += n;
        } else {
            self.spill.start += n;
        }
    }

    /// Read more of the body from the socket into the spill.
    fn refill(&mut self) -> Result<(), BodyError> {
        self.send_continue()?;
        self.spill.clear();
        let n = self
            .io
            .read(&mut self.spill.buf)
            .map_err(|e| BodyError::from_io(&e))?;
        if n == 0 {
            return Err(BodyError::Gone);
        }
        self.spill.end = n;
        Ok(())
    }

    /// Answer `Expect: 100-continue` the first time the body is wanted
    /// (RFC 9110 §10.1.1): before the final answer, even if that is already
    /// written but not sent.
    fn send_continue(&mut self) -> Result<(), BodyError> {
        if !self.continue_pending {
            return Ok(());
        }
        self.continue_pending = false;
        if self.committed {
            // The final answer is already on the wire: an interim 100 may
            // not follow it (RFC 9110 §15.2).
            return Ok(());
        }
        self.out.splice(
            self.head_start..self.head_start,
            response::CONTINUE.iter().copied(),
        );
        self.head_start += response::CONTINUE.len();
        let end = self.head_start;
        self.flush_to(end).map_err(|e| BodyError::from_io(&e))
    }

    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, BodyError> {
        if let Some(e) = self.body_error {
            return Err(e);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let result = self.read_body_inner(buf);
        if let Err(e) = result {
            self.body_error = Some(e);
        }
        result
    }

    fn read_body_inner(&mut self, buf: &mut [u8]) -> Result<usize, BodyError> {
        match self.body {
            BodyState::Done => Ok(0),
            BodyState::Length(remaining) => {
                let want = buf
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                let avail = self.available();
                let n = if avail.is_empty() {
                    // Nothing buffered: read straight into the caller's buffer,
                    // never past the body's end.
                    self.send_continue()?;
                    let n = self
                        .io
                        .read(&mut buf[..want])
                        .map_err(|e| BodyError::from_io(&e))?;
                    if n == 0 {
                        return Err(BodyError::Gone);
                    }
                    n
                } else {
                    let n = want.min(avail.len());
                    buf[..n].copy_from_slice(&avail[..n]);
                    self.consume(n);
                    n
                };
                let left = remaining - n as u64;
                self.body = if left == 0 {
                    BodyState::Done
                } else {
                    BodyState::Length(left)
                };
                self.body_read += n as u64;
                Ok(n)
            }
            BodyState::Chunked(_) => loop {
                if self.available().is_empty() {
                    self.refill()?;
                }
                // The pending bytes and the decoder are disjoint fields.
                let avail: &[u8] = if self.input_pos < self.input.len() {
                    &self.input[self.input_pos..]
                } else {
                    &self.spill.buf[self.spill.start..self.spill.end]
                };
                let BodyState::Chunked(decoder) = &mut self.body else {
                    unreachable!("matched above")
                };
                let (used, made) = decoder
                    .decode(avail, buf)
                    .map_err(|_| BodyError::Malformed)?;
                let done = decoder.is_done();
                self.consume(used);
                self.body_read += made as u64;
                if self.body_limit != 0 && self.body_read > self.body_limit {
                    return Err(BodyError::TooLarge);
                }
                if done {
                    self.body = BodyState::Done;
                }
                if made > 0 || done {
                    return Ok(made);
                }
            },
        }
    }

    /// Write `out` up to `end` to the socket, waiting as needed.
    fn flush_to(&mut self, end: usize) -> io::Result<()> {
        if !self.nodelay {
            // The answer goes in pieces: Nagle would hold a small piece
            // until the client acknowledges the one before (up to its
            // delayed-ACK time).
            self.io.set_nodelay();
            self.nodelay = true;
        }
        // The position moves as bytes go out, so that a failure half-way
        // knows what the client already has: once any byte of this answer's
        // head is sent, the server can no longer replace it with its own.
        while *self.out_pos < end {
            let n = self.io.write_some(&self.out[*self.out_pos..end])?;
            *self.out_pos += n;
            if self.started && !self.committed && *self.out_pos > self.head_start {
                self.committed = true;
                INFLIGHT_COMMITTED.store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Send everything written so far: the answer is committed.
    fn flush_all(&mut self) -> io::Result<()> {
        let end = self.out.len();
        self.flush_to(end)?;
        self.out.clear();
        *self.out_pos = 0;
        self.head_start = 0;
        if self.started {
            self.committed = true;
            INFLIGHT_COMMITTED.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Check the application's status and headers and write the head.
    /// `whole_body`: the length of a body given all at once (`respond`).
    fn start_response(
        &mut self,
        status: u16,
        reason: &[u8],
        headers: &[ffi::Header],
        whole_body: Option<u64>,
    ) -> Result<(), Refusal> {
        if self.committed {
            return Err(Refusal::AlreadySent);
        }
        if !(200..=599).contains(&status) {
            return Err(Refusal::Status(status));
        }
        if !rgun_gateway::grammar::is_field_value(reason) {
            return Err(Refusal::Reason);
        }
        // A second call replaces the first head (PEP 3333's exc_info).
        self.out.truncate(self.head_start);
        self.started = false;
        let result = self.write_head(status, reason, headers, whole_body);
        if result.is_err() {
            self.out.truncate(self.head_start);
        }
        result
    }

    fn write_head(
        &mut self,
        status: u16,
        reason: &[u8],
        headers: &[ffi::Header],
        whole_body: Option<u64>,
    ) -> Result<(), Refusal> {
        // RFC 9110 §6.4.1: no body after HEAD, 204 or 304; §15.3.6: none
        // in a 205 either; §8.6: no Content-Length in a 204.
        let no_body = self.head_request || matches!(status, 204 | 205 | 304);
        // A connection stays open only if the next request can be found:
        // the client is not left waiting for a 100 and the unread body is
        // small enough to skip.
        let unread_ok = matches!(self.body, BodyState::Done) || self.body_fits_drain();
        let out = &mut *self.out;
        response::status_line(out, status, reason);
        let (mut has_server, mut has_date, mut close) = (false, false, false);
        let mut declared: Option<u64> = None;
        for header in headers {
            // SAFETY: the application passes headers valid for this call.
            let (name, value) = unsafe { (header.name.as_bytes(), header.value.as_bytes()) };
            if !rgun_gateway::grammar::is_token(name) {
                return Err(Refusal::HeaderName(
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
            if !rgun_gateway::grammar::is_field_value(value) {
                return Err(Refusal::HeaderValue(
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = rgun_gateway::grammar::content_length(value)
                    .ok()
                    // HEAD, 204, 304: the stated length is not the (empty)
                    // body's.
                    .filter(|n| {
                        declared.is_none_or(|d| d == *n)
                            && (no_body || whole_body.is_none_or(|w| w == *n))
                    });
                declared = Some(n.ok_or_else(|| {
                    Refusal::ContentLength(String::from_utf8_lossy(value).into_owned())
                })?);
                continue;
            }
            if response::is_server_owned(name) {
                // The server frames and keeps connections; `Connection:
                // close` from the application is still honoured.
                close |= name.eq_ignore_ascii_case(b"connection")
                    && value.eq_ignore_ascii_case(b"close");
                continue;
            }
            has_server |= name.eq_ignore_ascii_case(b"server");
            has_date |= name.eq_ignore_ascii_case(b"date");
            response::header(out, name, value);
        }
        if !has_server {
            out.extend_from_slice(response::SERVER_HEADER);
        }
        if !has_date {
            response::date_header(out, self.date);
        }
        let length = declared.or(whole_body);
        self.framing = if no_body {
            // A length the application stated is passed on (RFC 9110 §8.6:
            // what a GET would have had); an empty whole body says nothing.
            let stated = declared.or(whole_body.filter(|&n| n > 0 && status != 304));
            match status {
                204 => {}
                // §15.3.6: a 205 says its content is empty.
                205 => response::content_length(out, 0),
                _ => {
                    if let Some(n) = stated {
                        response::content_length(out, n);
                    }
                }
            }
            OutFraming::NoBody
        } else if let Some(n) = length {
            response::content_length(out, n);
            OutFraming::Length(n)
        } else if self.minor == 1 {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            OutFraming::Chunked
        } else {
            OutFraming::Close
        };
        self.keep_alive &= !close && unread_ok && self.framing != OutFraming::Close;
        if !self.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.minor == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.head_len = out.len() - self.head_start;
        self.started = true;
        self.status = status;
        Ok(())
    }

    /// One piece of the body. Every piece but the last of a response whose
    /// length is known is sent before returning (PEP 3333: no delaying).
    fn write_body(&mut self, data: &[u8]) -> Result<(), Refusal> {
        if !self.started {
            return Err(Refusal::NotStarted);
        }
        let flush = match self.framing {
            OutFraming::NoBody => {
                self.body_sent += data.len() as u64;
                return Ok(());
            }
            OutFraming::Length(remaining) => {
                let fits = data.len() as u64 <= remaining;
                let take = if fits { data.len() } else { remaining as usize };
                self.out.extend_from_slice(&data[..take]);
                self.body_sent += take as u64;
                self.framing = OutFraming::Length(remaining - take as u64);
                if !fits {
                    return Err(Refusal::TooLong);
                }
                remaining - take as u64 > 0
            }
            OutFraming::Chunked => {
                if data.is_empty() {
                    return Ok(());
                }
                chunk_size_line(self.out, data.len());
                self.out.extend_from_slice(data);
                self.out.extend_from_slice(b"\r\n");
                self.body_sent += data.len() as u64;
                true
            }
            OutFraming::Close => {
                self.out.extend_from_slice(data);
                self.body_sent += data.len() as u64;
                true
            }
        };
        if flush {
            // The client is gone or too slow: the answer cannot go on.
            self.flush_all().map_err(|_| Refusal::AlreadySent)?;
        }
        Ok(())
    }

    /// A piece of the body from an open file: the head and anything pending
    /// go out first, then the file with sendfile(2).
    fn send_file(&mut self, fd: RawFd, offset: i64, len: i64) -> Result<(), Refusal> {
        if !self.started {
            return Err(Refusal::NotStarted);
        }
        let len = if len >= 0 {
            len as u64
        } else {
            // SAFETY: `stat` is plain data, valid when zeroed; fstat writes
            // into it for a descriptor the application passed.
            let (rc, st) = unsafe {
                let mut st: libc::stat = std::mem::zeroed();
                (libc::fstat(fd, &mut st), st)
            };
            if rc != 0 {
                return Err(Refusal::File(io::Error::last_os_error().to_string()));
            }
            (st.st_size as u64).saturating_sub(offset.max(0) as u64)
        };
        let mut want = len;
        match self.framing {
            OutFraming::NoBody => {
                self.body_sent += len;
                return Ok(());
            }
            OutFraming::Length(remaining) => want = want.min(remaining),
            OutFraming::Chunked => {
                if len == 0 {
                    return Ok(());
                }
                chunk_size_line(self.out, len as usize);
            }
            OutFraming::Close => {}
        }
        self.flush_all().map_err(|_| Refusal::AlreadySent)?;
        let mut off = offset as libc::off_t;
        let mut left = want;
        while left > 0 {
            let chunk = left.min(1 << 30) as usize;
            // SAFETY: sendfile between two descriptors this call owns for
            // its duration, with a valid offset pointer.
            let n = unsafe { libc::sendfile(self.io.fd, fd, &mut off, chunk) };
            if n > 0 {
                left -= n as u64;
                continue;
            }
            if n == 0 {
                // The file is shorter than promised: the framing is broken.
                self.failed = true;
                return Err(Refusal::File("the file ended early".into()));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => self
                    .io
                    .wait(libc::POLLOUT)
                    .map_err(|_| Refusal::AlreadySent)?,
                io::ErrorKind::Interrupted => {}
                _ => return Err(Refusal::File(err.to_string())),
            }
        }
        self.body_sent += want;
        match self.framing {
            OutFraming::Length(remaining) => {
                self.framing = OutFraming::Length(remaining - want);
                if want < len {
                    return Err(Refusal::TooLong);
                }
            }
            OutFraming::Chunked => self.out.extend_from_slice(b"\r\n"),
            _ => {}
        }
        Ok(())
    }

    /// The server's own answer to `OPTIONS *`, a question about the server
    /// rather than a resource (RFC 9110 §9.3.7): 200 with no content. The
    /// return code is the one an application's call would give.
    pub fn answer_options_asterisk(&mut self) -> i32 {
        match self.start_response(200, b"", &[], Some(0)) {
            Ok(()) => ffi::OK,
            Err(_) => ffi::ERR,
        }
    }

    /// After the application returned `rc`: finish the answer, or replace it
    /// with the server's error if nothing of it was sent; skip the unread
    /// body so that the connection can serve the next request.
    pub fn finish(mut self, rc: i32) -> Outcome {
        INFLIGHT_FD.store(-1, Ordering::Relaxed);
        let mut complete = rc == ffi::OK && self.started && !self.failed;
        if complete && !self.committed && self.body_error.is_none() && self.body_fits_drain() {
            // The client sends the body whether the application read it or
            // not: take it before answering, so that a body whose framing
            // is broken or cut short (RFC 9112 §6.3: an invalid message) is
            // answered with the server's error, not the application's 200.
            match self.drain_body() {
                Ok(true) => {}
                // Too much to skip: the answer goes, then the connection,
                // and the answer says so.
                Ok(false) => self.announce_close(),
                Err(e) => {
                    self.body_error = Some(e);
                    complete = false;
                }
            }
        }
        if !complete {
            if rc == ffi::OK && !self.started {
                log::error!("the application returned without starting a response");
            }
            if self.committed {
                // Part of the answer is on the wire: all that can be done
                // is to end the connection, so the client sees it cut short.
                self.keep_alive = false;
            } else {
                self.out.truncate(self.head_start);
                // A client gone mid-body gets no answer; any other failure
                // gets the server's.
                let status = match self.body_error {
                    Some(e) => e.status(),
                    None => Some(500),
                };
                if let Some(status) = status {
                    response::error(self.out, status, self.date, self.head_request);
                }
                self.status = status.unwrap_or(0);
                self.body_sent = 0;
                self.keep_alive = false;
            }
        } else {
            match self.framing {
                OutFraming::Chunked => self.out.extend_from_slice(b"0\r\n\r\n"),
                OutFraming::Length(left) if left > 0 => {
                    log::warn!(
                        "the application wrote {left} bytes less than its Content-Length; closing the connection"
                    );
                    self.keep_alive = false;
                }
                _ => {}
            }
        }
        if self.keep_alive && !matches!(self.body, BodyState::Done) {
            // The client may wait for the answer before it sends the rest of
            // the body: send the answer first, then skip the body.
            self.keep_alive = self.flush_all().is_ok() && self.drain_body() == Ok(true);
        }
        Outcome {
            body_unread: !matches!(self.body, BodyState::Done),
            keep_alive: self.keep_alive,
            input_used: self.input_pos,
            status: self.status,
            body_bytes: self.body_sent,
        }
    }

    /// Turn a written, unsent head that keeps the connection into one that
    /// closes it, `Connection: close` added before its empty line. Only a
    /// chunked body, so HTTP/1.1, gets here: no `keep-alive` to replace.
    fn announce_close(&mut self) {
        if !self.keep_alive {
            return;
        }
        self.keep_alive = false;
        let fields_end = self.head_start + self.head_len - 2;
        self.out.splice(
            fields_end..fields_end,
            b"Connection: close\r\n".iter().copied(),
        );
    }

    /// Whether the unread body can be skipped, before the answer or after
    /// it: the client is sending it (no 100-continue awaited) and it is
    /// small enough, as far as can be known before reading it.
    fn body_fits_drain(&self) -> bool {
        match self.body {
            BodyState::Done => false,
            BodyState::Length(n) => !self.continue_pending && n <= MAX_DRAIN_BYTES,
            BodyState::Chunked(_) => !self.continue_pending,
        }
    }

    /// Read and drop what is left of the body: `Ok(false)` if more than
    /// MAX_DRAIN_BYTES is left, which is not read.
    fn drain_body(&mut self) -> Result<bool, BodyError> {
        let mut sink = [0u8; 8192];
        let mut drained = 0u64;
        while !matches!(self.body, BodyState::Done) {
            // A client trickling its body holds the worker no longer than
            // the call's deadline: a wait that sees bytes does not time out.
            if monotonic_ms() >= self.io.deadline_ms {
                return Err(BodyError::TimedOut);
            }
            match self.read_body(&mut sink)? {
                0 => return Ok(true),
                n => drained += n as u64,
            }
            if drained > MAX_DRAIN_BYTES {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// `<size in hex>\r\n`, the line before a chunk's data (RFC 9112 §7.1).
fn chunk_size_line(out: &mut Vec<u8>, mut n: usize) {
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
    out.extend_from_slice(b"\r\n");
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
/// As the header array of `rgun_server.start_response`.
unsafe fn header_slice<'c>(headers: *const ffi::Header, count: usize) -> &'c [ffi::Header] {
    if count == 0 || headers.is_null() {
        return &[];
    }
    // SAFETY: the application passes `count` headers valid for the call.
    unsafe { std::slice::from_raw_parts(headers, count) }
}

fn refused(ctx: &mut CallCtx<'_>, what: &str, refusal: &Refusal) -> i32 {
    log::error!("{what}: {refusal}; answering 500 instead");
    ctx.failed = true;
    ffi::ERR
}

pub unsafe extern "C" fn read_body(call: *mut ffi::Call, buf: *mut u8, len: usize) -> isize {
    // SAFETY: the ABI: `call` is the live call, `buf` holds `len` bytes.
    let (ctx, buf) = unsafe { (ctx(call), bytes_mut(buf, len)) };
    match ctx.read_body(buf) {
        Ok(n) => n as isize,
        Err(_) => -1,
    }
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

pub unsafe extern "C" fn start_response(
    call: *mut ffi::Call,
    status: u16,
    reason: ffi::Str,
    headers: *const ffi::Header,
    count: usize,
) -> i32 {
    // SAFETY: the ABI: every pointer is valid for the call.
    let (ctx, reason, headers) =
        unsafe { (ctx(call), reason.as_bytes(), header_slice(headers, count)) };
    match ctx.start_response(status, reason, headers, None) {
        Ok(()) => ffi::OK,
        Err(e) => refused(ctx, "start_response", &e),
    }
}

pub unsafe extern "C" fn write_body(call: *mut ffi::Call, data: *const u8, len: usize) -> i32 {
    // SAFETY: the ABI: `data` holds `len` bytes for the call.
    let (ctx, data) = unsafe { (ctx(call), bytes(data, len)) };
    if ctx.failed {
        return ffi::ERR;
    }
    match ctx.write_body(data) {
        Ok(()) => ffi::OK,
        Err(Refusal::AlreadySent) => {
            // The peer went away or stalled; nothing to answer any more.
            ctx.failed = true;
            ffi::ERR
        }
        Err(e) => refused(ctx, "write_body", &e),
    }
}

pub unsafe extern "C" fn respond(
    call: *mut ffi::Call,
    status: u16,
    reason: ffi::Str,
    headers: *const ffi::Header,
    count: usize,
    body: *const u8,
    body_len: usize,
) -> i32 {
    // SAFETY: the ABI: every pointer is valid for the call.
    let (ctx, reason, headers, body) = unsafe {
        (
            ctx(call),
            reason.as_bytes(),
            header_slice(headers, count),
            bytes(body, body_len),
        )
    };
    if let Err(e) = ctx.start_response(status, reason, headers, Some(body.len() as u64)) {
        return refused(ctx, "respond", &e);
    }
    match ctx.write_body(body) {
        Ok(()) => ffi::OK,
        Err(e) => refused(ctx, "respond", &e),
    }
}

pub unsafe extern "C" fn send_file(call: *mut ffi::Call, fd: i32, offset: i64, len: i64) -> i32 {
    // SAFETY: the ABI: `call` is the live call.
    let ctx = unsafe { ctx(call) };
    if ctx.failed || offset < 0 {
        return ffi::ERR;
    }
    match ctx.send_file(fd, offset, len) {
        Ok(()) => ffi::OK,
        Err(Refusal::AlreadySent) => {
            ctx.failed = true;
            ffi::ERR
        }
        Err(e) => refused(ctx, "send_file", &e),
    }
}

/// # Safety
/// `message` must be valid for the call.
pub unsafe extern "C" fn log(level: i32, message: ffi::Str) {
    // SAFETY: the ABI: `message` is valid for the call.
    let message = String::from_utf8_lossy(unsafe { message.as_bytes() });
    let level = match level {
        ..=ffi::LOG_ERROR => log::Level::Error,
        ffi::LOG_WARNING => log::Level::Warn,
        ffi::LOG_DEBUG.. => log::Level::Debug,
        _ => log::Level::Info,
    };
    log::log!(level, "{message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_answers_state_their_body_length() {
        for (answer, body) in [(TIMEOUT_ANSWER, TIMEOUT_BODY), (CRASH_ANSWER, CRASH_BODY)] {
            let head = &answer[..answer.len() - body.len()];
            assert!(head.ends_with("\r\n\r\n"), "{head:?}");
            assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        }
    }
}
