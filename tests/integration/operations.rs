//! Operating a running server as an operator does: HUP reloads (new workers
//! first, then the old ones drained, no request lost, a rebuilt library goes
//! live), the `--preload` reload that re-executes the master, TTIN/TTOU,
//! `--threads`, systemd socket activation, USR1 reopening the logs, and the
//! worker timeout answering `504`. Each step waits on what the server says
//! (a log line, a pid, a file appearing), never on the clock.

use crate::harness::clients::{Clients, Tally, nothing_after_close, pid_answer};
use crate::harness::{
    Conn, Framing, Prng, Server, TempDir, WAIT, app_lib, boots, chunked, compile_c_app, fresh_pid,
    get, listening_tcp_addr, manifest_dir, pid_of, process_exists, request, rgun_bin, testapp,
    unique_socket_path, wait_for_file_line, wait_retired, wait_until,
};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Short drains: a retiring worker closes an idle keep-alive connection
/// after 1 s and never waits more than 5 s for a request.
const QUICK_DRAIN: [&str; 4] = ["--graceful-timeout", "5", "--keep-alive", "1"];

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// Clients that keep sending while the server is reloaded
// ---------------------------------------------------------------------------

/// Send `GET /pid` after `GET /pid` on keep-alive connections until `stop`,
/// one at a time, reconnecting when the server ends a connection after a
/// complete answer with `Connection: close`. Anything else ends it with an
/// error: a request not answered whole, an answer other than 200, a refused
/// connection.
fn keep_sending(
    addr: SocketAddr,
    keep_alive: Duration,
    stop: &AtomicBool,
    done: &AtomicUsize,
) -> Result<Tally, String> {
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = None;
    // When the last answer on this connection arrived.
    let mut answered_at: Option<Instant> = None;
    let mut on_conn = 0usize;
    while !stop.load(Ordering::SeqCst) {
        if conn.is_none() {
            let c = Conn::try_tcp(addr)
                .map_err(|e| format!("connecting after {} requests failed: {e}", tally.requests))?;
            conn = Some(c);
            tally.connections += 1;
            answered_at = None;
            on_conn = 0;
        }
        let c = conn.as_mut().unwrap();
        let idle = answered_at.map(|at| at.elapsed());
        let where_ = format!(
            "request {} (number {} on connection {})",
            tally.requests + 1,
            on_conn + 1,
            tally.connections
        );
        let sent = c.try_send(&get("/pid"));
        let response = sent.and_then(|()| c.try_read_response(false));
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                if idle.is_some_and(|idle| idle >= keep_alive / 2) {
                    // The connection sat idle long enough for the server to
                    // close it at its keep-alive deadline: the request may
                    // never have reached a worker. Resend it.
                    tally.closed_while_idle += 1;
                    conn = None;
                    continue;
                }
                return Err(format!(
                    "{where_}: no complete answer ({e}); the connection had been idle {idle:?}"
                ));
            }
        };
        tally.answered_by(pid_answer(&response, &where_)?, done);
        on_conn += 1;
        answered_at = Some(Instant::now());
        if response.connection_has("close") {
            nothing_after_close(c, &where_)?;
            tally.closed_after_answer += 1;
            conn = None;
        }
    }
    Ok(tally)
}

/// `n` client threads running `keep_sending`.
fn start_clients(addr: SocketAddr, n: usize, keep_alive: Duration) -> Clients {
    Clients::start(n, move |stop, done| {
        keep_sending(addr, keep_alive, stop, done)
    })
}

// ---------------------------------------------------------------------------
// HUP: reload
// ---------------------------------------------------------------------------

#[test]
fn hup_replaces_every_worker() {
    let server = Server::builder(testapp())
        .args(["-w", "2"])
        .args(QUICK_DRAIN)
        .wait_for_workers(2)
        .start();
    let old = server.wait_for_workers(2);
    assert!(old.contains(&fresh_pid(&server)));

    server.signal(libc::SIGHUP);
    server.wait_for_log("Handling signal: hup", WAIT);
    let booted = server.wait_for_workers(4);
    let new: HashSet<u32> = booted[2..].iter().copied().collect();
    assert_eq!(new.len(), 2, "{booted:?}");
    for pid in &old {
        assert!(!new.contains(pid), "{pid} booted twice: {booted:?}");
        wait_retired(&server, *pid);
    }
    for _ in 0..20 {
        let pid = fresh_pid(&server);
        assert!(new.contains(&pid), "answered by {pid}, not one of {new:?}");
    }
    // Two new workers, not more.
    assert_eq!(boots(&server), 4, "{}", server.stderr.text());
    assert!(!server.stderr.text().contains("[ERROR]"));
}

#[test]
fn hup_lets_a_request_in_flight_on_an_old_worker_finish() {
    let server = Server::builder(testapp())
        .args(QUICK_DRAIN)
        .wait_for_workers(1)
        .start();
    let old = server.wait_for_workers(1)[0];
    let mut conn = server.connect();
    assert_eq!(pid_of(&mut conn), old);
    conn.send(&get("/sleep?ms=1500"));
    // The old worker has read the request: it is in the application.
    conn.wait_until_server_read();
    server.signal(libc::SIGHUP);
    let new = server.wait_for_workers(2)[1];

    let response = conn.read_response();
    response.assert_status(200);
    assert_eq!(response.text(), "slept 1500");
    drop(conn);
    wait_retired(&server, old);
    assert_eq!(fresh_pid(&server), new);
}

#[test]
fn hup_puts_a_rebuilt_library_live() {
    let dir = TempDir::new("hup-rebuilt");
    let live = dir.join("libapp.so");
    std::fs::copy(app_lib("testapp"), &live).unwrap();
    let staged = dir.join("libapp.so.new");
    compile_c_app(&manifest_dir().join("examples/c/hello.c"), &staged);

    let server = Server::builder(format!("{}:app", live.display()))
        .args(QUICK_DRAIN)
        .wait_for_workers(1)
        .start();
    let old = server.wait_for_workers(1)[0];
    assert_eq!(server.get("/").text(), "Hello, World!");

    // A deployment: the new build takes the old one's name in one step,
    // so that no process ever opens a half-written file.
    std::fs::rename(&staged, &live).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_for_workers(2);
    wait_retired(&server, old);

    let response = server.get("/");
    response.assert_status(200);
    assert_eq!(response.text(), "Hello from C\n");
    // The new worker ran the new library's init hook.
    server.wait_for_log("hello_c: worker", WAIT);
}

#[test]
fn no_request_is_lost_across_two_reloads() {
    let server = Server::builder(testapp())
        .args(["-w", "2"])
        .args(QUICK_DRAIN)
        .wait_for_workers(2)
        .start();
    let gen1: HashSet<u32> = server.wait_for_workers(2).into_iter().collect();
    let mut clients = start_clients(server.addr(), 3, Duration::from_secs(1));
    clients.wait_for_more(700);

    server.signal(libc::SIGHUP);
    server
        .stderr
        .wait_for_count("Handling signal: hup", 1, WAIT);
    let gen2: HashSet<u32> = server.wait_for_workers(4)[2..].iter().copied().collect();
    for pid in &gen1 {
        wait_retired(&server, *pid);
    }
    // Only the second generation is left to answer these.
    clients.wait_for_more(700);

    server.signal(libc::SIGHUP);
    server
        .stderr
        .wait_for_count("Handling signal: hup", 2, WAIT);
    let gen3: HashSet<u32> = server.wait_for_workers(6)[4..].iter().copied().collect();
    for pid in &gen2 {
        wait_retired(&server, *pid);
    }
    clients.wait_for_more(700);

    let tallies = clients.finish();
    let seen: HashSet<u32> = tallies.iter().flat_map(Tally::pids).collect();
    let requests: usize = tallies.iter().map(|t| t.requests).sum();
    for (name, generation) in [("first", &gen1), ("second", &gen2), ("third", &gen3)] {
        assert!(
            !seen.is_disjoint(generation),
            "no answer from the {name} generation {generation:?}; seen {seen:?}"
        );
    }
    let all: HashSet<u32> = gen1.iter().chain(&gen2).chain(&gen3).copied().collect();
    assert!(seen.is_subset(&all), "{seen:?} not among {all:?}");
    // Every client was on an old worker at the reloads and went on being
    // answered by the new ones, never cut off (keep_sending fails on any
    // request not answered whole): let go by a complete answer that said
    // Connection: close, or carried over with its connection (a replaced
    // worker hands its idle connections to the workers that stay).
    for tally in &tallies {
        assert!(
            tally.pids().any(|p| gen1.contains(&p)) && tally.pids().any(|p| gen3.contains(&p)),
            "{tally:?}"
        );
    }
    eprintln!("{requests} requests answered across two reloads: {tallies:?}");
}

#[test]
fn an_idle_connection_moves_to_the_new_workers_on_reload() {
    // A keep-alive time no reload on a loaded machine outlasts: the
    // connection must not be closed for being idle while the test waits.
    let server = Server::builder(testapp())
        .args(["-w", "2", "--keep-alive", "60", "--log-level", "debug"])
        .wait_for_workers(2)
        .start();
    let old: HashSet<u32> = server.wait_for_workers(2).into_iter().collect();
    let mut conn = server.connect();
    let first: u32 = conn.request(&get("/pid")).text().parse().unwrap();
    assert!(old.contains(&first));

    server.signal(libc::SIGHUP);
    let new: HashSet<u32> = server.wait_for_workers(4)[2..].iter().copied().collect();
    for pid in &old {
        wait_retired(&server, *pid);
    }
    // The same connection, idle across the reload: handed to a new worker
    // rather than closed.
    let response = conn.request(&get("/pid"));
    response.assert_status(200);
    assert!(!response.connection_has("close"), "{response:?}");
    let after: u32 = response.text().parse().unwrap();
    assert!(
        new.contains(&after),
        "{after} not among the new workers {new:?}"
    );
}

// ---------------------------------------------------------------------------
// TTIN / TTOU
// ---------------------------------------------------------------------------

#[test]
fn ttin_adds_workers_and_ttou_retires_one() {
    let server = Server::builder(testapp())
        .args(QUICK_DRAIN)
        .wait_for_workers(1)
        .start();
    // One signal at a time: two of the same kind sent before the master
    // runs are one pending signal to the kernel.
    server.signal(libc::SIGTTIN);
    server.wait_for_log("Handling signal: ttin; 2 workers wanted", WAIT);
    server.signal(libc::SIGTTIN);
    server.wait_for_log("Handling signal: ttin; 3 workers wanted", WAIT);
    let booted = server.wait_for_workers(3);
    assert_eq!(booted.iter().collect::<HashSet<_>>().len(), 3);

    server.signal(libc::SIGTTOU);
    server.wait_for_log("Handling signal: ttou; 2 workers wanted", WAIT);
    let line = server.wait_for_log("Worker exiting (pid: ", WAIT);
    let gone: u32 = line
        .rsplit("Worker exiting (pid: ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap_or_else(|e| panic!("bad pid in {line:?}: {e}"));
    assert!(booted.contains(&gone), "{gone} is not among {booted:?}");
    // The worker writes the line itself, then the master reaps it.
    wait_retired(&server, gone);
    for _ in 0..10 {
        let pid = fresh_pid(&server);
        assert!(booted.contains(&pid) && pid != gone, "answered by {pid}");
    }
    assert_eq!(boots(&server), 3, "{}", server.stderr.text());
}

// ---------------------------------------------------------------------------
// --threads
// ---------------------------------------------------------------------------

/// Whether the server has sent anything on `conn` yet, without waiting.
fn has_answer(conn: &Conn) -> bool {
    let stream = conn.tcp_stream();
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let peeked = stream.peek(&mut byte);
    stream.set_nonblocking(false).unwrap();
    match peeked {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("peek: {e}"),
    }
}

#[test]
fn threads_answer_while_other_calls_block() {
    let server = Server::builder(testapp())
        .args(["-w", "1", "--threads", "4"])
        .wait_for_workers(1)
        .start();
    let worker = server.wait_for_workers(1)[0];
    // Three of the four threads are held by sleeping calls...
    let mut sleepers: Vec<Conn> = (0..3).map(|_| server.connect()).collect();
    for conn in &mut sleepers {
        conn.send(&get("/sleep?ms=2000"));
    }
    for conn in &sleepers {
        conn.wait_until_server_read();
    }
    // ...and the fourth answers meanwhile: at the moment it has, none of
    // the sleeping calls has answered.
    let mut fourth = server.connect();
    let response = fourth.request(&get("/"));
    response.assert_status(200);
    assert_eq!(response.text(), "Hello, World!");
    let answered: Vec<usize> = (0..3).filter(|&i| has_answer(&sleepers[i])).collect();
    assert!(
        answered.is_empty(),
        "GET / was answered only after sleeping call(s) {answered:?} ended"
    );
    // Now four calls sleep at once.
    fourth.send(&get("/sleep?ms=2000"));
    sleepers.push(fourth);
    for conn in &mut sleepers {
        let response = conn.read_response();
        response.assert_status(200);
        assert_eq!(response.text(), "slept 2000");
    }
    // All of it in the one worker, on the same connections.
    for conn in &mut sleepers {
        assert_eq!(pid_of(conn), worker);
    }
    assert!(
        !server
            .stderr
            .text()
            .contains("not declare itself thread-safe"),
        "{}",
        server.stderr.text()
    );
}

#[test]
fn threads_serve_pipelined_requests_in_order() {
    let server = Server::builder(testapp())
        .args(["-w", "1", "--threads", "4"])
        .wait_for_workers(1)
        .start();
    let worker = server.wait_for_workers(1)[0];
    let upload = Prng::new(11).bytes(300_000);
    let digest = sha256_hex(&upload);
    let mut batch = Vec::new();
    batch.extend(get("/"));
    batch.extend(request("POST", "/echo?n=1", &[], b"a body for /echo"));
    batch.extend(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
    batch.extend(chunked(&upload, &[1000, 7, 65536, 3]));
    batch.extend(get("/bytes?n=100000"));
    batch.extend(get("/status?code=204"));
    batch.extend(get("/stream?chunks=3&size=5"));
    batch.extend(get("/nope"));
    batch.extend(get("/pid"));

    // Four connections at once, each with the whole batch pipelined, twice.
    let clients: Vec<JoinHandle<()>> = (0..4)
        .map(|_| {
            let mut conn = server.connect();
            let (batch, digest) = (batch.clone(), digest.clone());
            thread::spawn(move || {
                for _ in 0..2 {
                    conn.send(&batch);
                    let r = conn.read_response();
                    r.assert_status(200);
                    assert_eq!(r.text(), "Hello, World!");
                    let r = conn.read_response();
                    r.assert_status(200);
                    let echo = r.json();
                    assert_eq!(echo["method"], "POST");
                    assert_eq!(echo["query"], "n=1");
                    assert_eq!(echo["body"], "a body for /echo");
                    let r = conn.read_response();
                    r.assert_status(200);
                    let json = r.json();
                    assert_eq!(json["body_length"], 300_000);
                    assert_eq!(json["sha256"], digest.as_str());
                    let r = conn.read_response();
                    r.assert_status(200);
                    assert!(r.body.len() == 100_000 && r.body.iter().all(|&b| b == b'x'));
                    let r = conn.read_response();
                    r.assert_status(204);
                    assert!(r.body.is_empty());
                    let r = conn.read_response();
                    r.assert_status(200);
                    assert!(matches!(r.framing, Framing::Chunked(_)), "{r:#?}");
                    assert_eq!(r.text(), "yyyyyyyyyyyyyyy");
                    conn.read_response().assert_status(404);
                    let r = conn.read_response();
                    r.assert_status(200);
                    assert_eq!(r.text(), worker.to_string());
                    assert!(!r.connection_has("close"), "{r:#?}");
                }
            })
        })
        .collect();
    for client in clients {
        if let Err(panic) = client.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// A request that takes longer than `--keep-alive` must not use up the
/// connection's idle time: the idle deadline runs from the answer, so a
/// connection that then sits idle for well under the keep-alive time (1.2 s
/// of 2 s) is still open and its next request is answered. The pause is the
/// scenario, not a wait for the server: a server that times the idle
/// deadline from the start of the request closes the connection at its next
/// tick after the answer (at once without --threads, one poll timeout of 1 s
/// later with them).
fn next_request_after_a_slow_one_is_answered(threads: &str) {
    let server = Server::builder(testapp())
        .args(["-w", "1", "--keep-alive", "2", "--threads", threads])
        .wait_for_workers(1)
        .start();
    let mut conn = server.connect();
    let response = conn.request(&get("/sleep?ms=2100"));
    response.assert_status(200);
    assert!(!response.connection_has("close"), "{response:#?}");
    thread::sleep(Duration::from_millis(1200));
    conn.try_send(&get("/"))
        .and_then(|()| conn.try_read_response(false))
        .unwrap_or_else(|e| {
            panic!(
                "the connection was closed 1.2 s after a slow answer that kept it \
                 alive with --keep-alive 2, losing the next request: {e}"
            )
        })
        .assert_status(200);
}

#[test]
fn keep_alive_idle_time_starts_after_a_slow_answer() {
    next_request_after_a_slow_one_is_answered("1");
}

#[test]
fn keep_alive_idle_time_starts_after_a_slow_answer_with_threads() {
    next_request_after_a_slow_one_is_answered("4");
}

// ---------------------------------------------------------------------------
// --preload
// ---------------------------------------------------------------------------

#[test]
fn preload_serves_a_native_library() {
    let server = Server::builder(testapp())
        .args(["--preload", "-w", "2"])
        .wait_for_workers(2)
        .start();
    let workers = server.wait_for_workers(2);
    server.get("/").assert_status(200);
    let pid = fresh_pid(&server);
    assert!(workers.contains(&pid), "{pid} not among {workers:?}");
    assert_ne!(pid, server.pid(), "the master must not serve");
}

#[test]
fn preload_with_a_missing_symbol_stops_before_any_worker() {
    let path = app_lib("testapp").display().to_string();
    let mut server = Server::builder(format!("{path}:nope"))
        .args(["--preload", "-w", "2"])
        .spawn();
    let status = server.wait_exit(WAIT);
    let log = server.stderr.text();
    assert_eq!(
        status.code(),
        Some(4),
        "{}; log:\n{log}",
        Server::describe(status)
    );
    assert!(!log.contains("panicked"), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("[ERROR]")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{log}");
    assert!(
        errors[0].contains(&path) && errors[0].contains("nope"),
        "the error names neither the file nor the symbol: {:?}",
        errors[0]
    );
    assert!(
        !log.contains("Booting worker"),
        "a worker was started:\n{log}"
    );
}

#[test]
fn hup_with_preload_re_executes_the_master_in_place() {
    let dir = TempDir::new("preload-hup");
    let pidfile = dir.join("rgun.pid");
    let server = Server::builder(testapp())
        .args(["--preload", "-w", "2", "-p"])
        .arg(pidfile.display().to_string())
        .args(QUICK_DRAIN)
        .wait_for_workers(2)
        .start();
    let master = server.pid();
    let first_listening = server.wait_for_log("Listening at: ", WAIT);
    assert_eq!(
        wait_for_file_line(&pidfile, &master.to_string(), WAIT).trim(),
        master.to_string()
    );
    let old = server.wait_for_workers(2);
    let mut clients = start_clients(server.addr(), 2, Duration::from_secs(1));
    clients.wait_for_more(200);

    // Opened just before the reload: accepted by an old worker before it
    // stops accepting, or waiting in the backlog for a new one.
    let mut early = server.connect();
    server.signal(libc::SIGHUP);
    server.wait_for_log("re-executing the master", WAIT);
    let listening = server.stderr.wait_for_count("Listening at: ", 2, WAIT);
    // The same process, with the same socket.
    assert_eq!(
        listening[1].split("] ").last(),
        first_listening.split("] ").last(),
        "{listening:?}"
    );
    assert!(
        listening[1].contains(&format!("[{master}] [INFO]")),
        "{listening:?}"
    );
    let response = early.request(&get("/"));
    response.assert_status(200);
    assert_eq!(response.text(), "Hello, World!");

    let booted = server.wait_for_workers(4);
    let new: HashSet<u32> = booted[2..].iter().copied().collect();
    for pid in &old {
        // The previous image's workers finish and are reaped by the new
        // image, which does not count them as its own.
        wait_until(&format!("old worker {pid} is gone"), || {
            !process_exists(*pid)
        });
    }
    clients.wait_for_more(200);
    for _ in 0..10 {
        let pid = fresh_pid(&server);
        assert!(new.contains(&pid), "answered by {pid}, not one of {new:?}");
    }
    let tallies = clients.finish();
    let seen: HashSet<u32> = tallies.iter().flat_map(Tally::pids).collect();
    assert!(!seen.is_disjoint(&new), "{seen:?} {new:?}");
    assert!(process_exists(master), "the master is gone");
    let text = std::fs::read_to_string(&pidfile).expect("the pid file is still there");
    assert_eq!(text.trim(), master.to_string());
    assert_eq!(
        server.stderr.text().matches("Starting rgun").count(),
        2,
        "{}",
        server.stderr.text()
    );
}

// ---------------------------------------------------------------------------
// systemd socket activation
// ---------------------------------------------------------------------------

/// Lines read from a pipe by a thread, with a way to wait for one.
struct Lines {
    state: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Lines {
    fn follow(pipe: impl Read + Send + 'static) -> Arc<Lines> {
        let lines = Arc::new(Lines {
            state: Mutex::new((Vec::new(), false)),
            changed: Condvar::new(),
        });
        let writer = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                writer.state.lock().unwrap().0.push(line);
                writer.changed.notify_all();
            }
            writer.state.lock().unwrap().1 = true;
            writer.changed.notify_all();
        });
        lines
    }

    fn text(&self) -> String {
        self.state.lock().unwrap().0.join("\n")
    }

    /// The first line containing `pattern`, or `None` when the pipe closed
    /// without one; panics after `WAIT`.
    fn wait_for(&self, pattern: &str) -> Option<String> {
        let deadline = Instant::now() + WAIT;
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(line) = state.0.iter().find(|l| l.contains(pattern)) {
                return Some(line.clone());
            }
            if state.1 {
                return None;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no line with {pattern:?}; so far:\n{}",
                state.0.join("\n")
            );
            state = self.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }
}

/// `systemd-socket-activate -l LISTEN rgun APP ARGS`, in its own process
/// group: it binds, and on the first connection execs rgun (same pid) with
/// the socket as descriptor 3 and `LISTEN_FDS`/`LISTEN_PID` set.
struct Activated {
    child: Child,
    stderr: Arc<Lines>,
}

impl Activated {
    /// `None` when systemd-socket-activate could not listen there.
    fn try_start(listen: &str, args: &[&str]) -> Option<Activated> {
        let mut child = Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(listen)
            .arg(rgun_bin())
            .arg(testapp())
            .args(args)
            .env_remove("WEB_CONCURRENCY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("run systemd-socket-activate (package systemd)");
        let stderr = Lines::follow(child.stderr.take().unwrap());
        let activated = Activated { child, stderr };
        // Its own line once the socket listens.
        activated.stderr.wait_for("Listening on ")?;
        Some(activated)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(self.pid() as libc::pid_t, signal) }, 0);
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        wait_until("rgun exits", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the group we created; errors are harmless.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- stderr (pid {pgid}) ---\n{}\n---", self.stderr.text());
        }
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn systemd_socket_activation_over_tcp() {
    // Another test may take the free port before systemd-socket-activate
    // binds it: then try another.
    let (mut server, port) = (0..5)
        .find_map(|_| {
            let port = free_port();
            Activated::try_start(&format!("127.0.0.1:{port}"), &QUICK_DRAIN).map(|s| (s, port))
        })
        .expect("systemd-socket-activate never listened");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The first connection starts rgun, and waits in the socket's backlog.
    let mut conn = Conn::tcp(addr);
    let line = server
        .stderr
        .wait_for("Listening at: ")
        .expect("rgun said where it listens");
    // rgun was given no --bind: the address is the inherited socket's.
    assert!(
        line.ends_with(&format!(
            "Listening at: http://127.0.0.1:{port} ({})",
            server.pid()
        )),
        "{line:?}"
    );
    let response = conn.request(&get("/"));
    response.assert_status(200);
    assert_eq!(response.text(), "Hello, World!");
    Conn::tcp(addr).request(&get("/pid")).assert_status(200);
    assert!(!server.stderr.text().contains("[ERROR]"));
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
}

#[test]
fn systemd_socket_activation_over_a_unix_socket() {
    let path = unique_socket_path("activated");
    let mut server =
        Activated::try_start(&path.display().to_string(), &QUICK_DRAIN).expect("listening");
    let mut conn = Conn::unix(&path);
    let line = server
        .stderr
        .wait_for("Listening at: ")
        .expect("rgun said where it listens");
    assert!(
        line.ends_with(&format!(
            "Listening at: unix:{} ({})",
            path.display(),
            server.pid()
        )),
        "{line:?}"
    );
    let response = conn.request(&get("/"));
    response.assert_status(200);
    assert_eq!(response.text(), "Hello, World!");
    Conn::unix(&path).request(&get("/pid")).assert_status(200);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
    // The socket file is systemd's: rgun leaves it in place.
    assert!(path.exists(), "rgun removed systemd's socket file");
    let _ = std::fs::remove_file(&path);
}

// ---------------------------------------------------------------------------
// USR1: reopen the logs
// ---------------------------------------------------------------------------

/// Poll until one of `paths` holds a line containing `pattern`; return the
/// index of the first that does.
fn wait_for_line_in_any(paths: &[&Path], pattern: &str) -> usize {
    let mut found = None;
    wait_until(
        &format!("a line with {pattern:?} in one of {paths:?}"),
        || {
            found = paths
                .iter()
                .position(|p| std::fs::read_to_string(p).is_ok_and(|text| text.contains(pattern)));
            found.is_some()
        },
    );
    found.unwrap()
}

#[test]
fn usr1_reopens_the_access_and_error_logs() {
    let dir = TempDir::new("usr1");
    let (access, error) = (dir.join("access.log"), dir.join("error.log"));
    let (access_old, error_old) = (dir.join("access.log.1"), dir.join("error.log.1"));
    let mut server = Server::builder(testapp())
        .args([
            "--access-logfile".to_string(),
            access.display().to_string(),
            "--error-logfile".to_string(),
            error.display().to_string(),
        ])
        .args(QUICK_DRAIN)
        .spawn();
    let line = wait_for_file_line(&error, "Listening at: http://", WAIT);
    let addr = listening_tcp_addr(&line);
    let line = wait_for_file_line(&error, "Booting worker with pid: ", WAIT);
    let worker = line.rsplit(' ').next().unwrap().to_string();

    Conn::tcp(addr)
        .request(&get("/before-rotation"))
        .assert_status(404);
    wait_for_file_line(&access, "/before-rotation", WAIT);

    // A log rotator moves the files away, then tells the master.
    std::fs::rename(&access, &access_old).unwrap();
    std::fs::rename(&error, &error_old).unwrap();
    server.signal(libc::SIGUSR1);
    // Reopening creates the files again: the access log in the worker, the
    // error log in the master.
    wait_until("the worker reopened the access log", || access.exists());
    wait_until("the master reopened the error log", || error.exists());

    Conn::tcp(addr)
        .request(&get("/after-rotation"))
        .assert_status(404);
    let line = wait_for_file_line(&access, "/after-rotation", WAIT);
    assert!(
        line.contains("\"GET /after-rotation HTTP/1.1\" 404 "),
        "{line:?}"
    );
    let old_text = std::fs::read_to_string(&access_old).unwrap();
    assert!(old_text.contains("/before-rotation") && !old_text.contains("/after-rotation"));
    assert!(
        !std::fs::read_to_string(&access)
            .unwrap()
            .contains("/before-rotation")
    );

    // What the worker logs goes to the new error log too.
    Conn::tcp(addr).request(&get("/panic")).assert_status(500);
    let marker = format!("[{worker}] [ERROR]");
    let which = wait_for_line_in_any(&[&error, &error_old], &marker);
    assert_eq!(
        which,
        0,
        "the worker still writes its error log lines to the rotated file:\n{}",
        std::fs::read_to_string(&error_old).unwrap()
    );

    // And what the master logs from here on.
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", Server::describe(status));
    let text = std::fs::read_to_string(&error).unwrap();
    assert!(text.contains("Handling signal: term"), "{text}");
    assert!(
        !std::fs::read_to_string(&error_old)
            .unwrap()
            .contains("Handling signal: term")
    );
}

// ---------------------------------------------------------------------------
// --timeout
// ---------------------------------------------------------------------------

#[test]
fn timeout_answers_504_and_replaces_the_worker() {
    let server = Server::builder(testapp())
        .args(["--timeout", "2"])
        .args(QUICK_DRAIN)
        .wait_for_workers(1)
        .start();
    let first = server.wait_for_workers(1)[0];
    let mut conn = server.connect();
    conn.send(&get("/sleep?ms=60000"));
    let response = conn.read_response();
    response.assert_status(504);
    assert!(response.connection_has("close"), "{response:#?}");
    assert!(!response.text().contains("slept"));
    conn.assert_closed();
    // Gunicorn's CRITICAL line, saying what hung and for how long.
    let line = server.wait_for_log(&format!("WORKER TIMEOUT (pid:{first})"), WAIT);
    assert!(line.contains("[CRITICAL]"), "{line}");
    assert!(
        line.contains("handling \"GET /sleep?ms=60000\" for "),
        "{line}"
    );
    assert!(line.ends_with("s (--timeout 2 s)"), "{line}");

    let second = server.wait_for_workers(2)[1];
    assert_ne!(second, first);
    assert_eq!(fresh_pid(&server), second);
    server.get("/").assert_status(200);
    wait_until("the aborted worker is reaped", || !process_exists(first));
}
