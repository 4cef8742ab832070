//! A call's blocking I/O on its one socket. The application runs
//! synchronously, so reading the body and writing the answer wait here,
//! with `poll(2)`, beating the heartbeat while they wait: the worker is
//! alive, only the peer is slow. It knows nothing of HTTP.

use std::io;
use std::os::fd::RawFd;

use crate::scoreboard::{Slot, monotonic_ms};

/// How long a blocking wait polls before it beats the heartbeat again.
const WAIT_SLICE_MS: u64 = 1000;

/// The socket a call reads and writes, with its time limit.
#[derive(Clone, Copy)]
pub struct CallIo {
    pub fd: RawFd,
    /// The longest wait for the client, and the whole call's deadline for
    /// its I/O: a client trickling a byte at a time cannot hold the worker
    /// past it.
    pub timeout_ms: u64,
    pub slot: &'static Slot,
    pub deadline_ms: u64,
}

impl CallIo {
    /// Wait until the socket is ready for `events`, beating the heartbeat:
    /// the worker is alive, only the peer is slow.
    pub fn wait(&self, events: libc::c_short) -> io::Result<()> {
        let deadline = (monotonic_ms() + self.timeout_ms).min(self.deadline_ms);
        loop {
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, WAIT_SLICE_MS as libc::c_int) };
            let now = monotonic_ms();
            self.slot.beat(now);
            if rc > 0 {
                return Ok(());
            }
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            if now >= deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
    }

    /// TCP_NODELAY (a Unix socket has no Nagle: the call just fails).
    pub fn set_nodelay(&self) {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a valid int option value on our socket.
        unsafe {
            libc::setsockopt(
                self.fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }

    /// Run a non-blocking system call until it makes progress: on EAGAIN
    /// wait for `events`, on EINTR try again.
    fn until_ready(
        &self,
        events: libc::c_short,
        mut call: impl FnMut() -> isize,
    ) -> io::Result<usize> {
        loop {
            let n = call();
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => self.wait(events)?,
                io::ErrorKind::Interrupted => {}
                _ => return Err(err),
            }
        }
    }

    /// Read what the socket has, waiting for at least one byte.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid writable region of `buf.len()` bytes.
        self.until_ready(libc::POLLIN, || unsafe {
            libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len())
        })
    }

    /// Write some of `data`, waiting until the socket takes at least one
    /// byte: the count written.
    pub fn write_some(&self, data: &[u8]) -> io::Result<usize> {
        // SAFETY: `data` is a valid readable region.
        self.until_ready(libc::POLLOUT, || unsafe {
            libc::write(self.fd, data.as_ptr().cast(), data.len())
        })
    }
}
