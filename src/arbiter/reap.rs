//! Dead and hung workers: reaping what exited (with Gunicorn's log lines
//! and the restart counted by its reason), and aborting a worker silent
//! past `--timeout` (SIGABRT, then SIGKILL).

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use rgun_worker::scoreboard::metrics::RestartReason;
use rgun_worker::scoreboard::monotonic_ms;
use rgun_worker::{EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR};

use super::{Abort, Arbiter, MAX_BACKOFF_MS};

/// A worker still alive this long after SIGABRT is killed.
const KILL_AFTER_ABORT_MS: u64 = 5000;
/// A worker that dies this soon after its start counts as failing to boot
/// for the back-off.
const EARLY_DEATH_MS: u64 = 1000;
/// The back-off before replacing workers that keep dying early: doubles from
/// this to `MAX_BACKOFF_MS`.
const FIRST_BACKOFF_MS: u64 = 100;

/// Gunicorn's CRITICAL line for a worker aborted by `--timeout`, with what
/// it was doing, from its slot: the request line in hand (written by the
/// worker's abort handler) and how long it had run.
fn log_timeout(pid: Pid, slot: &rgun_worker::scoreboard::Slot, abort: Abort, timeout_ms: u64) {
    let line = slot.request_line();
    let doing = if abort.ran_ms == 0 || line.is_empty() {
        "with no single request in hand (several threads, or none)".to_string()
    } else {
        format!(
            "handling \"{line}\" for {:.1} s",
            abort.ran_ms as f64 / 1000.0
        )
    };
    log::error!(
        target: crate::logging::CRITICAL,
        "WORKER TIMEOUT (pid:{pid}) {doing} (--timeout {} s)",
        timeout_ms / 1000
    );
}

impl Arbiter {
    pub(super) fn reap_workers(&mut self) {
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
            if let Some(metrics) = &mut self.metrics
                && metrics.reaped(pid, code, signal)
            {
                continue;
            }
            let Some(worker) = self.workers.remove(&pid) else {
                if !self.hooks.reaped(pid) && !self.reap_new_master(pid, code) {
                    self.orphans.retain(|p| *p != pid);
                }
                continue;
            };
            if let Some(abort) = worker.aborted {
                log_timeout(
                    pid,
                    self.scoreboard.slot(worker.slot),
                    abort,
                    self.settings.timeout_ms,
                );
            }
            // Peers no longer count it as a worker that takes work.
            self.scoreboard.slot(worker.slot).clear();
            if !worker.is_retiring() {
                self.scoreboard
                    .master()
                    .count_restart(match worker.aborted {
                        Some(_) => RestartReason::Timeout,
                        None => RestartReason::Crash,
                    });
            }
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
                // The worker said "Worker exiting" itself, as Gunicorn's do.
                (Some(0), _) if worker.is_retiring() => {}
                (Some(code), _) => log::warn!("Worker (pid:{pid}) exited with code {code}"),
                (None, Some(Signal::SIGKILL)) => {
                    log::error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?")
                }
                (None, Some(signal)) => log::error!("Worker (pid:{pid}) was killed by {signal}"),
                _ => {}
            }
            if !matches!(code, Some(EXIT_APP_LOAD_ERROR | EXIT_BOOT_ERROR)) {
                self.hook(crate::hooks::Event::ChildExit {
                    pid: pid.as_raw(),
                    age: worker.age,
                });
            }
            let now = monotonic_ms();
            if !worker.is_retiring() && now.saturating_sub(worker.started_ms) < EARLY_DEATH_MS {
                self.early_deaths += 1;
                let backoff = (FIRST_BACKOFF_MS << self.early_deaths.min(16)).min(MAX_BACKOFF_MS);
                self.next_spawn_ms = now + backoff;
            } else if !worker.is_retiring() {
                self.early_deaths = 0;
            }
        }
    }

    /// A worker whose heartbeat is older than `--timeout` is hung in the
    /// application: SIGABRT (its handler answers the request in hand), then
    /// SIGKILL if it is still there.
    pub(super) fn murder_workers(&mut self) {
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
            match worker.aborted {
                None if now.saturating_sub(slot.heartbeat_ms()) > self.settings.timeout_ms => {
                    // The worker's SIGABRT handler writes the request line
                    // in hand into its slot; the log line is written when
                    // the worker is reaped (`log_timeout`).
                    slot.mark_timed_out();
                    let started = slot.request_started_ms();
                    let _ = kill(*pid, Signal::SIGABRT);
                    worker.aborted = Some(Abort {
                        at_ms: now,
                        ran_ms: if started == 0 {
                            0
                        } else {
                            now.saturating_sub(started)
                        },
                    });
                }
                Some(Abort { at_ms: at, .. }) if now.saturating_sub(at) > KILL_AFTER_ABORT_MS => {
                    let _ = kill(*pid, Signal::SIGKILL);
                }
                _ => {}
            }
        }
    }
}
