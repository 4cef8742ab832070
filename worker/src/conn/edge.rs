//! What a connection learns about its client from the proxy in front: the
//! PROXY protocol header before its first request (`--proxy-protocol`,
//! trusted from `--proxy-allow-from`), and, per request, the scheme and
//! client that a trusted proxy's `X-Forwarded-*` headers name
//! (`--forwarded-allow-ips`). The decoding itself is `proxy` and `allow`;
//! this is where their answers meet the connection.

use std::io::Write;

use rgun_gateway::ffi;
use rgun_gateway::grammar::{self, HeaderLines};

use super::{Conn, Phase};
use crate::context::Settings;
use crate::parse::{ForwardedScheme, Head};
use crate::proxy::{self, Decoded, ProxyError, Versions};
use crate::stream::{Peer, Stream};

/// How long a new connection has to deliver its PROXY protocol header. A
/// proxy sends it with the connection's first bytes, so a few seconds is
/// generous; a client that sends nothing loses its slot sooner than
/// `--header-timeout` would take it. (Gunicorn has no limit of its own
/// here; HAProxy's `timeout client` plays the part on its side.)
pub const PROXY_HEADER_TIMEOUT_MS: u64 = 5000;

/// The longest text of an address (an IPv6 address with an IPv4 tail).
const ADDR_TEXT_MAX: usize = 48;

impl Conn {
    /// `--proxy-protocol` is on: the connection's first bytes are a PROXY
    /// header if its peer is a proxy allowed to send one, and must not be
    /// one otherwise.
    pub(super) fn expect_proxy_header(&mut self, now_ms: u64, settings: &Settings) {
        let allowed = self.stream.peer_trusted_by(&settings.proxy_allow);
        self.phase = Phase::Proxy { allowed };
        self.deadline_ms = now_ms + PROXY_HEADER_TIMEOUT_MS.min(settings.header_timeout_ms);
    }

    /// In [`Phase::Proxy`], with what is buffered: take the header (the
    /// connection then goes on as HTTP), or wait for more, or refuse the
    /// connection (`Err`: it closes; the reason is logged).
    pub(super) fn take_proxy_header(
        &mut self,
        allowed: bool,
        now_ms: u64,
        settings: &Settings,
    ) -> Result<(), ()> {
        let buf = &self.rbuf[self.rstart..self.rend];
        if !allowed {
            return match proxy::signature_present(buf) {
                None => Ok(()),
                Some(false) => {
                    self.start_http(now_ms, settings);
                    Ok(())
                }
                Some(true) => {
                    log::warn!(
                        "closing a connection from {}: it sent a PROXY protocol header, and it is not in --proxy-allow-from",
                        describe(&self.peer)
                    );
                    Err(())
                }
            };
        }
        match proxy::decode(buf, settings.proxy_protocol) {
            Ok(Decoded::Incomplete) => Ok(()),
            Ok(Decoded::Done {
                consumed, source, ..
            }) => {
                self.rstart += consumed;
                if let Some(source) = source {
                    log::debug!(
                        "PROXY protocol: {} speaks for {source}",
                        describe(&self.peer)
                    );
                    self.peer.set_source(source, &settings.forwarded_allow);
                }
                self.start_http(now_ms, settings);
                Ok(())
            }
            Err(e) => {
                log::warn!(
                    "closing a connection from {}: {}",
                    describe(&self.peer),
                    refusal(e, settings.proxy_protocol)
                );
                Err(())
            }
        }
    }

    /// The header (or its absence) is settled: HTTP from here on, its
    /// first head due within `--header-timeout`.
    fn start_http(&mut self, now_ms: u64, settings: &Settings) {
        self.phase = Phase::Idle;
        self.deadline_ms = now_ms + settings.header_timeout_ms;
    }

    /// The deadline passed in [`Phase::Proxy`].
    pub(super) fn log_missing_proxy_header(&self) {
        log::warn!(
            "closing a connection from {}: no PROXY protocol header within {} ms",
            describe(&self.peer),
            PROXY_HEADER_TIMEOUT_MS
        );
    }
}

/// Why a header was refused, in the operator's words.
fn refusal(e: ProxyError, mode: Versions) -> String {
    let mode = match mode {
        Versions::Off => "off",
        Versions::V1 => "v1",
        Versions::V2 => "v2",
        Versions::Auto => "auto",
    };
    match e {
        ProxyError::NotProxy => {
            format!(
                "it did not start with the PROXY protocol header --proxy-protocol {mode} expects"
            )
        }
        e => format!("{e} (--proxy-protocol {mode})"),
    }
}

fn describe(peer: &Peer) -> String {
    if peer.addr().is_empty() {
        "a Unix socket peer".to_string()
    } else {
        String::from_utf8_lossy(peer.addr()).into_owned()
    }
}

/// The peer of a connection another worker handed over. Its address
/// travelled as text: the PROXY header's source, if the connection had one
/// (it moves only once past the header), else the socket's peer. Trust is
/// this worker's rule over both, as `Peer::set_source` decides it.
pub(super) fn adopted_peer(stream: &Stream, text: &[u8], port: u16, settings: &Settings) -> Peer {
    let text_ip = std::str::from_utf8(text).ok().and_then(|t| t.parse().ok());
    let trusted = stream.peer_trusted_by(&settings.forwarded_allow)
        && settings.forwarded_allow.trusts(text_ip);
    Peer::from_text(text, port, trusted)
}

/// Whether a trusted proxy's scheme headers disagree (Gunicorn answers
/// 400: the proxy and the application would each see a different scheme).
pub fn scheme_conflict(peer: &Peer, head: &Head<'_>) -> bool {
    peer.trusted && head.forwarded_scheme == ForwardedScheme::Conflict
}

/// The scheme the application sees: https only on a trusted proxy's word.
pub fn scheme(peer: &Peer, head: &Head<'_>) -> &'static [u8] {
    if peer.trusted && head.forwarded_scheme == ForwardedScheme::Https {
        b"https"
    } else {
        b"http"
    }
}

/// Room for the text of the client's address, for the length of a call.
pub struct ClientText {
    text: [u8; ADDR_TEXT_MAX],
}

impl ClientText {
    pub fn new() -> ClientText {
        ClientText {
            text: [0; ADDR_TEXT_MAX],
        }
    }
}

/// The client's address for this request: the hop a trusted proxy's
/// `X-Forwarded-For` names (see `allow::forwarded_client`), else the
/// peer's (which a PROXY header may have set).
pub fn client_addr<'t>(
    peer: &'t Peer,
    head: &Head<'_>,
    fields: &[ffi::Header],
    allow: &crate::AllowList,
    room: &'t mut ClientText,
) -> &'t [u8] {
    if !(peer.trusted && head.forwarded_for) {
        return peer.addr();
    }
    // SAFETY: the fields point into the read buffer the head was parsed
    // from, untouched until the request is answered.
    let lines = unsafe { HeaderLines::from_raw(fields.as_ptr(), fields.len()) };
    let hops = lines
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"x-forwarded-for"))
        .flat_map(|(_, value)| value.split(|&b| b == b','))
        .map(grammar::trim_ows)
        .filter(|hop| !hop.is_empty());
    let Some(ip) = crate::allow::forwarded_client(hops, allow) else {
        return peer.addr();
    };
    let mut cursor = std::io::Cursor::new(&mut room.text[..]);
    if write!(cursor, "{ip}").is_err() {
        return peer.addr();
    }
    let len = cursor.position() as usize;
    &room.text[..len]
}
