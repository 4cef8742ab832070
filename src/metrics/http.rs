//! The metrics process's HTTP/1.1 server: one thread, non-blocking sockets
//! and poll(2), a bounded number of connections, each with a deadline.
//! Heads are parsed by the workers' own strict parser; anything malformed
//! gets a `400` and the connection closes. Only `GET` and `HEAD` of a few
//! paths are served, without a body.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use socket2::Socket;

use rgun_worker::parse::{self, Framing, Limits};
use rgun_worker::scoreboard::monotonic_ms;

/// The most scrapers and browsers served at once. A new one past it takes
/// the place of the one waiting longest for its request (a slow sender, or
/// an idle keep-alive connection), so that a probe is never locked out.
const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send a whole head, and an idle keep-alive
/// connection is kept (Gunicorn's `keepalive` is 2 s; a status page polls
/// every 2 s, so a little more).
const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// The largest head read before it is refused.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The parser's limits: Gunicorn's defaults.
const LIMITS: Limits = Limits {
    request_line: 4094,
    request_fields: 100,
    request_field_size: 8190,
    request_body: 0,
};
/// A read's size.
const READ_CHUNK: usize = 4096;

/// What a handler answers.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra header lines, each ending in CRLF.
    pub extra: &'static str,
}

/// What a handler is asked: only the method (GET or HEAD) and the path.
pub struct Asked<'a> {
    pub path: &'a [u8],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    KeepAlive,
    Close,
}

enum State {
    Reading,
    Writing { then: Then },
}

struct Conn {
    socket: Socket,
    input: Vec<u8>,
    output: Vec<u8>,
    sent: usize,
    deadline_ms: u64,
    state: State,
}

/// The listener and the connections being served.
pub struct Server {
    listener: RawFd,
    conns: Vec<Conn>,
    fields: Vec<rgun_gateway::ffi::Header>,
}

impl Server {
    pub fn new(listener: RawFd) -> Server {
        Server {
            listener,
            conns: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// Wait up to `max_wait_ms` for something to do, and do it.
    pub fn turn(&mut self, max_wait_ms: u64, handle: &mut dyn FnMut(&Asked<'_>) -> Answer) {
        let now = monotonic_ms();
        self.expire(now);
        let wait = self
            .conns
            .iter()
            .map(|c| c.deadline_ms.saturating_sub(now))
            .fold(max_wait_ms, u64::min);
        let ready = self.wait(wait);
        // Newest first, so that removing one keeps the others' indices.
        for i in (0..ready.len().saturating_sub(1)).rev() {
            if ready[i + 1] && !self.drive(i, handle) {
                self.conns.swap_remove(i);
            }
        }
        // After the connections were driven: accepting may close one.
        if ready.first().copied().unwrap_or(false) {
            self.accept();
        }
    }

    /// Whether a connection waits for its request (and may make room).
    fn has_waiting(&self) -> bool {
        self.conns.iter().any(|c| matches!(c.state, State::Reading))
    }

    /// Make room for a new connection: close the one that has waited
    /// longest for its request, if one waits.
    fn evict_one(&mut self) {
        let oldest = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.state, State::Reading))
            .min_by_key(|(_, c)| c.deadline_ms)
            .map(|(i, _)| i);
        if let Some(i) = oldest {
            self.conns.swap_remove(i);
        }
    }

    fn expire(&mut self, now: u64) {
        self.conns.retain(|c| c.deadline_ms > now);
    }

    /// Which descriptors are ready: the listener, then each connection.
    fn wait(&self, wait_ms: u64) -> Vec<bool> {
        // SAFETY: the listener and the sockets stay open for this call.
        let borrow = |fd: RawFd| unsafe { BorrowedFd::borrow_raw(fd) };
        let listen_flags = if self.conns.len() < MAX_CONNECTIONS || self.has_waiting() {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        let mut fds = vec![PollFd::new(borrow(self.listener), listen_flags)];
        for conn in &self.conns {
            let flags = match conn.state {
                State::Reading => PollFlags::POLLIN,
                State::Writing { .. } => PollFlags::POLLOUT,
            };
            fds.push(PollFd::new(borrow(conn.socket.as_raw_fd()), flags));
        }
        let timeout =
            PollTimeout::try_from(wait_ms.min(i32::MAX as u64) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) => fds
                .iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect(),
            Err(Errno::EINTR) => vec![false; fds.len()],
            Err(e) => {
                log::error!("metrics: waiting for scrapes failed: {e}");
                vec![false; fds.len()]
            }
        }
    }

    fn accept(&mut self) {
        loop {
            if self.conns.len() >= MAX_CONNECTIONS && !self.has_waiting() {
                return;
            }
            // SAFETY: accept4 on our listening socket with no address
            // buffer; the result is checked before use.
            let fd = unsafe {
                libc::accept4(
                    self.listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                return;
            }
            if self.conns.len() >= MAX_CONNECTIONS {
                self.evict_one();
            }
            self.conns.push(Conn {
                // SAFETY: accept4 returned a new descriptor this process owns.
                socket: unsafe { Socket::from_raw_fd(fd) },
                input: Vec::new(),
                output: Vec::new(),
                sent: 0,
                deadline_ms: monotonic_ms() + REQUEST_TIMEOUT_MS,
                state: State::Reading,
            });
        }
    }

    /// Read, answer or write on connection `i`: `false` when it is done.
    fn drive(&mut self, i: usize, handle: &mut dyn FnMut(&Asked<'_>) -> Answer) -> bool {
        let conn = &mut self.conns[i];
        match conn.state {
            State::Reading => {
                let mut chunk = [0u8; READ_CHUNK];
                match (&conn.socket).read(&mut chunk) {
                    Ok(0) => return false,
                    Ok(n) => conn.input.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
                    Err(_) => return false,
                }
                let then = answer(conn, &mut self.fields, handle);
                match then {
                    Some(then) => conn.state = State::Writing { then },
                    None => return true,
                }
                write(conn)
            }
            State::Writing { .. } => write(conn),
        }
    }
}

/// Parse what `conn` holds; when a whole head (or garbage) is there, put
/// the answer in its output and say what follows it.
fn answer(
    conn: &mut Conn,
    fields: &mut Vec<rgun_gateway::ffi::Header>,
    handle: &mut dyn FnMut(&Asked<'_>) -> Answer,
) -> Option<Then> {
    let input_len = conn.input.len();
    let (answer, head_only, then) = match parse::next_head(&mut conn.input, &LIMITS, fields) {
        Ok(None) if input_len <= MAX_HEAD_BYTES => return None,
        Ok(Some(head)) if head.framing != Framing::None => (
            refusal(400, "a request body is not accepted here\n"),
            false,
            Then::Close,
        ),
        Ok(Some(head)) => {
            let is_head = head.method == b"HEAD";
            let extra_bytes = head.rest.len();
            let answer = if head.method == b"GET" || is_head {
                handle(&Asked { path: head.path })
            } else {
                Answer {
                    extra: "Allow: GET, HEAD\r\n",
                    ..refusal(405, "only GET and HEAD\n")
                }
            };
            // Pipelined requests are not served: the connection closes
            // after the first answer instead.
            let then = if head.keep_alive && extra_bytes == 0 {
                Then::KeepAlive
            } else {
                Then::Close
            };
            (answer, is_head, then)
        }
        Ok(None) | Err(_) => (refusal(400, "bad request\n"), false, Then::Close),
    };
    conn.input.clear();
    conn.output = encode(&answer, head_only, then);
    conn.sent = 0;
    conn.deadline_ms = monotonic_ms() + REQUEST_TIMEOUT_MS;
    Some(then)
}

fn refusal(status: u16, text: &str) -> Answer {
    Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: text.as_bytes().to_vec(),
        extra: "",
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn encode(answer: &Answer, head_only: bool, then: Then) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nServer: rgun-metrics\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}",
        answer.status,
        reason(answer.status),
        answer.content_type,
        answer.body.len(),
        answer.extra,
    )
    .into_bytes();
    if then == Then::Close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&answer.body);
    }
    out
}

/// Send what is pending: `false` when the connection is done with.
fn write(conn: &mut Conn) -> bool {
    while conn.sent < conn.output.len() {
        match (&conn.socket).write(&conn.output[conn.sent..]) {
            Ok(n) => conn.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    match conn.state {
        State::Writing {
            then: Then::KeepAlive,
        } => {
            conn.state = State::Reading;
            conn.output = Vec::new();
            true
        }
        _ => {
            let _ = conn.socket.shutdown(std::net::Shutdown::Write);
            false
        }
    }
}
