//! What a process writes, as a test waits for it: a pipe followed line by
//! line by a thread, with a condition variable to wait on, and a log file
//! polled for a line. It only collects and waits; the tests judge the lines.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::POLL;

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    closed: bool,
}

/// The lines a child wrote to one of its pipes, collected by a thread, with a
/// condition variable so that a test can wait for a line to appear.
pub struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

impl Log {
    pub(super) fn follow(pipe: impl Read + Send + 'static) -> Arc<Log> {
        let log = Arc::new(Log {
            state: Mutex::new(LogState::default()),
            changed: Condvar::new(),
        });
        let writer = Arc::clone(&log);
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        let text = text.trim_end_matches(['\n', '\r']).to_string();
                        writer.state.lock().unwrap().lines.push(text);
                        writer.changed.notify_all();
                    }
                }
            }
            writer.state.lock().unwrap().closed = true;
            writer.changed.notify_all();
        });
        log
    }

    pub fn lines(&self) -> Vec<String> {
        // A wait that panicked held the lock: the lines are still good for
        // the guard's report of the failure.
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.lines.clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Wait until `count` lines contain `pattern`; return them. Panics with
    /// everything logged so far when the pipe closes first or on timeout.
    pub fn wait_for_count(&self, pattern: &str, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        loop {
            let found: Vec<String> = state
                .lines
                .iter()
                .filter(|l| l.contains(pattern))
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                panic!(
                    "expected {count} line(s) containing {pattern:?}, {} {}; output so far:\n{}",
                    if state.closed {
                        "but the stream closed"
                    } else {
                        "but timed out"
                    },
                    format_args!("(saw {})", found.len()),
                    state.lines.join("\n")
                );
            }
            state = self.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Wait for the first line containing `pattern`.
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> String {
        self.wait_for_count(pattern, 1, timeout).remove(0)
    }

    /// Wait for the first line that `matches` accepts.
    pub fn wait_for_match(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(line) = state.lines.iter().find(|l| matches(l)) {
                return line.clone();
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                panic!(
                    "expected a line with {what}; output so far:\n{}",
                    state.lines.join("\n")
                );
            }
            state = self.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Wait until the writer closed the pipe (the process and every child
    /// that inherited the pipe exited).
    pub fn wait_closed(&self, timeout: Duration) {
        assert!(self.closed_within(timeout), "the pipe stayed open");
    }

    /// Whether the pipe closed within `timeout`.
    pub(super) fn closed_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        while !state.closed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
        true
    }
}
/// Poll until `path` holds a line containing `pattern` (for logs written to
/// a file rather than a pipe); return that line.
pub fn wait_for_file_line(path: &Path, pattern: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(pattern)) {
            return line.to_string();
        }
        if Instant::now() >= deadline {
            panic!(
                "no line containing {pattern:?} in {} within {timeout:?}; it holds:\n{text}",
                path.display()
            );
        }
        thread::sleep(POLL);
    }
}
