//! Recycling workers without a dip in capacity: a worker past its
//! `--max-requests` (it says so in its slot) or over `--max-worker-memory`
//! (the master measures it) gets a successor first; once the successor has
//! loaded the application, the old worker is stopped gracefully and hands
//! its idle connections to the others. One worker at a time.

use nix::unistd::Pid;

use super::{Arbiter, Life};
use rgun_worker::scoreboard::Wish;
use rgun_worker::scoreboard::metrics::RestartReason;

/// Why a worker is recycled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecycleReason {
    MaxRequests,
    /// Its proportional set size, in KiB.
    Memory {
        pss_kib: u64,
    },
}

impl Arbiter {
    /// A recycle is under way: the master looks again soon.
    pub(super) fn recycling(&self) -> bool {
        self.workers
            .values()
            .any(|w| matches!(w.life, Life::Replaced { .. }))
    }

    /// On each turn of the loop: finish the recycle under way, or start one.
    pub(super) fn recycle_workers(&mut self) {
        let pending = self.workers.iter().find_map(|(pid, w)| match w.life {
            Life::Replaced { successor } => Some((*pid, successor)),
            _ => None,
        });
        if let Some((old, successor)) = pending {
            self.finish_recycle(old, successor);
            return;
        }
        if self.halt.is_some() {
            return;
        }
        let candidate = self
            .workers
            .iter()
            .filter(|(_, w)| w.is_serving() && self.scoreboard.slot(w.slot).is_booted())
            .find_map(|(pid, w)| self.recycle_reason(*pid, w.slot).map(|r| (*pid, r)));
        if let Some((pid, reason)) = candidate {
            self.start_recycle(pid, reason);
        }
    }

    fn recycle_reason(&self, pid: Pid, slot: usize) -> Option<RecycleReason> {
        if self.scoreboard.slot(slot).wish() == Wish::MaxRequests {
            return Some(RecycleReason::MaxRequests);
        }
        let limit_kib = self.settings.max_worker_memory_mib.checked_mul(1024)?;
        if limit_kib == 0 {
            return None;
        }
        let pss_kib = memory_kib(pid)?;
        (pss_kib > limit_kib).then_some(RecycleReason::Memory { pss_kib })
    }

    fn start_recycle(&mut self, pid: Pid, reason: RecycleReason) {
        match reason {
            RecycleReason::MaxRequests => {
                log::info!("Worker (pid:{pid}) reached --max-requests; starting its replacement")
            }
            RecycleReason::Memory { pss_kib } => log::warn!(
                "Worker (pid:{pid}) uses {:.1} MiB (PSS), over --max-worker-memory {} MiB; starting its replacement",
                pss_kib as f64 / 1024.0,
                self.settings.max_worker_memory_mib
            ),
        }
        // No successor forked: the worker serves on and is looked at again
        // on the next turn. Forked: the successor is counted among the
        // wanted workers from now on, this one no longer.
        if let Some(successor) = self.spawn_worker()
            && let Some(worker) = self.workers.get_mut(&pid)
        {
            worker.life = Life::Replaced { successor };
            self.restarts.record(reason);
            self.scoreboard.master().count_restart(match reason {
                RecycleReason::MaxRequests => RestartReason::MaxRequests,
                RecycleReason::Memory { .. } => RestartReason::Memory,
            });
        }
    }

    fn finish_recycle(&mut self, old: Pid, successor: Pid) {
        match self.workers.get(&successor) {
            Some(w) if !self.scoreboard.slot(w.slot).is_booted() => {}
            Some(_) => {
                log::info!("Worker (pid:{successor}) has booted; stopping worker (pid:{old})");
                self.retire(old);
            }
            None => {
                // The successor died: the old worker serves on until another
                // one boots.
                if let Some(worker) = self.workers.get_mut(&old) {
                    worker.life = Life::Serving;
                }
            }
        }
    }
}

/// Restarts counted by reason, for the log and for metrics.
#[derive(Default, Debug)]
pub struct Restarts {
    pub max_requests: u64,
    pub memory: u64,
}

impl Restarts {
    fn record(&mut self, reason: RecycleReason) {
        match reason {
            RecycleReason::MaxRequests => self.max_requests += 1,
            RecycleReason::Memory { .. } => self.memory += 1,
        }
    }
}

/// A worker's memory, in KiB: its proportional set size (PSS), which
/// charges each page shared with the master or other workers (the code,
/// and with `--preload` the application) in part, so that a worker is
/// measured by what it costs, not by what it shares; its resident set
/// (RSS) where the kernel does not say PSS.
pub fn memory_kib(pid: Pid) -> Option<u64> {
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
    };
    if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        && let Some(pss) = field(&rollup, "Pss:")
    {
        return Some(pss);
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field(&status, "VmRSS:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_memory_size() {
        let kib = memory_kib(Pid::this()).expect("PSS or RSS of this process");
        assert!(kib > 0);
    }
}
