//! Targeted hand-off: each worker's inbox. The shared channel gives a
//! connection to whichever worker the kernel wakes, and the worker that
//! sends is usually the one awake: measured, about half of what workers
//! sent to even out their load came straight back to them. A connection
//! sent to even out the load must reach the worker chosen for it, so every
//! scoreboard slot has an inbox of its own, a Unix datagram socket.
//!
//! The master binds a slot's inbox before it first forks a worker into the
//! slot and keeps it open as long as it runs, never reading it: a worker
//! that dies leaves what was queued for it to the next worker in its slot
//! (the master forks a replacement into a slot with something waiting
//! before any other). The inbox is autobound: the kernel gives it an
//! abstract name no other socket has, which nobody can take first, and the
//! master writes that name into the slot in the scoreboard, the only place
//! senders look it up. Each worker receives from its own slot's inbox only,
//! and sends from one unbound socket of its own to a peer's inbox by that
//! name. Any local process can still send to a name it sees in
//! `/proc/net/unix`, so the inbox passes credentials (`SO_PASSCRED`) and
//! takes only connections sent by a process running as the worker's user
//! (who could do anything to it anyway); what anyone else sends is closed
//! unread.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, bind, getsockname, setsockopt, socket, sockopt,
};

use super::{Arrival, Passage, SendError, grow_buffer, receive_on, send_on};
use crate::scoreboard::Slot;

/// The most refused messages one `receive` closes before it returns, so
/// that a flood from another user cannot hold the event loop.
const MAX_REFUSED_PER_RECEIVE: usize = 64;

/// Every slot's inbox, as the master keeps them.
#[derive(Debug, Default)]
pub struct Inboxes {
    sockets: Vec<Option<(OwnedFd, InboxName)>>,
}

impl Inboxes {
    pub fn new() -> Inboxes {
        Inboxes::default()
    }

    /// The master, before forking a worker into `slot`: its inbox, bound
    /// once; its name, for the slot in the scoreboard. A failure leaves
    /// the slot without one: connections then reach its worker through the
    /// shared channel only.
    pub fn ensure(&mut self, slot: usize) -> io::Result<InboxName> {
        if self.sockets.len() <= slot {
            self.sockets.resize_with(slot + 1, || None);
        }
        if let Some((_, name)) = &self.sockets[slot] {
            return Ok(*name);
        }
        let (fd, name) = bind_inbox()?;
        self.sockets[slot] = Some((fd, name));
        Ok(name)
    }

    /// Whether something waits in `slot`'s inbox (for a worker that died
    /// before it took it).
    pub fn has_waiting(&self, slot: usize) -> bool {
        let Some(Some((fd, _))) = self.sockets.get(slot) else {
            return false;
        };
        let mut next: libc::c_int = 0;
        // SAFETY: FIONREAD on our own open socket writes one int.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut next) };
        rc == 0 && next > 0
    }

    /// The forked worker in `slot`: its own inbox, and a socket to send to
    /// the others' (without one, it sends only to the shared channel). The
    /// other slots' inboxes are closed here (their workers and the master
    /// hold them).
    pub fn into_worker_inbox(self, slot: usize) -> Inbox {
        let own = self
            .sockets
            .into_iter()
            .nth(slot)
            .flatten()
            .map(|(fd, _)| fd);
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
            users: [
                nix::unistd::getuid().as_raw(),
                nix::unistd::geteuid().as_raw(),
            ],
        }
    }
}

/// An inbox's abstract name, as a slot in the scoreboard holds it: its
/// length in the top byte, its bytes below (the kernel's autobind names
/// are five). 0: no inbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboxName(pub u64);

impl InboxName {
    /// The longest name the encoding holds.
    const MAX_LEN: usize = 7;

    fn new(bytes: &[u8]) -> Option<InboxName> {
        if bytes.is_empty() || bytes.len() > Self::MAX_LEN {
            return None;
        }
        let mut word = [0u8; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        word[7] = bytes.len() as u8;
        Some(InboxName(u64::from_le_bytes(word)))
    }

    fn address(self) -> Option<UnixAddr> {
        let word = self.0.to_le_bytes();
        let len = usize::from(word[7]);
        if len == 0 || len > Self::MAX_LEN {
            return None;
        }
        UnixAddr::new_abstract(&word[..len]).ok()
    }
}

/// A worker's inbox, and its way to others'.
#[derive(Debug)]
pub struct Inbox {
    /// None if the master could not make it.
    own: Option<OwnedFd>,
    sender: Option<OwnedFd>,
    /// The worker's real and effective users: only what they sent is
    /// taken (the kernel passes the sender's real user).
    users: [u32; 2],
}

impl Inbox {
    /// The socket to poll for connections sent to this worker.
    pub fn fd(&self) -> Option<RawFd> {
        self.own.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Send a connection to the worker in slot `to`, by the inbox name the
    /// master wrote there; on success the caller closes its descriptor.
    /// Fails if that inbox is full or missing: nothing is sent, the
    /// connection stays with the caller.
    pub fn send_to(&self, to: &Slot, passage: &Passage<'_>) -> Result<(), SendError> {
        let sender = self
            .sender
            .as_ref()
            .ok_or(SendError::Io(nix::Error::ENOTCONN))?;
        let address = to
            .inbox_name()
            .address()
            .ok_or(SendError::Io(nix::Error::ENOTCONN))?;
        send_on(sender.as_raw_fd(), Some(&address), passage)
    }

    /// Send a connection to the worker in slot `to` if it still takes work,
    /// counted in its slot while on its way (`Slot::start_sending`), and
    /// uncounted if it does not go.
    pub fn send_counted(&self, to: &Slot, passage: &Passage<'_>) -> Result<(), SendError> {
        let sent = if to.start_sending() {
            self.send_to(to, passage)
        } else {
            Err(SendError::NotTaking)
        };
        if sent.is_err() {
            to.unsend();
        }
        sent
    }

    /// Take one connection sent to this worker, if one waits, and uncount
    /// it in the worker's slot; what another user sent is closed and
    /// skipped.
    pub fn receive(&self, buf: &mut Vec<u8>, slot: &Slot) -> io::Result<Option<Arrival>> {
        let Some(own) = &self.own else {
            return Ok(None);
        };
        for _ in 0..MAX_REFUSED_PER_RECEIVE {
            match receive_on(own.as_raw_fd(), buf) {
                Ok(Some((arrival, Some(creds)))) if self.users.contains(&creds.uid()) => {
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
        Ok(None)
    }
}

/// A new inbox: autobound (the kernel picks an abstract name no socket
/// has), passing credentials.
fn bind_inbox() -> io::Result<(OwnedFd, InboxName)> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::PassCred, &true)?;
    bind(fd.as_raw_fd(), &UnixAddr::new_unnamed())?;
    let bound: UnixAddr = getsockname(fd.as_raw_fd())?;
    let name = bound
        .as_abstract()
        .and_then(InboxName::new)
        .ok_or_else(|| io::Error::other(format!("an unexpected inbox address {bound:?}")))?;
    Ok((fd, name))
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

    /// Slots as the master leaves them: each with its inbox's name.
    fn slots_with_inboxes(inboxes: &mut Inboxes, n: usize) -> Vec<Slot> {
        (0..n)
            .map(|i| {
                let slot = Slot::default();
                slot.set_inbox_name(inboxes.ensure(i).unwrap());
                slot
            })
            .collect()
    }

    /// The worker of `slot`'s inbox, as `into_worker_inbox` makes it,
    /// leaving the others in `inboxes`.
    fn worker_inbox(inboxes: &mut Inboxes, slot: usize) -> Inbox {
        let mut own = Inboxes::new();
        own.sockets.resize_with(slot + 1, || None);
        own.sockets[slot] = inboxes.sockets.get_mut(slot).and_then(Option::take);
        own.into_worker_inbox(slot)
    }

    #[test]
    fn a_connection_reaches_the_slot_it_is_sent_to_and_no_other() {
        let mut inboxes = Inboxes::new();
        let slots = slots_with_inboxes(&mut inboxes, 3);
        assert!(!inboxes.has_waiting(2));
        let (zero, one, two) = (
            worker_inbox(&mut inboxes, 0),
            worker_inbox(&mut inboxes, 1),
            worker_inbox(&mut inboxes, 2),
        );
        let (ours, mut client) = UnixStream::pair().unwrap();
        client.write_all(b"queued").unwrap();
        zero.send_to(&slots[2], &passage(ours.as_raw_fd(), b"GET /"))
            .unwrap();
        drop(ours);
        let mut buf = Vec::new();
        assert!(one.receive(&mut buf, &slots[1]).unwrap().is_none());
        assert!(zero.receive(&mut buf, &slots[0]).unwrap().is_none());
        let arrival = two
            .receive(&mut buf, &slots[2])
            .unwrap()
            .expect("sent to slot 2");
        assert_eq!(arrival.input, b"GET /");
        let mut moved = UnixStream::from(arrival.fd);
        let mut queued = [0u8; 6];
        moved.read_exact(&mut queued).unwrap();
        assert_eq!(&queued, b"queued");
        // Sent back to itself, it is there again.
        let (ours, _client) = UnixStream::pair().unwrap();
        two.send_to(&slots[2], &passage(ours.as_raw_fd(), b""))
            .unwrap();
        assert!(two.receive(&mut buf, &slots[2]).unwrap().is_some());
    }

    #[test]
    fn the_master_sees_what_waits_in_an_inbox() {
        let mut inboxes = Inboxes::new();
        let slots = slots_with_inboxes(&mut inboxes, 2);
        let sender = worker_inbox(&mut Inboxes::new(), 0);
        let (ours, _client) = UnixStream::pair().unwrap();
        sender
            .send_to(&slots[1], &passage(ours.as_raw_fd(), b""))
            .unwrap();
        assert!(inboxes.has_waiting(1));
        assert!(!inboxes.has_waiting(0));
        // Its next worker takes it.
        let next = worker_inbox(&mut inboxes, 1);
        assert!(next.receive(&mut Vec::new(), &slots[1]).unwrap().is_some());
    }

    #[test]
    fn inbox_names_are_the_kernels_and_distinct() {
        let mut inboxes = Inboxes::new();
        let a = inboxes.ensure(0).unwrap();
        let b = inboxes.ensure(1).unwrap();
        assert_ne!(a, b);
        assert_eq!(inboxes.ensure(0).unwrap(), a, "bound once");
        assert!(a.address().is_some());
        assert_eq!(InboxName(0).address(), None);
    }

    #[test]
    fn what_another_user_sends_is_refused() {
        let mut inboxes = Inboxes::new();
        let slots = slots_with_inboxes(&mut inboxes, 1);
        let mut inbox = worker_inbox(&mut inboxes, 0);
        inbox.users = inbox.users.map(|u| u.wrapping_add(1));
        let (ours, mut client) = UnixStream::pair().unwrap();
        inbox
            .send_to(&slots[0], &passage(ours.as_raw_fd(), b""))
            .unwrap();
        drop(ours);
        assert!(inbox.receive(&mut Vec::new(), &slots[0]).unwrap().is_none());
        // Closed unread: the client sees the end of the connection.
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn a_send_to_a_slot_without_an_inbox_fails_and_keeps_the_connection() {
        let inbox = Inboxes::new().into_worker_inbox(0);
        let (ours, mut client) = UnixStream::pair().unwrap();
        let sent = inbox.send_to(&Slot::default(), &passage(ours.as_raw_fd(), b""));
        assert!(matches!(sent, Err(SendError::Io(_))), "{sent:?}");
        // Still ours: what we write reaches the client.
        (&ours).write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        client.read_exact(&mut got).unwrap();
    }

    /// A message carrying more descriptors than a worker sends (anyone who
    /// can reach the inbox may send one): the first is the connection,
    /// the others are closed, none left open in the worker.
    #[test]
    fn extra_descriptors_in_a_message_are_closed() {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let mut inboxes = Inboxes::new();
        let slots = slots_with_inboxes(&mut inboxes, 1);
        let inbox = worker_inbox(&mut inboxes, 0);
        let pairs: Vec<(UnixStream, UnixStream)> =
            (0..3).map(|_| UnixStream::pair().unwrap()).collect();
        let fds: Vec<RawFd> = pairs.iter().map(|(ours, _)| ours.as_raw_fd()).collect();
        let header = super::super::encode_header(&passage(fds[0], b""));
        let sender = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let to = slots[0].inbox_name().address().unwrap();
        sendmsg(
            sender.as_raw_fd(),
            &[std::io::IoSlice::new(&header)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            Some(&to),
        )
        .unwrap();
        let clients: Vec<UnixStream> = pairs.into_iter().map(|(_, client)| client).collect();
        let arrival = inbox
            .receive(&mut Vec::new(), &slots[0])
            .unwrap()
            .expect("the message");
        // The other two ends are closed everywhere: their peers read the end.
        for client in &clients[1..] {
            client.set_nonblocking(true).unwrap();
            assert_eq!((&*client).read(&mut [0u8; 1]).unwrap(), 0);
        }
        // The first lives on in the arrival.
        clients[0].set_nonblocking(true).unwrap();
        let open = (&clients[0]).read(&mut [0u8; 1]);
        assert!(
            matches!(&open, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{open:?}"
        );
        drop(arrival);
    }
}
