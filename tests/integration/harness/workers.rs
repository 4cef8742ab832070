//! What tests ask of the workers behind a server: which process answered
//! (`/pid`), whether a process is still there, when a retired worker is
//! gone, and polling a condition with a bound.

use std::thread;
use std::time::{Duration, Instant};

use super::client::Conn;
use super::requests::get;
use super::server::Server;
use super::{POLL, WAIT};

/// `GET /pid` on `conn`: the pid of the worker that answered.
pub fn pid_of(conn: &mut Conn) -> u32 {
    let response = conn.request(&get("/pid"));
    response.assert_status(200);
    response.text().parse().expect("a decimal pid")
}

/// `GET /pid` on a new connection.
pub fn fresh_pid(server: &Server) -> u32 {
    pid_of(&mut server.connect())
}

/// Whether a process exists (a zombie counts as existing).
pub fn process_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Poll `done` until it holds; panic with `what` after `WAIT`.
#[track_caller]
pub fn wait_until(what: &str, done: impl FnMut() -> bool) {
    wait_until_within(what, WAIT, done);
}

/// Poll `done` until it holds; panic with `what` after `timeout`.
#[track_caller]
pub fn wait_until_within(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        thread::sleep(POLL);
    }
}

/// Wait until the retired worker `pid` says it exits (Gunicorn's line,
/// which the worker writes itself), then until the master has reaped it.
#[track_caller]
pub fn wait_retired(server: &Server, pid: u32) {
    let line = server.wait_for_log(&format!("Worker exiting (pid: {pid})"), WAIT);
    assert_eq!(log_line_pid(&line), Some(pid), "{line}");
    wait_until(&format!("worker {pid} is reaped"), || !process_exists(pid));
}

/// How many "Booting worker" lines the master has written so far.
pub fn boots(server: &Server) -> usize {
    server
        .stderr
        .text()
        .matches("Booting worker with pid: ")
        .count()
}

/// The pid that wrote a log line: `[time] [PID] [LEVEL] message`.
pub fn log_line_pid(line: &str) -> Option<u32> {
    line.split("] [").nth(1)?.parse().ok()
}
