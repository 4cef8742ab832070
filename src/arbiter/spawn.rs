//! Forking a worker: a free scoreboard slot, signals blocked across fork,
//! the preloaded interpreter's fork hooks, and in the child the hand-over
//! of the listeners and the configuration to `rgun_worker::run`.

use nix::unistd::{ForkResult, Pid, fork};

use super::{Arbiter, EXIT_WORKER_PANIC, HANDLED_SIGNALS, MAX_BACKOFF_MS, Worker};
use rgun_worker::scoreboard::monotonic_ms;
use rgun_worker::signals;
use rgun_worker::{ListenerFd, ListenerSocket, SocketKind};

impl Arbiter {
    /// A slot no worker holds; first one whose inbox holds connections
    /// sent to a worker that died before it took them, so that its
    /// replacement takes them.
    fn free_slot(&self) -> Option<usize> {
        let free = |i: &usize| !self.workers.values().any(|w| w.slot == *i);
        (0..self.scoreboard.len())
            .filter(free)
            .find(|&i| self.inboxes.has_waiting(i))
            .or_else(|| (0..self.scoreboard.len()).find(free))
    }

    pub(super) fn spawn_worker(&mut self) -> Option<Pid> {
        let Some(slot_index) = self.free_slot() else {
            log::error!("no free scoreboard slot for another worker");
            return None;
        };
        // Gunicorn's pre_fork(server, worker), before anything is set up
        // for the worker: one that raised forks nothing (and stops us).
        let age = self.worker_age + 1;
        if self.hook(crate::hooks::Event::PreFork { age }) == crate::hooks::Outcome::Raised {
            return None;
        }
        self.worker_age = age;
        let now = monotonic_ms();
        self.scoreboard.slot(slot_index).reset(now);
        self.scoreboard.note_in_use(slot_index);
        let inbox = match self.inboxes.ensure(slot_index) {
            Ok(name) => name,
            Err(e) => {
                log::warn!(
                    "cannot make the inbox of worker slot {slot_index} ({e}): connections reach \
                     its worker through the shared channel only"
                );
                rgun_worker::handoff::InboxName(0)
            }
        };
        self.scoreboard.slot(slot_index).set_inbox_name(inbox);
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
                // Gunicorn's lines, written by the worker itself so that
                // the `[pid]` field is the worker's.
                let pid = std::process::id();
                log::info!("Booting worker with pid: {pid}");
                // A panic must end this process, never unwind into the
                // master's frames above (which own the listeners, the
                // scoreboard and the pid file).
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.run_worker(slot_index, age, mask)
                }))
                .unwrap_or(EXIT_WORKER_PANIC);
                log::info!("Worker exiting (pid: {pid})");
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                let _ = signals::restore_mask(&mask);
                self.workers.insert(
                    child,
                    Worker {
                        slot: slot_index,
                        age,
                        started_ms: now,
                        aborted: None,
                        life: super::Life::Serving,
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
    fn run_worker(&mut self, slot_index: usize, age: u64, mask: nix::sys::signal::SigSet) -> i32 {
        // The master's title is in the inherited command line: the worker
        // loads its application with the original one, then takes its own.
        crate::proctitle::restore();
        // The hook process must see the master's end close when the master
        // goes, not stay open in workers; the worker's own hooks learn its
        // age and the worker count.
        self.hooks.close_in_worker();
        // SAFETY: this forked child is single-threaded.
        unsafe {
            std::env::set_var(
                crate::hooks::HOOK_WORKER_ENV,
                format!("{age},{}", self.wanted),
            )
        };
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
        // The child never unmaps the scoreboard: it leaves through
        // process::exit, which runs no destructor of this arbiter.
        let peers = self.scoreboard.peers(slot_index);
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
        // The metrics socket is not the worker's to hold.
        drop(self.metrics.take());
        // This child's copy of the arbiter ends here: its configuration
        // moves into the worker.
        let Some(config) = self.settings.worker.take() else {
            log::error!("worker started without its configuration");
            return rgun_worker::EXIT_BOOT_ERROR;
        };
        let inbox = std::mem::take(&mut self.inboxes).into_worker_inbox(slot_index);
        rgun_worker::run(
            slot_index as u32,
            self.master_pid,
            peers,
            listeners,
            config,
            inbox,
            mask,
        )
    }
}
