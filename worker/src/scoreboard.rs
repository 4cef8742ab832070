//! The scoreboard: one slot of shared memory per worker, mapped by the master
//! before it forks. A worker writes its own slot (heartbeat, the request in
//! hand, counters); the master reads them all to find hung workers. There is
//! no lock and no message: every field is an atomic with a single writer,
//! except `timed_out`, which only the master sets while the worker is stuck.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// One worker's slot, a cache line of its own so that two workers never
/// write the same line.
#[repr(C, align(64))]
#[derive(Default)]
pub struct Slot {
    pid: AtomicI32,
    timed_out: AtomicU32,
    booted: AtomicU32,
    heartbeat_ms: AtomicU64,
    request_started_ms: AtomicU64,
    requests: AtomicU64,
}

impl Slot {
    /// The master, before forking the worker that will own this slot.
    pub fn reset(&self, now_ms: u64) {
        self.pid.store(0, Ordering::Relaxed);
        self.timed_out.store(0, Ordering::Relaxed);
        self.booted.store(0, Ordering::Relaxed);
        self.heartbeat_ms.store(now_ms, Ordering::Relaxed);
        self.request_started_ms.store(0, Ordering::Relaxed);
        self.requests.store(0, Ordering::Relaxed);
    }

    pub fn set_pid(&self, pid: i32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// The worker: the application is loaded and its init hook ran.
    pub fn set_booted(&self) {
        self.booted.store(1, Ordering::Release);
    }

    pub fn is_booted(&self) -> bool {
        self.booted.load(Ordering::Acquire) != 0
    }

    /// The worker: "I am alive at `now_ms`".
    pub fn beat(&self, now_ms: u64) {
        self.heartbeat_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn heartbeat_ms(&self) -> u64 {
        self.heartbeat_ms.load(Ordering::Relaxed)
    }

    /// The worker hands a request to the application (`0`: none in hand).
    pub fn request_started(&self, now_ms: u64) {
        self.request_started_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn request_finished(&self) {
        self.request_started_ms.store(0, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The master marks a stuck worker before sending it `SIGABRT`, so that
    /// the worker's handler answers the request in hand with a timeout.
    pub fn mark_timed_out(&self) {
        self.timed_out.store(1, Ordering::Relaxed);
    }

    pub fn is_timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed) != 0
    }
}

/// The shared mapping: `len` slots, zeroed, inherited by every fork.
pub struct Scoreboard {
    slots: NonNull<Slot>,
    len: usize,
}

impl Scoreboard {
    pub fn new(len: usize) -> io::Result<Scoreboard> {
        let bytes = len.max(1) * size_of::<Slot>();
        // SAFETY: an anonymous shared mapping with no address hint; the result
        // is checked for MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let slots = NonNull::new(ptr.cast::<Slot>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Scoreboard { slots, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn slot(&self, index: usize) -> &Slot {
        assert!(
            index < self.len,
            "scoreboard slot {index} out of {}",
            self.len
        );
        // SAFETY: `index` is in bounds; the mapping is page-aligned (so
        // 64-byte aligned), zero-filled (a valid `Slot` of zero atomics) and
        // lives as long as `self`.
        unsafe { &*self.slots.as_ptr().add(index) }
    }

    /// The worker keeps its slot for the rest of the process: the mapping is
    /// never unmapped in a worker.
    pub fn into_static_slot(self, index: usize) -> &'static Slot {
        let slot: *const Slot = self.slot(index);
        std::mem::forget(self);
        // SAFETY: the mapping is leaked just above, so it lives until the
        // process exits.
        unsafe { &*slot }
    }
}

impl Drop for Scoreboard {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region mapped in `new`; no reference
        // into it outlives `self` (borrows of `slot` end with `self`).
        unsafe {
            libc::munmap(
                self.slots.as_ptr().cast(),
                self.len.max(1) * size_of::<Slot>(),
            );
        }
    }
}

/// Milliseconds on the monotonic clock, which every process of the machine
/// reads alike: the scoreboard's time base. The coarse clock (a few ms of
/// resolution) is enough for timeouts counted in seconds, and it is read on
/// every request: it costs a fraction of the precise one.
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC_COARSE exists on
    // every Linux since 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_zeroed_and_a_cache_line_each() {
        assert_eq!(size_of::<Slot>(), 64);
        let board = Scoreboard::new(4).unwrap();
        assert_eq!(board.slot(3).requests(), 0);
        board.slot(1).request_finished();
        assert_eq!(board.slot(1).requests(), 1);
        assert_eq!(board.slot(0).requests(), 0);
    }
}
