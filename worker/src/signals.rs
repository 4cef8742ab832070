//! Signals as a queue an event loop reads, in both processes: a handler only
//! counts its signal and writes a byte to a non-blocking self-pipe that the
//! loop polls; the loop then acts. Each process installs its own set (the
//! worker right after fork), which replaces the pipe of the one before.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// Signal numbers on Linux are below this.
const SIGNAL_COUNT: usize = 65;

static PENDING: [AtomicU32; SIGNAL_COUNT] = [const { AtomicU32::new(0) }; SIGNAL_COUNT];
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn queue_signal(signal: libc::c_int) {
    // SAFETY: reading and restoring errno is async-signal-safe and keeps the
    // interrupted code's errno intact.
    let saved = unsafe { *libc::__errno_location() };
    if let Some(count) = PENDING.get(signal as usize) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; a full pipe just drops the
        // byte, which is fine since one pending byte is enough to wake.
        unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
    }
    // SAFETY: see above.
    unsafe { *libc::__errno_location() = saved };
}

/// The read end of the self-pipe, to register with a poller.
pub struct SignalQueue {
    read: OwnedFd,
    _write: OwnedFd,
}

impl SignalQueue {
    /// Route `signals` to this queue. Replaces any earlier queue's pipe.
    pub fn install(signals: &[Signal]) -> io::Result<SignalQueue> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)?;
        for count in &PENDING {
            count.store(0, Ordering::Relaxed);
        }
        WAKE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(queue_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for &signal in signals {
            // SAFETY: `queue_signal` only touches atomics and calls write(2),
            // both async-signal-safe.
            unsafe { sigaction(signal, &action) }?;
        }
        Ok(SignalQueue {
            read,
            _write: write,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Empty the pipe (the counts are the truth, the bytes only wake).
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: reading into a local buffer of the given size from our own
        // non-blocking pipe.
        while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {
        }
    }

    /// How many times `signal` arrived since the last call.
    pub fn take(&self, signal: Signal) -> u32 {
        PENDING[signal as usize].swap(0, Ordering::Relaxed)
    }
}

impl Drop for SignalQueue {
    fn drop(&mut self) {
        WAKE_FD.store(-1, Ordering::Relaxed);
    }
}

/// Set `signals` to `handler` (default, ignore, or a plain handler). System
/// calls a handler interrupts are restarted, so that a stray signal does not
/// fail an application's blocking call with EINTR.
pub fn set_handler(signals: &[Signal], handler: SigHandler) -> io::Result<()> {
    let action = SigAction::new(handler, SaFlags::SA_RESTART, SigSet::empty());
    for &signal in signals {
        // SAFETY: callers pass SIG_DFL, SIG_IGN or an async-signal-safe handler.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

/// Block every signal, returning the mask to restore: the master holds
/// signals around `fork` so that a child never runs the parent's handlers.
pub fn block_all() -> io::Result<SigSet> {
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    Ok(old)
}

pub fn restore_mask(mask: &SigSet) -> io::Result<()> {
    nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(mask), None)?;
    Ok(())
}
