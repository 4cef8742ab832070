//! A request head: parsed by httparse, then checked and framed by the rules
//! of RFC 9112 (request line §3, field syntax §5, message body length §6).
//! This module reads bytes and decides; it does no I/O and copies nothing.

use std::mem::MaybeUninit;

use rgun_gateway::{ffi, grammar};

/// The most header fields a request may carry whatever the configuration
/// says: the parser's slots live on the stack.
pub const MAX_REQUEST_FIELDS_CAP: usize = 1024;

/// How long a request line or field line may grow when its limit is 0
/// (unlimited), for sizing the read buffer: Gunicorn's largest setting.
const UNLIMITED_LINE_BOUND: usize = 8190;
/// The bytes of a request line beside its method and target: two spaces and
/// `HTTP/1.1`.
const REQUEST_LINE_OVERHEAD: usize = 10;

/// What a request may be, from `--limit-request-*` (0: unlimited, for line,
/// field size and body).
#[derive(Clone, Debug)]
pub struct Limits {
    pub request_line: usize,
    pub request_fields: usize,
    pub request_field_size: usize,
    pub request_body: u64,
}

impl Limits {
    /// The most bytes a head may take before it is refused as too large.
    pub fn max_head_bytes(&self) -> usize {
        let line = if self.request_line == 0 {
            UNLIMITED_LINE_BOUND
        } else {
            self.request_line
        };
        let field = if self.request_field_size == 0 {
            UNLIMITED_LINE_BOUND
        } else {
            self.request_field_size
        };
        line + 2 + self.request_fields.max(1) * (field + 2) + 2
    }
}

/// The HTTP version of a request, as this server serves it (RFC 9112
/// §2.3; HTTP/1.2 and up are served as HTTP/1.1, see `next_head`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    fn from_minor(minor: u8) -> Version {
        if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }

    /// The protocol as the application sees it (`SERVER_PROTOCOL`).
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Version::Http10 => b"HTTP/1.0",
            Version::Http11 => b"HTTP/1.1",
        }
    }
}

/// How the body of a request is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A complete, valid request head: slices into the read buffer.
#[derive(Debug)]
pub struct Head<'b> {
    /// The bytes the head took, up to and including the empty line.
    pub len: usize,
    pub method: &'b [u8],
    /// The request target exactly as sent.
    pub target: &'b [u8],
    /// The path part of the target, still percent-encoded.
    pub path: &'b [u8],
    pub query: &'b [u8],
    pub version: Version,
    pub framing: Framing,
    /// The Content-Length sent, if one was (0 included).
    pub content_length: Option<u64>,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub content_type: &'b [u8],
    /// What `X-Forwarded-Proto`, `X-Forwarded-Protocol` and
    /// `X-Forwarded-Ssl` say of the scheme, for a proxy the operator trusts.
    pub forwarded_scheme: ForwardedScheme,
    /// An `X-Forwarded-For` line is among the fields.
    pub forwarded_for: bool,
    /// What the buffer holds after the head: the start of the body, or of
    /// the next request.
    pub rest: &'b [u8],
    /// The request line from its method to the end of its target, as sent.
    pub request_line: &'b [u8],
}

impl<'b> Head<'b> {
    pub fn is_head_method(&self) -> bool {
        self.method == b"HEAD"
    }
}

/// The scheme a proxy's headers claim (Gunicorn's `secure_scheme_headers`
/// with its defaults: `X-Forwarded-Proto: https`, `X-Forwarded-Protocol:
/// ssl`, `X-Forwarded-Ssl: on` each mean https, any other value http).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardedScheme {
    /// None of the headers was sent.
    #[default]
    Absent,
    Http,
    Https,
    /// They disagree: Gunicorn refuses the request with 400 (when the peer
    /// is trusted), since the proxy and the application would see
    /// different schemes.
    Conflict,
}

impl ForwardedScheme {
    /// One more header line's say.
    fn add(self, https: bool) -> ForwardedScheme {
        let said = if https {
            ForwardedScheme::Https
        } else {
            ForwardedScheme::Http
        };
        match self {
            ForwardedScheme::Absent => said,
            same if same == said => same,
            _ => ForwardedScheme::Conflict,
        }
    }
}

/// Why a head is refused; each maps to the status the client is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed request head")]
    Malformed,
    #[error("request line longer than --limit-request-line")]
    LineTooLong,
    #[error("more header fields than --limit-request-fields")]
    TooManyFields,
    #[error("a header field longer than --limit-request-field_size")]
    FieldTooLarge,
    #[error("HTTP version not supported")]
    Version,
    #[error("Content-Length and Transfer-Encoding together (RFC 9112 §6.3)")]
    LengthWithEncoding,
    #[error("invalid Content-Length (RFC 9112 §6.3)")]
    InvalidLength,
    #[error("Transfer-Encoding whose final coding is not chunked (RFC 9112 §6.3)")]
    ChunkedNotFinal,
    #[error("a transfer coding other than chunked (RFC 9112 §6.1)")]
    UnknownCoding,
    #[error("Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)")]
    EncodingInHttp10,
    #[error("missing, repeated or invalid Host (RFC 9112 §3.2)")]
    Host,
    #[error("Content-Type repeated: a single value, not a list (RFC 9110 §5.3, §8.3)")]
    RepeatedContentType,
    #[error("request target in no supported form (RFC 9112 §3.2)")]
    Target,
    #[error("CONNECT: this server is no proxy (RFC 9110 §9.3.6)")]
    Connect,
    #[error("an expectation other than 100-continue (RFC 9110 §10.1.1)")]
    Expectation,
    #[error("body larger than --limit-request-body")]
    BodyTooLarge,
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::LineTooLong => 414,
            HeadError::TooManyFields | HeadError::FieldTooLarge => 431,
            HeadError::Version => 505,
            HeadError::UnknownCoding | HeadError::Connect => 501,
            HeadError::Expectation => 417,
            HeadError::BodyTooLarge => 413,
            _ => 400,
        }
    }
}

/// The connection's parse: the head at the start of `buf`, with a request
/// line of HTTP/1.2 and up served as HTTP/1.1 (RFC 9110 §2.5: such a
/// request SHOULD be), by writing `1` over its minor digit in place and
/// parsing again.
pub fn next_head<'b>(
    buf: &'b mut [u8],
    limits: &Limits,
    fields: &mut Vec<ffi::Header>,
) -> Result<Option<Head<'b>>, HeadError> {
    let whole: *const [u8] = buf;
    // SAFETY: `whole` is `buf`, valid for 'b. What this shared borrow
    // yields is either returned, and `buf` is not used again, or an error
    // that holds no borrow, after which `buf` is written: the two never
    // overlap, which the borrow checker cannot see (rust-lang/rust#54663).
    match parse_head(unsafe { &*whole }, limits, fields) {
        Err(HeadError::Version) => {}
        other => return other,
    }
    let at = higher_minor_version(buf).ok_or(HeadError::Version)?;
    buf[at] = b'1';
    parse_head(buf, limits, fields)
}

/// Parse the head at the start of `buf`: `Ok(None)` while it is incomplete.
/// On success `fields` holds every header line for the application.
pub fn parse_head<'b>(
    buf: &'b [u8],
    limits: &Limits,
    fields: &mut Vec<ffi::Header>,
) -> Result<Option<Head<'b>>, HeadError> {
    let mut slots =
        [const { MaybeUninit::<httparse::Header<'b>>::uninit() }; MAX_REQUEST_FIELDS_CAP];
    let slot_count = limits.request_fields.clamp(1, MAX_REQUEST_FIELDS_CAP);
    let mut request = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        &mut slots[..slot_count],
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            check_partial(buf, limits)?;
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
        Err(httparse::Error::Version) => return partial_or_version_error(buf, limits),
        Err(_) => return Err(refine_malformed(buf, limits)),
    };
    let method = request.method.unwrap_or_default().as_bytes();
    let target = request.path.unwrap_or_default().as_bytes();
    let version = Version::from_minor(request.version.unwrap_or(1));
    check_line_ends(buf, len, method, target, limits)?;
    fields.clear();
    let mut scan = FieldScan::default();
    for field in request.headers.iter() {
        let (name, value) = (field.name.as_bytes(), field.value);
        // The name follows the line before's end: CRLF, not LF alone.
        let at = name.as_ptr() as usize - buf.as_ptr() as usize;
        if at < 2 || buf[at - 2] != b'\r' {
            return Err(HeadError::Malformed);
        }
        if limits.request_field_size != 0
            && name.len() + value.len() + 2 > limits.request_field_size
        {
            return Err(HeadError::FieldTooLarge);
        }
        fields.push(ffi::Header {
            name: ffi::Str::new(name),
            value: ffi::Str::new(value),
        });
        scan.field(name, value, fields.len() - 1)?;
    }
    scan.check(version)?;
    let FieldScan {
        framing,
        content_type,
        forwarded_scheme,
        forwarded_for,
        close,
        keep_alive_token,
        expect_continue,
        host_index,
        ..
    } = scan;
    let content_length = framing.length;
    let framing = framing.decide(version, limits)?;
    let (path, query, authority) = split_target(method, target)?;
    if let Some(authority) = authority {
        // RFC 9112 §3.2.2: with a target in absolute form, the server MUST
        // ignore Host and use the target's authority.
        if !is_valid_host(authority) {
            return Err(HeadError::Target);
        }
        if let Some(i) = host_index {
            fields[i].value = ffi::Str::new(authority);
        }
    }
    Ok(Some(Head {
        len,
        method,
        target,
        path,
        query,
        version,
        framing,
        content_length,
        keep_alive: !close && (version == Version::Http11 || keep_alive_token),
        expect_continue: expect_continue && version == Version::Http11,
        content_type,
        forwarded_scheme,
        forwarded_for,
        rest: &buf[len..],
        request_line: {
            let offset = |s: &[u8]| s.as_ptr() as usize - buf.as_ptr() as usize;
            &buf[offset(method)..offset(target) + target.len()]
        },
    }))
}

/// The request line within `--limit-request-line`, and every line of the
/// head ending in CRLF.
fn check_line_ends(
    buf: &[u8],
    len: usize,
    method: &[u8],
    target: &[u8],
    limits: &Limits,
) -> Result<(), HeadError> {
    let line_len = method.len() + target.len() + REQUEST_LINE_OVERHEAD;
    if limits.request_line != 0 && line_len > limits.request_line {
        // 414 is about the target: a method that long is no method.
        return Err(
            if method.len() + REQUEST_LINE_OVERHEAD > limits.request_line {
                HeadError::Malformed
            } else {
                HeadError::LineTooLong
            },
        );
    }
    // Every line ends in CRLF (RFC 9112 §2.2 lets a recipient accept a bare
    // LF; a proxy in front that does not would frame differently): the last
    // two here, the others before each field name below.
    if !buf[..len].ends_with(b"\r\n\r\n") {
        return Err(HeadError::Malformed);
    }
    Ok(())
}

/// What the header lines of a request say, gathered one line at a time.
#[derive(Default)]
struct FieldScan<'b> {
    framing: FramingFields,
    content_type: &'b [u8],
    content_types: u32,
    forwarded_scheme: ForwardedScheme,
    forwarded_for: bool,
    close: bool,
    keep_alive_token: bool,
    expect_continue: bool,
    expect_other: bool,
    hosts: u32,
    /// Where the Host line is among the fields.
    host_index: Option<usize>,
}

impl<'b> FieldScan<'b> {
    /// One header line, the `index`th of the fields.
    fn field(&mut self, name: &[u8], value: &'b [u8], index: usize) -> Result<(), HeadError> {
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                self.hosts += 1;
                self.host_index = Some(index);
                if !is_valid_host(value) {
                    return Err(HeadError::Host);
                }
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                for expectation in list_elements(value) {
                    let continues = expectation.eq_ignore_ascii_case(b"100-continue");
                    self.expect_continue |= continues;
                    self.expect_other |= !continues;
                }
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in list_elements(value) {
                    self.close |= token.eq_ignore_ascii_case(b"close");
                    self.keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            12 if name.eq_ignore_ascii_case(b"content-type") => {
                self.content_types += 1;
                self.content_type = value;
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => self.framing.add_length(value)?,
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                self.framing.add_encoding(value)
            }
            15 if name.eq_ignore_ascii_case(b"x-forwarded-for") => self.forwarded_for = true,
            15 if name.eq_ignore_ascii_case(b"x-forwarded-ssl") => {
                self.forwarded_scheme = self.forwarded_scheme.add(value.eq_ignore_ascii_case(b"on"))
            }
            17 if name.eq_ignore_ascii_case(b"x-forwarded-proto") => {
                self.forwarded_scheme = self
                    .forwarded_scheme
                    .add(value.eq_ignore_ascii_case(b"https"))
            }
            20 if name.eq_ignore_ascii_case(b"x-forwarded-protocol") => {
                self.forwarded_scheme = self
                    .forwarded_scheme
                    .add(value.eq_ignore_ascii_case(b"ssl"))
            }
            _ => {}
        }
        Ok(())
    }

    /// The rules over all the lines.
    fn check(&self, version: Version) -> Result<(), HeadError> {
        // RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one before.
        if self.hosts > 1 || (version == Version::Http11 && self.hosts == 0) {
            return Err(HeadError::Host);
        }
        // RFC 9110 §5.3: a field that is no list is not repeated; two media
        // types are no one media type, for a native app that sees every
        // line as for a WSGI app that sees CONTENT_TYPE. (Content-Length
        // has its own rule, RFC 9112 §6.3, in `FramingFields`.)
        if self.content_types > 1 {
            return Err(HeadError::RepeatedContentType);
        }
        // RFC 9110 §10.1.1: a server MUST ignore a 100-continue expectation
        // in an HTTP/1.0 request, and may refuse one it does not know with
        // 417.
        if self.expect_other && version == Version::Http11 {
            return Err(HeadError::Expectation);
        }
        Ok(())
    }
}

/// What the framing fields said, gathered over every line before deciding.
#[derive(Default)]
struct FramingFields {
    length: Option<u64>,
    encoding_seen: bool,
    chunked_count: u32,
    chunked_final: bool,
    unknown_coding: bool,
}

impl FramingFields {
    /// RFC 9112 §6.3 ¶5: a list of identical values is one value, on one
    /// line or over several; anything else that is not 1*DIGIT is invalid.
    fn add_length(&mut self, value: &[u8]) -> Result<(), HeadError> {
        let n = grammar::content_length_list(value)
            .ok()
            // The gateway carries the length as an i64.
            .filter(|&n| i64::try_from(n).is_ok())
            .filter(|&n| self.length.is_none_or(|seen| seen == n))
            .ok_or(HeadError::InvalidLength)?;
        self.length = Some(n);
        Ok(())
    }

    fn add_encoding(&mut self, value: &[u8]) {
        self.encoding_seen = true;
        for coding in list_elements(value) {
            let chunked = coding.eq_ignore_ascii_case(b"chunked");
            self.chunked_count += u32::from(chunked);
            self.unknown_coding |= !chunked;
            self.chunked_final = chunked;
        }
    }

    fn decide(self, version: Version, limits: &Limits) -> Result<Framing, HeadError> {
        if self.encoding_seen {
            if version == Version::Http10 {
                return Err(HeadError::EncodingInHttp10);
            }
            if self.length.is_some() {
                return Err(HeadError::LengthWithEncoding);
            }
            if !self.chunked_final || self.chunked_count != 1 {
                return Err(HeadError::ChunkedNotFinal);
            }
            if self.unknown_coding {
                return Err(HeadError::UnknownCoding);
            }
            return Ok(Framing::Chunked);
        }
        match self.length {
            Some(n) if limits.request_body != 0 && n > limits.request_body => {
                Err(HeadError::BodyTooLarge)
            }
            Some(0) | None => Ok(Framing::None),
            Some(n) => Ok(Framing::Length(n)),
        }
    }
}

/// Whether a request refused before it was parsed asked with HEAD: its
/// error answer then has no body.
pub fn is_head_request(buf: &[u8]) -> bool {
    buf[empty_lines_len(buf)..].starts_with(b"HEAD ")
}

/// The bytes of the empty lines a client may send before a request line
/// (RFC 9112 §2.2), which the parser skips too.
fn empty_lines_len(buf: &[u8]) -> usize {
    buf.iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len())
}

/// The elements of a comma-separated list field (RFC 9110 §5.6.1), empty
/// ones skipped.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(grammar::trim_ows)
        .filter(|e| !e.is_empty())
}

mod refusal;
mod target;
#[cfg(test)]
mod tests;

use refusal::{check_partial, higher_minor_version, partial_or_version_error, refine_malformed};
pub use target::{decoded_path, hex, percent_decode};
use target::{is_valid_host, split_target};
