//! One client connection: reading what the socket has, parsing every
//! complete request head in it, handing each to the application in order,
//! and writing the answers in one batch. Buffers are taken from the worker's
//! pools while a connection has bytes in flight and given back when it goes
//! idle, so an idle keep-alive connection holds no buffer.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use rgun_gateway::ffi;

use crate::access_log::{AccessLog, Entry};
use crate::app::LoadedApp;
use crate::blocking::CallIo;
use crate::body::Spill;
use crate::call::{CallCtx, CallSetup};
use crate::parse::{self, Limits};
use crate::response::{self, DateCache};
use crate::scoreboard::{Slot, monotonic_ms};

/// A read buffer's starting size; it grows to the largest head allowed.
pub const READ_BUFFER_SIZE: usize = 16 * 1024;
/// Output kept unsent before the connection stops reading more requests.
const MAX_PENDING_OUTPUT: usize = 256 * 1024;
/// Buffers kept for reuse by a worker.
const MAX_POOLED_BUFFERS: usize = 64;

pub enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }

    pub fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

/// What a listener tells the application about where a request came in.
pub struct ListenerInfo {
    pub server_name: Box<[u8]>,
    pub server_port: u16,
}

/// The peer's address as the application sees it, rendered once at accept.
pub struct Peer {
    text: [u8; 48],
    len: u8,
    pub port: u16,
    /// A proxy in `--forwarded-allow-ips`: its X-Forwarded-Proto is
    /// believed.
    pub trusted: bool,
}

impl Peer {
    pub fn new(addr: Option<std::net::SocketAddr>, trusted: bool) -> Peer {
        let mut peer = Peer {
            text: [0; 48],
            len: 0,
            port: 0,
            trusted,
        };
        if let Some(addr) = addr {
            let mut cursor = io::Cursor::new(&mut peer.text[..]);
            let _ = write!(cursor, "{}", addr.ip());
            peer.len = cursor.position() as u8;
            peer.port = addr.port();
        }
        peer
    }

    pub fn addr(&self) -> &[u8] {
        &self.text[..self.len as usize]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Between requests, waiting up to `--keep-alive`.
    Idle,
    /// Part of a request head is in; waiting up to `--header-timeout`.
    Head,
    /// Answers go out, then the connection closes.
    Closing,
    /// The answer is out and our side shut down; what the client still
    /// sends is read and dropped until it closes, so that closing does not
    /// reset the connection and destroy the answer in flight.
    Lingering,
}

/// How long, and for how many bytes, a closing connection with unread
/// input lingers (nginx's lingering_time is 30 s; a client that keeps
/// sending is not waited for that long here).
const LINGER_MS: u64 = 2000;
const LINGER_MAX_BYTES: usize = 1 << 20;

/// What every thread of a worker reads and none writes, fixed at boot.
pub struct Settings {
    pub limits: Limits,
    pub keep_alive_ms: u64,
    pub header_timeout_ms: u64,
    pub io_timeout_ms: u64,
    pub app: LoadedApp,
    pub slot: &'static Slot,
    pub listeners: Vec<ListenerInfo>,
    /// `--forwarded-allow-ips`.
    pub forwarded_allow: crate::ForwardedAllow,
    /// One thread runs the application: the abort handler may answer the
    /// request in hand (with several there is no one request in hand).
    pub answer_on_abort: bool,
}

/// A thread's scratch space, reused from request to request.
pub struct Scratch {
    fields: Vec<ffi::Header>,
    path: Vec<u8>,
    spill: Spill,
}

impl Scratch {
    pub fn new(limits: &Limits) -> Scratch {
        Scratch {
            fields: Vec::with_capacity(limits.request_fields.min(parse::MAX_REQUEST_FIELDS_CAP)),
            path: Vec::new(),
            spill: Spill::new(READ_BUFFER_SIZE * 4),
        }
    }
}

/// What answering requests needs, on whichever thread does it.
pub struct Cx<'a> {
    pub settings: &'a Settings,
    pub scratch: &'a mut Scratch,
    pub date: &'a [u8],
    pub now_ms: u64,
    pub draining: bool,
    pub access_log: Option<&'a Mutex<AccessLog>>,
}

/// The event loop's own state that connections use: the clock, the drain
/// flag, buffer pools, and the loop thread's scratch.
pub struct Shared {
    pub settings: &'static Settings,
    pub scratch: Scratch,
    pub date: DateCache,
    pub now_ms: u64,
    pub draining: bool,
    pub access_log: Option<Arc<Mutex<AccessLog>>>,
    read_pool: Vec<Vec<u8>>,
    write_pool: Vec<Vec<u8>>,
}

impl Shared {
    pub fn new(settings: &'static Settings, access_log: Option<Arc<Mutex<AccessLog>>>) -> Shared {
        Shared {
            settings,
            scratch: Scratch::new(&settings.limits),
            date: DateCache::new(),
            now_ms: 0,
            draining: false,
            access_log,
            read_pool: Vec::new(),
            write_pool: Vec::new(),
        }
    }

    fn cx(&mut self) -> Cx<'_> {
        Cx {
            settings: self.settings,
            scratch: &mut self.scratch,
            date: self.date.get(),
            now_ms: self.now_ms,
            draining: self.draining,
            access_log: self.access_log.as_deref(),
        }
    }

    fn take_read_buffer(&mut self) -> Vec<u8> {
        self.read_pool
            .pop()
            .unwrap_or_else(|| vec![0; READ_BUFFER_SIZE])
    }

    fn give_read_buffer(&mut self, mut buf: Vec<u8>) {
        if self.read_pool.len() < MAX_POOLED_BUFFERS && buf.len() >= READ_BUFFER_SIZE {
            buf.truncate(READ_BUFFER_SIZE);
            // A buffer grown for a large head does not stay large.
            buf.shrink_to(READ_BUFFER_SIZE);
            self.read_pool.push(buf);
        }
    }

    fn take_write_buffer(&mut self) -> Vec<u8> {
        self.write_pool.pop().unwrap_or_default()
    }

    fn give_write_buffer(&mut self, mut buf: Vec<u8>) {
        if self.write_pool.len() < MAX_POOLED_BUFFERS && buf.capacity() <= MAX_PENDING_OUTPUT {
            buf.clear();
            self.write_pool.push(buf);
        }
    }
}

pub struct Conn {
    pub stream: Stream,
    listener: usize,
    peer: Peer,
    /// `rbuf[rstart..rend]` is received and not yet consumed.
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    /// `wbuf[wpos..]` is yet to be sent.
    wbuf: Vec<u8>,
    wpos: usize,
    pub phase: Phase,
    pub deadline_ms: u64,
    peer_closed: bool,
    /// The buffered bytes are an incomplete head: parse again only after
    /// more arrive.
    awaiting_more: bool,
    /// Output is pending and the socket is full: `deadline_ms` is the time
    /// the client has to take it.
    write_stalled: bool,
    /// The client may still be sending input nobody will read (a refused
    /// request, an unread body): close by lingering.
    unread_input: bool,
    lingered: usize,
}

/// What the loop should do with a connection after it worked.
#[derive(PartialEq, Eq, Debug)]
pub enum Next {
    Keep,
    Close,
    /// Requests are buffered: hand the connection to an application thread.
    Dispatch,
}

impl Conn {
    pub fn new(stream: Stream, listener: usize, peer: Peer, now_ms: u64, shared: &Shared) -> Conn {
        Conn {
            stream,
            listener,
            peer,
            rbuf: Vec::new(),
            rstart: 0,
            rend: 0,
            wbuf: Vec::new(),
            wpos: 0,
            phase: Phase::Idle,
            deadline_ms: now_ms + shared.settings.header_timeout_ms,
            peer_closed: false,
            awaiting_more: false,
            write_stalled: false,
            unread_input: false,
            lingered: 0,
        }
    }

    /// A connection with no worker around it, for the bench harness.
    pub(crate) fn bare(stream: Stream, peer: Peer) -> Conn {
        Conn {
            stream,
            listener: 0,
            peer,
            rbuf: vec![0; READ_BUFFER_SIZE],
            rstart: 0,
            rend: 0,
            wbuf: Vec::new(),
            wpos: 0,
            phase: Phase::Idle,
            deadline_ms: 0,
            peer_closed: false,
            awaiting_more: false,
            write_stalled: false,
            unread_input: false,
            lingered: 0,
        }
    }

    /// The bench harness: `input` as if just read.
    pub(crate) fn load_input(&mut self, input: &[u8]) {
        self.rbuf[..input.len()].copy_from_slice(input);
        (self.rstart, self.rend) = (0, input.len());
        self.awaiting_more = false;
    }

    /// The bench harness: answer what was loaded; the answer's bytes.
    pub(crate) fn process_for_bench(&mut self, cx: &mut Cx<'_>) -> &[u8] {
        self.wbuf.clear();
        self.wpos = 0;
        self.phase = Phase::Idle;
        self.process(cx);
        &self.wbuf
    }

    /// The socket is readable (or writable): do all the work there is. With
    /// `inline` false, buffered requests are not answered here but handed
    /// back as [`Next::Dispatch`].
    pub fn on_ready(&mut self, shared: &mut Shared, inline: bool) -> Next {
        if self.phase == Phase::Lingering {
            return self.linger(shared);
        }
        let mut drained = false;
        loop {
            if self
                .write_pending(shared.now_ms, shared.settings.io_timeout_ms)
                .is_err()
            {
                return Next::Close;
            }
            self.recycle_write_buffer(shared);
            if self.wbuf.len() - self.wpos > MAX_PENDING_OUTPUT {
                // The client is not reading: answer nothing more (and read
                // nothing more) until it does.
                return Next::Keep;
            }
            // Requests already buffered are answered before more is read.
            if self.has_request_bytes() {
                if !inline {
                    return Next::Dispatch;
                }
                if self.wbuf.capacity() == 0 {
                    self.wbuf = shared.take_write_buffer();
                }
                let mut cx = shared.cx();
                self.process(&mut cx);
                let now_ms = cx.now_ms;
                shared.now_ms = now_ms;
                continue;
            }
            if drained {
                break;
            }
            if self.phase == Phase::Closing || self.peer_closed {
                return self.closing_state(shared);
            }
            drained = match self.read_some(shared) {
                Ok(drained) => drained,
                Err(_) => return Next::Close,
            };
        }
        if self.phase == Phase::Closing || self.peer_closed {
            return self.closing_state(shared);
        }
        if self.rstart == self.rend {
            self.release_read_buffer(shared);
        }
        Next::Keep
    }

    fn has_request_bytes(&self) -> bool {
        self.rstart < self.rend && !self.awaiting_more && self.phase != Phase::Closing
    }

    /// On an application thread: answer the buffered requests and send what
    /// can be sent without waiting.
    pub fn serve(&mut self, cx: &mut Cx<'_>) {
        self.process(cx);
        if self
            .write_pending(cx.now_ms, cx.settings.io_timeout_ms)
            .is_err()
        {
            self.phase = Phase::Closing;
            self.peer_closed = true;
        }
    }

    fn closing_state(&mut self, shared: &mut Shared) -> Next {
        if self.wpos == self.wbuf.len() {
            // Closing with unread input makes the kernel reset the
            // connection, and the client loses the answer it has not read
            // yet: shut our side and drain first.
            if (self.unread_input || self.rstart < self.rend) && !self.peer_closed {
                return self.start_lingering(shared);
            }
            return Next::Close;
        }
        // Output is still pending: give it until the I/O timeout.
        self.phase = Phase::Closing;
        self.deadline_ms = shared.now_ms + shared.settings.io_timeout_ms;
        Next::Keep
    }

    fn start_lingering(&mut self, shared: &mut Shared) -> Next {
        let _ = self.stream.shutdown_write();
        self.phase = Phase::Lingering;
        self.deadline_ms = shared.now_ms + LINGER_MS;
        (self.rstart, self.rend) = (0, 0);
        self.linger(shared)
    }

    /// Read and drop what the client sends until it closes.
    fn linger(&mut self, shared: &mut Shared) -> Next {
        if self.rbuf.is_empty() {
            self.rbuf = shared.take_read_buffer();
        }
        loop {
            match self.stream.read(&mut self.rbuf) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    self.lingered += n;
                    if self.lingered > LINGER_MAX_BYTES {
                        return Next::Close;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
    }

    /// One read of what the socket has. `Ok(true)`: the socket is drained
    /// for now (a short read means nothing more is queued; the next arrival
    /// raises a new edge).
    fn read_some(&mut self, shared: &mut Shared) -> io::Result<bool> {
        if self.rbuf.is_empty() {
            self.rbuf = shared.take_read_buffer();
        }
        if self.rend == self.rbuf.len() {
            if self.rstart > 0 {
                self.rbuf.copy_within(self.rstart..self.rend, 0);
                (self.rstart, self.rend) = (0, self.rend - self.rstart);
            } else {
                // A head larger than the buffer: grow up to what the limits
                // allow (the parser refuses anything beyond).
                let max = shared.settings.limits.max_head_bytes() + READ_BUFFER_SIZE;
                let grown = (self.rbuf.len() * 2).min(max.max(self.rbuf.len() + 1));
                self.rbuf.resize(grown, 0);
            }
        }
        let space = self.rbuf.len() - self.rend;
        loop {
            match self.stream.read(&mut self.rbuf[self.rend..]) {
                Ok(0) => {
                    self.peer_closed = true;
                    return Ok(true);
                }
                Ok(n) => {
                    self.rend += n;
                    self.awaiting_more = false;
                    return Ok(n < space);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Answer every complete request in the buffer, in order.
    fn process(&mut self, cx: &mut Cx<'_>) {
        let settings = cx.settings;
        let scratch = &mut *cx.scratch;
        while self.rstart < self.rend && self.phase != Phase::Closing {
            if self.wbuf.len() - self.wpos > MAX_PENDING_OUTPUT {
                // Answers pile up unread: the rest waits for the client.
                return;
            }
            if self.phase == Phase::Idle {
                self.phase = Phase::Head;
                self.deadline_ms = cx.now_ms + settings.header_timeout_ms;
            }
            let buf = &self.rbuf[self.rstart..self.rend];
            let head = match parse::parse_head(buf, &settings.limits, &mut scratch.fields) {
                Ok(Some(head)) => head,
                Ok(None) => {
                    self.awaiting_more = true;
                    return;
                }
                Err(parse::HeadError::Version)
                    if let Some(at) = parse::higher_minor_version(buf) =>
                {
                    // HTTP/1.2 and up: served as HTTP/1.1 (RFC 9110 §2.5).
                    self.rbuf[self.rstart + at] = b'1';
                    continue;
                }
                Err(e) => {
                    log::debug!(
                        "refusing a request from {}: {e}",
                        String::from_utf8_lossy(self.peer.addr())
                    );
                    response::error(
                        &mut self.wbuf,
                        e.status(),
                        cx.date,
                        parse::is_head_request(buf),
                    );
                    self.phase = Phase::Closing;
                    // The rest of a refused request may still be coming.
                    self.unread_input = true;
                    return;
                }
            };
            let listener = &settings.listeners[self.listener];
            let path: &[u8] = if head.path.contains(&b'%') {
                parse::percent_decode(head.path, &mut scratch.path);
                &scratch.path
            } else {
                head.path
            };
            let request = ffi::Request {
                method: ffi::Str::new(head.method),
                raw_uri: ffi::Str::new(head.target),
                path: ffi::Str::new(path),
                query: ffi::Str::new(head.query),
                script_name: ffi::Str::EMPTY,
                protocol: ffi::Str::new(if head.minor == 1 {
                    b"HTTP/1.1"
                } else {
                    b"HTTP/1.0"
                }),
                // Gunicorn's secure scheme header, from a trusted proxy.
                scheme: ffi::Str::new(
                    if self.peer.trusted && head.forwarded_proto.eq_ignore_ascii_case(b"https") {
                        b"https"
                    } else {
                        b"http"
                    },
                ),
                server_name: ffi::Str::new(&listener.server_name),
                remote_addr: ffi::Str::new(self.peer.addr()),
                content_type: ffi::Str::new(head.content_type),
                headers: scratch.fields.as_ptr(),
                header_count: scratch.fields.len(),
                // The parser keeps lengths within i64.
                content_length: head.content_length.map_or(-1, |n| n as i64),
                server_port: listener.server_port,
                remote_port: self.peer.port,
                body_chunked: u8::from(head.framing == parse::Framing::Chunked),
            };
            let mut call = CallCtx::new(CallSetup {
                io: CallIo {
                    fd: self.stream.fd(),
                    timeout_ms: settings.io_timeout_ms,
                    slot: settings.slot,
                    deadline_ms: cx.now_ms.saturating_add(settings.io_timeout_ms),
                },
                input: &buf[head.len..],
                spill: &mut scratch.spill,
                framing: head.framing,
                body_limit: settings.limits.request_body,
                expect_continue: head.expect_continue,
                out: &mut self.wbuf,
                out_pos: &mut self.wpos,
                date: cx.date,
                head_request: head.is_head_method(),
                minor: head.minor,
                keep_alive: head.keep_alive && !cx.draining,
            });
            settings.slot.request_started(cx.now_ms);
            if settings.answer_on_abort {
                call.enter();
            }
            let rc = if head.method == b"OPTIONS" && head.target == b"*" {
                call.answer_options_asterisk()
            } else {
                settings.app.handle(call.as_ffi(), &request)
            };
            let outcome = call.finish(rc);
            // The call may have taken long: deadlines from here on count
            // from now, not from when the request came in.
            cx.now_ms = monotonic_ms();
            // --timeout is per request: a pipeline of slow requests is not
            // one hung request.
            settings.slot.beat(cx.now_ms);
            let used = head.len + outcome.input_used;
            settings.slot.request_finished();
            if let Some(log) = cx.access_log {
                log.lock().unwrap_or_else(|e| e.into_inner()).write(&Entry {
                    remote_addr: self.peer.addr(),
                    method: head.method,
                    target: head.target,
                    minor: head.minor,
                    status: outcome.status,
                    body_bytes: outcome.body_bytes,
                    referer: field(&scratch.fields, b"referer"),
                    user_agent: field(&scratch.fields, b"user-agent"),
                });
            }
            // What follows the request: the rest of the buffer, or, if the
            // body was read from the socket, what the spill holds past it.
            if scratch.spill.pending().is_empty() {
                self.rstart += used;
            } else {
                let pending = scratch.spill.pending();
                if self.rbuf.len() < pending.len() {
                    self.rbuf.resize(pending.len(), 0);
                }
                self.rbuf[..pending.len()].copy_from_slice(pending);
                (self.rstart, self.rend) = (0, pending.len());
                scratch.spill.clear();
            }
            if !outcome.keep_alive {
                self.phase = Phase::Closing;
                self.unread_input |= outcome.body_unread;
                return;
            }
            // The next request's head timer starts now.
            self.phase = Phase::Idle;
            self.deadline_ms = cx.now_ms + settings.keep_alive_ms;
        }
        if self.rstart == self.rend {
            (self.rstart, self.rend) = (0, 0);
        }
    }

    /// Send what is pending, without waiting.
    fn write_pending(&mut self, now_ms: u64, io_timeout_ms: u64) -> io::Result<()> {
        let mut progressed = false;
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(n) => {
                    self.wpos += n;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The client has the I/O timeout to take what is
                    // pending; only progress earns it more time (a trickle
                    // of input does not).
                    if progressed || !self.write_stalled {
                        self.deadline_ms = now_ms + io_timeout_ms;
                        self.write_stalled = true;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.write_stalled = false;
        Ok(())
    }

    /// A fully sent write buffer goes back to the pool.
    fn recycle_write_buffer(&mut self, shared: &mut Shared) {
        if self.wpos == self.wbuf.len() && self.wbuf.capacity() != 0 {
            self.wpos = 0;
            let buf = std::mem::take(&mut self.wbuf);
            shared.give_write_buffer(buf);
        }
    }

    fn release_read_buffer(&mut self, shared: &mut Shared) {
        if !self.rbuf.is_empty() {
            (self.rstart, self.rend) = (0, 0);
            let buf = std::mem::take(&mut self.rbuf);
            shared.give_read_buffer(buf);
        }
    }

    /// The connection's deadline passed: a partial head gets a 408 (RFC 9110
    /// §15.5.9), an idle connection is closed silently.
    pub fn on_timeout(&mut self, shared: &mut Shared) {
        if self.phase == Phase::Head && self.rstart < self.rend && self.wpos == self.wbuf.len() {
            let mut out = Vec::new();
            let head_request = parse::is_head_request(&self.rbuf[self.rstart..self.rend]);
            response::error(&mut out, 408, shared.date.get(), head_request);
            let _ = self.stream.write(&out);
        }
    }

    /// Give the buffers back before the connection is dropped.
    pub fn release(mut self, shared: &mut Shared) {
        self.release_read_buffer(shared);
        if self.wbuf.capacity() != 0 {
            shared.give_write_buffer(std::mem::take(&mut self.wbuf));
        }
    }
}

fn field<'f>(fields: &'f [ffi::Header], name: &[u8]) -> &'f [u8] {
    fields
        .iter()
        // SAFETY: the fields point into the read buffer, which is not
        // touched between parsing and this use.
        .map(|h| unsafe { (h.name.as_bytes(), h.value.as_bytes()) })
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map_or(&[], |(_, v)| v)
}
