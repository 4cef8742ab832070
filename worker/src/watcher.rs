//! The affinity watcher of a single-threaded worker. The event loop calls
//! the application on its own thread, which is the fastest way to answer,
//! but while a call runs nobody looks at the worker's other connections:
//! a request arriving on one of them would wait for the call, however long,
//! while other workers sit idle (keep-alive affinity). This thread notices
//! a call that has run for a tick and from then on watches the worker's
//! other connections: each one that holds a request, or receives one while
//! the call runs, goes to a free worker at once. Idle ones stay, so that a
//! call only a little slow (the machine busy for a moment) does not scatter
//! the worker's connections over the others and unbalance them; only a
//! call that runs on past `MOVE_ALL_AFTER`, likely hung, sends them all
//! away, so that none is lost with it when `--timeout` ends it.
//!
//! It costs the fast path nothing of its own: it samples the worker's
//! scoreboard counters (calls in flight, requests served) once a tick; the
//! same call in flight at two samples has run for a tick. Watching the
//! connections is an epoll set of the watcher's own, made for that call
//! and closed after it. A worker with no calls for a while parks the
//! watcher until its next call.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

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
/// A call running this long may be hung: every connection that can move
/// goes, idle or not, well before the shortest `--timeout` (1 s) ends the
/// worker. Far past a moment's stall of a busy machine.
pub const MOVE_ALL_AFTER: Duration = Duration::from_millis(250);
/// The longest a look at the watched connections waits for a request
/// (epoll counts in milliseconds): the watcher samples the call again
/// after it.
const LOOK_WAIT_MS: libc::c_int = 1;
/// Connections found with a request in one look.
const READY_PER_LOOK: usize = 64;

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
    let mut long_call: Option<LongCall> = None;
    let mut idle_ticks = 0u32;
    let mut inbound = Inbound::default();
    loop {
        match long_call.as_mut() {
            // A call runs long: a request on one of the others wakes the
            // watcher at once, and goes; else a tick's wait, as below.
            Some(long) if long.watching() => long.look(&watched, LOOK_WAIT_MS),
            _ => std::thread::sleep(AFFINITY_TICK),
        }
        let now = sample(slot);
        // With no other worker to take them, moved connections would only
        // wait in the channel for this one (and stop counting against
        // --worker-connections meanwhile).
        let others_take =
            || !clock.draining.load(Ordering::Relaxed) && watched.peers.any_other_taking();
        match now {
            Some(call) if now == last && others_take() => {
                if long_call.as_ref().is_none_or(|c| c.call != call) {
                    let mut long = LongCall::begin(call, &watched);
                    long.look(&watched, 0);
                    long_call = Some(long);
                }
                // Sent here as the call began, or since: on, as long as it runs.
                inbound.forward(&watched);
            }
            // The call ended (or another began): its watch set closes.
            _ => long_call = None,
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

/// A call that has run for a tick, and the worker's other connections
/// watched for a request while it runs.
struct LongCall {
    /// The call, numbered as `sample` numbers it.
    call: u64,
    since: Instant,
    /// The watch set: each idle connection, keyed by its slab key and
    /// descriptor. `None` once every connection was sent away (or if the
    /// set could not be made: then they are sent away at once).
    ready: Option<OwnedFd>,
}

impl LongCall {
    /// Send on the connections that hold a request already; watch the
    /// others.
    fn begin(call: u64, watched: &Watched) -> LongCall {
        let since = Instant::now();
        // SAFETY: epoll_create1 takes no pointer; a descriptor it returns
        // is new and ours.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            move_connections(watched, "no watch set");
            return LongCall {
                call,
                since,
                ready: None,
            };
        }
        // SAFETY: epfd was just returned open, and nothing else owns it.
        let ready = unsafe { OwnedFd::from_raw_fd(epfd) };
        let mut conns = watched.conns.lock().unwrap_or_else(|e| e.into_inner());
        let (holding, idle): (Vec<_>, Vec<_>) = conns
            .iter()
            .filter_map(|(key, place)| match place {
                Place::Here(conn) if conn.passage().is_some() => {
                    Some((key, conn.stream.fd(), conn.holds_input()))
                }
                _ => None,
            })
            .partition(|&(_, _, holds_input)| holds_input);
        for &(key, fd, _) in &idle {
            watch_fd(&ready, key, fd);
        }
        let moved = send_on(
            watched,
            &mut conns,
            holding.iter().map(|&(k, fd, _)| (k, fd)),
        );
        drop(conns);
        let watching = idle.len();
        log::debug!(
            "a call runs long: {moved} connections handed to other workers, {watching} watched for a request"
        );
        LongCall {
            call,
            since,
            ready: Some(ready),
        }
    }

    /// Some connections are watched (none once all were sent away).
    fn watching(&self) -> bool {
        self.ready.is_some()
    }

    /// Wait up to `wait_ms` for a request on a watched connection, and
    /// send on each one a request has come to; once the call has run
    /// `MOVE_ALL_AFTER`, every connection that can move.
    fn look(&mut self, watched: &Watched, wait_ms: libc::c_int) {
        let Some(ready) = &self.ready else { return };
        if self.since.elapsed() >= MOVE_ALL_AFTER {
            self.ready = None;
            move_connections(watched, "it may be hung");
            return;
        }
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; READY_PER_LOOK];
        // SAFETY: `ready` is an open epoll descriptor and `events` has room
        // for READY_PER_LOOK entries.
        let n = unsafe {
            libc::epoll_wait(
                ready.as_raw_fd(),
                events.as_mut_ptr(),
                READY_PER_LOOK as libc::c_int,
                wait_ms,
            )
        };
        if n <= 0 {
            return;
        }
        // Each reported once (EPOLLONESHOT): sent on, or left where it is.
        let ready_keys = events[..n as usize]
            .iter()
            .map(|event| ((event.u64 >> 32) as usize, event.u64 as u32 as RawFd));
        let mut conns = watched.conns.lock().unwrap_or_else(|e| e.into_inner());
        let moved = send_on(watched, &mut conns, ready_keys);
        drop(conns);
        if moved > 0 {
            log::debug!(
                "a call runs long: {moved} connections handed to other workers (a request came)"
            );
        }
    }
}

fn watch_fd(ready: &OwnedFd, key: usize, fd: RawFd) {
    let mut event = libc::epoll_event {
        // Once: a connection reported is sent away or left, never looked
        // at twice (a descriptor sent away keeps its registration alive).
        events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
        u64: ((key as u64) << 32) | u64::from(fd as u32),
    };
    // SAFETY: both descriptors are open (the connection's is held in the
    // slab, whose lock the caller holds) and `event` is valid.
    unsafe { libc::epoll_ctl(ready.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
}

/// Send on the connections under `keys` (each its slab key and
/// descriptor) that are still there and can move: how many went.
fn send_on(
    watched: &Watched,
    conns: &mut Slab<Place>,
    keys: impl IntoIterator<Item = (usize, RawFd)>,
) -> usize {
    let onward = onward(watched);
    let moved = keys
        .into_iter()
        .filter(|&(key, fd)| {
            crate::server::hand_off_one(conns, key, fd, &watched.registry, &onward)
        })
        .count();
    // Peers choose by it; the loop's thread, in the call, cannot say it.
    watched.slot.set_connections(conns.len());
    moved
}

fn onward(watched: &Watched) -> crate::server::Onward<'_> {
    crate::server::Onward {
        peers: watched.peers,
        inbox: watched.inbox,
        channel: watched.channel,
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
            watched.channel.send(&passage).is_err() && !put_back_in_inbox(watched, &passage)
        });
    }
}

/// Send a connection back to this worker's own inbox, counted there as
/// any connection on its way is (taking it uncounts it).
fn put_back_in_inbox(watched: &Watched, passage: &crate::handoff::Passage<'_>) -> bool {
    let _taking = watched.slot.start_sending();
    let sent = watched.inbox.send_to(watched.slot, passage).is_ok();
    if !sent {
        watched.slot.unsend();
    }
    sent
}

/// Hand every connection that can move to free workers (or the channel).
/// The loop's thread is in a call and holds none of them (the one in the
/// call is not in the slab).
fn move_connections(watched: &Watched, why: &str) {
    let mut conns = watched.conns.lock().unwrap_or_else(|e| e.into_inner());
    let moved = crate::server::hand_off_movable(
        &mut conns,
        &watched.registry,
        &onward(watched),
        MAX_MOVED_PER_CALL,
    );
    // Peers choose by it; the loop's thread, in the call, cannot say it.
    watched.slot.set_connections(conns.len());
    drop(conns);
    log::debug!("a call runs long: {moved} connections handed to other workers ({why})");
}
