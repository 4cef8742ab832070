//! The PROXY protocol header a TCP proxy puts before a connection's first
//! byte to say where the client really connected from (HAProxy's
//! proxy-protocol.txt: the v1 text line, §2.1, and the v2 binary block,
//! §2.2). This decodes a header from whatever a connection has buffered and
//! says how many bytes it took. It does no I/O, allocates nothing, keeps no
//! state between calls, and decides nothing about whom to trust: which
//! listeners expect a header is configuration (§5: never guessed).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// The longest v1 line, CRLF included: `PROXY UNKNOWN` with two IPv6
/// addresses and two ports (§2.1). A line with no CRLF within this many
/// bytes is refused.
pub const MAX_V1_LEN: usize = 107;

/// The longest v2 header accepted, its 16 fixed bytes included. The length
/// field allows 65535 bytes of addresses and TLVs, but the whole header is
/// buffered before any of it is used: the bound keeps it well inside a
/// connection's read buffer. Addresses take at most 216 bytes (AF_UNIX);
/// the rest is room for TLVs.
pub const MAX_V2_LEN: usize = 4096;

/// What a v1 header starts with (§2.1).
const V1_SIGNATURE: &[u8] = b"PROXY ";
/// What a v2 header starts with (§2.2): made to fail any text protocol.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The signature, version and command, family and protocol, and length.
const V2_FIXED_LEN: usize = 16;

/// The v2 commands (§2.2, low nibble of the 13th byte).
const COMMAND_LOCAL: u8 = 0x0;
const COMMAND_PROXY: u8 = 0x1;
/// The v2 address families (high nibble of the 14th byte).
const FAMILY_UNSPEC: u8 = 0x0;
const FAMILY_INET: u8 = 0x1;
const FAMILY_INET6: u8 = 0x2;
const FAMILY_UNIX: u8 = 0x3;
/// The v2 transport protocols (low nibble of the 14th byte): UNSPEC,
/// STREAM, DGRAM.
const PROTOCOL_UNSPEC: u8 = 0x0;
const PROTOCOL_MAX: u8 = 0x2;

/// Which headers a listener expects: Gunicorn's `--proxy-protocol
/// off|v1|v2|auto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Versions {
    /// No header: the connection starts with its own data.
    #[default]
    Off,
    /// The v1 text line only.
    V1,
    /// The v2 binary block only.
    V2,
    /// Either, told apart by their first bytes (§2.2, end).
    Auto,
}

impl Versions {
    fn accepts_v1(self) -> bool {
        matches!(self, Versions::V1 | Versions::Auto)
    }

    fn accepts_v2(self) -> bool {
        matches!(self, Versions::V2 | Versions::Auto)
    }
}

/// A `--proxy-protocol` value that is none of `off`, `v1`, `v2`, `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected off, v1, v2 or auto")]
pub struct UnknownVersions;

impl FromStr for Versions {
    type Err = UnknownVersions;

    fn from_str(s: &str) -> Result<Versions, UnknownVersions> {
        match s {
            "off" => Ok(Versions::Off),
            "v1" => Ok(Versions::V1),
            "v2" => Ok(Versions::V2),
            "auto" => Ok(Versions::Auto),
            _ => Err(UnknownVersions),
        }
    }
}

/// What the buffered bytes hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The start of a header: read more, then decode all of it again.
    Incomplete,
    /// A whole header, the first `consumed` bytes; what follows is the
    /// connection's own data. An address is `None` when the header gives
    /// none to use (a LOCAL command, `UNKNOWN`, an unspecified or AF_UNIX
    /// family): the connection's own endpoints stand (§2.1, §2.2).
    Done {
        consumed: usize,
        source: Option<SocketAddr>,
        destination: Option<SocketAddr>,
    },
}

/// Why a connection's first bytes are refused; every one means closing it
/// (§2.1: a sequence that does not match the protocol aborts the
/// connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("the connection does not start with a PROXY protocol header")]
    NotProxy,
    #[error("a malformed PROXY protocol header")]
    Malformed,
    #[error("a PROXY protocol version this listener does not accept")]
    UnsupportedVersion,
    #[error("a PROXY protocol header longer than allowed")]
    TooLong,
}

/// Decode the header at the start of `buf`, the bytes a connection has so
/// far. Call it again with more bytes after [`Decoded::Incomplete`]; a
/// prefix of the bytes never decodes to anything but `Incomplete` or the
/// same answer. With `Versions::Off` no header is expected and none is
/// taken.
pub fn decode(buf: &[u8], accept: Versions) -> Result<Decoded, ProxyError> {
    if accept == Versions::Off {
        return Ok(Decoded::Done {
            consumed: 0,
            source: None,
            destination: None,
        });
    }
    // The two signatures differ from their first byte.
    match buf.first() {
        None => Ok(Decoded::Incomplete),
        Some(b'P') if accept.accepts_v1() => decode_v1(buf),
        Some(b'P') => other_version(buf, V1_SIGNATURE),
        Some(b'\r') if accept.accepts_v2() => decode_v2(buf),
        Some(b'\r') => other_version(buf, V2_SIGNATURE),
        Some(_) => Err(ProxyError::NotProxy),
    }
}

/// Whether `buf` starts with the signature of a header of either version:
/// `None` while its bytes could still be the start of one. For a peer that
/// may not send a header, to tell one from its own data.
pub fn signature_present(buf: &[u8]) -> Option<bool> {
    for expected in [V1_SIGNATURE, V2_SIGNATURE] {
        match signature(buf, expected) {
            Signature::Whole => return Some(true),
            Signature::Partial => return None,
            Signature::Differs => {}
        }
    }
    Some(false)
}

/// How the start of `buf` compares with a signature.
enum Signature {
    Differs,
    /// All of `buf` matches, and the signature goes on.
    Partial,
    Whole,
}

fn signature(buf: &[u8], signature: &[u8]) -> Signature {
    let n = buf.len().min(signature.len());
    if buf[..n] != signature[..n] {
        Signature::Differs
    } else if n < signature.len() {
        Signature::Partial
    } else {
        Signature::Whole
    }
}

/// A header of the version this listener was not told to expect: named as
/// such once its signature is whole, for the operator's log.
fn other_version(buf: &[u8], expected: &[u8]) -> Result<Decoded, ProxyError> {
    match signature(buf, expected) {
        Signature::Differs => Err(ProxyError::NotProxy),
        Signature::Partial => Ok(Decoded::Incomplete),
        Signature::Whole => Err(ProxyError::UnsupportedVersion),
    }
}

/// `PROXY TCP4|TCP6 src dst sport dport\r\n` or `PROXY UNKNOWN...\r\n`.
fn decode_v1(buf: &[u8]) -> Result<Decoded, ProxyError> {
    match signature(buf, V1_SIGNATURE) {
        Signature::Differs => return Err(ProxyError::NotProxy),
        Signature::Partial => return Ok(Decoded::Incomplete),
        Signature::Whole => {}
    }
    let window = &buf[..buf.len().min(MAX_V1_LEN)];
    let Some(end) = line_end(window)? else {
        // §2.1: no CRLF within the longest line makes it invalid.
        return if window.len() == MAX_V1_LEN {
            Err(ProxyError::TooLong)
        } else {
            Ok(Decoded::Incomplete)
        };
    };
    let (source, destination) =
        v1_addresses(&buf[V1_SIGNATURE.len()..end]).ok_or(ProxyError::Malformed)?;
    Ok(Decoded::Done {
        consumed: end + 2,
        source,
        destination,
    })
}

/// Where the CRLF that ends the line is in `window`, if it is there yet. A
/// CR or LF alone is refused (§2.1: never a single CR or LF for CRLF), as
/// soon as the byte after the CR is in the window.
fn line_end(window: &[u8]) -> Result<Option<usize>, ProxyError> {
    for (i, &b) in window.iter().enumerate() {
        match b {
            // A CR before it would have ended the loop.
            b'\n' => return Err(ProxyError::Malformed),
            b'\r' => {
                return match window.get(i + 1) {
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => Err(ProxyError::Malformed),
                    None => Ok(None),
                };
            }
            _ => {}
        }
    }
    Ok(None)
}

type Endpoints = (Option<SocketAddr>, Option<SocketAddr>);

/// The v1 line after `PROXY `, without its CRLF: exactly one space between
/// fields, addresses of the family named, ports without leading zeros.
fn v1_addresses(line: &[u8]) -> Option<Endpoints> {
    if let Some(rest) = line.strip_prefix(b"UNKNOWN") {
        // §2.1: whatever follows UNKNOWN up to the CRLF is ignored.
        return (rest.is_empty() || rest[0] == b' ').then_some((None, None));
    }
    let mut fields = line.split(|&b| b == b' ');
    let family = fields.next()?;
    let (source, destination) = (fields.next()?, fields.next()?);
    let (source_port, destination_port) = (port(fields.next()?)?, port(fields.next()?)?);
    if fields.next().is_some() {
        return None;
    }
    let (source, destination): (IpAddr, IpAddr) = match family {
        b"TCP4" => (
            text::<Ipv4Addr>(source)?.into(),
            text::<Ipv4Addr>(destination)?.into(),
        ),
        b"TCP6" => (
            text::<Ipv6Addr>(source)?.into(),
            text::<Ipv6Addr>(destination)?.into(),
        ),
        _ => return None,
    };
    Some((
        Some(SocketAddr::new(source, source_port)),
        Some(SocketAddr::new(destination, destination_port)),
    ))
}

/// An address in its text form. The standard parsers are as strict as §2.1
/// asks: four decimal numbers to 255 without leading zeros for IPv4, hex
/// groups with at most one `::` for IPv6.
fn text<T: FromStr>(field: &[u8]) -> Option<T> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// A port: decimal, 0 to 65535, no leading zero (§2.1).
fn port(field: &[u8]) -> Option<u16> {
    let digits = field.iter().all(u8::is_ascii_digit) && (1..=5).contains(&field.len());
    if !digits || (field.len() > 1 && field[0] == b'0') {
        return None;
    }
    text(field)
}

/// The binary header: signature, version 2 and a command, family and
/// protocol, a length, then the address block and TLVs.
fn decode_v2(buf: &[u8]) -> Result<Decoded, ProxyError> {
    match signature(buf, V2_SIGNATURE) {
        Signature::Differs => return Err(ProxyError::NotProxy),
        Signature::Partial => return Ok(Decoded::Incomplete),
        Signature::Whole => {}
    }
    // Each byte is judged as soon as it is in, so that a prefix never
    // answers otherwise than the whole.
    let Some(&version_command) = buf.get(12) else {
        return Ok(Decoded::Incomplete);
    };
    if version_command >> 4 != 2 {
        return Err(ProxyError::UnsupportedVersion);
    }
    let command = version_command & 0x0f;
    if command != COMMAND_LOCAL && command != COMMAND_PROXY {
        return Err(ProxyError::Malformed);
    }
    let Some(&family_protocol) = buf.get(13) else {
        return Ok(Decoded::Incomplete);
    };
    let (family, protocol) = (family_protocol >> 4, family_protocol & 0x0f);
    // LOCAL: the family is ignored, whatever it says (§2.2).
    if command == COMMAND_PROXY && (family > FAMILY_UNIX || protocol > PROTOCOL_MAX) {
        return Err(ProxyError::Malformed);
    }
    let Some(&[high, low]) = buf.get(14..V2_FIXED_LEN) else {
        return Ok(Decoded::Incomplete);
    };
    let consumed = V2_FIXED_LEN + usize::from(u16::from_be_bytes([high, low]));
    if consumed > MAX_V2_LEN {
        return Err(ProxyError::TooLong);
    }
    let Some(block) = buf.get(V2_FIXED_LEN..consumed) else {
        return Ok(Decoded::Incomplete);
    };
    let (source, destination) = if command == COMMAND_LOCAL {
        // The proxy's own connection (a health check): its endpoints are
        // the real ones, and the block is skipped unread.
        (None, None)
    } else {
        v2_addresses(family, protocol, block)?
    };
    Ok(Decoded::Done {
        consumed,
        source,
        destination,
    })
}

/// The address block of a PROXY command, then its TLVs.
fn v2_addresses(family: u8, protocol: u8, block: &[u8]) -> Result<Endpoints, ProxyError> {
    if family == FAMILY_UNSPEC || protocol == PROTOCOL_UNSPEC {
        // §2.2: accepted with the real endpoints; the address information,
        // if any, ignored (where the TLVs start is then unknown).
        return Ok((None, None));
    }
    let addresses_len = match family {
        FAMILY_INET => 2 * 4 + 2 * 2,
        FAMILY_INET6 => 2 * 16 + 2 * 2,
        // FAMILY_UNIX: two 108-byte paths.
        _ => 2 * 108,
    };
    let (addresses, tlvs) = block
        .split_at_checked(addresses_len)
        .ok_or(ProxyError::Malformed)?;
    check_tlvs(tlvs)?;
    let ports = |at: usize| {
        (
            u16::from_be_bytes([addresses[at], addresses[at + 1]]),
            u16::from_be_bytes([addresses[at + 2], addresses[at + 3]]),
        )
    };
    let (source, destination): (IpAddr, IpAddr) = match family {
        FAMILY_INET => (
            Ipv4Addr::from(octets::<4>(&addresses[..4])).into(),
            Ipv4Addr::from(octets::<4>(&addresses[4..8])).into(),
        ),
        FAMILY_INET6 => (
            Ipv6Addr::from(octets::<16>(&addresses[..16])).into(),
            Ipv6Addr::from(octets::<16>(&addresses[16..32])).into(),
        ),
        // A Unix socket path is no address a peer can be given as.
        _ => return Ok((None, None)),
    };
    let (source_port, destination_port) = ports(addresses_len - 4);
    Ok((
        Some(SocketAddr::new(source, source_port)),
        Some(SocketAddr::new(destination, destination_port)),
    ))
}

fn octets<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(bytes);
    out
}

/// The TLVs after the addresses (§2.2): a type byte, a 16-bit length, that
/// many bytes of value. None is interpreted (a CRC32C is not checked, which
/// §2.2.3 leaves to receivers that support it), but each must fit in the
/// header, as HAProxy requires.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyError> {
    // Each turn takes at least the 3 bytes of a TLV's type and length.
    while let [_, high, low, rest @ ..] = tlvs {
        let len = usize::from(u16::from_be_bytes([*high, *low]));
        tlvs = rest.get(len..).ok_or(ProxyError::Malformed)?;
    }
    if tlvs.is_empty() {
        Ok(())
    } else {
        Err(ProxyError::Malformed)
    }
}

#[cfg(test)]
mod tests;
