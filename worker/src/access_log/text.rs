//! The access log's text line: the format's pieces with each atom's value
//! in place. Values are escaped so that a client cannot forge a line or a
//! field: quotes, backslashes and bytes outside printable ASCII become
//! `\xHH` (Gunicorn escapes only the quote).

use super::entry::{Entry, EnvValue};
use super::format::{Atom, Format, Piece};
use super::{LineScratch, Stamp};

pub fn render(format: &Format, entry: &Entry<'_>, scratch: &mut LineScratch) {
    let LineScratch {
        line, user, stamp, ..
    } = scratch;
    for piece in &format.pieces {
        match piece {
            Piece::Text(text) => line.extend_from_slice(text),
            Piece::Atom(atom) => atom_value(line, atom, entry, stamp, user),
        }
    }
    line.push(b'\n');
}

fn atom_value(
    line: &mut Vec<u8>,
    atom: &Atom,
    entry: &Entry<'_>,
    stamp: &Stamp,
    user: &mut Vec<u8>,
) {
    let micros = || entry.duration.unwrap_or_default().as_micros() as u64;
    match atom {
        Atom::RemoteAddr => or_dash(line, Some(entry.remote_addr).filter(|a| !a.is_empty())),
        Atom::Ident | Atom::Unknown => line.push(b'-'),
        Atom::User => or_dash(line, entry.user(user)),
        Atom::Time => {
            line.push(b'[');
            line.extend_from_slice(stamp.text.as_bytes());
            line.push(b']');
        }
        Atom::RequestLine => {
            escape(line, entry.method);
            line.push(b' ');
            escape(line, entry.target);
            line.push(b' ');
            line.extend_from_slice(entry.version.as_bytes());
        }
        Atom::Method => escape(line, entry.method),
        Atom::Path => escape(line, entry.path),
        Atom::Query => escape(line, entry.query),
        Atom::Protocol => line.extend_from_slice(entry.version.as_bytes()),
        Atom::Status => number(line, entry.status.into()),
        Atom::Bytes => number(line, entry.body_bytes),
        Atom::BytesClf if entry.body_bytes == 0 => line.push(b'-'),
        Atom::BytesClf => number(line, entry.body_bytes),
        Atom::Referer => or_dash(line, entry.first_header(b"referer")),
        Atom::UserAgent => or_dash(line, entry.first_header(b"user-agent")),
        Atom::Seconds => number(line, micros() / 1_000_000),
        Atom::Millis => number(line, micros() / 1_000),
        Atom::Micros => number(line, micros()),
        Atom::DecimalSeconds => decimal_seconds(line, micros()),
        Atom::Pid => {
            line.push(b'<');
            number(line, std::process::id().into());
            line.push(b'>');
        }
        Atom::RequestHeader(name) => or_dash(line, entry.header(name)),
        Atom::ResponseHeader(index) => or_dash(line, entry.response.get(*index)),
        Atom::Environ(name) => match entry.environ(name) {
            Some(EnvValue::Bytes(value)) => escape(line, value),
            Some(EnvValue::Number(n)) => number(line, n),
            Some(EnvValue::Header(header)) => entry.write_environ_header(header, line, escape),
            None => line.push(b'-'),
        },
    }
}

pub fn number(line: &mut Vec<u8>, n: u64) {
    line.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `L`: seconds with six decimals, Gunicorn's `"%d.%06d"`.
pub fn decimal_seconds(line: &mut Vec<u8>, micros: u64) {
    number(line, micros / 1_000_000);
    let fraction = micros % 1_000_000;
    line.push(b'.');
    let digits = itoa::Buffer::new().format(fraction).len();
    line.extend(std::iter::repeat_n(b'0', 6 - digits));
    number(line, fraction);
}

fn or_dash(line: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(value) => escape(line, value),
        None => line.push(b'-'),
    }
}

/// Quotes, backslashes and non-printable bytes as `\xHH`.
pub fn escape(line: &mut Vec<u8>, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in value {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            line.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            line.push(b);
        }
    }
}
