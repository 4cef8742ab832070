//! Reloading on `HUP`: new workers before old ones leave, or, with
//! `--preload`, a new image of the master that keeps the listening sockets.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Arbiter, ORPHANS_ENV};
use rgun_worker::scoreboard::{Wish, monotonic_ms};

impl Arbiter {
    /// HUP: new workers first (they load the library afresh, so a rebuilt
    /// one goes live), then the old ones leave gracefully: no request is
    /// refused, the listeners never close.
    pub(super) fn handle_hup(&mut self) {
        if self.preloaded {
            // The new image reads the configuration itself: it must load.
            if let Err(line) = crate::config::reload::reread(self.settings.start_dir.as_deref()) {
                log::error!(
                    "Handling signal: hup; the configuration does not load: {line}; not reloading (the master would not start again)"
                );
                return;
            }
            self.notify_reloading();
            self.hook(crate::hooks::Event::OnReload);
            self.reexec();
            return;
        }
        log::info!("Handling signal: hup; reloading");
        self.reconfigure();
        // Gunicorn's order: on_reload, then the new workers.
        self.hook(crate::hooks::Event::OnReload);
        self.reload_workers();
    }

    /// `--reload`: a worker saw its application change (its slot says so).
    pub(super) fn reload_on_wish(&mut self) {
        let wished = self
            .workers
            .values()
            .any(|w| w.is_serving() && self.scoreboard.slot(w.slot).wish() == Wish::Reload);
        if wished {
            log::info!("Reloading: the application changed (--reload)");
            self.reload_workers();
        }
    }

    fn notify_reloading(&mut self) {
        self.notifier.notify("RELOADING=1\nSTATUS=reloading");
        self.ready = false;
        self.ready_after_ms = monotonic_ms();
    }

    /// New workers first, then the old ones stop gracefully.
    fn reload_workers(&mut self) {
        self.notify_reloading();
        let old: Vec<Pid> = self
            .workers
            .iter()
            .filter(|(_, w)| w.is_serving())
            .map(|(p, _)| *p)
            .collect();
        for _ in 0..self.wanted {
            self.spawn_worker();
        }
        for pid in old {
            self.scoreboard
                .master()
                .count_restart(rgun_worker::scoreboard::metrics::RestartReason::Reload);
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
        if let Err(e) = self.keep_across_exec(true) {
            log::error!("{e}; not reloading");
            return;
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
        self.set_inheritance_env();
        // The new image starts its own metrics process.
        if let Some(metrics) = &mut self.metrics {
            metrics.stop();
        }
        // SAFETY: the master is single-threaded.
        unsafe {
            std::env::set_var(ORPHANS_ENV, old_list.join(","));
            std::env::set_var(crate::hooks::REEXEC_ENV, "1");
        }
        let (exe, mut command) = self.own_command();
        let err = std::os::unix::process::CommandExt::exec(&mut command);
        // Only reached when exec failed: carry on with new workers.
        log::error!(
            "cannot re-execute {}: {err}; starting new workers from this image",
            exe.display()
        );
        self.clear_inheritance_env();
        // SAFETY: as above.
        unsafe {
            std::env::remove_var(ORPHANS_ENV);
            std::env::remove_var(crate::hooks::REEXEC_ENV);
        }
        let _ = self.keep_across_exec(false);
        if let Some(metrics) = &mut self.metrics {
            metrics.resume();
        }
        for pid in old {
            if let Some(worker) = self.workers.get_mut(&pid) {
                worker.life = super::Life::Retiring;
            }
        }
    }

    /// Keep the listening sockets and the hand-off channel open across
    /// exec, for a new image of the master (or close them on exec again).
    pub(super) fn keep_across_exec(&self, keep: bool) -> anyhow::Result<()> {
        for listener in &self.listeners {
            listener
                .keep_across_exec(keep)
                .map_err(|e| e.context("cannot keep a listening socket across exec"))?;
        }
        if let Some(config) = &self.settings.worker {
            config.channel.keep_across_exec(keep).map_err(|e| {
                anyhow::anyhow!("cannot keep the hand-off channel across exec: {e}")
            })?;
        }
        if let Some(metrics) = &self.metrics {
            metrics
                .listener
                .keep_across_exec(keep)
                .map_err(|e| e.context("cannot keep the metrics socket across exec"))?;
        }
        Ok(())
    }

    /// Tell the new image what it inherits: the listening sockets, the
    /// hand-off channel, systemd's notification socket.
    pub(super) fn set_inheritance_env(&self) {
        let fds: Vec<String> = self.listeners.iter().map(|l| l.inherit_entry()).collect();
        self.notifier.restore_env();
        // SAFETY: the master is single-threaded (or a child of it about to
        // exec).
        unsafe {
            std::env::set_var(crate::sockets::INHERIT_ENV, fds.join(","));
            if let Some(config) = &self.settings.worker {
                std::env::set_var(crate::CHANNEL_ENV, config.channel.inherit_entry());
            }
            if let Some(metrics) = &self.metrics {
                std::env::set_var(
                    crate::metrics::METRICS_FD_ENV,
                    metrics.listener.fd().to_string(),
                );
            }
        }
    }

    pub(super) fn clear_inheritance_env(&self) {
        // SAFETY: the master is single-threaded.
        unsafe {
            std::env::remove_var(crate::sockets::INHERIT_ENV);
            std::env::remove_var(crate::CHANNEL_ENV);
            std::env::remove_var(crate::metrics::METRICS_FD_ENV);
            std::env::remove_var("NOTIFY_SOCKET");
        }
    }

    /// This binary with the arguments it was started with, run from the
    /// directory it was started in.
    pub(super) fn own_command(&self) -> (std::path::PathBuf, std::process::Command) {
        let exe = std::env::current_exe()
            .map(|p| {
                let text = p.to_string_lossy();
                std::path::PathBuf::from(
                    text.strip_suffix(" (deleted)").unwrap_or(&text).to_string(),
                )
            })
            .unwrap_or_else(|_| crate::proctitle::original_program().into());
        let mut command = std::process::Command::new(&exe);
        // The same argv[0] too: when this master is a virtualenv's Python
        // (the pip-installed rgun), /proc/self/exe names the base
        // interpreter the venv's `python` links to, and CPython finds the
        // virtualenv from argv[0] only.
        std::os::unix::process::CommandExt::arg0(
            &mut command,
            crate::proctitle::original_program(),
        );
        command.args(crate::proctitle::original_args());
        if let Some(dir) = &self.settings.start_dir {
            command.current_dir(dir);
        }
        (exe, command)
    }
}
