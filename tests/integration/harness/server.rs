//! The guard around a running `rgun`: a builder that starts it in its own
//! process group and waits until it listens, and a `Server` that kills the
//! whole group on drop and shows its logs when a test failed.

use std::ffi::CString;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::app::App;
use super::client::{Conn, Response};
use super::logs::Log;
use super::paths::rgun_bin;
use super::requests::get;
use super::{POLL, WAIT};

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
    program: Option<PathBuf>,
    session: Session,
    /// A command that runs the binary (`ip netns exec NAME`), if any.
    within: Vec<String>,
    /// The working directory (where a default `rgun.toml` is looked for).
    dir: Option<PathBuf>,
    /// Addresses come from a configuration file: no `--bind`, and this
    /// many addresses to wait for.
    config_binds: Option<usize>,
}

/// Where the master runs: in its own process group of the test's session
/// (the default), or as the leader of a new session, with or without a
/// controlling terminal.
#[derive(Clone, Debug)]
enum Session {
    Group,
    New { tty: Option<PathBuf> },
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

    /// Run this binary instead of `rgun_bin()` (a copy, say).
    pub fn program(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Some(path.into());
        self
    }

    /// Run the binary through this command, which must exec it in its
    /// place (`ip netns exec NAME`: rgun then runs in that network
    /// namespace, and its pid is the master's).
    pub fn within<I: IntoIterator<Item = S>, S: Into<String>>(mut self, command: I) -> Self {
        self.within = command.into_iter().map(Into::into).collect();
        self
    }

    /// Start the master as the leader of a new session, without a
    /// controlling terminal, as a daemon or a systemd service runs (its
    /// process group is still its own pid).
    pub fn new_session(mut self) -> Self {
        self.session = Session::New { tty: None };
        self
    }

    /// Start the master as the leader of a new session whose controlling
    /// terminal is `tty` (the slave side of a pseudo-terminal).
    pub fn controlling_terminal(mut self, tty: impl Into<PathBuf>) -> Self {
        self.session = Session::New {
            tty: Some(tty.into()),
        };
        self
    }

    /// Run in this working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The addresses (`n` of them) come from a configuration file: no
    /// `--bind` on the command line.
    pub fn binds_from_config(mut self, n: usize) -> Self {
        self.config_binds = Some(n);
        self
    }

    /// Start the process without waiting for anything (for failures to
    /// start).
    pub fn spawn(self) -> Server {
        let binds = match self.config_binds {
            Some(n) => vec![String::new(); n],
            None if self.binds.is_empty() => vec!["127.0.0.1:0".to_string()],
            None => self.binds.clone(),
        };
        let program = self.program.clone().unwrap_or_else(rgun_bin);
        let mut command = match self.within.split_first() {
            None => Command::new(program),
            Some((wrapper, args)) => {
                let mut command = Command::new(wrapper);
                command.args(args).arg(program);
                command
            }
        };
        // An empty APP: the application comes from a configuration file.
        if !self.app.is_empty() {
            command.arg(&self.app);
        }
        if self.config_binds.is_none() {
            for bind in &binds {
                command.arg("--bind").arg(bind);
            }
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        without_settings_env(&mut command)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match &self.session {
            // Its own group, so that the guard can kill the workers too.
            Session::Group => {
                command.process_group(0);
            }
            // A session leader leads its group too: setsid(2) fails in a
            // process that already leads one, so no process_group(0).
            Session::New { tty } => {
                let tty = tty
                    .as_ref()
                    .map(|t| CString::new(t.as_os_str().as_bytes()).expect("a tty path"));
                // SAFETY: between fork and exec the closure only makes
                // async-signal-safe calls (setsid, open, ioctl, close).
                unsafe {
                    command.pre_exec(move || {
                        if libc::setsid() < 0 {
                            return Err(io::Error::last_os_error());
                        }
                        if let Some(tty) = &tty {
                            let fd = libc::open(tty.as_ptr(), libc::O_RDWR);
                            if fd < 0 || libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                                return Err(io::Error::last_os_error());
                            }
                            libc::close(fd);
                        }
                        Ok(())
                    });
                }
            }
        }
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
        // Gunicorn's one line for every address.
        let line = server.stderr.wait_for("Listening at: ", WAIT);
        server.listening = parse_listening(&line);
        assert_eq!(
            server.listening.len(),
            server.binds.len(),
            "one address per --bind in {line:?}"
        );
        if workers > 0 {
            server.wait_for_workers(workers);
        }
        server
    }
}

/// The suite's own environment must not change what rgun reads: settings
/// in variables (`RGUN_CMD_ARGS`, `GUNICORN_CMD_ARGS`) or the worker count
/// (`WEB_CONCURRENCY`) come only from the test that sets them.
fn without_settings_env(command: &mut Command) -> &mut Command {
    command
        .env_remove("WEB_CONCURRENCY")
        .env_remove("RGUN_CMD_ARGS")
        .env_remove("GUNICORN_CMD_ARGS")
}

/// Run `rgun ARGS` in `dir` with `envs` (and none of the suite's settings
/// variables), to its exit: the commands that answer and stop
/// (`--print-config`, `--check-config`, `completions`, a refused flag).
pub fn run_rgun<S: AsRef<std::ffi::OsStr>>(
    dir: &std::path::Path,
    args: &[S],
    envs: &[(&str, &str)],
) -> std::process::Output {
    without_settings_env(&mut Command::new(rgun_bin()))
        .args(args)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .output()
        .expect("run the rgun binary")
}

/// Parse Gunicorn's `... Listening at: http://127.0.0.1:8000,unix:/path
/// (PID)`: every address, joined by commas.
pub fn parse_listening(line: &str) -> Vec<Listen> {
    let rest = &line[line.find("Listening at: ").unwrap() + "Listening at: ".len()..];
    let urls = rest.rsplit_once(" (").unwrap().0;
    urls.split(',')
        .map(|url| {
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
        })
        .collect()
}

/// The one TCP address of a `Listening at:` line (a server started with a
/// single TCP `--bind`, its log read from a file).
#[track_caller]
pub fn listening_tcp_addr(line: &str) -> SocketAddr {
    match parse_listening(line).as_slice() {
        [Listen::Tcp(addr)] => *addr,
        other => panic!("not one TCP address in {line:?}: {other:?}"),
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
            program: None,
            session: Session::Group,
            within: Vec::new(),
            dir: None,
            config_binds: None,
        }
    }

    /// The native test application, one worker, on 127.0.0.1 and a free
    /// port.
    pub fn testapp() -> Server {
        App::Native.start()
    }

    /// The native test application with extra arguments.
    pub fn testapp_with<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> Server {
        App::Native.start_with(args)
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
        let status = self.reap(timeout);
        // Let the reader threads take in the last lines the process wrote,
        // so that a test can look at the whole log. A child that kept the
        // pipes open is for the test to catch.
        self.stderr.closed_within(WAIT);
        self.stdout.closed_within(WAIT);
        status
    }

    /// Wait for the master to exit, as `wait_exit` does, but not for its
    /// pipes to close: another process writes to them still (the new
    /// master of a `USR2` upgrade).
    pub fn reap(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
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
