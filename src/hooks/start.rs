//! Starting the master's server hooks (`--python-hooks FILE`): the hook
//! process, what the workers of a Python application are told, and the
//! settings `server.cfg` shows, under Gunicorn's names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::{DEFAULT_HOOK_TIMEOUT_SECS, Event, MasterHooks, Outcome};
use crate::cli::{AppSpec, Cli};

/// Set when a master re-executes itself for a reload (`--preload`): the
/// new image's hooks are a reload's, not a start's (no `on_starting`,
/// `when_ready`).
pub const REEXEC_ENV: &str = "RGUN_HOOKS_REEXEC";

/// `--python-hooks FILE`: start the master's hook process, tell the
/// workers of a Python application where the file is, and run the start
/// hooks (Gunicorn's order: `nworkers_changed(server, N, None)` as the
/// worker count is first set, then `on_starting`, before binding).
pub fn start_for(
    cli: &Cli,
    start_dir: &Path,
    workers: usize,
    timeout_ms: u64,
) -> Result<MasterHooks> {
    let Some(file) = &cli.python_hooks else {
        return Ok(MasterHooks::off());
    };
    let file = start_dir.join(file);
    let settings = gunicorn_settings(cli, workers);
    let python_app = matches!(AppSpec::parse(&cli.app), AppSpec::Python { .. });
    let settings_line = settings.to_string();
    let timeout = Duration::from_millis(if timeout_ms == 0 {
        DEFAULT_HOOK_TIMEOUT_SECS * 1000
    } else {
        timeout_ms
    });
    let loaded = MasterHooks::start(
        file.clone(),
        crate::python::interpreter(),
        settings,
        timeout,
        workers,
    )?;
    if python_app && !loaded.worker_hooks.is_empty() {
        // The workers execute the file only when it has hooks for them:
        // otherwise its module-level code runs once, in the hook process,
        // as in Gunicorn's master.
        // SAFETY: the master is single-threaded.
        unsafe {
            std::env::set_var(HOOKS_FILE_ENV, &file);
            std::env::set_var(HOOK_SETTINGS_ENV, settings_line);
        }
    } else {
        // SAFETY: as above (a re-executed master may have them from before).
        unsafe {
            std::env::remove_var(HOOKS_FILE_ENV);
            std::env::remove_var(HOOK_SETTINGS_ENV);
        }
    }
    if !python_app && !loaded.worker_hooks.is_empty() {
        log::warn!(
            "{}: the worker hooks ({}) apply to Python applications only; its master hooks run",
            file.display(),
            loaded.worker_hooks.join(", ")
        );
    }
    let mut hooks = loaded.hooks;
    let resumed = std::env::var_os(REEXEC_ENV).is_some();
    // SAFETY: the master is single-threaded.
    unsafe { std::env::remove_var(REEXEC_ENV) };
    hooks.resumed = resumed;
    if !resumed {
        for event in [
            Event::NworkersChanged {
                new: workers,
                old: None,
            },
            Event::OnStarting,
        ] {
            if hooks.run(event, workers) == Outcome::Raised {
                bail!(
                    "the {} server hook raised an exception (see above)",
                    event.name()
                );
            }
        }
    }
    Ok(hooks)
}

/// Where the workers of a Python application find the file, and the
/// settings their `server.cfg` shows (read by wsgi/src/hooks.rs).
const HOOKS_FILE_ENV: &str = "RGUN_PYTHON_HOOKS";
const HOOK_SETTINGS_ENV: &str = "RGUN_HOOK_SETTINGS";
/// `AGE,NUM_WORKERS`, set in each new worker.
pub const HOOK_WORKER_ENV: &str = "RGUN_HOOK_WORKER";

/// The effective settings under Gunicorn's names, for `server.cfg`.
fn gunicorn_settings(cli: &Cli, workers: usize) -> Value {
    let binds = if cli.bind.is_empty() {
        vec![crate::cli::DEFAULT_BIND.to_string()]
    } else {
        cli.bind.clone()
    };
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    json!({
        "bind": binds,
        "workers": workers,
        "threads": cli.threads,
        "worker_class": if cli.threads > 1 { "gthread" } else { "sync" },
        "timeout": cli.timeout,
        "graceful_timeout": cli.graceful_timeout,
        "keepalive": cli.keep_alive,
        "backlog": cli.backlog,
        "max_requests": cli.max_requests,
        "max_requests_jitter": cli.max_requests_jitter,
        "worker_connections": cli.worker_connections,
        "limit_request_line": cli.limit_request_line,
        "limit_request_fields": cli.limit_request_fields,
        "limit_request_field_size": cli.limit_request_field_size,
        "preload_app": cli.preload,
        "reload": cli.reload,
        "chdir": path(&cli.chdir),
        "pythonpath": cli.pythonpath,
        "proc_name": cli.proc_name,
        "pidfile": path(&cli.pidfile),
        "user": cli.user,
        "group": cli.group,
        "umask": cli.umask,
        "forwarded_allow_ips": cli.forwarded_allow_ips,
        "accesslog": path(&cli.access_logfile),
        "errorlog": cli.error_logfile.display().to_string(),
        "loglevel": format!("{:?}", cli.log_level).to_lowercase(),
        "wsgi_app": cli.app,
    })
}
