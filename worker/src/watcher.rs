//! The affinity watcher of a single-threaded worker. The event loop calls
//! the application on its own thread, which is the fastest way to answer,
//! but while a call runs nobody looks at the worker's other connections:
//! a request arriving on one of them would wait for the call, however long,
//! while other workers sit idle (keep-alive affinity). This thread notices
//! a call that has run for a tick and hands every other connection that can
//! move to the hand-off channel, where a free worker takes it.
//!
//! It costs the fast path nothing of its own: it samples the worker's
//! scoreboard counters (calls in flight, requests served) once a tick; the
//! same call in flight at two samples has run for a tick. A worker with no
//! calls for a while parks the watcher until its next call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use slab::Slab;

use crate::handoff::{Arrival, Channel, Inbox};
use crate::scoreboard::Slot;
use crate::server::Place;

/// How often the watcher samples the call in hand: a call seen at two
/// consecutive samples has run at least this long.
pub const AFFINITY_TICK: Duration = Duration::from_micros(500);
/// Ticks without any call before the watcher parks.
const PARK_AFTER_TICKS: u32 = 200;
/// The most connections moved for one slow call.
const MAX_MOVED_PER_CALL: usize = 1024;

/// What the loop's thread and the watcher share besides the scoreboard.
#[derive(Default)]
pub struct CallClock {
    /// The watcher is parked (or about to be) until the next call.
    parked: AtomicBool,
    watcher: OnceLock<Thread>,
    /// The worker drains: its connections stay (nobody may be left to take
    /// them).
    draining: AtomicBool,
}

impl CallClock {
    /// The loop's thread has counted a call in its slot (sequentially
    /// consistent) and hands it to the application: a parked watcher wakes.
    pub fn wake_watcher(&self) {
        if self.parked.load(Ordering::SeqCst)
            && self.parked.swap(false, Ordering::SeqCst)
            && let Some(watcher) = self.watcher.get()
        {
            watcher.unpark();
        }
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// What the watcher needs of the event loop.
pub struct Watched {
    pub clock: &'static CallClock,
    pub slot: &'static Slot,
    pub peers: crate::scoreboard::Peers,
    pub conns: Arc<Mutex<Slab<Place>>>,
    pub registry: mio::Registry,
    pub channel: &'static Channel,
    pub inbox: &'static Inbox,
}

/// Start the watcher thread; it lives as long as the worker.
pub fn start(watched: Watched) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("rgun-affinity".into())
        .spawn(move || watch(watched))?;
    Ok(())
}

/// Which call a sample saw: one in flight, numbered by the requests served
/// before it; or none.
fn sample(slot: &Slot) -> Option<u64> {
    (slot.in_flight() > 0).then(|| slot.requests())
}

fn watch(watched: Watched) {
    let (clock, slot) = (watched.clock, watched.slot);
    // Before the first park (PARK_AFTER_TICKS from now), so that a call
    // always finds the thread to wake.
    let _ = clock.watcher.set(std::thread::current());
    let mut last = sample(slot);
    let mut moved_for = None;
    let mut idle_ticks = 0u32;
    let mut inbound = Inbound::default();
    loop {
        std::thread::sleep(AFFINITY_TICK);
        let now = sample(slot);
        // With no other worker to take them, moved connections would only
        // wait in the channel for this one (and stop counting against
        // --worker-connections meanwhile).
        let others_take =
            || !clock.draining.load(Ordering::Relaxed) && watched.peers.any_other_taking();
        if now.is_some() && now == last && others_take() {
            if moved_for != now {
                moved_for = now;
                move_connections(&watched);
            }
            // Sent here as the call began, or since: on, as long as it runs.
            inbound.forward(&watched);
        }
        inbound.put_back(&watched);
        idle_ticks = if now.is_none() { idle_ticks + 1 } else { 0 };
        if idle_ticks >= PARK_AFTER_TICKS && inbound.held.is_empty() {
            park(clock, slot);
            idle_ticks = 0;
        }
        last = sample(slot);
    }
}

/// Sleep until the next call. The flag is raised before the calls in
/// flight are read again, and the loop counts its call before it reads the
/// flag (both sequentially consistent): one of the two sees the other, so
/// no call goes unwatched.
fn park(clock: &CallClock, slot: &Slot) {
    clock.parked.store(true, Ordering::SeqCst);
    while slot.in_flight_seq_cst() == 0 && clock.parked.load(Ordering::SeqCst) {
        std::thread::park();
    }
    clock.parked.store(false, Ordering::SeqCst);
}

/// Connections sent to this worker's inbox, passed on to the shared
/// channel while a call runs long.
#[derive(Default)]
struct Inbound {
    /// Taken from the inbox, and neither the channel nor the inbox took
    /// them back (both full): offered again every tick until one does.
    held: Vec<Arrival>,
    buf: Vec<u8>,
}

impl Inbound {
    fn forward(&mut self, watched: &Watched) {
        if !self.held.is_empty() {
            return;
        }
        let left = crate::server::forward_inbox(
            watched.inbox,
            watched.slot,
            watched.channel,
            &mut self.buf,
        );
        self.held.extend(left);
    }

    /// What is held goes to the channel, or back to the inbox, where the
    /// loop takes it once its call returns.
    fn put_back(&mut self, watched: &Watched) {
        self.held.retain(|arrival| {
            let passage = arrival.passage();
            watched.channel.send(&passage).is_err() && watched.inbox.send_to_self(&passage).is_err()
        });
    }
}

/// Hand every connection that can move to the channel. The loop's thread
/// is in a call and holds none of them (the one in the call is not in the
/// slab).
fn move_connections(watched: &Watched) {
    let mut conns = watched.conns.lock().unwrap_or_else(|e| e.into_inner());
    let onward = crate::server::Onward {
        peers: watched.peers,
        inbox: watched.inbox,
        channel: watched.channel,
    };
    let moved =
        crate::server::hand_off_movable(&mut conns, &watched.registry, &onward, MAX_MOVED_PER_CALL);
    drop(conns);
    if moved > 0 {
        log::debug!("a call runs long: {moved} connections handed to other workers");
    }
}
