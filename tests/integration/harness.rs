//! The harness every test uses: a guard that starts the real `rgun` binary in
//! its own process group and follows its logs, and a tiny raw HTTP/1.1 client.
//! The client is deliberately strict about what it reads (CRLF line ends, a
//! valid status line, well-formed chunked framing): a sloppy answer fails the
//! test instead of being forgiven. It never retries and never sleeps to wait.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Read and write timeout on every client socket: a server that stops
/// answering fails the test after this long instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for anything the server should do "at once" (start, log,
/// exit). Generous on purpose: it only keeps a broken server from hanging the
/// suite and is never asserted on as a measure of speed.
pub const WAIT: Duration = Duration::from_secs(20);

/// How often the few polling waits (process exit, a file's contents, a
/// socket's receive queue) look again. They poll a condition; they never
/// sleep in place of one.
const POLL: Duration = Duration::from_millis(5);

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

pub fn rgun_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rgun"))
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put the binary, and so the example applications beside it.
pub fn target_dir() -> PathBuf {
    rgun_bin()
        .parent()
        .expect("the rgun binary has a parent directory")
        .to_path_buf()
}

/// An example application library (`libNAME.so`) built by the workspace.
pub fn app_lib(name: &str) -> PathBuf {
    let path = target_dir().join(format!("lib{name}.so"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before `cargo test --workspace` \
         (cargo test builds the rgun binary but not the example applications)",
        path.display()
    );
    path
}

/// The `APP` argument for the test application.
pub fn testapp() -> String {
    format!("{}:app", app_lib("testapp").display())
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("rgun-test-{}-{n}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Unix socket path short enough for `sun_path` (108 bytes), unique per
/// test. Lives directly in /tmp because a nested temp dir may be too deep.
pub fn unique_socket_path(label: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!(
        "/tmp/rgun-test-{}-{n}-{label}.sock",
        std::process::id()
    ))
}

/// Compile a C source into a shared library with the gateway header on the
/// include path, as an application author would.
pub fn compile_c_app(source: &Path, out: &Path) {
    let include = manifest_dir().join("gateway/include");
    let output = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-I"])
        .arg(&include)
        .arg(source)
        .arg("-o")
        .arg(out)
        .output()
        .expect("run cc (a C compiler is needed for the C application tests)");
    assert!(
        output.status.success(),
        "cc failed on {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------
// Following a pipe line by line
// ---------------------------------------------------------------------------

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    closed: bool,
}

/// The lines a child wrote to one of its pipes, collected by a thread, with a
/// condition variable so that a test can wait for a line to appear.
pub struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

impl Log {
    fn follow(pipe: impl Read + Send + 'static) -> Arc<Log> {
        let log = Arc::new(Log {
            state: Mutex::new(LogState::default()),
            changed: Condvar::new(),
        });
        let writer = Arc::clone(&log);
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        let text = text.trim_end_matches(['\n', '\r']).to_string();
                        writer.state.lock().unwrap().lines.push(text);
                        writer.changed.notify_all();
                    }
                }
            }
            writer.state.lock().unwrap().closed = true;
            writer.changed.notify_all();
        });
        log
    }

    pub fn lines(&self) -> Vec<String> {
        // A wait that panicked held the lock: the lines are still good for
        // the guard's report of the failure.
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.lines.clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Wait until `count` lines contain `pattern`; return them. Panics with
    /// everything logged so far when the pipe closes first or on timeout.
    pub fn wait_for_count(&self, pattern: &str, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        loop {
            let found: Vec<String> = state
                .lines
                .iter()
                .filter(|l| l.contains(pattern))
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                panic!(
                    "expected {count} line(s) containing {pattern:?}, {} {}; output so far:\n{}",
                    if state.closed {
                        "but the stream closed"
                    } else {
                        "but timed out"
                    },
                    format_args!("(saw {})", found.len()),
                    state.lines.join("\n")
                );
            }
            state = self.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Wait for the first line containing `pattern`.
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> String {
        self.wait_for_count(pattern, 1, timeout).remove(0)
    }

    /// Wait for the first line that `matches` accepts.
    pub fn wait_for_match(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(line) = state.lines.iter().find(|l| matches(l)) {
                return line.clone();
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                panic!(
                    "expected a line with {what}; output so far:\n{}",
                    state.lines.join("\n")
                );
            }
            state = self.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Wait until the writer closed the pipe (the process and every child
    /// that inherited the pipe exited).
    pub fn wait_closed(&self, timeout: Duration) {
        assert!(self.closed_within(timeout), "the pipe stayed open");
    }

    /// Whether the pipe closed within `timeout`.
    fn closed_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        while !state.closed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
        true
    }
}

// ---------------------------------------------------------------------------
// The server guard
// ---------------------------------------------------------------------------

/// One address the server said it listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// How to start a server; `start` waits until every socket is listening.
pub struct ServerBuilder {
    app: String,
    binds: Vec<String>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    booted_workers: usize,
}

impl ServerBuilder {
    /// Replace the default bind (`127.0.0.1:0`); may be called several times.
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.binds.push(addr.into());
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Also wait, on start, until this many "Booting worker" lines appeared.
    pub fn wait_for_workers(mut self, n: usize) -> Self {
        self.booted_workers = n;
        self
    }

    /// Start the process without waiting for anything (for failures to
    /// start).
    pub fn spawn(self) -> Server {
        let binds = if self.binds.is_empty() {
            vec!["127.0.0.1:0".to_string()]
        } else {
            self.binds.clone()
        };
        let mut command = Command::new(rgun_bin());
        command.arg(&self.app);
        for bind in &binds {
            command.arg("--bind").arg(bind);
        }
        command
            .args(&self.args)
            // The suite's own environment must not change the worker count.
            .env_remove("WEB_CONCURRENCY")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that the guard can kill the workers too.
            .process_group(0);
        let mut child = command.spawn().expect("spawn the rgun binary");
        let stderr: ChildStderr = child.stderr.take().unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        Server {
            child,
            stderr: Log::follow(stderr),
            stdout: Log::follow(stdout),
            binds,
            listening: Vec::new(),
            exit: None,
        }
    }

    pub fn start(self) -> Server {
        let workers = self.booted_workers;
        let mut server = self.spawn();
        let lines = server
            .stderr
            .wait_for_count("Listening at: ", server.binds.len(), WAIT);
        server.listening = lines.iter().map(|l| parse_listening(l)).collect();
        if workers > 0 {
            server.wait_for_workers(workers);
        }
        server
    }
}

/// Parse `... Listening at: http://127.0.0.1:8000 (PID)` or
/// `... Listening at: unix:/path (PID)`.
fn parse_listening(line: &str) -> Listen {
    let rest = &line[line.find("Listening at: ").unwrap() + "Listening at: ".len()..];
    let url = rest.split(" (").next().unwrap();
    if let Some(path) = url.strip_prefix("unix:") {
        Listen::Unix(PathBuf::from(path))
    } else if let Some(addr) = url.strip_prefix("http://") {
        Listen::Tcp(
            addr.parse()
                .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}")),
        )
    } else {
        panic!("unexpected listening address in {line:?}")
    }
}

/// A running `rgun`, killed (with its whole process group) when dropped.
pub struct Server {
    child: Child,
    pub stderr: Arc<Log>,
    pub stdout: Arc<Log>,
    binds: Vec<String>,
    listening: Vec<Listen>,
    exit: Option<ExitStatus>,
}

impl Server {
    pub fn builder(app: impl Into<String>) -> ServerBuilder {
        ServerBuilder {
            app: app.into(),
            binds: Vec::new(),
            args: Vec::new(),
            envs: Vec::new(),
            booted_workers: 0,
        }
    }

    /// The test application, one worker, on 127.0.0.1 and a free port.
    pub fn testapp() -> Server {
        Server::builder(testapp()).start()
    }

    /// The test application with extra arguments.
    pub fn testapp_with<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> Server {
        Server::builder(testapp()).args(args).start()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn listening(&self) -> &[Listen] {
        &self.listening
    }

    /// The first TCP address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.listening
            .iter()
            .find_map(|l| match l {
                Listen::Tcp(a) => Some(*a),
                Listen::Unix(_) => None,
            })
            .expect("the server listens on a TCP address")
    }

    pub fn connect(&self) -> Conn {
        Conn::tcp(self.addr())
    }

    /// One `GET` on a fresh connection.
    pub fn get(&self, target: &str) -> Response {
        self.connect().request(&get(target))
    }

    /// Wait until `n` workers have been booted in total; return their pids.
    pub fn wait_for_workers(&self, n: usize) -> Vec<u32> {
        self.stderr
            .wait_for_count("Booting worker with pid: ", n, WAIT)
            .iter()
            .map(|l| {
                let pid = l.rsplit("Booting worker with pid: ").next().unwrap();
                pid.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("bad pid in {l:?}: {e}"))
            })
            .collect()
    }

    pub fn wait_for_log(&self, pattern: &str, timeout: Duration) -> String {
        self.stderr.wait_for(pattern, timeout)
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Wait for the master to exit (polling `try_wait`, bounded by
    /// `timeout`), and return how it exited.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                // Let the reader threads take in the last lines the process
                // wrote, so that a test can look at the whole log. A child
                // that kept the pipes open is for the test to catch.
                self.stderr.closed_within(WAIT);
                self.stdout.closed_within(WAIT);
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "rgun (pid {}) did not exit within {timeout:?}; its log:\n{}",
                    self.child.id(),
                    self.stderr.text()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Whether any process is still in the server's process group (a worker
    /// that outlived its master, say).
    pub fn group_alive(&self) -> bool {
        // SAFETY: signal 0 only checks for existence.
        let rc = unsafe { libc::kill(-(self.child.id() as libc::pid_t), 0) };
        rc == 0
    }

    /// Describe an exit status for assertion messages.
    pub fn describe(status: ExitStatus) -> String {
        match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => format!("{status:?}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        if self.exit.is_none() {
            // SAFETY: kill(2) on the group we created; errors are harmless.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = self.child.wait();
        } else {
            // The master exited; kill anything it left behind.
            // SAFETY: as above.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        if thread::panicking() {
            eprintln!(
                "--- rgun stderr (pid {pgid}) ---\n{}\n--- rgun stdout ---\n{}\n---",
                self.stderr.text(),
                self.stdout.text()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Building requests
// ---------------------------------------------------------------------------

/// `GET target HTTP/1.1` with a Host header.
pub fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

/// A request with a Host header, the given headers, and a body framed with
/// Content-Length when it is not empty.
pub fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Encode `body` as chunks of the given sizes (cycled), with the last chunk
/// and an empty trailer section.
pub fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 4 + 16);
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A small deterministic PRNG (xorshift64*), so random splits are
/// reproducible from the seed printed in a failure.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in `low..=high`.
    pub fn range(&mut self, low: usize, high: usize) -> usize {
        low + (self.next_u64() % (high - low + 1) as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

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

/// One question to the kernel's socket-diagnostics netlink interface
/// (sock_diag(7)): how many received bytes a given TCP socket's owner has
/// not read yet. An exact lookup by address, unlike /proc/net/tcp, which
/// lists every socket (tens of thousands in TIME_WAIT on a busy test box).
mod sock_diag {
    use std::io;
    use std::mem::{size_of, size_of_val};
    use std::net::SocketAddr;

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const NLMSG_ERROR: u16 = 2;
    const NETLINK_SOCK_DIAG: libc::c_int = 4;
    const INET_DIAG_NOCOOKIE: u32 = !0;

    #[repr(C)]
    #[derive(Clone, Copy)]
    struct NlMsgHdr {
        len: u32,
        kind: u16,
        flags: u16,
        seq: u32,
        pid: u32,
    }

    /// `struct inet_diag_sockid`: ports and addresses in network order.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct SockId {
        sport: u16,
        dport: u16,
        src: [u32; 4],
        dst: [u32; 4],
        interface: u32,
        cookie: [u32; 2],
    }

    /// `struct inet_diag_req_v2` behind its netlink header.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Request {
        header: NlMsgHdr,
        family: u8,
        protocol: u8,
        ext: u8,
        pad: u8,
        states: u32,
        id: SockId,
    }

    /// `struct inet_diag_msg`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Reply {
        family: u8,
        state: u8,
        timer: u8,
        retrans: u8,
        id: SockId,
        expires: u32,
        rqueue: u32,
        wqueue: u32,
        uid: u32,
        inode: u32,
    }

    fn words(addr: SocketAddr) -> [u32; 4] {
        let mut out = [0u32; 4];
        match addr {
            SocketAddr::V4(a) => out[0] = u32::from_ne_bytes(a.ip().octets()),
            SocketAddr::V6(a) => {
                for (word, bytes) in out.iter_mut().zip(a.ip().octets().chunks(4)) {
                    *word = u32::from_ne_bytes(bytes.try_into().unwrap());
                }
            }
        }
        out
    }

    /// The receive queue of the TCP socket whose own end is `local` and
    /// whose peer is `remote`, or `None` when there is no such socket.
    pub fn receive_queue(local: SocketAddr, remote: SocketAddr) -> Option<u32> {
        let family = if local.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let request = Request {
            header: NlMsgHdr {
                len: size_of::<Request>() as u32,
                kind: SOCK_DIAG_BY_FAMILY,
                flags: NLM_F_REQUEST,
                seq: 1,
                pid: 0,
            },
            family: family as u8,
            protocol: libc::IPPROTO_TCP as u8,
            ext: 0,
            pad: 0,
            states: !0,
            id: SockId {
                sport: local.port().to_be(),
                dport: remote.port().to_be(),
                src: words(local),
                dst: words(remote),
                interface: 0,
                cookie: [INET_DIAG_NOCOOKIE; 2],
            },
        };
        let mut buf = [0u64; 1024];
        // SAFETY: plain socket calls on a descriptor owned here and closed
        // before returning; each buffer is valid for the length given.
        let (got, err) = unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            );
            assert!(fd >= 0, "netlink socket: {}", io::Error::last_os_error());
            let mut got = libc::send(fd, (&raw const request).cast(), size_of::<Request>(), 0);
            if got >= 0 {
                got = libc::recv(fd, buf.as_mut_ptr().cast(), size_of_val(&buf), 0);
            }
            let err = io::Error::last_os_error();
            libc::close(fd);
            (got, err)
        };
        assert!(got >= 0, "sock_diag: {err}");
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let bytes = &bytes[..got as usize];
        assert!(
            bytes.len() >= size_of::<NlMsgHdr>(),
            "short sock_diag answer"
        );
        // SAFETY: the lengths were checked; both types are plain old data.
        let header = unsafe { bytes.as_ptr().cast::<NlMsgHdr>().read_unaligned() };
        if header.kind == NLMSG_ERROR {
            return None;
        }
        assert_eq!(header.kind, SOCK_DIAG_BY_FAMILY, "sock_diag answer type");
        let body = &bytes[size_of::<NlMsgHdr>()..];
        assert!(body.len() >= size_of::<Reply>(), "short sock_diag answer");
        // SAFETY: as above.
        let reply = unsafe { body.as_ptr().cast::<Reply>().read_unaligned() };
        // An exact lookup can fall back to a listening socket; only the
        // connection asked about will do.
        let same = reply.id.sport == request.id.sport
            && reply.id.dport == request.id.dport
            && reply.id.src == request.id.src
            && reply.id.dst == request.id.dst;
        same.then_some(reply.rqueue)
    }

    /// The harness's own check that it reads the right socket's queue.
    #[test]
    fn receive_queue_counts_unread_bytes() {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let listener = TcpListener::bind(host).unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (mut server, _) = listener.accept().unwrap();
            let (local, remote) = (server.local_addr().unwrap(), server.peer_addr().unwrap());
            assert_eq!(receive_queue(local, remote), Some(0));
            client.write_all(b"0123456789").unwrap();
            // The bytes reach the queue and wait there, unread.
            let deadline = std::time::Instant::now() + super::WAIT;
            while receive_queue(local, remote) != Some(10) {
                assert!(std::time::Instant::now() < deadline, "never saw 10");
                std::thread::sleep(super::POLL);
            }
            let mut buf = [0u8; 10];
            server.read_exact(&mut buf).unwrap();
            assert_eq!(receive_queue(local, remote), Some(0));
            // The client's end has its own (empty) queue, and an unknown
            // peer port matches nothing.
            let mut other = remote;
            other.set_port(1);
            assert_eq!(receive_queue(local, other), None);
        }
    }
}

/// Poll until `path` holds a line containing `pattern` (for logs written to
/// a file rather than a pipe); return that line.
pub fn wait_for_file_line(path: &Path, pattern: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(pattern)) {
            return line.to_string();
        }
        if Instant::now() >= deadline {
            panic!(
                "no line containing {pattern:?} in {} within {timeout:?}; it holds:\n{text}",
                path.display()
            );
        }
        thread::sleep(POLL);
    }
}
