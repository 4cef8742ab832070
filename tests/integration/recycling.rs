//! Recycling workers as an operator relies on it: `--max-requests` (with
//! its jitter) and `--max-worker-memory` replace a worker by a successor
//! that boots first, one recycle at a time, losing no request;
//! `--worker-connections` holds connections back rather than refusing them;
//! the process titles `ps` shows; and Gunicorn's spellings of these flags.
//! Each step waits on what the server says (a log line, an answer, /proc),
//! never on the clock; every load is bounded in requests and in time.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::clients::{Clients, Tally, nothing_after_close, pid_answer};
use crate::harness::{
    App, Conn, Response, Server, TempDir, WAIT, get, listening_tcp_addr, log_line_pid, pid_of,
    request, rgun_bin, test_each_app, testapp, wait_for_file_line, wait_retired, wait_until_within,
};
use crate::wsgi_harness::python_dir;

/// How often the polling waits below look again (a log line there, an
/// answer arrived, a title set). They poll a condition; none stands in for
/// one.
const POLL: Duration = Duration::from_millis(5);

/// The most time a load may take to bring about what a test waits for. Only
/// a bound that keeps a broken server from hanging the suite; never asserted
/// on as a measure of speed.
const LOAD_TIME: Duration = Duration::from_secs(120);

/// A keep-alive time longer than any test here runs: the server never
/// closes a connection for being idle, so a connection that ends without
/// an answer saying `Connection: close` is a lost request, not a timeout.
const LONG_KEEP_ALIVE: [&str; 2] = ["--keep-alive", "600"];

/// What a worker logs once it has served its `--max-requests`.
const AUTORESTART: &str = "Autorestarting worker after current request.";
const BOOTING: &str = "Booting worker with pid: ";
const REACHED: &str = " reached --max-requests; starting its replacement";
const STOPPING: &str = "has booted; stopping worker (pid:";

/// The decimal number right after the first `prefix` in `line`.
fn number_after(line: &str, prefix: &str) -> Option<u32> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Whether the server has sent anything on `conn` yet, without waiting.
/// A connection the server closed or reset, with nothing sent, fails the
/// test: every connection here is to be answered.
#[track_caller]
fn has_answer(conn: &Conn) -> bool {
    let stream = conn.tcp_stream();
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let peeked = stream.peek(&mut byte);
    stream.set_nonblocking(false).unwrap();
    match peeked {
        Ok(0) => panic!("the server closed a connection without answering it"),
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("a connection waiting for its answer: {e}"),
    }
}

/// Read the answer to `GET /pid` that `conn` holds: a whole `200` that
/// keeps the connection open; returns the pid.
#[track_caller]
fn read_pid_answer(conn: &mut Conn) -> u32 {
    let response: Response = conn.read_response();
    response.assert_status(200);
    assert!(!response.connection_has("close"), "{response:#?}");
    response.text().parse().expect("a decimal pid")
}

// ---------------------------------------------------------------------------
// Clients that keep asking while workers are recycled
// ---------------------------------------------------------------------------

/// `GET /pid` after `GET /pid` on a keep-alive connection, one at a time,
/// until `stop` or until the clients together have sent `budget` requests;
/// a new connection only after a complete answer that said `Connection:
/// close`. Anything else ends the client with an error: a refused
/// connection, a request not answered whole, an answer other than 200, or
/// bytes that no request asked for.
fn keep_asking(
    addr: SocketAddr,
    stop: &AtomicBool,
    sent: &AtomicUsize,
    budget: usize,
    answered: &AtomicUsize,
) -> Result<Tally, String> {
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = None;
    let mut on_conn = 0usize;
    while !stop.load(Ordering::SeqCst) && sent.fetch_add(1, Ordering::SeqCst) < budget {
        if conn.is_none() {
            let c = Conn::try_tcp(addr)
                .map_err(|e| format!("connecting after {} requests failed: {e}", tally.requests))?;
            conn = Some(c);
            tally.connections += 1;
            on_conn = 0;
        }
        let c = conn.as_mut().unwrap();
        let where_ = format!(
            "request {} (number {} on connection {})",
            tally.requests + 1,
            on_conn + 1,
            tally.connections
        );
        let response = c
            .try_send(&get("/pid"))
            .and_then(|()| c.try_read_response(false))
            .map_err(|e| format!("{where_}: no complete answer: {e}"))?;
        tally.answered_by(pid_answer(&response, &where_)?, answered);
        on_conn += 1;
        if response.connection_has("close") {
            nothing_after_close(c, &where_)?;
            tally.closed_after_answer += 1;
            conn = None;
        }
    }
    // Each request was answered exactly once: nothing more waits on the
    // connection. The client closes its side; the server then closes its
    // own, and anything it had sent before that is read here.
    if let Some(mut c) = conn {
        c.tcp_stream()
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("shutting down the last connection: {e}"))?;
        let (rest, error) = c.read_to_end();
        if !rest.is_empty() {
            return Err(format!(
                "bytes no request asked for on the last connection: {:?}",
                String::from_utf8_lossy(&rest)
            ));
        }
        match error {
            None => {}
            Some(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Some(e) => {
                return Err(format!(
                    "the server did not close the last connection after the client did: {e}"
                ));
            }
        }
    }
    Ok(tally)
}

/// `n` client threads running `keep_asking`, sharing one budget.
fn start_clients(addr: SocketAddr, n: usize, budget: usize) -> Clients {
    let sent = Arc::new(AtomicUsize::new(0));
    Clients::start(n, move |stop, answered| {
        keep_asking(addr, stop, &sent, budget, answered)
    })
}

fn pids_seen(tallies: &[Tally]) -> HashSet<u32> {
    tallies.iter().flat_map(Tally::pids).collect()
}

// ---------------------------------------------------------------------------
// --max-requests
// ---------------------------------------------------------------------------

/// What the master's log says of the recycles, checked line by line in
/// the order written: each starts for a worker that is serving and has said
/// it reached its limit; its successor is the next worker booted; it ends
/// with the successor booted and the old worker stopped; no other recycle
/// starts in between; the number of serving workers never changes. Returns
/// the workers stopped, in order.
fn check_recycles(lines: &[String], workers: usize, first: &HashSet<u32>) -> Vec<u32> {
    let context = || lines.join("\n");
    let mut serving: HashSet<u32> = HashSet::new();
    let mut autorestarted: HashSet<u32> = HashSet::new();
    // The recycle under way: the old worker, and its successor once booted.
    let mut under_way: Option<(u32, Option<u32>)> = None;
    let mut stopped = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.ends_with(AUTORESTART) {
            let pid = log_line_pid(line).unwrap_or_else(|| panic!("no pid in {line:?}"));
            autorestarted.insert(pid);
        } else if line.contains(REACHED) {
            let old = number_after(line, "Worker (pid:").unwrap();
            if let Some((other, _)) = under_way {
                panic!(
                    "line {i}: a recycle of {old} started while that of {other} was under \
                     way:\n{}",
                    context()
                );
            }
            assert!(
                serving.contains(&old),
                "line {i}: {old} is not a serving worker:\n{}",
                context()
            );
            assert!(
                autorestarted.contains(&old),
                "line {i}: {old} had not said it reached its limit:\n{}",
                context()
            );
            under_way = Some((old, None));
        } else if line.contains(BOOTING) {
            let pid = number_after(line, BOOTING).unwrap();
            match &mut under_way {
                Some((_, successor @ None)) => *successor = Some(pid),
                // The first workers; after them, only a recycle starts one
                // (none died).
                None if first.contains(&pid) => {
                    serving.insert(pid);
                }
                _ => panic!(
                    "line {i}: worker {pid} booted outside a recycle:\n{}",
                    context()
                ),
            }
        } else if line.contains(STOPPING) {
            let successor = number_after(line, "Worker (pid:").unwrap();
            let old = number_after(line, "stopping worker (pid:").unwrap();
            assert_eq!(
                under_way,
                Some((old, Some(successor))),
                "line {i}: stopping {old} for {successor} ends no recycle under way:\n{}",
                context()
            );
            assert!(serving.remove(&old));
            assert!(serving.insert(successor));
            assert_eq!(serving.len(), workers, "line {i}:\n{}", context());
            under_way = None;
            stopped.push(old);
        } else if line.contains("Worker exiting (pid: ") {
            let pid = number_after(line, "Worker exiting (pid: ").unwrap();
            assert!(
                stopped.contains(&pid),
                "line {i}: {pid} exited without being stopped:\n{}",
                context()
            );
        }
        assert!(
            !line.contains("[ERROR]")
                && !line.contains("[WARNING]")
                && !line.contains("[CRITICAL]"),
            "line {i}: {line}\n{}",
            context()
        );
    }
    stopped
}

/// Recycles to see before a load stops (a bound on it too: with limits of
/// 20 to 25 requests they take a few hundred requests).
const RECYCLES: usize = 6;
const CLIENTS: usize = 4;
const BUDGET: usize = 20_000;

/// Two workers that each restart after 20 to 25 requests.
fn recycling_pair() -> Server {
    Server::builder(testapp())
        .args([
            "-w",
            "2",
            "--max-requests",
            "20",
            "--max-requests-jitter",
            "5",
        ])
        .args(LONG_KEEP_ALIVE)
        .wait_for_workers(2)
        .start()
}

#[test]
fn max_requests_recycles_one_worker_at_a_time_and_loses_nothing() {
    let server = recycling_pair();
    let first: HashSet<u32> = server.wait_for_workers(2).into_iter().collect();
    let started = Instant::now();
    let mut clients = start_clients(server.addr(), CLIENTS, BUDGET);
    clients.run_until(&format!("{RECYCLES} recycles were done"), LOAD_TIME, || {
        server.stderr.text().matches(STOPPING).count() >= RECYCLES
    });
    let tallies = clients.finish();
    let elapsed = started.elapsed();

    let lines = server.stderr.lines();
    let stopped = check_recycles(&lines, 2, &first);
    assert!(stopped.len() >= RECYCLES, "{stopped:?}");
    // Every stopped worker finishes and exits (the clients have closed
    // their connections).
    for pid in &stopped {
        wait_retired(&server, *pid);
    }
    let booted: HashSet<u32> = server
        .wait_for_workers(2 + stopped.len())
        .into_iter()
        .collect();
    let seen = pids_seen(&tallies);
    assert!(seen.len() > 2, "only {seen:?} answered");
    assert!(seen.is_subset(&booted), "{seen:?} not among {booted:?}");
    for tally in &tallies {
        // A client's connection ends only when a stopping worker answers
        // its request in hand with Connection: close: once per recycle at
        // most.
        assert!(
            tally.closed_after_answer <= stopped.len(),
            "{tally:?} ({} recycles)",
            stopped.len()
        );
    }
    let requests: usize = tallies.iter().map(|t| t.requests).sum();
    eprintln!(
        "{requests} requests answered by {} workers across {} recycles in {elapsed:?}; \
         per client (requests, connections): {:?}",
        seen.len(),
        stopped.len(),
        tallies
            .iter()
            .map(|t| (t.requests, t.connections))
            .collect::<Vec<_>>()
    );
}

#[test]
fn max_requests_hands_idle_connections_to_the_workers_that_stay() {
    const IDLE: usize = 8;
    let server = recycling_pair();
    let first: HashSet<u32> = server.wait_for_workers(2).into_iter().collect();
    // Idle keep-alive connections, one request each before the load; they
    // must outlive the workers that answered them.
    let mut idle: Vec<(Conn, u32)> = (0..IDLE)
        .map(|_| {
            let mut conn = server.connect();
            let pid = pid_of(&mut conn);
            assert!(first.contains(&pid), "{pid} not among {first:?}");
            (conn, pid)
        })
        .collect();
    let mut clients = start_clients(server.addr(), CLIENTS, BUDGET);
    clients.run_until(
        &format!("{RECYCLES} recycles were done, the first workers {first:?} among them"),
        LOAD_TIME,
        || {
            let text = server.stderr.text();
            text.matches(STOPPING).count() >= RECYCLES
                && first
                    .iter()
                    .all(|pid| text.contains(&format!("stopping worker (pid:{pid})")))
        },
    );
    clients.finish();
    // Each idle connection was handed to a worker that stays (maybe more
    // than once), never closed: its next request is answered, and the
    // connection kept open. Only a worker that is stopping answers with
    // Connection: close, and a stopping worker holds no idle connection.
    let mut closed = Vec::new();
    for (i, (conn, pid)) in idle.iter_mut().enumerate() {
        conn.send(&get("/pid"));
        let response = conn.read_response();
        response.assert_status(200);
        let now: u32 = response.text().parse().expect("a decimal pid");
        if response.connection_has("close") {
            closed.push(format!(
                "idle connection {i} (first answered by {pid}) answered by {now} with \
                 Connection: close"
            ));
        }
    }
    assert!(
        closed.is_empty(),
        "idle connections were closed instead of handed over:\n{}",
        closed.join("\n")
    );
    // And the workers stopped with them handed over have all exited.
    for pid in check_recycles(&server.stderr.lines(), 2, &first) {
        wait_retired(&server, pid);
    }
}

/// Poll the file at `path` until `count` of its lines contain `pattern`;
/// return them.
fn wait_for_file_lines(path: &Path, pattern: &str, count: usize) -> Vec<String> {
    let mut found = Vec::new();
    wait_until_within(
        &format!("{count} lines with {pattern:?} in {}", path.display()),
        WAIT,
        || {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            found = text
                .lines()
                .filter(|l| l.contains(pattern))
                .map(str::to_string)
                .collect();
            found.len() >= count
        },
    );
    found
}

/// The request number in an access log line for `GET /pid?n=NUMBER`.
fn access_line_request(line: &str) -> Option<u64> {
    let rest = &line[line.find("\"GET /pid?n=")? + "\"GET /pid?n=".len()..];
    rest.split(' ').next()?.parse().ok()
}

/// `GET /pid?n=1`, `GET /pid?n=2`, ... each on a new connection and with
/// `Connection: close`, one at a time, until `stop` or `budget` requests:
/// each one goes to whichever worker accepts it. Returns which pid answered
/// each request number; fails on anything but a whole 200 answer.
fn one_at_a_time(
    addr: SocketAddr,
    stop: &AtomicBool,
    budget: u64,
) -> Result<HashMap<u64, u32>, String> {
    let mut answered_by = HashMap::new();
    for n in 1..=budget {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut conn =
            Conn::try_tcp(addr).map_err(|e| format!("request {n}: connecting failed: {e}"))?;
        let response = conn
            .try_send(&request(
                "GET",
                &format!("/pid?n={n}"),
                &[("Connection", "close")],
                b"",
            ))
            .and_then(|()| conn.try_read_response(false))
            .map_err(|e| format!("request {n}: no complete answer: {e}"))?;
        if response.status != 200 {
            return Err(format!(
                "request {n}: answered {}:\n{}",
                response.status,
                String::from_utf8_lossy(&response.raw)
            ));
        }
        let pid: u32 = response
            .text()
            .parse()
            .map_err(|e| format!("request {n}: not a pid ({e}): {:?}", response.text()))?;
        answered_by.insert(n, pid);
    }
    Ok(answered_by)
}

#[test]
fn max_requests_jitter_gives_each_worker_its_own_limit() {
    const WORKERS: usize = 4;
    const BUDGET: u64 = 20_000;
    // The access log and the error log in one file: each worker writes the
    // access line of a request before its own Autorestarting line (both
    // appends by the same process, in program order), so the lines a worker
    // wrote before that line count the requests it served first.
    let dir = TempDir::new("jitter");
    let log = dir.join("rgun.log");
    let log_arg = log.display().to_string();
    let _server = Server::builder(testapp())
        .args([
            "-w",
            "4",
            "--max-requests",
            "30",
            "--max-requests-jitter",
            "20",
        ])
        .args(LONG_KEEP_ALIVE)
        .args(["--access-logfile", &log_arg, "--error-logfile", &log_arg])
        .spawn();
    let line = wait_for_file_line(&log, "Listening at: http://", WAIT);
    let addr = listening_tcp_addr(&line);
    let first: Vec<u32> = wait_for_file_lines(&log, BOOTING, WORKERS)
        .iter()
        .map(|l| number_after(l, BOOTING).unwrap())
        .collect();

    // One request at a time, so that a worker's loop never has two in hand
    // when it counts them: the count at its Autorestarting line is then the
    // limit it drew (a request that arrives while it finishes a turn could
    // still make it one more, at worst).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || one_at_a_time(addr, &stop, BUDGET))
    };
    let started = Instant::now();
    let deadline = started + LOAD_TIME;
    let all_autorestarted = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let said: HashSet<u32> = text
            .lines()
            .filter(|l| l.ends_with(AUTORESTART))
            .filter_map(log_line_pid)
            .collect();
        first.iter().all(|pid| said.contains(pid))
    };
    while !all_autorestarted() {
        if load.is_finished() || Instant::now() >= deadline {
            stop.store(true, Ordering::SeqCst);
            let outcome = load.join().expect("the load thread panicked");
            panic!(
                "not every first worker {first:?} reached its limit ({}); the log:\n{}",
                match outcome {
                    Ok(answered) => format!("{} requests answered", answered.len()),
                    Err(e) => format!("a request was lost: {e}"),
                },
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        thread::sleep(POLL);
    }
    stop.store(true, Ordering::SeqCst);
    let answered_by = load
        .join()
        .expect("the load thread panicked")
        .unwrap_or_else(|e| panic!("a request was lost: {e}"));
    let elapsed = started.elapsed();

    let text = std::fs::read_to_string(&log).unwrap();
    let mut served: HashMap<u32, u64> = HashMap::new();
    let mut limits: HashMap<u32, u64> = HashMap::new();
    for line in text.lines() {
        if let Some(n) = access_line_request(line) {
            let pid = answered_by
                .get(&n)
                .unwrap_or_else(|| panic!("an access line for a request never answered: {line}"));
            *served.entry(*pid).or_default() += 1;
        } else if line.ends_with(AUTORESTART) {
            let pid = log_line_pid(line).unwrap_or_else(|| panic!("no pid in {line:?}"));
            limits
                .entry(pid)
                .or_insert_with(|| served.get(&pid).copied().unwrap_or(0));
        }
    }
    let drawn: Vec<u64> = first.iter().map(|pid| limits[pid]).collect();
    eprintln!(
        "first workers {first:?} autorestarted after {drawn:?} requests \
         ({} requests in {elapsed:?})",
        answered_by.len()
    );
    for (pid, count) in first.iter().zip(&drawn) {
        assert!(
            *count >= 30,
            "worker {pid} autorestarted after {count} requests, under --max-requests 30:\n{text}"
        );
    }
    // Each worker draws its limit from 30..=50. All four equal by chance
    // has probability 21^-3 (about 1 in 9000): a false failure that rare
    // is accepted, to catch workers that all draw the same limit.
    assert!(
        drawn.iter().any(|count| *count != drawn[0]),
        "every first worker autorestarted after {} requests: no jitter",
        drawn[0]
    );
}

// ---------------------------------------------------------------------------
// --max-worker-memory
// ---------------------------------------------------------------------------

/// A process's proportional set size in KiB, as the master measures it.
fn pss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/smaps_rollup: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no Pss in /proc/{pid}/smaps_rollup:\n{text}"))
}

#[test]
fn max_worker_memory_recycles_a_worker_that_grew() {
    const LIMIT_MIB: u64 = 150;
    let server = Server::builder("grow_app:app")
        .arg("--chdir")
        .arg(python_dir().to_str().unwrap())
        .args(["-w", "1", "--max-worker-memory", &LIMIT_MIB.to_string()])
        .args(LONG_KEEP_ALIVE)
        .wait_for_workers(1)
        .start();
    let old = server.wait_for_workers(1)[0];
    let mut conn = server.connect();
    assert_eq!(pid_of(&mut conn), old);
    // A fresh worker is far under the limit (about 10 MiB here): only
    // what it is made to hold can take it over.
    let fresh = pss_kib(old);
    assert!(
        fresh < LIMIT_MIB * 1024 / 2,
        "a fresh worker already uses {fresh} KiB"
    );

    let mut clients = start_clients(server.addr(), 2, 200_000);
    clients.wait_for_more(50);
    let grown = conn.request(&get("/grow?mib=200"));
    grown.assert_status(200);
    assert_eq!(grown.json()["pid"], old, "{}", grown.text());
    assert_eq!(grown.json()["held_mib"], 200, "{}", grown.text());
    // Closed rather than left idle: what becomes of an idle connection
    // when its worker is stopped is `max_requests_hands_idle_connections_
    // to_the_workers_that_stay`'s to check (the stopped worker can keep
    // one, and stays until its next request; that would hang this test).
    drop(conn);

    let line = server.wait_for_log(&format!("Worker (pid:{old}) uses "), WAIT);
    assert!(line.contains("[WARNING]"), "{line}");
    assert!(
        line.ends_with(&format!(
            " MiB (PSS), over --max-worker-memory {LIMIT_MIB} MiB; starting its replacement"
        )),
        "{line}"
    );
    let used: f64 = line
        .split(" uses ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|mib| mib.parse().ok())
        .unwrap_or_else(|| panic!("no size in {line:?}"));
    assert!(used > LIMIT_MIB as f64, "{line}");
    let new = server.wait_for_workers(2)[1];
    assert_ne!(new, old);
    server.wait_for_log(
        &format!("Worker (pid:{new}) has booted; stopping worker (pid:{old})"),
        WAIT,
    );
    wait_retired(&server, old);
    // The load goes on, answered by the successor alone.
    clients.wait_for_more(50);
    let tallies = clients.finish();

    let seen = pids_seen(&tallies);
    assert!(seen.contains(&new), "{seen:?}");
    assert!(seen.is_subset(&HashSet::from([old, new])), "{seen:?}");
    assert_eq!(pid_of(&mut server.connect()), new);
    // The successor is small: one recycle, no other warning.
    let text = server.stderr.text();
    assert_eq!(
        text.matches("over --max-worker-memory").count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("[WARNING]").count(), 1, "{text}");
    assert!(!text.contains("[ERROR]"), "{text}");
    let requests: usize = tallies.iter().map(|t| t.requests).sum();
    eprintln!("{requests} requests answered across the recycle; old worker at {used} MiB");
}

// ---------------------------------------------------------------------------
// --worker-connections
// ---------------------------------------------------------------------------

/// The connections of a test of `--worker-connections CAP`: each answered
/// one the test still holds takes one of the worker's places, and each it
/// closed gave one back. A worker that keeps to its cap has answered no
/// more of the waiting connections than places were given back; checked at
/// every look. The check can only fail for a worker over its cap, never for
/// a slow one (the server closes no connection itself here: the keep-alive
/// time is long), though a slow one may hide a breach from it.
struct Waiting {
    /// Connections that sent `GET /pid` and were not answered yet.
    pending: Vec<Conn>,
    /// Answered and still open, oldest first.
    answered: Vec<Conn>,
    answered_total: usize,
    given_back: usize,
    worker: u32,
}

impl Waiting {
    /// How many pending connections have an answer arriving.
    #[track_caller]
    fn look(&self) -> usize {
        let arriving = self.pending.iter().filter(|c| has_answer(c)).count();
        assert!(
            self.answered_total + arriving <= self.given_back,
            "{} connections answered beyond the cap ({} places given back)",
            self.answered_total + arriving,
            self.given_back
        );
        arriving
    }

    /// Close `conn` and wait until the place it gave back is taken by a
    /// waiting connection, if any is left; read that answer.
    #[track_caller]
    fn give_back(&mut self, conn: Conn) {
        drop(conn);
        self.given_back += 1;
        if self.pending.is_empty() {
            return;
        }
        wait_until_within(
            &format!(
                "a waiting connection is answered ({} so far)",
                self.answered_total
            ),
            WAIT,
            || self.look() > 0,
        );
        let i = self.pending.iter().position(has_answer).unwrap();
        let mut conn = self.pending.swap_remove(i);
        assert_eq!(read_pid_answer(&mut conn), self.worker);
        self.answered_total += 1;
        self.answered.push(conn);
        self.look();
    }
}

/// One worker capped at four connections, with `extra` arguments: four
/// connections it holds, ten more waiting; each place given back lets one
/// waiting connection in, and every one of them is answered.
fn holds_connections_back_without_refusing_them(extra: &[&str]) {
    const CAP: usize = 4;
    const MORE: usize = 10;
    let server = Server::builder(testapp())
        .args(["-w", "1", "--worker-connections", &CAP.to_string()])
        .args(extra.iter().copied())
        .args(LONG_KEEP_ALIVE)
        .wait_for_workers(1)
        .start();
    let worker = server.wait_for_workers(1)[0];
    let held: Vec<Conn> = (0..CAP)
        .map(|_| {
            let mut conn = server.connect();
            assert_eq!(pid_of(&mut conn), worker);
            conn
        })
        .collect();
    // More connections than the worker takes: each is accepted by the
    // kernel, and its request is sent, without error.
    let pending: Vec<Conn> = (0..MORE)
        .map(|i| {
            let mut conn = Conn::try_tcp(server.addr())
                .unwrap_or_else(|e| panic!("connection {} of {MORE} refused: {e}", i + 1));
            conn.try_send(&get("/pid"))
                .unwrap_or_else(|e| panic!("request on connection {} failed: {e}", i + 1));
            conn
        })
        .collect();
    let mut waiting = Waiting {
        pending,
        answered: Vec::new(),
        answered_total: 0,
        given_back: 0,
        worker,
    };
    // None answered while the worker holds its four.
    waiting.look();
    // Each place given back lets one more in: first the four held, then
    // those answered since.
    for conn in held {
        waiting.give_back(conn);
    }
    while !waiting.pending.is_empty() {
        let conn = waiting.answered.remove(0);
        waiting.give_back(conn);
    }
    assert_eq!(waiting.answered_total, MORE);
    // The ones still open go on being served.
    for conn in &mut waiting.answered {
        assert_eq!(pid_of(conn), worker);
    }
    let text = server.stderr.text();
    assert!(!text.contains("[ERROR]"), "{text}");
    assert_eq!(text.matches(BOOTING).count(), 1, "{text}");
}

#[test]
fn worker_connections_holds_connections_back_without_refusing_them() {
    holds_connections_back_without_refusing_them(&[]);
}

/// A call long enough for the affinity watcher (`/sleep`) while another
/// connection is idle, with no other worker to take it. A worker capped at two
/// that holds A (idle) and B must not answer a third connection C before
/// A or B closes; A's next request is its to answer.
#[test]
fn worker_connections_counts_a_connection_idle_during_a_long_call() {
    let server = Server::builder(testapp())
        .args(["-w", "1", "--worker-connections", "2"])
        .args(LONG_KEEP_ALIVE)
        .wait_for_workers(1)
        .start();
    let worker = server.wait_for_workers(1)[0];
    let mut a = server.connect();
    assert_eq!(pid_of(&mut a), worker);
    let mut b = server.connect();
    b.request(&get("/sleep?ms=200")).assert_status(200);
    let mut c = server.connect();
    c.send(&get("/pid"));
    a.send(&get("/pid"));
    // The worker holds A and B: A is answered, C waits. An answer on C
    // while both are open (the check is sound that way only) is over the
    // cap.
    wait_until_within("A or C is answered", WAIT, || {
        has_answer(&a) || has_answer(&c)
    });
    assert!(
        !has_answer(&c),
        "a third connection was answered while the worker held two (--worker-connections 2); \
         A answered: {}",
        has_answer(&a)
    );
    assert_eq!(read_pid_answer(&mut a), worker);
    drop(b);
    assert_eq!(read_pid_answer(&mut c), worker);
}

/// With application threads there is no affinity watcher: the cap holds.
#[test]
fn worker_connections_holds_connections_back_with_threads() {
    holds_connections_back_without_refusing_them(&["--threads", "2"]);
}

// ---------------------------------------------------------------------------
// Process titles
// ---------------------------------------------------------------------------

/// `/proc/PID/cmdline` split at its NUL bytes, empty pieces left out.
fn cmdline(pid: u32) -> Vec<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/cmdline: {e}"));
    bytes
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

/// Wait until `ps` shows `title` for `pid`, and nothing more (a process
/// sets its title a moment after it says it started).
#[track_caller]
fn wait_for_title(pid: u32, title: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let last = cmdline(pid);
        if last == [title] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} shows {last:?}, not {title:?}"
        );
        thread::sleep(POLL);
    }
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/comm: {e}"))
        .trim_end_matches('\n')
        .to_string()
}

/// `/proc/PID/environ`: whole, every entry `NAME=VALUE`, with the mark the
/// test set.
#[track_caller]
fn assert_environ_intact(pid: u32) {
    let bytes = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/environ: {e}"));
    let entries: Vec<String> = bytes
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    assert!(
        entries.iter().any(|e| e == "RGUN_TEST_MARK=x"),
        "process {pid}: no RGUN_TEST_MARK=x in {entries:?}"
    );
    assert!(
        entries.iter().any(|e| e.starts_with("PATH=")),
        "process {pid}: no PATH in {entries:?}"
    );
    assert!(
        entries.iter().all(|e| e.find('=').is_some_and(|i| i > 0)),
        "process {pid}: an entry that is not NAME=VALUE in {entries:?}"
    );
}

/// The `APP` argument a server of `app` is started with.
fn app_argument(app: App) -> String {
    match app {
        App::Native => testapp(),
        App::Wsgi => "testapp_wsgi:app".to_string(),
    }
}

fn titles_name_the_master_and_the_workers(app: App) {
    let server = app
        .builder()
        .args(["-w", "2"])
        .env("RGUN_TEST_MARK", "x")
        .wait_for_workers(2)
        .start();
    let name = app_argument(app);
    let master = server.pid();
    wait_for_title(master, &format!("rgun: master [{name}]"));
    assert_eq!(comm(master), "rgun: master");
    assert_environ_intact(master);
    for worker in server.wait_for_workers(2) {
        wait_for_title(worker, &format!("rgun: worker [{name}]"));
        assert_eq!(comm(worker), "rgun: worker");
        assert_environ_intact(worker);
    }
    server.get("/").assert_status(200);
}

fn proc_name_replaces_the_app_in_titles(app: App) {
    let server = app
        .builder()
        .args(["--proc-name", "myapp"])
        .env("RGUN_TEST_MARK", "x")
        .wait_for_workers(1)
        .start();
    wait_for_title(server.pid(), "rgun: master [myapp]");
    let worker = server.wait_for_workers(1)[0];
    wait_for_title(worker, "rgun: worker [myapp]");
    assert_eq!(comm(worker), "rgun: worker");
    assert_environ_intact(worker);
    server.get("/").assert_status(200);
}

test_each_app!(
    titles_name_the_master_and_the_workers,
    proc_name_replaces_the_app_in_titles,
);

#[test]
fn a_python_worker_keeps_its_command_line_in_sys_argv() {
    let dir = python_dir().to_str().unwrap().to_string();
    for extra in [&[][..], &["--preload"][..]] {
        let server = Server::builder("probe_app")
            .arg("--chdir")
            .arg(dir.clone())
            .args(extra.iter().copied())
            .wait_for_workers(1)
            .start();
        let worker = server.wait_for_workers(1)[0];
        let info = server.get("/interpreter").json();
        assert_eq!(info["pid"], worker, "{extra:?}");
        // Titled, and still the original arguments in Python.
        wait_for_title(worker, "rgun: worker [probe_app]");
        wait_for_title(server.pid(), "rgun: master [probe_app]");
        let argv: Vec<&str> = info["argv"]
            .as_array()
            .unwrap_or_else(|| panic!("no argv in {info}"))
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let mut expected = vec![
            rgun_bin().display().to_string(),
            "probe_app".to_string(),
            "--bind".to_string(),
            "127.0.0.1:0".to_string(),
            "--chdir".to_string(),
            dir.clone(),
        ];
        expected.extend(extra.iter().map(|a| a.to_string()));
        assert_eq!(argv, expected, "{extra:?}");
    }
}

// ---------------------------------------------------------------------------
// Gunicorn's spellings
// ---------------------------------------------------------------------------

#[test]
fn max_requests_flag_recycles_after_that_many_requests() {
    let server = Server::builder(testapp())
        .args(["--max-requests", "1"])
        .wait_for_workers(1)
        .start();
    let worker = server.wait_for_workers(1)[0];
    assert_eq!(pid_of(&mut server.connect()), worker);
    let line = server.wait_for_log(AUTORESTART, WAIT);
    assert_eq!(log_line_pid(&line), Some(worker), "{line}");
    server.wait_for_log(&format!("Worker (pid:{worker}){REACHED}"), WAIT);
    let successor = server.wait_for_workers(2)[1];
    wait_retired(&server, worker);
    assert_eq!(pid_of(&mut server.connect()), successor);
}

#[test]
fn max_requests_jitter_flag_adds_at_most_its_count() {
    let server = Server::builder(testapp())
        .args(["--max-requests", "1", "--max-requests-jitter", "2"])
        .args(LONG_KEEP_ALIVE)
        .wait_for_workers(1)
        .start();
    let worker = server.wait_for_workers(1)[0];
    // The worker's limit is 1 to 3; it serves on past it until replaced,
    // so three requests in a row reach it whatever it drew.
    let mut conn = server.connect();
    for _ in 0..3 {
        assert_eq!(pid_of(&mut conn), worker);
    }
    let line = server.wait_for_log(AUTORESTART, WAIT);
    assert_eq!(log_line_pid(&line), Some(worker), "{line}");
}

#[test]
fn worker_connections_flag_caps_a_worker() {
    let server = Server::builder(testapp())
        .args(["-w", "1", "--worker-connections", "1"])
        .args(LONG_KEEP_ALIVE)
        .wait_for_workers(1)
        .start();
    let worker = server.wait_for_workers(1)[0];
    let mut first = server.connect();
    assert_eq!(pid_of(&mut first), worker);
    let mut second = server.connect();
    second.send(&get("/pid"));
    // Sound only one way: an answer now would breach the cap.
    assert!(!has_answer(&second), "answered while the worker held one");
    drop(first);
    assert_eq!(read_pid_answer(&mut second), worker);
}

#[test]
fn every_spelling_of_the_process_name() {
    for flag in ["-n", "--name", "--proc-name"] {
        let server = Server::builder(testapp())
            .args([flag, "spelled"])
            .wait_for_workers(1)
            .start();
        wait_for_title(server.pid(), "rgun: master [spelled]");
        let worker = server.wait_for_workers(1)[0];
        wait_for_title(worker, "rgun: worker [spelled]");
        server.get("/").assert_status(200);
    }
}
