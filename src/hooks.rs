//! The master's server hooks from a Python configuration file (issue 11):
//! `on_starting`, `when_ready`, `on_reload`, `pre_fork`, `child_exit`,
//! `nworkers_changed`, `on_exit`, `pre_exec`. The master runs no Python and
//! spawns no threads, so they run in a Python process of its own (the
//! application's interpreter, see `python`), started with the file and
//! driven over a socket pair: one JSON line per event, then the hook's log
//! lines and one answer. Every hook is awaited, as Gunicorn calls them in
//! line, but never past `timeout`: a hook that hangs is logged, its process
//! killed, and a new one started (the file executed afresh) for the next
//! event. The worker hooks are the WSGI bridge's (wsgi/src/hooks.rs).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

mod start;

pub use start::{HOOK_WORKER_ENV, REEXEC_ENV, start_for};

/// The script the hook process runs: the same file as the bridge's.
const HOOKS_SCRIPT: &str = include_str!("../wsgi/src/hooks.py");
/// The descriptor number of the socket in the hook process.
const HOOK_SOCKET_FD: i32 = 3;
/// How long the hook process has to end once the master closes its socket.
const HOOK_EXIT_WAIT_MS: u64 = 2000;
/// How long a master hook may run when `--timeout` is 0 (disabled):
/// Gunicorn's default `timeout`, seconds.
pub const DEFAULT_HOOK_TIMEOUT_SECS: u64 = 30;

/// What the hook process answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The hook ran (or the file does not define it, or hooks are off).
    Ran,
    /// The hook raised; its traceback is logged. Gunicorn's master stops.
    Raised,
    /// The process died or hung: logged, and the master goes on.
    Lost,
}

/// A master-side event, with its arguments.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    OnStarting,
    WhenReady,
    OnReload,
    PreExec,
    OnExit,
    /// `pre_fork(server, worker)`: the worker has no pid yet.
    PreFork {
        age: u64,
    },
    ChildExit {
        pid: i32,
        age: u64,
    },
    NworkersChanged {
        new: usize,
        old: Option<usize>,
    },
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::OnStarting => "on_starting",
            Event::WhenReady => "when_ready",
            Event::OnReload => "on_reload",
            Event::PreExec => "pre_exec",
            Event::OnExit => "on_exit",
            Event::PreFork { .. } => "pre_fork",
            Event::ChildExit { .. } => "child_exit",
            Event::NworkersChanged { .. } => "nworkers_changed",
        }
    }

    fn to_json(self, num_workers: usize) -> Value {
        let mut line = json!({"hook": self.name(), "num_workers": num_workers});
        match self {
            Event::PreFork { age } => line["worker"] = json!({"pid": null, "age": age}),
            Event::ChildExit { pid, age } => line["worker"] = json!({"pid": pid, "age": age}),
            Event::NworkersChanged { new, old } => {
                line["new"] = json!(new);
                line["old"] = json!(old);
            }
            _ => {}
        }
        line
    }
}

/// How to start the hook process.
struct Spec {
    file: PathBuf,
    python: PathBuf,
    /// The effective settings under Gunicorn's names (`server.cfg`).
    settings: Value,
    timeout: Duration,
}

/// The running hook process.
struct HookProcess {
    pid: Pid,
    socket: UnixStream,
    reader: BufReader<UnixStream>,
    /// The master hooks the file defines.
    defined: Vec<String>,
}

enum State {
    /// No Python configuration file, or it defines no master hook.
    Off,
    Running(Spec, HookProcess),
    /// The process died or hung; started again for the next event.
    Down(Spec),
}

/// The master's side of its server hooks.
pub struct MasterHooks {
    state: State,
    /// This master is a new image of one reloading (`REEXEC_ENV`).
    pub resumed: bool,
}

/// What the file holds, from the hook process's first answer.
pub struct Loaded {
    pub hooks: MasterHooks,
    /// The worker hooks the file defines (for a warning with a native app).
    pub worker_hooks: Vec<String>,
}

impl MasterHooks {
    pub fn off() -> MasterHooks {
        MasterHooks {
            state: State::Off,
            resumed: false,
        }
    }

    /// Start the hook process for `file` and wait until it has executed the
    /// file. An error (the file does not execute, a hook has the wrong
    /// signature) stops the master, as a bad configuration stops Gunicorn.
    pub fn start(
        file: PathBuf,
        python: PathBuf,
        settings: Value,
        timeout: Duration,
        num_workers: usize,
    ) -> Result<Loaded> {
        let spec = Spec {
            file,
            python,
            settings,
            timeout,
        };
        let (process, worker_hooks) = spawn(&spec, num_workers)?;
        let state = if process.defined.is_empty() {
            // Nothing for the master to run: the process reads EOF and
            // leaves (the arbiter reaps it as an unknown child).
            State::Off
        } else {
            State::Running(spec, process)
        };
        Ok(Loaded {
            hooks: MasterHooks {
                state,
                resumed: false,
            },
            worker_hooks,
        })
    }

    /// Run the hook for `event`, waiting for it (bounded).
    pub fn run(&mut self, event: Event, num_workers: usize) -> Outcome {
        let state = std::mem::replace(&mut self.state, State::Off);
        let (spec, mut process) = match state {
            State::Off => return Outcome::Ran,
            State::Running(spec, process) => (spec, process),
            State::Down(spec) => match spawn(&spec, num_workers) {
                Ok((process, _)) => {
                    log::warn!(
                        "Server hooks: started a new hook process (pid: {})",
                        process.pid
                    );
                    (spec, process)
                }
                Err(e) => {
                    log::error!("Server hooks: {e:#}; {} not run", event.name());
                    self.state = State::Down(spec);
                    return Outcome::Lost;
                }
            },
        };
        if !process.defined.iter().any(|d| d == event.name()) {
            self.state = State::Running(spec, process);
            return Outcome::Ran;
        }
        match process.call(event, num_workers, spec.timeout) {
            Ok(outcome) => {
                self.state = State::Running(spec, process);
                outcome
            }
            Err(e) => {
                log::error!(
                    "Server hooks: {} in {} {e:#}; its process (pid: {}) is stopped, a new one starts for the next hook",
                    event.name(),
                    spec.file.display(),
                    process.pid
                );
                let _ = kill(process.pid, Signal::SIGKILL);
                self.state = State::Down(spec);
                Outcome::Lost
            }
        }
    }

    /// Whether `pid` was the hook process (reaped by the arbiter): the next
    /// event starts a new one. It leaves on its own only when the master
    /// closed its socket, or when it crashed.
    pub fn reaped(&mut self, pid: Pid) -> bool {
        match std::mem::replace(&mut self.state, State::Off) {
            State::Running(spec, process) if process.pid == pid => {
                log::error!("Server hooks: the hook process (pid: {pid}) exited");
                self.state = State::Down(spec);
                true
            }
            state => {
                self.state = state;
                false
            }
        }
    }

    /// In a forked worker: close this copy of the socket, so that the hook
    /// process sees the master's end close when the master exits.
    pub fn close_in_worker(&mut self) {
        self.state = State::Off;
    }
}

impl Drop for MasterHooks {
    /// The master is leaving: the hook process sees its socket close and
    /// ends; it is waited for (bounded), so that nothing outlives the
    /// master. Forked workers leave without running this.
    fn drop(&mut self) {
        if let State::Running(_, process) = std::mem::replace(&mut self.state, State::Off) {
            process.finish();
        }
    }
}

/// Start the process, hand it the settings, and wait for its `ready`: the
/// master hooks and the worker hooks the file defines.
fn spawn(spec: &Spec, num_workers: usize) -> Result<(HookProcess, Vec<String>)> {
    let (ours, theirs) = UnixStream::pair().context("cannot make the hook process's socket")?;
    let fd = theirs.as_raw_fd();
    let mut command = Command::new(&spec.python);
    command
        .arg("-c")
        .arg(HOOKS_SCRIPT)
        .arg(&spec.file)
        .arg(HOOK_SOCKET_FD.to_string())
        .stdin(Stdio::null());
    // SAFETY: between fork and exec only dup2(2)/fcntl(2), which are
    // async-signal-safe; `fd` is open in the child (inherited).
    unsafe {
        command.pre_exec(move || {
            let rc = if fd == HOOK_SOCKET_FD {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, HOOK_SOCKET_FD)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().with_context(|| {
        format!(
            "cannot start {} for the server hooks of {}",
            spec.python.display(),
            spec.file.display()
        )
    })?;
    drop(theirs);
    // The arbiter reaps it (waitpid(-1)); the handle is never waited on.
    let pid = Pid::from_raw(child.id() as i32);
    let reader = BufReader::new(ours.try_clone().context("cannot clone the hook socket")?);
    let mut process = HookProcess {
        pid,
        socket: ours,
        reader,
        defined: Vec::new(),
    };
    let start = json!({
        "settings": spec.settings,
        "pid": std::process::id(),
        "num_workers": num_workers,
    });
    let answer = process
        .send(&start)
        .and_then(|()| process.answer(spec.timeout))
        .with_context(|| format!("the server hooks of {} did not load", spec.file.display()));
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            let _ = kill(pid, Signal::SIGKILL);
            return Err(e);
        }
    };
    if let Some(why) = answer.get("failed").and_then(Value::as_str) {
        bail!("{why}");
    }
    let names = |key: &str| -> Vec<String> {
        answer[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    process.defined = names("ready");
    Ok((process, names("worker_hooks")))
}

impl HookProcess {
    /// Close the master's end, wait (bounded) for the process to end.
    fn finish(mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Write);
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(HOOK_EXIT_WAIT_MS)));
        let mut rest = Vec::new();
        if std::io::Read::read_to_end(&mut self.reader, &mut rest).is_err() {
            log::warn!(
                "Server hooks: the hook process (pid: {}) did not end; killing it",
                self.pid
            );
            let _ = kill(self.pid, Signal::SIGKILL);
        }
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }

    fn send(&mut self, line: &Value) -> Result<()> {
        let mut text = line.to_string();
        text.push('\n');
        self.socket
            .write_all(text.as_bytes())
            .context("cannot write to the hook process")
    }

    fn call(&mut self, event: Event, num_workers: usize, timeout: Duration) -> Result<Outcome> {
        self.send(&event.to_json(num_workers))?;
        let answer = self.answer(timeout)?;
        Ok(match answer.get("done").and_then(Value::as_str) {
            Some("raised") => Outcome::Raised,
            _ => Outcome::Ran,
        })
    }

    /// Log the process's log lines until its answer, within `timeout`.
    fn answer(&mut self, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("did not finish within {} s", timeout.as_secs_f64());
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => bail!("ended: the hook process exited"),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    bail!("did not finish within {} s", timeout.as_secs_f64())
                }
                Err(e) => return Err(e).context("cannot read from the hook process"),
            }
            let value: Value = serde_json::from_str(&line)
                .with_context(|| format!("the hook process said {line:?}"))?;
            match value.get("log").and_then(Value::as_str) {
                Some(level) => log_line(level, value["msg"].as_str().unwrap_or_default()),
                None => return Ok(value),
            }
        }
    }
}

/// A `server.log` line of a master hook, in the master's log.
fn log_line(level: &str, message: &str) {
    match level {
        "critical" => log::error!(target: crate::logging::CRITICAL, "{message}"),
        "error" => log::error!("{message}"),
        "warning" => log::warn!("{message}"),
        "debug" => log::debug!("{message}"),
        _ => log::info!("{message}"),
    }
}
