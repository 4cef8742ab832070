//! One reading of the scoreboard, as the metrics process makes it for each
//! scrape, and the last few seconds of readings, for rates and recent
//! latency percentiles on the status page.

use std::collections::VecDeque;

use rgun_worker::scoreboard::metrics::{DURATION_BUCKETS_SECONDS, Phase, RestartReason, Totals};
use rgun_worker::scoreboard::{Scoreboard, monotonic_ms};

/// The master turns its loop at least once a second; silent this long, it
/// is stuck, and `/healthz` says so.
const MASTER_SILENT_MS: u64 = 10_000;
/// The window of the status page's requests per second and recent
/// percentiles.
pub const WINDOW_MS: u64 = 10_000;

/// A worker's state, the `state` label of `rgun_workers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Forked, loading the application.
    Booting,
    Idle,
    /// In a call.
    Busy,
    /// Told to stop; finishing what it holds.
    Retiring,
}

impl WorkerState {
    pub const ALL: [WorkerState; 4] = [
        WorkerState::Booting,
        WorkerState::Idle,
        WorkerState::Busy,
        WorkerState::Retiring,
    ];

    pub fn label(self) -> &'static str {
        match self {
            WorkerState::Booting => "booting",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Retiring => "retiring",
        }
    }
}

/// The request a worker holds: its line and for how long.
#[derive(Clone, Debug)]
pub struct InHand {
    pub line: String,
    pub for_ms: u64,
}

#[derive(Clone, Debug)]
pub struct WorkerView {
    pub slot: usize,
    /// 0 until the forked worker wrote its own.
    pub pid: i32,
    pub state: WorkerState,
    /// Requests this worker answered.
    pub requests: u64,
    pub in_flight: u32,
    pub connections: u32,
    pub age_ms: u64,
    pub request: Option<InHand>,
}

/// Whether the master is alive, for `/healthz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Alive,
    /// This process's parent is no longer the master.
    Gone,
    /// The master has not turned its loop for this long.
    Silent {
        for_ms: u64,
    },
}

/// Whether the server takes traffic, for `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Stopping,
    NoWorkerBooted,
}

pub struct Snapshot {
    pub now_ms: u64,
    pub workers: Vec<WorkerView>,
    pub totals: Totals,
    pub restarts: Vec<(RestartReason, u64)>,
    pub health: Health,
    pub readiness: Readiness,
    pub wanted: u64,
}

impl Snapshot {
    pub fn read(board: &Scoreboard, master_pid: i32) -> Snapshot {
        let now_ms = monotonic_ms();
        let mut totals = Totals::default();
        let mut workers = Vec::new();
        for index in 0..board.in_use() {
            let slot = board.slot(index);
            slot.counters().add_to(&mut totals);
            let started = slot.started_ms();
            if started == 0 {
                continue;
            }
            let in_flight = slot.in_flight();
            let state = if slot.is_retiring() {
                WorkerState::Retiring
            } else if !slot.is_booted() {
                WorkerState::Booting
            } else if in_flight > 0 {
                WorkerState::Busy
            } else {
                WorkerState::Idle
            };
            let request_started = slot.request_started_ms();
            workers.push(WorkerView {
                slot: index,
                pid: slot.pid(),
                state,
                requests: slot.requests(),
                in_flight,
                connections: slot.connections(),
                age_ms: now_ms.saturating_sub(started),
                request: (request_started != 0 && in_flight > 0).then(|| InHand {
                    line: slot.request_line(),
                    for_ms: now_ms.saturating_sub(request_started),
                }),
            });
        }
        let master = board.master();
        let health = if nix::unistd::getppid().as_raw() != master_pid {
            Health::Gone
        } else {
            match now_ms.saturating_sub(master.heartbeat_ms()) {
                silent if silent > MASTER_SILENT_MS => Health::Silent { for_ms: silent },
                _ => Health::Alive,
            }
        };
        let readiness = if master.phase() == Phase::Stopping {
            Readiness::Stopping
        } else if workers
            .iter()
            .any(|w| matches!(w.state, WorkerState::Idle | WorkerState::Busy))
        {
            Readiness::Ready
        } else {
            Readiness::NoWorkerBooted
        };
        Snapshot {
            now_ms,
            workers,
            totals,
            restarts: RestartReason::ALL
                .iter()
                .map(|r| (*r, master.restarts(*r)))
                .collect(),
            health,
            readiness,
            wanted: master.wanted(),
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.workers.iter().map(|w| u64::from(w.in_flight)).sum()
    }

    pub fn connections(&self) -> u64 {
        self.workers.iter().map(|w| u64::from(w.connections)).sum()
    }
}

/// Readings of the totals over the last `WINDOW_MS`, one a second.
#[derive(Default)]
pub struct History {
    samples: VecDeque<(u64, Totals)>,
}

/// Rates and percentiles over the window.
#[derive(Clone, Debug, Default)]
pub struct Recent {
    pub seconds: f64,
    pub requests_per_second: f64,
    /// p50, p90, p99 in seconds, `None` with no request in the window.
    pub percentiles: [Option<f64>; 3],
}

impl History {
    /// Keep a reading if the last one is a second old.
    pub fn sample(&mut self, now_ms: u64, totals: &Totals) {
        if self
            .samples
            .back()
            .is_none_or(|(at, _)| now_ms.saturating_sub(*at) >= 1000)
        {
            self.samples.push_back((now_ms, totals.clone()));
        }
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now_ms.saturating_sub(*at) > WINDOW_MS)
        {
            self.samples.pop_front();
        }
    }

    /// From the oldest reading in the window to `totals` now.
    pub fn recent(&self, now_ms: u64, totals: &Totals) -> Recent {
        let Some((at, old)) = self.samples.front() else {
            return Recent::default();
        };
        let seconds = now_ms.saturating_sub(*at) as f64 / 1000.0;
        let mut buckets = totals.duration;
        for (b, o) in buckets.iter_mut().zip(old.duration) {
            *b = b.saturating_sub(o);
        }
        let count = totals.requests_total().saturating_sub(old.requests_total());
        Recent {
            seconds,
            requests_per_second: if seconds > 0.0 {
                count as f64 / seconds
            } else {
                0.0
            },
            percentiles: [0.5, 0.9, 0.99].map(|q| quantile(q, &buckets)),
        }
    }
}

/// The `q` quantile of a histogram (per-bucket counts, the last `+Inf`),
/// interpolated within its bucket as Prometheus' `histogram_quantile`
/// does; in the `+Inf` bucket, the highest finite bound.
pub fn quantile(q: f64, buckets: &[u64]) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, count) in buckets.iter().enumerate() {
        if (below + count) as f64 >= rank && *count > 0 {
            let Some(upper) = DURATION_BUCKETS_SECONDS.get(i) else {
                return DURATION_BUCKETS_SECONDS.last().copied();
            };
            let lower = if i == 0 {
                0.0
            } else {
                DURATION_BUCKETS_SECONDS[i - 1]
            };
            let within = (rank - below as f64) / *count as f64;
            return Some(lower + (upper - lower) * within);
        }
        below += count;
    }
    DURATION_BUCKETS_SECONDS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let mut buckets = [0u64; 17];
        assert_eq!(quantile(0.5, &buckets), None);
        buckets[3] = 10; // (0.0005, 0.001]
        let median = quantile(0.5, &buckets).unwrap();
        assert!((median - 0.00075).abs() < 1e-9, "{median}");
        buckets[16] = 90;
        assert_eq!(quantile(0.99, &buckets), Some(10.0));
    }
}
