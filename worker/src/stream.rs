//! A client connection's socket, TCP or Unix, and what is known of its two
//! ends: the listener it came in on and the peer, rendered once at accept.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::handoff::ConnKind;

pub enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    /// A socket another worker handed over (non-blocking already: the flag
    /// belongs to the socket, which moved whole).
    pub fn from_fd(fd: OwnedFd, kind: ConnKind) -> Stream {
        match kind {
            ConnKind::Tcp => Stream::Tcp(mio::net::TcpStream::from_std(fd.into())),
            ConnKind::Unix => Stream::Unix(mio::net::UnixStream::from_std(fd.into())),
        }
    }

    pub fn kind(&self) -> ConnKind {
        match self {
            Stream::Tcp(_) => ConnKind::Tcp,
            Stream::Unix(_) => ConnKind::Unix,
        }
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }

    pub fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    pub fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    /// Whether the socket's own peer is in `allow`: a Unix socket's always
    /// is, a TCP socket whose peer is unknown (gone) is not.
    pub fn peer_trusted_by(&self, allow: &crate::AllowList) -> bool {
        match self {
            Stream::Tcp(s) => s.peer_addr().is_ok_and(|a| allow.trusts(Some(a.ip()))),
            Stream::Unix(_) => true,
        }
    }

    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

/// What a listener tells the application about where a request came in.
pub struct ListenerInfo {
    pub server_name: Box<[u8]>,
    pub server_port: u16,
}

/// The peer's address as the application sees it, rendered once at accept.
pub struct Peer {
    text: [u8; 48],
    len: u8,
    pub port: u16,
    /// A proxy in `--forwarded-allow-ips`: its X-Forwarded-Proto is
    /// believed.
    pub trusted: bool,
}

impl Peer {
    pub fn new(addr: Option<std::net::SocketAddr>, trusted: bool) -> Peer {
        let mut peer = Peer {
            text: [0; 48],
            len: 0,
            port: 0,
            trusted,
        };
        if let Some(addr) = addr {
            let mut cursor = io::Cursor::new(&mut peer.text[..]);
            let _ = write!(cursor, "{}", addr.ip());
            peer.len = cursor.position() as u8;
            peer.port = addr.port();
        }
        peer
    }

    pub fn addr(&self) -> &[u8] {
        &self.text[..self.len as usize]
    }

    /// The peer of a connection another worker handed over, from the text
    /// that worker rendered (the PROXY protocol's source, if one was
    /// given); `trusted` is this worker's rule applied to the socket's own
    /// peer (see [`Stream::peer_trusted_by`]).
    pub fn from_text(text: &[u8], port: u16, trusted: bool) -> Peer {
        let ip = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<std::net::IpAddr>().ok());
        Peer::new(ip.map(|ip| (ip, port).into()), trusted)
    }

    /// The client a PROXY protocol header names becomes the peer the
    /// application sees (as Gunicorn's REMOTE_ADDR). Forwarded headers are
    /// then believed only if both the proxy (the socket's peer) and that
    /// source are in `forwarded_allow`: every hop to their right must be,
    /// or a client behind a TCP proxy could write its own.
    pub fn set_source(&mut self, source: std::net::SocketAddr, forwarded_allow: &crate::AllowList) {
        let trusted = self.trusted && forwarded_allow.trusts(Some(source.ip()));
        *self = Peer::new(Some(source), trusted);
    }
}
