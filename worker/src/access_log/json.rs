//! `--access-log-json`: one JSON object per line. The format's atoms choose
//! the fields (its literal text is not used); every string is escaped so
//! that no value can end the string, the object or the line. Strings carry
//! the request's bytes as ISO-8859-1 (as PEP 3333 hands them to a WSGI
//! application): bytes from 0x80 up, control bytes, DEL, quotes and
//! backslashes are `\u00XX`, `\"`, `\\`; the line itself is plain ASCII.

use super::entry::{Entry, EnvValue};
use super::format::{Atom, Format};
use super::text::{decimal_seconds, number};
use super::{LineScratch, Stamp};

/// The key of a single-letter atom; `None`: not a field of its own.
fn key(atom: &Atom) -> Option<&'static str> {
    Some(match atom {
        Atom::RemoteAddr => "remote_addr",
        Atom::User => "user",
        Atom::Time => "time",
        Atom::RequestLine => "request",
        Atom::Method => "method",
        Atom::Path => "path",
        Atom::Query => "query",
        Atom::Protocol => "protocol",
        Atom::Status => "status",
        Atom::Bytes | Atom::BytesClf => "bytes",
        Atom::Referer => "referer",
        Atom::UserAgent => "user_agent",
        Atom::Seconds => "duration_s",
        Atom::Millis => "duration_ms",
        Atom::Micros => "duration_us",
        Atom::DecimalSeconds => "duration",
        Atom::Pid => "pid",
        _ => return None,
    })
}

/// The fields of a format's lines, worked out once: each key once, in the
/// format's order.
#[derive(Clone, Debug)]
pub struct Fields {
    scalars: Vec<(Atom, &'static str)>,
    request_headers: Vec<Box<[u8]>>,
    environ: Vec<Box<[u8]>>,
}

impl Fields {
    pub fn new(format: &Format) -> Fields {
        let mut fields = Fields {
            scalars: Vec::new(),
            request_headers: Vec::new(),
            environ: Vec::new(),
        };
        for atom in format.atoms() {
            match atom {
                Atom::RequestHeader(name) => push_once(&mut fields.request_headers, name),
                Atom::Environ(name) => push_once(&mut fields.environ, name),
                _ => {
                    if let Some(key) = key(atom)
                        && !fields.scalars.iter().any(|(_, k)| *k == key)
                    {
                        fields.scalars.push((atom.clone(), key));
                    }
                }
            }
        }
        fields
    }
}

fn push_once(names: &mut Vec<Box<[u8]>>, name: &[u8]) {
    if !names.iter().any(|n| **n == *name) {
        names.push(name.into());
    }
}

pub fn render(format: &Format, fields: &Fields, entry: &Entry<'_>, scratch: &mut LineScratch) {
    let LineScratch {
        line, user, stamp, ..
    } = scratch;
    line.push(b'{');
    for (i, (atom, key)) in fields.scalars.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        string(line, key.as_bytes());
        line.push(b':');
        field(line, atom, entry, stamp, user);
    }
    let mut first = fields.scalars.is_empty();
    if !fields.request_headers.is_empty() {
        open_group(line, &mut first, "request_headers");
        for (i, name) in fields.request_headers.iter().enumerate() {
            member(line, i, name);
            or_null(line, entry.header(name));
        }
        line.push(b'}');
    }
    if !format.response_headers.is_empty() {
        open_group(line, &mut first, "response_headers");
        for (i, name) in format.response_headers.iter().enumerate() {
            member(line, i, name);
            or_null(line, entry.response.get(i));
        }
        line.push(b'}');
    }
    if !fields.environ.is_empty() {
        open_group(line, &mut first, "environ");
        for (i, name) in fields.environ.iter().enumerate() {
            member(line, i, name);
            environ(line, entry, name);
        }
        line.push(b'}');
    }
    line.extend_from_slice(b"}\n");
}

/// `,"key":{`
fn open_group(line: &mut Vec<u8>, first: &mut bool, key: &str) {
    if !std::mem::take(first) {
        line.push(b',');
    }
    string(line, key.as_bytes());
    line.extend_from_slice(b":{");
}

/// `,"name":`
fn member(line: &mut Vec<u8>, i: usize, name: &[u8]) {
    if i > 0 {
        line.push(b',');
    }
    string(line, name);
    line.push(b':');
}

fn field(line: &mut Vec<u8>, atom: &Atom, entry: &Entry<'_>, stamp: &Stamp, user: &mut Vec<u8>) {
    let micros = || entry.duration.unwrap_or_default().as_micros() as u64;
    match atom {
        Atom::RemoteAddr => or_null(line, Some(entry.remote_addr).filter(|a| !a.is_empty())),
        Atom::User => or_null(line, entry.user(user)),
        Atom::Time => string(line, stamp.iso.as_bytes()),
        Atom::RequestLine => {
            line.push(b'"');
            escape(line, entry.method);
            line.push(b' ');
            escape(line, entry.target);
            line.push(b' ');
            escape(line, entry.version.as_bytes());
            line.push(b'"');
        }
        Atom::Method => string(line, entry.method),
        Atom::Path => string(line, entry.path),
        Atom::Query => string(line, entry.query),
        Atom::Protocol => string(line, entry.version.as_bytes()),
        Atom::Status => number(line, entry.status.into()),
        Atom::Bytes | Atom::BytesClf => number(line, entry.body_bytes),
        Atom::Referer => or_null(line, entry.first_header(b"referer")),
        Atom::UserAgent => or_null(line, entry.first_header(b"user-agent")),
        Atom::Seconds => number(line, micros() / 1_000_000),
        Atom::Millis => number(line, micros() / 1_000),
        Atom::Micros => number(line, micros()),
        Atom::DecimalSeconds => decimal_seconds(line, micros()),
        Atom::Pid => number(line, std::process::id().into()),
        _ => line.extend_from_slice(b"null"),
    }
}

fn environ(line: &mut Vec<u8>, entry: &Entry<'_>, name: &[u8]) {
    match entry.environ(name) {
        Some(EnvValue::Bytes(value)) => string(line, value),
        Some(EnvValue::Number(n)) => {
            line.push(b'"');
            number(line, n);
            line.push(b'"');
        }
        Some(EnvValue::Header(header)) => {
            line.push(b'"');
            entry.write_environ_header(header, line, escape);
            line.push(b'"');
        }
        None => line.extend_from_slice(b"null"),
    }
}

fn or_null(line: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(value) => string(line, value),
        None => line.extend_from_slice(b"null"),
    }
}

fn string(line: &mut Vec<u8>, value: &[u8]) {
    line.push(b'"');
    escape(line, value);
    line.push(b'"');
}

/// The inside of a JSON string (RFC 8259 §7) of `value`'s bytes read as
/// ISO-8859-1.
pub fn escape(line: &mut Vec<u8>, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in value {
        match b {
            b'"' => line.extend_from_slice(b"\\\""),
            b'\\' => line.extend_from_slice(b"\\\\"),
            0x20..0x7f => line.push(b),
            _ => line.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_escapes_to_one_json_character() {
        let mut line = Vec::new();
        escape(&mut line, b"a\"b\\c\t\x00\x7f\xe9");
        assert_eq!(line, br#"a\"b\\c\u0009\u0000\u007f\u00e9"#);
    }
}
