//! What connections work with, besides themselves: the worker's settings
//! fixed at boot (read by every thread), a thread's scratch space, and the
//! event loop's own state (the clock, the drain flag, buffer pools). A
//! [`Cx`] is the view of these that answering a request needs, on
//! whichever thread does it.

use rgun_gateway::ffi;

use crate::access_log::{AccessLog, LogScratch};
use crate::app::LoadedApp;
use crate::body::Spill;
use crate::parse::{self, Limits};
use crate::response::DateCache;
use crate::scoreboard::Slot;
use crate::stream::ListenerInfo;

/// A read buffer's starting size; it grows to the largest head allowed.
pub const READ_BUFFER_SIZE: usize = 16 * 1024;
/// Output kept unsent before the connection stops reading more requests.
pub const MAX_PENDING_OUTPUT: usize = 256 * 1024;
/// Buffers kept for reuse by a worker.
const MAX_POOLED_BUFFERS: usize = 64;
/// The spill holds this many read buffers' worth of body.
const SPILL_BUFFERS: usize = 4;

/// What every thread of a worker reads and none writes, fixed at boot.
pub struct Settings {
    pub limits: Limits,
    pub keep_alive_ms: u64,
    pub header_timeout_ms: u64,
    pub io_timeout_ms: u64,
    pub app: LoadedApp,
    pub slot: &'static Slot,
    pub listeners: Vec<ListenerInfo>,
    /// `--forwarded-allow-ips`.
    pub forwarded_allow: crate::AllowList,
    /// `--proxy-protocol` and `--proxy-allow-from`.
    pub proxy_protocol: crate::proxy::Versions,
    pub proxy_allow: crate::AllowList,
    /// One thread runs the application: the abort handler may answer the
    /// request in hand (with several there is no one request in hand).
    pub answer_on_abort: bool,
    /// Counts the calls of a single-threaded worker, for its affinity
    /// watcher.
    pub call_clock: &'static crate::watcher::CallClock,
    /// The other workers' load, to leave them work they can take sooner.
    pub peers: crate::scoreboard::Peers,
    /// `--metrics-bind`: count each request in the slot.
    pub metrics: crate::scoreboard::metrics::Metering,
}

/// A thread's scratch space, reused from request to request.
pub struct Scratch {
    pub fields: Vec<ffi::Header>,
    pub path: Vec<u8>,
    pub spill: Spill,
    pub log: LogScratch,
}

impl Scratch {
    pub fn new(limits: &Limits) -> Scratch {
        Scratch {
            fields: Vec::with_capacity(limits.request_fields.min(parse::MAX_REQUEST_FIELDS_CAP)),
            path: Vec::new(),
            spill: Spill::new(READ_BUFFER_SIZE * SPILL_BUFFERS),
            log: LogScratch::default(),
        }
    }
}

/// What answering requests needs, on whichever thread does it.
pub struct Cx<'a> {
    pub settings: &'a Settings,
    pub scratch: &'a mut Scratch,
    /// The `Date` field line (`DateCache::line`), CRLF included.
    pub date: &'a [u8],
    pub now_ms: u64,
    pub draining: bool,
    pub access_log: Option<&'static AccessLog>,
}

/// Whether the worker takes new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptMode {
    Accepting,
    /// Accepting failed (out of descriptors or memory): resumed at the
    /// next tick rather than spinning on a listener that stays readable.
    Paused,
    /// Every application thread has a call: new work is left to workers
    /// that can take it now.
    Full,
    /// `--worker-connections` are open: no more until one closes.
    AtCapacity,
    /// `TERM`: no new connections, and the open ones end after their
    /// current request.
    Draining,
}

/// The event loop's own state that connections use: the clock, the drain
/// flag, buffer pools, and the loop thread's scratch.
pub struct Shared {
    pub settings: &'static Settings,
    pub scratch: Scratch,
    pub date: DateCache,
    pub now_ms: u64,
    pub accept: AcceptMode,
    pub access_log: Option<&'static AccessLog>,
    read_pool: Vec<Vec<u8>>,
    write_pool: Vec<Vec<u8>>,
}

impl Shared {
    pub fn new(settings: &'static Settings, access_log: Option<&'static AccessLog>) -> Shared {
        Shared {
            settings,
            scratch: Scratch::new(&settings.limits),
            date: DateCache::new(),
            now_ms: 0,
            accept: AcceptMode::Accepting,
            access_log,
            read_pool: Vec::new(),
            write_pool: Vec::new(),
        }
    }

    pub fn cx(&mut self) -> Cx<'_> {
        Cx {
            settings: self.settings,
            scratch: &mut self.scratch,
            date: self.date.line(),
            now_ms: self.now_ms,
            draining: self.accept == AcceptMode::Draining,
            access_log: self.access_log,
        }
    }

    /// The end of a loop turn: the lines of the turn's requests go to the
    /// access log's writer.
    pub fn submit_access_log(&mut self) {
        if let Some(log) = self.access_log {
            log.submit(&mut self.scratch.log.lines);
        }
    }

    pub fn is_draining(&self) -> bool {
        self.accept == AcceptMode::Draining
    }

    pub fn take_read_buffer(&mut self) -> Vec<u8> {
        self.read_pool
            .pop()
            .unwrap_or_else(|| vec![0; READ_BUFFER_SIZE])
    }

    pub fn give_read_buffer(&mut self, mut buf: Vec<u8>) {
        if self.read_pool.len() < MAX_POOLED_BUFFERS && buf.len() >= READ_BUFFER_SIZE {
            buf.truncate(READ_BUFFER_SIZE);
            // A buffer grown for a large head does not stay large.
            buf.shrink_to(READ_BUFFER_SIZE);
            self.read_pool.push(buf);
        }
    }

    pub fn take_write_buffer(&mut self) -> Vec<u8> {
        self.write_pool.pop().unwrap_or_default()
    }

    pub fn give_write_buffer(&mut self, mut buf: Vec<u8>) {
        if self.write_pool.len() < MAX_POOLED_BUFFERS && buf.capacity() <= MAX_PENDING_OUTPUT {
            buf.clear();
            self.write_pool.push(buf);
        }
    }
}
