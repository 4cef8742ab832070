//! The Prometheus text exposition format (version 0.0.4): a `HELP` and a
//! `TYPE` line per family, label values escaped, histograms as cumulative
//! `_bucket` series ending with `le="+Inf"`, then `_sum` and `_count`.

use std::fmt::Write;

use super::Sources;
use super::procstat::{self, ProcStat};
use super::queue;
use super::snapshot::{Snapshot, WorkerState};
use crate::sockets::{self, BindAddr};
use rgun_worker::scoreboard::metrics::{DURATION_BUCKETS_SECONDS, METHODS, STATUS_CLASSES};

/// A `process_*` family: its name, help, and how to read it from a
/// process's `/proc/PID/stat`.
type StatFamily = (&'static str, &'static str, fn(&ProcStat) -> f64);
/// The same, read from elsewhere in `/proc/PID`.
type PidFamily = (&'static str, &'static str, fn(i32) -> Option<u64>);

/// One metric family being written.
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(val));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }
}

/// Backslash and newline, as `HELP` text wants them.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Backslash, double quote and newline, as label values want them.
pub fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Integers without a fraction, the rest as Rust writes floats (which
/// Prometheus' parser reads), and the special values by their names.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// The whole scrape.
pub fn render(snapshot: &Snapshot, sources: &Sources<'_>) -> String {
    let mut out = Out {
        text: String::with_capacity(8192),
    };
    requests(&mut out, snapshot);
    workers(&mut out, snapshot);
    listen_queues(&mut out, sources);
    processes(&mut out, snapshot, sources.master_pid);
    out.text
}

fn requests(out: &mut Out, snapshot: &Snapshot) {
    let totals = &snapshot.totals;
    out.family(
        "rgun_requests_total",
        "counter",
        "Requests answered, by status class and method (methods outside the list count as other).",
    );
    for (c, class) in STATUS_CLASSES.iter().enumerate() {
        for (m, method) in METHODS.iter().enumerate() {
            out.sample(
                "rgun_requests_total",
                &[("code", class), ("method", method)],
                totals.requests[c][m] as f64,
            );
        }
    }
    out.family(
        "rgun_request_duration_seconds",
        "histogram",
        "Time from handing a request to the application to its answer being complete.",
    );
    let mut cumulative = 0u64;
    for (i, count) in totals.duration.iter().enumerate() {
        cumulative += count;
        let le = DURATION_BUCKETS_SECONDS
            .get(i)
            .map_or("+Inf".to_string(), |b| b.to_string());
        out.sample(
            "rgun_request_duration_seconds_bucket",
            &[("le", &le)],
            cumulative as f64,
        );
    }
    out.sample(
        "rgun_request_duration_seconds_sum",
        &[],
        totals.duration_sum_ns as f64 / 1e9,
    );
    out.sample(
        "rgun_request_duration_seconds_count",
        &[],
        cumulative as f64,
    );
    out.family(
        "rgun_requests_in_flight",
        "gauge",
        "Requests in the application's hands now.",
    );
    out.sample("rgun_requests_in_flight", &[], snapshot.in_flight() as f64);
    out.family(
        "rgun_connections_open",
        "gauge",
        "Client connections the workers hold.",
    );
    out.sample("rgun_connections_open", &[], snapshot.connections() as f64);
    out.family(
        "rgun_request_bytes_total",
        "counter",
        "Bytes of requests received: heads and (decoded) bodies.",
    );
    out.sample("rgun_request_bytes_total", &[], totals.request_bytes as f64);
    out.family(
        "rgun_response_bytes_total",
        "counter",
        "Bytes of responses sent: heads and bodies, before chunked framing.",
    );
    out.sample(
        "rgun_response_bytes_total",
        &[],
        totals.response_bytes as f64,
    );
}

fn workers(out: &mut Out, snapshot: &Snapshot) {
    out.family("rgun_workers", "gauge", "Worker processes, by state.");
    for state in WorkerState::ALL {
        let count = snapshot.workers.iter().filter(|w| w.state == state).count();
        out.sample("rgun_workers", &[("state", state.label())], count as f64);
    }
    out.family(
        "rgun_workers_wanted",
        "gauge",
        "Worker processes wanted (--workers, changed by TTIN and TTOU).",
    );
    out.sample("rgun_workers_wanted", &[], snapshot.wanted as f64);
    out.family(
        "rgun_worker_restarts_total",
        "counter",
        "Workers replaced by the master, by reason.",
    );
    for (reason, count) in &snapshot.restarts {
        out.sample(
            "rgun_worker_restarts_total",
            &[("reason", reason.label())],
            *count as f64,
        );
    }
    out.family(
        "rgun_ready",
        "gauge",
        "1 when /readyz answers 200: a worker has loaded the application and the server is not stopping.",
    );
    let ready = snapshot.readiness == super::snapshot::Readiness::Ready;
    out.sample("rgun_ready", &[], if ready { 1.0 } else { 0.0 });
}

fn listen_queues(out: &mut Out, sources: &Sources<'_>) {
    let queues: Vec<(String, queue::Queue)> = sources
        .listeners
        .iter()
        .filter_map(|l| {
            let read = match l.addr {
                BindAddr::Tcp(_) => queue::tcp(l.fd()),
                BindAddr::Unix(_) => queue::unix(l.fd()),
            };
            read.ok().map(|q| (sockets::describe(&l.addr), q))
        })
        .collect();
    out.family(
        "rgun_listen_queue_length",
        "gauge",
        "Connections waiting in a listening socket's queue for a worker to accept them.",
    );
    for (name, q) in &queues {
        out.sample(
            "rgun_listen_queue_length",
            &[("listener", name)],
            f64::from(q.waiting),
        );
    }
    out.family(
        "rgun_listen_queue_limit",
        "gauge",
        "The most connections a listening socket's queue holds (--backlog, capped by net.core.somaxconn).",
    );
    for (name, q) in &queues {
        out.sample(
            "rgun_listen_queue_limit",
            &[("listener", name)],
            f64::from(q.limit),
        );
    }
}

/// The `process_*` metrics of Prometheus' client libraries, with a `role`
/// label: the master, the workers (summed) and this metrics process.
fn processes(out: &mut Out, snapshot: &Snapshot, master_pid: i32) {
    let master = procstat::stat(master_pid);
    let own_pid = std::process::id() as i32;
    let own = procstat::stat(own_pid);
    let worker_pids: Vec<i32> = snapshot
        .workers
        .iter()
        .map(|w| w.pid)
        .filter(|p| *p > 0)
        .collect();
    let worker_stats: Vec<ProcStat> = worker_pids
        .iter()
        .filter_map(|p| procstat::stat(*p))
        .collect();
    let sum = |f: fn(&ProcStat) -> f64| -> f64 { worker_stats.iter().map(f).sum() };
    // Reaped workers' CPU time stays counted (the master's `cutime`), so
    // that the counter does not fall when a worker is replaced.
    let workers_cpu =
        sum(|s| s.cpu_seconds) + master.map_or(0.0, |m| m.reaped_children_cpu_seconds);
    let roles = [("master", master), ("metrics", own)];
    out.family(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time, in seconds (workers: the live ones and every one reaped).",
    );
    for (role, stat) in roles {
        if let Some(s) = stat {
            out.sample(
                "process_cpu_seconds_total",
                &[("role", role)],
                s.cpu_seconds,
            );
        }
    }
    out.sample(
        "process_cpu_seconds_total",
        &[("role", "workers")],
        workers_cpu,
    );
    let gauges: [StatFamily; 3] = [
        (
            "process_resident_memory_bytes",
            "Resident memory size, in bytes (workers: summed, shared pages counted in each).",
            |s| s.resident_bytes as f64,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size, in bytes (workers: summed).",
            |s| s.virtual_bytes as f64,
        ),
        (
            "process_start_time_seconds",
            "Start time since the Unix epoch, in seconds (workers: the oldest live one).",
            |s| s.start_time_seconds,
        ),
    ];
    for (name, help, value) in gauges {
        out.family(name, "gauge", help);
        for (role, stat) in roles {
            if let Some(s) = stat {
                out.sample(name, &[("role", role)], value(&s));
            }
        }
        let workers = if name == "process_start_time_seconds" {
            worker_stats.iter().map(value).reduce(f64::min)
        } else {
            Some(sum(value))
        };
        if let Some(v) = workers {
            out.sample(name, &[("role", "workers")], v);
        }
    }
    descriptors(out, master_pid, own_pid, &worker_pids);
}

/// `process_open_fds` and `process_max_fds`, where this process may look.
fn descriptors(out: &mut Out, master_pid: i32, own_pid: i32, workers: &[i32]) {
    let families: [PidFamily; 2] = [
        (
            "process_open_fds",
            "Open file descriptors (workers: summed).",
            procstat::open_fds,
        ),
        (
            "process_max_fds",
            "The limit on open file descriptors (workers: the lowest).",
            procstat::max_fds,
        ),
    ];
    for (name, help, read) in families {
        out.family(name, "gauge", help);
        for (role, pid) in [("master", master_pid), ("metrics", own_pid)] {
            if let Some(v) = read(pid) {
                out.sample(name, &[("role", role)], v as f64);
            }
        }
        let values = workers.iter().filter_map(|p| read(*p));
        let workers = if name == "process_open_fds" {
            Some(values.sum::<u64>())
        } else {
            values.min()
        };
        if let Some(v) = workers {
            out.sample(name, &[("role", "workers")], v as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_numbers_are_written_as_prometheus_reads_them() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }
}
