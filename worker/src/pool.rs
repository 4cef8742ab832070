//! `--threads N`: application calls on a pool of threads, for applications
//! that block on I/O. The event loop hands a connection with buffered
//! requests to the pool; a thread answers them (blocking on that one socket
//! as the loop would) and hands the connection back through a waker. The
//! loop keeps accepting and serving other connections meanwhile.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use crate::access_log::AccessLog;
use crate::conn::Conn;
use crate::context::{Cx, Scratch, Settings};
use crate::response::DateCache;
use crate::scoreboard::monotonic_ms;

struct Job {
    key: usize,
    conn: Conn,
    draining: bool,
}

pub struct Pool {
    jobs: Sender<Job>,
    done: Receiver<(usize, Conn)>,
}

impl Pool {
    pub fn start(
        threads: usize,
        settings: &'static Settings,
        access_log: Option<&'static AccessLog>,
        waker: Arc<mio::Waker>,
    ) -> std::io::Result<Pool> {
        let (jobs, job_rx) = channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done) = channel();
        for i in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            let waker = Arc::clone(&waker);
            std::thread::Builder::new()
                .name(format!("rgun-app-{i}"))
                .spawn(move || {
                    let mut scratch = Scratch::new(&settings.limits);
                    let mut date = DateCache::new();
                    loop {
                        // The loop holds the sender for the life of the
                        // worker; a closed channel means the worker is done.
                        let job = match job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        let Job {
                            key,
                            mut conn,
                            draining,
                        } = job;
                        date.refresh();
                        conn.serve(&mut Cx {
                            settings,
                            scratch: &mut scratch,
                            date: date.line(),
                            now_ms: monotonic_ms(),
                            draining,
                            access_log,
                        });
                        if let Some(log) = access_log {
                            log.submit(&mut scratch.log.lines);
                        }
                        if done_tx.send((key, conn)).is_err() {
                            return;
                        }
                        let _ = waker.wake();
                    }
                })?;
        }
        Ok(Pool { jobs, done })
    }

    pub fn submit(&self, key: usize, conn: Conn, draining: bool) {
        // The threads live as long as the loop; a send cannot fail while it
        // runs.
        let _ = self.jobs.send(Job {
            key,
            conn,
            draining,
        });
    }

    /// A connection the pool finished with, if any.
    pub fn finished(&self) -> Option<(usize, Conn)> {
        self.done.try_recv().ok()
    }
}
