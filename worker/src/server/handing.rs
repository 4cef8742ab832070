//! How the event loop takes on and passes on work: which sources it polls
//! (listeners, the hand-off channel, its inbox) in each accept mode, taking
//! handed-over connections, and handing its own to other workers (when it
//! cannot serve them, when it is replaced, to even out connections).
//!
//! Two ways out: the shared channel, for whichever worker is free first,
//! and a chosen worker's inbox (see `handoff::inbox`). Evening out load
//! always names its worker from the scoreboard: a ready request goes to
//! the least loaded (`dispatch`), a connection just served to the free one
//! holding the fewest (`rebalance`), a busy or replaced worker's idle
//! connections to free workers (`Onward`), the channel only when none is
//! free. The sender counts the connection in the target's slot before it
//! sends (`Slot::start_sending`), the target uncounts it as it takes it:
//! peers see it as load to come, and a draining worker stays until it
//! came. A failed send leaves the connection where it was.

use std::io;

use mio::{Interest, Token};
use slab::Slab;

use super::{CHANNEL_TOKEN, EventLoop, INBOX_TOKEN, LISTENER_TOKEN_BASE, Place, lock};
use crate::conn::Conn;
use crate::context::AcceptMode;
use crate::handoff::{Arrival, Channel, Inbox, Passage, SendError};
use crate::scoreboard::{Peers, Slot};

impl EventLoop {
    /// Connections other workers handed over: as many as there are free
    /// threads (the loop's own thread takes one at a time; the channel
    /// stays readable for the next).
    pub(super) fn take_handed_off(&mut self) {
        // A replaced worker draining takes nothing more, even from an event
        // of the batch that brought its TERM: what it took would stay.
        if self.shared.is_draining() && !self.serves_handoffs_while_draining() {
            return;
        }
        let free = if self.pool.is_some() {
            self.threads.saturating_sub(self.in_calls)
        } else {
            1
        };
        for _ in 0..free {
            if !self.take_one_handed_off() {
                return;
            }
        }
    }

    /// Take one connection from the channel, if one waits: `false` if none.
    pub(super) fn take_one_handed_off(&mut self) -> bool {
        match self.channel.receive(&mut self.channel_buf) {
            Ok(Some(arrival)) => {
                let conn = Conn::adopt(arrival, self.shared.now_ms, &mut self.shared);
                let _kept = self.serve_new(conn, false);
                true
            }
            Ok(None) => false,
            Err(e) => {
                log::error!("taking a connection from another worker failed: {e}");
                false
            }
        }
    }

    /// Send the connection under `key` to the channel: `false` if it stays.
    pub(super) fn hand_off_key(&mut self, key: usize) -> bool {
        let mut conns = lock(&self.conns);
        let channel = self.channel;
        hand_off_at(&mut conns, key, self.poll.registry(), &|p| channel.send(p)).is_ok()
    }

    /// Send the connection under `key` to the inbox of the worker in slot
    /// `to`, if it still takes work: `false` if it stays.
    pub(super) fn send_key_to(&mut self, key: usize, to: usize) -> bool {
        let target = self.shared.settings.peers.slot(to);
        let inbox = self.inbox;
        let mut conns = lock(&self.conns);
        hand_off_at(&mut conns, key, self.poll.registry(), &|p| {
            inbox.send_counted(target, p)
        })
        .is_ok()
    }

    /// Connections other workers sent to this one: all of them (a few at
    /// most; the inbox is this worker's alone). A worker replaced passes
    /// them on to the shared channel instead, for the workers that stay.
    /// Whether any came.
    pub(super) fn take_from_inbox(&mut self) -> bool {
        let mut any = false;
        if self.shared.settings.slot.is_replaced() && self.shared.is_draining() {
            let slot = self.shared.settings.slot;
            while let Some(left) =
                forward_inbox(self.inbox, slot, self.channel, &mut self.channel_buf)
            {
                any = true;
                // The channel is full: served here, with the others.
                let conn = Conn::adopt(left, self.shared.now_ms, &mut self.shared);
                let _kept = self.serve_new(conn, false);
            }
            return any;
        }
        loop {
            match self
                .inbox
                .receive(&mut self.channel_buf, self.shared.settings.slot)
            {
                Ok(Some(arrival)) => {
                    any = true;
                    let conn = Conn::adopt(arrival, self.shared.now_ms, &mut self.shared);
                    let _kept = self.serve_new(conn, false);
                }
                Ok(None) => return any,
                Err(e) => {
                    log::error!("taking a connection sent to this worker failed: {e}");
                    return any;
                }
            }
        }
    }

    /// Connections even out over time: one that was just accepted or just
    /// served goes to the free worker holding the fewest, if that is at
    /// least two fewer (a client that keeps its connection would otherwise
    /// stay where it was first accepted or handed to). Between requests,
    /// so nothing is in flight on it. Sent to that worker's inbox, not to
    /// the shared channel: from there it would as often come back here.
    pub(super) fn rebalance(&mut self, key: usize, held: usize) {
        if held < 2 {
            return;
        }
        let peers = self.shared.settings.peers;
        if let Some(to) = peers.free_one_with_fewer_connections(held - 1)
            && self.send_key_to(key, to)
        {
            self.refresh_accept_mode();
        }
    }

    /// Take new work only while it can be served: a free thread, and room
    /// under `--worker-connections` (back-pressure: what is not accepted
    /// waits in the listen queue, or in the channel for another worker).
    pub(super) fn refresh_accept_mode(&mut self) {
        if matches!(
            self.shared.accept,
            AcceptMode::Paused | AcceptMode::Draining
        ) {
            return;
        }
        let held = lock(&self.conns).len();
        self.shared.settings.slot.set_connections(held);
        let mode = if self.pool.is_some() && self.in_calls >= self.threads {
            AcceptMode::Full
        } else if held >= self.max_connections {
            AcceptMode::AtCapacity
        } else {
            AcceptMode::Accepting
        };
        self.set_accept_mode(mode);
    }

    /// Listeners are polled only while accepting; the channel too, and
    /// while draining (what was handed over is served, so that nothing is
    /// stranded in it).
    pub(super) fn set_accept_mode(&mut self, mode: AcceptMode) {
        let was = self.shared.accept;
        if was == mode {
            return;
        }
        self.shared.accept = mode;
        self.shared
            .settings
            .slot
            .set_taking(mode == AcceptMode::Accepting);
        let listening = |m: AcceptMode| m == AcceptMode::Accepting;
        let drain_takes = self.serves_handoffs_while_draining();
        let taking = |m: AcceptMode| {
            m == AcceptMode::Accepting || (m == AcceptMode::Draining && drain_takes)
        };
        if listening(was) != listening(mode) {
            for (i, listener) in self.listeners.iter_mut().enumerate() {
                let registry = self.poll.registry();
                let _ = if listening(mode) {
                    registry.register(
                        listener.source(),
                        Token(LISTENER_TOKEN_BASE + i),
                        Interest::READABLE,
                    )
                } else {
                    registry.deregister(listener.source())
                };
            }
        }
        if taking(was) != taking(mode)
            && let Err(e) = self.watch_channel(taking(mode))
        {
            log::error!("polling the hand-off channel failed: {e}");
        }
    }

    /// A draining worker serves what is handed to it, so that nothing is
    /// stranded in the channel when every worker stops; not one that is
    /// replaced while the others go on (what it hands over must reach them,
    /// not come back to it).
    pub(super) fn serves_handoffs_while_draining(&self) -> bool {
        !self.shared.settings.slot.is_replaced()
    }

    /// Poll the channel, or stop. Level-triggered and exclusive: one free
    /// worker is woken per connection handed over, and it is woken again
    /// while more wait.
    pub(super) fn watch_channel(&self, on: bool) -> io::Result<()> {
        let op = if on {
            libc::EPOLL_CTL_ADD
        } else {
            libc::EPOLL_CTL_DEL
        };
        let events = libc::EPOLLIN | libc::EPOLLEXCLUSIVE;
        self.watch_level(op, self.channel.receiver_fd(), CHANNEL_TOKEN, events)
    }

    /// Poll this worker's inbox, level-triggered, as long as it runs.
    pub(super) fn watch_inbox(&self) -> io::Result<()> {
        match self.inbox.fd() {
            Some(fd) => self.watch_level(libc::EPOLL_CTL_ADD, fd, INBOX_TOKEN, libc::EPOLLIN),
            None => Ok(()),
        }
    }

    /// A descriptor polled level-triggered (mio's registrations are
    /// edge-triggered).
    fn watch_level(&self, op: i32, fd: i32, token: Token, events: i32) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: token.0 as u64,
        };
        // SAFETY: epoll_ctl on this loop's own epoll descriptor with a
        // descriptor that lives as long as the process (the channel's, the
        // inbox's), and a valid event.
        let rc = unsafe { libc::epoll_ctl(self.poll.as_raw_fd(), op, fd, &mut event) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A worker being replaced (a reload, a recycle, one worker fewer)
    /// passes its idle connections to the workers that stay, instead of
    /// closing them at their next request: a client, or a proxy's pool,
    /// never sees them go.
    pub(super) fn hand_off_idle(&mut self) {
        let mut conns = lock(&self.conns);
        let onward = Onward {
            peers: self.shared.settings.peers,
            inbox: self.inbox,
            channel: self.channel,
        };
        let moved = hand_off_movable(&mut conns, self.poll.registry(), &onward, usize::MAX);
        drop(conns);
        if moved > 0 {
            log::debug!("{moved} connections handed to the workers that stay");
        }
    }
}

/// Pass `conn` on with `send` (to the channel, or to a worker's inbox). On
/// success the caller drops it, which closes this worker's descriptor; the
/// socket lives on in the message. Taken out of this loop's poller only
/// once sent, so that a failure leaves it as it was.
fn hand_off(conn: &mut Conn, registry: &mio::Registry, send: Send<'_>) -> Result<(), SendError> {
    let passage = conn.passage().ok_or(SendError::NotMovable)?;
    send(&passage)?;
    // The message holds the socket open: without this the poller would
    // keep reporting it under a key that may be reused.
    let _ = registry.deregister(conn.stream.source());
    Ok(())
}

/// How a connection is sent: to the shared channel, or to an inbox.
type Send<'a> = &'a dyn Fn(&Passage<'_>) -> Result<(), SendError>;

/// Send the connection under `key`, and drop it here if it went.
fn hand_off_at(
    conns: &mut Slab<Place>,
    key: usize,
    registry: &mio::Registry,
    send: Send<'_>,
) -> Result<(), SendError> {
    let Some(Place::Here(conn)) = conns.get_mut(key) else {
        return Err(SendError::NotMovable);
    };
    let sent = hand_off(conn, registry, send);
    match &sent {
        // Its descriptor closes with it; the socket lives on in the channel.
        Ok(()) => drop(conns.remove(key)),
        Err(e) => log::debug!("a connection stays in this worker: {e}"),
    }
    sent
}

/// Where the connections of a worker that cannot serve them go: each to
/// the inbox of a free worker (the one holding the fewest; those on their
/// way count, so that the next goes to another), or, with none free, to
/// the shared channel for whichever is free first.
pub struct Onward<'a> {
    pub peers: Peers,
    pub inbox: &'a Inbox,
    pub channel: &'a Channel,
}

impl Onward<'_> {
    fn send(&self, passage: &Passage<'_>) -> Result<(), SendError> {
        if let Some(to) = self.peers.free_one_with_fewer_connections(usize::MAX)
            && self
                .inbox
                .send_counted(self.peers.slot(to), passage)
                .is_ok()
        {
            return Ok(());
        }
        self.channel.send(passage)
    }
}

/// Send up to `most` of the connections that can move now; stop when the
/// channel takes no more. Returns how many went. (The loop's thread when a
/// worker is replaced; the affinity watcher while that thread is in a call.)
pub fn hand_off_movable(
    conns: &mut Slab<Place>,
    registry: &mio::Registry,
    onward: &Onward<'_>,
    most: usize,
) -> usize {
    let keys: Vec<usize> = conns
        .iter()
        .filter(|(_, place)| matches!(place, Place::Here(conn) if conn.passage().is_some()))
        .map(|(key, _)| key)
        .take(most)
        .collect();
    let mut moved = 0;
    for key in keys {
        match hand_off_at(conns, key, registry, &|p| onward.send(p)) {
            Ok(()) => moved += 1,
            // Too much carried: this one stays, others may go.
            Err(SendError::TooLarge(_) | SendError::NotMovable | SendError::NotTaking) => {}
            Err(SendError::Full | SendError::Io(_)) => break,
        }
    }
    moved
}

/// Send the connection under `key` onward if it is still the one on
/// descriptor `fd` and can move: `true` if it went.
pub fn hand_off_one(
    conns: &mut Slab<Place>,
    key: usize,
    fd: std::os::fd::RawFd,
    registry: &mio::Registry,
    onward: &Onward<'_>,
) -> bool {
    let same = matches!(conns.get(key), Some(Place::Here(conn)) if conn.stream.fd() == fd);
    same && hand_off_at(conns, key, registry, &|p| onward.send(p)).is_ok()
}

/// Pass what waits in this worker's inbox on to the shared channel, for
/// whichever worker is free first (a worker replaced; the watcher while a
/// call runs long). Stops at the first the channel does not take, and
/// returns it, for the caller to keep.
pub fn forward_inbox(
    inbox: &Inbox,
    own: &Slot,
    channel: &Channel,
    buf: &mut Vec<u8>,
) -> Option<Arrival> {
    loop {
        match inbox.receive(buf, own) {
            Ok(Some(arrival)) => {
                if let Err(e) = channel.send(&arrival.passage()) {
                    log::debug!("a connection sent to this worker stays: {e}");
                    return Some(arrival);
                }
            }
            Ok(None) => return None,
            Err(e) => {
                log::error!("taking a connection sent to this worker failed: {e}");
                return None;
            }
        }
    }
}
