//! `--metrics-bind`: Prometheus metrics, `/healthz`, `/readyz` and a status
//! page, served by a process of its own. The master binds the socket (so
//! that it outlives that process, and a privileged port works as for
//! `--bind`), forks the metrics process and replaces it like a worker when
//! it dies; it never reads a byte of a scrape itself. The metrics process
//! reads everything from the scoreboard, which workers update with a few
//! relaxed atomic additions per request and the master with its restarts,
//! phase and heartbeat.

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};

use crate::cli::Cli;
use crate::sockets::{self, BindAddr, Listener};
use rgun_worker::scoreboard::{Scoreboard, monotonic_ms};
use rgun_worker::signals;

mod exposition;
mod http;
mod procstat;
mod queue;
mod serve;
mod snapshot;
mod status;

/// Where a new master image (an upgrade, a `--preload` reload) finds the
/// metrics socket of the one before it.
pub const METRICS_FD_ENV: &str = "RGUN_METRICS_FD";
/// The metrics socket's listen queue: scrapes and probes are few.
const METRICS_BACKLOG: i32 = 64;
/// The wait before replacing a metrics process that died.
const RESPAWN_BACKOFF_MS: u64 = 1000;

/// The metrics socket and process, as the master keeps them.
pub struct Metrics {
    pub listener: Listener,
    /// The configuration in force, as a JSON object, for the status page.
    summary: String,
    process: Process,
}

/// The metrics process, as the master sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Process {
    /// None runs; start one at `at_ms`.
    Down {
        at_ms: u64,
    },
    Running(Pid),
}

/// The metrics socket of the previous master image (an upgrade, a
/// `--preload` reload), claimed (close-on-exec, variable removed) before
/// any application code could start a subprocess.
pub fn inherited() -> Result<Option<Listener>> {
    let Ok(fd) = std::env::var(METRICS_FD_ENV) else {
        return Ok(None);
    };
    // SAFETY: the master is single-threaded.
    unsafe { std::env::remove_var(METRICS_FD_ENV) };
    let fd = fd
        .parse()
        .with_context(|| format!("invalid {METRICS_FD_ENV} {fd:?}"))?;
    Ok(Some(sockets::adopt(fd, false)?))
}

/// The metrics socket: `inherited` from the previous master image, or
/// bound now; `None` without `--metrics-bind`.
pub fn setup(
    cli: &Cli,
    binds: &[String],
    identity: Option<&crate::privileges::Identity>,
    inherited: Option<Listener>,
) -> Result<Option<Metrics>> {
    let Some(spec) = &cli.metrics_bind else {
        return Ok(None);
    };
    let listener = match inherited {
        Some(listener) => listener,
        None => {
            let addr = BindAddr::parse_flag(spec, "--metrics-bind")?;
            let listener = Listener::bind(&addr, METRICS_BACKLOG, cli.umask)
                .context("cannot serve --metrics-bind")?;
            if let Some(id) = identity {
                listener.chown(id.uid, id.gid)?;
            }
            listener
        }
    };
    log::info!(
        "Metrics at: {} ({})",
        sockets::describe(&listener.addr),
        std::process::id()
    );
    Ok(Some(Metrics {
        listener,
        summary: summary(cli, binds),
        process: Process::Down { at_ms: 0 },
    }))
}

/// The configuration in force, for the status page: what an operator
/// checks first when something is wrong.
fn summary(cli: &Cli, binds: &[String]) -> String {
    let fields: [(&str, String); 14] = [
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("app", cli.app.clone()),
        ("bind", binds.join(", ")),
        ("workers", cli.workers.max(1).to_string()),
        ("threads", cli.threads.to_string()),
        ("worker_connections", cli.worker_connections.to_string()),
        ("backlog", cli.backlog.to_string()),
        ("timeout", format!("{} s", cli.timeout)),
        ("graceful_timeout", format!("{} s", cli.graceful_timeout)),
        ("keep_alive", format!("{} s", cli.keep_alive)),
        (
            "max_requests",
            format!("{} (jitter {})", cli.max_requests, cli.max_requests_jitter),
        ),
        (
            "max_worker_memory",
            format!("{} MiB", cli.max_worker_memory),
        ),
        ("preload", cli.preload.to_string()),
        ("reload", cli.reload.to_string()),
    ];
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{}", status::json_string(k), status::json_string(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// What the metrics process reads, handed over at fork.
pub struct Sources<'a> {
    pub scoreboard: &'a Scoreboard,
    pub listeners: &'a [Listener],
    pub master_pid: i32,
    pub identity: Option<&'a crate::privileges::Identity>,
}

impl Metrics {
    /// On each turn of the master's loop: start the metrics process if
    /// none runs (and its back-off passed).
    pub fn keep_running(&mut self, sources: &Sources<'_>) {
        let Process::Down { at_ms } = self.process else {
            return;
        };
        if monotonic_ms() < at_ms {
            return;
        }
        self.process = match self.spawn(sources) {
            Some(pid) => Process::Running(pid),
            None => Process::Down {
                at_ms: monotonic_ms() + RESPAWN_BACKOFF_MS,
            },
        };
    }

    /// The master reaped `pid`: if it was the metrics process, say so and
    /// start another after a short wait. `false`: not ours.
    pub fn reaped(&mut self, pid: Pid, code: Option<i32>, signal: Option<Signal>) -> bool {
        if self.process != Process::Running(pid) {
            return false;
        }
        match (code, signal) {
            (Some(code), _) => log::warn!("Metrics process (pid:{pid}) exited with code {code}"),
            (_, Some(signal)) => {
                log::error!("Metrics process (pid:{pid}) was killed by {signal}")
            }
            _ => {}
        }
        self.process = Process::Down {
            at_ms: monotonic_ms() + RESPAWN_BACKOFF_MS,
        };
        true
    }

    /// The master stops (or re-executes, or hands over to a new master):
    /// the metrics process goes, last, so that `/readyz` says "stopping"
    /// until the end. It keeps no state, so SIGKILL: nothing it does can
    /// make the master wait.
    pub fn stop(&mut self) {
        if let Process::Running(pid) = self.process {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        self.process = Process::Down { at_ms: u64::MAX };
    }

    /// A re-execution failed: this image starts a metrics process again.
    pub fn resume(&mut self) {
        self.process = Process::Down { at_ms: 0 };
    }

    fn spawn(&self, sources: &Sources<'_>) -> Option<Pid> {
        let mask = match signals::block_all() {
            Ok(mask) => mask,
            Err(e) => {
                log::error!("cannot block signals to fork the metrics process: {e}");
                return None;
            }
        };
        // SAFETY: the master is single-threaded, so the child starts with a
        // consistent heap and no lock held by another thread.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    serve::run(sources, &self.listener, &self.summary, mask)
                }))
                .unwrap_or(serve::EXIT_PANIC);
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                let _ = signals::restore_mask(&mask);
                log::info!("Booting metrics process with pid: {child}");
                Some(child)
            }
            Err(e) => {
                let _ = signals::restore_mask(&mask);
                log::error!("cannot fork the metrics process: {e}");
                None
            }
        }
    }
}
