//! Configuration files (issue 11): `rgun.toml` and Gunicorn's
//! `gunicorn.conf.py`, the layers above them (`GUNICORN_CMD_ARGS`,
//! `RGUN_CMD_ARGS`, the command line), `--check-config`, `--print-config`
//! and `HUP` reading the file again. Each runs the real binary.

use std::path::Path;
use std::process::Output;

use crate::harness::{
    Server, TempDir, WAIT, process_exists, testapp, wait_for_file_line, wait_until,
};

/// Run `rgun ARGS` in `dir` with `envs`, to its exit.
fn rgun(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    crate::harness::run_rgun(dir, args, envs)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The line of `--print-config` output that sets `key`.
fn printed<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{text}"))
}

/// The pids of a process's children (Linux's /proc list).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn precedence_of_file_environment_and_flags() {
    let dir = TempDir::new("precedence");
    std::fs::write(
        dir.join("rgun.toml"),
        format!(
            "app = \"{}\"\nworkers = 4\ntimeout = 11\ngraceful_timeout = 12\nkeep_alive = 13\nmax_requests = 14\n",
            testapp()
        ),
    )
    .unwrap();
    let out = rgun(
        dir.path(),
        &["--print-config", "--keep-alive", "3"],
        &[
            (
                "GUNICORN_CMD_ARGS",
                "--timeout 21 --graceful-timeout 22 -w 2",
            ),
            ("RGUN_CMD_ARGS", "--graceful-timeout 32 --keep-alive 33"),
            ("WEB_CONCURRENCY", "7"),
        ],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    // The command line over RGUN_CMD_ARGS over GUNICORN_CMD_ARGS over the
    // file over the defaults (and the flag's own variable).
    assert_eq!(
        printed(&text, "keep_alive"),
        "keep_alive = 3  # command line"
    );
    assert_eq!(
        printed(&text, "graceful_timeout"),
        "graceful_timeout = 32  # RGUN_CMD_ARGS"
    );
    assert_eq!(
        printed(&text, "timeout"),
        "timeout = 21  # GUNICORN_CMD_ARGS"
    );
    assert_eq!(
        printed(&text, "workers"),
        "workers = 2  # GUNICORN_CMD_ARGS"
    );
    assert_eq!(
        printed(&text, "max_requests"),
        "max_requests = 14  # rgun.toml:6"
    );
    assert_eq!(printed(&text, "backlog"), "backlog = 2048  # default");
    assert!(
        stderr(&out).contains("Reading the configuration from rgun.toml"),
        "{}",
        stderr(&out)
    );

    // The file's worker count beats WEB_CONCURRENCY, as in Gunicorn.
    let out = rgun(dir.path(), &["--print-config"], &[("WEB_CONCURRENCY", "7")]);
    assert_eq!(
        printed(&stdout(&out), "workers"),
        "workers = 4  # rgun.toml:2"
    );
}

#[test]
fn a_served_worker_count_comes_from_the_winning_layer() {
    let dir = TempDir::new("served-count");
    std::fs::write(
        dir.join("rgun.toml"),
        format!(
            "app = \"{}\"\nbind = \"127.0.0.1:0\"\nworkers = 3\n",
            testapp()
        ),
    )
    .unwrap();
    // No APP and no --bind on the command line: both from the file.
    let server = Server::builder("")
        .current_dir(dir.path())
        .binds_from_config(1)
        .env("RGUN_CMD_ARGS", "--workers 2")
        .wait_for_workers(2)
        .start();
    server.get("/").assert_status(200);
    // The master forks every missing worker in one pass: with two booted,
    // a third would already be its child.
    assert_eq!(children(server.pid()).len(), 2, "{}", server.stderr.text());
}

/// Each kind of bad file: one line naming the file, the line and the key.
#[test]
fn bad_files_are_refused_with_one_line() {
    let app = format!("app = \"{}\"\n", testapp());
    let cases: &[(&str, &[&str])] = &[
        (
            "wokers = 2",
            &[
                "rgun.toml:2",
                "unknown key `wokers`",
                "did you mean `workers`?",
            ],
        ),
        (
            "max_request = 2",
            &[
                "rgun.toml:2",
                "`max_request`",
                "did you mean `max_requests`?",
            ],
        ),
        (
            "keepalive = 2",
            &[
                "rgun.toml:2",
                "`keepalive`",
                "Gunicorn's name",
                "`keep_alive`",
            ],
        ),
        (
            "workers = true",
            &["rgun.toml:2", "`workers` must be an integer, not a boolean"],
        ),
        (
            "workers = 2.5",
            &["rgun.toml:2", "`workers` must be an integer, not a float"],
        ),
        (
            "preload = \"yes\"",
            &[
                "rgun.toml:2",
                "`preload` must be true or false, not a string",
            ],
        ),
        (
            "bind = [[\"a\"]]",
            &["rgun.toml:2", "`bind` must be an array of strings"],
        ),
        (
            "[workers]\nx = 1",
            &["rgun.toml:2", "`workers` must be an integer, not a table"],
        ),
        (
            "workers = \"many\"",
            &["rgun.toml:2", "`workers`", "invalid value 'many'"],
        ),
        (
            "log_level = \"loud\"",
            &["rgun.toml:2", "`log_level`", "possible values"],
        ),
        (
            "worker_class = \"uvicorn.workers.UvicornWorker\"",
            &["rgun.toml:2", "not a WSGI worker"],
        ),
        ("daemon = true", &["rgun.toml:2", "`daemon`", "systemd"]),
        (
            "config = \"other.toml\"",
            &["rgun.toml:2", "unknown key `config`"],
        ),
        ("workers = ", &["rgun.toml:2", "not TOML"]),
        ("workers = 2\nworkers = 3", &["rgun.toml:3", "not TOML"]),
    ];
    for (body, mentions) in cases {
        let dir = TempDir::new("bad-file");
        std::fs::write(dir.join("rgun.toml"), format!("{app}{body}\n")).unwrap();
        let out = rgun(dir.path(), &["--check-config"], &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{body:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{body:?}: one line, not:\n{err}");
        for mention in *mentions {
            assert!(err.contains(mention), "{body:?}: no {mention:?} in {err:?}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    // A file named by -c that is not there, and no application anywhere.
    let dir = TempDir::new("bad-file");
    let out = rgun(dir.path(), &["-c", "nothere.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nothere.toml does not exist"),
        "{}",
        stderr(&out)
    );
    std::fs::write(dir.join("rgun.toml"), "workers = 2\n").unwrap();
    let out = rgun(dir.path(), &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no application"), "{}", stderr(&out));
    // A bad RGUN_CMD_ARGS is named too.
    let out = rgun(
        dir.path(),
        &[&testapp()],
        &[("RGUN_CMD_ARGS", "--workers lots")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("rgun: RGUN_CMD_ARGS: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_config_loads_the_application_in_a_child() {
    let dir = TempDir::new("check");
    let good = rgun(dir.path(), &["--check-config", &testapp()], &[]);
    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));
    assert!(
        stderr(&good).contains("Configuration OK"),
        "{}",
        stderr(&good)
    );

    // A library without the symbol: found only by loading it.
    let lib = testapp();
    let missing = lib.replace(":app", ":no_such_symbol");
    let bad = rgun(dir.path(), &["--check-config", &missing], &[]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("no_such_symbol"), "{}", stderr(&bad));

    // A Python application whose import fails, through the WSGI bridge.
    std::fs::write(
        dir.join("broken_app.py"),
        "raise RuntimeError('broken on purpose')\n",
    )
    .unwrap();
    let dir_text = dir.path().display().to_string();
    let bad = rgun(
        dir.path(),
        &[
            "--check-config",
            "--pythonpath",
            &dir_text,
            "broken_app:app",
        ],
        &[],
    );
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("broken on purpose"),
        "{}",
        stderr(&bad)
    );
    assert!(
        stderr(&bad).contains("Configuration check failed"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn hup_rereads_workers_and_timeout() {
    let dir = TempDir::new("hup");
    let file = dir.join("rgun.toml");
    let write = |body: &str| {
        std::fs::write(
            &file,
            format!(
                "app = \"{}\"\nbind = \"127.0.0.1:0\"\ngraceful_timeout = 5\n{body}\n",
                testapp()
            ),
        )
        .unwrap()
    };
    write("workers = 1\ntimeout = 60");
    let server = Server::builder("")
        .current_dir(dir.path())
        .binds_from_config(1)
        .wait_for_workers(1)
        .start();
    let first = server.wait_for_workers(1)[0];

    // A file that no longer parses changes nothing, and says why.
    write("workers = 3\ntimeout = 1\nwokers = 2");
    server.signal(libc::SIGHUP);
    let line = server.wait_for_log("Reloading the configuration failed", WAIT);
    assert!(line.contains("rgun.toml:6: unknown key `wokers`"), "{line}");
    assert!(line.contains("the settings stay as they were"), "{line}");
    let reloaded = server.wait_for_workers(2)[1];
    wait_until("the old worker is gone", || !process_exists(first));
    assert_eq!(children(server.pid()), vec![reloaded]);

    // Three workers and a one-second timeout for the new workers.
    write("workers = 3\ntimeout = 1");
    server.signal(libc::SIGHUP);
    server.wait_for_log("Configuration reloaded: 3 workers, timeout 1 s", WAIT);
    let new = server.wait_for_workers(5)[2..].to_vec();
    wait_until("the previous worker is gone", || !process_exists(reloaded));
    wait_until("three workers serve", || {
        let mut now = children(server.pid());
        now.sort();
        let mut want = new.clone();
        want.sort();
        now == want
    });
    // The timeout applies: a request held past it is aborted.
    let mut conn = server.connect();
    conn.send(&crate::harness::get("/sleep?ms=60000"));
    conn.read_response().assert_status(504);
    let line = server.wait_for_log("WORKER TIMEOUT", WAIT);
    assert!(line.ends_with("(--timeout 1 s)"), "{line}");
}

/// With `--chdir`, HUP still reads the file rgun started with (the
/// `./rgun.toml` of the directory it was started in), not one in the
/// `--chdir` directory.
#[test]
fn hup_with_chdir_reads_the_file_of_the_start_directory() {
    let dir = TempDir::new("hup-chdir");
    let elsewhere = dir.join("app-dir");
    std::fs::create_dir(&elsewhere).unwrap();
    let file = dir.join("rgun.toml");
    let write = |workers: usize| {
        std::fs::write(
            &file,
            format!(
                "app = \"{}\"\nbind = \"127.0.0.1:0\"\nworkers = {workers}\nchdir = {:?}\n",
                testapp(),
                elsewhere.display().to_string()
            ),
        )
        .unwrap()
    };
    write(1);
    let server = Server::builder("")
        .current_dir(dir.path())
        .binds_from_config(1)
        .wait_for_workers(1)
        .start();
    server.wait_for_workers(1);
    write(2);
    server.signal(libc::SIGHUP);
    let line = server.wait_for_log("Configuration reloaded", WAIT);
    assert!(line.contains("Configuration reloaded: 2 workers"), "{line}");
}

/// A reload that fails part-way (here: the file's application cannot be
/// found, after its `env` was applied) leaves the environment as it was:
/// a worker started afterwards sees the old value, not half a reload.
#[test]
fn a_failed_hup_puts_the_environment_back() {
    let dir = TempDir::new("hup-env");
    std::fs::write(
        dir.join("envapp.py"),
        "import os\n\ndef app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [os.environ.get('RGUN_TEST_MARK', 'unset').encode()]\n",
    )
    .unwrap();
    let file = dir.join("rgun.toml");
    let write = |app: &str, mark: &str| {
        std::fs::write(
            &file,
            format!(
                "app = \"{app}\"\npythonpath = {:?}\nbind = \"127.0.0.1:0\"\nworkers = 1\nenv = [\"RGUN_TEST_MARK={mark}\"]\n",
                dir.path().display().to_string()
            ),
        )
        .unwrap()
    };
    write("envapp:app", "one");
    let server = Server::builder("")
        .current_dir(dir.path())
        .binds_from_config(1)
        .wait_for_workers(1)
        .start();
    let first = server.wait_for_workers(1)[0];
    assert_eq!(server.get("/").text(), "one");

    let missing = dir.join("missing.so");
    write(&format!("{}:app", missing.display()), "two");
    server.signal(libc::SIGHUP);
    let line = server.wait_for_log("Reloading the configuration failed", WAIT);
    assert!(line.contains("missing.so"), "{line}");
    let reloaded = server.wait_for_workers(2)[1];
    wait_until("the old worker is gone", || !process_exists(first));
    let mut conn = server.connect();
    conn.send(&crate::harness::get("/"));
    let response = conn.read_response();
    response.assert_status(200);
    assert_eq!(
        response.text(),
        "one",
        "worker {reloaded} saw the failed file's env"
    );
}

#[test]
fn hup_with_a_changed_bind_says_a_restart_is_needed() {
    let dir = TempDir::new("hup-bind");
    let file = dir.join("rgun.toml");
    std::fs::write(
        &file,
        format!("app = \"{}\"\nbind = \"127.0.0.1:0\"\n", testapp()),
    )
    .unwrap();
    let server = Server::builder("")
        .current_dir(dir.path())
        .binds_from_config(1)
        .wait_for_workers(1)
        .start();
    let addr = server.addr();
    std::fs::write(
        &file,
        format!(
            "app = \"{}\"\nbind = [\"127.0.0.1:0\", \"[::1]:0\"]\n",
            testapp()
        ),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    let line = server.wait_for_log("bind changed", WAIT);
    assert!(line.contains("restart rgun to listen there"), "{line}");
    assert!(line.contains("[WARNING]"), "{line}");
    server.wait_for_workers(2);
    // Still served where it was.
    crate::harness::Conn::tcp(addr)
        .request(&crate::harness::get("/"))
        .assert_status(200);
}

#[test]
fn gunicorn_conf_py_settings_map_onto_rgun() {
    let dir = TempDir::new("gunicorn-conf");
    let error_log = dir.join("error.log");
    // A WSGI application that tells what raw_env set.
    let app_dir = dir.join("app");
    std::fs::create_dir(&app_dir).unwrap();
    std::fs::write(
        app_dir.join("envapp.py"),
        "import os\n\ndef app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [os.environ.get('RGUN_TEST_FROM_CONF', 'unset').encode()]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("gunicorn.conf.py"),
        format!(
            r#"import multiprocessing
wsgi_app = "envapp:app"
pythonpath = "{app_dir}"
bind = ["127.0.0.1:0"]
workers = 1 + 1
timeout = 45.0
keepalive = 4
loglevel = "DEBUG"
raw_env = ["RGUN_TEST_FROM_CONF=yes"]
errorlog = "{log}"
proc_name = "shop"
statsd_host = "localhost:8125"
my_own_helper = 3

def post_fork(server, worker):
    pass
"#,
            app_dir = app_dir.display(),
            log = error_log.display()
        ),
    )
    .unwrap();
    // What it maps to, and where from.
    let out = rgun(dir.path(), &["--print-config"], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert_eq!(
        printed(&text, "app"),
        "app = \"envapp:app\"  # gunicorn.conf.py:2"
    );
    assert_eq!(
        printed(&text, "workers"),
        "workers = 2  # gunicorn.conf.py:5"
    );
    assert_eq!(
        printed(&text, "timeout"),
        "timeout = 45  # gunicorn.conf.py:6"
    );
    assert_eq!(
        printed(&text, "keep_alive"),
        "keep_alive = 4  # gunicorn.conf.py:7"
    );
    assert_eq!(
        printed(&text, "log_level"),
        "log_level = \"debug\"  # gunicorn.conf.py:8"
    );
    assert_eq!(
        printed(&text, "env"),
        "env = [\"RGUN_TEST_FROM_CONF=yes\"]  # gunicorn.conf.py:9"
    );
    assert_eq!(
        printed(&text, "proc_name"),
        "proc_name = \"shop\"  # gunicorn.conf.py:11"
    );
    assert!(
        text.contains("# python_config: gunicorn.conf.py (server hooks: post_fork)"),
        "{text}"
    );

    // Served: read by default, without -c, from the working directory
    // (into a fresh error log: --print-config wrote to it too).
    std::fs::remove_file(&error_log).unwrap();
    let server = Server::builder("")
        .current_dir(dir.path())
        .binds_from_config(0)
        .spawn();
    let listening = wait_for_file_line(&error_log, "Listening at: ", WAIT);
    let addr = crate::harness::parse_listening(&listening);
    assert_eq!(addr.len(), 1, "{listening}");
    wait_for_file_line(&error_log, "Booting worker with pid: ", WAIT);
    let log = std::fs::read_to_string(&error_log).unwrap();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("[WARNING]")).collect();
    assert_eq!(warnings.len(), 1, "one warning, for statsd_host:\n{log}");
    assert!(
        warnings[0].contains("gunicorn.conf.py:12: `statsd_host`: not supported"),
        "{log}"
    );
    assert!(warnings[0].contains("--metrics-bind"), "{log}");
    assert!(
        server
            .stderr
            .text()
            .contains("Reading the configuration from gunicorn.conf.py")
            || log.contains("Reading the configuration from gunicorn.conf.py"),
        "{log}"
    );
    assert!(!log.contains("my_own_helper"), "{log}");
    let crate::harness::Listen::Tcp(addr) = addr[0].clone() else {
        panic!("{listening}")
    };
    // raw_env reached the application in the workers.
    let response = crate::harness::Conn::tcp(addr).request(&crate::harness::get("/"));
    response.assert_status(200);
    assert_eq!(response.text(), "yes");
    wait_until("two workers", || children(server.pid()).len() == 2);
}

#[test]
fn a_gunicorn_conf_py_that_raises_is_one_line() {
    let dir = TempDir::new("gunicorn-conf-raises");
    std::fs::write(dir.join("gunicorn.conf.py"), "workers = undefined_name\n").unwrap();
    let out = rgun(dir.path(), &[&testapp()], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("gunicorn.conf.py"), "{err}");
    assert!(err.contains("NameError"), "{err}");
}

#[test]
fn the_documented_rgun_toml_parses_and_lists_every_flag() {
    let manifest = crate::harness::manifest_dir();
    let documented = manifest.join("config/rgun.toml");
    let text = std::fs::read_to_string(&documented).unwrap();
    let dir = TempDir::new("documented");
    let documented = documented.display().to_string();
    let out = rgun(
        dir.path(),
        &["-c", &documented, "--print-config", &testapp()],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Every value it sets is the default: the same as with no file.
    let defaults = rgun(dir.path(), &["--print-config", &testapp()], &[]);
    let defaults = stdout(&defaults);
    let value = |line: &str| line.split("  # ").next().unwrap().to_string();
    for line in stdout(&out).lines().filter(|l| l.contains("rgun.toml:")) {
        let key = line.split(' ').next().unwrap();
        assert_eq!(value(line), value(printed(&defaults, key)), "{line}");
    }
    let help = rgun(dir.path(), &["--help"], &[]);
    let help = stdout(&help);
    let mut flags = 0;
    for line in help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
    {
        let Some(long) = line.split([' ', ',']).find_map(|w| w.strip_prefix("--")) else {
            continue;
        };
        if ["help", "version", "config", "check-config", "print-config"].contains(&long) {
            continue;
        }
        flags += 1;
        let key = long.replace('-', "_");
        let listed = text.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.starts_with(&format!("{key} =")) || l.contains(&format!("(--{long})"))
        });
        assert!(listed, "config/rgun.toml does not document --{long}");
    }
    assert!(flags > 30, "{help}");
}

#[test]
fn hup_with_preload_and_a_broken_file_does_not_reexecute() {
    let dir = TempDir::new("hup-preload");
    let file = dir.join("rgun.toml");
    let body = format!(
        "app = \"{}\"\nbind = \"127.0.0.1:0\"\npreload = true\n",
        testapp()
    );
    std::fs::write(&file, &body).unwrap();
    let server = Server::builder("")
        .current_dir(dir.path())
        .binds_from_config(1)
        .wait_for_workers(1)
        .start();
    let worker = server.wait_for_workers(1)[0];
    std::fs::write(&file, format!("{body}timeout = \"soon\"\n")).unwrap();
    server.signal(libc::SIGHUP);
    let line = server.wait_for_log("the configuration does not load", WAIT);
    assert!(line.contains("rgun.toml:4: `timeout`"), "{line}");
    assert!(line.contains("not reloading"), "{line}");
    // The same master and worker serve on.
    assert_eq!(crate::harness::fresh_pid(&server), worker);
    assert!(
        !server.stderr.text().contains("re-executing"),
        "{}",
        server.stderr.text()
    );
}

#[test]
fn capture_output_sends_prints_to_the_error_log() {
    let dir = TempDir::new("capture");
    let error_log = dir.join("error.log");
    std::fs::write(
        dir.join("printing.py"),
        "import sys\nprint('printed at import', flush=True)\n\ndef app(environ, start_response):\n    print('printed by a request', file=sys.stderr, flush=True)\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'ok']\n",
    )
    .unwrap();
    let dir_text = dir.path().display().to_string();
    let log_text = error_log.display().to_string();
    let server = Server::builder("printing:app")
        .args([
            "--pythonpath",
            &dir_text,
            "--capture-output",
            "--error-logfile",
            &log_text,
        ])
        .spawn();
    wait_for_file_line(&error_log, "printed at import", WAIT);
    let listening = wait_for_file_line(&error_log, "Listening at: ", WAIT);
    let crate::harness::Listen::Tcp(addr) = crate::harness::parse_listening(&listening)[0].clone()
    else {
        panic!("{listening}")
    };
    crate::harness::Conn::tcp(addr)
        .request(&crate::harness::get("/"))
        .assert_status(200);
    wait_for_file_line(&error_log, "printed by a request", WAIT);
    assert!(
        !server.stdout.text().contains("printed"),
        "{}",
        server.stdout.text()
    );
    assert!(
        !server.stderr.text().contains("printed"),
        "{}",
        server.stderr.text()
    );
}
