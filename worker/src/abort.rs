//! The answer to the request in hand when the worker is aborted: a
//! `--timeout` from the master (504) or the application calling abort()
//! (500). The SIGABRT handler can only read statics and write(2), so the
//! call in hand publishes what it needs here; nothing else reads it.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};

use crate::scoreboard::Slot;

/// The socket of the call in hand, or -1.
static INFLIGHT_FD: AtomicI32 = AtomicI32::new(-1);
/// A byte of the call's answer (or of an earlier pipelined one) is on the
/// wire: an abort answer would land inside it, so the handler stays silent.
static INFLIGHT_COMMITTED: AtomicBool = AtomicBool::new(false);
/// The request is HEAD: the abort answer goes without its body.
static INFLIGHT_HEAD: AtomicBool = AtomicBool::new(false);
/// The request line in hand up to the end of its target, in the read
/// buffer, which stays put while the call runs; copied into the slot only
/// if the worker is aborted, for the master's log.
static INFLIGHT_LINE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static INFLIGHT_LINE_LEN: AtomicUsize = AtomicUsize::new(0);

/// The abort answers, whole; a HEAD request gets them without their body.
const TIMEOUT_BODY: &str = "Gateway Timeout\n";
const TIMEOUT_ANSWER: &str = concat!(
    "HTTP/1.1 504 Gateway Timeout\r\nServer: rgun\r\nContent-Type: text/plain\r\n",
    "Content-Length: 16\r\nConnection: close\r\n\r\n",
    "Gateway Timeout\n"
);
const CRASH_BODY: &str = "Internal Server Error\n";
const CRASH_ANSWER: &str = concat!(
    "HTTP/1.1 500 Internal Server Error\r\nServer: rgun\r\nContent-Type: text/plain\r\n",
    "Content-Length: 22\r\nConnection: close\r\n\r\n",
    "Internal Server Error\n"
);

/// A call on `fd` is in hand; `committed` if answers to earlier pipelined
/// requests are still unsent; `line` is its method and target.
pub fn enter(fd: RawFd, committed: bool, method_is_head: bool, line: &[u8]) {
    INFLIGHT_COMMITTED.store(committed, Ordering::Relaxed);
    INFLIGHT_HEAD.store(method_is_head, Ordering::Relaxed);
    INFLIGHT_LINE.store(line.as_ptr().cast_mut(), Ordering::Relaxed);
    INFLIGHT_LINE_LEN.store(line.len(), Ordering::Relaxed);
    INFLIGHT_FD.store(fd, Ordering::Relaxed);
}

/// Part of the call's answer went out.
pub fn commit() {
    INFLIGHT_COMMITTED.store(true, Ordering::Relaxed);
}

/// The call returned.
pub fn leave() {
    INFLIGHT_FD.store(-1, Ordering::Relaxed);
}

/// From the worker's SIGABRT handler: write the request line in hand into
/// the worker's slot, where the master reads it for its log. Copies memory
/// only: async-signal-safe.
pub fn record_request_line(slot: &Slot) {
    if INFLIGHT_FD.load(Ordering::Relaxed) < 0 {
        return;
    }
    let ptr = INFLIGHT_LINE.load(Ordering::Relaxed);
    let len = INFLIGHT_LINE_LEN.load(Ordering::Relaxed);
    if ptr.is_null() {
        return;
    }
    // SAFETY: `enter` stored a slice of the read buffer of the call in
    // hand, which has not returned (INFLIGHT_FD is set until it does): the
    // thread that owns the buffer is stuck in it.
    let line = unsafe { std::slice::from_raw_parts(ptr, len) };
    slot.set_request_line(line);
}

/// From the worker's SIGABRT handler: answer the request in hand if nothing
/// of its answer was sent yet. Only async-signal-safe calls.
pub fn answer_inflight(timed_out: bool) {
    let fd = INFLIGHT_FD.load(Ordering::Relaxed);
    if fd < 0 || INFLIGHT_COMMITTED.load(Ordering::Relaxed) {
        return;
    }
    let (answer, body) = if timed_out {
        (TIMEOUT_ANSWER, TIMEOUT_BODY)
    } else {
        (CRASH_ANSWER, CRASH_BODY)
    };
    let answer = if INFLIGHT_HEAD.load(Ordering::Relaxed) {
        &answer[..answer.len() - body.len()]
    } else {
        answer
    };
    // SAFETY: write(2) on a descriptor this process owns, from a static
    // buffer; async-signal-safe.
    unsafe { libc::write(fd, answer.as_ptr().cast(), answer.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_answers_state_their_body_length() {
        for (answer, body) in [(TIMEOUT_ANSWER, TIMEOUT_BODY), (CRASH_ANSWER, CRASH_BODY)] {
            let head = &answer[..answer.len() - body.len()];
            assert!(head.ends_with("\r\n\r\n"), "{head:?}");
            assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        }
    }
}
