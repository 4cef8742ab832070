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
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use rgun_worker::scoreboard::{Scoreboard, monotonic_ms};
use rgun_worker::signals::{self, SignalQueue};
use rgun_worker::{
    EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR, ListenerFd, ListenerSocket, SocketKind, WorkerConfig,
};

use crate::sockets::Listener;

/// How often the loop wakes without a signal (Gunicorn sleeps up to 1 s).
const TICK_MS: u16 = 1000;
/// A worker's exit code when it panicked (a bug): replaced like a crash.
const EXIT_WORKER_PANIC: i32 = 70;
/// How often the master looks whether the first worker has loaded the
/// application, while the others wait for it.
const PROBE_POLL_MS: u16 = 10;
/// A worker still alive this long after SIGABRT is killed.
const KILL_AFTER_ABORT_MS: u64 = 5000;
/// A worker that dies this soon after its start counts as failing to boot
/// for the back-off.
const EARLY_DEATH_MS: u64 = 1000;
/// The back-off before replacing workers that keep dying early: doubles from
/// the first to the last.
const FIRST_BACKOFF_MS: u64 = 100;
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

/// What the master knows of one worker.
struct Worker {
    slot: usize,
    started_ms: u64,
    aborted_ms: Option<u64>,
    /// Sent TERM: leaving, no longer counted among the wanted.
    retiring: bool,
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
    /// Always there in the master; taken by a forked child as it becomes a
    /// worker.
    pub worker: Option<WorkerConfig>,
}

pub struct Arbiter {
    settings: Settings,
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
}

/// Where a re-executing master lists the workers it leaves to its new image.
const ORPHANS_ENV: &str = "RGUN_OLD_WORKERS";

impl Arbiter {
    /// `signals`: from [`install_signals`], done before anything an
    /// operator can see (the pid file, "Listening at"), so that a signal sent
    /// as soon as the master shows is queued, not fatal.
    pub fn new(
        settings: Settings,
        listeners: Vec<Listener>,
        preloaded: bool,
        signals: SignalQueue,
    ) -> Result<Arbiter> {
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
            listeners,
            scoreboard,
            signals,
            workers: HashMap::new(),
            master_pid: std::process::id() as i32,
            probe: None,
            early_deaths: 0,
            next_spawn_ms: 0,
            halt: None,
        })
    }

    /// Run until stopped: returns the process's exit code.
    pub fn run(&mut self) -> i32 {
        loop {
            self.manage_workers();
            // While the first worker loads the application the others wait
            // for it: look again soon rather than a whole tick later.
            self.wait(if self.probe.is_some() {
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
        }
    }

    fn handle_queued(&mut self) {
        let _ = self.signals.take(Signal::SIGCHLD);
        if self.signals.take(Signal::SIGHUP) > 0 {
            self.handle_hup();
        }
        for _ in 0..self.signals.take(Signal::SIGTTIN) {
            self.wanted = (self.wanted + 1).min(crate::cli::MAX_WORKERS);
            log::info!("Handling signal: ttin; {} workers wanted", self.wanted);
        }
        for _ in 0..self.signals.take(Signal::SIGTTOU) {
            self.wanted = self.wanted.saturating_sub(1).max(1);
            log::info!("Handling signal: ttou; {} workers wanted", self.wanted);
        }
        if self.signals.take(Signal::SIGUSR1) > 0 {
            log::info!("Handling signal: usr1; reopening log files");
            crate::logging::reopen();
            self.signal_workers(Signal::SIGUSR1);
        }
        if self.signals.take(Signal::SIGWINCH) > 0 {
            // As Gunicorn outside daemon mode: a terminal sends WINCH to the
            // whole process group when its window is resized.
            log::debug!("SIGWINCH ignored: rgun does not run as a daemon");
        }
        if self.signals.take(Signal::SIGUSR2) > 0 {
            log::warn!(
                "Handling signal: usr2; binary upgrade is not supported by this rgun, ignored"
            );
        }
    }

    /// HUP: new workers first (they load the library afresh, so a rebuilt
    /// one goes live), then the old ones leave gracefully: no request is
    /// refused, the listeners never close.
    fn handle_hup(&mut self) {
        self.notifier.notify("RELOADING=1\nSTATUS=reloading");
        self.ready = false;
        self.ready_after_ms = monotonic_ms();
        if self.preloaded {
            self.reexec();
            return;
        }
        log::info!("Handling signal: hup; reloading");
        let old: Vec<Pid> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.retiring)
            .map(|(p, _)| *p)
            .collect();
        for _ in 0..self.wanted {
            self.spawn_worker();
        }
        for pid in old {
            self.retire(pid);
        }
    }

    /// HUP with `--preload`: the code lives in this process, so new code
    /// needs a new image. The workers finish their requests and leave; the
    /// same binary is executed with the same arguments, keeping the pid and
    /// the listening sockets, which never close: connections wait in the
    /// backlog until the new workers accept them.
    fn reexec(&mut self) {
        log::info!(
            "Handling signal: hup; re-executing the master to load the application afresh (--preload)"
        );
        let mut fds = Vec::new();
        for listener in &self.listeners {
            if let Err(e) = listener.keep_across_exec(true) {
                log::error!("cannot keep a listening socket across exec: {e}; not reloading");
                return;
            }
            fds.push(listener.inherit_entry());
        }
        let old: Vec<Pid> = self
            .workers
            .keys()
            .copied()
            .chain(self.orphans.iter().copied())
            .collect();
        for pid in &old {
            let _ = kill(*pid, Signal::SIGTERM);
        }
        let old_list: Vec<String> = old.iter().map(|p| p.to_string()).collect();
        self.notifier.restore_env();
        // SAFETY: the master is single-threaded.
        unsafe {
            std::env::set_var(crate::sockets::INHERIT_ENV, fds.join(","));
            std::env::set_var(ORPHANS_ENV, old_list.join(","));
        }
        let exe = std::env::current_exe()
            .map(|p| {
                let text = p.to_string_lossy();
                std::path::PathBuf::from(
                    text.strip_suffix(" (deleted)").unwrap_or(&text).to_string(),
                )
            })
            .unwrap_or_else(|_| std::env::args_os().next().unwrap_or_default().into());
        let mut command = std::process::Command::new(&exe);
        command.args(std::env::args_os().skip(1));
        if let Some(dir) = &self.settings.start_dir {
            command.current_dir(dir);
        }
        let err = std::os::unix::process::CommandExt::exec(&mut command);
        // Only reached when exec failed: carry on with new workers.
        log::error!(
            "cannot re-execute {}: {err}; starting new workers from this image",
            exe.display()
        );
        // SAFETY: as above.
        unsafe {
            std::env::remove_var(crate::sockets::INHERIT_ENV);
            std::env::remove_var(ORPHANS_ENV);
            std::env::remove_var("NOTIFY_SOCKET");
        }
        for listener in &self.listeners {
            let _ = listener.keep_across_exec(false);
        }
        for pid in old {
            if let Some(worker) = self.workers.get_mut(&pid) {
                worker.retiring = true;
            }
        }
    }

    fn retire(&mut self, pid: Pid) {
        if let Some(worker) = self.workers.get_mut(&pid) {
            worker.retiring = true;
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

    fn reap_workers(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("reaping workers failed: {e}");
                    return;
                }
            };
            let (pid, code, signal) = match status {
                WaitStatus::Exited(pid, code) => (pid, Some(code), None),
                WaitStatus::Signaled(pid, signal, _) => (pid, None, Some(signal)),
                _ => continue,
            };
            let Some(worker) = self.workers.remove(&pid) else {
                self.orphans.retain(|p| *p != pid);
                continue;
            };
            if self.probe == Some(pid) {
                self.probe = None;
            }
            match (code, signal) {
                (Some(EXIT_APP_LOAD_ERROR), _) => {
                    self.halt = Some(("App failed to load.", EXIT_APP_LOAD_ERROR))
                }
                (Some(EXIT_BOOT_ERROR), _) => {
                    self.halt = Some(("Worker failed to boot.", EXIT_BOOT_ERROR))
                }
                (Some(0), _) if worker.retiring => log::info!("Worker exiting (pid: {pid})"),
                (Some(code), _) => log::warn!("Worker (pid:{pid}) exited with code {code}"),
                (None, Some(Signal::SIGKILL)) => {
                    log::error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?")
                }
                (None, Some(signal)) => log::error!("Worker (pid:{pid}) was killed by {signal}"),
                _ => {}
            }
            let now = monotonic_ms();
            if !worker.retiring && now.saturating_sub(worker.started_ms) < EARLY_DEATH_MS {
                self.early_deaths += 1;
                let backoff = (FIRST_BACKOFF_MS << self.early_deaths.min(16)).min(MAX_BACKOFF_MS);
                self.next_spawn_ms = now + backoff;
            } else if !worker.retiring {
                self.early_deaths = 0;
            }
        }
    }

    /// A worker whose heartbeat is older than `--timeout` is hung in the
    /// application: SIGABRT (its handler answers the request in hand), then
    /// SIGKILL if it is still there.
    fn murder_workers(&mut self) {
        let now = monotonic_ms();
        if !self.orphans.is_empty() && now > self.orphans_deadline_ms {
            for pid in self.orphans.drain(..) {
                log::warn!(
                    "Worker (pid:{pid}) of the previous master is still running after the graceful timeout; killing it"
                );
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        if self.settings.timeout_ms == 0 {
            return;
        }
        for (pid, worker) in &mut self.workers {
            let slot = self.scoreboard.slot(worker.slot);
            match worker.aborted_ms {
                None if now.saturating_sub(slot.heartbeat_ms()) > self.settings.timeout_ms => {
                    log::error!("WORKER TIMEOUT (pid:{pid})");
                    slot.mark_timed_out();
                    let _ = kill(*pid, Signal::SIGABRT);
                    worker.aborted_ms = Some(now);
                }
                Some(at) if now.saturating_sub(at) > KILL_AFTER_ABORT_MS => {
                    let _ = kill(*pid, Signal::SIGKILL);
                }
                _ => {}
            }
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
            .filter(|(_, w)| !w.retiring)
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

    fn free_slot(&self) -> Option<usize> {
        (0..self.scoreboard.len()).find(|i| !self.workers.values().any(|w| w.slot == *i))
    }

    fn spawn_worker(&mut self) -> Option<Pid> {
        let Some(slot_index) = self.free_slot() else {
            log::error!("no free scoreboard slot for another worker");
            return None;
        };
        let now = monotonic_ms();
        self.scoreboard.slot(slot_index).reset(now);
        // Signals stay blocked across fork so that the child never runs the
        // master's handlers (nginx does the same).
        let mask = match signals::block_all() {
            Ok(mask) => mask,
            Err(e) => {
                log::error!("cannot block signals to fork a worker: {e}");
                return None;
            }
        };
        let hooks = self.settings.fork_hooks;
        if let Some(hooks) = hooks {
            // SAFETY: the bridge's fork hooks take no arguments and are
            // called as CPython's PyOS_*Fork calls want: around fork.
            unsafe { (hooks.before)() };
        }
        // SAFETY: the master is single-threaded, so the child starts with a
        // consistent heap and no lock held by another thread.
        let forked = unsafe { fork() };
        if let Some(hooks) = hooks {
            // SAFETY: as above.
            unsafe {
                match forked {
                    Ok(ForkResult::Child) => (hooks.after_child)(),
                    _ => (hooks.after_parent)(),
                }
            }
        }
        match forked {
            Ok(ForkResult::Child) => {
                // Signals stay blocked until the worker has its own handlers
                // (rgun_worker::run restores `mask`): none may reach the
                // child with the master's handlers or the default action.
                let _ =
                    signals::set_handler(&HANDLED_SIGNALS, nix::sys::signal::SigHandler::SigDfl);
                // A panic must end this process, never unwind into the
                // master's frames above (which own the listeners, the
                // scoreboard and the pid file).
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.run_worker(slot_index, mask)
                }))
                .unwrap_or(EXIT_WORKER_PANIC);
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                let _ = signals::restore_mask(&mask);
                log::info!("Booting worker with pid: {child}");
                self.workers.insert(
                    child,
                    Worker {
                        slot: slot_index,
                        started_ms: now,
                        aborted_ms: None,
                        retiring: false,
                    },
                );
                Some(child)
            }
            Err(e) => {
                let _ = signals::restore_mask(&mask);
                log::error!("cannot fork a worker: {e}");
                self.next_spawn_ms = now + MAX_BACKOFF_MS;
                None
            }
        }
    }

    /// In the child: become a worker. Never returns to the master's loop.
    fn run_worker(&mut self, slot_index: usize, mask: nix::sys::signal::SigSet) -> i32 {
        if let Some(identity) = &self.settings.identity
            && let Err(e) = identity.assume()
        {
            log::error!(
                "worker cannot run as uid {} gid {}: {e:#}",
                identity.uid,
                identity.gid
            );
            return rgun_worker::EXIT_BOOT_ERROR;
        }
        // SAFETY: the child never unmaps the scoreboard: it leaves through
        // process::exit, which runs no destructor of this arbiter.
        let slot: &'static rgun_worker::scoreboard::Slot =
            unsafe { &*(self.scoreboard.slot(slot_index) as *const _) };
        let listeners = self
            .listeners
            .iter()
            .map(|l| ListenerFd {
                socket: ListenerSocket {
                    fd: l.fd(),
                    kind: if matches!(l.addr, crate::sockets::BindAddr::Unix(_)) {
                        SocketKind::Unix
                    } else {
                        SocketKind::Tcp
                    },
                },
                info: l.info(),
            })
            .collect();
        // This child's copy of the arbiter ends here: its configuration
        // moves into the worker.
        let Some(config) = self.settings.worker.take() else {
            log::error!("worker started without its configuration");
            return rgun_worker::EXIT_BOOT_ERROR;
        };
        rgun_worker::run(
            slot_index as u32,
            self.master_pid,
            slot,
            listeners,
            config,
            mask,
        )
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
        self.notifier.notify("STOPPING=1\nSTATUS=stopping");
        for listener in &self.listeners {
            listener.unlink();
        }
        // Their exit is expected now, not a failure to report.
        for worker in self.workers.values_mut() {
            worker.retiring = true;
        }
        let signal = if graceful {
            Signal::SIGTERM
        } else {
            Signal::SIGQUIT
        };
        self.signal_workers(signal);
        let deadline = monotonic_ms().saturating_add(self.settings.graceful_timeout_ms);
        while !(self.workers.is_empty() && self.orphans.is_empty()) && monotonic_ms() < deadline {
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
    }
}
