//! The table of Gunicorn 25's settings (`gunicorn/config.py`), in its
//! order, each with what rgun makes of it.

use super::{Map, Setting};

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
    s!("pre_exec", [], false, Hook),
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
