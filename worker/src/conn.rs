//! One client connection: reading what the socket has, parsing every
//! complete request head in it, handing each to the application in order,
//! and writing the answers in one batch. Buffers are taken from the worker's
//! pools while a connection has bytes in flight and given back when it goes
//! idle, so an idle keep-alive connection holds no buffer.

use std::io;

use crate::blocking::CallIo;
use crate::call::CallSetup;
use crate::context::{Cx, MAX_PENDING_OUTPUT, READ_BUFFER_SIZE, Settings, Shared};
use crate::exchange::{Logged, call_app, capture, log_access, log_clock, request_view};
use crate::handoff::{Arrival, Passage};
use crate::parse;
use crate::proxy::Versions;
use crate::response;
use crate::scoreboard::monotonic_ms;
use crate::stream::{Peer, Stream};

/// Where a connection is between requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `--proxy-protocol`: before the first request, waiting for the PROXY
    /// header, if the peer is `allowed` to send one (and must), or for
    /// enough bytes to tell that it sent none (it may not send one).
    Proxy { allowed: bool },
    /// Between requests, waiting up to `--keep-alive`.
    Idle,
    /// Part of a request head is in; waiting up to `--header-timeout`.
    Head,
    /// Answers go out, then the connection closes. `unread_input`: the
    /// client may still be sending input nobody will read (a refused
    /// request, an unread body), so closing lingers.
    Closing { unread_input: bool },
    /// The answer is out and our side shut down; what the client still
    /// sends is read and dropped (`dropped` bytes so far) until it closes,
    /// so that closing does not reset the connection and destroy the
    /// answer in flight.
    Lingering { dropped: usize },
}

/// What is known of the client's side of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    /// More may come; buffered bytes, if any, are still to be parsed.
    Open,
    /// The buffered bytes are an incomplete head: parse again only after
    /// more arrive.
    Incomplete,
    /// The client closed its side (or the connection failed): nothing more
    /// will come.
    Eof,
}

/// Whether the client takes what is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Flowing,
    /// Output is pending and the socket is full: `deadline_ms` is the time
    /// the client has to take it.
    Stalled,
}

/// How long, and for how many bytes, a closing connection with unread
/// input lingers (nginx's lingering_time is 30 s; a client that keeps
/// sending is not waited for that long here).
const LINGER_MS: u64 = 2000;
const LINGER_MAX_BYTES: usize = 1 << 20;

mod closing;
pub(crate) mod edge;

/// A client connection and its buffers.
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
    phase: Phase,
    input: Input,
    output: Output,
    pub deadline_ms: u64,
}

/// What the loop should do with a connection after it worked.
#[derive(PartialEq, Eq, Debug)]
pub enum Next {
    Keep,
    Close,
    /// Requests are buffered: hand the connection to an application thread.
    Dispatch,
}

/// How answering the next buffered request went.
enum Served {
    /// Answered; the connection stays open for the next one.
    KeepAlive,
    /// Answered (or refused); the connection closes after the answer.
    Close { unread_input: bool },
    /// The buffered bytes are not a whole head yet.
    Incomplete,
}

impl Conn {
    pub fn new(stream: Stream, listener: usize, peer: Peer, now_ms: u64, shared: &Shared) -> Conn {
        let mut conn = Conn::bare(stream, peer);
        conn.listener = listener;
        conn.rbuf = Vec::new();
        conn.deadline_ms = now_ms + shared.settings.header_timeout_ms;
        if shared.settings.proxy_protocol != Versions::Off {
            conn.expect_proxy_header(now_ms, shared.settings);
        }
        conn
    }

    /// A connection another worker handed over: its unsent answers go out
    /// first, its unparsed bytes are parsed as if just read.
    pub fn adopt(arrival: Arrival, now_ms: u64, shared: &mut Shared) -> Conn {
        let settings = shared.settings;
        let stream = Stream::from_fd(arrival.fd, arrival.kind);
        let peer = edge::adopted_peer(&stream, &arrival.peer_addr, arrival.peer_port, settings);
        let mut conn = Conn::new(stream, arrival.listener as usize, peer, now_ms, shared);
        conn.phase = Phase::Idle;
        if !arrival.input.is_empty() {
            conn.rbuf = shared.take_read_buffer();
            if conn.rbuf.len() < arrival.input.len() {
                conn.rbuf.resize(arrival.input.len(), 0);
            }
            conn.rbuf[..arrival.input.len()].copy_from_slice(&arrival.input);
            conn.rend = arrival.input.len();
            conn.phase = Phase::Head;
        } else {
            conn.deadline_ms = now_ms + settings.keep_alive_ms;
        }
        if !arrival.output.is_empty() {
            conn.wbuf = arrival.output;
        }
        conn
    }

    /// The connection as it would travel to another worker, if it can move
    /// now: between requests or part-way through a head, nothing
    /// half-answered, and the client still there.
    pub fn passage(&self) -> Option<Passage<'_>> {
        if !matches!(self.phase, Phase::Idle | Phase::Head) || self.input == Input::Eof {
            return None;
        }
        Some(Passage {
            fd: self.stream.fd(),
            kind: self.stream.kind(),
            listener: self.listener as u16,
            peer_addr: self.peer.addr(),
            peer_port: self.peer.port,
            output: &self.wbuf[self.wpos..],
            input: &self.rbuf[self.rstart..self.rend],
        })
    }

    /// Request bytes received and not yet answered wait in user space (a
    /// pipelined request, or the start of one).
    pub fn holds_input(&self) -> bool {
        self.rend > self.rstart
    }

    /// A connection with no worker around it (the bench harness's).
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
            input: Input::Open,
            output: Output::Flowing,
            deadline_ms: 0,
        }
    }

    /// The bench harness: `input` as if just read.
    pub(crate) fn load_input(&mut self, input: &[u8]) {
        self.rbuf[..input.len()].copy_from_slice(input);
        (self.rstart, self.rend) = (0, input.len());
        self.input = Input::Open;
    }

    /// The bench harness: answer what was loaded; the answer's bytes.
    pub(crate) fn process_for_bench(&mut self, cx: &mut Cx<'_>) -> &[u8] {
        self.wbuf.clear();
        self.wpos = 0;
        self.phase = Phase::Idle;
        self.process(cx);
        &self.wbuf
    }

    /// Answers go out and the connection ends: its deadline is only the
    /// time to send them.
    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. } | Phase::Lingering { .. })
    }

    /// The socket is readable (or writable): do all the work there is. With
    /// `inline` false, buffered requests are not answered here but handed
    /// back as [`Next::Dispatch`].
    pub fn on_ready(&mut self, shared: &mut Shared, inline: bool) -> Next {
        if let Phase::Lingering { .. } = self.phase {
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
            if let Phase::Proxy { allowed } = self.phase
                && self
                    .take_proxy_header(allowed, shared.now_ms, shared.settings)
                    .is_err()
            {
                return Next::Close;
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
                shared.now_ms = cx.now_ms;
                continue;
            }
            if drained || self.ends_here() {
                break;
            }
            drained = match self.read_some(shared) {
                Ok(drained) => drained,
                Err(_) => return Next::Close,
            };
        }
        if self.ends_here() {
            return self.closing_state(shared);
        }
        if self.rstart == self.rend {
            self.release_read_buffer(shared);
        }
        Next::Keep
    }

    /// Nothing more will be read: the connection closes once its answers
    /// are out.
    fn ends_here(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. }) || self.input == Input::Eof
    }

    fn has_request_bytes(&self) -> bool {
        self.rstart < self.rend
            && self.input != Input::Incomplete
            && !matches!(self.phase, Phase::Closing { .. } | Phase::Proxy { .. })
    }

    /// On an application thread: answer the buffered requests and send what
    /// can be sent without waiting.
    pub fn serve(&mut self, cx: &mut Cx<'_>) {
        self.process(cx);
        if self
            .write_pending(cx.now_ms, cx.settings.io_timeout_ms)
            .is_err()
        {
            self.phase = Phase::Closing {
                unread_input: false,
            };
            self.input = Input::Eof;
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
            self.make_room(shared.settings);
        }
        let space = self.rbuf.len() - self.rend;
        loop {
            match self.stream.read(&mut self.rbuf[self.rend..]) {
                Ok(0) => {
                    self.input = Input::Eof;
                    return Ok(true);
                }
                Ok(n) => {
                    self.rend += n;
                    self.input = Input::Open;
                    return Ok(n < space);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The read buffer is full: move the unconsumed bytes to its start, or,
    /// for a head larger than the buffer, grow it up to what the limits
    /// allow (the parser refuses anything beyond).
    fn make_room(&mut self, settings: &Settings) {
        if self.rstart > 0 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            (self.rstart, self.rend) = (0, self.rend - self.rstart);
        } else {
            let max = settings.limits.max_head_bytes() + READ_BUFFER_SIZE;
            let grown = (self.rbuf.len() * 2).min(max.max(self.rbuf.len() + 1));
            self.rbuf.resize(grown, 0);
        }
    }

    /// Answer every complete request in the buffer, in order.
    fn process(&mut self, cx: &mut Cx<'_>) {
        while self.rstart < self.rend && !matches!(self.phase, Phase::Closing { .. }) {
            if self.wbuf.len() - self.wpos > MAX_PENDING_OUTPUT {
                // Answers pile up unread: the rest waits for the client.
                return;
            }
            if self.phase == Phase::Idle {
                self.phase = Phase::Head;
                self.deadline_ms = cx.now_ms + cx.settings.header_timeout_ms;
            }
            match self.answer_next(cx) {
                Served::KeepAlive => {
                    // The next request's head timer starts now.
                    self.phase = Phase::Idle;
                    self.deadline_ms = cx.now_ms + cx.settings.keep_alive_ms;
                }
                Served::Close { unread_input } => {
                    self.phase = Phase::Closing { unread_input };
                    return;
                }
                Served::Incomplete => {
                    if self.input == Input::Eof {
                        // The client closed mid-head: nothing more comes.
                        self.phase = Phase::Closing {
                            unread_input: false,
                        };
                    } else {
                        self.input = Input::Incomplete;
                    }
                    return;
                }
            }
        }
        if self.rstart == self.rend {
            (self.rstart, self.rend) = (0, 0);
        }
    }

    /// Parse the next head, hand the request to the application, log it,
    /// and keep what follows it for the next one.
    // Inlined into the loop over buffered requests: out of line it costs a
    // call and the spills around it on every request (callgrind, see
    // worker/benches/dispatch.rs).
    #[inline(always)]
    fn answer_next(&mut self, cx: &mut Cx<'_>) -> Served {
        let settings = cx.settings;
        let scratch = &mut *cx.scratch;
        let buf = &mut self.rbuf[self.rstart..self.rend];
        // Matched by reference: the head is used where the parser built it,
        // not moved out of the result (it is some twenty words).
        let parsed = parse::next_head(buf, &settings.limits, &mut scratch.fields);
        let head = match &parsed {
            Ok(Some(head)) => head,
            Ok(None) => return Served::Incomplete,
            &Err(e) => return self.refuse_head(cx, e),
        };
        if edge::scheme_conflict(&self.peer, head) {
            let method_is_head = head.is_head_method();
            return self.refuse_scheme(cx, method_is_head);
        }
        let started = log_clock(cx.access_log);
        let path = parse::decoded_path(head.path, &mut scratch.path);
        let mut room = edge::ClientText::new();
        let client_addr = edge::client_addr(
            &self.peer,
            head,
            &scratch.fields,
            &settings.forwarded_allow,
            &mut room,
        );
        let request = request_view(
            head,
            path,
            (&self.peer, client_addr),
            &settings.listeners[self.listener],
            &scratch.fields,
        );
        let setup = CallSetup {
            io: CallIo {
                fd: self.stream.fd(),
                timeout_ms: settings.io_timeout_ms,
                slot: settings.slot,
                deadline_ms: cx.now_ms.saturating_add(settings.io_timeout_ms),
            },
            input: head.rest,
            spill: &mut scratch.spill,
            framing: head.framing,
            body_limit: settings.limits.request_body,
            expect_continue: head.expect_continue,
            out: &mut self.wbuf,
            out_pos: &mut self.wpos,
            date: cx.date,
            method_is_head: head.is_head_method(),
            version: head.version,
            keep_alive: head.keep_alive && !cx.draining,
            capture: capture(cx.access_log, &mut scratch.log.response),
        };
        let outcome = call_app(settings, setup, head, &request, cx.now_ms);
        // The call may have taken long: deadlines from here on count from
        // now, not from when the request came in.
        cx.now_ms = monotonic_ms();
        // --timeout is per request: a pipeline of slow requests is not one
        // hung request.
        settings.slot.beat(cx.now_ms);
        settings.slot.request_finished();
        if let Some(log) = cx.access_log {
            let logged = Logged {
                peer: &self.peer,
                client_addr,
                listener: &settings.listeners[self.listener],
                head,
                path,
                fields: &scratch.fields,
                started,
            };
            log_access(log, &mut scratch.log, logged, &outcome);
        }
        let used = head.len + outcome.input_used;
        self.carry_over(used, &mut scratch.spill);
        if outcome.keep_alive {
            Served::KeepAlive
        } else {
            Served::Close {
                unread_input: outcome.body_unread,
            }
        }
    }

    /// What follows the request: the rest of the buffer, or, if the body was
    /// read from the socket, what the spill holds past it.
    fn carry_over(&mut self, used: usize, spill: &mut crate::body::Spill) {
        let pending = spill.pending();
        if pending.is_empty() {
            self.rstart += used;
            return;
        }
        if self.rbuf.len() < pending.len() {
            self.rbuf.resize(pending.len(), 0);
        }
        self.rbuf[..pending.len()].copy_from_slice(pending);
        (self.rstart, self.rend) = (0, pending.len());
        spill.clear();
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
                    if progressed || self.output == Output::Flowing {
                        self.deadline_ms = now_ms + io_timeout_ms;
                        self.output = Output::Stalled;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output = Output::Flowing;
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
        if let Phase::Proxy { .. } = self.phase {
            self.log_missing_proxy_header();
            return;
        }
        if self.phase == Phase::Head && self.rstart < self.rend && self.wpos == self.wbuf.len() {
            let mut out = Vec::new();
            let method_is_head = parse::is_head_request(&self.rbuf[self.rstart..self.rend]);
            response::error(&mut out, 408, shared.date.line(), method_is_head);
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
