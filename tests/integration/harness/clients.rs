//! Client threads that keep asking `GET /pid` while a test does something
//! to the server (a reload, a recycle), and what each of them saw. The
//! asking loop is the test's own (how strict it is differs); the threads,
//! the count of answers, the wait for more and the final tally are here.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::WAIT;
use super::client::{Conn, Response};

/// How often a wait below looks again at the answer count.
const POLL: Duration = Duration::from_millis(5);

/// What one client saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub requests: usize,
    pub connections: usize,
    /// Connections the server ended after a complete answer that said
    /// `Connection: close`.
    pub closed_after_answer: usize,
    /// Connections found closed when a request was sent after the
    /// connection had been idle long enough for the server's keep-alive
    /// deadline (the client thread was not scheduled): the request resent.
    pub closed_while_idle: usize,
    /// Answers per worker pid.
    pub per_pid: HashMap<u32, usize>,
}

impl Tally {
    /// The workers that answered.
    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.per_pid.keys().copied()
    }

    /// One more answer, from `pid`.
    pub fn answered_by(&mut self, pid: u32, answered: &AtomicUsize) {
        *self.per_pid.entry(pid).or_default() += 1;
        self.requests += 1;
        answered.fetch_add(1, Ordering::SeqCst);
    }
}

/// The pid a `GET /pid` answer names, if it is a whole `200`; else what
/// was wrong, after `where_` (which request on which connection).
pub fn pid_answer(response: &Response, where_: &str) -> Result<u32, String> {
    if response.status != 200 {
        return Err(format!(
            "{where_}: answered {}:\n{}",
            response.status,
            String::from_utf8_lossy(&response.raw)
        ));
    }
    response
        .text()
        .parse()
        .map_err(|e| format!("{where_}: not a pid ({e}): {:?}", response.text()))
}

/// After an answer that said `Connection: close`: nothing may follow it.
pub fn nothing_after_close(conn: &mut Conn, where_: &str) -> Result<(), String> {
    let (rest, _) = conn.read_to_end();
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{where_}: bytes after a Connection: close answer: {:?}",
            String::from_utf8_lossy(&rest)
        ))
    }
}

/// A few client threads, each running the test's asking loop with the
/// stop flag and the shared count of answers.
pub struct Clients {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Result<Tally, String>>>,
}

impl Clients {
    pub fn start<F>(n: usize, ask: F) -> Clients
    where
        F: Fn(&AtomicBool, &AtomicUsize) -> Result<Tally, String> + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let ask = Arc::new(ask);
        let threads = (0..n)
            .map(|_| {
                let (stop, answered, ask) =
                    (Arc::clone(&stop), Arc::clone(&answered), Arc::clone(&ask));
                thread::spawn(move || ask(&stop, &answered))
            })
            .collect();
        Clients {
            stop,
            answered,
            threads,
        }
    }

    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Keep the load on until `done` holds. Fails the test when the
    /// clients stop first (one failed, or their budget is used up) or after
    /// `timeout`.
    #[track_caller]
    pub fn run_until(&mut self, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done() {
            if self.threads.iter().any(JoinHandle::is_finished) {
                let tallies = self.finish();
                panic!("the clients stopped before {what}: {tallies:?}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} ({} requests answered) waiting until {what}",
                self.answered()
            );
            thread::sleep(POLL);
        }
    }

    /// Wait until `n` more requests than now were answered.
    #[track_caller]
    pub fn wait_for_more(&mut self, n: usize) {
        let target = self.answered() + n;
        let answered = Arc::clone(&self.answered);
        self.run_until(&format!("{target} requests answered"), WAIT, || {
            answered.load(Ordering::SeqCst) >= target
        });
    }

    /// Stop the clients; fail with every client's error, if any.
    #[track_caller]
    pub fn finish(&mut self) -> Vec<Tally> {
        self.stop.store(true, Ordering::SeqCst);
        let mut tallies = Vec::new();
        let mut errors = Vec::new();
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(Ok(tally)) => tallies.push(tally),
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push("a client thread panicked".to_string()),
            }
        }
        assert!(
            errors.is_empty(),
            "requests were lost:\n{}",
            errors.join("\n")
        );
        tallies
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
