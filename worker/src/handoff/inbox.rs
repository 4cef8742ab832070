//! Targeted hand-off: each worker's inbox. The shared channel gives a
//! connection to whichever worker the kernel wakes, and the worker that
//! sends is usually the one awake: measured, about half of what workers
//! sent to even out their load came straight back to them. A connection
//! sent to even out the load must reach the worker chosen for it, so every
//! scoreboard slot has an inbox of its own, a Unix datagram socket in the
//! abstract namespace named from the master (its pid and a nonce) and the
//! slot's index.
//!
//! The master binds a slot's inbox before it first forks a worker into the
//! slot and keeps it open as long as it runs, never reading it: a worker
//! that dies leaves what was queued for it to the next worker in its slot.
//! Each worker receives from its own slot's inbox only, and sends from one
//! unbound socket of its own to any peer's inbox by name. The name is
//! reachable by every local process, so the inbox passes credentials
//! (`SO_PASSCRED`) and takes only connections sent by a process running as
//! the same user as the worker (who could do anything to it anyway); what
//! anyone else sends is closed unread.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, bind, setsockopt, socket, sockopt,
};

use super::{Arrival, Passage, SendError, grow_buffer, receive_on, send_on};
use crate::scoreboard::Slot;

/// Every slot's inbox, as the master keeps them.
#[derive(Debug)]
pub struct Inboxes {
    base: String,
    sockets: Vec<Option<OwnedFd>>,
}

impl Inboxes {
    /// No inbox yet; their names are `base` and a slot index, `base` unique
    /// to this master image (its pid, and when it started: a new image of
    /// the same process never meets the names of the old one's workers).
    pub fn new() -> Inboxes {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let nonce = crate::scoreboard::metrics::monotonic_ns();
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        Inboxes {
            base: format!("rgun-inbox-{}-{nonce:x}-{made}", std::process::id()),
            sockets: Vec::new(),
        }
    }

    /// The master, before forking a worker into `slot`: its inbox, bound
    /// once (a failure leaves the slot without one: connections then reach
    /// its worker through the shared channel only).
    pub fn ensure(&mut self, slot: usize) -> io::Result<()> {
        if self.sockets.len() <= slot {
            self.sockets.resize_with(slot + 1, || None);
        }
        if self.sockets[slot].is_none() {
            self.sockets[slot] = Some(bind_inbox(&address(&self.base, slot)?)?);
        }
        Ok(())
    }

    /// The forked worker in `slot`: its own inbox, and a socket to send to
    /// the others' (without one, it sends only to the shared channel). The
    /// other slots' inboxes are closed here (their workers and the master
    /// hold them).
    pub fn into_worker_inbox(self, slot: usize) -> Inbox {
        let own = self.sockets.into_iter().nth(slot).flatten();
        let sender = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        );
        let sender = match sender {
            Ok(sender) => {
                grow_buffer(sender.as_raw_fd());
                Some(sender)
            }
            Err(e) => {
                log::error!("creating the socket that sends to other workers' inboxes: {e}");
                None
            }
        };
        Inbox {
            own,
            sender,
            base: self.base,
            slot,
            uid: nix::unistd::geteuid().as_raw(),
        }
    }
}

impl Default for Inboxes {
    fn default() -> Self {
        Inboxes::new()
    }
}

/// A worker's inbox, and its way to others'.
#[derive(Debug)]
pub struct Inbox {
    /// None if the master could not make it.
    own: Option<OwnedFd>,
    sender: Option<OwnedFd>,
    base: String,
    slot: usize,
    /// The worker's effective user: only its own sends are taken.
    uid: u32,
}

impl Inbox {
    /// The socket to poll for connections sent to this worker.
    pub fn fd(&self) -> Option<RawFd> {
        self.own.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Send a connection to the worker in `slot`; on success the caller
    /// closes its descriptor. Fails if that inbox is full or missing:
    /// nothing is sent, the connection stays with the caller.
    pub fn send_to(&self, slot: usize, passage: &Passage<'_>) -> Result<(), SendError> {
        let sender = self
            .sender
            .as_ref()
            .ok_or(SendError::Io(nix::Error::ENOTCONN))?;
        let to = address(&self.base, slot)?;
        send_on(sender.as_raw_fd(), Some(&to), passage)
    }

    /// Put back a connection taken from this worker's own inbox.
    pub fn send_to_self(&self, passage: &Passage<'_>) -> Result<(), SendError> {
        self.send_to(self.slot, passage)
    }

    /// Take one connection sent to this worker, if one waits, and uncount
    /// it in the worker's slot; what another user sent is closed and
    /// skipped.
    pub fn receive(&self, buf: &mut Vec<u8>, slot: &Slot) -> io::Result<Option<Arrival>> {
        let Some(own) = &self.own else {
            return Ok(None);
        };
        loop {
            match receive_on(own.as_raw_fd(), buf) {
                Ok(Some((arrival, Some(creds)))) if creds.uid() == self.uid => {
                    slot.took_one();
                    return Ok(Some(arrival));
                }
                Ok(Some((_, creds))) => {
                    log::warn!(
                        "refused a connection sent to this worker's inbox by another user \
                         ({creds:?})"
                    );
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    // Most likely a message taken and found malformed.
                    slot.took_one();
                    return Err(e);
                }
            }
        }
    }
}

/// The abstract-namespace address of `slot`'s inbox.
fn address(base: &str, slot: usize) -> nix::Result<UnixAddr> {
    UnixAddr::new_abstract(format!("{base}-{slot}").as_bytes())
}

fn bind_inbox(addr: &UnixAddr) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::PassCred, &true)?;
    bind(fd.as_raw_fd(), addr)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::ConnKind;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn passage<'a>(fd: RawFd, input: &'a [u8]) -> Passage<'a> {
        Passage {
            fd,
            kind: ConnKind::Unix,
            listener: 1,
            peer_addr: b"",
            peer_port: 0,
            output: b"",
            input,
        }
    }

    #[test]
    fn a_connection_reaches_the_slot_it_is_sent_to_and_no_other() {
        let mut inboxes = Inboxes::new();
        for slot in 0..3 {
            inboxes.ensure(slot).unwrap();
        }
        let base = inboxes.base.clone();
        let sockets: Vec<OwnedFd> = inboxes.sockets.into_iter().flatten().collect();
        let inbox = |slot: usize, own: OwnedFd| Inbox {
            own: Some(own),
            sender: socket(
                AddressFamily::Unix,
                SockType::Datagram,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                None,
            )
            .ok(),
            base: base.clone(),
            slot,
            uid: nix::unistd::geteuid().as_raw(),
        };
        let mut it = sockets.into_iter();
        let (zero, one, two) = (
            inbox(0, it.next().unwrap()),
            inbox(1, it.next().unwrap()),
            inbox(2, it.next().unwrap()),
        );
        let (ours, mut client) = UnixStream::pair().unwrap();
        client.write_all(b"queued").unwrap();
        zero.send_to(2, &passage(ours.as_raw_fd(), b"GET /"))
            .unwrap();
        drop(ours);
        let mut buf = Vec::new();
        let slot = Slot::default();
        assert!(one.receive(&mut buf, &slot).unwrap().is_none());
        assert!(zero.receive(&mut buf, &slot).unwrap().is_none());
        let arrival = two
            .receive(&mut buf, &slot)
            .unwrap()
            .expect("sent to slot 2");
        assert_eq!(arrival.input, b"GET /");
        let mut moved = UnixStream::from(arrival.fd);
        let mut queued = [0u8; 6];
        moved.read_exact(&mut queued).unwrap();
        assert_eq!(&queued, b"queued");
        // Put back, it is there again.
        let (ours, _client) = UnixStream::pair().unwrap();
        two.send_to_self(&passage(ours.as_raw_fd(), b"")).unwrap();
        assert!(two.receive(&mut buf, &slot).unwrap().is_some());
    }

    #[test]
    fn what_another_user_sends_is_refused() {
        let mut inboxes = Inboxes::new();
        inboxes.ensure(0).unwrap();
        let mut inbox = inboxes.into_worker_inbox(0);
        inbox.uid = inbox.uid.wrapping_add(1);
        let (ours, mut client) = UnixStream::pair().unwrap();
        inbox.send_to(0, &passage(ours.as_raw_fd(), b"")).unwrap();
        drop(ours);
        assert!(
            inbox
                .receive(&mut Vec::new(), &Slot::default())
                .unwrap()
                .is_none()
        );
        // Closed unread: the client sees the end of the connection.
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn a_send_to_a_slot_without_an_inbox_fails_and_keeps_the_connection() {
        let inbox = Inboxes::new().into_worker_inbox(0);
        let (ours, mut client) = UnixStream::pair().unwrap();
        let sent = inbox.send_to(5, &passage(ours.as_raw_fd(), b""));
        assert!(matches!(sent, Err(SendError::Io(_))), "{sent:?}");
        // Still ours: what we write reaches the client.
        (&ours).write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        client.read_exact(&mut got).unwrap();
    }
}
