//! The rgun worker: what runs in each forked process. It loads the
//! application, then serves HTTP/1.1 on the listeners the master bound, in
//! one event loop, handing each request to the application. It never decides
//! how many workers there are, and never binds or forks.
//!
//! A few pieces are shared with the master because they are the contract
//! between the two: the scoreboard, the signal queue, the exit codes, and the
//! log time format.

mod abort;
mod access_log;
pub mod allow;
mod app;
#[doc(hidden)]
pub mod bench;
mod blocking;
mod body;
mod call;
pub mod chunked;
mod conn;
mod context;
mod encode;
mod exchange;
pub mod handoff;
mod listener;
pub mod parse;
mod pool;
pub mod proxy;
mod reload;
mod response;
pub mod scoreboard;
mod server;
pub mod signals;
mod stream;
pub mod timefmt;
mod watcher;

use std::path::PathBuf;

use nix::sys::signal::{SigHandler, Signal};

pub use access_log::{AccessLogConfig, FormatError as AccessLogFormatError};
pub use allow::{AllowList, BadEntry};
pub use app::{LoadError, load_library};
/// The gateway's log callback, writing to this process's error log (for a
/// library the master calls directly, such as the bridge's preload).
pub use call::log as log_callback;
pub use listener::{ListenerFd, ListenerSocket, SocketKind};
pub use parse::Limits;
pub use stream::ListenerInfo;

use scoreboard::metrics::{Metering, Writers};

/// A worker's exit code when it cannot boot (the init hook failed).
/// Gunicorn's WORKER_BOOT_ERROR: the master stops instead of respawning.
pub const EXIT_BOOT_ERROR: i32 = 3;
/// A worker's exit code when the application cannot be loaded. Gunicorn's
/// APP_LOAD_ERROR.
pub const EXIT_APP_LOAD_ERROR: i32 = 4;

/// Where a worker's application comes from.
pub enum AppSource {
    /// `path.so:symbol`, opened in the worker after fork; `arg` is handed to
    /// the application as `app_arg` (the symbol, or a bridge's `module:app`).
    Library {
        path: PathBuf,
        symbol: String,
        arg: String,
        global: bool,
    },
    /// A table already in this process, opened by the master (`--preload`).
    /// `arg` is handed to the application as `app_arg`.
    Table {
        table: &'static rgun_gateway::ffi::App,
        arg: String,
    },
}

/// What a worker needs to run, from the master.
pub struct WorkerConfig {
    /// `--forwarded-allow-ips`: whose `X-Forwarded-*` headers count.
    pub forwarded_allow: AllowList,
    /// `--proxy-protocol`: which PROXY protocol headers connections carry.
    pub proxy_protocol: proxy::Versions,
    /// `--proxy-allow-from`: whose PROXY protocol header counts.
    pub proxy_allow: AllowList,
    pub app: AppSource,
    /// Threads that run application calls; 1: the event loop's own.
    pub threads: usize,
    /// `--timeout` in ms (0: none), for threads holding a request.
    pub timeout_ms: u64,
    pub limits: Limits,
    pub keep_alive_ms: u64,
    pub header_timeout_ms: u64,
    /// The longest wait on one client read or write inside a request.
    pub io_timeout_ms: u64,
    /// `--access-logfile`, with its format.
    pub access_log: Option<AccessLogConfig>,
    /// Where connections pass between workers (made by the master).
    pub channel: handoff::Channel,
    /// `--worker-connections`: the most connections the worker holds.
    pub max_connections: usize,
    /// `--max-requests` (0: none) and `--max-requests-jitter`: each worker
    /// draws its own limit from `max_requests + 0..=jitter`.
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    /// `--reload`: watch the application's files and ask for a reload
    /// when one changes.
    pub reload: bool,
    /// Sets the process title for a role (`worker`), once the application
    /// is loaded.
    pub set_title: fn(&str),
    /// Reopens the error log (the master's logger, inherited) on USR1.
    pub reopen_error_log: fn(),
    /// `--metrics-bind` is set: count every request in the scoreboard.
    pub metrics: bool,
}

/// Why a worker could not start serving; each maps to its exit code.
#[derive(Debug, thiserror::Error)]
enum BootError {
    #[error("worker could not set up its signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("{0}")]
    Load(app::LoadError),
    /// The init hook said the application cannot load (it logged why).
    #[error("the application could not be loaded in worker {0}")]
    InitLoad(u32),
    #[error("the application's init hook failed in worker {0}")]
    Init(u32),
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    #[error("worker could not start its event loop: {0}")]
    EventLoop(std::io::Error),
    #[error("{0}")]
    Reload(std::io::Error),
}

impl BootError {
    /// Gunicorn's codes: the master stops instead of respawning.
    fn exit_code(&self) -> i32 {
        match self {
            BootError::Load(_) | BootError::InitLoad(_) => EXIT_APP_LOAD_ERROR,
            _ => EXIT_BOOT_ERROR,
        }
    }
}

/// Run a worker in a freshly forked process: returns its exit code.
pub fn run(
    worker_id: u32,
    master_pid: i32,
    peers: scoreboard::Peers,
    listeners: Vec<ListenerFd>,
    config: WorkerConfig,
    inbox: handoff::Inbox,
    signal_mask: nix::sys::signal::SigSet,
) -> i32 {
    let slot = peers.own();
    slot.set_pid(std::process::id() as i32);
    let _ = ABORT_SLOT.set(slot);
    let mut event_loop = match boot(
        worker_id,
        master_pid,
        peers,
        listeners,
        config,
        inbox,
        signal_mask,
    ) {
        Ok(event_loop) => event_loop,
        Err(BootError::InitLoad(_)) => return EXIT_APP_LOAD_ERROR,
        Err(e) => {
            log::error!("{e}");
            return e.exit_code();
        }
    };
    let result = event_loop.run();
    event_loop.shutdown_app();
    match result {
        Ok(()) => 0,
        Err(e) => {
            log::error!("worker event loop failed: {e}");
            1
        }
    }
}

/// Everything between fork and the first poll: signals, the application
/// loaded and initialised, the access log, the event loop.
fn boot(
    worker_id: u32,
    master_pid: i32,
    peers: scoreboard::Peers,
    listeners: Vec<ListenerFd>,
    config: WorkerConfig,
    inbox: handoff::Inbox,
    signal_mask: nix::sys::signal::SigSet,
) -> Result<server::EventLoop, BootError> {
    // The master forks with every signal blocked: the worker's handlers go
    // in first, then `signal_mask` (the master's usual mask) comes back.
    let signals = install_signals()
        .and_then(|s| {
            signals::restore_mask(&signal_mask)?;
            Ok(s)
        })
        .map_err(BootError::Signals)?;
    let slot = peers.own();
    let app = load_app(&config.app, worker_id)?;
    let reload = if config.reload {
        Some(reload::FileWatch::new(&application_files(&config.app)).map_err(BootError::Reload)?)
    } else {
        None
    };
    let access_log = config
        .access_log
        .map(access_log::AccessLog::open)
        .transpose()
        .map_err(BootError::AccessLog)?;
    let threads = thread_count(config.threads, &app);
    // Told to the application (the WSGI bridge's wsgi.multithread).
    // SAFETY: no other thread of this process exists yet to read the
    // environment concurrently.
    unsafe { std::env::set_var("RGUN_THREADS", threads.to_string()) };
    match app.init() {
        rgun_gateway::ffi::OK => {}
        rgun_gateway::ffi::ERR_LOAD => return Err(BootError::InitLoad(std::process::id())),
        _ => return Err(BootError::Init(std::process::id())),
    }
    (config.set_title)("worker");
    slot.set_booted();
    let (sockets, listeners): (Vec<_>, Vec<_>) =
        listeners.into_iter().map(|l| (l.socket, l.info)).unzip();
    // Every thread of the worker reads these until the process exits.
    let settings: &'static context::Settings = Box::leak(Box::new(context::Settings {
        limits: config.limits,
        keep_alive_ms: config.keep_alive_ms,
        header_timeout_ms: config.header_timeout_ms,
        io_timeout_ms: config.io_timeout_ms,
        app,
        slot,
        listeners,
        forwarded_allow: config.forwarded_allow,
        proxy_protocol: config.proxy_protocol,
        proxy_allow: config.proxy_allow,
        answer_on_abort: threads <= 1,
        call_clock: Box::leak(Box::default()),
        peers,
        metrics: if config.metrics {
            Metering::On(if threads <= 1 {
                Writers::One
            } else {
                Writers::Many
            })
        } else {
            Metering::Off
        },
    }));
    let shared = context::Shared::new(settings, access_log);
    server::EventLoop::new(server::LoopSetup {
        listeners: sockets,
        channel: Box::leak(Box::new(config.channel)),
        inbox: Box::leak(Box::new(inbox)),
        shared,
        signals,
        master_pid,
        threads,
        timeout_ms: config.timeout_ms,
        max_connections: config.max_connections,
        max_requests: own_max_requests(config.max_requests, config.max_requests_jitter),
        reload,
        reopen_error_log: config.reopen_error_log,
    })
    .map_err(BootError::EventLoop)
}

/// The files `--reload` watches here: a native application's library (the
/// WSGI bridge watches its Python modules itself).
fn application_files(source: &AppSource) -> Vec<PathBuf> {
    match source {
        AppSource::Library { path, .. } => vec![path.clone()],
        AppSource::Table { .. } => Vec::new(),
    }
}

/// Gunicorn's rule: `max_requests + randint(0, jitter)`, so that workers
/// started together do not all restart together.
fn own_max_requests(max_requests: u64, jitter: u64) -> Option<u64> {
    if max_requests == 0 {
        return None;
    }
    let mut random = [0u8; 8];
    // SAFETY: getrandom(2) writes at most `random.len()` bytes into it.
    let filled = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    let draw = if filled == random.len() as isize {
        u64::from_ne_bytes(random)
    } else {
        u64::from(std::process::id())
    };
    Some(max_requests + draw % jitter.saturating_add(1))
}

fn load_app(source: &AppSource, worker_id: u32) -> Result<app::LoadedApp, BootError> {
    Ok(match source {
        AppSource::Library {
            path,
            symbol,
            arg,
            global,
        } => {
            let table = app::load_library(path, symbol, *global).map_err(BootError::Load)?;
            app::LoadedApp::new(table, arg.as_bytes(), worker_id)
        }
        AppSource::Table { table, arg } => app::LoadedApp::new(table, arg.as_bytes(), worker_id),
    })
}

/// `--threads`, unless the application does not declare itself
/// thread-safe: then its calls run one at a time.
fn thread_count(wanted: usize, app: &app::LoadedApp) -> usize {
    if wanted > 1 && !app.is_thread_safe() {
        log::warn!(
            "the application does not declare itself thread-safe (RGUN_APP_THREAD_SAFE); running it on one thread despite --threads {wanted}"
        );
        return 1;
    }
    wanted
}

/// `TERM` drains, `USR1` reopens logs (through the queue); `INT` and `QUIT`
/// leave at once; `ABRT` (a timeout from the master, or the application
/// aborting) answers the request in hand before the process dies.
fn install_signals() -> std::io::Result<signals::SignalQueue> {
    let queue =
        signals::SignalQueue::install(&[Signal::SIGTERM, Signal::SIGUSR1, Signal::SIGUSR2])?;
    signals::set_handler(
        &[Signal::SIGINT, Signal::SIGQUIT],
        SigHandler::Handler(exit_now),
    )?;
    signals::set_handler(&[Signal::SIGABRT], SigHandler::Handler(on_abort))?;
    // The master's signals mean nothing to a worker. A handler that does
    // nothing, not SIG_IGN: an ignored disposition would survive exec into
    // the application's subprocesses, a handler is reset to the default.
    signals::set_handler(
        &[
            Signal::SIGHUP,
            Signal::SIGTTIN,
            Signal::SIGTTOU,
            Signal::SIGWINCH,
        ],
        SigHandler::Handler(do_nothing),
    )?;
    signals::set_handler(&[Signal::SIGPIPE], SigHandler::SigIgn)?;
    signals::set_handler(&[Signal::SIGCHLD], SigHandler::SigDfl)?;
    Ok(queue)
}

extern "C" fn do_nothing(_: libc::c_int) {}

extern "C" fn exit_now(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

/// The slot the abort handler reads; set once before the handler is armed.
static ABORT_SLOT: std::sync::OnceLock<&'static scoreboard::Slot> = std::sync::OnceLock::new();

extern "C" fn on_abort(_: libc::c_int) {
    let slot = ABORT_SLOT.get();
    if let Some(slot) = slot {
        abort::record_request_line(slot);
    }
    abort::answer_inflight(slot.is_some_and(|slot| slot.is_timed_out()));
    // Die of SIGABRT as the process would have: default action, re-raised
    // (it is delivered once this handler returns).
    // SAFETY: signal(2) and raise(3) are async-signal-safe.
    unsafe {
        libc::signal(libc::SIGABRT, libc::SIG_DFL);
        libc::raise(libc::SIGABRT);
    }
}
