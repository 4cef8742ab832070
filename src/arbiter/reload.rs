//! Reloading on `HUP`: new workers before old ones leave, or, with
//! `--preload`, a new image of the master that keeps the listening sockets.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Arbiter, ORPHANS_ENV};
use rgun_worker::scoreboard::monotonic_ms;

impl Arbiter {
    /// HUP: new workers first (they load the library afresh, so a rebuilt
    /// one goes live), then the old ones leave gracefully: no request is
    /// refused, the listeners never close.
    pub(super) fn handle_hup(&mut self) {
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
        // The same argv[0] too: when this master is a virtualenv's Python
        // (the pip-installed rgun), /proc/self/exe names the base
        // interpreter the venv's `python` links to, and CPython finds the
        // virtualenv from argv[0] only.
        let mut args = std::env::args_os();
        if let Some(arg0) = args.next() {
            std::os::unix::process::CommandExt::arg0(&mut command, arg0);
        }
        command.args(args);
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
}
