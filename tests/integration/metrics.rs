//! `--metrics-bind` as an operator and their tools see it: the counters
//! match the requests a test sent, restarts are counted by reason, `/readyz`
//! turns unready at `TERM` while the server still takes connections, the
//! metrics process shrugs off malformed scrapes and is replaced when it
//! dies. The tools are real: `prometheus_client`'s parser, Debian's
//! `prometheus` scraping rgun, and headless Chromium on the status page
//! (`metrics_tools.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::harness::{Conn, Server, WAIT, get, process_exists, request, testapp, wait_until};

/// Start the native test application with `--metrics-bind` on a free port
/// and the given arguments; wait for `workers` boots. Returns the server and
/// the metrics address it logged.
pub fn start(workers: usize, args: &[&str]) -> (Server, SocketAddr) {
    let server = Server::builder(testapp())
        .args(["--metrics-bind", "127.0.0.1:0"])
        .args(["--workers", &workers.to_string()])
        .args(args.iter().copied())
        .wait_for_workers(workers)
        .start();
    let addr = metrics_addr(&server);
    (server, addr)
}

/// The address of the master's "Metrics at: http://ADDR (PID)" line.
pub fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.wait_for_log("Metrics at: http://", WAIT);
    let rest = line.split("Metrics at: http://").nth(1).unwrap();
    rest.split(' ')
        .next()
        .unwrap()
        .parse()
        .expect("a metrics address")
}

/// `GET path` on the metrics listener, on a fresh connection.
pub fn fetch(addr: SocketAddr, path: &str) -> crate::harness::Response {
    Conn::tcp(addr).request(&get(path))
}

/// The scrape's text.
pub fn scrape(addr: SocketAddr) -> String {
    let response = fetch(addr, "/metrics");
    response.assert_status(200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    response.text()
}

/// Each sample of a scrape by its series as written (`name{labels}`).
pub fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|e| panic!("{l:?}: {e}")),
            };
            (series.to_string(), value)
        })
        .collect()
}

/// One series' value in a fresh scrape (0 when absent).
pub fn value(addr: SocketAddr, series: &str) -> f64 {
    samples(&scrape(addr)).get(series).copied().unwrap_or(0.0)
}

fn requests_series(code: &str, method: &str) -> String {
    format!("rgun_requests_total{{code=\"{code}\",method=\"{method}\"}}")
}

fn restarts_series(reason: &str) -> String {
    format!("rgun_worker_restarts_total{{reason=\"{reason}\"}}")
}

#[test]
fn counters_match_the_requests_sent_by_class_and_method() {
    let (server, metrics) = start(2, &[]);
    let mut sent_bytes = 0usize;
    let mut received_bytes = 0usize;
    let mut send = |bytes: Vec<u8>, status: u16| {
        sent_bytes += bytes.len();
        let mut conn = server.connect();
        conn.send(&bytes);
        let response = if bytes.starts_with(b"HEAD ") {
            conn.read_head_response()
        } else {
            conn.read_response()
        };
        response.assert_status(status);
        received_bytes += response.raw.len();
    };
    for _ in 0..3 {
        send(get("/"), 200);
    }
    send(request("HEAD", "/", &[], b""), 200);
    send(request("POST", "/upload", &[], b"twelve bytes"), 200);
    send(request("POST", "/status?code=404", &[], b""), 404);
    send(request("PUT", "/status?code=503", &[], b""), 503);
    send(request("BREW", "/status?code=302", &[], b""), 302);
    // Refused before the application: counted with the server's answer.
    send(
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n".to_vec(),
        400,
    );
    let sent = 9.0;
    wait_until("the scrape counts every request", || {
        value(metrics, "rgun_request_duration_seconds_count") >= sent
    });
    wait_until("both workers have loaded the application", || {
        value(metrics, "rgun_workers{state=\"idle\"}") == 2.0
    });
    let all = samples(&scrape(metrics));
    let expected = [
        ("2xx", "GET", 3.0),
        ("2xx", "HEAD", 1.0),
        ("2xx", "POST", 1.0),
        ("4xx", "POST", 1.0),
        ("5xx", "PUT", 1.0),
        ("3xx", "other", 1.0),
        ("4xx", "GET", 1.0),
    ];
    let mut total = 0.0;
    for (series, count) in all
        .iter()
        .filter(|(s, _)| s.starts_with("rgun_requests_total{"))
    {
        let want = expected
            .iter()
            .find(|(c, m, _)| *series == requests_series(c, m))
            .map_or(0.0, |(_, _, n)| *n);
        assert_eq!(*count, want, "{series}");
        total += count;
    }
    assert_eq!(total, sent);
    assert_eq!(all["rgun_request_duration_seconds_count"], sent);
    assert_eq!(
        all["rgun_request_duration_seconds_bucket{le=\"+Inf\"}"],
        sent
    );
    assert!(all["rgun_request_duration_seconds_sum"] > 0.0);
    // The buckets are cumulative.
    let mut buckets: Vec<f64> = all
        .iter()
        .filter(|(s, _)| s.starts_with("rgun_request_duration_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    let unsorted = buckets.clone();
    buckets.sort_by(f64::total_cmp);
    assert_eq!(buckets.len(), 17, "{unsorted:?}");
    // Every byte each way: heads, bodies, and the server's own answer.
    assert_eq!(all["rgun_request_bytes_total"], sent_bytes as f64);
    assert_eq!(all["rgun_response_bytes_total"], received_bytes as f64);
    assert_eq!(all["rgun_workers{state=\"idle\"}"], 2.0);
    assert_eq!(all["rgun_workers_wanted"], 2.0);
    assert_eq!(all["rgun_requests_in_flight"], 0.0);
    assert_eq!(all["rgun_ready"], 1.0);
    let queue = format!(
        "rgun_listen_queue_limit{{listener=\"http://{}\"}}",
        server.addr()
    );
    assert_eq!(all[&queue], 2048.0, "--backlog's default");
    for role in ["master", "workers", "metrics"] {
        let rss = format!("process_resident_memory_bytes{{role=\"{role}\"}}");
        assert!(all[&rss] > 0.0, "{rss}");
        assert!(all.contains_key(&format!("process_cpu_seconds_total{{role=\"{role}\"}}")));
    }
}

#[test]
fn in_flight_requests_and_a_busy_worker_show_while_a_call_runs() {
    let (server, metrics) = start(2, &[]);
    let mut slow = server.connect();
    slow.send(&get("/sleep?ms=60000"));
    wait_until("one worker busy, the other loaded and idle", || {
        let all = samples(&scrape(metrics));
        all["rgun_requests_in_flight"] == 1.0 && all["rgun_workers{state=\"idle\"}"] == 1.0
    });
    let all = samples(&scrape(metrics));
    assert_eq!(all["rgun_workers{state=\"busy\"}"], 1.0);
    assert_eq!(all["rgun_workers{state=\"idle\"}"], 1.0);
    let status = fetch(metrics, "/status.json").json();
    let busy: Vec<_> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "busy")
        .collect();
    assert_eq!(busy.len(), 1, "{status:#}");
    assert_eq!(busy[0]["request"]["line"], "GET /sleep?ms=60000");
    assert!(busy[0]["request"]["seconds"].as_f64().unwrap() >= 0.0);
}

#[test]
fn a_crash_is_counted_and_the_counters_do_not_go_backwards() {
    let (server, metrics) = start(1, &[]);
    for _ in 0..5 {
        server.get("/").assert_status(200);
    }
    wait_until("five requests counted", || {
        value(metrics, &requests_series("2xx", "GET")) == 5.0
    });
    let victim = server.wait_for_workers(1)[0];
    // SAFETY: kill(2) on the worker the server logged.
    unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
    let replacement = server.wait_for_workers(2)[1];
    assert_ne!(replacement, victim);
    wait_until("the crash is counted", || {
        value(metrics, &restarts_series("crash")) == 1.0
    });
    let all = samples(&scrape(metrics));
    assert_eq!(
        all[&requests_series("2xx", "GET")],
        5.0,
        "kept after the crash"
    );
    assert_eq!(all["rgun_request_duration_seconds_count"], 5.0);
    for reason in ["timeout", "max-requests", "memory", "reload"] {
        assert_eq!(all[&restarts_series(reason)], 0.0, "{reason}");
    }
    server.get("/").assert_status(200);
    wait_until("the new worker's request adds up", || {
        value(metrics, &requests_series("2xx", "GET")) == 6.0
    });
}

#[test]
fn a_timeout_is_counted() {
    let (server, metrics) = start(1, &["--timeout", "2"]);
    let mut conn = server.connect();
    conn.send(&get("/sleep?ms=60000"));
    conn.read_response().assert_status(504);
    wait_until("the timeout is counted", || {
        value(metrics, &restarts_series("timeout")) == 1.0
    });
    assert_eq!(value(metrics, &restarts_series("crash")), 0.0);
}

#[test]
fn a_max_requests_recycle_and_a_reload_are_counted() {
    let (server, metrics) = start(1, &["--max-requests", "3"]);
    for _ in 0..3 {
        server.get("/").assert_status(200);
    }
    wait_until("the recycle is counted", || {
        value(metrics, &restarts_series("max-requests")) == 1.0
    });
    server.wait_for_log("has booted; stopping worker", WAIT);
    server.signal(libc::SIGHUP);
    wait_until("the reload is counted", || {
        value(metrics, &restarts_series("reload")) == 1.0
    });
    let all = samples(&scrape(metrics));
    assert_eq!(all[&restarts_series("crash")], 0.0);
    assert_eq!(all[&restarts_series("timeout")], 0.0);
}

#[test]
fn readyz_turns_unready_at_term_while_connections_are_still_taken() {
    let (mut server, metrics) = start(1, &[]);
    wait_until("/readyz says ready", || {
        fetch(metrics, "/readyz").status == 200
    });
    fetch(metrics, "/healthz").assert_status(200);
    // A slow call keeps the server in its stopping phase.
    let mut slow = server.connect();
    slow.send(&get("/sleep?ms=60000"));
    wait_until("the call is in flight", || {
        value(metrics, "rgun_requests_in_flight") == 1.0
    });
    server.signal(libc::SIGTERM);
    wait_until("/readyz says the server is stopping", || {
        fetch(metrics, "/readyz").status == 503
    });
    let answer = fetch(metrics, "/readyz");
    assert_eq!(answer.text(), "not ready: the server is stopping\n");
    // The master is alive, and the listener still takes connections (they
    // wait in its queue): a load balancer has time to stop sending.
    fetch(metrics, "/healthz").assert_status(200);
    assert!(std::net::TcpStream::connect(server.addr()).is_ok());
    assert_eq!(value(metrics, "rgun_ready"), 0.0);
    assert_eq!(value(metrics, "rgun_requests_in_flight"), 1.0);
    server.signal(libc::SIGINT);
    server.wait_exit(WAIT);
}

#[test]
fn readyz_waits_for_a_worker_that_serves() {
    // WINCH (honoured without a terminal) stops the workers and keeps the
    // master.
    let server = Server::builder(testapp())
        .args(["--metrics-bind", "127.0.0.1:0"])
        .new_session()
        .wait_for_workers(1)
        .start();
    let metrics = metrics_addr(&server);
    // Ready once the worker has loaded the application (its boot is logged
    // at fork, before).
    wait_until("/readyz says ready", || {
        fetch(metrics, "/readyz").status == 200
    });
    server.signal(libc::SIGWINCH);
    wait_until("/readyz says no worker serves", || {
        fetch(metrics, "/readyz").status == 503
    });
    assert_eq!(
        fetch(metrics, "/readyz").text(),
        "not ready: no worker serves the application\n"
    );
    fetch(metrics, "/healthz").assert_status(200);
}

#[test]
fn malformed_scrapes_get_400_and_the_metrics_process_lives_on() {
    let (server, metrics) = start(1, &[]);
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n",
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    ] {
        let mut conn = Conn::tcp(metrics);
        let response = conn.request(bad);
        assert_eq!(response.status, 400, "{:?}", String::from_utf8_lossy(bad));
        assert!(response.connection_has("close"));
        conn.assert_closed();
    }
    // A head larger than the metrics process reads.
    let mut conn = Conn::tcp(metrics);
    let huge = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(40_000));
    conn.request(huge.as_bytes()).assert_status(400);
    let mut conn = Conn::tcp(metrics);
    conn.request(&request("POST", "/metrics", &[], b""))
        .assert_status(405);
    fetch(metrics, "/nowhere").assert_status(404);
    // Keep-alive: several answers on one connection.
    let mut conn = Conn::tcp(metrics);
    for path in ["/healthz", "/readyz", "/metrics", "/status.json", "/"] {
        conn.request(&get(path)).assert_status(200);
    }
    conn.send(&request("HEAD", "/metrics", &[], b""));
    let head = conn.read_head_response();
    head.assert_status(200);
    assert!(head.body.is_empty());
    assert!(
        !server.stderr.text().contains("Metrics process (pid:"),
        "the metrics process died:\n{}",
        server.stderr.text()
    );
}

/// Clients that start a request and never finish it (slow or hostile)
/// cannot lock a probe out: past the metrics process's 32 connections, a
/// new one takes the place of the one waiting longest for its request.
/// (Connections that send nothing never reach it: TCP_DEFER_ACCEPT.)
#[test]
fn slow_senders_do_not_lock_out_a_probe() {
    use std::io::Write;
    let (_server, metrics) = start(1, &[]);
    let slow: Vec<std::net::TcpStream> = (0..40)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(metrics).expect("connect");
            stream.write_all(b"G").expect("one byte");
            stream
        })
        .collect();
    fetch(metrics, "/healthz").assert_status(200);
    // The probe was answered because slow ones made room, not because
    // they all timed out: most are still open (a read would block).
    let open = slow
        .iter()
        .filter(|stream| {
            stream.set_nonblocking(true).expect("non-blocking");
            let mut byte = [0u8; 1];
            matches!(
                std::io::Read::read(&mut &**stream, &mut byte),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            )
        })
        .count();
    assert!(
        open >= 20,
        "{open} of the 40 slow connections are still open"
    );
}

#[test]
fn a_dead_metrics_process_is_replaced_and_nothing_is_lost() {
    let (server, metrics) = start(1, &[]);
    for _ in 0..4 {
        server.get("/").assert_status(200);
    }
    wait_until("four requests counted", || {
        value(metrics, &requests_series("2xx", "GET")) == 4.0
    });
    let line = server.wait_for_log("Booting metrics process with pid: ", WAIT);
    let pid: u32 = line.rsplit(' ').next().unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) on the metrics process the master logged.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    server.wait_for_log(&format!("Metrics process (pid:{pid}) was killed"), WAIT);
    wait_until("the dead metrics process is reaped", || {
        !process_exists(pid)
    });
    // The socket stayed open in the master: the next scrape waits in its
    // queue for the replacement.
    assert_eq!(value(metrics, &requests_series("2xx", "GET")), 4.0);
    let boots = server
        .stderr
        .text()
        .matches("Booting metrics process with pid: ")
        .count();
    assert_eq!(boots, 2);
    server.get("/").assert_status(200);
}

#[test]
fn metrics_on_a_unix_socket_report_a_unix_listen_queue() {
    let app_socket = crate::harness::unique_socket_path("metrics-app");
    let metrics_socket = crate::harness::unique_socket_path("metrics");
    let server = Server::builder(testapp())
        .bind(format!("unix:{}", app_socket.display()))
        .arg("--metrics-bind")
        .arg(format!("unix:{}", metrics_socket.display()))
        .args(["--backlog", "77"])
        .wait_for_workers(1)
        .start();
    server.wait_for_log("Metrics at: unix:", WAIT);
    let response = Conn::unix(&metrics_socket).request(&get("/metrics"));
    response.assert_status(200);
    let all = samples(&response.text());
    let series = |name: &str| format!("{name}{{listener=\"unix:{}\"}}", app_socket.display());
    assert_eq!(all[&series("rgun_listen_queue_limit")], 77.0);
    assert_eq!(all[&series("rgun_listen_queue_length")], 0.0);
}

#[test]
fn a_bad_metrics_address_is_one_error_line() {
    let mut server = Server::builder(testapp())
        .args(["--metrics-bind", "127.0.0.1:notaport"])
        .spawn();
    let status = server.wait_exit(WAIT);
    assert!(!status.success());
    let log = server.stderr.text();
    assert!(
        log.contains("invalid --metrics-bind \"127.0.0.1:notaport\""),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_memory_recycle_is_counted() {
    // Every worker is over 1 MiB: each is recycled once its successor runs.
    let (_server, metrics) = start(1, &["--max-worker-memory", "1"]);
    wait_until("a memory recycle is counted", || {
        value(metrics, &restarts_series("memory")) >= 1.0
    });
    assert_eq!(value(metrics, &restarts_series("crash")), 0.0);
}

/// The pid of the master whose metrics process answers now.
fn answering_master(metrics: SocketAddr) -> u64 {
    fetch(metrics, "/status.json").json()["master"]["pid"]
        .as_u64()
        .expect("the master's pid")
}

#[test]
fn usr2_hands_the_metrics_socket_to_the_new_master() {
    let server = Server::builder(testapp())
        .new_session()
        .args(["--metrics-bind", "127.0.0.1:0"])
        .wait_for_workers(1)
        .start();
    let metrics = metrics_addr(&server);
    let old_master = server.pid();
    assert_eq!(answering_master(metrics), u64::from(old_master));
    server.signal(libc::SIGUSR2);
    let line = server.wait_for_log(&format!("Upgrading the master of pid {old_master}"), WAIT);
    let new_master = crate::harness::log_line_pid(&line).expect("the new master's pid");
    // The old master's metrics process left: every answer is the new one's.
    wait_until("the new master's metrics process answers", || {
        answering_master(metrics) == u64::from(new_master)
    });
    wait_until("the new master is ready", || {
        fetch(metrics, "/readyz").status == 200
    });
    for _ in 0..3 {
        assert_eq!(answering_master(metrics), u64::from(new_master));
    }
}

#[test]
fn a_preload_reload_serves_the_same_metrics_address() {
    let (server, metrics) = start(1, &["--preload"]);
    wait_until("/readyz says ready", || {
        fetch(metrics, "/readyz").status == 200
    });
    server.signal(libc::SIGHUP);
    // The new image adopts the socket and starts its own metrics process.
    server
        .stderr
        .wait_for_count("Booting metrics process with pid: ", 2, WAIT);
    wait_until("/readyz says ready again", || {
        fetch(metrics, "/readyz").status == 200
    });
    assert_eq!(answering_master(metrics), u64::from(server.pid()));
    assert_eq!(value(metrics, &restarts_series("crash")), 0.0);
}

#[test]
fn requests_to_a_wsgi_application_are_counted_too() {
    let server = crate::harness::App::Wsgi
        .builder()
        .args(["--metrics-bind", "127.0.0.1:0"])
        .wait_for_workers(1)
        .start();
    let metrics = metrics_addr(&server);
    server.get("/").assert_status(200);
    server
        .connect()
        .request(&request("DELETE", "/status?code=500", &[], b""))
        .assert_status(500);
    wait_until("both requests counted", || {
        value(metrics, "rgun_request_duration_seconds_count") == 2.0
    });
    let all = samples(&scrape(metrics));
    assert_eq!(all[&requests_series("2xx", "GET")], 1.0);
    assert_eq!(all[&requests_series("5xx", "DELETE")], 1.0);
}

#[test]
fn healthz_fails_while_the_master_is_stuck() {
    let (server, metrics) = start(1, &[]);
    fetch(metrics, "/healthz").assert_status(200);
    // A stopped master turns its loop no more: its heartbeat in the
    // scoreboard ages past the limit (10 s), while the metrics process and
    // the workers run on.
    server.signal(libc::SIGSTOP);
    crate::harness::wait_until_within(
        "/healthz says the master is silent",
        std::time::Duration::from_secs(60),
        || fetch(metrics, "/healthz").status == 503,
    );
    let answer = fetch(metrics, "/healthz").text();
    assert!(
        answer.starts_with("the master has been silent for "),
        "{answer}"
    );
    server.get("/").assert_status(200);
    server.signal(libc::SIGCONT);
    wait_until("/healthz says ok again", || {
        fetch(metrics, "/healthz").status == 200
    });
}
