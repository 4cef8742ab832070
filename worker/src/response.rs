//! The bytes of a response head: the status line, the application's headers
//! (checked by the call against `rgun_gateway::grammar` before they get
//! here: a name that is no token or a value with a control byte is refused,
//! never sent), the server's own `Server` and `Date`, and the framing the
//! server chose. Also the server's own error answers.

use std::time::SystemTime;

use rgun_gateway::grammar::{self, HeaderLines};

use crate::encode::Refusal;

pub const SERVER_HEADER: &[u8] = b"Server: rgun\r\n";
/// The interim answer to `Expect: 100-continue` (RFC 9110 §10.1.1).
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        511 => "Network Authentication Required",
        _ => "Unknown",
    }
}

/// Headers the server owns and an application may not set (hop-by-hop,
/// RFC 9110 §7.6.1, and the framing fields the server writes itself).
pub fn is_server_owned(name: &[u8]) -> bool {
    const OWNED: [&[u8]; 7] = [
        b"connection",
        b"transfer-encoding",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
    ];
    OWNED.iter().any(|o| name.eq_ignore_ascii_case(o))
}

/// Length of an IMF-fixdate (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
const HTTP_DATE_LEN: usize = 29;
/// `Date: `, the date and CRLF.
const DATE_LINE_LEN: usize = 6 + HTTP_DATE_LEN + 2;

/// The `Date` field line, `Date: <IMF-fixdate>\r\n`, rendered once a
/// second: an answer copies it whole.
pub struct DateCache {
    unix_secs: u64,
    line: [u8; DATE_LINE_LEN],
}

impl DateCache {
    pub fn new() -> Self {
        let mut line = [b' '; DATE_LINE_LEN];
        line[..6].copy_from_slice(b"Date: ");
        line[DATE_LINE_LEN - 2..].copy_from_slice(b"\r\n");
        let mut cache = DateCache {
            unix_secs: u64::MAX,
            line,
        };
        cache.refresh();
        cache
    }

    pub fn refresh(&mut self) {
        let now = SystemTime::now();
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if secs != self.unix_secs {
            self.unix_secs = secs;
            self.line[6..6 + HTTP_DATE_LEN]
                .copy_from_slice(httpdate::fmt_http_date(now).as_bytes());
        }
    }

    /// The whole field line, CRLF included.
    pub fn line(&self) -> &[u8] {
        &self.line
    }
}

impl Default for DateCache {
    fn default() -> Self {
        Self::new()
    }
}

pub fn status_line(out: &mut Vec<u8>, status: u16, reason_phrase: &[u8]) {
    if status == 200 && reason_phrase.is_empty() {
        // Most answers: one copy.
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    if reason_phrase.is_empty() {
        out.extend_from_slice(reason(status).as_bytes());
    } else {
        out.extend_from_slice(reason_phrase);
    }
    out.extend_from_slice(b"\r\n");
}

pub fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `date_line`: a `DateCache`'s line.
pub fn date_header(out: &mut Vec<u8>, date_line: &[u8]) {
    out.extend_from_slice(date_line);
}

pub fn content_length(out: &mut Vec<u8>, length: u64) {
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The server's own answer to a request it refuses or could not serve: a
/// short text body (its head alone to a HEAD request, RFC 9110 §9.3.2),
/// and the connection closed after it.
pub fn error(out: &mut Vec<u8>, status: u16, date_line: &[u8], method_is_head: bool) {
    let text = reason(status);
    status_line(out, status, b"");
    out.extend_from_slice(SERVER_HEADER);
    date_header(out, date_line);
    out.extend_from_slice(b"Content-Type: text/plain\r\n");
    content_length(out, text.len() as u64 + 1);
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    if !method_is_head {
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_close_and_say_why() {
        let mut out = Vec::new();
        error(&mut out, 431, b"Sat, 21 Nov 2026 03:37:36 GMT", false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nRequest Header Fields Too Large\n"));
    }
}

/// What the application's header list said, beside the fields written.
#[derive(Default)]
pub struct AppFields {
    pub has_server: bool,
    pub has_date: bool,
    /// `Connection: close` from the application, which is honoured.
    pub close: bool,
    pub declared_length: Option<u64>,
}

/// Check and write the application's header fields, keeping back those the
/// server writes itself.
pub fn write_app_fields(
    out: &mut Vec<u8>,
    headers: HeaderLines<'_>,
    no_body: bool,
    whole_body: Option<u64>,
) -> Result<AppFields, Refusal> {
    let mut fields = AppFields::default();
    for (name, value) in headers {
        if !grammar::is_token(name) {
            return Err(Refusal::HeaderName(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        if !grammar::is_field_value(value) {
            return Err(Refusal::HeaderValue(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = grammar::content_length(value)
                .ok()
                // HEAD, 204, 304: the stated length is not the (empty)
                // body's.
                .filter(|n| {
                    fields.declared_length.is_none_or(|d| d == *n)
                        && (no_body || whole_body.is_none_or(|w| w == *n))
                });
            fields.declared_length = Some(n.ok_or_else(|| {
                Refusal::ContentLength(String::from_utf8_lossy(value).into_owned())
            })?);
            continue;
        }
        if is_server_owned(name) {
            // The server frames and keeps connections; `Connection: close`
            // from the application is still honoured.
            fields.close |=
                name.eq_ignore_ascii_case(b"connection") && value.eq_ignore_ascii_case(b"close");
            continue;
        }
        fields.has_server |= name.eq_ignore_ascii_case(b"server");
        fields.has_date |= name.eq_ignore_ascii_case(b"date");
        header(out, name, value);
    }
    Ok(fields)
}
