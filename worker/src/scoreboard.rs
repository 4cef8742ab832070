//! The scoreboard: one slot of shared memory per worker, mapped by the master
//! before it forks. A worker writes its own slot (heartbeat, the request in
//! hand, its load, counters); the master reads them all to find hung
//! workers, and workers read each other's load to leave work to the least
//! loaded. There is no lock and no message: every field is an atomic with a
//! single writer (a worker's threads count as one), except `timed_out`,
//! which only the master sets while the worker is stuck, and the header,
//! which only the master writes.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

pub mod metrics;

use metrics::{Counters, MasterCounters};

/// What the master says of all the slots.
#[repr(C, align(64))]
#[derive(Default)]
struct Header {
    /// One past the highest slot index ever given to a worker: workers look
    /// no further for peers.
    high_water: AtomicU32,
    /// Restarts by reason, the master's phase and heartbeat (metrics).
    master: MasterCounters,
}

/// The bytes of a request line kept for the log of a timeout: the method,
/// a space and the target, cut to fit.
const REQUEST_LINE_WORDS: usize = 14;
const REQUEST_LINE_BYTES: usize = REQUEST_LINE_WORDS * 8;

/// What a worker asks of the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wish {
    None,
    /// To be replaced: it served its `--max-requests`.
    MaxRequests,
    /// To reload every worker: its application changed (`--reload`).
    Reload,
}

/// One worker's slot, cache lines of its own so that two workers never
/// write the same line.
#[repr(C, align(64))]
#[derive(Default)]
pub struct Slot {
    pid: AtomicI32,
    timed_out: AtomicU32,
    booted: AtomicU32,
    /// Calls the worker has in hand now, on all its threads.
    in_flight: AtomicU32,
    heartbeat_ms: AtomicU64,
    request_started_ms: AtomicU64,
    requests: AtomicU64,
    /// 1 while the worker takes new work (accepts, takes hand-offs).
    taking: AtomicU32,
    /// Client connections the worker holds.
    connections: AtomicU32,
    /// Connections on their way to this worker's inbox: counted by their
    /// sender before it sends, uncounted by the worker as it takes each.
    /// Peers see them as load to come; the worker does not exit while any
    /// is counted (see `Slot::start_sending`).
    queued: AtomicU32,
    /// The name of this slot's inbox ([`crate::handoff::InboxName`]),
    /// written by the master as it binds it; kept when the slot is reset,
    /// as the inbox is.
    inbox_name: AtomicU64,
    /// The worker's [`Wish`], as a number.
    wish: AtomicU32,
    /// Set by the master before it stops this worker to replace it: its
    /// idle connections go to the other workers instead of waiting here.
    replaced: AtomicU32,
    /// The request line in hand (single-threaded workers), for the log of
    /// a timeout: its length, then its bytes.
    request_line_len: AtomicU32,
    /// Set by the master as it stops this worker (replaced, fewer
    /// workers wanted, a reload, the server stopping).
    retiring: AtomicU32,
    request_line: [AtomicU64; REQUEST_LINE_WORDS],
    /// When the master forked the worker (monotonic ms).
    started_ms: AtomicU64,
    /// Requests answered in this slot, by every worker it ever held: never
    /// reset (see `metrics`).
    counters: Counters,
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
        self.in_flight.store(0, Ordering::Relaxed);
        self.taking.store(0, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
        self.queued.store(0, Ordering::Relaxed);
        self.wish.store(0, Ordering::Relaxed);
        self.replaced.store(0, Ordering::Relaxed);
        self.request_line_len.store(0, Ordering::Relaxed);
        self.retiring.store(0, Ordering::Relaxed);
        self.started_ms.store(now_ms, Ordering::Relaxed);
        // `counters` stay: they add up over every worker of the slot.
    }

    /// The master, having bound this slot's inbox (or failed to: 0).
    pub fn set_inbox_name(&self, name: crate::handoff::InboxName) {
        self.inbox_name.store(name.0, Ordering::Release);
    }

    pub fn inbox_name(&self) -> crate::handoff::InboxName {
        crate::handoff::InboxName(self.inbox_name.load(Ordering::Acquire))
    }

    /// The request counters of this slot, over every worker it held.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The master: this worker is told to stop.
    pub fn mark_retiring(&self) {
        self.retiring.store(1, Ordering::Relaxed);
    }

    pub fn is_retiring(&self) -> bool {
        self.retiring.load(Ordering::Relaxed) != 0
    }

    /// When the master forked the slot's worker (monotonic ms).
    pub fn started_ms(&self) -> u64 {
        self.started_ms.load(Ordering::Relaxed)
    }

    /// The slot's worker, or 0 for none.
    pub fn pid(&self) -> i32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// The worker asks something of the master (which it then wakes).
    pub fn set_wish(&self, wish: Wish) {
        let code = match wish {
            Wish::None => 0,
            Wish::MaxRequests => 1,
            Wish::Reload => 2,
        };
        self.wish.store(code, Ordering::Relaxed);
    }

    pub fn wish(&self) -> Wish {
        match self.wish.load(Ordering::Relaxed) {
            1 => Wish::MaxRequests,
            2 => Wish::Reload,
            _ => Wish::None,
        }
    }

    /// The master: this worker is being replaced (before its `TERM`).
    pub fn mark_replaced(&self) {
        self.replaced.store(1, Ordering::Relaxed);
    }

    pub fn is_replaced(&self) -> bool {
        self.replaced.load(Ordering::Relaxed) != 0
    }

    /// The worker, as it is aborted: the request line it held (method and
    /// target), cut to fit. Copies only: callable from a signal handler.
    /// Also on every request with `--metrics-bind`, for the status page:
    /// only the words the line needs are written.
    pub fn set_request_line(&self, line: &[u8]) {
        let len = line.len().min(REQUEST_LINE_BYTES);
        for (word, chunk) in self.request_line.iter().zip(line[..len].chunks(8)) {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        }
        self.request_line_len.store(len as u32, Ordering::Relaxed);
    }

    /// The master: the request line in hand, as last written.
    pub fn request_line(&self) -> String {
        let mut bytes = Vec::with_capacity(REQUEST_LINE_BYTES);
        for word in &self.request_line {
            bytes.extend_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        let len = (self.request_line_len.load(Ordering::Relaxed) as usize).min(REQUEST_LINE_BYTES);
        String::from_utf8_lossy(&bytes[..len]).into_owned()
    }

    /// When the request in hand started (0: none in hand).
    pub fn request_started_ms(&self) -> u64 {
        self.request_started_ms.load(Ordering::Relaxed)
    }

    /// The master, once the worker is gone: nobody's slot any more.
    pub fn clear(&self) {
        self.reset(0);
    }

    /// A call starts, on any of the worker's threads. Sequentially
    /// consistent: the affinity watcher's parking protocol pairs with it.
    pub fn call_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    pub fn call_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// As `in_flight`, ordered with `call_started` (for parking protocols).
    pub fn in_flight_seq_cst(&self) -> u32 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The worker takes new work, or stops (all threads busy, draining).
    /// Sequentially consistent, for `start_sending`'s protocol.
    pub fn set_taking(&self, taking: bool) {
        self.taking.store(u32::from(taking), Ordering::SeqCst);
    }

    /// A peer is about to send a connection to this worker's inbox: whether
    /// the worker still takes work. The sender counts the connection in
    /// before it looks, and the worker stops taking before it looks at the
    /// count (`queued`; all sequentially consistent): either the sender
    /// sees the worker stopped and sends nothing, or the worker sees the
    /// count and stays for what comes. A sender that does not send after
    /// all calls `unsend`.
    pub fn start_sending(&self) -> bool {
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.taking.load(Ordering::SeqCst) != 0
    }

    pub fn unsend(&self) {
        self.took_one();
    }

    /// The worker took a connection from its inbox. Never below zero: what
    /// a worker that died left queued is taken by the next one in the
    /// slot, which counted none.
    pub fn took_one(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Connections on their way to this worker.
    pub fn queued(&self) -> u32 {
        self.queued.load(Ordering::SeqCst)
    }

    /// The worker: how many connections it holds now.
    pub fn set_connections(&self, count: usize) {
        self.connections
            .store(count.min(u32::MAX as usize) as u32, Ordering::Relaxed);
    }

    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Connections held, and on their way.
    fn holds(&self) -> u32 {
        self.connections() + self.queued()
    }

    pub fn is_taking(&self) -> bool {
        self.taking.load(Ordering::Relaxed) != 0 && self.pid.load(Ordering::Relaxed) != 0
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

/// The shared mapping: a header, then `len` slots, zeroed, inherited by
/// every fork.
pub struct Scoreboard {
    header: NonNull<Header>,
    slots: NonNull<Slot>,
    len: usize,
}

impl Scoreboard {
    fn mapping_bytes(len: usize) -> usize {
        size_of::<Header>() + len.max(1) * size_of::<Slot>()
    }

    pub fn new(len: usize) -> io::Result<Scoreboard> {
        let bytes = Self::mapping_bytes(len);
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
        let header = NonNull::new(ptr.cast::<Header>()).ok_or_else(io::Error::last_os_error)?;
        // SAFETY: the slots follow the header inside the mapping, which is
        // large enough for both; Header's size keeps them 64-byte aligned.
        let slots = unsafe { header.add(1).cast::<Slot>() };
        Ok(Scoreboard { header, slots, len })
    }

    fn header(&self) -> &Header {
        // SAFETY: the header is zero-filled (valid atomics) and lives as long
        // as the mapping, which `self` owns.
        unsafe { self.header.as_ref() }
    }

    /// The master, as it gives slot `index` to a worker.
    pub fn note_in_use(&self, index: usize) {
        self.header()
            .high_water
            .fetch_max(index as u32 + 1, Ordering::Relaxed);
    }

    /// A worker's view of every slot, kept for the rest of the process (a
    /// worker never unmaps the scoreboard), to find less loaded peers.
    pub fn peers(&self, own: usize) -> Peers {
        let slots: *const [Slot] = std::ptr::slice_from_raw_parts(self.slots.as_ptr(), self.len);
        let header: *const Header = self.header();
        // SAFETY: a worker leaves through process::exit and never drops the
        // scoreboard, so the mapping outlives every use of these; the
        // master, which does unmap it, never calls this.
        unsafe {
            Peers {
                header: &*header,
                slots: &*slots,
                own,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// What the master writes for metrics: restarts, phase, heartbeat.
    pub fn master(&self) -> &MasterCounters {
        &self.header().master
    }

    /// One past the highest slot index ever given to a worker.
    pub fn in_use(&self) -> usize {
        (self.header().high_water.load(Ordering::Relaxed) as usize).min(self.len)
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
            libc::munmap(self.header.as_ptr().cast(), Self::mapping_bytes(self.len));
        }
    }
}

/// Every worker's slot as one worker sees them.
#[derive(Clone, Copy)]
pub struct Peers {
    header: &'static Header,
    slots: &'static [Slot],
    own: usize,
}

impl Peers {
    /// The worker's own slot.
    pub fn own(&self) -> &'static Slot {
        &self.slots[self.own]
    }

    /// The slot of another worker that takes work, holds fewer calls than
    /// `load` and fewer connections than `count`, the least loaded (then
    /// the one holding the fewest connections): new work is better left to
    /// it.
    pub fn least_loaded_below(&self, load: u32, count: usize) -> Option<usize> {
        self.others()
            .filter(|(_, slot)| {
                slot.is_taking()
                    && slot.in_flight() + slot.queued() < load
                    && (slot.holds() as usize) < count
            })
            .min_by_key(|(_, slot)| {
                let queued = slot.queued();
                (slot.in_flight() + queued, slot.connections() + queued)
            })
            .map(|(index, _)| index)
    }

    /// The slot of another worker, free now, holding fewer connections
    /// than `count`, the one holding the fewest (connections on their way
    /// count as held): a connection is better kept there.
    pub fn free_one_with_fewer_connections(&self, count: usize) -> Option<usize> {
        self.others()
            .filter(|(_, slot)| {
                slot.is_taking() && slot.in_flight() == 0 && (slot.holds() as usize) < count
            })
            .min_by_key(|(_, slot)| slot.holds())
            .map(|(index, _)| index)
    }

    /// Slot `index` (one of `least_loaded_below`'s or
    /// `free_one_with_fewer_connections`'s answers).
    pub fn slot(&self, index: usize) -> &'static Slot {
        &self.slots[index]
    }

    /// Whether any other worker takes work now: somewhere for a connection
    /// handed off to go.
    pub fn any_other_taking(&self) -> bool {
        self.others().any(|(_, slot)| slot.is_taking())
    }

    /// The other workers' slots, from the one after this worker's round
    /// to the one before it: among equals, each worker picks a different
    /// first.
    fn others(&self) -> impl Iterator<Item = (usize, &'static Slot)> {
        let in_use =
            (self.header.high_water.load(Ordering::Relaxed) as usize).min(self.slots.len());
        let own = self.own;
        let slots: &'static [Slot] = self.slots;
        (own + 1..in_use)
            .chain(0..own.min(in_use))
            .map(move |i| (i, &slots[i]))
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
mod tests;
