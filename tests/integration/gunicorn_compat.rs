//! Coming from Gunicorn (issue 11): every flag of Gunicorn 25 as a Gunicorn
//! user types it is understood, either done, accepted with nothing to do,
//! or refused with one line saying why and what to use; and the log lines
//! operators grep for ("Listening at:", "Using worker:", "Booting worker",
//! "Worker exiting") read as Gunicorn's. Plus the completions and the man
//! page generated from the same definition.

use std::process::Output;

use crate::harness::{Server, TempDir, WAIT, log_line_pid, testapp, wait_retired};

/// What rgun does with a Gunicorn flag.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Done (or accepted): `--print-config` with it exits 0.
    Ok,
    /// Refused: exit 2, one line naming the flag and containing this.
    Refused(&'static str),
}

use Expect::{Ok as Done, Refused};

/// Every flag of Gunicorn's `gunicorn/config.py`, with a value a Gunicorn
/// user would give (`None`: a switch).
const FLAGS: &[(&str, Option<&str>, Expect)] = &[
    ("-c", Some("CONFIG"), Done),
    ("--config", Some("CONFIG"), Done),
    ("-b", Some("127.0.0.1:0"), Done),
    ("--bind", Some("unix:/tmp/rgun-compat.sock"), Done),
    ("--backlog", Some("64"), Done),
    ("-w", Some("3"), Done),
    ("--workers", Some("3"), Done),
    ("-k", Some("sync"), Done),
    ("--worker-class", Some("gthread"), Done),
    ("-k", Some("gunicorn.workers.gthread.ThreadWorker"), Done),
    (
        "-k",
        Some("uvicorn.workers.UvicornWorker"),
        Refused("not a WSGI worker"),
    ),
    ("-k", Some("gevent"), Refused("--threads")),
    ("--worker-class", Some("eventlet"), Refused("--threads")),
    ("--threads", Some("4"), Done),
    ("--worker-connections", Some("50"), Done),
    ("--max-requests", Some("1000"), Done),
    ("--max-requests-jitter", Some("50"), Done),
    ("-t", Some("60"), Done),
    ("--timeout", Some("60"), Done),
    ("--graceful-timeout", Some("10"), Done),
    ("--keep-alive", Some("5"), Done),
    ("--limit-request-line", Some("4094"), Done),
    ("--limit-request-fields", Some("50"), Done),
    ("--limit-request-field_size", Some("4000"), Done),
    ("--reload", None, Done),
    ("--reload-engine", Some("inotify"), Done),
    ("--reload-extra-file", Some("x.html"), Refused("HUP")),
    ("--spew", None, Refused("not Python")),
    ("--check-config", None, Done),
    ("--print-config", None, Done),
    ("--preload", None, Done),
    ("--no-sendfile", None, Done),
    ("--reuse-port", None, Done),
    ("--chdir", Some("/tmp"), Done),
    ("-D", None, Refused("systemd")),
    ("--daemon", None, Refused("systemd")),
    ("-e", Some("A=1"), Done),
    ("--env", Some("A=1"), Done),
    ("-p", Some("/tmp/rgun-compat.pid"), Done),
    ("--pid", Some("/tmp/rgun-compat.pid"), Done),
    ("--worker-tmp-dir", Some("/dev/shm"), Done),
    ("-u", Some("0"), Done),
    ("--user", Some("root"), Done),
    ("-g", Some("0"), Done),
    ("--group", Some("root"), Done),
    ("-m", Some("007"), Done),
    ("--umask", Some("0o22"), Done),
    ("--initgroups", None, Done),
    ("--forwarded-allow-ips", Some("*"), Done),
    ("--access-logfile", Some("-"), Done),
    (
        "--disable-redirect-access-to-syslog",
        None,
        Refused("journald"),
    ),
    ("--access-logformat", Some("%(h)s"), Done),
    ("--error-logfile", Some("-"), Done),
    ("--log-file", Some("-"), Done),
    ("--log-level", Some("debug"), Done),
    ("--capture-output", None, Done),
    ("--logger-class", Some("x.Logger"), Refused("journald")),
    ("--log-config", Some("log.ini"), Refused("journald")),
    ("--log-config-json", Some("log.json"), Refused("journald")),
    (
        "--log-syslog-to",
        Some("udp://localhost:514"),
        Refused("journald"),
    ),
    ("--log-syslog", None, Refused("journald")),
    ("--log-syslog-prefix", Some("app"), Refused("journald")),
    ("--log-syslog-facility", Some("user"), Refused("journald")),
    ("-R", None, Done),
    ("--enable-stdio-inheritance", None, Done),
    (
        "--statsd-host",
        Some("localhost:8125"),
        Refused("--metrics-bind"),
    ),
    ("--dogstatsd-tags", Some("a:b"), Refused("--metrics-bind")),
    ("--statsd-prefix", Some("app"), Refused("--metrics-bind")),
    ("--enable-backlog-metric", None, Refused("--metrics-bind")),
    ("-n", Some("shop"), Done),
    ("--name", Some("shop"), Done),
    ("--pythonpath", Some("/tmp"), Done),
    ("--paste", Some("app.ini"), Refused("module:callable")),
    ("--paster", Some("app.ini"), Refused("module:callable")),
    ("--proxy-protocol", Some("v1"), Done),
    ("--proxy-allow-from", Some("127.0.0.1"), Done),
    ("--protocol", Some("http"), Done),
    ("--protocol", Some("uwsgi"), Refused("proxy_pass")),
    (
        "--uwsgi-allow-from",
        Some("127.0.0.1"),
        Refused("proxy_pass"),
    ),
    (
        "--keyfile",
        Some("key.pem"),
        Refused("terminate TLS in Nginx"),
    ),
    (
        "--certfile",
        Some("cert.pem"),
        Refused("terminate TLS in Nginx"),
    ),
    (
        "--ssl-version",
        Some("TLSv1_2"),
        Refused("terminate TLS in Nginx"),
    ),
    ("--cert-reqs", Some("0"), Refused("terminate TLS in Nginx")),
    (
        "--ca-certs",
        Some("ca.pem"),
        Refused("terminate TLS in Nginx"),
    ),
    (
        "--suppress-ragged-eofs",
        None,
        Refused("terminate TLS in Nginx"),
    ),
    (
        "--do-handshake-on-connect",
        None,
        Refused("terminate TLS in Nginx"),
    ),
    ("--ciphers", Some("HIGH"), Refused("terminate TLS in Nginx")),
    ("--http-protocols", Some("h1"), Done),
    ("--http-protocols", Some("h2,h1"), Refused("HTTP/2")),
    ("--http2-cleartext", Some("off"), Done),
    ("--http2-cleartext", Some("on"), Refused("HTTP/2")),
    (
        "--http2-max-concurrent-streams",
        Some("100"),
        Refused("HTTP/2"),
    ),
    (
        "--http2-initial-window-size",
        Some("65535"),
        Refused("HTTP/2"),
    ),
    ("--http2-max-frame-size", Some("16384"), Refused("HTTP/2")),
    (
        "--http2-max-header-list-size",
        Some("65536"),
        Refused("HTTP/2"),
    ),
    ("--paste-global", Some("a=b"), Refused("module:callable")),
    ("--permit-obsolete-folding", None, Refused("RFC 9112")),
    ("--strip-header-spaces", None, Refused("RFC 9112")),
    (
        "--permit-unconventional-http-method",
        None,
        Refused("RFC 9112"),
    ),
    (
        "--permit-unconventional-http-version",
        None,
        Refused("RFC 9112"),
    ),
    ("--casefold-http-method", None, Refused("RFC 9112")),
    (
        "--forwarder-headers",
        Some("SCRIPT_NAME"),
        Refused("request headers"),
    ),
    ("--header-map", Some("drop"), Done),
    ("--header-map", Some("dangerous"), Refused("`drop`")),
    ("--asgi-loop", Some("uvloop"), Refused("ASGI")),
    ("--asgi-lifespan", Some("on"), Refused("ASGI")),
    ("--asgi-disconnect-grace-period", Some("3"), Refused("ASGI")),
    ("--http-parser", Some("auto"), Done),
    ("--http-parser", Some("fast"), Refused("its own")),
    ("--root-path", Some("/api"), Refused("ASGI")),
    ("--dirty-app", Some("x:y"), Refused("task queue")),
    ("--dirty-workers", Some("2"), Refused("task queue")),
    ("--dirty-timeout", Some("300"), Refused("task queue")),
    ("--dirty-threads", Some("1"), Refused("task queue")),
    (
        "--dirty-graceful-timeout",
        Some("30"),
        Refused("task queue"),
    ),
    ("--control-socket", Some("/tmp/c.sock"), Refused("signals")),
    ("--control-socket-mode", Some("0600"), Refused("signals")),
    ("--no-control-socket", None, Done),
    ("-v", None, Done),
    ("--version", None, Done),
];

fn rgun(dir: &std::path::Path, args: &[String]) -> Output {
    crate::harness::run_rgun(dir, args, &[])
}

#[test]
fn every_gunicorn_flag_is_understood() {
    let dir = TempDir::new("gunicorn-flags");
    let config = dir.join("rgun.conf.toml");
    std::fs::write(&config, "workers = 2\n").unwrap();
    for (flag, value, expect) in FLAGS {
        let mut args = vec![flag.to_string()];
        if let Some(value) = value {
            args.push(value.replace("CONFIG", &config.display().to_string()));
        }
        args.push("--print-config".into());
        args.push(testapp());
        let out = rgun(dir.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        let what = format!("rgun {}: {err}", args.join(" "));
        assert!(!err.contains("panicked"), "{what}");
        match expect {
            Done => assert_eq!(out.status.code(), Some(0), "{what}"),
            Refused(why) => {
                assert_eq!(out.status.code(), Some(2), "{what}");
                assert_eq!(err.lines().count(), 1, "one line: {what}");
                assert!(err.contains(why), "no {why:?}: {what}");
                assert!(!err.contains("unexpected argument"), "{what}");
            }
        }
    }
}

/// The README's "Coming from Gunicorn" table names every flag.
#[test]
fn the_readme_lists_every_gunicorn_flag() {
    let readme = std::fs::read_to_string(crate::harness::manifest_dir().join("README.md")).unwrap();
    let section = readme
        .split("## Coming from Gunicorn")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a \"Coming from Gunicorn\" section");
    for (flag, _, _) in FLAGS {
        if ["-v", "--version"].contains(flag) {
            continue;
        }
        assert!(
            section.contains(&format!("`{flag}`")),
            "README lacks {flag}"
        );
    }
}

#[test]
fn accepted_flags_with_nothing_to_do_say_so_once() {
    let dir = TempDir::new("noop-flags");
    let args: Vec<String> = [
        "--worker-tmp-dir",
        "/dev/shm",
        "--no-sendfile",
        "--check-config",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([testapp()])
    .collect();
    let out = rgun(dir.path(), &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        err.matches("--worker-tmp-dir /dev/shm: nothing to do")
            .count(),
        1,
        "{err}"
    );
    assert_eq!(
        err.matches("--no-sendfile: nothing to do").count(),
        1,
        "{err}"
    );
}

#[test]
fn gunicorn_log_lines() {
    let path = crate::harness::unique_socket_path("compat");
    let mut server = Server::builder(testapp())
        .bind("127.0.0.1:0")
        .bind(format!("unix:{}", path.display()))
        .args(["-w", "2"])
        .wait_for_workers(2)
        .start();
    let master = server.pid();
    let log = server.stderr.text();
    // One line with every address, joined by commas, and the master's pid.
    let listening: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Listening at: "))
        .collect();
    assert_eq!(listening.len(), 1, "{log}");
    let addr = server.addr();
    assert!(
        listening[0].ends_with(&format!(
            "Listening at: http://{addr},unix:{} ({master})",
            path.display()
        )),
        "{log}"
    );
    let using = server.wait_for_log("Using worker: ", WAIT);
    assert!(using.ends_with("Using worker: sync"), "{using}");
    // "Booting worker" comes from the worker itself: its own pid in [pid].
    let workers = server.wait_for_workers(2);
    for line in log
        .lines()
        .filter(|l| l.contains("Booting worker with pid: "))
    {
        let pid: u32 = line.rsplit(": ").next().unwrap().parse().unwrap();
        assert_eq!(log_line_pid(line), Some(pid), "{line}");
        assert!(workers.contains(&pid));
    }
    // So does "Worker exiting", on TTOU.
    server.signal(libc::SIGTTOU);
    let line = server.wait_for_log("Worker exiting (pid: ", WAIT);
    let pid: u32 = line
        .rsplit("(pid: ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    assert_eq!(log_line_pid(&line), Some(pid), "{line}");
    wait_retired(&server, pid);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(WAIT).code(), Some(0));

    // With threads, Gunicorn names the model gthread.
    let server = Server::builder(testapp()).args(["--threads", "4"]).start();
    let using = server.wait_for_log("Using worker: ", WAIT);
    assert!(using.ends_with("Using worker: gthread"), "{using}");
}

#[test]
fn completions_and_man_page() {
    let dir = TempDir::new("completions");
    for shell in ["bash", "zsh", "fish"] {
        let out = rgun(dir.path(), &["completions".into(), shell.into()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(text.contains("max-requests"), "{shell}: {text}");
        assert!(text.contains("check-config"), "{shell}: {text}");
    }
    let out = rgun(dir.path(), &["completions".into(), "tcsh".into()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    let out = rgun(dir.path(), &["man".into()]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        page.starts_with(".ie") || page.contains(".TH rgun"),
        "{page}"
    );
    assert!(page.contains("graceful\\-timeout"), "{page}");
}
