//! One request's exchange with the application, as the connection drives
//! it: the request view the gateway hands over, the call itself (marked in
//! hand for the scoreboard, the affinity watcher and the abort handler),
//! and the access log line.

use rgun_gateway::ffi;
use rgun_gateway::grammar::HeaderLines;

use crate::access_log::{AccessLog, Entry};
use crate::call::{CallCtx, CallSetup, Outcome};
use crate::context::Settings;
use crate::parse::{self, Head};
use crate::scoreboard::metrics::{self, Finished, Metering};
use crate::stream::{ListenerInfo, Peer};

/// The request as the application sees it: slices into the read buffer and
/// the scratch space, valid for the call.
pub fn request_view(
    head: &Head<'_>,
    path: &[u8],
    peer: &Peer,
    listener: &ListenerInfo,
    fields: &[ffi::Header],
) -> ffi::Request {
    // Gunicorn's secure scheme header, from a trusted proxy.
    let https = peer.trusted && head.forwarded_proto.eq_ignore_ascii_case(b"https");
    ffi::Request {
        method: ffi::Str::new(head.method),
        raw_uri: ffi::Str::new(head.target),
        path: ffi::Str::new(path),
        query: ffi::Str::new(head.query),
        script_name: ffi::Str::EMPTY,
        protocol: ffi::Str::new(head.version.as_bytes()),
        scheme: ffi::Str::new(if https { b"https" } else { b"http" }),
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

pub fn log_access(
    log: &std::sync::Mutex<AccessLog>,
    peer: &Peer,
    head: &Head<'_>,
    outcome: &Outcome,
    fields: &[ffi::Header],
) {
    log.lock().unwrap_or_else(|e| e.into_inner()).write(&Entry {
        remote_addr: peer.addr(),
        method: head.method,
        target: head.target,
        version: head.version,
        status: outcome.status,
        body_bytes: outcome.body_bytes,
        referer: field(fields, b"referer"),
        user_agent: field(fields, b"user-agent"),
    });
}

fn field<'f>(fields: &'f [ffi::Header], name: &[u8]) -> &'f [u8] {
    // SAFETY: the fields point into the read buffer, which is not touched
    // between parsing and this use.
    let lines = unsafe { HeaderLines::from_raw(fields.as_ptr(), fields.len()) };
    lines.get(name).unwrap_or_default()
}
