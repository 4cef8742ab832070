//! Keep-alive affinity: a request on a keep-alive connection held by a
//! worker that is busy with a call is answered by a free worker, not after
//! the call (worker/src/handoff.rs, watcher.rs, server.rs).
//!
//! Each test reproduces it the way puma's test for the same issue does (PR
//! #3892), deterministically: with one worker (W1), open keep-alive
//! connections, which can then only be in W1 (each checked with `/pid`);
//! add a second worker (`TTIN`, W2) and wait until it runs; make W1 busy;
//! then use W1's connections. Every answer must come from W2's pid. Before
//! the fix W1 answered them, after its call: the assertions are about who
//! answered, never about how long it took, and nothing waits on a clock,
//! only on conditions (an answer, a log line, the kernel's receive queue, a
//! worker's threads).
//!
//! Two ways to keep a worker busy: `/sleep`, a call that ends by itself,
//! and a held call, a `POST /echo` that announces its body with `Expect:
//! 100-continue` and sends it only when the test says (see `hold_call`).

use std::collections::HashMap;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{
    App, Conn, Response, Server, TempDir, WAIT, get, request, start_nginx, unique_socket_path,
};

crate::harness::test_each_app!(
    idle_and_half_sent_connections_of_a_busy_worker_are_answered_by_a_free_one,
    a_worker_with_every_thread_in_a_call_passes_ready_requests_on,
    connections_of_a_hung_worker_are_answered_by_another_and_the_hung_one_gets_504,
    behind_nginx_its_kept_upstream_connections_are_answered_by_a_free_worker,
    requests_spread_over_single_threaded_workers,
    requests_spread_over_threaded_workers,
    requests_through_nginx_spread_over_workers,
);

/// Idle connections must outlive the second worker's boot (bounded by
/// `WAIT`): the default keep-alive (2 s) could close them first.
const KEEP_ALIVE: [&str; 2] = ["--keep-alive", "60"];

/// The thread a single-threaded worker starts last before its event loop
/// runs: by then it takes connections from the hand-off channel.
pub(crate) const WATCHER_THREAD: &str = "rgun-affinity";
/// The application threads of a worker with `--threads`.
const APP_THREAD: &str = "rgun-app-";

/// How often `wait_for_thread` looks again (a condition polled, not a
/// guess at a duration).
const POLL: Duration = Duration::from_millis(5);

#[track_caller]
fn pid_of(response: &Response) -> u32 {
    response.assert_status(200);
    response
        .text()
        .parse()
        .unwrap_or_else(|e| panic!("not a pid ({e}): {:?}", response.text()))
}

#[track_caller]
fn ask_pid(conn: &mut Conn) -> u32 {
    pid_of(&conn.request(&get("/pid")))
}

/// `app` with one worker and idle connections kept long; returns the
/// server and the worker's pid.
fn start_one_worker(app: App, args: &[&str]) -> (Server, u32) {
    let server = app
        .builder()
        .args(["--workers", "1"])
        .args(KEEP_ALIVE)
        .args(args.iter().copied())
        .wait_for_workers(1)
        .start();
    let w1 = server.wait_for_workers(1)[0];
    (server, w1)
}

/// `N` keep-alive connections to the only worker, `w1`, each checked with
/// a `/pid`.
fn pin<const N: usize>(server: &Server, w1: u32) -> [Conn; N] {
    let mut conns: [Conn; N] = std::array::from_fn(|_| server.connect());
    for (i, conn) in conns.iter_mut().enumerate() {
        let pid = ask_pid(conn);
        assert_eq!(
            pid, w1,
            "connection {i} answered by {pid}, but {w1} is the only worker"
        );
    }
    conns
}

/// `TTIN`, and wait until the second worker runs its event loop: its pid.
/// (Nothing of a worker is visible from outside before it answers a
/// request, and a request cannot be aimed at it; its threads are, and
/// `thread` is started just before its loop. A request to W1 meanwhile
/// could make the watcher move the connections the test pinned there.)
pub(crate) fn add_second_worker(server: &Server, thread: &str) -> u32 {
    server.signal(libc::SIGTTIN);
    server.wait_for_log("Handling signal: ttin; 2 workers wanted", WAIT);
    let w2 = server.wait_for_workers(2)[1];
    wait_for_thread(w2, thread);
    w2
}

/// Poll until process `pid` has a thread whose name starts with `prefix`.
fn wait_for_thread(pid: u32, prefix: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .map(|name| name.trim_end().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if names.iter().any(|n| n.starts_with(prefix)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "worker {pid} started no thread {prefix:?} within {WAIT:?}: it never ran its \
             event loop (its threads: {names:?})"
        );
        thread::sleep(POLL);
    }
}

/// Start a call the test holds open: a `POST /echo` announcing `len` body
/// bytes with `Expect: 100-continue`. The `100 Continue` is sent from
/// inside the call, when the application first reads the body: once it is
/// read, a thread of the worker holding `conn` is in the call (counted as
/// one in flight), and it stays there until `release_call` sends the body.
/// A slow call whose end the test decides, with no clock.
#[track_caller]
fn hold_call(conn: &mut Conn, len: usize) {
    conn.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n\
             Content-Length: {len}\r\n\r\n"
        )
        .as_bytes(),
    );
    conn.read_response().assert_status(100);
}

/// End a held call: send its body, and check the echo carries all of it.
#[track_caller]
fn release_call(conn: &mut Conn, body: &str) {
    conn.send(body.as_bytes());
    let echo = conn.read_response();
    echo.assert_status(200);
    assert_eq!(echo.json()["body"], body, "the held call's body");
}

/// A `POST /echo` with a body and a `GET /pid` behind it, in one write:
/// the echo must come back whole, and the pid says which worker held the
/// connection as it answered.
#[track_caller]
fn post_then_pid(conn: &mut Conn, body: &str) -> u32 {
    let mut bytes = request("POST", "/echo", &[], body.as_bytes());
    bytes.extend_from_slice(&get("/pid"));
    conn.send(&bytes);
    let echo = conn.read_response();
    echo.assert_status(200);
    let echo = echo.json();
    assert_eq!(echo["method"], "POST", "{echo}");
    assert_eq!(echo["body"], body, "the body of a POST lost on the way");
    pid_of(&conn.read_response())
}

/// One more request on each connection, one answer read for each: an
/// earlier request answered twice would leave an extra answer, read here
/// instead of this one (and not an echo of this query); one never answered
/// would have failed its read before.
#[track_caller]
fn each_answers_once_more(conns: &mut [&mut Conn]) {
    for (i, conn) in conns.iter_mut().enumerate() {
        let response = conn.request(&get(&format!("/echo?last={i}")));
        response.assert_status(200);
        assert_eq!(
            response.json()["query"],
            format!("last={i}"),
            "connection {i}: an answer to an earlier request came instead"
        );
    }
}

/// The debug lines in which worker `pid` says a long call made it hand
/// connections on.
fn moved_lines(server: &Server, pid: u32) -> Vec<String> {
    let pattern = moved_pattern(pid);
    server
        .stderr
        .lines()
        .into_iter()
        .filter(|l| l.contains(&pattern))
        .collect()
}

/// How many connections worker `pid` handed on in its "a call runs long"
/// lines after the first `skip` of them.
fn moved_since(server: &Server, pid: u32, skip: usize) -> usize {
    moved_lines(server, pid)[skip..]
        .iter()
        .map(|line| {
            line.rsplit("a call runs long: ")
                .next()
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("no count in {line:?}"))
        })
        .sum()
}

fn moved_pattern(pid: u32) -> String {
    format!("[{pid}] [DEBUG] a call runs long: ")
}

#[track_caller]
fn assert_answered_by_free_worker(what: &str, pid: u32, w1: u32, w2: u32) {
    assert_eq!(
        pid, w2,
        "{what} on a keep-alive connection of the busy worker {w1} was answered by {pid}, \
         not by the free worker {w2}"
    );
}

// ---------------------------------------------------------------------------
// One slow call in a single-threaded worker
// ---------------------------------------------------------------------------

/// W1 sleeps in a call; its idle connections, one with a `POST` and one
/// that had sent half a request head before the call, are answered by W2.
fn idle_and_half_sent_connections_of_a_busy_worker_are_answered_by_a_free_one(app: App) {
    let (server, w1) = start_one_worker(app, &["--log-level", "debug"]);
    let [mut slow, mut idle_a, mut idle_b, mut post, mut half] = pin::<5>(&server, w1);
    let w2 = add_second_worker(&server, WATCHER_THREAD);
    // Every line W1 wrote before TTIN is in (the master wrote "Booting
    // worker" after them, to the same pipe).
    let moved_before = moved_lines(&server, w1).len();

    // Half a head, read by W1 (buffered there: not a call).
    half.send(b"GET /pid HTTP/1.1\r\nHost: loc");
    half.wait_until_server_read();
    // W1 reads the slow request, and is then in the call: a
    // single-threaded worker calls the application on the thread that read
    // it.
    slow.send(&get("/sleep?ms=3000"));
    slow.wait_until_server_read();

    let pid = ask_pid(&mut idle_a);
    assert_answered_by_free_worker("GET /pid", pid, w1, w2);
    let pid = ask_pid(&mut idle_b);
    assert_answered_by_free_worker("GET /pid", pid, w1, w2);
    // A request that must not be lost nor run twice: its answer comes once,
    // with the body, and the pid behind it from W2.
    let pid = post_then_pid(&mut post, "a POST is never lost nor repeated");
    assert_answered_by_free_worker("POST /echo then GET /pid", pid, w1, w2);
    // The half of the head W1 had read travelled with the connection.
    half.send(b"alhost\r\n\r\n");
    let pid = pid_of(&half.read_response());
    assert_answered_by_free_worker("a request head sent in two parts", pid, w1, w2);

    let slept = slow.read_response();
    slept.assert_status(200);
    assert_eq!(slept.text(), "slept 3000");
    // It was W1 that ran the long call, and it handed on the four others,
    // each as its request came (the half-sent one at once). Its log line
    // may follow the answer a moment later.
    crate::harness::wait_until("W1 logs four connections handed on", || {
        moved_since(&server, w1, moved_before) >= 4
    });
    assert_eq!(moved_since(&server, w1, moved_before), 4);

    each_answers_once_more(&mut [&mut slow, &mut idle_a, &mut idle_b, &mut post, &mut half]);
}

// ---------------------------------------------------------------------------
// --threads: every thread in a call
// ---------------------------------------------------------------------------

/// W1 with `--threads 2` holds two calls; requests on its other
/// connections are answered by W2. Then W2 holds two as well: a request on
/// W1's last connection waits for whichever worker frees a thread first,
/// and W2 does.
///
/// W1 is filled with held calls, and W2 first given one of its own: a
/// worker with a call in hand leaves a second ready request to a peer that
/// holds fewer (load spreading), so W1's second call would otherwise go to
/// an idle W2.
fn a_worker_with_every_thread_in_a_call_passes_ready_requests_on(app: App) {
    let (server, w1) = start_one_worker(app, &["--threads", "2"]);
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g] = pin::<7>(&server, w1);
    let w2 = add_second_worker(&server, APP_THREAD);

    // W1's first call: with none in hand, a worker keeps its request.
    hold_call(&mut a, 6);
    // With one in hand, W1 leaves a ready request to W2, which holds none.
    // (Asked again while W1 answers: W2 may be a moment from taking work
    // after its threads start.)
    let deadline = Instant::now() + WAIT;
    loop {
        let pid = ask_pid(&mut b);
        if pid == w2 {
            break;
        }
        assert_eq!(pid, w1, "answered by neither worker");
        assert!(
            Instant::now() < deadline,
            "W1 ({w1}), with a call in hand, never left a request to the idle W2 ({w2})"
        );
    }
    // b is W2's now: its held call makes W2 hold one...
    hold_call(&mut b, 6);
    // ...so that W1, holding one too, keeps c's: both of W1's threads are
    // in a call.
    hold_call(&mut c, 6);

    let pid = ask_pid(&mut d);
    assert_answered_by_free_worker("GET /pid", pid, w1, w2);
    let pid = ask_pid(&mut e);
    assert_answered_by_free_worker("GET /pid", pid, w1, w2);
    let pid = post_then_pid(&mut f, "a POST is never lost nor repeated");
    assert_answered_by_free_worker("POST /echo then GET /pid", pid, w1, w2);

    // d is W2's now; its held call fills W2 too. No worker has a free
    // thread: a request on W1's last connection must not queue behind W1's
    // calls, but go to whichever worker frees a thread first.
    hold_call(&mut d, 6);
    g.send(&get("/pid"));
    g.wait_until_server_read();
    release_call(&mut b, "held b");
    let pid = pid_of(&g.read_response());
    assert_eq!(
        pid, w2,
        "a request on a connection of {w1}, whose threads were all in a call, was answered \
         by {pid}, not by {w2}, which freed a thread first"
    );

    release_call(&mut a, "held a");
    release_call(&mut c, "held c");
    release_call(&mut d, "held d");
    each_answers_once_more(&mut [&mut a, &mut b, &mut c, &mut d, &mut e, &mut f, &mut g]);
}

// ---------------------------------------------------------------------------
// A hung worker
// ---------------------------------------------------------------------------

/// W1 hangs in a call past `--timeout`: its other connections are answered
/// by W2 meanwhile, the hung request gets a 504 when the master aborts W1,
/// and nothing else is lost with it.
fn connections_of_a_hung_worker_are_answered_by_another_and_the_hung_one_gets_504(app: App) {
    let (server, w1) = start_one_worker(app, &["--timeout", "2"]);
    let [mut hung, mut idle_a, mut idle_b, mut post] = pin::<4>(&server, w1);
    let w2 = add_second_worker(&server, WATCHER_THREAD);

    hung.send(&get("/sleep?ms=60000"));
    hung.wait_until_server_read();
    let pid = ask_pid(&mut idle_a);
    assert_answered_by_free_worker("GET /pid", pid, w1, w2);
    let pid = post_then_pid(&mut post, "a POST is never lost nor repeated");
    assert_answered_by_free_worker("POST /echo then GET /pid", pid, w1, w2);

    // The master aborts W1 (its heartbeat stopped), which answers 504.
    let timed_out = hung.read_response();
    timed_out.assert_status(504);
    assert!(timed_out.connection_has("close"), "{timed_out:#?}");
    hung.assert_closed();
    server.wait_for_log(&format!("WORKER TIMEOUT (pid:{w1})"), WAIT);

    // Nothing was lost with W1: idle_b, never used while W1 hung, too.
    for (i, conn) in [&mut idle_a, &mut idle_b, &mut post]
        .into_iter()
        .enumerate()
    {
        let pid = ask_pid(conn);
        assert_ne!(pid, w1, "connection {i} answered by the aborted worker");
    }
    let w3 = server.wait_for_workers(3)[2];
    assert!(w3 != w1 && w3 != w2);
    each_answers_once_more(&mut [&mut idle_a, &mut idle_b, &mut post]);
}

// ---------------------------------------------------------------------------
// Behind nginx, with upstream keep-alive
// ---------------------------------------------------------------------------

/// rgun on a Unix socket behind config/nginx-site.conf (upstream
/// `keepalive 32`): nginx keeps connections to W1; once W1 is busy, the
/// requests nginx sends on them are answered by W2.
fn behind_nginx_its_kept_upstream_connections_are_answered_by_a_free_worker(app: App) {
    let dir = TempDir::new("affinity-nginx");
    let socket = unique_socket_path("affinity");
    let server = app
        .builder()
        .bind(format!("unix:{}", socket.display()))
        .args(["--workers", "1", "--log-level", "debug"])
        .args(KEEP_ALIVE)
        .wait_for_workers(1)
        .start();
    let w1 = server.wait_for_workers(1)[0];
    let nginx = start_nginx(&dir, &socket);

    // Concurrent requests make nginx open several upstream connections,
    // which it then keeps: all to W1, the only worker.
    let pids = concurrently(8, |_| {
        let mut conn = Conn::tcp(nginx.addr());
        let slept = conn.request(&get("/sleep?ms=200"));
        slept.assert_status(200);
        ask_pid(&mut conn)
    });
    assert!(pids.iter().all(|&p| p == w1), "{pids:?}");

    let w2 = add_second_worker(&server, WATCHER_THREAD);
    let moved_before = moved_lines(&server, w1).len();
    let slow = thread::spawn({
        let addr = nginx.addr();
        move || Conn::tcp(addr).request(&get("/sleep?ms=3000"))
    });
    // W1 is in the call: its watcher says so, and watches the others.
    let lines = server
        .stderr
        .wait_for_count(&moved_pattern(w1), moved_before + 1, WAIT);
    let line = &lines[moved_before];
    assert!(line.contains("watched for a request"), "{line}");

    let mut client = Conn::tcp(nginx.addr());
    for i in 0..8 {
        let pid = ask_pid(&mut client);
        assert_answered_by_free_worker(&format!("GET /pid #{i} through nginx"), pid, w1, w2);
    }
    let echo = client.request(&request(
        "POST",
        "/echo",
        &[],
        b"a POST through nginx is never lost",
    ));
    echo.assert_status(200);
    assert_eq!(echo.json()["body"], "a POST through nginx is never lost");
    let pid = ask_pid(&mut client);
    assert_answered_by_free_worker("GET /pid through nginx", pid, w1, w2);
    // Nginx sent them on the connections it kept, all W1's: W1 passed
    // those on as the requests came.
    crate::harness::wait_until("W1 logs a connection handed on", || {
        moved_since(&server, w1, moved_before) >= 1
    });

    let slept = slow.join().expect("the slow request's thread");
    slept.assert_status(200);
    assert_eq!(slept.text(), "slept 3000");
    drop(nginx);
    drop(dir);
    let _ = std::fs::remove_file(&socket);
}

/// Run `f(i)` for `i` in `0..n` on `n` threads at once; their results in
/// order.
fn concurrently<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..n).map(|i| s.spawn(move || f(i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread"))
            .collect()
    })
}

// ---------------------------------------------------------------------------
// Spreading: several workers share the work of a few keep-alive clients
// ---------------------------------------------------------------------------

const SPREAD_WORKERS: usize = 4;
const SPREAD_CLIENTS: usize = 8;
const SPREAD_REQUESTS: usize = 60;

fn requests_spread_over_threaded_workers(app: App) {
    spread(app, &["--threads", "4"], APP_THREAD, None);
}

/// Single-threaded workers: a worker passes a connection on only between
/// requests or with a ready request, to the inbox of the worker the
/// scoreboard says is least loaded; a busy worker's watcher sends on only
/// the connections a request comes to. With the clients on one CPU and
/// rgun on the other (see `CpuSplit`), the busiest worker served at most
/// 1.43x its share in 30 runs native and 1.17x in 30 WSGI.
fn requests_spread_over_single_threaded_workers(app: App) {
    spread(app, &[], WATCHER_THREAD, None);
}

fn requests_through_nginx_spread_over_workers(app: App) {
    let dir = TempDir::new("spread-nginx");
    let socket = unique_socket_path("spread");
    spread(app, &["--threads", "4"], APP_THREAD, Some((&dir, &socket)));
    let _ = std::fs::remove_file(&socket);
}

/// Which CPUs the clients and the server run on in a spread test, on a
/// machine with two or more: the clients on the first this process may use,
/// rgun (master and workers) on the others.
///
/// Why: on a machine this small, a client thread and the worker it talks
/// to wake each other up, and the kernel keeps such a pair on one CPU,
/// where it runs ahead of the others (measured on 2 CPUs, 8 clients, 4
/// single-threaded WSGI workers: the busiest worker served a median 1.4x
/// its share with both sides on both CPUs, at most 1.16x in 12 runs with
/// the sides apart, and the server's choices were the same in both). What
/// is tested is how rgun spreads connections and requests, not how the
/// scheduler spreads the test's own threads; clients elsewhere than the
/// server is also how it is deployed.
struct CpuSplit {
    client: usize,
    /// `taskset -c` list.
    server: String,
}

impl CpuSplit {
    fn of_this_process() -> Option<CpuSplit> {
        // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity
        // writes at most its size into it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is valid for writes of its own size.
        let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
        if rc != 0 {
            return None;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below CPU_SETSIZE, the set's size.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect();
        let (&client, rest) = cpus.split_first()?;
        if rest.is_empty() {
            return None;
        }
        let server = rest
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Some(CpuSplit { client, server })
    }

    fn pin_this_thread_to_clients(&self) {
        // SAFETY: as in `of_this_process`.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `client` is below CPU_SETSIZE (it came from a set).
        unsafe { libc::CPU_SET(self.client, &mut set) };
        // SAFETY: pid 0 is the calling thread; `set` is a valid set.
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
        assert_eq!(rc, 0, "pinning a client thread to CPU {}", self.client);
    }
}

/// `SPREAD_CLIENTS` clients, each on its own keep-alive connection (to
/// rgun, or to nginx in front of it), each `SPREAD_REQUESTS` times
/// `GET /pid`: every worker serves some, none more than twice its share.
fn spread(app: App, args: &[&str], thread: &str, nginx: Option<(&TempDir, &Path)>) {
    let mut builder = app
        .builder()
        .args(["--workers", &SPREAD_WORKERS.to_string()])
        .args(KEEP_ALIVE)
        .args(args.iter().copied())
        .wait_for_workers(SPREAD_WORKERS);
    if let Some((_, socket)) = nginx {
        builder = builder.bind(format!("unix:{}", socket.display()));
    }
    let cpus = CpuSplit::of_this_process();
    if let Some(split) = &cpus {
        builder = builder.within(["taskset", "-c", &split.server]);
    }
    let server = builder.start();
    let workers = server.wait_for_workers(SPREAD_WORKERS);
    for &pid in &workers {
        wait_for_thread(pid, thread);
    }
    let nginx = nginx.map(|(dir, socket)| start_nginx(dir, socket));
    let connect = || match &nginx {
        Some(nginx) => Conn::tcp(nginx.addr()),
        None => server.connect(),
    };

    let per_client = concurrently(SPREAD_CLIENTS, |_| {
        if let Some(split) = &cpus {
            split.pin_this_thread_to_clients();
        }
        let mut conn = connect();
        (0..SPREAD_REQUESTS)
            .map(|_| ask_pid(&mut conn))
            .collect::<Vec<u32>>()
    });
    let mut counts: HashMap<u32, usize> = workers.iter().map(|&p| (p, 0)).collect();
    for pid in per_client.iter().flatten() {
        *counts
            .get_mut(pid)
            .unwrap_or_else(|| panic!("answered by {pid}, not one of the workers {workers:?}")) +=
            1;
    }
    let total = SPREAD_CLIENTS * SPREAD_REQUESTS;
    let share = total / SPREAD_WORKERS;
    let tally: Vec<usize> = workers.iter().map(|p| counts[p]).collect();
    eprintln!(
        "requests per worker ({} args {args:?}{}): {tally:?}",
        match app {
            App::Native => "native",
            App::Wsgi => "wsgi",
        },
        if nginx.is_some() {
            ", through nginx"
        } else {
            ""
        }
    );
    for (pid, &count) in workers.iter().zip(&tally) {
        assert!(
            count > 0 && count <= 2 * share,
            "worker {pid} served {count} of {total} requests (its share: {share}); \
             per worker: {tally:?}"
        );
    }
}
