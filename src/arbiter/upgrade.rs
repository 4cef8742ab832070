//! `USR2`, the binary upgrade of Gunicorn and Nginx: the master forks and
//! executes the binary now installed, with the same arguments, handing over
//! the listening sockets and the hand-off channel (close-on-exec cleared in
//! that child only). The pid file becomes `<pidfile>.oldbin`. Both masters
//! serve until the operator sends the old one `WINCH` (its workers stop
//! gracefully, handing their idle connections to the new master's) and
//! then `QUIT`. If the new master does not come up, the old one serves on
//! and says so.
//!
//! Under systemd the new master tells the service manager it is the main
//! process (`MAINPID=` with `READY=1`, which needs `NotifyAccess=all`), and
//! the old one falls silent so that its own `STOPPING=1` does not stop the
//! service.

use nix::sys::signal::{SigHandler, Signal, kill};
use nix::unistd::{ForkResult, Pid, fork};

use super::{Arbiter, HANDLED_SIGNALS, Life};
use rgun_worker::signals;

/// The exit code of a child that could not execute the new binary.
const EXIT_EXEC_FAILED: i32 = 127;

impl Arbiter {
    pub(super) fn handle_usr2(&mut self) {
        if let Some(pid) = self.upgrade {
            log::warn!(
                "Handling signal: usr2; an upgrade is under way (new master pid {pid}): ignored"
            );
            return;
        }
        let (exe, _) = self.own_command();
        log::info!(
            "Handling signal: usr2; upgrading: starting a new master from {}",
            exe.display()
        );
        // Gunicorn runs pre_exec(server) in its forked child; here the
        // master runs it just before the fork: one process talks to the
        // hook process.
        self.hook(crate::hooks::Event::PreExec);
        if let Some(pidfile) = &mut self.pidfile {
            pidfile.move_to_oldbin();
        }
        match self.fork_new_master() {
            Some(pid) => {
                self.upgrade = Some(pid);
                self.notifier.set_silent(true);
                // The new master serves the metrics socket it inherits:
                // one answer to `/readyz`, from the master taking over.
                if let Some(metrics) = &mut self.metrics {
                    metrics.stop();
                }
            }
            None => self.upgrade_failed("it could not be started"),
        }
    }

    /// Fork, and in the child execute the binary with what it inherits.
    fn fork_new_master(&mut self) -> Option<Pid> {
        let mask = match signals::block_all() {
            Ok(mask) => mask,
            Err(e) => {
                log::error!("cannot block signals to fork a new master: {e}");
                return None;
            }
        };
        // SAFETY: the master is single-threaded; the child only sets its
        // environment and descriptor flags, then executes.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let _ = signals::set_handler(&HANDLED_SIGNALS, SigHandler::SigDfl);
                let _ = signals::restore_mask(&mask);
                let code = self.exec_new_master();
                // SAFETY: _exit leaves without running this copy's
                // destructors (the pid file, the sockets are the parent's).
                unsafe { libc::_exit(code) }
            }
            Ok(ForkResult::Parent { child }) => {
                let _ = signals::restore_mask(&mask);
                Some(child)
            }
            Err(e) => {
                let _ = signals::restore_mask(&mask);
                log::error!("cannot fork a new master: {e}");
                None
            }
        }
    }

    /// In the forked child: returns only if exec failed, with the exit code.
    fn exec_new_master(&self) -> i32 {
        if let Err(e) = self.keep_across_exec(true) {
            log::error!("{e}; the upgrade stops here");
            return EXIT_EXEC_FAILED;
        }
        self.set_inheritance_env();
        // SAFETY: this child is single-threaded.
        unsafe { std::env::set_var(super::UPGRADE_FROM_ENV, self.master_pid.to_string()) };
        let (exe, mut command) = self.own_command();
        let err = std::os::unix::process::CommandExt::exec(&mut command);
        log::error!("cannot execute {} for the upgrade: {err}", exe.display());
        EXIT_EXEC_FAILED
    }

    /// The new master exited (or never started): this one serves on.
    pub(super) fn upgrade_failed(&mut self, why: &str) {
        log::error!("The upgrade failed ({why}); this master goes on serving");
        self.upgrade = None;
        if let Some(metrics) = &mut self.metrics {
            metrics.resume();
        }
        if let Some(pidfile) = &mut self.pidfile {
            pidfile.move_back_from_oldbin();
        }
        self.notifier.set_silent(false);
        self.notifier.notify(&format!(
            "MAINPID={}\nREADY=1\nSTATUS=upgrade failed; serving with {} workers",
            self.master_pid, self.wanted
        ));
    }

    /// A child that is the new master of an upgrade, when reaped.
    pub(super) fn reap_new_master(&mut self, pid: Pid, code: Option<i32>) -> bool {
        if self.upgrade != Some(pid) {
            return false;
        }
        let why = match code {
            Some(code) => format!("the new master (pid:{pid}) exited with code {code}"),
            None => format!("the new master (pid:{pid}) was killed"),
        };
        self.upgrade_failed(&why);
        true
    }

    /// `WINCH`: stop every worker gracefully and keep the master (after an
    /// upgrade, before `QUIT`). Honoured only without a controlling
    /// terminal, as under systemd: a terminal sends WINCH to its whole
    /// process group when resized (Gunicorn honours it only as a daemon).
    pub(super) fn handle_winch(&mut self) {
        if has_controlling_terminal() {
            log::debug!(
                "SIGWINCH ignored: a controlling terminal sends it on resize (send it to a master started without one)"
            );
            return;
        }
        log::info!("Handling signal: winch; stopping the workers gracefully, the master stays");
        self.set_wanted(0);
        // The new master's workers take the idle connections of these;
        // with no upgrade under way nobody would, and they are not moved.
        let hand_off = self.upgrade.is_some();
        let serving: Vec<Pid> = self
            .workers
            .iter()
            .filter(|(_, w)| w.life != Life::Retiring)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in serving {
            if let Some(worker) = self.workers.get_mut(&pid) {
                worker.life = Life::Retiring;
                self.scoreboard.slot(worker.slot).mark_retiring();
                if hand_off {
                    self.scoreboard.slot(worker.slot).mark_replaced();
                }
                let _ = kill(pid, Signal::SIGTERM);
            }
        }
    }
}

/// Whether this process has a controlling terminal.
fn has_controlling_terminal() -> bool {
    match nix::fcntl::open(
        "/dev/tty",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(_fd) => true,
        Err(_) => false,
    }
}
