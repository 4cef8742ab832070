//! The listening sockets a worker inherits from the master, as the event
//! loop accepts from them. Binding is the master's; a worker only accepts.

use std::io;
use std::os::fd::{FromRawFd, RawFd};

use crate::stream::{ListenerInfo, Peer, Stream};

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

pub enum Listener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

impl Listener {
    pub fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listener::Tcp(l) => l,
            Listener::Unix(l) => l,
        }
    }

    pub fn accept(&self, allow: &crate::AllowList) -> io::Result<(Stream, Peer)> {
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

impl ListenerSocket {
    /// Take ownership of the inherited descriptor.
    ///
    /// # Safety
    /// `fd` must be a listening socket of `kind` that nothing else in this
    /// process owns or closes.
    pub unsafe fn into_listener(self) -> Listener {
        // SAFETY: the caller's promise.
        unsafe {
            match self.kind {
                SocketKind::Unix => Listener::Unix(mio::net::UnixListener::from_std(
                    std::os::unix::net::UnixListener::from_raw_fd(self.fd),
                )),
                SocketKind::Tcp => Listener::Tcp(mio::net::TcpListener::from_std(
                    std::net::TcpListener::from_raw_fd(self.fd),
                )),
            }
        }
    }
}
