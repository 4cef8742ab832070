//! One request's exchange with the application, as the connection drives
//! it: the request view the gateway hands over, the call itself (marked in
//! hand for the scoreboard, the affinity watcher and the abort handler),
//! and the access log line.

use rgun_gateway::ffi;
use rgun_gateway::grammar::HeaderLines;

use std::time::Instant;

use crate::access_log::{AccessLog, Capture, Entry, LogScratch, ResponseFields};
use crate::call::{CallCtx, CallSetup, Outcome};
use crate::context::Settings;
use crate::parse::{self, Head};
use crate::scoreboard::metrics::{self, Finished, Metering};
use crate::stream::{ListenerInfo, Peer};

/// The request as the application sees it: slices into the read buffer and
/// the scratch space, valid for the call.
/// `client`: the peer, and the client's address as decided for this
/// request (see `conn::edge::client_addr`).
pub fn request_view(
    head: &Head<'_>,
    path: &[u8],
    (peer, client_addr): (&Peer, &[u8]),
    listener: &ListenerInfo,
    fields: &[ffi::Header],
) -> ffi::Request {
    ffi::Request {
        method: ffi::Str::new(head.method),
        raw_uri: ffi::Str::new(head.target),
        path: ffi::Str::new(path),
        query: ffi::Str::new(head.query),
        script_name: ffi::Str::EMPTY,
        protocol: ffi::Str::new(head.version.as_bytes()),
        // Gunicorn's secure scheme headers, from a trusted proxy.
        scheme: ffi::Str::new(crate::conn::edge::scheme(peer, head)),
        server_name: ffi::Str::new(&listener.server_name),
        remote_addr: ffi::Str::new(peer.addr()),
        content_type: ffi::Str::new(head.content_type),
        headers: fields.as_ptr(),
        header_count: fields.len(),
        // The parser keeps lengths within i64.
        content_length: head.content_length.map_or(-1, |n| n as i64),
        server_port: listener.server_port,
        remote_port: peer.port,
        body_chunked: u8::from(head.framing == parse::Framing::Chunked),
        client_addr: ffi::Str::new(client_addr),
    }
}

/// Run the application on one request (or answer `OPTIONS *` for it).
pub fn call_app(
    settings: &Settings,
    setup: CallSetup<'_>,
    head: &Head<'_>,
    request: &ffi::Request,
    now_ms: u64,
) -> Outcome {
    let mut call = CallCtx::new(setup);
    settings.slot.request_started(now_ms);
    // With metrics on: the request line for the status page, and the
    // precise clock (the vDSO's, no system call) around the call.
    let started_ns = match settings.metrics {
        Metering::On(_) => {
            settings.slot.set_request_line(head.request_line);
            metrics::monotonic_ns()
        }
        Metering::Off => 0,
    };
    settings.slot.call_started();
    if settings.answer_on_abort {
        call.enter(head.request_line);
        settings.call_clock.wake_watcher();
    }
    let rc = if head.method == b"OPTIONS" && head.target == b"*" {
        call.answer_options_asterisk()
    } else {
        settings.app.handle(call.as_ffi(), request)
    };
    let outcome = call.finish(rc);
    settings.slot.call_finished();
    // Status 0: the client left before any answer; nothing to count.
    if let Metering::On(writers) = settings.metrics
        && outcome.status != 0
    {
        let done = Finished {
            method: metrics::method_index(head.method),
            status: outcome.status,
            duration_ns: metrics::monotonic_ns().saturating_sub(started_ns),
            request_bytes: head.len as u64 + outcome.request_body_bytes,
            // An answer to HEAD counts its body's length, but sends none.
            response_bytes: outcome.head_bytes
                + if head.is_head_method() {
                    0
                } else {
                    outcome.body_bytes
                },
        };
        settings.slot.counters().record(done, writers);
    }
    outcome
}

/// The response headers the access log shows, kept while the application
/// answers: only when its format asks for some.
pub fn capture<'a>(
    log: Option<&'static AccessLog>,
    fields: &'a mut ResponseFields,
) -> Option<Capture<'a>> {
    let names = log?.response_headers();
    (!names.is_empty()).then_some(Capture { names, fields })
}

/// With metrics on: a request refused before the application saw it (its
/// head was malformed or too large), counted with the server's answer.
pub fn count_refused(settings: &Settings, input: &[u8], status: u16, answer_bytes: usize) {
    let Metering::On(writers) = settings.metrics else {
        return;
    };
    let method = input.split(|b| *b == b' ').next().unwrap_or_default();
    let done = Finished {
        method: metrics::method_index(method),
        status,
        duration_ns: 0,
        request_bytes: input.len() as u64,
        response_bytes: answer_bytes as u64,
    };
    settings.slot.counters().record(done, writers);
}

/// When the request started, if the access log shows its duration.
pub fn log_clock(log: Option<&'static AccessLog>) -> Option<Instant> {
    log.filter(|log| log.timed()).map(|_| Instant::now())
}

/// What the access log line of a request is made from, besides the answer.
pub struct Logged<'a> {
    pub peer: &'a Peer,
    /// The client a trusted proxy forwarded for (`rgun.client_addr`).
    pub client_addr: &'a [u8],
    pub listener: &'a ListenerInfo,
    pub head: &'a Head<'a>,
    /// The decoded path.
    pub path: &'a [u8],
    pub fields: &'a [ffi::Header],
    pub started: Option<Instant>,
}

pub fn log_access(log: &AccessLog, scratch: &mut LogScratch, req: Logged<'_>, outcome: &Outcome) {
    let head = req.head;
    let LogScratch { lines, response } = scratch;
    // SAFETY: the fields point into the read buffer, which is not touched
    // between parsing and this use.
    let headers = unsafe { HeaderLines::from_raw(req.fields.as_ptr(), req.fields.len()) };
    let entry = Entry {
        remote_addr: req.peer.addr(),
        remote_port: req.peer.port,
        method: head.method,
        target: head.target,
        path: req.path,
        query: head.query,
        version: head.version,
        scheme: crate::conn::edge::scheme(req.peer, head),
        client_addr: req.client_addr,
        server_name: &req.listener.server_name,
        server_port: req.listener.server_port,
        content_type: head.content_type,
        content_length: head.content_length,
        headers,
        response,
        status: outcome.status,
        body_bytes: outcome.body_bytes,
        duration: req.started.map(|t| t.elapsed()),
    };
    log.write(&entry, lines);
}
