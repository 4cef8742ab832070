//! `rgun`: the master process. It reads the command line, binds the sockets,
//! forks the workers and watches over them (see `arbiter`). Requests are
//! served in the workers (`worker/`), applications speak the gateway
//! interface (`gateway/`).

mod arbiter;
mod cli;
mod logging;
mod pidfile;
mod sockets;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::cli::{AppSpec, Cli};
use crate::sockets::{BindAddr, Listener};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = logging::init(&cli.error_logfile, cli.log_level.filter()) {
        eprintln!("rgun: {e}");
        return ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(failure) => {
            log::error!("{:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

/// An error at start-up, with the exit code it ends the master with.
struct Failure {
    error: anyhow::Error,
    code: u8,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            error: error.into(),
            code: 1,
        }
    }
}

fn run(cli: Cli) -> Result<i32, Failure> {
    if let Some(dir) = &cli.chdir {
        std::env::set_current_dir(dir)
            .with_context(|| format!("cannot change directory to {}", dir.display()))?;
    }
    let (app_path, app_symbol) = match AppSpec::parse(&cli.app) {
        AppSpec::Native { path, symbol } => (path, symbol),
        AppSpec::Python { module } => {
            return Err(Failure {
                error: anyhow::anyhow!(
                    "cannot load application {module:?}: Python WSGI applications are not supported by this build (give a path/to/lib.so:symbol)"
                ),
                code: rgun_worker::EXIT_APP_LOAD_ERROR as u8,
            });
        }
    };
    // Caught here, before any socket or fork, because it needs no code of the
    // application; everything else about loading is checked by the first
    // worker.
    if !app_path.exists() {
        return Err(Failure {
            error: rgun_worker::LoadError::NotFound { path: app_path }.into(),
            code: rgun_worker::EXIT_APP_LOAD_ERROR as u8,
        });
    }
    let settings = settings(&cli, app_path, app_symbol)?;
    let binds = if cli.bind.is_empty() {
        vec![cli::DEFAULT_BIND.to_string()]
    } else {
        cli.bind.clone()
    };
    let mut listeners = Vec::new();
    for spec in &binds {
        listeners.push(Listener::bind(&BindAddr::parse(spec)?, cli.backlog)?);
    }
    let pid = std::process::id();
    log::info!("Starting rgun {}", env!("CARGO_PKG_VERSION"));
    for listener in &listeners {
        log::info!(
            "Listening at: {} ({pid})",
            sockets::describe(&listener.addr)
        );
    }
    let pidfile = cli
        .pidfile
        .as_deref()
        .map(pidfile::Pidfile::create)
        .transpose()?;
    let mut arbiter = arbiter::Arbiter::new(settings, listeners)?;
    let code = arbiter.run();
    drop(pidfile);
    Ok(code)
}

fn settings(
    cli: &Cli,
    app_path: std::path::PathBuf,
    app_symbol: String,
) -> Result<arbiter::Settings> {
    if cli.workers > cli::MAX_WORKERS {
        bail!(
            "--workers {} is more than this rgun runs ({})",
            cli.workers,
            cli::MAX_WORKERS
        );
    }
    let mut request_line = cli.limit_request_line;
    if request_line == 0 || request_line > cli::MAX_LIMIT_REQUEST_LINE {
        request_line = cli::MAX_LIMIT_REQUEST_LINE;
    }
    let mut request_fields = cli.limit_request_fields;
    if request_fields > rgun_worker::parse::MAX_REQUEST_FIELDS_CAP {
        log::warn!(
            "--limit-request-fields {request_fields} lowered to {}",
            rgun_worker::parse::MAX_REQUEST_FIELDS_CAP
        );
        request_fields = rgun_worker::parse::MAX_REQUEST_FIELDS_CAP;
    }
    let io_timeout_secs = if cli.timeout == 0 {
        cli::UNLIMITED_IO_TIMEOUT_SECS
    } else {
        cli.timeout
    };
    Ok(arbiter::Settings {
        workers: cli.workers.max(1),
        timeout_ms: cli.timeout * 1000,
        graceful_timeout_ms: cli.graceful_timeout * 1000,
        worker: rgun_worker::WorkerConfig {
            app_path,
            app_symbol,
            limits: rgun_worker::Limits {
                request_line,
                request_fields,
                request_field_size: cli.limit_request_field_size,
                request_body: cli.limit_request_body,
            },
            keep_alive_ms: cli.keep_alive * 1000,
            header_timeout_ms: cli.header_timeout * 1000,
            io_timeout_ms: io_timeout_secs * 1000,
            access_log: cli.access_logfile.clone(),
        },
    })
}
