//! Gunicorn's server hooks from a `gunicorn.conf.py` (issue 11), with the
//! real binary, real Python and real signals: `tests/python/hooks/
//! gunicorn.conf.py` records every call (hook, pid, arguments) to a file,
//! and the tests check the calls and their order; hooks that raise or
//! hang; a native application; and prometheus_client's multiprocess mode
//! through `child_exit`, set up as its documentation sets it up for
//! Gunicorn.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{
    App, Server, ServerBuilder, TempDir, WAIT, fresh_pid, get, process_exists, request, testapp,
    wait_until,
};
use crate::wsgi_harness::{python_dir, test_venv};

/// The recording configuration file.
fn recording_conf() -> PathBuf {
    python_dir().join("hooks/gunicorn.conf.py")
}

/// Every call recorded so far, in order.
fn calls(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn named<'a>(calls: &'a [Value], hook: &str) -> Vec<&'a Value> {
    calls.iter().filter(|c| c["hook"] == hook).collect()
}

/// Wait until a call satisfies `matches`; return every call so far.
#[track_caller]
fn wait_for_call(log: &Path, what: &str, matches: impl Fn(&Value) -> bool) -> Vec<Value> {
    wait_until(&format!("{what} is recorded in {}", log.display()), || {
        calls(log).iter().any(&matches)
    });
    calls(log)
}

/// Where in `calls` the first call satisfying `matches` is.
#[track_caller]
fn position(calls: &[Value], what: &str, matches: impl Fn(&Value) -> bool) -> usize {
    calls
        .iter()
        .position(matches)
        .unwrap_or_else(|| panic!("no {what} among the calls: {calls:#?}"))
}

fn pid(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a pid"))
}

/// The WSGI test application with the recording file's hooks.
fn hooked(log: &Path, args: &[&str]) -> ServerBuilder {
    App::Wsgi
        .builder()
        .arg("--python-hooks")
        .arg(recording_conf().to_str().unwrap())
        .args(args.iter().copied())
        .env("HOOK_LOG", log.to_str().unwrap())
}

#[test]
fn every_hook_runs_in_gunicorns_order() {
    let dir = TempDir::new("hooks-order");
    let log = dir.join("calls.jsonl");
    let mut server = hooked(&log, &["--workers", "2"]).start();
    let master = u64::from(server.pid());
    let (hook_process, workers) = start_calls(&server, &log);
    requests_between_pre_and_post_request(&server, &log);

    // A worker killed: child_exit in the master's hook process, with its
    // pid and age.
    // SAFETY: kill(2) on a worker of this test's server.
    unsafe { libc::kill(workers[0] as i32, libc::SIGKILL) };
    let after_kill = wait_for_call(&log, "child_exit of the killed worker", |c| {
        c["hook"] == "child_exit" && pid(&c["worker_pid"]) == workers[0]
    });
    let exit = named(&after_kill, "child_exit")[0];
    assert_eq!(exit["age"], 1);
    assert_eq!(pid(&exit["pid"]), hook_process);

    // TTIN: nworkers_changed(server, 3, 2).
    server.signal(libc::SIGTTIN);
    wait_for_call(&log, "nworkers_changed(3, 2)", |c| {
        c["hook"] == "nworkers_changed" && c["new"] == 3 && c["old"] == 2
    });
    // The killed worker's replacement and the third worker, booted.
    wait_until("four workers booted in all", || {
        named(&calls(&log), "post_worker_init").len() == 4
    });

    let new_workers = reload_calls(&server, &log, workers[0]);

    // INT: a quick stop. Each worker runs worker_int then worker_exit;
    // the master's child_exit for each; on_exit last of all.
    server.signal(libc::SIGINT);
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
    let all = calls(&log);
    for worker in &new_workers {
        let int = position(&all, "worker_int", |c| {
            c["hook"] == "worker_int" && pid(&c["pid"]) == *worker
        });
        let exit = position(&all, "worker_exit", |c| {
            c["hook"] == "worker_exit" && pid(&c["pid"]) == *worker
        });
        let child_exit = position(&all, "child_exit", |c| {
            c["hook"] == "child_exit" && pid(&c["worker_pid"]) == *worker
        });
        assert!(int < exit && exit < child_exit, "{all:#?}");
        assert_eq!(pid(&all[exit]["server_pid"]), master);
    }
    assert_eq!(all.last().unwrap()["hook"], "on_exit", "{all:#?}");
    assert_eq!(named(&all, "on_exit").len(), 1);
}

/// The start of a server with two workers: the worker count set,
/// on_starting, when_ready, then for each worker pre_fork in the master's
/// hook process, post_fork and post_worker_init in the worker. Returns
/// the hook process's pid and the workers'.
fn start_calls(server: &Server, log: &Path) -> (u64, Vec<u64>) {
    let master = u64::from(server.pid());
    let booted = wait_for_call(log, "two post_worker_init", |_| {
        named(&calls(log), "post_worker_init").len() == 2
    });
    let names: Vec<&str> = booted.iter().map(|c| c["hook"].as_str().unwrap()).collect();
    assert_eq!(
        names[..3],
        ["nworkers_changed", "on_starting", "when_ready"],
        "{booted:#?}"
    );
    assert_eq!(booted[0]["new"], 2);
    assert!(booted[0]["old"].is_null(), "{booted:#?}");
    assert_eq!(pid(&booted[1]["server_pid"]), master);
    assert_eq!(booted[1]["workers"], 2);
    assert_eq!(booted[1]["timeout"], 30);
    // The master's hooks run in one process of their own.
    let hook_process = pid(&booted[0]["pid"]);
    assert_ne!(hook_process, master);
    for call in &booted[..3] {
        assert_eq!(pid(&call["pid"]), hook_process, "{call}");
    }
    let mut workers = Vec::new();
    for age in [1, 2] {
        let pre_fork = position(&booted, "pre_fork", |c| {
            c["hook"] == "pre_fork" && c["age"] == age
        });
        assert_eq!(booted[pre_fork]["worker_pid"], "[booting]");
        assert_eq!(pid(&booted[pre_fork]["pid"]), hook_process);
        let post_fork = position(&booted, "post_fork", |c| {
            c["hook"] == "post_fork" && c["age"] == age
        });
        let worker = pid(&booted[post_fork]["pid"]);
        assert_eq!(pid(&booted[post_fork]["worker_pid"]), worker);
        assert_eq!(pid(&booted[post_fork]["server_pid"]), master);
        let init = position(&booted, "post_worker_init", |c| {
            c["hook"] == "post_worker_init" && pid(&c["pid"]) == worker
        });
        assert!(pre_fork < post_fork && post_fork < init, "{booted:#?}");
        assert_eq!(booted[init]["age"], age);
        workers.push(worker);
    }
    // server.log and worker.log write to rgun's error log, each with its
    // process's pid.
    server.wait_for_log(
        &format!("[{master}] [INFO] on_starting says hello to the master's log"),
        WAIT,
    );
    let worker_line = format!("post_worker_init says hello from worker {}", workers[0]);
    let line = server.wait_for_log(&worker_line, WAIT);
    assert!(line.contains(&format!("[{}] [INFO]", workers[0])), "{line}");
    (hook_process, workers)
}

/// HUP: the configuration's two workers replace TTIN's three, as in
/// Gunicorn (nworkers_changed(server, 2, 3)), then on_reload, then two new
/// workers; the old ones (all but `killed`) leave gracefully: worker_exit
/// (no worker_int), then child_exit. Returns the new workers.
fn reload_calls(server: &Server, log: &Path, killed: u64) -> Vec<u64> {
    let before_reload = calls(log).len();
    server.signal(libc::SIGHUP);
    let reloaded = wait_for_call(log, "on_reload", |c| c["hook"] == "on_reload");
    let on_reload = position(&reloaded, "on_reload", |c| c["hook"] == "on_reload");
    assert!(on_reload >= before_reload);
    let fewer = position(&reloaded, "nworkers_changed(2, 3)", |c| {
        c["hook"] == "nworkers_changed" && c["new"] == 2 && c["old"] == 3
    });
    assert!(before_reload <= fewer && fewer < on_reload, "{reloaded:#?}");
    wait_until("two workers booted after the reload", || {
        named(&calls(log)[on_reload..], "post_worker_init").len() == 2
    });
    let all = calls(log);
    let first_fork = position(&all, "pre_fork", |c| {
        c["hook"] == "pre_fork" && c["age"] == 5
    });
    assert!(on_reload < first_fork, "{all:#?}");
    let old_workers: Vec<u64> = named(&all[..on_reload], "post_worker_init")
        .iter()
        .map(|c| pid(&c["pid"]))
        .filter(|p| *p != killed)
        .collect();
    assert_eq!(old_workers.len(), 3, "{all:#?}");
    for old in &old_workers {
        wait_for_call(log, "child_exit of an old worker", |c| {
            c["hook"] == "child_exit" && pid(&c["worker_pid"]) == *old
        });
        let all = calls(log);
        let exit = position(&all, "worker_exit", |c| {
            c["hook"] == "worker_exit" && pid(&c["pid"]) == *old
        });
        let child_exit = position(&all, "child_exit", |c| {
            c["hook"] == "child_exit" && pid(&c["worker_pid"]) == *old
        });
        assert!(exit < child_exit, "{all:#?}");
        assert!(
            named(&all, "worker_int")
                .iter()
                .all(|c| pid(&c["pid"]) != *old)
        );
    }
    named(&all[on_reload..], "post_worker_init")
        .iter()
        .map(|c| pid(&c["pid"]))
        .collect()
}

/// `pre_request(worker, req)` and `post_request(worker, req, environ,
/// resp)` around one request, with Gunicorn's `req` and `resp`.
fn requests_between_pre_and_post_request(server: &Server, log: &Path) {
    let response = server.connect().request(&request(
        "GET",
        "/pid?x=1&y=%20",
        &[("X-Hook-Test", "yes")],
        b"",
    ));
    response.assert_status(200);
    let worker: u64 = response.text().parse().unwrap();
    let all = wait_for_call(log, "post_request", |c| c["hook"] == "post_request");
    let pre = position(&all, "pre_request", |c| c["hook"] == "pre_request");
    let post = position(&all, "post_request", |c| c["hook"] == "post_request");
    assert!(pre < post);
    let (pre, post) = (&all[pre], &all[post]);
    assert_eq!(pid(&pre["pid"]), worker);
    assert_eq!(pid(&pre["worker_pid"]), worker);
    assert_eq!(pre["method"], "GET");
    assert_eq!(pre["path"], "/pid");
    assert_eq!(pre["query"], "x=1&y=%20");
    assert_eq!(pre["uri"], "/pid?x=1&y=%20");
    assert_eq!(pre["version"], serde_json::json!([1, 1]));
    let headers = pre["headers"].as_array().unwrap();
    assert!(
        headers.contains(&serde_json::json!(["X-HOOK-TEST", "yes"])),
        "{headers:?}"
    );
    assert_eq!(post["path_info"], "/pid");
    assert_eq!(post["status"], "200 OK");
    assert_eq!(post["status_code"], 200);
    let headers = post["headers"].as_array().unwrap();
    assert!(
        headers.iter().any(|h| h[0] == "Content-Type"),
        "{headers:?}"
    );
}

#[test]
fn worker_abort_runs_when_the_timeout_aborts_a_worker() {
    let dir = TempDir::new("hooks-abort");
    let log = dir.join("calls.jsonl");
    let server = hooked(&log, &["--timeout", "1"]).start();
    let worker = u64::from(fresh_pid(&server));
    let mut conn = server.connect();
    conn.send(&get("/sleep?ms=60000"));
    // The client's read timeout (IO_TIMEOUT) bounds the wait.
    conn.read_response().assert_status(504);
    let all = wait_for_call(&log, "worker_exit after worker_abort", |c| {
        c["hook"] == "worker_exit" && pid(&c["pid"]) == worker
    });
    let abort = position(&all, "worker_abort", |c| {
        c["hook"] == "worker_abort" && pid(&c["pid"]) == worker
    });
    let exit = position(&all, "worker_exit", |c| {
        c["hook"] == "worker_exit" && pid(&c["pid"]) == worker
    });
    assert!(abort < exit, "{all:#?}");
    assert!(named(&all, "worker_int").is_empty(), "{all:#?}");
    server.wait_for_log(&format!("WORKER TIMEOUT (pid:{worker})"), WAIT);
    // Replaced, and the replacement serves.
    assert_ne!(u64::from(fresh_pid(&server)), worker);
}

#[test]
fn pre_request_that_raises_fails_its_request_with_a_500() {
    let dir = TempDir::new("hooks-pre-request");
    let log = dir.join("calls.jsonl");
    let server = hooked(&log, &[]).env("HOOK_RAISE", "pre_request").start();
    let worker = fresh_pid(&server);
    server.get("/raise").assert_status(500);
    let line = server.wait_for_log("Error handling request GET /raise", WAIT);
    assert!(line.contains("[ERROR]"), "{line}");
    server.wait_for_log("RuntimeError: pre_request raised on purpose", WAIT);
    // post_request still runs, with no response from the application;
    // the worker serves on.
    let all = wait_for_call(&log, "post_request of /raise", |c| {
        c["hook"] == "post_request" && c["path"] == "/raise"
    });
    let post = all
        .iter()
        .find(|c| c["hook"] == "post_request" && c["path"] == "/raise")
        .unwrap();
    assert!(post["status"].is_null(), "{post}");
    assert!(post["path_info"].is_null(), "{post}");
    assert_eq!(fresh_pid(&server), worker);
}

#[test]
fn post_request_that_raises_is_logged_and_the_answer_stands() {
    let dir = TempDir::new("hooks-post-request");
    let log = dir.join("calls.jsonl");
    let server = hooked(&log, &[]).env("HOOK_RAISE", "post_request").start();
    let response = server.get("/raise");
    response.assert_status(404);
    server.wait_for_log("Exception in post_request hook", WAIT);
    server.wait_for_log("RuntimeError: post_request raised on purpose", WAIT);
    server.get("/").assert_status(200);
}

#[test]
fn post_fork_that_raises_stops_the_server_as_a_boot_error() {
    let dir = TempDir::new("hooks-post-fork");
    let log = dir.join("calls.jsonl");
    let mut server = hooked(&log, &[]).env("HOOK_RAISE", "post_fork").spawn();
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(3), "{}", Server::describe(status));
    let text = server.stderr.text();
    assert!(
        text.contains("Exception in worker process (post_fork):"),
        "{text}"
    );
    assert!(
        text.contains("RuntimeError: post_fork raised on purpose"),
        "{text}"
    );
    assert!(text.contains("Worker failed to boot."), "{text}");
    // worker_exit ran in the worker, as Gunicorn's `finally` runs it.
    let all = calls(&log);
    assert_eq!(named(&all, "worker_exit").len(), 1, "{all:#?}");
    assert!(named(&all, "post_worker_init").is_empty(), "{all:#?}");
}

#[test]
fn a_master_hook_that_raises_stops_the_master() {
    let dir = TempDir::new("hooks-child-exit");
    let log = dir.join("calls.jsonl");
    let mut server = hooked(&log, &[]).env("HOOK_RAISE", "child_exit").start();
    let worker = fresh_pid(&server);
    // SAFETY: kill(2) on a worker of this test's server.
    unsafe { libc::kill(worker as i32, libc::SIGKILL) };
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{}", Server::describe(status));
    let text = server.stderr.text();
    assert!(text.contains("Exception in child_exit hook"), "{text}");
    assert!(
        text.contains("RuntimeError: child_exit raised on purpose"),
        "{text}"
    );
    assert!(
        text.contains("A server hook raised an exception."),
        "{text}"
    );
    // Gunicorn's master leaves at once: no on_exit.
    assert!(named(&calls(&log), "on_exit").is_empty());
    assert!(!server.group_alive(), "a process outlived the master");
}

#[test]
fn on_starting_that_raises_stops_the_master_before_it_listens() {
    let dir = TempDir::new("hooks-on-starting");
    let log = dir.join("calls.jsonl");
    let mut server = hooked(&log, &[]).env("HOOK_RAISE", "on_starting").spawn();
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{}", Server::describe(status));
    let text = server.stderr.text();
    assert!(
        text.contains("RuntimeError: on_starting raised on purpose"),
        "{text}"
    );
    assert!(
        text.contains("the on_starting server hook raised"),
        "{text}"
    );
    assert!(!text.contains("Listening at"), "{text}");
}

#[test]
fn a_master_hook_that_hangs_is_given_up_and_the_server_serves() {
    let dir = TempDir::new("hooks-hang");
    let log = dir.join("calls.jsonl");
    let server = hooked(&log, &["--timeout", "1"])
        .env("HOOK_HANG", "when_ready")
        .start();
    let line = server.wait_for_log("when_ready in ", WAIT);
    assert!(line.contains("did not finish within 1 s"), "{line}");
    server.get("/").assert_status(200);
    // A new hook process takes the next hooks.
    let all = wait_for_call(&log, "pre_fork", |c| c["hook"] == "pre_fork");
    let when_ready = named(&all, "when_ready")[0];
    let pre_fork = named(&all, "pre_fork")[0];
    assert_ne!(pid(&when_ready["pid"]), pid(&pre_fork["pid"]));
    // The hung one was killed (and reaped by the master).
    wait_until("the hung hook process is gone", || {
        !process_exists(pid(&when_ready["pid"]) as u32)
    });
}

#[test]
fn a_hook_with_another_signature_is_refused_at_start() {
    let dir = TempDir::new("hooks-arity");
    let conf = dir.join("gunicorn.conf.py");
    std::fs::write(&conf, "def post_fork(server):\n    pass\n").unwrap();
    let mut server = App::Wsgi
        .builder()
        .arg("--python-hooks")
        .arg(conf.to_str().unwrap())
        .spawn();
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{}", Server::describe(status));
    let text = server.stderr.text();
    assert!(
        text.contains("post_fork in ")
            && text.contains(
                "takes 1 positional arguments; Gunicorn calls it as post_fork(server, worker)"
            ),
        "{text}"
    );
    assert!(!text.contains("Listening at"), "{text}");
}

#[test]
fn a_native_application_runs_the_master_hooks_and_says_the_worker_hooks_do_not_apply() {
    let dir = TempDir::new("hooks-native");
    let log = dir.join("calls.jsonl");
    let server = Server::builder(testapp())
        .arg("--python-hooks")
        .arg(recording_conf().to_str().unwrap())
        .env("HOOK_LOG", log.to_str().unwrap())
        .start();
    let warning = server.wait_for_log("apply to Python applications only", WAIT);
    assert!(warning.contains("[WARNING]"), "{warning}");
    assert!(warning.contains("post_fork"), "{warning}");
    fresh_pid(&server);
    let all = wait_for_call(&log, "pre_fork", |c| c["hook"] == "pre_fork");
    assert_eq!(named(&all, "on_starting").len(), 1);
    assert!(named(&all, "post_fork").is_empty(), "{all:#?}");
    assert!(named(&all, "pre_request").is_empty(), "{all:#?}");
}

/// A file with master hooks only is executed where its hooks run, not in
/// the workers (they have nothing to run): its module-level code (say,
/// emptying PROMETHEUS_MULTIPROC_DIR) runs once in the hook process, as in
/// Gunicorn's master. Named with `-c`, it is read once more before that, by
/// the short-lived Python that reads its settings (the master runs no
/// Python itself): two runs, neither in the master nor in a worker.
#[test]
fn a_file_with_only_master_hooks_is_executed_once() {
    let dir = TempDir::new("hooks-once");
    let conf = dir.join("gunicorn.conf.py");
    let loads = dir.join("loads.txt");
    std::fs::write(
        &conf,
        format!(
            "import os\nwith open({loads:?}, 'a') as f:\n    f.write('%d\\n' % os.getpid())\n\n\
             def child_exit(server, worker):\n    pass\n"
        ),
    )
    .unwrap();
    for (flag, runs) in [("--python-hooks", 1), ("-c", 2)] {
        std::fs::write(&loads, "").unwrap();
        let mut server = App::Wsgi
            .builder()
            .args(["--workers", "2", flag])
            .arg(conf.to_str().unwrap())
            .start();
        let workers = server.wait_for_workers(2);
        fresh_pid(&server);
        server.signal(libc::SIGTERM);
        let status = server.wait_exit(WAIT);
        assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
        let text = std::fs::read_to_string(&loads).unwrap();
        assert_eq!(text.lines().count(), runs, "{flag}: {text}");
        for line in text.lines() {
            let pid: u32 = line.parse().unwrap();
            assert_ne!(pid, server.pid(), "{flag}: the master ran Python");
            assert!(!workers.contains(&pid), "{flag}: a worker ran the file");
        }
    }
}

/// prometheus_client's multiprocess mode, its documentation's Gunicorn
/// set-up: PROMETHEUS_MULTIPROC_DIR, `mark_process_dead(worker.pid)` in
/// child_exit, a scrape through a MultiProcessCollector.
#[test]
fn prometheus_multiprocess_mode_works_through_child_exit() {
    let dir = TempDir::new("hooks-prometheus");
    let metrics_dir = dir.join("metrics");
    std::fs::create_dir(&metrics_dir).unwrap();
    let venv = test_venv();
    let app_dir = python_dir().join("prometheus");
    let server = Server::builder("prom_app:app")
        .arg("--chdir")
        .arg(app_dir.to_str().unwrap())
        // As its documentation runs Gunicorn: `-c` names the file.
        .args(["--workers", "2", "-c"])
        .arg(app_dir.join("gunicorn.conf.py").to_str().unwrap())
        .env("VIRTUAL_ENV", venv.to_str().unwrap())
        .env("PROMETHEUS_MULTIPROC_DIR", metrics_dir.to_str().unwrap())
        .start();
    let workers = server.wait_for_workers(2);
    let scrape = || {
        let response = server.get("/metrics");
        response.assert_status(200);
        response.text()
    };
    let live_file = |pid: u32| metrics_dir.join(format!("gauge_liveall_{pid}.db"));
    wait_until("both workers wrote their live gauge", || {
        workers.iter().all(|p| live_file(*p).exists())
    });
    // Counts from both workers, summed by whichever answers the scrape.
    let text = scrape();
    assert!(text.contains("boots_total 2.0"), "{text}");
    for worker in &workers {
        assert!(
            text.contains(&format!("worker_up{{pid=\"{worker}\"}} 1.0")),
            "{text}"
        );
    }
    // A worker dies: child_exit marks it dead, and its live gauge goes;
    // its counts stay.
    // SAFETY: kill(2) on a worker of this test's server.
    unsafe { libc::kill(workers[0] as i32, libc::SIGKILL) };
    wait_until("the dead worker's live gauge file is removed", || {
        !live_file(workers[0]).exists()
    });
    let replacement = server.wait_for_workers(3)[2];
    wait_until("the replacement wrote its live gauge", || {
        live_file(replacement).exists()
    });
    let text = scrape();
    assert!(text.contains("boots_total 3.0"), "{text}");
    assert!(!text.contains(&format!("pid=\"{}\"", workers[0])), "{text}");
    for worker in [workers[1], replacement] {
        assert!(
            text.contains(&format!("worker_up{{pid=\"{worker}\"}} 1.0")),
            "{text}"
        );
    }
}

/// HUP reads the file again for the master's hooks too (issue 11: changed
/// hooks apply): a hook process executes the new file, and the reload's
/// `on_reload` is the new file's. Named relatively, it is found from the
/// directory rgun started in, not the application's `--chdir`.
#[test]
fn hup_runs_the_master_hooks_of_the_file_as_it_now_is() {
    let dir = TempDir::new("hooks-hup");
    let conf = dir.join("gunicorn.conf.py");
    let marks = dir.join("marks.txt");
    let version = |name: &str| {
        format!(
            "def {name}(server):\n    with open({marks:?}, 'a') as f:\n        f.write('{name}\\n')\n"
        )
    };
    std::fs::write(&conf, version("when_ready")).unwrap();
    let mut server = App::Wsgi
        .builder()
        .current_dir(dir.path())
        .args(["--workers", "1", "-c", "gunicorn.conf.py"])
        .start();
    server.wait_for_workers(1);
    let read = || std::fs::read_to_string(&marks).unwrap_or_default();
    wait_until("when_ready is recorded", || read().contains("when_ready"));
    std::fs::write(&conf, version("on_reload")).unwrap();
    server.signal(libc::SIGHUP);
    wait_until("the new file's on_reload is recorded", || {
        read().contains("on_reload")
    });
    assert_eq!(read(), "when_ready\non_reload\n");
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
}
