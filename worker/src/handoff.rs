//! The hand-off channel: how a worker that cannot serve a connection now
//! passes it to one that can (issue: keep-alive affinity). It is one Unix
//! `SOCK_SEQPACKET` socket pair that the master makes before forking and
//! every worker inherits: a worker sends a connection into one end, as its
//! descriptor (`SCM_RIGHTS`) with the bytes user space holds for it (the
//! unsent answer, the unparsed request bytes), and whichever worker is
//! free first receives it from the other end, as it would accept from a
//! listener. Nothing is lost: what the client sends meanwhile waits in the
//! socket, which moves whole.
//!
//! The master never reads or writes it; it only keeps both ends open so
//! that workers come and go without the channel closing.
//!
//! The channel suits "whoever is free first". A connection meant for one
//! worker (the least loaded, when load is evened out) goes to that
//! worker's inbox instead (`inbox`): sent to the channel, it as often
//! came straight back to its sender, the worker awake when it landed.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    UnixCredentials, recvmsg, sendmsg, socketpair,
};

mod inbox;
pub use inbox::{Inbox, InboxName, Inboxes};

/// The most bytes (unsent answer and unparsed request together) a
/// connection carries with it; one holding more stays where it is.
pub const MAX_CARRIED_BYTES: usize = 64 * 1024;
/// Marks a hand-off message of this layout.
const MAGIC: u32 = 0x5247_4831;
/// The longest peer address text (an IPv6 address with a zone).
const ADDR_TEXT_MAX: usize = 48;
/// magic, kind, listener, port, address length, address, output length,
/// input length.
const HEADER_LEN: usize = 4 + 1 + 2 + 2 + 1 + ADDR_TEXT_MAX + 4 + 4;
/// What the kernel may queue in the channel: room for a few hundred
/// connections in passage (root may set it past `wmem_max`).
const CHANNEL_BUFFER_BYTES: usize = 4 << 20;

/// The socket family of a connection in passage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnKind {
    Tcp,
    Unix,
}

/// A connection as it travels: its socket and what user space held.
#[derive(Debug)]
pub struct Passage<'a> {
    pub fd: RawFd,
    pub kind: ConnKind,
    /// Index of the listener it came in on (the same in every worker).
    pub listener: u16,
    /// The peer's address as text (empty on a Unix socket) and port.
    pub peer_addr: &'a [u8],
    pub peer_port: u16,
    /// Answers not yet sent, to go out first.
    pub output: &'a [u8],
    /// Request bytes received and not yet parsed.
    pub input: &'a [u8],
}

/// A connection received: it owns its descriptor.
#[derive(Debug)]
pub struct Arrival {
    pub fd: OwnedFd,
    pub kind: ConnKind,
    pub listener: u16,
    pub peer_addr: Vec<u8>,
    pub peer_port: u16,
    pub output: Vec<u8>,
    pub input: Vec<u8>,
}

impl Arrival {
    /// Its passage on, untouched (an inbox's connection forwarded).
    pub fn passage(&self) -> Passage<'_> {
        Passage {
            fd: self.fd.as_raw_fd(),
            kind: self.kind,
            listener: self.listener,
            peer_addr: &self.peer_addr,
            peer_port: self.peer_port,
            output: &self.output,
            input: &self.input,
        }
    }
}

/// Why a connection could not be sent: it stays with its worker.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the connection is part-way through an answer, or closing")]
    NotMovable,
    #[error("the worker it was meant for takes no more work")]
    NotTaking,
    #[error("the connection carries {0} bytes, more than a hand-off takes")]
    TooLarge(usize),
    #[error("the hand-off channel is full")]
    Full,
    #[error("sending a connection to another worker failed: {0}")]
    Io(#[from] nix::Error),
}

/// Both ends of the channel, as every worker holds them.
#[derive(Debug)]
pub struct Channel {
    sender: OwnedFd,
    receiver: OwnedFd,
}

impl Channel {
    /// The master: a new channel, close-on-exec (kept by forks only).
    pub fn new() -> io::Result<Channel> {
        let (sender, receiver) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )?;
        for fd in [&sender, &receiver] {
            grow_buffer(fd.as_raw_fd());
        }
        Ok(Channel { sender, receiver })
    }

    /// The end a worker polls for connections to take.
    pub fn receiver_fd(&self) -> RawFd {
        self.receiver.as_raw_fd()
    }

    /// Both ends, as a new master image inherits them: `SENDER,RECEIVER`.
    pub fn inherit_entry(&self) -> String {
        format!("{},{}", self.sender.as_raw_fd(), self.receiver.as_raw_fd())
    }

    /// The channel a previous master image handed over (an upgrade or a
    /// `--preload` reload), so that its workers and this one's share it: a
    /// worker it stops hands its idle connections to this one's workers.
    /// Close-on-exec again.
    ///
    /// # Safety
    /// `entry` must name, as `inherit_entry` wrote it, descriptors of this
    /// process that nothing else owns.
    pub unsafe fn from_inherit_entry(entry: &str) -> io::Result<Channel> {
        let bad = || io::Error::other(format!("invalid hand-off channel entry {entry:?}"));
        let (sender, receiver) = entry.split_once(',').ok_or_else(bad)?;
        let sender: RawFd = sender.parse().map_err(|_| bad())?;
        let receiver: RawFd = receiver.parse().map_err(|_| bad())?;
        // SAFETY: the caller's promise: both are ours and unowned.
        let channel = unsafe {
            Channel {
                sender: OwnedFd::from_raw_fd(sender),
                receiver: OwnedFd::from_raw_fd(receiver),
            }
        };
        channel.keep_across_exec(false)?;
        Ok(channel)
    }

    /// Keep both ends open across exec (a new master image), or not.
    pub fn keep_across_exec(&self, keep: bool) -> io::Result<()> {
        for fd in [&self.sender, &self.receiver] {
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD)?;
            let mut flags = nix::fcntl::FdFlag::from_bits_truncate(flags);
            flags.set(nix::fcntl::FdFlag::FD_CLOEXEC, !keep);
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(flags))?;
        }
        Ok(())
    }

    /// Send a connection; on success the caller closes its descriptor (the
    /// message holds its own reference to the socket).
    pub fn send(&self, passage: &Passage<'_>) -> Result<(), SendError> {
        send_on(self.sender.as_raw_fd(), None, passage)
    }

    /// Take one connection, if one is waiting. `buf` is scratch space,
    /// grown as needed.
    pub fn receive(&self, buf: &mut Vec<u8>) -> io::Result<Option<Arrival>> {
        Ok(receive_on(self.receiver.as_raw_fd(), buf)?.map(|(arrival, _)| arrival))
    }
}

/// Send `passage` on `fd` (to `to`, on a socket that is not connected).
fn send_on(fd: RawFd, to: Option<&UnixAddr>, passage: &Passage<'_>) -> Result<(), SendError> {
    let carried = passage.output.len() + passage.input.len();
    if carried > MAX_CARRIED_BYTES || passage.peer_addr.len() > ADDR_TEXT_MAX {
        return Err(SendError::TooLarge(carried));
    }
    let header = encode_header(passage);
    let iov = [
        IoSlice::new(&header),
        IoSlice::new(passage.output),
        IoSlice::new(passage.input),
    ];
    let fds = [passage.fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    match sendmsg(
        fd,
        &iov,
        &cmsg,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        to,
    ) {
        Ok(_) => Ok(()),
        Err(nix::Error::EAGAIN | nix::Error::ENOBUFS | nix::Error::ETOOMANYREFS) => {
            Err(SendError::Full)
        }
        Err(e) => Err(SendError::Io(e)),
    }
}

/// Receive one connection from `fd`, if one is waiting, with its sender's
/// credentials if the socket asks for them (`SO_PASSCRED`).
fn receive_on(
    fd: RawFd,
    buf: &mut Vec<u8>,
) -> io::Result<Option<(Arrival, Option<UnixCredentials>)>> {
    buf.resize(HEADER_LEN + MAX_CARRIED_BYTES, 0);
    // Room for as many descriptors as one message can carry, so that the
    // kernel never cuts the list short (MSG_CTRUNC): every one it installs
    // is seen, and all but the first closed. A worker sends one; anyone
    // else who can reach an inbox may send more.
    let mut space = cmsg_space!([RawFd; SCM_MAX_FD], UnixCredentials);
    let (len, conn_fd, creds) = loop {
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<()>(
            fd,
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let (mut conn_fd, mut creds) = (None, None);
                for cmsg in msg.cmsgs()? {
                    match cmsg {
                        ControlMessageOwned::ScmRights(fds) => {
                            for (i, &received) in fds.iter().enumerate() {
                                // SAFETY: SCM_RIGHTS just installed these
                                // descriptors in this process; nothing else
                                // owns them (all but the first are closed).
                                let owned = unsafe { OwnedFd::from_raw_fd(received) };
                                if i == 0 {
                                    conn_fd = Some(owned);
                                }
                            }
                        }
                        ControlMessageOwned::ScmCredentials(c) => creds = Some(c),
                        _ => {}
                    }
                }
                break (msg.bytes, conn_fd, creds);
            }
            Err(nix::Error::EAGAIN) => return Ok(None),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let Some(conn_fd) = conn_fd else {
        return Err(io::Error::other("a hand-off message without its socket"));
    };
    Ok(Some((decode(&buf[..len], conn_fd)?, creds)))
}

/// The most descriptors one message carries (the kernel's `SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

/// A bigger queue than the default, so that a burst of hand-offs fits.
fn grow_buffer(fd: RawFd) {
    let size = CHANNEL_BUFFER_BYTES as libc::c_int;
    for option in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: setsockopt with a valid int option on our own socket.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

fn encode_header(p: &Passage<'_>) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4] = match p.kind {
        ConnKind::Tcp => 0,
        ConnKind::Unix => 1,
    };
    h[5..7].copy_from_slice(&p.listener.to_le_bytes());
    h[7..9].copy_from_slice(&p.peer_port.to_le_bytes());
    h[9] = p.peer_addr.len() as u8;
    h[10..10 + p.peer_addr.len()].copy_from_slice(p.peer_addr);
    let lens = 10 + ADDR_TEXT_MAX;
    h[lens..lens + 4].copy_from_slice(&(p.output.len() as u32).to_le_bytes());
    h[lens + 4..lens + 8].copy_from_slice(&(p.input.len() as u32).to_le_bytes());
    h
}

fn decode(msg: &[u8], fd: OwnedFd) -> io::Result<Arrival> {
    let bad = || io::Error::other("a malformed hand-off message");
    if msg.len() < HEADER_LEN || msg[0..4] != MAGIC.to_le_bytes() {
        return Err(bad());
    }
    let u16_at = |i: usize| u16::from_le_bytes([msg[i], msg[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([msg[i], msg[i + 1], msg[i + 2], msg[i + 3]]);
    let kind = match msg[4] {
        0 => ConnKind::Tcp,
        1 => ConnKind::Unix,
        _ => return Err(bad()),
    };
    let addr_len = (msg[9] as usize).min(ADDR_TEXT_MAX);
    let lens = 10 + ADDR_TEXT_MAX;
    let out_len = u32_at(lens) as usize;
    let in_len = u32_at(lens + 4) as usize;
    let body = &msg[HEADER_LEN..];
    if body.len() != out_len + in_len {
        return Err(bad());
    }
    Ok(Arrival {
        fd,
        kind,
        listener: u16_at(5),
        peer_port: u16_at(7),
        peer_addr: msg[10..10 + addr_len].to_vec(),
        output: body[..out_len].to_vec(),
        input: body[out_len..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_connection_arrives_whole_with_its_bytes() {
        let channel = Channel::new().unwrap();
        let (ours, mut client) = UnixStream::pair().unwrap();
        client.write_all(b"queued in the socket").unwrap();
        channel
            .send(&Passage {
                fd: ours.as_raw_fd(),
                kind: ConnKind::Tcp,
                listener: 3,
                peer_addr: b"2001:db8::1",
                peer_port: 50123,
                output: b"HTTP/1.1 200 OK\r\n",
                input: b"GET / HT",
            })
            .unwrap();
        drop(ours);
        let arrival = channel.receive(&mut Vec::new()).unwrap().unwrap();
        assert_eq!(arrival.kind, ConnKind::Tcp);
        assert_eq!(arrival.listener, 3);
        assert_eq!(arrival.peer_addr, b"2001:db8::1");
        assert_eq!(arrival.peer_port, 50123);
        assert_eq!(arrival.output, b"HTTP/1.1 200 OK\r\n");
        assert_eq!(arrival.input, b"GET / HT");
        // The socket moved whole: what the client sent is there to read,
        // and what is written through it reaches the client.
        let mut moved = UnixStream::from(arrival.fd);
        let mut queued = [0u8; 20];
        moved.read_exact(&mut queued).unwrap();
        assert_eq!(&queued, b"queued in the socket");
        moved.write_all(b"answer").unwrap();
        let mut answer = [0u8; 6];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"answer");
        assert!(channel.receive(&mut Vec::new()).unwrap().is_none());
    }

    #[test]
    fn too_much_carried_is_refused_and_nothing_is_sent() {
        let channel = Channel::new().unwrap();
        let (ours, _client) = UnixStream::pair().unwrap();
        let big = vec![b'x'; MAX_CARRIED_BYTES + 1];
        let result = channel.send(&Passage {
            fd: ours.as_raw_fd(),
            kind: ConnKind::Unix,
            listener: 0,
            peer_addr: b"",
            peer_port: 0,
            output: &[],
            input: &big,
        });
        assert!(matches!(result, Err(SendError::TooLarge(_))), "{result:?}");
        assert!(channel.receive(&mut Vec::new()).unwrap().is_none());
    }
}
