//! The request target and Host (RFC 9112 §3.2, RFC 3986): which of the
//! four forms a target is in, its path and query, a valid authority, and the
//! percent-decoded path an application sees.

use rgun_gateway::grammar;

use super::HeadError;

/// The parts of a request target (RFC 9112 §3.2).
type TargetParts<'b> = (&'b [u8], &'b [u8], Option<&'b [u8]>);

/// The path, query and, for the absolute form (§3.2.2), the authority of a
/// target in origin form, absolute form or asterisk form (OPTIONS only).
/// No fragment and no byte outside US-ASCII: RFC 3986 has no place for them.
pub(super) fn split_target<'b>(
    method: &[u8],
    target: &'b [u8],
) -> Result<TargetParts<'b>, HeadError> {
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

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a reg-name
/// or an IP literal in brackets, then digits after a colon; not empty
/// (RFC 9110 §4.2.1: an http URI has a host).
pub(super) fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = match value {
        [b'[', rest @ ..] => match rest.iter().position(|&b| b == b']') {
            Some(end) if is_ip_literal(&rest[..end]) => (&value[..end + 2], &rest[end + 1..]),
            _ => return false,
        },
        // A reg-name holds no colon: the last one, if any, starts the port.
        _ => {
            let (host, port) = value.split_at(
                value
                    .iter()
                    .rposition(|&b| b == b':')
                    .unwrap_or(value.len()),
            );
            if !is_reg_name(host) {
                return false;
            }
            (host, port)
        }
    };
    !host.is_empty()
        && match port {
            [] => true,
            [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
            _ => false,
        }
}

/// `*( unreserved / pct-encoded / sub-delims )` (RFC 3986 §3.2.2),
/// pct-encoded being `%` and two hex digits. It runs on every request: the
/// usual name, with no `%`, takes one branch-free pass.
fn is_reg_name(host: &[u8]) -> bool {
    grammar::all_bytes_in(&REG_NAME_PLAIN, host) || is_pct_encoded_reg_name(host)
}

/// A reg-name with pct-encoded bytes, checked a byte at a time.
fn is_pct_encoded_reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = host.get(i) {
        match b {
            b'%' if host
                .get(i + 1..i + 3)
                .is_some_and(|p| p.iter().all(u8::is_ascii_hexdigit)) =>
            {
                i += 3
            }
            _ if is_reg_name_plain(b) => i += 1,
            _ => return false,
        }
    }
    true
}

/// IP-literal = "[" ( IPv6address / IPvFuture ) "]" (RFC 3986 §3.2.2),
/// what is between the brackets; IPvFuture = "v" 1*HEXDIG "." 1*( unreserved
/// / sub-delims / ":" ).
fn is_ip_literal(literal: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = literal {
        let dot = rest.iter().position(|&b| b == b'.').unwrap_or(0);
        let (version, tail) = (&rest[..dot], &rest[dot..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && tail.len() > 1
            && tail[1..].iter().all(|&b| b == b':' || is_reg_name_plain(b));
    }
    std::str::from_utf8(literal).is_ok_and(|text| text.parse::<std::net::Ipv6Addr>().is_ok())
}

/// unreserved / sub-delims (RFC 3986 §3.2.2), by byte: a reg-name's bytes
/// but `%`, which starts a pct-encoded triplet.
const REG_NAME_PLAIN: [bool; 256] = grammar::alphanumeric_and(b"-._~!$&'()*+,;=");

fn is_reg_name_plain(b: u8) -> bool {
    REG_NAME_PLAIN[usize::from(b)]
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
