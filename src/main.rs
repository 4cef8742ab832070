//! `rgun`: the master process. It reads the command line, binds the sockets,
//! forks the workers and watches over them (see `arbiter`). Requests are
//! served in the workers (`worker/`), applications speak the gateway
//! interface (`gateway/`).

mod arbiter;
mod cli;
mod config;
mod hooks;
mod logging;
mod metrics;
mod pidfile;
mod privileges;
mod proctitle;
mod python;
mod sockets;
mod systemd;

/// The pip-installed `rgun` (issue 14): this same master, built into an
/// extension module of the virtualenv's own Python (`python/`), so that the
/// Python bridge hosts that interpreter instead of embedding a libpython.
#[cfg(rgun_hosted)]
#[path = "../python/src/hosted.rs"]
mod hosted;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use rgun_gateway::ffi;
use rgun_worker::AppSource;

use crate::cli::{AppSpec, Cli};
use crate::sockets::{BindAddr, Listener};

#[cfg_attr(rgun_hosted, allow(dead_code))]
fn main() -> ExitCode {
    proctitle::save_args();
    ExitCode::from(serve_args(std::env::args_os().collect()))
}

/// The exit code of a bad flag, configuration file or variable (clap's for
/// a bad flag).
const EXIT_USAGE: u8 = 2;

/// The whole life of the master, from its arguments (the program's name
/// first) to its exit code; also the entry point of the pip-installed
/// `rgun`, after its own `proctitle::save_args`.
fn serve_args(args: Vec<OsString>) -> u8 {
    if let Some(code) = config::extras::run(&args) {
        return code;
    }
    config::reload::remember(&args);
    match config::load(&args) {
        Ok(loaded) => serve(loaded),
        Err(config::LoadError::Usage(e)) if !e.use_stderr() => {
            // --help and --version are "errors" that print to stdout; the
            // help of the full command, where APP is required.
            let _ = match e.kind() {
                clap::error::ErrorKind::DisplayHelp if args.iter().any(|a| a == "--help") => {
                    config::command().print_long_help()
                }
                clap::error::ErrorKind::DisplayHelp => config::command().print_help(),
                _ => e.print(),
            };
            e.exit_code() as u8
        }
        Err(e) => {
            eprintln!("rgun: {e}");
            EXIT_USAGE
        }
    }
}

fn serve(loaded: config::Loaded) -> u8 {
    let cli = &loaded.cli;
    if cli.print_config {
        print!("{}", config::print(&loaded));
    }
    if let Err(e) = logging::init(
        &cli.error_logfile,
        cli.log_level.filter(),
        cli.capture_output,
    ) {
        eprintln!("rgun: {e}");
        return 1;
    }
    loaded.log_notes();
    if cli.print_config || cli.check_config {
        return config::check::check(cli);
    }
    match run(loaded) {
        Ok(code) => code as u8,
        Err(failure) => {
            log::error!("{:#}", failure.error);
            failure.code
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

fn run(loaded: config::Loaded) -> Result<i32, Failure> {
    let cli = loaded.cli;
    // First of all: a TERM sent the moment the master is visible must be
    // queued for the loop, not kill the master with its default action.
    let signals = arbiter::install_signals().context("cannot install signal handlers")?;
    // A re-executed master (HUP with --preload) starts from here again, so
    // that a relative --chdir, log file or pid file means the same thing.
    let start_dir = std::env::current_dir().context("cannot read the current directory")?;
    if let Some(dir) = &cli.chdir {
        std::env::set_current_dir(dir)
            .with_context(|| format!("cannot change directory to {}", dir.display()))?;
    }
    // Inherited sockets are claimed (close-on-exec, variables removed)
    // before any application code could start a subprocess.
    let inherited = sockets::inherited()?;
    let inherited_metrics = metrics::inherited()?;
    // The pid file before binding: a second instance started by mistake
    // stops here, before it replaces the first one's Unix socket.
    let pidfile = cli
        .pidfile
        .as_deref()
        .map(pidfile::Pidfile::create)
        .transpose()?;
    proctitle::set_name(cli.proc_name.as_deref().unwrap_or(&cli.app));
    set_env(&cli);
    let app = resolve_app(&cli)?;
    let mut settings = settings(&cli, app)?;
    let master_hooks = hooks::start_for(&cli, &start_dir, settings.workers, settings.timeout_ms)?;
    settings.start_dir = Some(start_dir);
    settings.identity = privileges::Identity::resolve(cli.user.as_deref(), cli.group.as_deref())?;
    prepare_access_log(settings.identity.as_ref(), cli.access_logfile.as_deref())?;
    // Told to applications (the WSGI bridge's wsgi.multiprocess, and its
    // module watcher for --reload).
    // SAFETY: the master is single-threaded.
    unsafe {
        std::env::set_var("RGUN_WORKERS", settings.workers.to_string());
        if cli.reload {
            std::env::set_var(RELOAD_ENV, "1");
        }
    }
    let binds = if cli.bind.is_empty() {
        vec![cli::DEFAULT_BIND.to_string()]
    } else {
        cli.bind.clone()
    };
    let listeners = match inherited {
        Some(listeners) => {
            warn_on_changed_binds(&binds, &listeners);
            listeners
        }
        None => {
            let mut listeners = Vec::new();
            for spec in &binds {
                let listener = Listener::bind(&BindAddr::parse(spec)?, cli.backlog, cli.umask)?;
                if cli.reuse_port {
                    listener.reuse_port()?;
                }
                // The workers' user owns a Unix socket, as in Gunicorn.
                if let Some(id) = &settings.identity {
                    listener.chown(id.uid, id.gid)?;
                }
                listeners.push(listener);
            }
            listeners
        }
    };
    let pid = std::process::id();
    log::info!("Starting rgun {}", env!("CARGO_PKG_VERSION"));
    // Gunicorn's line: every address, joined by commas.
    let addresses: Vec<String> = listeners
        .iter()
        .map(|l| sockets::describe(&l.addr))
        .collect();
    log::info!("Listening at: {} ({pid})", addresses.join(","));
    log::info!(
        "Using worker: {}",
        config::gunicorn::worker_class_name(&cli.worker_class, cli.threads)
    );
    let identity = settings.identity.as_ref();
    let helpers = arbiter::Helpers {
        hooks: master_hooks,
        metrics: metrics::setup(&cli, &binds, identity, inherited_metrics)?,
    };
    proctitle::set("master");
    let mut arbiter =
        arbiter::Arbiter::new(settings, helpers, listeners, cli.preload, signals, pidfile)?;
    arbiter.set_config(cli);
    Ok(arbiter.run())
}

/// `-e KEY=VALUE`: set in the master, so that the workers it forks (and the
/// application they load) inherit them, as Gunicorn does.
fn set_env(cli: &Cli) {
    for entry in &cli.env {
        if let Some((key, value)) = entry.split_once('=') {
            // SAFETY: the master is single-threaded.
            unsafe { std::env::set_var(key, value) };
        }
    }
}

/// Workers open the access log themselves (and again on USR1): as another
/// user they could not create it where only root writes.
fn prepare_access_log(
    identity: Option<&privileges::Identity>,
    path: Option<&std::path::Path>,
) -> Result<()> {
    if let (Some(id), Some(path)) = (identity, path)
        && path.as_os_str() != "-"
    {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot create the access log {}", path.display()))?;
        nix::unistd::chown(path, Some(id.uid), Some(id.gid)).with_context(|| {
            format!(
                "cannot give the access log {} to the workers' user",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// The sockets of a previous image (a HUP with --preload, an upgrade) are
/// kept as they are: a `bind` changed since is said, not applied.
fn warn_on_changed_binds(binds: &[String], listeners: &[Listener]) {
    if !config::reload::binds_match(binds, listeners)
        && !listeners.iter().any(Listener::is_from_systemd)
    {
        config::reload::log_bind_refused(binds, listeners);
    }
}

/// Tells the WSGI bridge to watch the modules the application imported.
const RELOAD_ENV: &str = "RGUN_RELOAD";

/// Where a new master image finds the hand-off channel of the one before
/// it (an upgrade, or a `--preload` reload): `SENDER,RECEIVER`.
pub const CHANNEL_ENV: &str = "RGUN_CHANNEL_FDS";

/// The channel the workers pass connections through: the previous master
/// image's, or a new one.
fn hand_off_channel() -> Result<rgun_worker::handoff::Channel> {
    use rgun_worker::handoff::Channel;
    let inherited = std::env::var(CHANNEL_ENV).ok();
    // SAFETY: the master is single-threaded.
    unsafe { std::env::remove_var(CHANNEL_ENV) };
    match inherited {
        // SAFETY: the previous image listed its own channel's descriptors,
        // kept open across exec for this process alone.
        Some(entry) => unsafe { Channel::from_inherit_entry(&entry) }
            .context("taking over the hand-off channel of the previous master"),
        None => {
            Channel::new().context("creating the channel that passes connections between workers")
        }
    }
}

/// Where the workers get the application: a library they open after fork,
/// or a table in this process (the Python bridge, or anything `--preload`
/// loaded here).
fn resolve_app(cli: &Cli) -> Result<(AppSource, Option<arbiter::ForkHooks>), Failure> {
    let load_error = |error: anyhow::Error| Failure {
        error,
        code: rgun_worker::EXIT_APP_LOAD_ERROR as u8,
    };
    match AppSpec::parse(&cli.app) {
        AppSpec::Native { path, symbol } => {
            // Caught here, before any socket or fork, because it needs no
            // code of the application; everything else about loading is
            // checked by the first worker (or just below, with --preload).
            if !cli.preload {
                if !path.exists() {
                    return Err(load_error(rgun_worker::LoadError::NotFound { path }.into()));
                }
                return Ok((
                    AppSource::Library {
                        path,
                        arg: symbol.clone(),
                        symbol,
                        global: false,
                    },
                    None,
                ));
            }
            let table = rgun_worker::load_library(&path, &symbol, false)
                .map_err(|e| load_error(e.into()))?;
            Ok((AppSource::Table { table, arg: symbol }, None))
        }
        AppSpec::Python { module } => python_app(cli, module).map_err(load_error),
    }
}

/// The Python bridge's library, and the symbols rgun finds in it.
const WSGI_LIBRARY: &str = "librgun_wsgi.so";
const WSGI_APP_SYMBOL: &str = "rgun_wsgi_app";
/// The PYTHONPATH rgun was started with, before `--pythonpath`.
const BASE_PYTHONPATH_ENV: &str = "RGUN_BASE_PYTHONPATH";
/// Where to find the bridge instead of beside the rgun binary.
const WSGI_LIBRARY_ENV: &str = "RGUN_WSGI_LIBRARY";

/// The bridge library: `RGUN_WSGI_LIBRARY`, or `librgun_wsgi.so` in the
/// folder of the rgun binary (cargo builds both into the same folder).
fn wsgi_library() -> Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os(WSGI_LIBRARY_ENV) {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().context("cannot find the rgun binary's own path")?;
    let path = exe.with_file_name(WSGI_LIBRARY);
    if !path.exists() {
        bail!(
            "Python applications need the WSGI bridge {}, which is not there (build it with `cargo build --workspace`, install it beside rgun, or name it in {WSGI_LIBRARY_ENV})",
            path.display()
        );
    }
    Ok(path)
}

/// `module:callable`: the bridge library serves it, opened RTLD_GLOBAL so
/// that C extension modules see libpython's symbols (DESIGN.md, known
/// traps), and only in processes that serve Python.
fn python_app(cli: &Cli, module: String) -> Result<(AppSource, Option<arbiter::ForkHooks>)> {
    if let Some(dirs) = &cli.pythonpath {
        // Read when the interpreter starts, in the workers or (preload) here.
        let mut path: Vec<String> = dirs
            .split(',')
            .filter(|d| !d.is_empty())
            .map(String::from)
            .collect();
        // The operator's own PYTHONPATH, kept aside so that a re-executed
        // master (HUP with --preload) does not add the directories twice.
        let base = std::env::var(BASE_PYTHONPATH_ENV)
            .or_else(|_| std::env::var("PYTHONPATH"))
            .unwrap_or_default();
        if !base.is_empty() {
            path.push(base.clone());
        }
        // SAFETY: the master is single-threaded; nothing reads the
        // environment concurrently.
        unsafe {
            std::env::set_var(BASE_PYTHONPATH_ENV, base);
            std::env::set_var("PYTHONPATH", path.join(":"));
        }
    }
    #[cfg(rgun_hosted)]
    if let Some(app) = hosted::python_app(cli, &module) {
        return app;
    }
    let library = wsgi_library()?;
    if !cli.preload {
        return Ok((
            AppSource::Library {
                path: library,
                symbol: WSGI_APP_SYMBOL.into(),
                arg: module,
                global: true,
            },
            None,
        ));
    }
    let table = rgun_worker::load_library(&library, WSGI_APP_SYMBOL, true)?;
    let preload: unsafe extern "C" fn(ffi::Str, ffi::LogFn) -> i32 =
        bridge_symbol(&library, "rgun_wsgi_preload")?;
    // SAFETY: the bridge's preload entry point, with a spec valid for the
    // call and this process's log callback.
    let rc = unsafe { preload(ffi::Str::new(module.as_bytes()), rgun_worker::log_callback) };
    if rc != ffi::OK {
        bail!("cannot load the Python application {module:?} (see above)");
    }
    let hooks = arbiter::ForkHooks {
        before: bridge_symbol(&library, "rgun_wsgi_before_fork")?,
        after_parent: bridge_symbol(&library, "rgun_wsgi_after_fork_parent")?,
        after_child: bridge_symbol(&library, "rgun_wsgi_after_fork_child")?,
    };
    Ok((AppSource::Table { table, arg: module }, Some(hooks)))
}

/// A function of the already opened bridge library.
fn bridge_symbol<T: Copy>(library: &std::path::Path, name: &str) -> Result<T> {
    // SAFETY: the bridge is already open (load_library never closes it);
    // opening it again only takes a reference. `T` is the function type the
    // bridge exports under `name` (wsgi/src/lib.rs).
    unsafe {
        let lib = libloading::os::unix::Library::open(
            Some(library),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
        )
        .with_context(|| format!("cannot open {}", library.display()))?;
        let symbol = *lib
            .get::<T>(name.as_bytes())
            .with_context(|| format!("{} has no {name}", library.display()))?;
        std::mem::forget(lib);
        Ok(symbol)
    }
}

/// `--access-logfile` with `--access-logformat` and `--access-log-json`; a
/// bad format is refused even when no access log is written.
fn access_log(cli: &Cli) -> Result<Option<rgun_worker::AccessLogConfig>> {
    let path = cli.access_logfile.clone().unwrap_or_default();
    let format = cli.access_logformat.as_deref();
    let config = rgun_worker::AccessLogConfig::new(path, format, cli.access_log_json)
        .with_context(|| format!("invalid --access-logformat {:?}", format.unwrap_or("")))?;
    Ok(cli.access_logfile.is_some().then_some(config))
}

/// `--forwarded-allow-ips` or `--proxy-allow-from` (`flag`): `*`, or IP
/// addresses and CIDR ranges separated by commas.
fn allow_list(flag: &str, list: &str) -> Result<rgun_worker::AllowList> {
    rgun_worker::AllowList::parse(list).map_err(|e| anyhow::anyhow!("invalid {flag} entry: {e}"))
}

fn settings(
    cli: &Cli,
    (app, fork_hooks): (AppSource, Option<arbiter::ForkHooks>),
) -> Result<arbiter::Settings> {
    if cli.threads == 0 || cli.threads > cli::MAX_THREADS {
        bail!("--threads must be between 1 and {}", cli::MAX_THREADS);
    }
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
        timeout_ms: cli.timeout.saturating_mul(1000),
        graceful_timeout_ms: cli.graceful_timeout.saturating_mul(1000),
        max_worker_memory_mib: cli.max_worker_memory,
        start_dir: None,
        identity: None,
        fork_hooks,
        worker: Some(rgun_worker::WorkerConfig {
            forwarded_allow: allow_list("--forwarded-allow-ips", &cli.forwarded_allow_ips)?,
            proxy_protocol: cli.proxy_protocol,
            proxy_allow: allow_list("--proxy-allow-from", &cli.proxy_allow_from)?,
            app,
            threads: cli.threads,
            timeout_ms: cli.timeout.saturating_mul(1000),
            limits: rgun_worker::Limits {
                request_line,
                request_fields,
                request_field_size: cli.limit_request_field_size,
                request_body: cli.limit_request_body,
            },
            keep_alive_ms: cli.keep_alive.saturating_mul(1000),
            header_timeout_ms: cli.header_timeout.saturating_mul(1000),
            io_timeout_ms: io_timeout_secs.saturating_mul(1000),
            access_log: access_log(cli)?,
            channel: hand_off_channel()?,
            max_connections: cli.worker_connections,
            max_requests: cli.max_requests,
            max_requests_jitter: cli.max_requests_jitter,
            set_title: proctitle::set,
            reload: cli.reload,
            reopen_error_log: logging::reopen,
            metrics: cli.metrics_bind.is_some(),
        }),
    })
}
