//! The worker's event loop: one `mio` poll over the inherited listeners, the
//! client connections and the signal queue. It accepts, lets each ready
//! connection do its work, ticks once a second to beat the heartbeat and
//! expire idle or slow connections, and drains on `TERM`.

use std::io;
use std::os::fd::{FromRawFd, RawFd};

use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use slab::Slab;

use crate::conn::{Conn, Next};
use crate::context::{AcceptMode, Shared};
use crate::pool::Pool;
use crate::scoreboard::monotonic_ms;
use crate::signals::SignalQueue;
use crate::stream::{ListenerInfo, Peer, Stream};

const SIGNAL_TOKEN: Token = Token(usize::MAX);
/// The pool's threads hand connections back through this waker.
const WAKER_TOKEN: Token = Token(usize::MAX - 1);
/// Listener `i` is `Token(LISTENER_TOKEN_BASE + i)`.
const LISTENER_TOKEN_BASE: usize = usize::MAX - 1024;
const EVENTS_CAPACITY: usize = 1024;
/// The tick: heartbeat and connection deadlines are checked this often.
const TICK_MS: u64 = 1000;

/// Which family a listening socket is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    Tcp,
    Unix,
}

/// A listening descriptor, as the event loop takes it.
pub struct ListenerSocket {
    pub fd: RawFd,
    pub kind: SocketKind,
}

/// A listening socket handed down by the master.
pub struct ListenerFd {
    pub socket: ListenerSocket,
    pub info: ListenerInfo,
}

enum Listener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

impl Listener {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listener::Tcp(l) => l,
            Listener::Unix(l) => l,
        }
    }

    fn accept(&self, allow: &crate::ForwardedAllow) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => {
                // No TCP_NODELAY here: answers are written whole, so Nagle
                // never holds them; a call that sends pieces sets it.
                let (stream, addr) = l.accept()?;
                let trusted = allow.trusts(Some(addr.ip()));
                Ok((Stream::Tcp(stream), Peer::new(Some(addr), trusted)))
            }
            Listener::Unix(l) => {
                let (stream, _) = l.accept()?;
                Ok((Stream::Unix(stream), Peer::new(None, allow.trusts(None))))
            }
        }
    }
}

/// Where a connection of the loop's is: here, or lent to an application
/// thread (since the time it was handed over), its key kept for its return.
enum Place {
    Here(Conn),
    Lent { since_ms: u64 },
}

/// A worker's event loop: its listeners, its connections (each here or lent
/// to an application thread), the optional pool of application threads,
/// and the signal queue. Single-threaded; the pool's threads hand
/// connections back through the waker.
pub struct EventLoop {
    poll: Poll,
    listeners: Vec<Listener>,
    conns: Slab<Place>,
    pool: Option<Pool>,
    /// `--timeout`: a thread holding a request longer stops the heartbeat.
    timeout_ms: u64,
    shared: Shared,
    signals: SignalQueue,
    master_pid: i32,
    next_tick_ms: u64,
    reopen_error_log: fn(),
}

impl EventLoop {
    /// `listener_fds` in the order of `shared.settings.listeners`.
    pub fn new(
        listener_fds: Vec<ListenerSocket>,
        shared: Shared,
        signals: SignalQueue,
        master_pid: i32,
        threads: usize,
        timeout_ms: u64,
        reopen_error_log: fn(),
    ) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let mut listeners = Vec::new();
        for (i, ListenerSocket { fd, kind }) in listener_fds.into_iter().enumerate() {
            // SAFETY: the master hands each worker its inherited listening
            // descriptors; the worker owns them from here on (the master's
            // copies in this process's memory are never dropped: a worker
            // leaves through process::exit).
            let mut listener = unsafe {
                if kind == SocketKind::Unix {
                    Listener::Unix(mio::net::UnixListener::from_std(
                        std::os::unix::net::UnixListener::from_raw_fd(fd),
                    ))
                } else {
                    Listener::Tcp(mio::net::TcpListener::from_std(
                        std::net::TcpListener::from_raw_fd(fd),
                    ))
                }
            };
            poll.registry().register(
                listener.source(),
                Token(LISTENER_TOKEN_BASE + i),
                Interest::READABLE,
            )?;
            listeners.push(listener);
        }
        poll.registry().register(
            &mut mio::unix::SourceFd(&signals.fd()),
            SIGNAL_TOKEN,
            Interest::READABLE,
        )?;
        let pool = if threads > 1 {
            let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), WAKER_TOKEN)?);
            Some(Pool::start(
                threads,
                shared.settings,
                shared.access_log.clone(),
                waker,
            )?)
        } else {
            None
        };
        Ok(EventLoop {
            poll,
            listeners,
            conns: Slab::with_capacity(1024),
            pool,
            timeout_ms,
            shared,
            signals,
            master_pid,
            next_tick_ms: 0,
            reopen_error_log,
        })
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
                    Token(t) if t >= LISTENER_TOKEN_BASE => self.accept(t - LISTENER_TOKEN_BASE),
                    Token(key) => self.on_conn_ready(key),
                }
            }
            if self.shared.now_ms >= self.next_tick_ms {
                self.next_tick_ms = self.shared.now_ms + TICK_MS;
                self.tick();
            }
            if self.shared.is_draining() && self.conns.is_empty() {
                return Ok(());
            }
        }
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
            && self.conns.iter().any(|(_, e)| {
                matches!(e, Place::Lent { since_ms } if self.shared.now_ms.saturating_sub(*since_ms) > self.timeout_ms)
            })
    }

    fn take_back_finished(&mut self) {
        while let Some((key, conn)) = self.pool.as_ref().and_then(Pool::finished) {
            self.conns[key] = Place::Here(conn);
            self.on_conn_ready(key);
        }
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
                    self.stop_accepting(AcceptMode::Paused);
                    return;
                }
            };
            let mut conn = Conn::new(stream, index, peer, self.shared.now_ms, &self.shared);
            // The request usually comes with the connection (the listener
            // defers accept until data arrives): answer it before the poller
            // hears of the connection, so that a one-shot connection never
            // costs an epoll_ctl.
            let next = conn.on_ready(&mut self.shared, self.pool.is_none());
            if next == Next::Close {
                conn.release(&mut self.shared);
                continue;
            }
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) = self.poll.registry().register(
                conn.stream.source(),
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::error!("registering a connection failed: {e}");
                conn.release(&mut self.shared);
                continue;
            }
            entry.insert(Place::Here(conn));
            if next == Next::Dispatch {
                self.dispatch(key);
            }
        }
    }

    /// Hand a connection with buffered requests to an application thread.
    fn dispatch(&mut self, key: usize) {
        let lent = Place::Lent {
            since_ms: self.shared.now_ms,
        };
        if let (Place::Here(conn), Some(pool)) =
            (std::mem::replace(&mut self.conns[key], lent), &self.pool)
        {
            pool.submit(key, conn, self.shared.is_draining());
        }
    }

    fn on_conn_ready(&mut self, key: usize) {
        let Some(Place::Here(conn)) = self.conns.get_mut(key) else {
            // Gone, or with an application thread: it is looked at again
            // when the thread hands it back.
            return;
        };
        match conn.on_ready(&mut self.shared, self.pool.is_none()) {
            Next::Close => self.close(key),
            Next::Keep => {}
            Next::Dispatch => self.dispatch(key),
        }
    }

    fn close(&mut self, key: usize) {
        // Closing the descriptor takes it out of the poller: no
        // deregistration (one system call fewer per connection).
        if let Place::Here(conn) = self.conns.remove(key) {
            conn.release(&mut self.shared);
        }
    }

    fn stop_accepting(&mut self, mode: AcceptMode) {
        self.shared.accept = mode;
        for listener in &mut self.listeners {
            let _ = self.poll.registry().deregister(listener.source());
        }
    }

    fn resume_accepting(&mut self) {
        if self.shared.accept != AcceptMode::Paused {
            return;
        }
        self.shared.accept = AcceptMode::Accepting;
        for (i, listener) in self.listeners.iter_mut().enumerate() {
            let _ = self.poll.registry().register(
                listener.source(),
                Token(LISTENER_TOKEN_BASE + i),
                Interest::READABLE,
            );
        }
    }

    fn tick(&mut self) {
        // SAFETY: getppid cannot fail.
        if unsafe { libc::getppid() } != self.master_pid {
            log::warn!("the master is gone; the worker stops");
            self.start_draining();
        }
        self.resume_accepting();
        let now = self.shared.now_ms;
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, e)| matches!(e, Place::Here(c) if c.deadline_ms <= now))
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            if let Some(Place::Here(conn)) = self.conns.get_mut(key)
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
        if self.signals.take(Signal::SIGUSR1) > 0 {
            (self.reopen_error_log)();
            if let Some(log) = &self.shared.access_log
                && let Err(e) = log.lock().unwrap_or_else(|e| e.into_inner()).reopen()
            {
                log::error!("reopening the access log failed: {e}");
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
        self.stop_accepting(AcceptMode::Draining);
    }
}
