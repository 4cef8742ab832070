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
    outcome
}

pub fn log_access(
    log: &std::sync::Mutex<AccessLog>,
    (peer, client_addr): (&Peer, &[u8]),
    head: &Head<'_>,
    outcome: &Outcome,
    fields: &[ffi::Header],
) {
    log.lock().unwrap_or_else(|e| e.into_inner()).write(&Entry {
        remote_addr: peer.addr(),
        client_addr,
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
