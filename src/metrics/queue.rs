//! The listen queue of each listening socket (Gunicorn's
//! `gunicorn.socket.backlog`): connections the kernel completed that no
//! worker has accepted yet, and the queue's limit. Read without touching
//! the queue: `TCP_INFO` on the socket itself for TCP (on a listening
//! socket `tcpi_unacked` is the queue's length and `tcpi_sacked` its
//! limit), and the kernel's socket diagnostics (sock_diag(7),
//! `UNIX_DIAG_RQLEN`) for a Unix socket, which answer to no `ioctl`.

use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;

/// A listen queue: connections waiting, and the most that may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queue {
    pub waiting: u32,
    pub limit: u32,
}

/// The queue of the TCP listening socket `fd`.
pub fn tcp(fd: RawFd) -> io::Result<Queue> {
    // SAFETY: tcp_info is plain old data, valid zeroed.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Queue {
        waiting: info.tcpi_unacked,
        limit: info.tcpi_sacked,
    })
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NETLINK_SOCK_DIAG: libc::c_int = 4;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_RQLEN: u16 = 4;
const NO_COOKIE: u32 = !0;

#[repr(C)]
#[derive(Clone, Copy)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// `struct unix_diag_req` behind its netlink header.
#[repr(C)]
#[derive(Clone, Copy)]
struct UnixRequest {
    header: NlMsgHdr,
    family: u8,
    protocol: u8,
    pad: u16,
    states: u32,
    inode: u32,
    show: u32,
    cookie: [u32; 2],
}

/// `struct unix_diag_msg`.
#[repr(C)]
#[derive(Clone, Copy)]
struct UnixReply {
    family: u8,
    kind: u8,
    state: u8,
    pad: u8,
    inode: u32,
    cookie: [u32; 2],
}

/// The queue of the Unix listening socket `fd`, asked of the kernel by
/// the socket's inode.
pub fn unix(fd: RawFd) -> io::Result<Queue> {
    // SAFETY: fstat writes into a zeroed stat buffer of the right type.
    let inode = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        st.st_ino as u32
    };
    let request = UnixRequest {
        header: NlMsgHdr {
            len: size_of::<UnixRequest>() as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: NLM_F_REQUEST,
            seq: 1,
            pid: 0,
        },
        family: libc::AF_UNIX as u8,
        protocol: 0,
        pad: 0,
        states: !0,
        inode,
        show: UDIAG_SHOW_RQLEN,
        cookie: [NO_COOKIE; 2],
    };
    let bytes = ask(&request)?;
    parse_unix_reply(&bytes, inode)
        .ok_or_else(|| io::Error::other(format!("no queue length for socket inode {inode}")))
}

/// The answer buffer, in 8-byte words (4 KiB: one listening socket's
/// message and its attributes fit many times over).
const ANSWER_WORDS: usize = 512;

/// Send one request on a new sock_diag socket and read its answer.
fn ask(request: &UnixRequest) -> io::Result<Vec<u8>> {
    let mut buf = [0u64; ANSWER_WORDS];
    // SAFETY: plain socket calls on a descriptor owned here and closed
    // before returning; each buffer is valid for the length given.
    let (got, err) = unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut got = libc::send(
            fd,
            (request as *const UnixRequest).cast(),
            size_of::<UnixRequest>(),
            0,
        );
        if got >= 0 {
            got = libc::recv(fd, buf.as_mut_ptr().cast(), size_of_val(&buf), 0);
        }
        let err = io::Error::last_os_error();
        libc::close(fd);
        (got, err)
    };
    if got < 0 {
        return Err(err);
    }
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    Ok(bytes[..got as usize].to_vec())
}

/// The `UNIX_DIAG_RQLEN` attribute of the answer about `inode`.
fn parse_unix_reply(bytes: &[u8], inode: u32) -> Option<Queue> {
    if bytes.len() < size_of::<NlMsgHdr>() {
        return None;
    }
    // SAFETY: the length was checked; the type is plain old data.
    let header = unsafe { bytes.as_ptr().cast::<NlMsgHdr>().read_unaligned() };
    if header.kind == NLMSG_ERROR || header.kind != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    let end = (header.len as usize).min(bytes.len());
    let body = bytes.get(size_of::<NlMsgHdr>()..end)?;
    if body.len() < size_of::<UnixReply>() {
        return None;
    }
    // SAFETY: as above.
    let reply = unsafe { body.as_ptr().cast::<UnixReply>().read_unaligned() };
    if reply.inode != inode {
        return None;
    }
    // Attributes: a 4-byte header (length, type), the payload, padding to 4.
    let mut attrs = &body[size_of::<UnixReply>()..];
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == UNIX_DIAG_RQLEN && len >= 12 {
            let word = |at: usize| u32::from_ne_bytes(attrs[at..at + 4].try_into().ok()?).into();
            let waiting: Option<u32> = word(4);
            let limit: Option<u32> = word(8);
            return Some(Queue {
                waiting: waiting?,
                limit: limit?,
            });
        }
        attrs = attrs.get(len.div_ceil(4) * 4..).unwrap_or_default();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_tcp_listen_queue_counts_unaccepted_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = listener.as_raw_fd();
        assert_eq!(tcp(fd).unwrap().waiting, 0);
        let _a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _b = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // A loopback handshake completes before connect returns.
        let queue = tcp(fd).unwrap();
        assert_eq!(queue.waiting, 2);
        assert!(queue.limit > 0);
    }

    #[test]
    fn a_unix_listen_queue_counts_unaccepted_connections() {
        let path = std::env::temp_dir().join(format!("rgun-queue-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let fd = listener.as_raw_fd();
        assert_eq!(unix(fd).unwrap().waiting, 0);
        let _a = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let queue = unix(fd).unwrap();
        assert_eq!(queue.waiting, 1);
        assert!(queue.limit > 0);
        let _ = std::fs::remove_file(&path);
    }
}
