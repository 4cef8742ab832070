//! Reading a request body during a call: the bytes already buffered after
//! the head first, then the socket, decoded by the request's framing
//! (RFC 9112 §6.3: Content-Length, or chunked by `chunked`). It owns the
//! input cursor and the spill; it answers `Expect: 100-continue` through
//! the encoder the first time the body is wanted, and skips what the
//! application left unread so that the connection can go on.

use crate::blocking::CallIo;
use crate::chunked::ChunkedDecoder;
use crate::encode::Encoder;
use crate::parse::Framing;
use crate::scoreboard::monotonic_ms;

/// Unread request body the server will read and discard to keep a
/// connection alive; past this the connection is closed instead.
pub const MAX_DRAIN_BYTES: u64 = 1 << 20;
/// The buffer that discarded body bytes are read into.
const DRAIN_BUFFER_SIZE: usize = 8192;

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
    /// The server's answer, if the client is still there to get one.
    pub fn status(self) -> Option<u16> {
        match self {
            BodyError::TooLarge => Some(413),
            BodyError::Malformed => Some(400),
            BodyError::TimedOut => Some(408),
            BodyError::Gone => None,
        }
    }

    fn from_io(err: &std::io::Error) -> BodyError {
        if err.kind() == std::io::ErrorKind::TimedOut {
            BodyError::TimedOut
        } else {
            BodyError::Gone
        }
    }
}

/// Where the body stands.
enum BodyState {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    Done,
    /// Reading failed: every later read fails the same way.
    Failed(BodyError),
}

/// The bytes already received: those after the head in the read buffer,
/// then what the spill holds.
struct Input<'a> {
    buffered: &'a [u8],
    pos: usize,
    spill: &'a mut Spill,
}

impl Input<'_> {
    fn available(&self) -> &[u8] {
        if self.pos < self.buffered.len() {
            &self.buffered[self.pos..]
        } else {
            self.spill.pending()
        }
    }

    fn consume(&mut self, n: usize) {
        if self.pos < self.buffered.len() {
            self.pos += n;
        } else {
            self.spill.start += n;
        }
    }

    /// Read more from the socket into the spill.
    fn refill(&mut self, io: &CallIo) -> Result<(), BodyError> {
        self.spill.clear();
        let n = io
            .read(&mut self.spill.buf)
            .map_err(|e| BodyError::from_io(&e))?;
        if n == 0 {
            return Err(BodyError::Gone);
        }
        self.spill.end = n;
        Ok(())
    }
}

/// The request body of one call.
pub struct BodyReader<'a> {
    input: Input<'a>,
    state: BodyState,
    /// Decoded bytes handed to the application so far.
    read: u64,
    /// `--limit-request-body` (0: none), for chunked bodies; a declared
    /// length was checked by the parser.
    limit: u64,
    /// `Expect: 100-continue` is still to be answered.
    continue_owed: bool,
}

impl<'a> BodyReader<'a> {
    /// `buffered`: the bytes after the head in the read buffer.
    pub fn new(
        buffered: &'a [u8],
        spill: &'a mut Spill,
        framing: Framing,
        limit: u64,
        expect_continue: bool,
    ) -> BodyReader<'a> {
        let state = match framing {
            Framing::None => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
        };
        BodyReader {
            continue_owed: expect_continue && !matches!(state, BodyState::Done),
            input: Input {
                buffered,
                pos: 0,
                spill,
            },
            state,
            read: 0,
            limit,
        }
    }

    /// Every byte of the body was read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// Why reading failed, if it did.
    pub fn error(&self) -> Option<BodyError> {
        match self.state {
            BodyState::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Record a failure found outside a read (a drain past its deadline).
    pub fn fail(&mut self, error: BodyError) {
        self.state = BodyState::Failed(error);
    }

    /// Decoded body bytes handed to the application (or drained) so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// How many bytes after the head the body took in the read buffer.
    pub fn buffered_used(&self) -> usize {
        self.input.pos
    }

    /// Read decoded body bytes into `buf`: 0 at the end of the body.
    pub fn read(
        &mut self,
        buf: &mut [u8],
        io: &CallIo,
        enc: &mut Encoder<'_>,
    ) -> Result<usize, BodyError> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let result = match self.state {
            BodyState::Length(remaining) => self.read_length(remaining, buf, io, enc),
            BodyState::Chunked(_) => self.read_chunked(buf, io, enc),
            BodyState::Done | BodyState::Failed(_) => Ok(0),
        };
        if let Err(e) = result {
            self.state = BodyState::Failed(e);
        }
        result
    }

    fn read_length(
        &mut self,
        remaining: u64,
        buf: &mut [u8],
        io: &CallIo,
        enc: &mut Encoder<'_>,
    ) -> Result<usize, BodyError> {
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let avail = self.input.available();
        let n = if avail.is_empty() {
            // Nothing buffered: read straight into the caller's buffer,
            // never past the body's end.
            self.send_continue(enc)?;
            let n = io
                .read(&mut buf[..want])
                .map_err(|e| BodyError::from_io(&e))?;
            if n == 0 {
                return Err(BodyError::Gone);
            }
            n
        } else {
            let n = want.min(avail.len());
            buf[..n].copy_from_slice(&avail[..n]);
            self.input.consume(n);
            n
        };
        let left = remaining - n as u64;
        self.state = if left == 0 {
            BodyState::Done
        } else {
            BodyState::Length(left)
        };
        self.read += n as u64;
        Ok(n)
    }

    fn read_chunked(
        &mut self,
        buf: &mut [u8],
        io: &CallIo,
        enc: &mut Encoder<'_>,
    ) -> Result<usize, BodyError> {
        loop {
            if self.input.available().is_empty() {
                self.send_continue(enc)?;
                self.input.refill(io)?;
            }
            let BodyState::Chunked(decoder) = &mut self.state else {
                return Ok(0);
            };
            let (used, made) = decoder
                .decode(self.input.available(), buf)
                .map_err(|_| BodyError::Malformed)?;
            let done = decoder.is_done();
            self.input.consume(used);
            self.read += made as u64;
            if self.limit != 0 && self.read > self.limit {
                return Err(BodyError::TooLarge);
            }
            if done {
                self.state = BodyState::Done;
            }
            if made > 0 || done {
                return Ok(made);
            }
        }
    }

    /// Answer `Expect: 100-continue` the first time the body is wanted
    /// (RFC 9110 §10.1.1).
    fn send_continue(&mut self, enc: &mut Encoder<'_>) -> Result<(), BodyError> {
        if !self.continue_owed {
            return Ok(());
        }
        self.continue_owed = false;
        enc.send_continue().map_err(|e| BodyError::from_io(&e))
    }

    /// Whether the unread body can be skipped, before the answer or after
    /// it: the client is sending it (no 100-continue awaited) and it is
    /// small enough, as far as can be known before reading it.
    pub fn fits_drain(&self) -> bool {
        match self.state {
            BodyState::Done | BodyState::Failed(_) => false,
            BodyState::Length(n) => !self.continue_owed && n <= MAX_DRAIN_BYTES,
            BodyState::Chunked(_) => !self.continue_owed,
        }
    }

    /// Read and drop what is left of the body: `Ok(false)` if more than
    /// MAX_DRAIN_BYTES is left, which is not read. `deadline_ms` bounds the
    /// whole drain: a client trickling its body holds the worker no longer
    /// (a wait that sees bytes does not time out).
    pub fn drain(
        &mut self,
        io: &CallIo,
        enc: &mut Encoder<'_>,
        deadline_ms: u64,
    ) -> Result<bool, BodyError> {
        let mut sink = [0u8; DRAIN_BUFFER_SIZE];
        let mut drained = 0u64;
        while !self.is_done() {
            if monotonic_ms() >= deadline_ms {
                return Err(BodyError::TimedOut);
            }
            match self.read(&mut sink, io, enc)? {
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
