//! A tiny raw HTTP/1.1 client, deliberately strict about what it reads (CRLF
//! line ends, a valid status line, well-formed chunked framing): a sloppy
//! answer fails the test instead of being forgiven. It never retries.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::Instant;

use super::sock_diag;
use super::{IO_TIMEOUT, POLL, WAIT};

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// How a response body was delimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body by definition (1xx, 204, 304, an answer to HEAD).
    None,
    ContentLength,
    /// Chunked; the sizes of the chunks as received.
    Chunked(Vec<usize>),
    /// Read until the server closed the connection.
    Close,
}

#[derive(Clone, Debug)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
    /// Every byte of this response as received, head and framed body.
    pub raw: Vec<u8>,
}

impl Response {
    /// The value of the only header called `name`; panics on duplicates.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.header_all(name);
        assert!(all.len() <= 1, "several {name} headers in {self:#?}");
        all.first().copied()
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether a `Connection` header lists `token`.
    pub fn connection_has(&self, token: &str) -> bool {
        self.header_all("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone())
            .unwrap_or_else(|_| panic!("body is not UTF-8: {:?}", self.body))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Assert the status, showing the whole response when it differs.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Response {
        assert_eq!(
            self.status,
            status,
            "unexpected status; response:\n{}",
            String::from_utf8_lossy(&self.raw)
        );
        self
    }
}

/// One client connection with its own read buffer, so that several
/// pipelined responses can be read off one stream.
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    pos: usize,
}

impl Conn {
    pub fn tcp(addr: SocketAddr) -> Conn {
        Conn::try_tcp(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    /// Connect, or say why not (for a server that may refuse).
    pub fn try_tcp(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn::new(Stream::Tcp(stream)))
    }

    pub fn unix(path: &Path) -> Conn {
        let stream =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Conn::new(Stream::Unix(stream))
    }

    fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
        }
    }

    pub fn tcp_stream(&self) -> &TcpStream {
        match &self.stream {
            Stream::Tcp(s) => s,
            Stream::Unix(_) => panic!("not a TCP connection"),
        }
    }

    /// Write all of `bytes` and flush (one write call when the kernel takes
    /// it all; with TCP_NODELAY it leaves at once).
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("write to the server: {e}"));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Send a request and read its response.
    pub fn request(&mut self, bytes: &[u8]) -> Response {
        self.send(bytes);
        self.read_response()
    }

    /// Read the next response (a 1xx interim answer counts as one).
    pub fn read_response(&mut self) -> Response {
        self.try_read_response(false)
            .unwrap_or_else(|e| panic!("reading a response: {e}"))
    }

    /// Read the next response to a HEAD request: a head, never a body.
    pub fn read_head_response(&mut self) -> Response {
        self.try_read_response(true)
            .unwrap_or_else(|e| panic!("reading a response: {e}"))
    }

    /// Read more bytes into the buffer; `Ok(false)` at end of stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    fn unexpected_eof(what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("connection closed {what}"),
        )
    }

    /// Take one CRLF-terminated line (without the CRLF), appending the raw
    /// bytes to `raw`.
    fn line(&mut self, raw: &mut Vec<u8>) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[self.pos..self.pos + i].to_vec();
                raw.extend_from_slice(&self.buf[self.pos..self.pos + i + 2]);
                self.pos += i + 2;
                return String::from_utf8(line).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("non-UTF-8 line: {e}"))
                });
            }
            if !self.fill()? {
                return Err(Conn::unexpected_eof(&format!(
                    "in the middle of a line; got {:?}",
                    String::from_utf8_lossy(&raw[..])
                )));
            }
        }
    }

    /// Take exactly `n` bytes.
    fn exact(&mut self, n: usize, raw: &mut Vec<u8>) -> io::Result<Vec<u8>> {
        while self.buf.len() - self.pos < n {
            if !self.fill()? {
                return Err(Conn::unexpected_eof(&format!(
                    "with {} of {n} body bytes read",
                    self.buf.len() - self.pos
                )));
            }
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        raw.extend_from_slice(&out);
        self.pos += n;
        Ok(out)
    }

    pub fn try_read_response(&mut self, to_head: bool) -> io::Result<Response> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
        let mut raw = Vec::new();
        let status_line = self.line(&mut raw)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        let code = parts.next().unwrap_or_default();
        let reason = parts.next().unwrap_or_default().to_string();
        if !(version == "HTTP/1.1" || version == "HTTP/1.0")
            || code.len() != 3
            || !code.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid(format!("bad status line {status_line:?}")));
        }
        let status: u16 = code.parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let line = self.line(&mut raw)?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("header line without a colon: {line:?}")))?;
            if name.is_empty() || name.bytes().any(|b| b <= b' ' || b >= 0x7f) {
                return Err(invalid(format!("bad header name in {line:?}")));
            }
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let mut response = Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            framing: Framing::None,
            raw: Vec::new(),
        };
        let bodiless = to_head || (100..200).contains(&status) || status == 204 || status == 304;
        if bodiless {
            // Nothing to read.
        } else if let Some(te) = response.header("transfer-encoding") {
            let last = te.rsplit(',').next().unwrap().trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(invalid(format!("response Transfer-Encoding {te:?}")));
            }
            let mut sizes = Vec::new();
            loop {
                let line = self.line(&mut raw)?;
                let hex = line.split(';').next().unwrap().trim();
                let size = usize::from_str_radix(hex, 16)
                    .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
                if size == 0 {
                    while !self.line(&mut raw)?.is_empty() {}
                    break;
                }
                sizes.push(size);
                let data = self.exact(size, &mut raw)?;
                response.body.extend_from_slice(&data);
                if !self.line(&mut raw)?.is_empty() {
                    return Err(invalid("chunk data longer than its size".into()));
                }
            }
            response.framing = Framing::Chunked(sizes);
        } else if let Some(length) = response.header("content-length") {
            let n: usize = length
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {length:?}")))?;
            response.body = self.exact(n, &mut raw)?;
            response.framing = Framing::ContentLength;
        } else {
            while self.fill()? {}
            response.body = self.buf[self.pos..].to_vec();
            raw.extend_from_slice(&response.body);
            self.pos = self.buf.len();
            response.framing = Framing::Close;
        }
        response.raw = raw;
        Ok(response)
    }

    /// Assert that the server closed the connection with nothing more to
    /// say: the next read gives end of stream (or a reset, which is how a
    /// close with unread input looks).
    #[track_caller]
    pub fn assert_closed(&mut self) {
        let leftover = self.buf[self.pos..].to_vec();
        assert!(
            leftover.is_empty(),
            "unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(&leftover)
        );
        let mut byte = [0u8; 1024];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected the server to close; it sent {:?}",
                String::from_utf8_lossy(&byte[..n])
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the server to close the connection; read: {e}"),
        }
    }

    /// Read to the end of the stream and return what came, or the error that
    /// ended it (for requests the server must not answer).
    pub fn read_to_end(&mut self) -> (Vec<u8>, Option<io::Error>) {
        let mut out = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    /// Wait until the server has read every byte sent so far on this
    /// connection, i.e. its socket's receive queue is empty. This is how a
    /// test knows, without sleeping, that a request (or the first part of
    /// one) is in the server's hands: it asks the kernel (sock_diag) for the
    /// receive queue of the server's end of this loopback connection.
    pub fn wait_until_server_read(&self) {
        let stream = self.tcp_stream();
        let ours = stream.local_addr().unwrap();
        let theirs = stream.peer_addr().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let queued = sock_diag::receive_queue(theirs, ours);
            if queued == Some(0) {
                return;
            }
            // `None` (no such socket) is waited out like a full queue: the
            // server's end exists for as long as this connection is open, so
            // never finding it would be a bug here, not a reason to go on.
            assert!(
                Instant::now() < deadline,
                "the server did not read what was sent to it within {WAIT:?} \
                 (its receive queue: {queued:?})"
            );
            thread::sleep(POLL);
        }
    }
}
