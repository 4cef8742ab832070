//! The master's loop, after Gunicorn's arbiter: wait for a signal or a tick,
//! then reap dead workers, abort hung ones, and start or stop workers to match
//! the wanted count. Signal handlers only queue; this loop acts. The master
//! never runs application code and never parses HTTP; it spawns no threads.

use std::collections::HashMap;
use std::os::fd::BorrowedFd;

use anyhow::Result;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use rgun_worker::WorkerConfig;
use rgun_worker::scoreboard::metrics::Phase;
use rgun_worker::scoreboard::{Scoreboard, monotonic_ms};
use rgun_worker::signals::SignalQueue;

use crate::sockets::Listener;

mod hooked;
mod reap;
mod reconfigure;
mod recycle;
mod reload;
mod spawn;
mod upgrade;

/// How often the loop wakes without a signal (Gunicorn sleeps up to 1 s).
const TICK_MS: u16 = 1000;
/// A worker's exit code when it panicked (a bug): replaced like a crash.
const EXIT_WORKER_PANIC: i32 = 70;
/// How often the master looks whether the first worker has loaded the
/// application, while the others wait for it.
const PROBE_POLL_MS: u16 = 10;
/// The back-off before replacing workers that keep dying early (see
/// `reap.rs`) doubles up to this.
const MAX_BACKOFF_MS: u64 = 10_000;

const HANDLED_SIGNALS: [Signal; 10] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Where a worker is in its life, as the master sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    /// Serving, and counted among the wanted workers.
    Serving,
    /// To be replaced (`--max-requests`, `--max-worker-memory`): its
    /// successor boots, and it serves on until the successor has loaded
    /// the application. No longer counted: the successor is.
    Replaced { successor: Pid },
    /// Told to stop: leaving.
    Retiring,
}

/// A worker aborted for `--timeout`.
#[derive(Clone, Copy, Debug)]
struct Abort {
    at_ms: u64,
    /// How long the request in hand had run (0: none known).
    ran_ms: u64,
}

/// What the master knows of one worker.
struct Worker {
    slot: usize,
    /// Gunicorn's `worker.age`: the how-manieth worker this master forked.
    age: u64,
    started_ms: u64,
    /// Aborted by `--timeout`: when, and how long its request had run.
    aborted: Option<Abort>,
    life: Life,
}

impl Worker {
    fn is_serving(&self) -> bool {
        self.life == Life::Serving
    }

    fn is_retiring(&self) -> bool {
        self.life == Life::Retiring
    }
}

/// Route the master's signals to a queue its loop reads.
pub fn install_signals() -> std::io::Result<SignalQueue> {
    SignalQueue::install(&HANDLED_SIGNALS)
}

/// Calls around each fork, for an interpreter preloaded in the master.
#[derive(Clone, Copy)]
pub struct ForkHooks {
    pub before: unsafe extern "C" fn(),
    pub after_parent: unsafe extern "C" fn(),
    pub after_child: unsafe extern "C" fn(),
}

/// Everything a worker is started with, kept by the master.
pub struct Settings {
    pub workers: usize,
    pub fork_hooks: Option<ForkHooks>,
    /// Where the master was started, for a re-executed image.
    pub start_dir: Option<std::path::PathBuf>,
    /// `--user`/`--group`: who the workers run as.
    pub identity: Option<crate::privileges::Identity>,
    pub timeout_ms: u64,
    pub graceful_timeout_ms: u64,
    /// `--max-worker-memory` in MiB (0: no limit).
    pub max_worker_memory_mib: u64,
    /// Always there in the master; taken by a forked child as it becomes a
    /// worker.
    pub worker: Option<WorkerConfig>,
}

/// The master's own helper processes: they live as long as the master, so
/// that a reload's new `Settings` neither replaces nor has to carry them.
pub struct Helpers {
    /// The server hooks of a Python configuration file that run here.
    pub hooks: crate::hooks::MasterHooks,
    /// `--metrics-bind`: its socket and process.
    pub metrics: Option<crate::metrics::Metrics>,
}

/// The master: its workers, what it was asked for and what it told
/// systemd. One loop ([`Arbiter::run`]) drives all of it.
pub struct Arbiter {
    settings: Settings,
    /// The hook process of a Python configuration file, if any.
    hooks: crate::hooks::MasterHooks,
    /// The metrics process and its socket, with `--metrics-bind`.
    metrics: Option<crate::metrics::Metrics>,
    listeners: Vec<Listener>,
    scoreboard: Scoreboard,
    signals: SignalQueue,
    workers: HashMap<Pid, Worker>,
    wanted: usize,
    master_pid: i32,
    /// The first worker of a boot: the others wait until it has loaded the
    /// application, so that a broken app fails once, not once per worker.
    probe: Option<Pid>,
    early_deaths: u32,
    next_spawn_ms: u64,
    /// Why and with what code the master must stop (a worker cannot boot).
    halt: Option<(&'static str, i32)>,
    /// The application was loaded here (`--preload`): a reload must
    /// re-execute the master to load new code.
    preloaded: bool,
    /// Workers of this master's previous image (before a re-exec): they are
    /// finishing their requests; killed if still there at the deadline.
    orphans: Vec<Pid>,
    orphans_deadline_ms: u64,
    notifier: crate::systemd::Notifier,
    /// READY=1 was sent (after the first worker booted).
    ready: bool,
    /// READY=1 waits for a worker started at or after this (a reload's new
    /// workers, not the old ones).
    ready_after_ms: u64,
    /// Workers recycled, by reason.
    restarts: recycle::Restarts,
    /// `--pid`: renamed to `.oldbin` during an upgrade.
    pidfile: Option<crate::pidfile::Pidfile>,
    /// The new master of a `USR2` upgrade under way (a child of this one).
    upgrade: Option<Pid>,
    /// The configuration running, as `HUP` compares a new one with it.
    config: Option<crate::cli::Cli>,
    /// Workers forked so far (the next one's `age`).
    worker_age: u64,
    /// Each slot's inbox, kept open here so that what is queued for a
    /// worker that dies waits for the next one in its slot (never read
    /// here).
    inboxes: rgun_worker::handoff::Inboxes,
}

/// Where a re-executing master lists the workers it leaves to its new image.
const ORPHANS_ENV: &str = "RGUN_OLD_WORKERS";
/// The pid of the master a `USR2` upgrade started this one from.
const UPGRADE_FROM_ENV: &str = "RGUN_UPGRADE_FROM";

impl Arbiter {
    /// `signals`: from [`install_signals`], done before anything an
    /// operator can see (the pid file, "Listening at"), so that a signal sent
    /// as soon as the master shows is queued, not fatal.
    pub fn new(
        settings: Settings,
        helpers: Helpers,
        listeners: Vec<Listener>,
        preloaded: bool,
        signals: SignalQueue,
        pidfile: Option<crate::pidfile::Pidfile>,
    ) -> Result<Arbiter> {
        if let Ok(old) = std::env::var(UPGRADE_FROM_ENV) {
            log::info!("Upgrading the master of pid {old}: this master shares its sockets");
            // SAFETY: the master is single-threaded.
            unsafe { std::env::remove_var(UPGRADE_FROM_ENV) };
        }
        let scoreboard = Scoreboard::new(crate::cli::MAX_WORKERS * 2)?;
        let orphans: Vec<Pid> = std::env::var(ORPHANS_ENV)
            .unwrap_or_default()
            .split(',')
            .filter_map(|pid| pid.parse().ok().map(Pid::from_raw))
            .collect();
        // SAFETY: the master is single-threaded.
        unsafe { std::env::remove_var(ORPHANS_ENV) };
        Ok(Arbiter {
            notifier: crate::systemd::Notifier::from_env(),
            ready: false,
            ready_after_ms: 0,
            preloaded,
            orphans,
            orphans_deadline_ms: monotonic_ms() + settings.graceful_timeout_ms,
            wanted: settings.workers,
            settings,
            hooks: helpers.hooks,
            metrics: helpers.metrics,
            listeners,
            scoreboard,
            signals,
            workers: HashMap::new(),
            master_pid: std::process::id() as i32,
            inboxes: rgun_worker::handoff::Inboxes::new(),
            probe: None,
            early_deaths: 0,
            next_spawn_ms: 0,
            halt: None,
            restarts: recycle::Restarts::default(),
            pidfile,
            upgrade: None,
            config: None,
            worker_age: 0,
        })
    }

    /// Run until stopped: returns the process's exit code. The server
    /// hooks `when_ready` and `on_exit` frame it, as in Gunicorn (not
    /// `on_exit` after a hook raised: Gunicorn's master leaves at once).
    pub fn run(&mut self) -> i32 {
        self.scoreboard.master().set_phase(Phase::Serving);
        if !self.hooks.resumed {
            self.hook(crate::hooks::Event::WhenReady);
        }
        let code = self.serve();
        if self
            .halt
            .is_some_and(|(reason, _)| reason == hooked::HOOK_RAISED)
        {
            return hooked::EXIT_HOOK_ERROR;
        }
        match self.run_hook(crate::hooks::Event::OnExit) {
            crate::hooks::Outcome::Raised if code == 0 => hooked::EXIT_HOOK_ERROR,
            _ => code,
        }
    }

    fn serve(&mut self) -> i32 {
        loop {
            self.keep_metrics();
            self.manage_workers();
            // While the first worker loads the application the others wait
            // for it: look again soon rather than a whole tick later.
            self.wait(if self.probe.is_some() || self.recycling() {
                PROBE_POLL_MS
            } else {
                TICK_MS
            });
            self.signals.drain();
            self.reap_workers();
            if let Some((reason, code)) = self.halt {
                self.stop(false);
                log::info!("Shutting down: Master");
                log::info!("Reason: {reason}");
                return code;
            }
            if self.signals.take(Signal::SIGINT) + self.signals.take(Signal::SIGQUIT) > 0 {
                log::info!("Handling signal: int/quit");
                self.stop(false);
                log::info!("Shutting down: Master");
                return 0;
            }
            if self.signals.take(Signal::SIGTERM) > 0 {
                log::info!("Handling signal: term");
                self.stop(true);
                log::info!("Shutting down: Master");
                return 0;
            }
            self.handle_queued();
            self.murder_workers();
            self.reload_on_wish();
            self.recycle_workers();
        }
    }

    fn handle_queued(&mut self) {
        let _ = self.signals.take(Signal::SIGCHLD);
        if self.signals.take(Signal::SIGHUP) > 0 {
            self.handle_hup();
        }
        for _ in 0..self.signals.take(Signal::SIGTTIN) {
            self.set_wanted((self.wanted + 1).min(crate::cli::MAX_WORKERS));
            log::info!("Handling signal: ttin; {} workers wanted", self.wanted);
        }
        for _ in 0..self.signals.take(Signal::SIGTTOU) {
            self.set_wanted(self.wanted.saturating_sub(1).max(1));
            log::info!("Handling signal: ttou; {} workers wanted", self.wanted);
        }
        if self.signals.take(Signal::SIGUSR1) > 0 {
            log::info!("Handling signal: usr1; reopening log files");
            crate::logging::reopen();
            self.signal_workers(Signal::SIGUSR1);
        }
        if self.signals.take(Signal::SIGWINCH) > 0 {
            self.handle_winch();
        }
        if self.signals.take(Signal::SIGUSR2) > 0 {
            self.handle_usr2();
        }
    }

    /// Stop one worker gracefully while others go on: its idle connections
    /// are handed to them (the slot says it is replaced), if any serve.
    fn retire(&mut self, pid: Pid) {
        let others_serve = self.upgrade.is_some()
            || self
                .workers
                .iter()
                .any(|(other, w)| *other != pid && w.is_serving());
        if let Some(worker) = self.workers.get_mut(&pid) {
            worker.life = Life::Retiring;
            self.scoreboard.slot(worker.slot).mark_retiring();
            if others_serve {
                self.scoreboard.slot(worker.slot).mark_replaced();
            }
            let _ = kill(pid, Signal::SIGTERM);
        }
    }

    /// Sleep until a signal arrives or `timeout_ms` passes.
    fn wait(&self, timeout_ms: u16) {
        // SAFETY: the queue's descriptor stays open as long as `self`.
        let fd = unsafe { BorrowedFd::borrow_raw(self.signals.fd()) };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(timeout_ms)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => log::error!("waiting for signals failed: {e}"),
        }
    }

    fn manage_workers(&mut self) {
        if self.halt.is_some() {
            return;
        }
        if let Some(probe) = self.probe {
            match self.workers.get(&probe) {
                Some(w) if !self.scoreboard.slot(w.slot).is_booted() => return,
                _ => self.probe = None,
            }
        }
        if !self.ready
            && self.workers.values().any(|w| {
                w.started_ms >= self.ready_after_ms && self.scoreboard.slot(w.slot).is_booted()
            })
        {
            self.ready = true;
            self.notifier.notify(&format!(
                "READY=1\nMAINPID={}\nSTATUS=serving with {} workers",
                self.master_pid, self.wanted
            ));
        }
        let active: Vec<(Pid, u64)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.is_serving())
            .map(|(p, w)| (*p, w.started_ms))
            .collect();
        if active.len() < self.wanted && monotonic_ms() >= self.next_spawn_ms {
            let booted_any = self
                .workers
                .values()
                .any(|w| self.scoreboard.slot(w.slot).is_booted());
            if !booted_any {
                // Nothing has proven the application loads: one first.
                if let Some(pid) = self.spawn_worker() {
                    self.probe = Some(pid);
                }
                return;
            }
            for _ in active.len()..self.wanted {
                // A pre_fork hook that raised stops the master: no more.
                if self.halt.is_some() {
                    break;
                }
                self.spawn_worker();
            }
        } else if active.len() > self.wanted {
            // Like Gunicorn: the oldest go first.
            let mut by_age = active;
            by_age.sort_by_key(|(_, started)| *started);
            for (pid, _) in by_age.iter().take(by_age.len() - self.wanted) {
                self.retire(*pid);
            }
        }
    }

    /// Signal every worker, including those of this master's previous image
    /// (after a `--preload` reload), which are still its children.
    fn signal_workers(&self, signal: Signal) {
        for pid in self.workers.keys().chain(&self.orphans) {
            let _ = kill(*pid, signal);
        }
    }

    /// Stop every worker: TERM and up to `--graceful-timeout` for a graceful
    /// stop, QUIT for a quick one; SIGKILL for whatever is left.
    fn stop(&mut self, graceful: bool) {
        // Unready first (`/readyz`), before any worker stops accepting.
        self.scoreboard.master().set_phase(Phase::Stopping);
        self.notifier.notify("STOPPING=1\nSTATUS=stopping");
        // After an upgrade the new master listens on the same sockets: their
        // files stay (as Gunicorn and Nginx leave them).
        if self.upgrade.is_none() {
            for listener in &self.listeners {
                listener.unlink();
            }
            if let Some(metrics) = &self.metrics {
                metrics.listener.unlink();
            }
        }
        // Their exit is expected now, not a failure to report.
        for worker in self.workers.values_mut() {
            worker.life = Life::Retiring;
            self.scoreboard.slot(worker.slot).mark_retiring();
        }
        let signal = if graceful {
            Signal::SIGTERM
        } else {
            Signal::SIGQUIT
        };
        self.signal_workers(signal);
        let deadline = monotonic_ms().saturating_add(self.settings.graceful_timeout_ms);
        while !(self.workers.is_empty() && self.orphans.is_empty()) && monotonic_ms() < deadline {
            self.scoreboard.master().beat(monotonic_ms());
            self.wait(100);
            self.signals.drain();
            if graceful
                && self.signals.take(Signal::SIGINT) + self.signals.take(Signal::SIGQUIT) > 0
            {
                self.signal_workers(Signal::SIGQUIT);
            }
            self.reap_workers();
        }
        if !(self.workers.is_empty() && self.orphans.is_empty()) {
            log::warn!(
                "{} workers still running after the graceful timeout; killing them",
                self.workers.len() + self.orphans.len()
            );
            self.signal_workers(Signal::SIGKILL);
            for pid in self.workers.keys().chain(&self.orphans) {
                let _ = waitpid(*pid, None);
            }
            self.workers.clear();
            self.orphans.clear();
        }
        if let Some(metrics) = &mut self.metrics {
            metrics.stop();
        }
    }

    /// Each turn of the loop: the heartbeat and the workers wanted, for
    /// the metrics process, and that process itself, started again if it
    /// died.
    fn keep_metrics(&mut self) {
        let master = self.scoreboard.master();
        master.beat(monotonic_ms());
        master.set_wanted(self.wanted);
        if let Some(metrics) = &mut self.metrics {
            metrics.keep_running(&crate::metrics::Sources {
                scoreboard: &self.scoreboard,
                listeners: &self.listeners,
                master_pid: self.master_pid,
                identity: self.settings.identity.as_ref(),
            });
        }
    }
}
