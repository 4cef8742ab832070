//! What the scoreboard counts for `--metrics-bind`: per slot, requests by
//! status class and method, a latency histogram and bytes; in the header,
//! worker restarts by reason and the master's phase and heartbeat.
//!
//! A slot's counters are never reset, not even when the master gives the
//! slot to a new worker: each slot's counters only grow over the master's
//! life, so their sum (what the metrics process exports) never goes
//! backwards when a worker dies or is replaced, and no one has to fold a
//! reaped worker's counts anywhere (which would race with a scrape reading
//! both the fold and the slot). Each counter has one writer at a time: the
//! worker owning the slot (its threads with atomic adds).

use std::sync::atomic::{AtomicU64, Ordering};

/// The `method` label's values: the methods of RFC 9110 §9 a web
/// application sees, then `other` for the rest (extension methods, and the
/// requests refused before their method was read), so that a client cannot
/// grow the number of series.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];
/// The `code` label's values: the status class.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The latency histogram's upper bounds, in seconds, for `le`: from 100 µs
/// (a native application answers in microseconds) to 10 s (Prometheus'
/// client libraries' default buckets stop there too).
pub const DURATION_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// The same bounds in nanoseconds, for the request path.
const DURATION_BUCKETS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Why the master replaced a worker: the `reason` label of
/// `rgun_worker_restarts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartReason {
    /// It died without being asked to (a signal, a non-zero exit).
    Crash,
    /// `--timeout` aborted it.
    Timeout,
    MaxRequests,
    /// `--max-worker-memory`.
    Memory,
    /// `HUP`, or `--reload` seeing the application change.
    Reload,
}

impl RestartReason {
    pub const ALL: [RestartReason; 5] = [
        RestartReason::Crash,
        RestartReason::Timeout,
        RestartReason::MaxRequests,
        RestartReason::Memory,
        RestartReason::Reload,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RestartReason::Crash => "crash",
            RestartReason::Timeout => "timeout",
            RestartReason::MaxRequests => "max-requests",
            RestartReason::Memory => "memory",
            RestartReason::Reload => "reload",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where the master is in its life, for `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Serving,
    /// `TERM`, `INT` or `QUIT` arrived: no longer ready, whatever the
    /// workers do.
    Stopping,
}

/// The header's part for metrics, written by the master only.
#[repr(C)]
#[derive(Default)]
pub struct MasterCounters {
    restarts: [AtomicU64; 5],
    phase: AtomicU64,
    /// The master's last turn of its loop (monotonic ms).
    heartbeat_ms: AtomicU64,
    /// The workers wanted now (`--workers`, `TTIN`, `TTOU`).
    wanted: AtomicU64,
}

impl MasterCounters {
    pub fn count_restart(&self, reason: RestartReason) {
        self.restarts[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn restarts(&self, reason: RestartReason) -> u64 {
        self.restarts[reason.index()].load(Ordering::Relaxed)
    }

    pub fn set_phase(&self, phase: Phase) {
        let code = match phase {
            Phase::Starting => 0,
            Phase::Serving => 1,
            Phase::Stopping => 2,
        };
        self.phase.store(code, Ordering::Release);
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            _ => Phase::Stopping,
        }
    }

    pub fn beat(&self, now_ms: u64) {
        self.heartbeat_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn heartbeat_ms(&self) -> u64 {
        self.heartbeat_ms.load(Ordering::Relaxed)
    }

    pub fn set_wanted(&self, wanted: usize) {
        self.wanted.store(wanted as u64, Ordering::Relaxed);
    }

    pub fn wanted(&self) -> u64 {
        self.wanted.load(Ordering::Relaxed)
    }
}

/// One slot's request counters, never reset (see the module's comment).
#[repr(C, align(64))]
#[derive(Default)]
pub struct Counters {
    requests: [[AtomicU64; METHODS.len()]; STATUS_CLASSES.len()],
    /// Per bucket, not cumulative: `duration[i]` counts the calls that took
    /// at most bucket `i`'s bound and more than the one below; the last
    /// counts the rest (`+Inf`).
    duration: [AtomicU64; DURATION_BUCKETS_NS.len() + 1],
    duration_sum_ns: AtomicU64,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
}

/// Who adds to a slot's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writers {
    /// One thread (a worker without `--threads`): a plain load and store,
    /// no locked instruction.
    One,
    /// Several threads of the worker: atomic additions.
    Many,
}

/// Whether a worker counts its requests (`--metrics-bind`), and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metering {
    Off,
    On(Writers),
}

fn add(counter: &AtomicU64, n: u64, writers: Writers) {
    match writers {
        // The only writer: nobody else's addition can be lost between
        // the load and the store; readers see either value.
        Writers::One => counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        ),
        Writers::Many => {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// One finished request, as counted.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    pub method: usize,
    pub status: u16,
    pub duration_ns: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// The index into [`METHODS`] of a request's method.
pub fn method_index(method: &[u8]) -> usize {
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|m| m.as_bytes() == method)
        .unwrap_or(METHODS.len() - 1)
}

fn status_class(status: u16) -> usize {
    (usize::from(status / 100)).clamp(1, STATUS_CLASSES.len()) - 1
}

fn bucket(duration_ns: u64) -> usize {
    DURATION_BUCKETS_NS
        .iter()
        .position(|bound| duration_ns <= *bound)
        .unwrap_or(DURATION_BUCKETS_NS.len())
}

impl Counters {
    /// A request was answered: five relaxed additions, no system call.
    pub fn record(&self, done: Finished, writers: Writers) {
        let class = status_class(done.status);
        let method = done.method.min(METHODS.len() - 1);
        add(&self.requests[class][method], 1, writers);
        add(&self.duration[bucket(done.duration_ns)], 1, writers);
        add(&self.duration_sum_ns, done.duration_ns, writers);
        add(&self.request_bytes, done.request_bytes, writers);
        add(&self.response_bytes, done.response_bytes, writers);
    }

    /// Add this slot's counts to `into` (the metrics process, summing).
    pub fn add_to(&self, into: &mut Totals) {
        for (class, row) in self.requests.iter().enumerate() {
            for (method, count) in row.iter().enumerate() {
                into.requests[class][method] += count.load(Ordering::Relaxed);
            }
        }
        for (i, count) in self.duration.iter().enumerate() {
            into.duration[i] += count.load(Ordering::Relaxed);
        }
        into.duration_sum_ns += self.duration_sum_ns.load(Ordering::Relaxed);
        into.request_bytes += self.request_bytes.load(Ordering::Relaxed);
        into.response_bytes += self.response_bytes.load(Ordering::Relaxed);
    }
}

/// Counts summed over slots, as plain numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: [[u64; METHODS.len()]; STATUS_CLASSES.len()],
    /// Per bucket, not cumulative; the last is `+Inf`.
    pub duration: [u64; DURATION_BUCKETS_NS.len() + 1],
    pub duration_sum_ns: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

impl Totals {
    /// Requests answered, all classes and methods.
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }

    /// The histogram's count.
    pub fn duration_count(&self) -> u64 {
        self.duration.iter().sum()
    }
}

/// Nanoseconds on the precise monotonic clock (the vDSO's: no system call),
/// read around each call only when metrics are on.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_land_in_their_class_method_and_bucket() {
        let counters = Counters::default();
        let done = |method, status, duration_ns| Finished {
            method,
            status,
            duration_ns,
            request_bytes: 10,
            response_bytes: 20,
        };
        counters.record(done(method_index(b"GET"), 200, 50_000), Writers::One);
        counters.record(done(method_index(b"POST"), 404, 100_000), Writers::Many);
        counters.record(
            done(method_index(b"BREW"), 503, 11_000_000_000),
            Writers::One,
        );
        let mut totals = Totals::default();
        counters.add_to(&mut totals);
        assert_eq!(totals.requests[1][0], 1);
        assert_eq!(totals.requests[3][2], 1);
        assert_eq!(totals.requests[4][METHODS.len() - 1], 1);
        assert_eq!(totals.duration[0], 2, "100 µs is within the first bound");
        assert_eq!(totals.duration[DURATION_BUCKETS_NS.len()], 1, "+Inf");
        assert_eq!(totals.duration_count(), totals.requests_total());
        assert_eq!(totals.request_bytes, 30);
        assert_eq!(totals.response_bytes, 60);
    }

    #[test]
    fn bucket_bounds_agree_in_both_units() {
        for (s, ns) in DURATION_BUCKETS_SECONDS.iter().zip(DURATION_BUCKETS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
    }
}
