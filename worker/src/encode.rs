//! Writing the answer of one call: the head from the application's status
//! and headers (checked, never sent when invalid), the framing the server
//! chooses (RFC 9112 §6: Content-Length when known, chunked on HTTP/1.1,
//! close-delimited on HTTP/1.0), the body pieces in that framing, and the
//! terminator. Output collects in the connection's write buffer and goes
//! out when a piece must not wait (PEP 3333) or the buffer is flushed.

use std::io;
use std::os::fd::RawFd;

use rgun_gateway::grammar::{self, HeaderLines};

use crate::abort;
use crate::blocking::CallIo;
use crate::parse::Version;
use crate::response;

/// The most one sendfile(2) call is asked to send.
const SENDFILE_MAX_CHUNK: u64 = 1 << 30;
/// `Connection: close`, added to a head that turns out to end the connection.
const CONNECTION_CLOSE: &[u8] = b"Connection: close\r\n";

/// How the answer's body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFraming {
    /// HEAD, 204, 304: whatever the application writes is dropped.
    NoBody,
    /// This many bytes are still owed.
    Length(u64),
    Chunked,
    /// Until the connection closes (HTTP/1.0 without a length).
    Close,
}

/// Where the answer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    NotStarted,
    /// The head is written, not sent: the server may still replace it.
    Buffered(OutFraming),
    /// Part of the answer is on the wire.
    Committed(OutFraming),
    /// The application's answer is broken (refused, or its file ended
    /// early); `sent`: part of it is on the wire already.
    Failed {
        sent: bool,
    },
}

/// Why the server refused what the application asked.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
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
    AlreadyCommitted,
    /// The client went away or stopped reading: nothing more can be sent.
    #[error("the client is gone")]
    ClientGone,
    #[error("body written before start_response")]
    NotStarted,
    #[error("body longer than the Content-Length it declared")]
    TooLong,
    #[error("sending a file failed: {0}")]
    File(String),
}

/// How a call starts its answer.
pub struct EncoderSetup<'a> {
    pub out: &'a mut Vec<u8>,
    /// `out[*out_pos..]` is not sent yet.
    pub out_pos: &'a mut usize,
    pub io: CallIo,
    /// The `Date` field line (`DateCache::line`), CRLF included.
    pub date: &'a [u8],
    pub method_is_head: bool,
    pub version: Version,
    /// The request allows the connection to stay open.
    pub keep_alive: bool,
}

/// The answer of one call, written into the connection's output.
pub struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    out_pos: &'a mut usize,
    io: CallIo,
    /// The `Date` field line (`DateCache::line`), CRLF included.
    date: &'a [u8],
    method_is_head: bool,
    version: Version,
    /// Where this answer's head starts in `out` (earlier pipelined answers
    /// may precede it, unsent).
    answer_start: usize,
    /// The bytes of the written head, from `answer_start`.
    head_len: usize,
    state: Answer,
    keep_alive: bool,
    status: u16,
    body_sent: u64,
    /// TCP_NODELAY is set: the answer goes in pieces.
    nodelay: bool,
}

impl<'a> Encoder<'a> {
    pub fn new(setup: EncoderSetup<'a>) -> Encoder<'a> {
        Encoder {
            answer_start: setup.out.len(),
            out: setup.out,
            out_pos: setup.out_pos,
            io: setup.io,
            date: setup.date,
            method_is_head: setup.method_is_head,
            version: setup.version,
            head_len: 0,
            state: Answer::NotStarted,
            keep_alive: setup.keep_alive,
            status: 0,
            body_sent: 0,
            nodelay: false,
        }
    }

    /// Answers to earlier pipelined requests are still unsent: an abort
    /// answer must not be written in their place.
    pub fn earlier_answers_unsent(&self) -> bool {
        *self.out_pos < self.answer_start
    }

    pub fn is_started(&self) -> bool {
        !matches!(self.state, Answer::NotStarted)
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.state, Answer::Failed { .. })
    }

    /// Part of the answer is on the wire: the server cannot replace it.
    pub fn is_committed(&self) -> bool {
        matches!(
            self.state,
            Answer::Committed(_) | Answer::Failed { sent: true }
        )
    }

    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn body_sent(&self) -> u64 {
        self.body_sent
    }

    /// The bytes of the answer's head (for a server's error answer, its
    /// whole text).
    pub fn head_bytes(&self) -> u64 {
        self.head_len as u64
    }

    /// The application's answer is broken: it will not be completed.
    pub fn fail(&mut self) {
        self.state = Answer::Failed {
            sent: self.is_committed(),
        };
    }

    fn framing_mut(&mut self) -> Option<&mut OutFraming> {
        match &mut self.state {
            Answer::Buffered(f) | Answer::Committed(f) => Some(f),
            Answer::NotStarted | Answer::Failed { .. } => None,
        }
    }

    fn mark_committed(&mut self) {
        if let Answer::Buffered(f) = self.state {
            self.state = Answer::Committed(f);
            abort::commit();
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
            if *self.out_pos > self.answer_start {
                self.mark_committed();
            }
        }
        Ok(())
    }

    /// Send everything written so far: the answer is committed.
    pub fn flush_all(&mut self) -> io::Result<()> {
        let end = self.out.len();
        self.flush_to(end)?;
        self.out.clear();
        *self.out_pos = 0;
        self.answer_start = 0;
        self.mark_committed();
        Ok(())
    }

    /// The interim `100 Continue` (RFC 9110 §10.1.1), sent now: before the
    /// final answer, even if that is already written but not sent.
    pub fn send_continue(&mut self) -> io::Result<()> {
        if self.is_committed() {
            // The final answer is on the wire: an interim 100 may not
            // follow it (RFC 9110 §15.2).
            return Ok(());
        }
        self.out.splice(
            self.answer_start..self.answer_start,
            response::CONTINUE.iter().copied(),
        );
        self.answer_start += response::CONTINUE.len();
        let end = self.answer_start;
        self.flush_to(end)
    }

    /// Check the application's status and headers and write the head.
    /// `whole_body`: the length of a body given all at once (`respond`).
    /// `unread_ok`: the request body is read, or can be skipped.
    pub fn start_response(
        &mut self,
        status: u16,
        reason: &[u8],
        headers: HeaderLines<'_>,
        whole_body: Option<u64>,
        unread_ok: bool,
    ) -> Result<(), Refusal> {
        if self.is_committed() {
            return Err(Refusal::AlreadyCommitted);
        }
        if !(200..=599).contains(&status) {
            return Err(Refusal::Status(status));
        }
        if !grammar::is_field_value(reason) {
            return Err(Refusal::Reason);
        }
        // A second call replaces the first head (PEP 3333's exc_info).
        self.out.truncate(self.answer_start);
        let failed = self.is_failed();
        if !failed {
            self.state = Answer::NotStarted;
        }
        match self.write_head(status, reason, headers, whole_body, unread_ok) {
            Ok(framing) => {
                if !failed {
                    self.state = Answer::Buffered(framing);
                }
                Ok(())
            }
            Err(refusal) => {
                self.out.truncate(self.answer_start);
                Err(refusal)
            }
        }
    }

    fn write_head(
        &mut self,
        status: u16,
        reason: &[u8],
        headers: HeaderLines<'_>,
        whole_body: Option<u64>,
        unread_ok: bool,
    ) -> Result<OutFraming, Refusal> {
        // RFC 9110 §6.4.1: no body after HEAD, 204 or 304; §15.3.6: none
        // in a 205 either; §8.6: no Content-Length in a 204.
        let no_body = self.method_is_head || matches!(status, 204 | 205 | 304);
        response::status_line(self.out, status, reason);
        let fields = response::write_app_fields(self.out, headers, no_body, whole_body)?;
        if !fields.has_server {
            self.out.extend_from_slice(response::SERVER_HEADER);
        }
        if !fields.has_date {
            response::date_header(self.out, self.date);
        }
        let framing = self.write_framing(status, no_body, fields.declared_length, whole_body);
        // A connection stays open only if the next request can be found:
        // the client is not left waiting for a 100 and the unread body is
        // small enough to skip.
        self.keep_alive &= !fields.close && unread_ok && framing != OutFraming::Close;
        if !self.keep_alive {
            self.out.extend_from_slice(CONNECTION_CLOSE);
        } else if self.version == Version::Http10 {
            self.out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        self.head_len = self.out.len() - self.answer_start;
        self.status = status;
        Ok(framing)
    }

    /// Choose the body's framing and write the fields that state it.
    fn write_framing(
        &mut self,
        status: u16,
        no_body: bool,
        declared: Option<u64>,
        whole_body: Option<u64>,
    ) -> OutFraming {
        let out = &mut *self.out;
        if no_body {
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
        } else if let Some(n) = declared.or(whole_body) {
            response::content_length(out, n);
            OutFraming::Length(n)
        } else if self.version == Version::Http11 {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            OutFraming::Chunked
        } else {
            OutFraming::Close
        }
    }

    /// One piece of the body. Every piece but the last of a response whose
    /// length is known is sent before returning (PEP 3333: no delaying).
    pub fn write_body(&mut self, data: &[u8]) -> Result<(), Refusal> {
        let framing = *self.framing_mut().ok_or(Refusal::NotStarted)?;
        let flush = match framing {
            OutFraming::NoBody => {
                self.body_sent += data.len() as u64;
                return Ok(());
            }
            OutFraming::Length(remaining) => {
                let fits = data.len() as u64 <= remaining;
                let take = if fits { data.len() } else { remaining as usize };
                self.out.extend_from_slice(&data[..take]);
                self.body_sent += take as u64;
                let left = remaining - take as u64;
                self.set_framing(OutFraming::Length(left));
                if !fits {
                    return Err(Refusal::TooLong);
                }
                left > 0
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
            self.flush_all().map_err(|_| Refusal::ClientGone)?;
        }
        Ok(())
    }

    fn set_framing(&mut self, framing: OutFraming) {
        if let Some(f) = self.framing_mut() {
            *f = framing;
        }
    }

    /// A piece of the body from an open file: the head and anything pending
    /// go out first, then the file with sendfile(2).
    pub fn send_file(&mut self, fd: RawFd, offset: i64, len: i64) -> Result<(), Refusal> {
        let framing = *self.framing_mut().ok_or(Refusal::NotStarted)?;
        let len = if len >= 0 {
            len as u64
        } else {
            file_size(fd)?.saturating_sub(offset.max(0) as u64)
        };
        let mut want = len;
        match framing {
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
        self.flush_all().map_err(|_| Refusal::ClientGone)?;
        self.sendfile(fd, offset, want)?;
        self.body_sent += want;
        match framing {
            OutFraming::Length(remaining) => {
                self.set_framing(OutFraming::Length(remaining - want));
                if want < len {
                    return Err(Refusal::TooLong);
                }
            }
            OutFraming::Chunked => self.out.extend_from_slice(b"\r\n"),
            _ => {}
        }
        Ok(())
    }

    /// `want` bytes of `fd` from `offset`, straight to the socket.
    fn sendfile(&mut self, fd: RawFd, offset: i64, want: u64) -> Result<(), Refusal> {
        let mut off = offset as libc::off_t;
        let mut left = want;
        while left > 0 {
            let chunk = left.min(SENDFILE_MAX_CHUNK) as usize;
            // SAFETY: sendfile between two descriptors this call owns for
            // its duration, with a valid offset pointer.
            let n = unsafe { libc::sendfile(self.io.fd, fd, &mut off, chunk) };
            if n > 0 {
                left -= n as u64;
                continue;
            }
            if n == 0 {
                // The file is shorter than promised: the framing is broken.
                self.fail();
                return Err(Refusal::File("the file ended early".into()));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => self
                    .io
                    .wait(libc::POLLOUT)
                    .map_err(|_| Refusal::ClientGone)?,
                io::ErrorKind::Interrupted => {}
                _ => return Err(Refusal::File(err.to_string())),
            }
        }
        Ok(())
    }

    /// The application finished its answer: end the body as its framing
    /// says. A Content-Length not met closes the connection.
    pub fn finish_body(&mut self) {
        match self.framing_mut().copied() {
            Some(OutFraming::Chunked) => self.out.extend_from_slice(b"0\r\n\r\n"),
            Some(OutFraming::Length(left)) if left > 0 => {
                log::warn!(
                    "the application wrote {left} bytes less than its Content-Length; closing the connection"
                );
                self.keep_alive = false;
            }
            _ => {}
        }
    }

    /// The application's answer cannot be completed. If part of it is on
    /// the wire, all that can be done is to end the connection, so the
    /// client sees it cut short; otherwise it is replaced by the server's
    /// `status` (none: the client is gone and gets nothing).
    pub fn replace_with_error(&mut self, status: Option<u16>) {
        self.keep_alive = false;
        if self.is_committed() {
            return;
        }
        self.out.truncate(self.answer_start);
        if let Some(status) = status {
            response::error(self.out, status, self.date, self.method_is_head);
        }
        self.head_len = self.out.len() - self.answer_start;
        self.status = status.unwrap_or(0);
        self.body_sent = 0;
    }

    /// Turn a written, unsent head that keeps the connection into one that
    /// closes it, `Connection: close` added before its empty line. Only a
    /// chunked body, so HTTP/1.1, gets here: no `keep-alive` to replace.
    pub fn announce_close(&mut self) {
        if !self.keep_alive {
            return;
        }
        self.keep_alive = false;
        let fields_end = self.answer_start + self.head_len - 2;
        self.out
            .splice(fields_end..fields_end, CONNECTION_CLOSE.iter().copied());
    }

    /// The connection will not be kept, whatever the head said.
    pub fn end_connection(&mut self) {
        self.keep_alive = false;
    }
}

/// The size of an open file, for a send_file without a length.
fn file_size(fd: RawFd) -> Result<u64, Refusal> {
    // SAFETY: `stat` is plain data, valid when zeroed; fstat writes into it
    // for a descriptor the application passed.
    let (rc, st) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(fd, &mut st), st)
    };
    if rc != 0 {
        return Err(Refusal::File(io::Error::last_os_error().to_string()));
    }
    Ok(st.st_size as u64)
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
