//! A request head: parsed by httparse, then checked and framed by the rules
//! of RFC 9112 (request line §3, field syntax §5, message body length §6).
//! This module reads bytes and decides; it does no I/O and copies nothing.

use std::mem::MaybeUninit;

use rgun_gateway::{ffi, grammar};

/// The most header fields a request may carry whatever the configuration
/// says: the parser's slots live on the stack.
pub const MAX_REQUEST_FIELDS_CAP: usize = 1024;

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
            8190
        } else {
            self.request_line
        };
        let field = if self.request_field_size == 0 {
            8190
        } else {
            self.request_field_size
        };
        line + 2 + self.request_fields.max(1) * (field + 2) + 2
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
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub framing: Framing,
    /// The Content-Length sent, if one was (0 included).
    pub content_length: Option<u64>,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub content_type: &'b [u8],
    /// `X-Forwarded-Proto`, for a proxy the operator trusts.
    pub forwarded_proto: &'b [u8],
    /// What the buffer holds after the head: the start of the body, or of
    /// the next request.
    pub rest: &'b [u8],
}

impl Head<'_> {
    pub fn is_head_method(&self) -> bool {
        self.method == b"HEAD"
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
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(_) => return Err(refine_malformed(buf, limits)),
    };
    let method = request.method.unwrap_or_default().as_bytes();
    let target = request.path.unwrap_or_default().as_bytes();
    let minor = request.version.unwrap_or(1);
    if limits.request_line != 0 && method.len() + target.len() + 10 > limits.request_line {
        // 414 is about the target: a method that long is no method.
        return Err(if method.len() + 10 > limits.request_line {
            HeadError::Malformed
        } else {
            HeadError::LineTooLong
        });
    }
    // Every line ends in CRLF (RFC 9112 §2.2 lets a recipient accept a bare
    // LF; a proxy in front that does not would frame differently): the last
    // two here, the others before each field name below.
    if !buf[..len].ends_with(b"\r\n\r\n") {
        return Err(HeadError::Malformed);
    }

    fields.clear();
    let mut framing = FramingFields::default();
    let mut content_type: &[u8] = &[];
    let mut content_types = 0;
    let mut forwarded_proto: &[u8] = &[];
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    let mut expect_other = false;
    let mut hosts = 0;
    let mut host_index = None;
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
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                hosts += 1;
                host_index = Some(fields.len() - 1);
                if !is_valid_host(value) {
                    return Err(HeadError::Host);
                }
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                for expectation in list_elements(value) {
                    let continues = expectation.eq_ignore_ascii_case(b"100-continue");
                    expect_continue |= continues;
                    expect_other |= !continues;
                }
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in list_elements(value) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            12 if name.eq_ignore_ascii_case(b"content-type") => {
                content_types += 1;
                content_type = value;
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => framing.add_length(value)?,
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => framing.add_encoding(value),
            17 if name.eq_ignore_ascii_case(b"x-forwarded-proto") => forwarded_proto = value,
            _ => {}
        }
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one before.
    if hosts > 1 || (minor == 1 && hosts == 0) {
        return Err(HeadError::Host);
    }
    // RFC 9110 §5.3: a field that is no list is not repeated; two media
    // types are no one media type, for a native app that sees every line
    // as for a WSGI app that sees CONTENT_TYPE. (Content-Length has its
    // own rule, RFC 9112 §6.3, in `FramingFields`.)
    if content_types > 1 {
        return Err(HeadError::RepeatedContentType);
    }
    // RFC 9110 §10.1.1: a server MUST ignore a 100-continue expectation
    // in an HTTP/1.0 request, and may refuse one it does not know with 417.
    if expect_other && minor == 1 {
        return Err(HeadError::Expectation);
    }
    let content_length = framing.length;
    let framing = framing.decide(minor, limits)?;
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
        minor,
        framing,
        content_length,
        keep_alive: !close && (minor == 1 || keep_alive_token),
        expect_continue: expect_continue && minor == 1,
        content_type,
        forwarded_proto,
        rest: &buf[len..],
    }))
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

    fn decide(self, minor: u8, limits: &Limits) -> Result<Framing, HeadError> {
        if self.encoding_seen {
            if minor == 0 {
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

/// The parts of a request target (RFC 9112 §3.2).
type TargetParts<'b> = (&'b [u8], &'b [u8], Option<&'b [u8]>);

/// The path, query and, for the absolute form (§3.2.2), the authority of a
/// target in origin form, absolute form or asterisk form (OPTIONS only).
/// No fragment and no byte outside US-ASCII: RFC 3986 has no place for them.
fn split_target<'b>(method: &[u8], target: &'b [u8]) -> Result<TargetParts<'b>, HeadError> {
    if method == b"CONNECT" {
        // Authority form, or no valid CONNECT at all (§3.2.3).
        return Err(if target.first().is_some_and(|&b| b != b'/') {
            HeadError::Connect
        } else {
            HeadError::Target
        });
    }
    if target.iter().any(|&b| b == b'#' || b >= 0x80) {
        return Err(HeadError::Target);
    }
    let (path_and_query, authority): (&'b [u8], Option<&'b [u8]>) = match target.first() {
        Some(b'/') => (target, None),
        Some(b'*') if target.len() == 1 && method == b"OPTIONS" => return Ok((target, &[], None)),
        _ => {
            let rest = strip_prefix_ignore_case(target, b"http://")
                .or_else(|| strip_prefix_ignore_case(target, b"https://"))
                .ok_or(HeadError::Target)?;
            let end = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(rest.len());
            let (authority, rest) = rest.split_at(end);
            match rest.first() {
                Some(b'/') => (rest, Some(authority)),
                Some(_) => return Ok((b"/", &rest[1..], Some(authority))),
                None => return Ok((b"/", &[], Some(authority))),
            }
        }
    };
    Ok(match path_and_query.iter().position(|&b| b == b'?') {
        Some(i) => (&path_and_query[..i], &path_and_query[i + 1..], authority),
        None => (path_and_query, &[], authority),
    })
}

fn strip_prefix_ignore_case<'b>(s: &'b [u8], prefix: &[u8]) -> Option<&'b [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// An incomplete head that is already over a limit is refused now, not when
/// the client has sent all of it.
fn check_partial(buf: &[u8], limits: &Limits) -> Result<(), HeadError> {
    let line = &buf[empty_lines_len(buf)..];
    let line_limit = if limits.request_line == 0 {
        usize::MAX - 2
    } else {
        limits.request_line
    };
    match line.iter().position(|&b| b == b'\n') {
        // No space yet: all of it is the method, which no limit on the
        // target is about.
        None if line.len() > line_limit + 2 && !line.contains(&b' ') => {
            return Err(HeadError::Malformed);
        }
        None if line.len() > line_limit + 2 => return Err(HeadError::LineTooLong),
        _ => {}
    }
    if buf.len() > limits.max_head_bytes() {
        return Err(HeadError::FieldTooLarge);
    }
    Ok(())
}

/// httparse says Version for any bad version token: a well-formed
/// `HTTP/x.y` that is not 1.0 or 1.1 is 505, anything else 400.
fn version_error(buf: &[u8]) -> HeadError {
    match request_line_version(buf) {
        Some((_, [major, minor])) if major.is_ascii_digit() && minor.is_ascii_digit() => {
            HeadError::Version
        }
        _ => HeadError::Malformed,
    }
}

/// The version digits of a request line of exactly method SP target SP
/// `HTTP/d.d` (`GET /a b HTTP/1.1` has none: a bad request line, not a bad
/// version), with the offset of the minor digit in `buf`.
fn request_line_version(buf: &[u8]) -> Option<(usize, [u8; 2])> {
    let start = empty_lines_len(buf);
    let line = buf[start..]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor]), None) => {
            Some((start + line.len() - 1, [*major, *minor]))
        }
        _ => None,
    }
}

/// Where the minor digit of an `HTTP/1.x` request line with x above 1 is.
fn higher_minor_version(buf: &[u8]) -> Option<usize> {
    match request_line_version(buf) {
        Some((at, [b'1', minor])) if (b'2'..=b'9').contains(&minor) => Some(at),
        _ => None,
    }
}

/// httparse rejects an over-long request line as a token error when the
/// line is garbage; a long but well-formed line is 414 (the limit check above
/// only runs on a complete head).
fn refine_malformed(buf: &[u8], limits: &Limits) -> HeadError {
    match check_partial(buf, limits) {
        Err(e) => e,
        Ok(()) => HeadError::Malformed,
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

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a reg-name
/// or an IP literal in brackets, then digits after a colon; not empty
/// (RFC 9110 §4.2.1: an http URI has a host).
fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = match value {
        [b'[', rest @ ..] => match rest.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = &rest[..end];
                let ok = !literal.is_empty()
                    && literal.iter().all(|&b| {
                        b.is_ascii_hexdigit() || b":.vV".contains(&b) || is_reg_name_byte(b)
                    });
                if !ok {
                    return false;
                }
                (&value[..end + 2], &rest[end + 1..])
            }
            None => return false,
        },
        _ => {
            let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            let host = &value[..end];
            if host.is_empty() || !host.iter().all(|&b| is_reg_name_byte(b)) {
                return false;
            }
            (host, &value[end..])
        }
    };
    !host.is_empty()
        && match port {
            [] => true,
            [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
            _ => false,
        }
}

/// unreserved / pct-encoded / sub-delims (RFC 3986 §3.2.2).
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)
}

/// The path the application sees (PEP 3333's PATH_INFO is decoded): `raw`
/// itself when it has nothing to decode, else its decoding in `scratch`.
pub fn decoded_path<'p>(raw: &'p [u8], scratch: &'p mut Vec<u8>) -> &'p [u8] {
    if raw.contains(&b'%') {
        percent_decode(raw, scratch);
        scratch
    } else {
        raw
    }
}

/// Percent-decode `raw` into `out` (PEP 3333's PATH_INFO is decoded); a `%`
/// not followed by two hex digits is kept as it is.
pub fn percent_decode(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && let (Some(h), Some(l)) = (
                raw.get(i + 1).and_then(|&c| hex(c)),
                raw.get(i + 2).and_then(|&c| hex(c)),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
}

pub fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            request_line: 4094,
            request_fields: 100,
            request_field_size: 8190,
            request_body: 0,
        }
    }

    fn parse(raw: &[u8]) -> Result<Option<(Framing, bool, usize)>, HeadError> {
        let mut fields = Vec::new();
        parse_head(raw, &limits(), &mut fields).map(|h| h.map(|h| (h.framing, h.keep_alive, h.len)))
    }

    fn status(raw: &str) -> u16 {
        match parse(raw.as_bytes()) {
            Err(e) => e.status(),
            Ok(Some(_)) => 200,
            Ok(None) => 0,
        }
    }

    #[test]
    fn complete_heads_and_their_framing() {
        let raw = b"POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            parse(raw),
            Ok(Some((Framing::Length(5), true, raw.len() - 5)))
        );
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(raw), Ok(Some((Framing::Chunked, true, raw.len()))));
        let raw = b"GET / HTTP/1.0\r\n\r\n";
        assert_eq!(parse(raw), Ok(Some((Framing::None, false, raw.len()))));
        let raw = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
        assert_eq!(parse(raw), Ok(Some((Framing::None, true, raw.len()))));
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n";
        assert_eq!(parse(raw), Ok(Some((Framing::None, false, raw.len()))));
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n"),
            200
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            200
        );
    }

    #[test]
    fn incomplete_heads_wait() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(parse(b"GE"), Ok(None));
    }

    #[test]
    fn every_malformed_class_gets_its_status() {
        let cases: &[(&str, u16)] = &[
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12a\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nX(A): a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\ncontent-type: c/d\r\n\r\n",
                400,
            ),
            // The same media type twice is still two lines of a field that
            // is no list.
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Type: a/b\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Type:\r\nContent-Type: a/b\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nAccept: a/b\r\nAccept: c/d\r\n\r\n",
                200,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5,\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775808\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775807\r\n\r\n",
                200,
            ),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            // Served as HTTP/1.1 by the caller (higher_minor_version).
            ("GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
            ("GET / HTTX/1.1\r\nHost: x\r\n\r\n", 400),
            ("GARBAGE\r\n\r\n", 400),
            ("GET foo HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 200),
            (
                "GET http://example.com/a?b HTTP/1.1\r\nHost: x\r\n\r\n",
                200,
            ),
            // A space in the target is a bad request line, not a bad version.
            ("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("\r\nGET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            ("GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x:99z\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n", 200),
            ("GET / HTTP/1.1\r\nHost: example.com:8000\r\n\r\n", 200),
            ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200),
            ("GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET http://u@h/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417),
            ("GET / HTTP/1.0\r\nExpect: 200-ok\r\n\r\n", 200),
            (
                "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
                501,
            ),
            ("CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ];
        for (raw, want) in cases {
            assert_eq!(status(raw), *want, "{raw:?}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
        assert_eq!(status(&long), 414);
        let partial_long = format!("GET /{}", "a".repeat(5000));
        assert_eq!(status(&partial_long), 414);
        // A method that long is a bad request, not a long URI.
        assert_eq!(status(&"A".repeat(5000)), 400);
        let long_method = format!("{} / HTTP/1.1\r\nHost: x\r\n\r\n", "A".repeat(5000));
        assert_eq!(status(&long_method), 400);
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
            431
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "v".repeat(9000)
        );
        assert_eq!(status(&big), 431);
        let mut fields = Vec::new();
        let small_body = Limits {
            request_body: 10,
            ..limits()
        };
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n";
        assert_eq!(
            parse_head(raw, &small_body, &mut fields)
                .unwrap_err()
                .status(),
            413
        );
    }

    #[test]
    fn targets_split_into_path_and_query() {
        let mut fields = Vec::new();
        let raw = b"GET http://h:1?x=1 HTTP/1.1\r\nHost: h\r\n\r\n";
        let head = parse_head(raw, &limits(), &mut fields).unwrap().unwrap();
        assert_eq!((head.path, head.query), (&b"/"[..], &b"x=1"[..]));
        let raw = b"GET /a%20b?q=%41 HTTP/1.1\r\nHost: h\r\n\r\n";
        let head = parse_head(raw, &limits(), &mut fields).unwrap().unwrap();
        assert_eq!((head.path, head.query), (&b"/a%20b"[..], &b"q=%41"[..]));
        assert_eq!(fields.len(), 1);
        // Absolute form: the target's authority is the Host the app sees.
        let raw = b"GET http://other.example:8080/p HTTP/1.1\r\nHost: h\r\n\r\n";
        let head = parse_head(raw, &limits(), &mut fields).unwrap().unwrap();
        assert_eq!(head.path, b"/p");
        // SAFETY: the field points into `raw`, alive here.
        let host = unsafe { fields[0].value.as_bytes() };
        assert_eq!(host, b"other.example:8080");
    }

    #[test]
    fn content_type_and_length_are_single_values() {
        let mut fields = Vec::new();
        let raw =
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: a/b\r\nContent-Length: 3, 3\r\n\r\n";
        let head = parse_head(raw, &limits(), &mut fields).unwrap().unwrap();
        assert_eq!(head.content_type, b"a/b");
        assert_eq!(head.content_length, Some(3));
        assert_eq!(head.framing, Framing::Length(3));
        let raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n";
        assert_eq!(
            parse_head(raw, &limits(), &mut fields).unwrap_err(),
            HeadError::RepeatedContentType
        );
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let head = parse_head(raw, &limits(), &mut fields).unwrap().unwrap();
        assert_eq!(head.content_type, b"");
        assert_eq!(head.content_length, None);
    }

    #[test]
    fn percent_decoding_keeps_stray_percents() {
        let mut out = Vec::new();
        percent_decode(b"/a%20b%zz%4", &mut out);
        assert_eq!(out, b"/a b%zz%4");
    }
}
