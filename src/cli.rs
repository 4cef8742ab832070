//! The command line, with Gunicorn's names and defaults so that an operator's
//! habits carry over. Where Gunicorn has a value, the constant says so.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Gunicorn's `workers` default (overridden by `WEB_CONCURRENCY`).
pub const DEFAULT_WORKERS: usize = 1;
/// Gunicorn's `threads`.
pub const DEFAULT_THREADS: usize = 1;
/// The most threads one worker runs.
pub const MAX_THREADS: usize = 256;
/// Gunicorn's `forwarded_allow_ips`.
pub const DEFAULT_FORWARDED_ALLOW_IPS: &str = "127.0.0.1,::1";
/// Gunicorn's `proxy_protocol`: off.
pub const DEFAULT_PROXY_PROTOCOL: &str = "off";
/// Gunicorn's bare `--proxy-protocol` (no value) means `auto`.
pub const BARE_PROXY_PROTOCOL: &str = "auto";
/// Gunicorn's `proxy_allow_ips` (`--proxy-allow-from`).
pub const DEFAULT_PROXY_ALLOW_FROM: &str = "127.0.0.1,::1";
/// Gunicorn's default `bind`.
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";
/// Gunicorn's `backlog`.
pub const DEFAULT_BACKLOG: i32 = 2048;
/// Gunicorn's `timeout`, seconds; 0 disables it.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Gunicorn's `graceful_timeout`, seconds.
pub const DEFAULT_GRACEFUL_TIMEOUT_SECS: u64 = 30;
/// Gunicorn's `keepalive`, seconds.
pub const DEFAULT_KEEP_ALIVE_SECS: u64 = 2;
/// rgun's own: the time a client has to send a whole request head (Gunicorn's
/// sync worker has none and leans on `timeout`).
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// Gunicorn's `limit_request_line` maximum, and rgun's default: RFC 9112 §3
/// recommends accepting request lines of at least 8000 octets, above
/// Gunicorn's default of 4094.
pub const DEFAULT_LIMIT_REQUEST_LINE: usize = 8190;
pub const MAX_LIMIT_REQUEST_LINE: usize = 8190;
/// Gunicorn's `limit_request_fields`.
pub const DEFAULT_LIMIT_REQUEST_FIELDS: usize = 100;
/// Gunicorn's `limit_request_field_size`.
pub const DEFAULT_LIMIT_REQUEST_FIELD_SIZE: usize = 8190;
/// How long a client read or write may wait inside a request when
/// `--timeout 0` turns the worker timeout off.
pub const UNLIMITED_IO_TIMEOUT_SECS: u64 = 24 * 3600;
/// Gunicorn's `worker_connections`: the most connections one worker holds.
pub const DEFAULT_WORKER_CONNECTIONS: usize = 1000;
/// Gunicorn's `max_requests` and `max_requests_jitter`: 0, no recycling.
pub const DEFAULT_MAX_REQUESTS: u64 = 0;
pub const DEFAULT_MAX_REQUESTS_JITTER: u64 = 0;

/// The most workers one master runs (scoreboard slots, twice over for the
/// overlap of a reload).
pub const MAX_WORKERS: usize = 512;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "rgun",
    version,
    about = "A pre-forking HTTP/1.1 application server: rgun path/to/libapp.so:app",
    after_help = "Signals: TERM graceful stop, INT/QUIT quick stop, HUP reload (new workers load the library afresh), TTIN/TTOU one worker more/fewer, USR1 reopen log files, USR2 binary upgrade (a new master beside this one), WINCH stop the workers and keep the master (without a controlling terminal)."
)]
pub struct Cli {
    /// The application: `path/to/libapp.so:SYMBOL` (SYMBOL defaults to
    /// `app`), or `module:callable`; or `app` in the configuration file.
    #[arg(value_name = "APP")]
    pub app: String,

    /// Worker processes.
    #[arg(short = 'w', long, env = "WEB_CONCURRENCY", default_value_t = DEFAULT_WORKERS)]
    pub workers: usize,

    /// Read settings from this file: TOML (`rgun.toml`) or Gunicorn's Python
    /// (`gunicorn.conf.py`); without it, ./rgun.toml, else ./gunicorn.conf.py.
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Load the configuration and the application (in a child process),
    /// then exit: 0 if both load, else 1 with the reason.
    #[arg(long = "check-config")]
    pub check_config: bool,

    /// Print the effective configuration as TOML, each value with where it
    /// came from, then check it as `--check-config` does.
    #[arg(long = "print-config")]
    pub print_config: bool,

    /// Where to listen: `HOST:PORT`, `[IPV6]:PORT`, `unix:PATH`; repeatable.
    #[arg(short = 'b', long = "bind", value_name = "ADDRESS", default_value = DEFAULT_BIND)]
    pub bind: Vec<String>,

    /// The listen queue's length.
    #[arg(long, default_value_t = DEFAULT_BACKLOG)]
    pub backlog: i32,

    /// Seconds a worker may stay silent (one request held that long) before
    /// it is aborted and replaced; 0 disables.
    #[arg(short = 't', long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,

    /// Seconds in-flight requests get to finish after TERM or a reload.
    #[arg(long = "graceful-timeout", value_name = "SECONDS", default_value_t = DEFAULT_GRACEFUL_TIMEOUT_SECS)]
    pub graceful_timeout: u64,

    /// Seconds an idle keep-alive connection is kept open.
    #[arg(long = "keep-alive", value_name = "SECONDS", default_value_t = DEFAULT_KEEP_ALIVE_SECS)]
    pub keep_alive: u64,

    /// Seconds a client has to send a whole request head (then 408).
    #[arg(long = "header-timeout", value_name = "SECONDS", default_value_t = DEFAULT_HEADER_TIMEOUT_SECS)]
    pub header_timeout: u64,

    /// The longest request line, in bytes (0: the maximum, 8190); longer: 414.
    #[arg(long = "limit-request-line", value_name = "BYTES", default_value_t = DEFAULT_LIMIT_REQUEST_LINE)]
    pub limit_request_line: usize,

    /// The most header fields in a request; more: 431.
    #[arg(long = "limit-request-fields", value_name = "COUNT", default_value_t = DEFAULT_LIMIT_REQUEST_FIELDS)]
    pub limit_request_fields: usize,

    /// The longest header field line, in bytes (0: unlimited); longer: 431.
    #[arg(
        long = "limit-request-field_size",
        alias = "limit-request-field-size",
        value_name = "BYTES",
        default_value_t = DEFAULT_LIMIT_REQUEST_FIELD_SIZE
    )]
    pub limit_request_field_size: usize,

    /// The largest request body, in bytes (0: unlimited); larger: 413.
    #[arg(long = "limit-request-body", value_name = "BYTES", default_value_t = 0)]
    pub limit_request_body: u64,

    /// Gunicorn's worker class: `sync`, or `gthread` (with `--threads`);
    /// both name rgun's one worker model. Other classes are refused.
    #[arg(
        short = 'k',
        long = "worker-class",
        value_name = "CLASS",
        default_value = "sync",
        value_parser = crate::config::gunicorn::parse_worker_class
    )]
    pub worker_class: String,

    /// Threads per worker that run application calls (for applications that
    /// block on I/O); 1 runs them on the event loop's own thread.
    #[arg(long, value_name = "COUNT", default_value_t = DEFAULT_THREADS)]
    pub threads: usize,

    /// Restart a worker after it served this many requests (0: never); its
    /// replacement boots first, so capacity never dips.
    #[arg(long = "max-requests", value_name = "COUNT", default_value_t = DEFAULT_MAX_REQUESTS)]
    pub max_requests: u64,

    /// Each worker restarts after `--max-requests` plus a random 0 to this
    /// many more, so that workers do not all restart at once.
    #[arg(long = "max-requests-jitter", value_name = "COUNT", default_value_t = DEFAULT_MAX_REQUESTS_JITTER)]
    pub max_requests_jitter: u64,

    /// Restart a worker whose memory (PSS) grows past this many MiB (0:
    /// never), the same graceful way as `--max-requests`.
    #[arg(long = "max-worker-memory", value_name = "MIB", default_value_t = 0)]
    pub max_worker_memory: u64,

    /// The most client connections one worker holds; at the cap it stops
    /// accepting until one closes.
    #[arg(long = "worker-connections", value_name = "COUNT", default_value_t = DEFAULT_WORKER_CONNECTIONS)]
    pub worker_connections: usize,

    /// Load the application in the master before forking the workers
    /// (shared memory, faster boot); a reload then re-executes the master
    /// so that new code still goes live.
    #[arg(long)]
    pub preload: bool,

    /// Reload the workers when the application changes (its library; for
    /// Python, a module it imported), as HUP does; for development.
    #[arg(long, conflicts_with = "preload")]
    pub reload: bool,

    /// Directories to add to Python's path, comma-separated (Python apps).
    #[arg(long, value_name = "DIRS")]
    pub pythonpath: Option<String>,

    /// The file mode mask a Unix socket is created with (octal, e.g. 007);
    /// Gunicorn's default 0 lets a proxy running as another user connect.
    #[arg(short = 'm', long, value_name = "MASK", default_value = "0", value_parser = parse_umask)]
    pub umask: u32,

    /// Proxies whose X-Forwarded-Proto sets the URL scheme (https) and
    /// whose X-Forwarded-For names the client, as comma-separated IP
    /// addresses and CIDR ranges, or `*` for any (a peer on a Unix socket
    /// is always trusted).
    #[arg(
        long = "forwarded-allow-ips",
        env = "FORWARDED_ALLOW_IPS",
        value_name = "IPS",
        default_value = DEFAULT_FORWARDED_ALLOW_IPS
    )]
    pub forwarded_allow_ips: String,

    /// Connections start with a PROXY protocol header (HAProxy, a cloud
    /// load balancer): `off`, `v1`, `v2` or `auto` (either); without a
    /// value: `auto`. Its source becomes the client's address.
    #[arg(
        long = "proxy-protocol",
        value_name = "MODE",
        num_args = 0..=1,
        default_value = DEFAULT_PROXY_PROTOCOL,
        default_missing_value = BARE_PROXY_PROTOCOL,
        value_parser = parse_proxy_protocol
    )]
    pub proxy_protocol: rgun_worker::proxy::Versions,

    /// Peers whose PROXY protocol header is taken, as comma-separated IP
    /// addresses and CIDR ranges, or `*` (a peer on a Unix socket always
    /// is); they must send one, the others must not.
    #[arg(
        long = "proxy-allow-from",
        value_name = "IPS",
        default_value = DEFAULT_PROXY_ALLOW_FROM
    )]
    pub proxy_allow_from: String,

    /// Serve Prometheus metrics, /healthz, /readyz and a status page on this
    /// address (`HOST:PORT` or `unix:PATH`), from a process of its own.
    /// Off by default.
    #[arg(long = "metrics-bind", value_name = "ADDRESS")]
    pub metrics_bind: Option<String>,

    /// Run the workers as this user (a name or a number).
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,

    /// Run the workers as this group (a name or a number); default: the
    /// user's primary group.
    #[arg(short = 'g', long, value_name = "GROUP")]
    pub group: Option<String>,

    /// Write the master's pid to this file.
    #[arg(short = 'p', long = "pid", value_name = "FILE")]
    pub pidfile: Option<PathBuf>,

    /// The NAME in process titles (`rgun: master [NAME]`); default: the
    /// application.
    #[arg(short = 'n', long = "proc-name", alias = "name", value_name = "NAME")]
    pub proc_name: Option<String>,

    /// Change to this directory before loading the application.
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// The error log's level.
    #[arg(long = "log-level", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// The error log: a file, or `-` for standard error.
    #[arg(
        long = "error-logfile",
        visible_alias = "log-file",
        value_name = "FILE",
        default_value = "-"
    )]
    pub error_logfile: PathBuf,

    /// The access log: a file, or `-` for standard output. Off by default.
    #[arg(long = "access-logfile", value_name = "FILE")]
    pub access_logfile: Option<PathBuf>,

    /// The access log's line, with Gunicorn's atoms (`%(h)s`, `%(r)s`,
    /// `%({header}i)s`...); default: Apache's combined format.
    #[arg(long = "access-logformat", value_name = "FORMAT")]
    pub access_logformat: Option<String>,

    /// Write the access log as one JSON object per line, its fields the
    /// atoms of `--access-logformat`.
    #[arg(long = "access-log-json")]
    pub access_log_json: bool,

    /// Send the workers' standard output and error (an application's
    /// `print`) to the error log file.
    #[arg(long = "capture-output")]
    pub capture_output: bool,

    /// An environment variable for the workers and the application:
    /// `KEY=VALUE`; repeatable (Gunicorn's `raw_env`).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<String>,

    /// Set SO_REUSEPORT on the TCP sockets, so that another process may
    /// listen on the same port.
    #[arg(long = "reuse-port")]
    pub reuse_port: bool,

    /// Gunicorn's heartbeat-file folder: rgun's workers report to the master
    /// through shared memory, so it has nothing to do (accepted, said once).
    #[arg(long = "worker-tmp-dir", value_name = "DIR")]
    pub worker_tmp_dir: Option<PathBuf>,

    /// Gunicorn's switch for sendfile(2): accepted; rgun sends file
    /// responses with sendfile(2) and says so once.
    #[arg(long = "no-sendfile")]
    pub no_sendfile: bool,

    /// Gunicorn's switch for the workers' supplementary groups: rgun always
    /// sets them for `--user` (initgroups), as nginx does.
    #[arg(long)]
    pub initgroups: bool,

    /// Gunicorn's switch to keep standard input and output when daemonized:
    /// rgun never daemonizes, so they are always kept.
    #[arg(short = 'R', long = "enable-stdio-inheritance")]
    pub enable_stdio_inheritance: bool,

    /// Gunicorn's `--reload` engine: accepted; rgun's `--reload` has its own
    /// watcher (the library's file, Python's imported modules).
    #[arg(long = "reload-engine", value_name = "ENGINE", default_value = "auto",
          value_parser = ["auto", "poll", "inotify"])]
    pub reload_engine: String,

    /// A Python configuration file (`gunicorn.conf.py`) whose server hooks
    /// run: the master's in a Python process of their own, the workers' in
    /// a Python application's workers. Hidden: `-c FILE.py` sets it.
    #[arg(long = "python-hooks", value_name = "FILE", hide = true)]
    pub python_hooks: Option<PathBuf>,
}

/// `-e KEY=VALUE`: a name, `=`, and a value (possibly empty).
fn parse_env(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some((key, _)) if !key.is_empty() && !key.contains('\0') => Ok(text.to_string()),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// Gunicorn takes a umask in any base Python's int() reads; an operator
/// writes it in octal: `0`, `022`, `0o022`, `0x12`.
fn parse_umask(text: &str) -> Result<u32, String> {
    let (digits, radix) = if let Some(hex) = text.strip_prefix("0x") {
        (hex, 16)
    } else if let Some(oct) = text.strip_prefix("0o") {
        (oct, 8)
    } else {
        (text, 8)
    };
    u32::from_str_radix(digits, radix)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{text:?} is not a file mode mask (0 to 0777)"))
}

/// `--proxy-protocol`, with the spellings Gunicorn's validator takes
/// (`true` and `1` for `auto`, `false`, `0` and `none` for `off`).
fn parse_proxy_protocol(text: &str) -> Result<rgun_worker::proxy::Versions, String> {
    let text = text.trim().to_ascii_lowercase();
    let canonical = match text.as_str() {
        "true" | "1" => "auto",
        "false" | "0" | "none" => "off",
        other => other,
    };
    canonical.parse().map_err(|e| format!("{text:?}: {e}"))
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Warning => log::LevelFilter::Warn,
            LogLevel::Error | LogLevel::Critical => log::LevelFilter::Error,
        }
    }
}

/// Where the application comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSpec {
    /// `path.so[:symbol]`.
    Native { path: PathBuf, symbol: String },
    /// `module[:callable]`: a Python WSGI application.
    Python { module: String },
}

/// The symbol a native application is exported under by default.
pub const DEFAULT_APP_SYMBOL: &str = "app";

impl AppSpec {
    pub fn parse(spec: &str) -> AppSpec {
        let (path, symbol) = match spec.rsplit_once(':') {
            Some((path, symbol)) if !symbol.contains('/') => (path, symbol),
            _ => (spec, ""),
        };
        let is_library = path.ends_with(".so") || path.contains(".so.") || path.contains('/');
        if is_library {
            let symbol = if symbol.is_empty() {
                DEFAULT_APP_SYMBOL
            } else {
                symbol
            };
            AppSpec::Native {
                path: PathBuf::from(path),
                symbol: symbol.to_string(),
            }
        } else {
            AppSpec::Python {
                module: spec.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_specs() {
        assert_eq!(
            AppSpec::parse("target/release/libapp.so:handler"),
            AppSpec::Native {
                path: "target/release/libapp.so".into(),
                symbol: "handler".into()
            }
        );
        assert_eq!(
            AppSpec::parse("libapp.so"),
            AppSpec::Native {
                path: "libapp.so".into(),
                symbol: "app".into()
            }
        );
        assert_eq!(
            AppSpec::parse("myproject.wsgi:application"),
            AppSpec::Python {
                module: "myproject.wsgi:application".into()
            }
        );
    }

    #[test]
    fn gunicorn_defaults() {
        let cli = Cli::try_parse_from(["rgun", "x.so"]).unwrap();
        assert_eq!(cli.backlog, 2048);
        assert_eq!(cli.timeout, 30);
        assert_eq!(cli.limit_request_line, 8190);
        let cli =
            Cli::try_parse_from(["rgun", "x.so", "--limit-request-field_size", "10"]).unwrap();
        assert_eq!(cli.limit_request_field_size, 10);
    }

    #[test]
    fn proxy_protocol_as_gunicorn_24_takes_it() {
        use rgun_worker::proxy::Versions;
        let mode = |args: &[&str]| {
            let mut argv = vec!["rgun", "x.so"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).map(|cli| cli.proxy_protocol)
        };
        assert_eq!(mode(&[]).unwrap(), Versions::Off);
        assert_eq!(mode(&["--proxy-protocol"]).unwrap(), Versions::Auto);
        assert_eq!(mode(&["--proxy-protocol", "v1"]).unwrap(), Versions::V1);
        assert_eq!(mode(&["--proxy-protocol=v2"]).unwrap(), Versions::V2);
        assert_eq!(mode(&["--proxy-protocol", "AUTO"]).unwrap(), Versions::Auto);
        assert_eq!(mode(&["--proxy-protocol", "true"]).unwrap(), Versions::Auto);
        assert_eq!(mode(&["--proxy-protocol", "off"]).unwrap(), Versions::Off);
        assert_eq!(mode(&["--proxy-protocol", "false"]).unwrap(), Versions::Off);
        assert!(mode(&["--proxy-protocol", "v3"]).is_err());
        let cli = Cli::try_parse_from(["rgun", "x.so"]).unwrap();
        assert_eq!(cli.proxy_allow_from, "127.0.0.1,::1");
    }
}
