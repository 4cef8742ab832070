//! The worker's event loop: one `mio` poll over the inherited listeners, the
//! hand-off channel, the client connections and the signal queue. It takes
//! new connections only while it can serve them (a free thread, or its own
//! thread free), passes on the ones it cannot serve now (see `handoff`),
//! ticks once a second to beat the heartbeat and expire idle or slow
//! connections, and drains on `TERM`.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use slab::Slab;

use crate::conn::{Conn, Next};
use crate::context::{AcceptMode, Shared};
use crate::handoff::{Channel, Inbox};
use crate::listener::{Listener, ListenerSocket};
use crate::pool::Pool;
use crate::reload::FileWatch;
use crate::scoreboard::{Wish, monotonic_ms};
use crate::signals::SignalQueue;
use crate::watcher::{self, Watched};

mod handing;
pub use handing::{Onward, forward_inbox, hand_off_movable, hand_off_one};

const SIGNAL_TOKEN: Token = Token(usize::MAX);
/// The pool's threads hand connections back through this waker.
const WAKER_TOKEN: Token = Token(usize::MAX - 1);
/// Connections handed over by other workers.
const CHANNEL_TOKEN: Token = Token(usize::MAX - 2);
/// The application's files changed (`--reload`).
const RELOAD_TOKEN: Token = Token(usize::MAX - 3);
/// Connections other workers sent to this one (its inbox).
const INBOX_TOKEN: Token = Token(usize::MAX - 4);
/// Listener `i` is `Token(LISTENER_TOKEN_BASE + i)`.
const LISTENER_TOKEN_BASE: usize = usize::MAX - 1024;
const EVENTS_CAPACITY: usize = 1024;
/// The tick: heartbeat and connection deadlines are checked this often.
const TICK_MS: u64 = 1000;

/// Where a connection of the loop's is: here, or in a call (on an
/// application thread, or the loop's own) since a time, its key kept for
/// its return.
pub enum Place {
    Here(Conn),
    InCall { since_ms: u64 },
}

/// A worker's event loop: its listeners, its connections (each here or in
/// a call), the optional pool of application threads, the hand-off channel
/// and the signal queue. The connections are behind a lock only so that
/// the affinity watcher can move them while the loop's thread is in a
/// call; the pool's threads hand connections back through the waker.
pub struct EventLoop {
    poll: Poll,
    listeners: Vec<Listener>,
    conns: Arc<Mutex<Slab<Place>>>,
    pool: Option<Pool>,
    /// Threads that run calls (1: the loop's own), and how many hold one.
    threads: usize,
    in_calls: usize,
    /// `--worker-connections`.
    max_connections: usize,
    /// This worker's own `--max-requests` (with its jitter), if any.
    max_requests: Option<u64>,
    /// `--reload`: the application's files, watched.
    reload: Option<FileWatch>,
    channel: &'static Channel,
    /// This worker's own way in (see `handoff::inbox`).
    inbox: &'static Inbox,
    /// Scratch space for receiving hand-offs.
    channel_buf: Vec<u8>,
    /// `--timeout`: a thread holding a request longer stops the heartbeat.
    timeout_ms: u64,
    shared: Shared,
    signals: SignalQueue,
    master_pid: i32,
    next_tick_ms: u64,
    /// This worker's request count when the current batch of events began:
    /// once it moved, more ready work in the batch is left to an idle peer.
    batch_start_requests: u64,
    reopen_error_log: fn(),
}

/// What the event loop is made from.
pub struct LoopSetup {
    /// In the order of `shared.settings.listeners`.
    pub listeners: Vec<ListenerSocket>,
    pub channel: &'static Channel,
    pub inbox: &'static Inbox,
    pub shared: Shared,
    pub signals: SignalQueue,
    pub master_pid: i32,
    pub threads: usize,
    pub timeout_ms: u64,
    pub max_connections: usize,
    pub max_requests: Option<u64>,
    pub reload: Option<FileWatch>,
    pub reopen_error_log: fn(),
}

impl EventLoop {
    pub fn new(setup: LoopSetup) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let mut listeners = Vec::new();
        for (i, socket) in setup.listeners.into_iter().enumerate() {
            // SAFETY: the master hands each worker its inherited listening
            // descriptors; the worker owns them from here on (the master's
            // copies in this process's memory are never dropped: a worker
            // leaves through process::exit).
            let mut listener = unsafe { socket.into_listener() };
            poll.registry().register(
                listener.source(),
                Token(LISTENER_TOKEN_BASE + i),
                Interest::READABLE,
            )?;
            listeners.push(listener);
        }
        poll.registry().register(
            &mut mio::unix::SourceFd(&setup.signals.fd()),
            SIGNAL_TOKEN,
            Interest::READABLE,
        )?;
        let shared = setup.shared;
        let pool = if setup.threads > 1 {
            let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER_TOKEN)?);
            Some(Pool::start(
                setup.threads,
                shared.settings,
                shared.access_log,
                waker,
            )?)
        } else {
            None
        };
        let event_loop = EventLoop {
            poll,
            listeners,
            conns: Arc::new(Mutex::new(Slab::with_capacity(1024))),
            pool,
            threads: setup.threads,
            in_calls: 0,
            max_connections: setup.max_connections.max(1),
            max_requests: setup.max_requests,
            reload: setup.reload,
            channel: setup.channel,
            inbox: setup.inbox,
            channel_buf: Vec::new(),
            timeout_ms: setup.timeout_ms,
            shared,
            signals: setup.signals,
            master_pid: setup.master_pid,
            next_tick_ms: 0,
            batch_start_requests: 0,
            reopen_error_log: setup.reopen_error_log,
        };
        event_loop.shared.settings.slot.set_taking(true);
        event_loop.watch_channel(true)?;
        event_loop.watch_inbox()?;
        if let Some(watch) = &event_loop.reload {
            event_loop.poll.registry().register(
                &mut mio::unix::SourceFd(&watch.fd()),
                RELOAD_TOKEN,
                Interest::READABLE,
            )?;
        }
        if event_loop.pool.is_none() {
            watcher::start(Watched {
                clock: event_loop.shared.settings.call_clock,
                slot: event_loop.shared.settings.slot,
                peers: event_loop.shared.settings.peers,
                conns: Arc::clone(&event_loop.conns),
                registry: event_loop.poll.registry().try_clone()?,
                channel: event_loop.channel,
                inbox: event_loop.inbox,
            })?;
        }
        Ok(event_loop)
    }

    /// Serve until told to stop; returns when the worker should exit.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = std::time::Duration::from_millis(TICK_MS);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.shared.now_ms = monotonic_ms();
            self.shared.date.refresh();
            self.batch_start_requests = self.shared.settings.slot.requests();
            if !self.holds_hung_request() {
                self.shared.settings.slot.beat(self.shared.now_ms);
            }
            // Signals first: a TERM that arrived with a new connection in the
            // same batch must stop the worker from accepting it.
            if events.iter().any(|e| e.token() == SIGNAL_TOKEN) {
                self.on_signals();
            }
            for event in events.iter() {
                match event.token() {
                    SIGNAL_TOKEN => {}
                    WAKER_TOKEN => self.take_back_finished(),
                    CHANNEL_TOKEN => self.take_handed_off(),
                    INBOX_TOKEN => {
                        self.take_from_inbox();
                    }
                    RELOAD_TOKEN => {
                        if let Some(file) = self.reload.as_ref().and_then(FileWatch::changed) {
                            self.ask_for_reload(&file.display().to_string());
                        }
                    }
                    Token(t) if t >= LISTENER_TOKEN_BASE => self.accept(t - LISTENER_TOKEN_BASE),
                    Token(key) => self.on_conn_ready(key, self.serves_inline(), false),
                }
            }
            if self.shared.now_ms >= self.next_tick_ms {
                self.next_tick_ms = self.shared.now_ms + TICK_MS;
                self.tick();
            }
            self.shared.submit_access_log();
            self.check_max_requests();
            if self.shared.is_draining() {
                // A peer sending to this worker's inbox as it stopped
                // taking work: stay for what it sends.
                let idle = lock(&self.conns).is_empty()
                    && !self.take_from_inbox()
                    && self.shared.settings.slot.queued() == 0;
                if idle && !(self.serves_handoffs_while_draining() && self.take_one_handed_off()) {
                    self.flush_access_log();
                    return Ok(());
                }
            }
        }
    }

    /// `--max-requests`: past its limit the worker asks the master for a
    /// replacement, and serves on until the replacement has booted and the
    /// master stops it (capacity never dips).
    fn check_max_requests(&mut self) {
        let slot = self.shared.settings.slot;
        if let Some(limit) = self.max_requests
            && slot.requests() >= limit
        {
            self.max_requests = None;
            // The requests' lines come before the worker says it leaves.
            self.flush_access_log();
            log::info!("Autorestarting worker after current request.");
            slot.set_wish(Wish::MaxRequests);
            self.wake_master();
        }
    }

    /// Wait until the access log's writer has written what this worker's
    /// threads handed over.
    fn flush_access_log(&self) {
        if let Some(log) = self.shared.access_log {
            log.flush();
        }
    }

    /// `--reload`: the application changed; the master reloads every
    /// worker, as on `HUP`.
    fn ask_for_reload(&self, what: &str) {
        log::info!("--reload: {what} changed; asking the master to reload");
        self.shared.settings.slot.set_wish(Wish::Reload);
        self.wake_master();
    }

    /// Wake the master now rather than at its next tick, after writing a
    /// wish in the slot: a child's state changed, which is what SIGCHLD
    /// tells it.
    fn wake_master(&self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.master_pid), Signal::SIGCHLD);
    }

    /// Run the application's shutdown hook, once, as the worker leaves.
    pub fn shutdown_app(&self) {
        self.shared.settings.app.shutdown();
    }

    /// With application threads, the loop beats the heartbeat for them: it
    /// stops when one has held a request past `--timeout`, so that the
    /// master replaces the worker as it would a single-threaded one.
    fn holds_hung_request(&self) -> bool {
        self.timeout_ms != 0
            && self.pool.is_some()
            && lock(&self.conns).iter().any(|(_, place)| {
                matches!(place, Place::InCall { since_ms } if self.shared.now_ms.saturating_sub(*since_ms) > self.timeout_ms)
            })
    }

    fn take_back_finished(&mut self) {
        while let Some((key, conn)) = self.pool.as_ref().and_then(Pool::finished) {
            self.in_calls -= 1;
            lock(&self.conns)[key] = Place::Here(conn);
            self.on_conn_ready(key, false, true);
        }
        self.refresh_accept_mode();
    }

    fn accept(&mut self, index: usize) {
        while self.shared.accept == AcceptMode::Accepting {
            let (stream, peer) = match self.listeners[index]
                .accept(&self.shared.settings.forwarded_allow)
            {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of descriptors or memory: stop accepting until the
                    // next tick rather than spin on a listener that stays
                    // readable.
                    log::error!("accepting a connection failed: {e}; pausing accept for a tick");
                    self.set_accept_mode(AcceptMode::Paused);
                    return;
                }
            };
            let conn = Conn::new(stream, index, peer, self.shared.now_ms, &self.shared);
            if let Some((key, held)) = self.serve_new(conn, true) {
                // Declining to accept could strand a connection in the
                // listen queue (two workers each leaving it to the other);
                // passing it on through the channel cannot.
                self.rebalance(key, held);
            }
        }
    }

    /// A single-threaded worker answers a ready request on its own thread
    /// at once, unless it already answered one in this batch of events:
    /// then the request may be left to an idle peer (see `dispatch`).
    fn serves_inline(&self) -> bool {
        self.pool.is_none() && self.shared.settings.slot.requests() == self.batch_start_requests
    }

    /// A connection new to this worker (accepted, or handed over). Its
    /// request usually comes with it (the listener defers accept until
    /// data arrives): answer it before the poller hears of the connection,
    /// so that a one-shot connection never costs an epoll_ctl. `spread`:
    /// its request may still go to a less loaded worker; not for one just
    /// handed over (it came because this worker was free).
    /// Returns the key it is kept under and how many connections the worker
    /// then holds, if it is kept idle here.
    fn serve_new(&mut self, mut conn: Conn, spread: bool) -> Option<(usize, usize)> {
        let inline = self.pool.is_none() && (!spread || self.serves_inline());
        let next = conn.on_ready(&mut self.shared, inline);
        if next == Next::Close {
            conn.release(&mut self.shared);
            return None;
        }
        let mut conns = lock(&self.conns);
        let entry = conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            conn.stream.source(),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::error!("registering a connection failed: {e}");
            drop(conns);
            conn.release(&mut self.shared);
            return None;
        }
        entry.insert(Place::Here(conn));
        let held = conns.len();
        drop(conns);
        if next == Next::Dispatch {
            self.dispatch(key, spread);
            self.refresh_accept_mode();
            return None;
        }
        self.refresh_accept_mode();
        Some((key, held))
    }

    /// A connection with buffered requests that was not answered inline.
    /// It goes to whichever worker can serve it soonest: when every
    /// application thread here has a call, to the inbox of the least loaded
    /// worker if it holds fewer calls than this one, failing that to the
    /// shared channel; with `spread`, to such a worker if it also holds
    /// at least two connections fewer. Otherwise it is served here, on a
    /// free thread or on the loop's own.
    fn dispatch(&mut self, key: usize, spread: bool) {
        let load = if self.pool.is_some() {
            self.in_calls
        } else {
            1
        } as u32;
        let full = self.pool.is_some() && self.in_calls >= self.threads;
        let peers = self.shared.settings.peers;
        let to = if full {
            peers.least_loaded_below(load, usize::MAX)
        } else if spread && load > 0 {
            // Only to a worker holding at least two connections fewer, as
            // `rebalance` would: the connection moves with its request,
            // and moving it to one that holds as many would only make
            // `rebalance` move one back.
            let held = lock(&self.conns).len();
            peers.least_loaded_below(load, held.saturating_sub(1))
        } else {
            None
        };
        // To the least loaded worker's inbox; failing that, a worker with
        // every thread busy leaves it to whichever is free first.
        if to.is_some_and(|to| self.send_key_to(key, to)) || (full && self.hand_off_key(key)) {
            self.refresh_accept_mode();
            return;
        }
        let Some(pool) = &self.pool else {
            self.on_conn_ready(key, true, false);
            return;
        };
        let in_call = Place::InCall {
            since_ms: self.shared.now_ms,
        };
        if let Some(Place::Here(conn)) = lock(&self.conns)
            .get_mut(key)
            .map(|p| std::mem::replace(p, in_call))
        {
            pool.submit(key, conn, self.shared.is_draining());
            self.in_calls += 1;
        }
        self.refresh_accept_mode();
    }

    /// `after_call`: an application thread just finished a request on it
    /// (it may then go to a worker holding fewer, as after one answered
    /// here).
    fn on_conn_ready(&mut self, key: usize, inline: bool, after_call: bool) {
        let in_call = Place::InCall {
            since_ms: self.shared.now_ms,
        };
        // Taken out while it works, so that the watcher may move the others
        // while this one is in a call on the loop's thread.
        let mut conn = {
            let mut conns = lock(&self.conns);
            match conns.get_mut(key) {
                Some(place @ Place::Here(_)) => match std::mem::replace(place, in_call) {
                    Place::Here(conn) => conn,
                    Place::InCall { .. } => return,
                },
                // Gone, or in a call: it is looked at again when the call
                // returns.
                _ => return,
            }
        };
        let served_before = self.shared.settings.slot.requests();
        match conn.on_ready(&mut self.shared, inline) {
            Next::Close => {
                lock(&self.conns).remove(key);
                conn.release(&mut self.shared);
                self.refresh_accept_mode();
            }
            Next::Keep => {
                let held = {
                    let mut conns = lock(&self.conns);
                    conns[key] = Place::Here(conn);
                    conns.len()
                };
                if after_call || self.shared.settings.slot.requests() != served_before {
                    self.rebalance(key, held);
                }
            }
            Next::Dispatch => {
                lock(&self.conns)[key] = Place::Here(conn);
                self.dispatch(key, true);
            }
        }
    }

    fn close(&mut self, key: usize) {
        // Closing the descriptor takes it out of the poller: no
        // deregistration (one system call fewer per connection).
        let place = lock(&self.conns).try_remove(key);
        if let Some(Place::Here(conn)) = place {
            conn.release(&mut self.shared);
        }
        self.refresh_accept_mode();
    }

    fn tick(&mut self) {
        // SAFETY: getppid cannot fail.
        if unsafe { libc::getppid() } != self.master_pid {
            log::warn!("the master is gone; the worker stops");
            self.start_draining();
        }
        if self.shared.accept == AcceptMode::Paused {
            self.set_accept_mode(AcceptMode::Accepting);
            self.refresh_accept_mode();
        }
        let now = self.shared.now_ms;
        let expired: Vec<usize> = lock(&self.conns)
            .iter()
            .filter(|(_, place)| matches!(place, Place::Here(c) if c.deadline_ms <= now))
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            if let Some(Place::Here(conn)) = lock(&self.conns).get_mut(key)
                && conn.deadline_ms <= now
                && !conn.is_closing()
            {
                conn.on_timeout(&mut self.shared);
            }
            self.close(key);
        }
    }

    fn on_signals(&mut self) {
        self.signals.drain();
        if self.signals.take(Signal::SIGTERM) > 0 {
            self.start_draining();
        }
        // The WSGI bridge's module watcher (`--reload`) raises USR2.
        if self.signals.take(Signal::SIGUSR2) > 0 && self.reload.is_some() {
            self.ask_for_reload("a module of the application");
        }
        if self.signals.take(Signal::SIGUSR1) > 0 {
            (self.reopen_error_log)();
            if let Some(log) = self.shared.access_log {
                log.reopen();
            }
        }
    }

    /// `TERM`: stop accepting and finish what is open. An idle keep-alive
    /// connection is not cut: closing it could race a request the client is
    /// already sending, which would then be lost. Its next request is
    /// answered with `Connection: close`, or it is closed at its keep-alive
    /// deadline, as any idle connection is.
    fn start_draining(&mut self) {
        if self.shared.is_draining() {
            return;
        }
        log::debug!("draining: {} connections open", lock(&self.conns).len());
        self.shared.settings.call_clock.set_draining();
        self.set_accept_mode(AcceptMode::Draining);
        if self.shared.settings.slot.is_replaced() {
            self.hand_off_idle();
        }
    }
}

/// The connections, whichever thread holds them (the loop's, or the
/// watcher's while the loop's is in a call).
fn lock(conns: &Mutex<Slab<Place>>) -> MutexGuard<'_, Slab<Place>> {
    conns.lock().unwrap_or_else(|e| e.into_inner())
}
