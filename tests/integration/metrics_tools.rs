//! `--metrics-bind` read by the real tools: `prometheus_client`'s parser
//! (installed into `target/test-venv` by `.ci/run`), Debian's `prometheus`
//! scraping rgun, and Debian's headless `chromium` on the status page.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{Conn, TempDir, get, wait_until, wait_until_within};
use crate::metrics::{fetch, scrape, start, value};
use crate::wsgi_harness::test_venv;

/// Prometheus opens its database and web server before it scrapes: more
/// than `WAIT` on a loaded machine. A bound, never a measure.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(90);

#[test]
fn the_scrape_parses_with_prometheus_client() {
    let (server, metrics) = start(2, &[]);
    server.get("/").assert_status(200);
    server
        .connect()
        .request(&crate::harness::request(
            "POST",
            "/status?code=500",
            &[],
            b"",
        ))
        .assert_status(500);
    wait_until("both requests counted", || {
        value(metrics, "rgun_request_duration_seconds_count") == 2.0
    });
    let text = scrape(metrics);
    let python = test_venv().join("bin/python");
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out[family.name] = {
        "type": family.type,
        "samples": [[s.name, s.labels, s.value] for s in family.samples],
    }
print(json.dumps(out))
"#;
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client refused the scrape ({}):\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let families: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let kind = |name: &str| {
        families[name]["type"]
            .as_str()
            .unwrap_or("missing")
            .to_string()
    };
    // The parser names a counter family without its `_total`.
    assert_eq!(kind("rgun_requests"), "counter");
    assert_eq!(kind("rgun_request_duration_seconds"), "histogram");
    assert_eq!(kind("rgun_requests_in_flight"), "gauge");
    assert_eq!(kind("rgun_workers"), "gauge");
    assert_eq!(kind("rgun_worker_restarts"), "counter");
    assert_eq!(kind("rgun_connections_open"), "gauge");
    assert_eq!(kind("rgun_request_bytes"), "counter");
    assert_eq!(kind("rgun_response_bytes"), "counter");
    assert_eq!(kind("rgun_listen_queue_length"), "gauge");
    assert_eq!(kind("process_cpu_seconds"), "counter");
    assert_eq!(kind("process_resident_memory_bytes"), "gauge");
    assert_eq!(kind("process_open_fds"), "gauge");
    let histogram = families["rgun_request_duration_seconds"]["samples"]
        .as_array()
        .unwrap();
    let sample = |name: &str, le: Option<&str>| {
        histogram
            .iter()
            .find(|s| s[0] == name && le.is_none_or(|le| s[1]["le"] == le))
            .map(|s| s[2].as_f64().unwrap())
    };
    assert_eq!(
        sample("rgun_request_duration_seconds_count", None),
        Some(2.0)
    );
    assert_eq!(
        sample("rgun_request_duration_seconds_bucket", Some("+Inf")),
        Some(2.0)
    );
    let errors = families["rgun_requests"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[1]["code"] == "5xx" && s[1]["method"] == "POST")
        .map(|s| s[2].as_f64().unwrap());
    assert_eq!(errors, Some(1.0));
}

/// A port nobody listens on now (the kernel's choice).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /api/v1/query?query=QUERY` on Prometheus: its result vector, or
/// `None` while it does not answer yet.
fn query(prometheus: SocketAddr, query: &str) -> Option<Vec<serde_json::Value>> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let mut conn = Conn::try_tcp(prometheus).ok()?;
    let response = conn.request(&get(&format!("/api/v1/query?query={encoded}")));
    if response.status != 200 {
        return None;
    }
    let body = response.json();
    assert_eq!(body["status"], "success", "{body:#}");
    body["data"]["result"].as_array().cloned()
}

/// The single value of a one-series result.
fn single(result: &[serde_json::Value]) -> Option<f64> {
    match result {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

#[test]
fn prometheus_scrapes_rgun() {
    let (server, metrics) = start(1, &[]);
    for _ in 0..3 {
        server.get("/").assert_status(200);
    }
    let dir = TempDir::new("prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: rgun\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prometheus = Reaped(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run prometheus (Debian's prometheus package; .ci/run installs it)"),
    );
    let log_text = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    wait_until_within("Prometheus scraped rgun (up == 1)", PROMETHEUS_WAIT, || {
        query(web, "up{job=\"rgun\"}").is_some_and(|r| single(&r) == Some(1.0))
    });
    let series = "rgun_requests_total{code=\"2xx\",method=\"GET\"}";
    wait_until_within("Prometheus has rgun's counter", PROMETHEUS_WAIT, || {
        query(web, series).is_some_and(|r| single(&r) == Some(3.0))
    });
    let histogram = "rgun_request_duration_seconds_count";
    let count = query(web, histogram).and_then(|r| single(&r));
    assert_eq!(count, Some(3.0), "{}", log_text());
    // Prometheus found nothing to complain about in the exposition.
    let samples = query(web, "scrape_samples_scraped{job=\"rgun\"}").and_then(|r| single(&r));
    assert!(
        samples.is_some_and(|n| n > 50.0),
        "{samples:?}\n{}",
        log_text()
    );
}

/// Run headless Chromium on `url` and return its DOM after the page's
/// scripts ran (`--virtual-time-budget`) and its log (console messages are
/// the lines with `:CONSOLE`).
fn chromium(url: &str) -> (String, String) {
    let profile = TempDir::new("chromium");
    let output = Command::new("timeout")
        .arg("120")
        .arg("chromium")
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--virtual-time-budget=5000",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.join("profile").display()
        ))
        .arg(url)
        .output()
        .expect("run chromium (Debian's chromium package; .ci/run installs it)");
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "chromium failed:\n{log}");
    (String::from_utf8_lossy(&output.stdout).into_owned(), log)
}

fn console_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

#[test]
fn the_status_page_shows_the_workers_and_a_busy_request_in_chromium() {
    // The check below can see a console error: a page that makes one.
    let (_, log) = chromium("data:text/html,<script>console.error('seen')</script>");
    assert_eq!(console_lines(&log).len(), 1, "{log}");

    let (server, metrics) = start(2, &[]);
    let mut slow = server.connect();
    slow.send(&get("/sleep?ms=60000"));
    wait_until("a worker is busy with the slow request", || {
        fetch(metrics, "/status.json").json()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["request"]["line"] == "GET /sleep?ms=60000")
    });
    let (dom, log) = chromium(&format!("http://{metrics}/"));
    assert!(
        console_lines(&log).is_empty(),
        "console messages: {:#?}",
        console_lines(&log)
    );
    let rows: Vec<&str> = dom.split("<tr class=\"worker ").skip(1).collect();
    assert_eq!(rows.len(), 2, "{dom}");
    let busy: Vec<&&str> = rows.iter().filter(|r| r.starts_with("busy")).collect();
    assert_eq!(busy.len(), 1, "{dom}");
    assert!(busy[0].contains("GET /sleep?ms=60000"), "{dom}");
    assert!(rows.iter().any(|r| r.starts_with("idle")), "{dom}");
    assert!(dom.contains("master alive"), "{dom}");
    assert!(dom.contains(">ready<"), "{dom}");
    // The configuration in force, and the restarts.
    assert!(dom.contains("<td>timeout</td><td>30 s</td>"), "{dom}");
    assert!(dom.contains("<td>max-requests</td>"), "{dom}");
}
