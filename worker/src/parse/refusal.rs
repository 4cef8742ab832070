//! Heads the parser refuses, or cannot judge yet: an incomplete head
//! already over a limit, a bad version (505, or 400 for a malformed line),
//! and the over-long line httparse calls malformed.

use super::{HeadError, Limits, empty_lines_len};

/// httparse said Version. Until its line ends, a version is not yet known
/// to be wrong (`HTTP/2` may be the start of `HTTP/2.0`, 505, or of
/// `HTTP/2x`, 400): the answer must not depend on where the bytes were cut.
pub(super) fn partial_or_version_error<T>(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<T>, HeadError> {
    if !request_line_ended(buf) {
        check_partial(buf, limits)?;
        return Ok(None);
    }
    Err(version_error(buf))
}

/// An incomplete head that is already over a limit is refused now, not when
/// the client has sent all of it.
pub(super) fn check_partial(buf: &[u8], limits: &Limits) -> Result<(), HeadError> {
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

/// Whether the request line (after any empty lines before it) is whole.
fn request_line_ended(buf: &[u8]) -> bool {
    buf[empty_lines_len(buf)..].contains(&b'\n')
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
pub(super) fn higher_minor_version(buf: &[u8]) -> Option<usize> {
    match request_line_version(buf) {
        Some((at, [b'1', minor])) if (b'2'..=b'9').contains(&minor) => Some(at),
        _ => None,
    }
}

/// httparse rejects an over-long request line as a token error when the
/// line is garbage; a long but well-formed line is 414 (the limit check above
/// only runs on a complete head).
pub(super) fn refine_malformed(buf: &[u8], limits: &Limits) -> HeadError {
    match check_partial(buf, limits) {
        Err(e) => e,
        Ok(()) => HeadError::Malformed,
    }
}
