//! Gunicorn's settings, every one of them, and what rgun makes of each: its
//! own setting (often under the same name), a server hook, or a refusal
//! with the reason and what to use instead. The refused ones that Gunicorn
//! has a flag for become hidden flags here, so that `rgun --daemon` says
//! why rather than "unexpected argument".

use clap::{Arg, ArgAction, Command};

/// What rgun does with one Gunicorn setting.
#[derive(Clone, Copy, Debug)]
pub enum Map {
    /// rgun's setting with this id (its key in rgun.toml).
    Ours(&'static str),
    /// A server hook (a callable in gunicorn.conf.py).
    Hook,
    /// Not in rgun; the reason and what to use instead.
    Refused(&'static str),
    /// Only these values are accepted (they are what rgun does anyway);
    /// any other is refused with the reason.
    Only(&'static [&'static str], &'static str),
}

/// One Gunicorn setting: its name in gunicorn.conf.py, its flags, whether
/// the flag is a switch (takes no value).
pub struct Setting {
    pub name: &'static str,
    pub flags: &'static [&'static str],
    pub switch: bool,
    pub map: Map,
}

const TLS: &str =
    "rgun serves plain HTTP: terminate TLS in Nginx (or another proxy) in front of it";
const HTTP2: &str = "rgun serves HTTP/1.1: let Nginx speak HTTP/2 to clients";
const LOGGING: &str = "rgun writes Gunicorn's log lines to a file or standard error (--error-logfile); under systemd, journald passes them to syslog";
const STATSD: &str = "rgun exports its metrics for Prometheus to scrape: see --metrics-bind";
const PARSER: &str =
    "rgun's request parser follows RFC 9112 strictly and has no switch to loosen it";
const ASGI: &str = "an ASGI setting: rgun serves WSGI and native applications";
const DIRTY: &str = "Gunicorn's dirty arbiters are not in rgun: run long jobs in a task queue";
const CONTROL: &str = "rgun has no control socket: it is driven by signals (see --help)";
const PASTE: &str = "PasteDeploy is not supported: give the WSGI application as module:callable";
const UWSGI: &str =
    "rgun speaks HTTP only (not the uwsgi protocol): proxy to it with Nginx's proxy_pass";

macro_rules! s {
    ($name:literal, [$($flag:literal),*], $switch:literal, $map:expr) => {
        Setting { name: $name, flags: &[$($flag),*], switch: $switch, map: $map }
    };
}

use Map::{Hook, Only, Ours, Refused};

/// Every setting of Gunicorn 25 (`gunicorn/config.py`), in its order.
pub const SETTINGS: &[Setting] = &[
    s!("config", ["-c", "--config"], false, Ours("config")),
    s!("wsgi_app", [], false, Ours("app")),
    s!("bind", ["-b", "--bind"], false, Ours("bind")),
    s!("backlog", ["--backlog"], false, Ours("backlog")),
    s!("workers", ["-w", "--workers"], false, Ours("workers")),
    s!(
        "worker_class",
        ["-k", "--worker-class"],
        false,
        Ours("worker_class")
    ),
    s!("threads", ["--threads"], false, Ours("threads")),
    s!(
        "worker_connections",
        ["--worker-connections"],
        false,
        Ours("worker_connections")
    ),
    s!(
        "max_requests",
        ["--max-requests"],
        false,
        Ours("max_requests")
    ),
    s!(
        "max_requests_jitter",
        ["--max-requests-jitter"],
        false,
        Ours("max_requests_jitter")
    ),
    s!("timeout", ["-t", "--timeout"], false, Ours("timeout")),
    s!(
        "graceful_timeout",
        ["--graceful-timeout"],
        false,
        Ours("graceful_timeout")
    ),
    s!("keepalive", ["--keep-alive"], false, Ours("keep_alive")),
    s!(
        "limit_request_line",
        ["--limit-request-line"],
        false,
        Ours("limit_request_line")
    ),
    s!(
        "limit_request_fields",
        ["--limit-request-fields"],
        false,
        Ours("limit_request_fields")
    ),
    s!(
        "limit_request_field_size",
        ["--limit-request-field_size"],
        false,
        Ours("limit_request_field_size")
    ),
    s!("reload", ["--reload"], true, Ours("reload")),
    s!(
        "reload_engine",
        ["--reload-engine"],
        false,
        Ours("reload_engine")
    ),
    s!(
        "reload_extra_files",
        ["--reload-extra-file"],
        false,
        Refused(
            "rgun's --reload watches the application's library and the Python modules it imported; send HUP when other files change"
        )
    ),
    s!(
        "spew",
        ["--spew"],
        true,
        Refused("--spew traces every line of Python the server runs; rgun's server is not Python")
    ),
    s!(
        "check_config",
        ["--check-config"],
        true,
        Ours("check_config")
    ),
    s!(
        "print_config",
        ["--print-config"],
        true,
        Ours("print_config")
    ),
    s!("preload_app", ["--preload"], true, Ours("preload")),
    s!("sendfile", ["--no-sendfile"], true, Ours("no_sendfile")),
    s!("reuse_port", ["--reuse-port"], true, Ours("reuse_port")),
    s!("chdir", ["--chdir"], false, Ours("chdir")),
    s!(
        "daemon",
        ["-D", "--daemon"],
        true,
        Refused(
            "rgun does not daemonize: run it in the foreground under systemd (Type=notify) or another supervisor"
        )
    ),
    s!("raw_env", ["-e", "--env"], false, Ours("env")),
    s!("pidfile", ["-p", "--pid"], false, Ours("pidfile")),
    s!(
        "worker_tmp_dir",
        ["--worker-tmp-dir"],
        false,
        Ours("worker_tmp_dir")
    ),
    s!("user", ["-u", "--user"], false, Ours("user")),
    s!("group", ["-g", "--group"], false, Ours("group")),
    s!("umask", ["-m", "--umask"], false, Ours("umask")),
    s!("initgroups", ["--initgroups"], true, Ours("initgroups")),
    s!(
        "tmp_upload_dir",
        [],
        false,
        Refused(
            "rgun hands the request body to the application as a stream; it keeps no upload files"
        )
    ),
    s!(
        "secure_scheme_headers",
        [],
        false,
        Refused(
            "rgun trusts X-Forwarded-Proto from --forwarded-allow-ips; the header names are fixed"
        )
    ),
    s!(
        "forwarded_allow_ips",
        ["--forwarded-allow-ips"],
        false,
        Ours("forwarded_allow_ips")
    ),
    s!(
        "accesslog",
        ["--access-logfile"],
        false,
        Ours("access_logfile")
    ),
    s!(
        "disable_redirect_access_to_syslog",
        ["--disable-redirect-access-to-syslog"],
        true,
        Refused(LOGGING)
    ),
    s!(
        "access_log_format",
        ["--access-logformat"],
        false,
        Ours("access_logformat")
    ),
    s!(
        "errorlog",
        ["--error-logfile", "--log-file"],
        false,
        Ours("error_logfile")
    ),
    s!("loglevel", ["--log-level"], false, Ours("log_level")),
    s!(
        "capture_output",
        ["--capture-output"],
        true,
        Ours("capture_output")
    ),
    s!("logger_class", ["--logger-class"], false, Refused(LOGGING)),
    s!("logconfig", ["--log-config"], false, Refused(LOGGING)),
    s!("logconfig_dict", [], false, Refused(LOGGING)),
    s!(
        "logconfig_json",
        ["--log-config-json"],
        false,
        Refused(LOGGING)
    ),
    s!("syslog_addr", ["--log-syslog-to"], false, Refused(LOGGING)),
    s!("syslog", ["--log-syslog"], true, Refused(LOGGING)),
    s!(
        "syslog_prefix",
        ["--log-syslog-prefix"],
        false,
        Refused(LOGGING)
    ),
    s!(
        "syslog_facility",
        ["--log-syslog-facility"],
        false,
        Refused(LOGGING)
    ),
    s!(
        "enable_stdio_inheritance",
        ["-R", "--enable-stdio-inheritance"],
        true,
        Ours("enable_stdio_inheritance")
    ),
    s!("statsd_host", ["--statsd-host"], false, Refused(STATSD)),
    s!(
        "dogstatsd_tags",
        ["--dogstatsd-tags"],
        false,
        Refused(STATSD)
    ),
    s!("statsd_prefix", ["--statsd-prefix"], false, Refused(STATSD)),
    s!(
        "enable_backlog_metric",
        ["--enable-backlog-metric"],
        true,
        Refused(STATSD)
    ),
    s!("proc_name", ["-n", "--name"], false, Ours("proc_name")),
    s!(
        "default_proc_name",
        [],
        false,
        Refused("rgun names its processes `rgun: master [NAME]`; set NAME with proc_name")
    ),
    s!("pythonpath", ["--pythonpath"], false, Ours("pythonpath")),
    s!("paste", ["--paste", "--paster"], false, Refused(PASTE)),
    s!("on_starting", [], false, Hook),
    s!("on_reload", [], false, Hook),
    s!("when_ready", [], false, Hook),
    s!("pre_fork", [], false, Hook),
    s!("post_fork", [], false, Hook),
    s!("post_worker_init", [], false, Hook),
    s!("worker_int", [], false, Hook),
    s!("worker_abort", [], false, Hook),
    s!(
        "pre_exec",
        [],
        false,
        Refused(
            "rgun's USR2 upgrade executes the new binary with the same arguments; no hook runs before it"
        )
    ),
    s!("pre_request", [], false, Hook),
    s!("post_request", [], false, Hook),
    s!("child_exit", [], false, Hook),
    s!("worker_exit", [], false, Hook),
    s!("nworkers_changed", [], false, Hook),
    s!("on_exit", [], false, Hook),
    s!("ssl_context", [], false, Refused(TLS)),
    s!(
        "proxy_protocol",
        ["--proxy-protocol"],
        false,
        Ours("proxy_protocol")
    ),
    s!(
        "proxy_allow_ips",
        ["--proxy-allow-from"],
        false,
        Ours("proxy_allow_from")
    ),
    s!("protocol", ["--protocol"], false, Only(&["http"], UWSGI)),
    s!(
        "uwsgi_allow_ips",
        ["--uwsgi-allow-from"],
        false,
        Refused(UWSGI)
    ),
    s!("keyfile", ["--keyfile"], false, Refused(TLS)),
    s!("certfile", ["--certfile"], false, Refused(TLS)),
    s!("ssl_version", ["--ssl-version"], false, Refused(TLS)),
    s!("cert_reqs", ["--cert-reqs"], false, Refused(TLS)),
    s!("ca_certs", ["--ca-certs"], false, Refused(TLS)),
    s!(
        "suppress_ragged_eofs",
        ["--suppress-ragged-eofs"],
        true,
        Refused(TLS)
    ),
    s!(
        "do_handshake_on_connect",
        ["--do-handshake-on-connect"],
        true,
        Refused(TLS)
    ),
    s!("ciphers", ["--ciphers"], false, Refused(TLS)),
    s!(
        "http_protocols",
        ["--http-protocols"],
        false,
        Only(&["h1"], HTTP2)
    ),
    s!(
        "http2_cleartext",
        ["--http2-cleartext"],
        false,
        Only(&["off"], HTTP2)
    ),
    s!(
        "http2_max_concurrent_streams",
        ["--http2-max-concurrent-streams"],
        false,
        Refused(HTTP2)
    ),
    s!(
        "http2_initial_window_size",
        ["--http2-initial-window-size"],
        false,
        Refused(HTTP2)
    ),
    s!(
        "http2_max_frame_size",
        ["--http2-max-frame-size"],
        false,
        Refused(HTTP2)
    ),
    s!(
        "http2_max_header_list_size",
        ["--http2-max-header-list-size"],
        false,
        Refused(HTTP2)
    ),
    s!(
        "raw_paste_global_conf",
        ["--paste-global"],
        false,
        Refused(PASTE)
    ),
    s!(
        "permit_obsolete_folding",
        ["--permit-obsolete-folding"],
        true,
        Refused(PARSER)
    ),
    s!(
        "strip_header_spaces",
        ["--strip-header-spaces"],
        true,
        Refused(PARSER)
    ),
    s!(
        "permit_unconventional_http_method",
        ["--permit-unconventional-http-method"],
        true,
        Refused(PARSER)
    ),
    s!(
        "permit_unconventional_http_version",
        ["--permit-unconventional-http-version"],
        true,
        Refused(PARSER)
    ),
    s!(
        "casefold_http_method",
        ["--casefold-http-method"],
        true,
        Refused(PARSER)
    ),
    s!(
        "forwarder_headers",
        ["--forwarder-headers"],
        false,
        Refused(
            "rgun takes PATH_INFO from the request target and no WSGI variable from request headers (SCRIPT_NAME stays empty)"
        )
    ),
    s!(
        "header_map",
        ["--header-map"],
        false,
        Only(
            &["drop"],
            "rgun leaves header names with `_` out of the WSGI environ, as Gunicorn's default `drop` does, and has no other mode"
        )
    ),
    s!("asgi_loop", ["--asgi-loop"], false, Refused(ASGI)),
    s!("asgi_lifespan", ["--asgi-lifespan"], false, Refused(ASGI)),
    s!(
        "asgi_disconnect_grace_period",
        ["--asgi-disconnect-grace-period"],
        false,
        Refused(ASGI)
    ),
    s!(
        "http_parser",
        ["--http-parser"],
        false,
        Only(
            &["auto"],
            "rgun has one HTTP parser, its own (Gunicorn's `auto`)"
        )
    ),
    s!("root_path", ["--root-path"], false, Refused(ASGI)),
    s!("dirty_apps", ["--dirty-app"], false, Refused(DIRTY)),
    s!("dirty_workers", ["--dirty-workers"], false, Refused(DIRTY)),
    s!("dirty_timeout", ["--dirty-timeout"], false, Refused(DIRTY)),
    s!("dirty_threads", ["--dirty-threads"], false, Refused(DIRTY)),
    s!(
        "dirty_graceful_timeout",
        ["--dirty-graceful-timeout"],
        false,
        Refused(DIRTY)
    ),
    s!("on_dirty_starting", [], false, Refused(DIRTY)),
    s!("dirty_post_fork", [], false, Refused(DIRTY)),
    s!("dirty_worker_init", [], false, Refused(DIRTY)),
    s!("dirty_worker_exit", [], false, Refused(DIRTY)),
    s!(
        "control_socket",
        ["--control-socket"],
        false,
        Refused(CONTROL)
    ),
    s!(
        "control_socket_mode",
        ["--control-socket-mode"],
        false,
        Refused(CONTROL)
    ),
    s!(
        "control_socket_disable",
        ["--no-control-socket"],
        true,
        Only(&["true"], CONTROL)
    ),
];

/// The setting of this Gunicorn name.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// The command with a hidden flag for every Gunicorn flag that rgun
/// refuses (or accepts only at one value), under Gunicorn's setting name.
pub fn augment(mut cmd: Command) -> Command {
    for setting in SETTINGS {
        if matches!(setting.map, Ours(_) | Hook) || setting.flags.is_empty() {
            continue;
        }
        let mut arg = Arg::new(setting.name).hide(true);
        for flag in setting.flags {
            arg = match flag.strip_prefix("--") {
                Some(long) if arg.get_long().is_none() => arg.long(long),
                Some(long) => arg.alias(long),
                None => arg.short(flag.chars().nth(1).unwrap_or('-')),
            };
        }
        arg = if setting.switch {
            arg.action(ArgAction::SetTrue)
        } else {
            arg.action(ArgAction::Set).value_name("VALUE")
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

/// Why the value given to a hidden Gunicorn flag (its id a setting name)
/// is refused; `None` when it is one rgun accepts.
pub fn refusal(name: &str, value: &str) -> Option<&'static str> {
    match setting(name)?.map {
        Refused(why) => Some(why),
        Only(values, why) => (!values.contains(&value)).then_some(why),
        Ours(_) | Hook => None,
    }
}

/// `-k`: Gunicorn's worker classes that name rgun's model, by short name or
/// by class path.
const SYNC_CLASSES: &[&str] = &[
    "sync",
    "gunicorn.workers.sync.SyncWorker",
    "egg:gunicorn#sync",
];
const THREAD_CLASSES: &[&str] = &[
    "gthread",
    "gunicorn.workers.gthread.ThreadWorker",
    "egg:gunicorn#gthread",
];

/// `-k/--worker-class`: `sync` or `gthread` (kept as Gunicorn's short name);
/// any other class is refused with the reason.
pub fn parse_worker_class(text: &str) -> Result<String, String> {
    if SYNC_CLASSES.contains(&text) {
        return Ok("sync".into());
    }
    if THREAD_CLASSES.contains(&text) {
        return Ok("gthread".into());
    }
    let lower = text.to_ascii_lowercase();
    let why = if lower.contains("uvicorn") || lower.contains("asgi") {
        "not a WSGI worker: rgun serves WSGI (and native) applications; serve an ASGI application with uvicorn"
    } else if ["gevent", "eventlet", "tornado"]
        .iter()
        .any(|g| lower.contains(g))
    {
        "rgun has no green-thread worker: for applications that wait on I/O use `--threads N` (gthread)"
    } else {
        "unknown worker class: rgun has `sync` and `gthread` (with --threads)"
    };
    Err(why.to_string())
}

/// Gunicorn's "Using worker:" name for rgun's model: `gthread` when threads
/// run the application (as Gunicorn turns `sync` into `gthread` with
/// `--threads` above 1), else what `-k` said.
pub fn worker_class_name(class: &str, threads: usize) -> &str {
    if threads > 1 { "gthread" } else { class }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_classes() {
        assert_eq!(parse_worker_class("sync").unwrap(), "sync");
        assert_eq!(
            parse_worker_class("gunicorn.workers.gthread.ThreadWorker").unwrap(),
            "gthread"
        );
        assert!(
            parse_worker_class("uvicorn.workers.UvicornWorker")
                .unwrap_err()
                .contains("not a WSGI worker")
        );
        assert!(
            parse_worker_class("gevent")
                .unwrap_err()
                .contains("--threads")
        );
        assert_eq!(worker_class_name("sync", 4), "gthread");
        assert_eq!(worker_class_name("gthread", 1), "gthread");
    }

    #[test]
    fn every_setting_is_listed_once_and_maps_to_a_known_id() {
        let cmd = crate::config::command();
        for (i, setting) in SETTINGS.iter().enumerate() {
            assert!(
                !SETTINGS[..i].iter().any(|s| s.name == setting.name),
                "{} twice",
                setting.name
            );
            // A flag of Gunicorn's is an argument here, or belongs to
            // another part of issue 11 (merged separately).
            for flag in setting.flags.iter().filter_map(|f| f.strip_prefix("--")) {
                let known = cmd.get_arguments().any(|a| {
                    a.get_long() == Some(flag)
                        || a.get_all_aliases().into_iter().flatten().any(|l| l == flag)
                });
                let elsewhere = ["access-logformat", "proxy-protocol", "proxy-allow-from"];
                assert!(known || elsewhere.contains(&flag), "--{flag}");
            }
        }
    }

    /// Each setting rgun has names an argument id of the command; the ones
    /// another part of issue 11 adds must get these ids once their flag is
    /// there (this fails after a merge that named them otherwise).
    #[test]
    fn every_mapped_setting_is_an_argument() {
        let cmd = crate::config::command();
        for setting in SETTINGS {
            let Ours(id) = setting.map else { continue };
            let has_id = cmd.get_arguments().any(|a| a.get_id() == id);
            let has_flag = setting
                .flags
                .iter()
                .filter_map(|f| f.strip_prefix("--"))
                .any(|flag| {
                    cmd.get_arguments().any(|a| {
                        a.get_long() == Some(flag)
                            || a.get_all_aliases().into_iter().flatten().any(|l| l == flag)
                    })
                });
            assert!(
                has_id || !has_flag,
                "{} maps to `{id}`, which --{:?} is not",
                setting.name,
                setting.flags
            );
            let elsewhere = ["access_logformat", "proxy_protocol", "proxy_allow_from"];
            assert!(
                has_id || elsewhere.contains(&id),
                "{}: no argument `{id}`",
                setting.name
            );
        }
    }

    #[test]
    fn refusals() {
        assert!(refusal("daemon", "true").unwrap().contains("systemd"));
        assert_eq!(refusal("protocol", "http"), None);
        assert!(refusal("protocol", "uwsgi").is_some());
        assert_eq!(refusal("workers", "3"), None);
    }
}
