//! The processes' lives: workers that fail and are replaced, several workers
//! sharing the listening socket, the worker timeout, and the shutdown
//! signals (TERM graceful, INT and QUIT quick), each ending with no process
//! of the server's group left behind.

use crate::harness::{App, Conn, Server, WAIT, fresh_pid, get, pid_of, process_exists};
use std::collections::HashSet;

// Each test below runs against both forms of the test application.
crate::harness::test_each_app!(
    panic_is_a_500_and_the_same_worker_serves_on,
    panic_on_a_keep_alive_connection_leaves_it_usable_or_closed,
    crashed_worker_is_replaced,
    a_crash_answering_head_sends_the_head_alone,
    repeated_crashes_are_survived,
    several_workers_share_the_connections,
    web_concurrency_sets_the_worker_count,
    workers_flag_wins_over_web_concurrency,
    term_lets_the_in_flight_request_finish_then_exits_0,
    term_stops_accepting_new_connections,
    term_while_streaming_finishes_the_stream,
    term_with_idle_server_exits_0,
    term_gives_up_on_a_request_after_the_graceful_timeout,
    int_is_a_quick_exit,
    quit_is_a_quick_exit,
    worker_past_the_timeout_is_killed_and_replaced,
    log_lines_carry_the_master_and_worker_pids,
    term_at_once_after_listening_is_a_graceful_stop,
);

/// Read what is left of a request the server must not finish: it ends with
/// the connection (closed or reset), never with "slept", and never by the
/// client giving up.
#[track_caller]
fn assert_cut_off(conn: &mut Conn) {
    let (answer, err) = conn.read_to_end();
    if let Some(e) = &err {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the server neither answered nor closed the connection"
        );
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.contains("slept"),
        "the request was finished: {answer:?}"
    );
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

fn panic_is_a_500_and_the_same_worker_serves_on(app: App) {
    let server = app.start();
    let before = fresh_pid(&server);
    let response = server.get("/panic");
    response.assert_status(500);
    // The 500 is the server's, not whatever the app had started.
    assert!(
        response
            .header("content-type")
            .is_none_or(|t| !t.contains("json")),
        "{response:#?}"
    );
    assert_eq!(fresh_pid(&server), before, "the worker must live on");
    server.get("/").assert_status(200);
    // And the failure is in the error log.
    server.wait_for_log("[ERROR]", WAIT);
    assert_eq!(server.wait_for_workers(1).len(), 1);
}

fn panic_on_a_keep_alive_connection_leaves_it_usable_or_closed(app: App) {
    let server = app.start();
    let mut conn = server.connect();
    let before = pid_of(&mut conn);
    let response = conn.request(&get("/panic"));
    response.assert_status(500);
    if response.connection_has("close") {
        conn.assert_closed();
    } else {
        assert_eq!(pid_of(&mut conn), before);
    }
}

fn crashed_worker_is_replaced(app: App) {
    let server = app.start();
    let first = server.wait_for_workers(1)[0];
    assert_eq!(fresh_pid(&server), first);

    let mut conn = server.connect();
    conn.send(&get("/crash"));
    // The worker aborted: no answer, just the end of the connection.
    assert_cut_off(&mut conn);

    // A new connection waits in the listen queue until the replacement
    // worker takes it.
    let second = fresh_pid(&server);
    assert_ne!(second, first, "a new worker must have taken over");
    assert_eq!(server.wait_for_workers(2), vec![first, second]);
    server.get("/").assert_status(200);

    // The dead worker was reaped, not left a zombie.
    let deadline = std::time::Instant::now() + WAIT;
    while process_exists(first) {
        assert!(
            std::time::Instant::now() < deadline,
            "worker {first} was never reaped"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn a_crash_answering_head_sends_the_head_alone(app: App) {
    // The abort handler's 500 follows RFC 9110 §9.3.2 too: no content for
    // HEAD, only the head that says how long it would be.
    let server = app.start();
    let mut conn = server.connect();
    conn.send(b"HEAD /crash HTTP/1.1\r\nHost: a\r\n\r\n");
    let (answer, _) = conn.read_to_end();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 500 "), "{answer:?}");
    assert!(answer.contains("Content-Length: 22\r\n"), "{answer:?}");
    assert!(
        answer.ends_with("\r\n\r\n"),
        "a body after the head: {answer:?}"
    );
    server.get("/").assert_status(200);
}

fn repeated_crashes_are_survived(app: App) {
    let server = app.start_with(["--workers", "2"]);
    let mut seen = HashSet::new();
    for _ in 0..3 {
        seen.insert(fresh_pid(&server));
        let mut conn = server.connect();
        conn.send(&get("/crash"));
        assert_cut_off(&mut conn);
    }
    server.get("/").assert_status(200);
    // Two at the start and one per crash.
    server.wait_for_workers(5);
}

fn several_workers_share_the_connections(app: App) {
    let server = app
        .builder()
        .args(["--workers", "4"])
        .wait_for_workers(4)
        .start();
    let booted: HashSet<u32> = server.wait_for_workers(4).into_iter().collect();
    let mut seen = HashSet::new();
    for _ in 0..2000 {
        seen.insert(fresh_pid(&server));
        if seen.len() >= 2 {
            break;
        }
    }
    assert!(
        seen.len() >= 2,
        "2000 fresh connections all went to worker(s) {seen:?}"
    );
    assert!(seen.is_subset(&booted), "{seen:?} not among {booted:?}");
}

fn web_concurrency_sets_the_worker_count(app: App) {
    let server = app
        .builder()
        .env("WEB_CONCURRENCY", "3")
        .wait_for_workers(3)
        .start();
    server.get("/").assert_status(200);
}

fn workers_flag_wins_over_web_concurrency(app: App) {
    let server = app
        .builder()
        .env("WEB_CONCURRENCY", "1")
        .args(["-w", "2"])
        .wait_for_workers(2)
        .start();
    server.get("/").assert_status(200);
}

fn term_lets_the_in_flight_request_finish_then_exits_0(app: App) {
    let mut server = app.start();
    let mut conn = server.connect();
    conn.request(&get("/")).assert_status(200);
    conn.send(&get("/sleep?ms=1500"));
    // The worker has read the request, so it is in the app now.
    conn.wait_until_server_read();
    server.signal(libc::SIGTERM);
    let response = conn.read_response();
    response.assert_status(200);
    assert_eq!(response.text(), "slept 1500");
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
    server.stderr.wait_closed(WAIT);
    assert!(!server.group_alive(), "a worker outlived the master");
}

fn term_stops_accepting_new_connections(app: App) {
    let mut server = app.start();
    let mut busy = server.connect();
    busy.send(&get("/sleep?ms=1500"));
    busy.wait_until_server_read();
    server.signal(libc::SIGTERM);
    server.wait_for_log("Handling signal: term", WAIT);
    // A connection made after TERM is refused or dropped, while the one in
    // flight still completes. The master logs the line above before it
    // forwards TERM, so the worker may have accepted the late connection
    // first: then its request must be answered whole and the connection
    // closed (a draining worker loses no request it accepted), never kept.
    let late = Conn::try_tcp(server.addr());
    busy.read_response().assert_status(200);
    if let Ok(mut late) = late {
        let _ = late.try_send(&get("/"));
        let (answer, err) = late.read_to_end();
        let text = String::from_utf8_lossy(&answer);
        if text.starts_with("HTTP/1.1 200") {
            // Answered whole, then closed cleanly: with `Connection: close`
            // if the worker already drained, or at the keep-alive deadline
            // if it answered before TERM reached it.
            assert!(err.is_none(), "served, then not closed cleanly: {err:?}");
            assert!(text.ends_with("Hello, World!"), "{text:?}");
        } else {
            assert!(
                !matches!(
                    err.as_ref().map(std::io::Error::kind),
                    Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
                ),
                "the server neither answered nor closed the connection"
            );
            assert!(text.is_empty(), "a partial or other answer: {text:?}");
        }
    }
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
}

fn term_while_streaming_finishes_the_stream(app: App) {
    let mut server = app.start();
    let mut conn = server.connect();
    conn.send(&get("/stream?chunks=3&size=10&delay_ms=300"));
    // The worker has read the request: the app is between two chunks
    // when TERM arrives.
    conn.wait_until_server_read();
    server.signal(libc::SIGTERM);
    let response = conn.read_response();
    response.assert_status(200);
    assert_eq!(response.body.len(), 30);
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
}

fn term_with_idle_server_exits_0(app: App) {
    let mut server = app.start_with(["-w", "3"]);
    server.wait_for_workers(3);
    server.get("/").assert_status(200);
    // An idle keep-alive connection must not hold the shutdown up.
    let mut idle = server.connect();
    idle.request(&get("/")).assert_status(200);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
    server.stderr.wait_closed(WAIT);
    assert!(!server.group_alive(), "a worker outlived the master");
}

fn term_gives_up_on_a_request_after_the_graceful_timeout(app: App) {
    let mut server = app.start_with(["--graceful-timeout", "1"]);
    let mut conn = server.connect();
    conn.send(&get("/sleep?ms=60000"));
    conn.wait_until_server_read();
    server.signal(libc::SIGTERM);
    // The process exits long before the sleep ends; the request is lost.
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
    assert_cut_off(&mut conn);
    assert!(!server.group_alive(), "a worker outlived the master");
}

fn quick_exit(app: App, signal: libc::c_int) {
    // A request that would keep a graceful shutdown waiting for a minute.
    let mut server = app.start_with(["--graceful-timeout", "60"]);
    let mut conn = server.connect();
    conn.send(&get("/sleep?ms=60000"));
    conn.wait_until_server_read();
    server.signal(signal);
    let status = server.wait_exit(WAIT);
    assert!(
        status.code() == Some(0),
        "expected a clean quick exit, got {}",
        Server::describe(status)
    );
    assert_cut_off(&mut conn);
    server.stderr.wait_closed(WAIT);
    assert!(!server.group_alive(), "a worker outlived the master");
}

fn int_is_a_quick_exit(app: App) {
    quick_exit(app, libc::SIGINT);
}

fn quit_is_a_quick_exit(app: App) {
    quick_exit(app, libc::SIGQUIT);
}

fn worker_past_the_timeout_is_killed_and_replaced(app: App) {
    let server = app.start_with(["--timeout", "1"]);
    let first = server.wait_for_workers(1)[0];
    let mut conn = server.connect();
    conn.send(&get("/sleep?ms=60000"));
    // The stuck worker is killed: its connection ends without an answer.
    assert_cut_off(&mut conn);
    let second = fresh_pid(&server);
    assert_ne!(second, first);
    server.get("/").assert_status(200);
}

fn log_lines_carry_the_master_and_worker_pids(app: App) {
    let server = app.start();
    let listening = server.wait_for_log("Listening at: ", WAIT);
    let master = server.pid().to_string();
    assert!(
        listening.ends_with(&format!("({master})")),
        "{listening:?} should end with the master pid"
    );
    assert!(
        listening.contains(&format!("[{master}] [INFO]")),
        "{listening:?}"
    );
    // `[2026-11-21 03:37:36 +0000] [PID] [INFO] ...`
    let stamp = &listening[..listening.find(']').unwrap() + 1];
    assert_eq!(stamp.len(), 27, "{listening:?}");
    assert!(stamp.starts_with("[20") && stamp.ends_with(" +0000]"));
    let worker = fresh_pid(&server);
    assert_eq!(server.wait_for_workers(1), vec![worker]);
}

fn term_at_once_after_listening_is_a_graceful_stop(app: App) {
    // The pid file and "Listening at" are what an operator (or systemd)
    // waits for; a TERM sent at that moment is queued, not fatal.
    for _ in 0..5 {
        let mut server = app.start();
        server.signal(libc::SIGTERM);
        let status = server.wait_exit(WAIT);
        assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
        assert!(!server.group_alive(), "a worker outlived the master");
    }
}
