//! A harness for `cargo bench`: the parse, dispatch and encode path of one
//! buffered request, through the real connection code, with no socket I/O
//! (the connection's socket is one end of a socketpair that is never read
//! or written). Not part of the server; hidden from the docs.

use rgun_gateway::ffi;

use crate::app::LoadedApp;
use crate::conn::Conn;
use crate::context::{Cx, Scratch, Settings};
use crate::parse::Limits;
use crate::response::DateCache;
use crate::scoreboard::Scoreboard;
use crate::scoreboard::metrics::{Metering, Writers};
use crate::stream::{ListenerInfo, Peer, Stream};

pub struct Harness {
    settings: &'static Settings,
    scratch: Scratch,
    date: DateCache,
    conn: Conn,
    _peer: std::os::unix::net::UnixStream,
}

impl Harness {
    /// Serve `app` with Gunicorn's default limits.
    pub fn new(app: &'static ffi::App) -> Harness {
        Harness::with_metrics(app, false)
    }

    /// As `new`, counting every request in the scoreboard when `metrics`
    /// (as with `--metrics-bind`).
    pub fn with_metrics(app: &'static ffi::App, metrics: bool) -> Harness {
        let limits = Limits {
            request_line: 4094,
            request_fields: 100,
            request_field_size: 8190,
            request_body: 0,
        };
        let board = Scoreboard::new(1).expect("mapping a scoreboard");
        let peers = board.peers(0);
        // The harness keeps the mapping for the rest of the process.
        std::mem::forget(board);
        let settings: &'static Settings = Box::leak(Box::new(Settings {
            limits: limits.clone(),
            keep_alive_ms: 2000,
            header_timeout_ms: 10_000,
            io_timeout_ms: 30_000,
            app: LoadedApp::new(app, b"app", 0),
            slot: peers.own(),
            listeners: vec![ListenerInfo {
                server_name: b"127.0.0.1".to_vec().into_boxed_slice(),
                server_port: 8000,
            }],
            forwarded_allow: crate::AllowList::default(),
            proxy_protocol: crate::proxy::Versions::Off,
            proxy_allow: crate::AllowList::default(),
            answer_on_abort: false,
            call_clock: Box::leak(Box::default()),
            peers,
            metrics: if metrics {
                Metering::On(Writers::One)
            } else {
                Metering::Off
            },
        }));
        let (ours, peer) = std::os::unix::net::UnixStream::pair().expect("a socketpair");
        ours.set_nonblocking(true).expect("non-blocking");
        let stream = Stream::Unix(mio::net::UnixStream::from_std(ours));
        Harness {
            settings,
            scratch: Scratch::new(&limits),
            date: DateCache::new(),
            conn: Conn::bare(
                stream,
                Peer::new(Some(([127, 0, 0, 1], 50000).into()), false),
            ),
            _peer: peer,
        }
    }

    /// Answer the requests in `input`; returns the bytes that would be sent.
    pub fn answer(&mut self, input: &[u8]) -> &[u8] {
        let access_log: Option<&'static crate::access_log::AccessLog> = None;
        self.conn.load_input(input);
        self.conn.process_for_bench(&mut Cx {
            settings: self.settings,
            scratch: &mut self.scratch,
            date: self.date.line(),
            now_ms: 0,
            draining: false,
            access_log,
        })
    }
}
