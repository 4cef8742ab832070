//! The access log: one line per request, in `--access-logformat` (Gunicorn's
//! atoms; Apache's combined format by default) or, with
//! `--access-log-json`, one JSON object. Off unless `--access-logfile`
//! names a file or `-` (standard output).
//!
//! Each thread that serves requests renders lines into its own batch (no
//! lock, no allocation once warm) and hands the batch to the log's writer
//! thread at the end of a loop turn; it never writes the file itself.

mod entry;
mod format;
mod json;
mod text;
mod writer;

use std::path::PathBuf;

pub use entry::{Capture, Entry, ResponseFields};
pub use format::{DEFAULT_FORMAT, DEFAULT_JSON_FORMAT, Format, FormatError};

use crate::timefmt;

/// A batch is handed over as soon as it is this large, even mid-turn.
const BATCH_BYTES: usize = 64 * 1024;

/// How lines are written.
#[derive(Clone, Debug)]
pub enum Style {
    Text,
    Json(json::Fields),
}

/// The access log as configured, checked in the master before any worker
/// starts.
#[derive(Clone, Debug)]
pub struct AccessLogConfig {
    pub path: PathBuf,
    format: Format,
    style: Style,
}

impl AccessLogConfig {
    /// `format`: `--access-logformat`, if given; `json`: `--access-log-json`.
    pub fn new(path: PathBuf, format: Option<&str>, json: bool) -> Result<Self, FormatError> {
        let format = match (format, json) {
            (Some(format), _) => format,
            (None, false) => DEFAULT_FORMAT,
            (None, true) => DEFAULT_JSON_FORMAT,
        };
        let format = Format::parse(format)?;
        let style = if json {
            Style::Json(json::Fields::new(&format))
        } else {
            Style::Text
        };
        Ok(AccessLogConfig {
            path,
            format,
            style,
        })
    }
}

/// A worker's access log.
pub struct AccessLog {
    format: Format,
    style: Style,
    writer: &'static writer::Writer,
}

/// The second a thread's lines are stamped with, rendered once a second.
pub struct Stamp {
    secs: u64,
    /// `21/Nov/2026:03:37:36 +0000`
    text: String,
    /// `2026-11-21T03:37:36Z`
    iso: String,
}

/// A thread's lines not yet handed to the writer, and its reused buffers.
#[derive(Default)]
pub struct LineScratch {
    line: Vec<u8>,
    count: u64,
    user: Vec<u8>,
    stamp: Stamp,
}

impl Default for Stamp {
    fn default() -> Stamp {
        Stamp {
            secs: u64::MAX,
            text: String::new(),
            iso: String::new(),
        }
    }
}

/// What a thread keeps for the access log from request to request.
#[derive(Default)]
pub struct LogScratch {
    pub lines: LineScratch,
    pub response: ResponseFields,
}

impl AccessLog {
    /// Open the file and start its writer (in the worker, after fork).
    pub fn open(config: AccessLogConfig) -> std::io::Result<&'static AccessLog> {
        let writer = writer::Writer::start(config.path)?;
        Ok(Box::leak(Box::new(AccessLog {
            format: config.format,
            style: config.style,
            writer,
        })))
    }

    /// The response headers to capture while the application answers.
    pub fn response_headers(&self) -> &[Box<[u8]>] {
        &self.format.response_headers
    }

    /// The format measures the request's time.
    pub fn timed(&self) -> bool {
        self.format.timed
    }

    /// Render one request's line into the thread's batch.
    pub fn write(&self, entry: &Entry<'_>, lines: &mut LineScratch) {
        let now = timefmt::unix_now();
        if now != lines.stamp.secs {
            lines.stamp = Stamp {
                secs: now,
                text: timefmt::access_log_time(now),
                iso: timefmt::iso_time(now),
            };
        }
        match &self.style {
            Style::Text => text::render(&self.format, entry, lines),
            Style::Json(fields) => json::render(&self.format, fields, entry, lines),
        }
        lines.count += 1;
        if lines.line.len() >= BATCH_BYTES {
            self.submit(lines);
        }
    }

    /// Hand the thread's lines to the writer.
    pub fn submit(&self, lines: &mut LineScratch) {
        if lines.count > 0 {
            self.writer.submit(&mut lines.line, lines.count);
            lines.count = 0;
        }
    }

    /// On `USR1`: a log rotator moved the file away.
    pub fn reopen(&self) {
        self.writer.reopen();
    }

    /// Before the worker leaves or says it will: what was handed over is
    /// written (for a bounded time).
    pub fn flush(&self) {
        self.writer.flush();
    }
}
