//! The access log's file, written by a thread of its own so that a slow
//! disk (or a stalled pipe) never holds up a thread that serves requests:
//! those hand over finished lines in batches and go on. When more than
//! [`MAX_PENDING_BYTES`] wait, further batches are dropped and counted,
//! and the count is logged as a warning once the writer catches up.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Lines waiting for the writer, at most; Gunicorn has no bound (its
/// workers block on the write).
pub const MAX_PENDING_BYTES: usize = 1024 * 1024;
/// How long a worker about to leave (or to say it will) waits for its lines
/// to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(5);
/// A pipe takes a write of up to this many bytes whole (POSIX PIPE_BUF on
/// Linux): lines from several workers sharing standard output do not mix.
const PIPE_BUF: usize = 4096;

/// Where lines go, opened in the worker (and again on `USR1`).
struct Target {
    path: PathBuf,
    file: File,
    /// Not a regular file (a pipe, a terminal): writes stay within
    /// [`PIPE_BUF`] where lines allow.
    pipe: bool,
}

impl Target {
    fn open(path: PathBuf) -> io::Result<Target> {
        let file = if path.as_os_str() == "-" {
            File::from(io::stdout().as_fd().try_clone_to_owned()?)
        } else {
            OpenOptions::new().create(true).append(true).open(&path)?
        };
        let pipe = !file.metadata()?.file_type().is_file();
        Ok(Target { path, file, pipe })
    }

    /// A log rotator moved the file away: the same path, anew.
    fn reopen(&mut self) -> io::Result<()> {
        if self.path.as_os_str() != "-" {
            *self = Target::open(self.path.clone())?;
        }
        Ok(())
    }

    /// Whole lines only: a failed write (a full disk) loses them, and the
    /// worker serves on.
    fn write(&mut self, mut lines: &[u8]) {
        if !self.pipe {
            let _ = self.file.write_all(lines);
            return;
        }
        while !lines.is_empty() {
            let cut = match lines[..lines.len().min(PIPE_BUF)]
                .iter()
                .rposition(|&b| b == b'\n')
            {
                Some(end) => end + 1,
                // A single line longer than a pipe write.
                None => lines
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(lines.len(), |e| e + 1),
            };
            if self.file.write_all(&lines[..cut]).is_err() {
                return;
            }
            lines = &lines[cut..];
        }
    }
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    dropped: u64,
    reopen: bool,
    writing: bool,
}

/// The hand-over point between the threads that serve and the writer.
pub struct Writer {
    pending: Mutex<Pending>,
    /// Lines or a reopen for the writer.
    work: Condvar,
    /// The writer finished a batch.
    written: Condvar,
}

impl Writer {
    /// Open the log (errors here stop the worker's boot) and start its
    /// thread.
    pub fn start(path: PathBuf) -> io::Result<&'static Writer> {
        let mut target = Target::open(path)?;
        let writer: &'static Writer = Box::leak(Box::new(Writer {
            pending: Mutex::default(),
            work: Condvar::new(),
            written: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("rgun-access-log".into())
            .spawn(move || writer.run(&mut target))?;
        Ok(writer)
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hand over `batch` (`count` whole lines); it comes back empty, with
    /// room for the next ones.
    pub fn submit(&self, batch: &mut Vec<u8>, count: u64) {
        let mut pending = self.lock();
        if pending.lines.len() + batch.len() > MAX_PENDING_BYTES {
            pending.dropped += count;
            batch.clear();
            return;
        }
        let wake = pending.lines.is_empty();
        if wake {
            // The common case: no copy, the buffers trade places.
            std::mem::swap(&mut pending.lines, batch);
        } else {
            pending.lines.extend_from_slice(batch);
            batch.clear();
        }
        drop(pending);
        // Otherwise the writer is busy, and takes these lines next.
        if wake {
            self.work.notify_one();
        }
    }

    /// On `USR1`; the writer reopens before its next write.
    pub fn reopen(&self) {
        self.lock().reopen = true;
        self.work.notify_one();
    }

    /// Wait (a bounded time) until what was handed over is written.
    pub fn flush(&self) {
        let deadline = Instant::now() + FLUSH_WAIT;
        let mut pending = self.lock();
        while !pending.lines.is_empty() || pending.writing {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            pending = self
                .written
                .wait_timeout(pending, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn run(&self, target: &mut Target) {
        let mut batch = Vec::new();
        loop {
            let (reopen, dropped) = {
                let mut pending = self.lock();
                while pending.lines.is_empty() && !pending.reopen {
                    pending = self.work.wait(pending).unwrap_or_else(|e| e.into_inner());
                }
                std::mem::swap(&mut pending.lines, &mut batch);
                pending.writing = true;
                (
                    std::mem::take(&mut pending.reopen),
                    std::mem::take(&mut pending.dropped),
                )
            };
            if reopen && let Err(e) = target.reopen() {
                log::error!(
                    "reopening the access log {} failed: {e}",
                    target.path.display()
                );
            }
            if dropped > 0 {
                log::warn!(
                    "the access log dropped {dropped} lines: {} could not take them as fast as requests came",
                    target.path.display()
                );
            }
            target.write(&batch);
            batch.clear();
            if batch.capacity() > MAX_PENDING_BYTES {
                batch = Vec::new();
            }
            self.lock().writing = false;
            self.written.notify_all();
        }
    }
}
