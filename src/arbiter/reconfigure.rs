//! `HUP` reads the configuration again (the file, `RGUN_CMD_ARGS`,
//! `GUNICORN_CMD_ARGS`, with the same command line) before the new workers
//! start: the worker count, timeouts, limits, log files and the rest apply
//! to them. The listening sockets stay as they are (no connection is
//! refused during a reload): a changed `bind` is logged as needing a
//! restart. A configuration that no longer loads changes nothing and says
//! why; the workers are still reloaded, with the settings they had.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;

use anyhow::Context;

use super::Arbiter;
use crate::cli::Cli;
use crate::config::{Loaded, reload};
use crate::hooks::MasterHooks;

/// Settings of the master itself, which a reload does not change (the
/// listening sockets have their own line): their names, where they differ.
fn needs_restart(old: &Cli, new: &Cli) -> Vec<&'static str> {
    [
        ("backlog", old.backlog != new.backlog),
        ("umask", old.umask != new.umask),
        ("reuse_port", old.reuse_port != new.reuse_port),
        ("preload", old.preload != new.preload),
        ("pidfile", old.pidfile != new.pidfile),
        ("proc_name", old.proc_name != new.proc_name),
        ("metrics_bind", old.metrics_bind != new.metrics_bind),
        ("capture_output", old.capture_output != new.capture_output),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

impl Arbiter {
    /// The configuration the master runs with, for the next `HUP`.
    pub fn set_config(&mut self, cli: Cli) {
        self.config = Some(cli);
    }

    /// Read the configuration again and apply it to the workers to come.
    pub(super) fn reconfigure(&mut self) {
        let loaded = match reload::reread(self.settings.start_dir.as_deref()) {
            Ok(loaded) => loaded,
            Err(line) => {
                log::error!(
                    "Reloading the configuration failed: {line}; the settings stay as they were"
                );
                return;
            }
        };
        // What `apply` changes before it can fail, the working directory
        // and the environment (`--env`, PYTHONPATH), goes back with the
        // settings: workers started later get what the others have.
        let cwd = std::env::current_dir().ok();
        let env = EnvSnapshot::take();
        if let Err(e) = self.apply(loaded) {
            env.restore();
            if let Some(dir) = cwd {
                let _ = std::env::set_current_dir(dir);
            }
            log::error!(
                "Reloading the configuration failed: {e:#}; the settings stay as they were"
            );
        }
    }

    /// The server hooks as the file now says: a new hook process executes
    /// it afresh (no start hooks: this is a reload), and the old one ends.
    /// If the new one does not start, the running one stays.
    /// A relative file is found from `start_dir`, as at the start.
    fn restart_hooks(
        &mut self,
        cli: &Cli,
        start_dir: &Path,
        workers: usize,
        timeout_ms: u64,
    ) -> MasterHooks {
        let running = std::mem::replace(&mut self.hooks, MasterHooks::off());
        if cli.python_hooks.is_none() {
            return MasterHooks::off();
        }
        // SAFETY: the master is single-threaded.
        unsafe { std::env::set_var(crate::hooks::REEXEC_ENV, "1") };
        match crate::hooks::start_for(cli, start_dir, workers, timeout_ms) {
            Ok(hooks) => hooks,
            Err(e) => {
                // SAFETY: as above.
                unsafe { std::env::remove_var(crate::hooks::REEXEC_ENV) };
                log::error!("Reloading the server hooks failed: {e:#}; the running ones stay");
                running
            }
        }
    }

    fn apply(&mut self, loaded: Loaded) -> anyhow::Result<()> {
        let mut cli = loaded.cli.clone();
        if let Some(old) = &self.config {
            let kept = needs_restart(old, &cli);
            if !kept.is_empty() {
                log::warn!(
                    "{} changed: a reload keeps the value the master started with; restart rgun to apply it",
                    kept.join(", ")
                );
            }
        }
        cli.preload = self.preloaded;
        let binds = if cli.bind.is_empty() {
            vec![crate::cli::DEFAULT_BIND.to_string()]
        } else {
            cli.bind.clone()
        };
        if !reload::binds_match(&binds, &self.listeners)
            && !self
                .listeners
                .iter()
                .any(crate::sockets::Listener::is_from_systemd)
        {
            reload::log_bind_refused(&binds, &self.listeners);
        }
        if let Some(start) = &self.settings.start_dir {
            std::env::set_current_dir(start)
                .with_context(|| format!("cannot change directory to {}", start.display()))?;
        }
        if let Some(dir) = &cli.chdir {
            std::env::set_current_dir(dir)
                .with_context(|| format!("cannot change directory to {}", dir.display()))?;
        }
        crate::set_env(&cli);
        let app = crate::resolve_app(&cli).map_err(|failure| failure.error)?;
        let mut settings = crate::settings(&cli, app)?;
        settings.identity =
            crate::privileges::Identity::resolve(cli.user.as_deref(), cli.group.as_deref())?;
        crate::prepare_access_log(settings.identity.as_ref(), cli.access_logfile.as_deref())?;
        crate::logging::init(
            &cli.error_logfile,
            cli.log_level.filter(),
            cli.capture_output,
        )?;
        // The connections' channel stays the one every worker, old and
        // new, shares; the new one `settings` opened is closed.
        if let (Some(new), Some(old)) = (&mut settings.worker, &mut self.settings.worker) {
            std::mem::swap(&mut new.channel, &mut old.channel);
        }
        settings.start_dir = self.settings.start_dir.take();
        let start_dir = settings.start_dir.clone().unwrap_or_default();
        self.hooks = self.restart_hooks(&cli, &start_dir, settings.workers, settings.timeout_ms);
        let wanted = settings.workers;
        // SAFETY: the master is single-threaded.
        unsafe { std::env::set_var("RGUN_WORKERS", wanted.to_string()) };
        self.settings = settings;
        // The file's count replaces a TTIN/TTOU one, and says so to the
        // hooks, as Gunicorn's reload does.
        self.set_wanted(wanted);
        loaded.log_notes();
        log::info!(
            "Configuration reloaded: {} workers, timeout {} s",
            self.wanted,
            cli.timeout
        );
        self.config = Some(cli);
        Ok(())
    }
}

/// The master's environment as it was, to put back when a reload fails
/// part-way.
struct EnvSnapshot(HashMap<OsString, OsString>);

impl EnvSnapshot {
    fn take() -> EnvSnapshot {
        EnvSnapshot(std::env::vars_os().collect())
    }

    fn restore(self) {
        // `vars_os` reads the whole environment first: removing as it goes
        // is safe.
        for (key, _) in std::env::vars_os() {
            if !self.0.contains_key(&key) {
                // SAFETY: the master is single-threaded.
                unsafe { std::env::remove_var(&key) };
            }
        }
        for (key, was) in &self.0 {
            if std::env::var_os(key).as_ref() != Some(was) {
                // SAFETY: as above.
                unsafe { std::env::set_var(key, was) };
            }
        }
    }
}
