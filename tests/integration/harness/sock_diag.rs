//! One question to the kernel's socket-diagnostics netlink interface
//! (sock_diag(7)): how many received bytes a given TCP socket's owner has
//! not read yet. An exact lookup by address, unlike /proc/net/tcp, which
//! lists every socket (tens of thousands in TIME_WAIT on a busy test box).

use std::io;
use std::mem::{size_of, size_of_val};
use std::net::SocketAddr;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NETLINK_SOCK_DIAG: libc::c_int = 4;
const INET_DIAG_NOCOOKIE: u32 = !0;

#[repr(C)]
#[derive(Clone, Copy)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// `struct inet_diag_sockid`: ports and addresses in network order.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2` behind its netlink header.
#[repr(C)]
#[derive(Clone, Copy)]
struct Request {
    header: NlMsgHdr,
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

/// `struct inet_diag_msg`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Reply {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: SockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

fn words(addr: SocketAddr) -> [u32; 4] {
    let mut out = [0u32; 4];
    match addr {
        SocketAddr::V4(a) => out[0] = u32::from_ne_bytes(a.ip().octets()),
        SocketAddr::V6(a) => {
            for (word, bytes) in out.iter_mut().zip(a.ip().octets().chunks(4)) {
                *word = u32::from_ne_bytes(bytes.try_into().unwrap());
            }
        }
    }
    out
}

/// The receive queue of the TCP socket whose own end is `local` and
/// whose peer is `remote`, or `None` when there is no such socket.
pub fn receive_queue(local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    let family = if local.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let request = Request {
        header: NlMsgHdr {
            len: size_of::<Request>() as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: NLM_F_REQUEST,
            seq: 1,
            pid: 0,
        },
        family: family as u8,
        protocol: libc::IPPROTO_TCP as u8,
        ext: 0,
        pad: 0,
        states: !0,
        id: SockId {
            sport: local.port().to_be(),
            dport: remote.port().to_be(),
            src: words(local),
            dst: words(remote),
            interface: 0,
            cookie: [INET_DIAG_NOCOOKIE; 2],
        },
    };
    let mut buf = [0u64; 1024];
    // SAFETY: plain socket calls on a descriptor owned here and closed
    // before returning; each buffer is valid for the length given.
    let (got, err) = unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        );
        assert!(fd >= 0, "netlink socket: {}", io::Error::last_os_error());
        let mut got = libc::send(fd, (&raw const request).cast(), size_of::<Request>(), 0);
        if got >= 0 {
            got = libc::recv(fd, buf.as_mut_ptr().cast(), size_of_val(&buf), 0);
        }
        let err = io::Error::last_os_error();
        libc::close(fd);
        (got, err)
    };
    assert!(got >= 0, "sock_diag: {err}");
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let bytes = &bytes[..got as usize];
    assert!(
        bytes.len() >= size_of::<NlMsgHdr>(),
        "short sock_diag answer"
    );
    // SAFETY: the lengths were checked; both types are plain old data.
    let header = unsafe { bytes.as_ptr().cast::<NlMsgHdr>().read_unaligned() };
    if header.kind == NLMSG_ERROR {
        return None;
    }
    assert_eq!(header.kind, SOCK_DIAG_BY_FAMILY, "sock_diag answer type");
    let body = &bytes[size_of::<NlMsgHdr>()..];
    assert!(body.len() >= size_of::<Reply>(), "short sock_diag answer");
    // SAFETY: as above.
    let reply = unsafe { body.as_ptr().cast::<Reply>().read_unaligned() };
    // An exact lookup can fall back to a listening socket; only the
    // connection asked about will do.
    let same = reply.id.sport == request.id.sport
        && reply.id.dport == request.id.dport
        && reply.id.src == request.id.src
        && reply.id.dst == request.id.dst;
    same.then_some(reply.rqueue)
}

/// The harness's own check that it reads the right socket's queue.
#[test]
fn receive_queue_counts_unread_bytes() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    for host in ["127.0.0.1:0", "[::1]:0"] {
        let listener = TcpListener::bind(host).unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let (local, remote) = (server.local_addr().unwrap(), server.peer_addr().unwrap());
        assert_eq!(receive_queue(local, remote), Some(0));
        client.write_all(b"0123456789").unwrap();
        // The bytes reach the queue and wait there, unread.
        let deadline = std::time::Instant::now() + super::WAIT;
        while receive_queue(local, remote) != Some(10) {
            assert!(std::time::Instant::now() < deadline, "never saw 10");
            std::thread::sleep(super::POLL);
        }
        let mut buf = [0u8; 10];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(receive_queue(local, remote), Some(0));
        // The client's end has its own (empty) queue, and an unknown
        // peer port matches nothing.
        let mut other = remote;
        other.set_port(1);
        assert_eq!(receive_queue(local, other), None);
    }
}
