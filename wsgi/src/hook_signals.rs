//! `worker_int` (on INT or QUIT) and `worker_abort` (on the master's
//! SIGABRT for `--timeout`), then `worker_exit`, as Gunicorn's worker runs
//! them from its signal handlers. Python cannot run in a signal handler
//! (the interrupted thread may hold the allocator's or the GIL's locks), so
//! the bridge puts its own handler in front of the worker's: it only writes
//! the signal's number to a pipe, and a thread of its own runs the hooks
//! with the GIL, then calls the worker's handler as the signal would have
//! (quit at once; answer the hung request with its 504 and die of
//! SIGABRT). The wait is bounded by the master, which kills a worker that
//! outlives its graceful timeout (quick stop) or `KILL_AFTER_ABORT_MS`
//! (abort). A second INT or QUIT while the hooks run changes nothing (a
//! terminal's Ctrl-C reaches the workers and the master, which then sends
//! them QUIT); an abort() the application itself calls goes straight to
//! the worker's handler, with no hook (Gunicorn's Python handler never
//! sees those).
//! Installed only when the file defines one of the three hooks.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use pyo3::prelude::*;

use crate::hooks::Hooks;

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGQUIT, libc::SIGABRT];

/// The pipe's write end, for the handler.
static WAKE: AtomicI32 = AtomicI32::new(-1);
/// The signal whose hooks run (0: none yet).
static PENDING: AtomicI32 = AtomicI32::new(0);
/// The worker's own handlers, in the order of `SIGNALS`, saved before ours
/// went in (and never changed after).
static PREVIOUS: OnceLock<[libc::sigaction; 3]> = OnceLock::new();

/// Put the handler in front of the worker's if the file defines
/// `worker_int`, `worker_abort` or `worker_exit`.
pub(crate) fn install_if_hooked(py: Python<'_>, hooks: &'static Hooks) -> io::Result<()> {
    let wanted = ["worker_int", "worker_abort", "worker_exit"]
        .iter()
        .any(|name| hooks.defines(py, name));
    if !wanted || PREVIOUS.get().is_some() {
        return Ok(());
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors of the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just made both descriptors; each is owned once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    std::thread::Builder::new()
        .name("rgun-hook-signals".into())
        .spawn(move || run_hooks_on_signal(read, hooks))?;
    // The write end lives as long as the process.
    WAKE.store(write.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(write);
    // SAFETY: zeroed sigaction structs are valid (no handler, empty mask)
    // until sigaction fills them.
    let mut previous: [libc::sigaction; 3] = unsafe { std::mem::zeroed() };
    // SAFETY: as above; then every field this call uses is set.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_signal as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: an empty mask for the handler.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    for (i, &signal) in SIGNALS.iter().enumerate() {
        // SAFETY: reads the current action into `previous[i]` without
        // changing it.
        if unsafe { libc::sigaction(signal, std::ptr::null(), &mut previous[i]) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let _ = PREVIOUS.set(previous);
    for &signal in &SIGNALS {
        // SAFETY: `on_signal` only uses atomics, getppid(2), write(2) and
        // the saved handlers, all async-signal-safe.
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

extern "C" fn on_signal(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: errno is this thread's; restored before returning.
    let saved_errno = unsafe { *libc::__errno_location() };
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo.
    let from_master = signal != libc::SIGABRT
        || (!info.is_null() && unsafe { (*info).si_pid() } == unsafe { libc::getppid() });
    if !from_master {
        // The application's own abort(): the worker's handler, now.
        call_previous(signal);
    } else if PENDING
        .compare_exchange(0, signal, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        let byte = signal as u8;
        // SAFETY: write(2) of one byte from the stack to our pipe.
        unsafe { libc::write(WAKE.load(Ordering::Relaxed), (&raw const byte).cast(), 1) };
    }
    // Asked again while the hooks run (a terminal's Ctrl-C reaches the
    // whole group, then the master sends QUIT): the hooks finish first.
    // SAFETY: see above.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// Do what the worker's handler for `signal` does (the default action if
/// it had none). Its handlers take only the signal number.
fn call_previous(signal: libc::c_int) {
    let Some(previous) = PREVIOUS.get() else {
        return;
    };
    let Some(i) = SIGNALS.iter().position(|&s| s == signal) else {
        return;
    };
    let handler = previous[i].sa_sigaction;
    match handler {
        libc::SIG_IGN => {}
        libc::SIG_DFL => {
            // SAFETY: signal(2) and raise(3) are async-signal-safe; the
            // default action is what the worker had.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                libc::raise(signal);
            }
        }
        handler => {
            // SAFETY: the worker installed this address as a plain
            // `extern "C" fn(c_int)` handler (rgun_worker's
            // install_signals, without SA_SIGINFO).
            let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
            handler(signal);
        }
    }
}

/// The thread: wait for a signal, run its hooks, then the worker's handler.
fn run_hooks_on_signal(read: OwnedFd, hooks: &'static Hooks) {
    let mut byte = 0u8;
    loop {
        // SAFETY: reading one byte into a local from our own pipe.
        let n = unsafe { libc::read(read.as_raw_fd(), (&raw mut byte).cast(), 1) };
        if n == 1 {
            break;
        }
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return;
    }
    let signal = libc::c_int::from(byte);
    Python::attach(|py| {
        if signal == libc::SIGABRT {
            hooks.run_logged(py, "worker_abort");
        } else {
            hooks.run_logged(py, "worker_int");
        }
        hooks.worker_exit(py);
    });
    call_previous(signal);
}
