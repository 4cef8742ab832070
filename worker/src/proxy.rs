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
mod tests {
    use super::*;

    const ALL: [Versions; 3] = [Versions::V1, Versions::V2, Versions::Auto];

    fn done(consumed: usize, source: &str, destination: &str) -> Result<Decoded, ProxyError> {
        Ok(Decoded::Done {
            consumed,
            source: Some(source.parse().unwrap()),
            destination: Some(destination.parse().unwrap()),
        })
    }

    fn done_without_addresses(consumed: usize) -> Result<Decoded, ProxyError> {
        Ok(Decoded::Done {
            consumed,
            source: None,
            destination: None,
        })
    }

    /// A v2 header: signature, `version_command`, `family_protocol`, the
    /// length of `block`, `block`.
    fn v2(version_command: u8, family_protocol: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend([version_command, family_protocol]);
        out.extend(u16::try_from(block.len()).unwrap().to_be_bytes());
        out.extend(block);
        out
    }

    /// Every proper prefix of a header is incomplete, under every mode that
    /// accepts it.
    #[track_caller]
    fn prefixes_are_incomplete(header: &[u8], modes: &[Versions]) {
        for &mode in modes {
            for end in 0..header.len() {
                assert_eq!(
                    decode(&header[..end], mode),
                    Ok(Decoded::Incomplete),
                    "{mode:?}, {:?}",
                    &header[..end]
                );
            }
        }
    }

    #[test]
    fn v1_the_spec_example() {
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
        let mut buf = line.to_vec();
        buf.extend(b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n");
        for mode in [Versions::V1, Versions::Auto] {
            assert_eq!(
                decode(&buf, mode),
                done(line.len(), "192.168.0.1:56324", "192.168.0.11:443")
            );
        }
        prefixes_are_incomplete(line, &[Versions::V1, Versions::Auto]);
    }

    #[test]
    fn v1_the_longest_lines_of_the_spec() {
        let ipv4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        assert_eq!(ipv4.len(), 56);
        assert_eq!(
            decode(ipv4, Versions::V1),
            done(56, "255.255.255.255:65535", "255.255.255.255:65535")
        );
        let ffff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let ipv6 = format!("PROXY TCP6 {ffff} {ffff} 65535 65535\r\n");
        assert_eq!(ipv6.len(), 104);
        let addr = format!("[{ffff}]:65535");
        assert_eq!(
            decode(ipv6.as_bytes(), Versions::V1),
            done(104, &addr, &addr)
        );
        assert_eq!(
            decode(b"PROXY UNKNOWN\r\n", Versions::V1),
            done_without_addresses(15)
        );
        // The worst case: UNKNOWN with every optional field, 107 bytes.
        let worst = format!("PROXY UNKNOWN {ffff} {ffff} 65535 65535\r\n");
        assert_eq!(worst.len(), MAX_V1_LEN);
        assert_eq!(
            decode(worst.as_bytes(), Versions::V1),
            done_without_addresses(107)
        );
        // One byte more and the CRLF is past the limit.
        let longer = format!("PROXY UNKNOWN {ffff} {ffff} 65535 655350\r\n");
        assert_eq!(
            decode(longer.as_bytes(), Versions::V1),
            Err(ProxyError::TooLong)
        );
        assert_eq!(
            decode(&longer.as_bytes()[..MAX_V1_LEN], Versions::V1),
            Err(ProxyError::TooLong)
        );
        assert_eq!(
            decode(&longer.as_bytes()[..MAX_V1_LEN - 1], Versions::V1),
            Ok(Decoded::Incomplete)
        );
    }

    #[test]
    fn v1_addresses_in_their_forms() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            (
                "PROXY TCP6 ::1 2001:db8::2 1 0\r\n",
                Some(("[::1]:1", "[2001:db8::2]:0")),
            ),
            (
                "PROXY TCP6 2001:DB8::A ::ffff:10.0.0.1 80 8080\r\n",
                Some(("[2001:db8::a]:80", "[::ffff:10.0.0.1]:8080")),
            ),
            (
                "PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n",
                Some(("0.0.0.0:0", "0.0.0.0:0")),
            ),
            // UNKNOWN: the rest of the line, whatever it is, is ignored.
            ("PROXY UNKNOWN 1.2.3.4 whatever\r\n", None),
            ("PROXY UNKNOWN \x01\x7f\r\n", None),
        ];
        for (line, addresses) in cases {
            let want = match addresses {
                Some((source, destination)) => done(line.len(), source, destination),
                None => done_without_addresses(line.len()),
            };
            assert_eq!(decode(line.as_bytes(), Versions::V1), want, "{line:?}");
        }
    }

    #[test]
    fn v1_lines_out_of_grammar_are_malformed() {
        for line in [
            // Leading zeros, out of range, of the wrong family.
            "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n",
            "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n",
            "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            "PROXY TCP4 ::1 ::1 1 2\r\n",
            "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP6 1::2::3 ::1 1 2\r\n",
            // Spacing: exactly one space between fields, none at the end.
            "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
            // Missing or extra fields, unknown protocols.
            "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            "PROXY TCP4\r\n",
            "PROXY \r\n",
            "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY UNKNOWNX\r\n",
            // A CR or an LF alone.
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            "PROXY UNKNOWN\n\r\n",
            "PROXY UNKNOWN\r\r\n",
        ] {
            assert_eq!(
                decode(line.as_bytes(), Versions::V1),
                Err(ProxyError::Malformed),
                "{line:?}"
            );
        }
    }

    #[test]
    fn what_is_no_header_is_refused() {
        for mode in ALL {
            for bytes in [
                &b"GET / HTTP/1.1\r\n"[..],
                b"proxy TCP4",
                b"PROXYTCP4 1.2.3.4",
                b"PROX\0",
                b"\r\nGET / HTTP/1.1\r\n",
                b"\r\n\r\n\0\r\nQUIT\r",
                b"\x16\x03\x01",
            ] {
                assert_eq!(
                    decode(bytes, mode),
                    Err(ProxyError::NotProxy),
                    "{mode:?} {bytes:?}"
                );
            }
            assert_eq!(decode(b"", mode), Ok(Decoded::Incomplete));
        }
    }

    #[test]
    fn off_takes_nothing() {
        for bytes in [&b""[..], b"GET / HTTP/1.1\r\n", b"PROXY UNKNOWN\r\n"] {
            assert_eq!(decode(bytes, Versions::Off), done_without_addresses(0));
        }
    }

    #[test]
    fn a_version_not_accepted_is_named_once_its_signature_is_in() {
        let v1 = b"PROXY UNKNOWN\r\n";
        let v2_local = v2(0x20, 0x00, &[]);
        assert_eq!(
            decode(v1, Versions::V2),
            Err(ProxyError::UnsupportedVersion)
        );
        assert_eq!(
            decode(b"PROXY ", Versions::V2),
            Err(ProxyError::UnsupportedVersion)
        );
        assert_eq!(decode(b"PROXY", Versions::V2), Ok(Decoded::Incomplete));
        assert_eq!(
            decode(&v2_local, Versions::V1),
            Err(ProxyError::UnsupportedVersion)
        );
        assert_eq!(
            decode(&v2_local[..11], Versions::V1),
            Ok(Decoded::Incomplete)
        );
        assert_eq!(decode(&v2_local, Versions::V2), done_without_addresses(16));
        assert_eq!(decode(v1, Versions::Auto), done_without_addresses(15));
        assert_eq!(
            decode(&v2_local, Versions::Auto),
            done_without_addresses(16)
        );
    }

    #[test]
    fn v2_a_header_haproxy_sent() {
        // TCP over IPv4, 172.19.0.1:42578 to 172.19.0.3:80, then the request.
        let mut buf = v2(
            0x21,
            0x11,
            &[172, 19, 0, 1, 172, 19, 0, 3, 0xa6, 0x52, 0x00, 0x50],
        );
        assert_eq!(buf.len(), 28);
        prefixes_are_incomplete(&buf, &[Versions::V2, Versions::Auto]);
        buf.extend(b"GET / HTTP/1.1\r\n");
        for mode in [Versions::V2, Versions::Auto] {
            assert_eq!(
                decode(&buf, mode),
                done(28, "172.19.0.1:42578", "172.19.0.3:80")
            );
        }
    }

    #[test]
    fn v2_ipv6_udp_and_tlvs() {
        let mut block = Vec::new();
        block.extend(Ipv6Addr::LOCALHOST.octets());
        block.extend("2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        block.extend([0xff, 0xff, 0x01, 0xbb]);
        let header = v2(0x21, 0x21, &block);
        assert_eq!(
            decode(&header, Versions::V2),
            done(52, "[::1]:65535", "[2001:db8::7]:443")
        );
        // UDP (DGRAM) carries its addresses the same way.
        assert_eq!(
            decode(&v2(0x21, 0x22, &block), Versions::V2),
            done(52, "[::1]:65535", "[2001:db8::7]:443")
        );
        // TLVs: ALPN "h2", an empty NOOP, a custom one; skipped.
        let mut with_tlvs = block.clone();
        with_tlvs.extend([0x01, 0x00, 0x02, b'h', b'2']);
        with_tlvs.extend([0x04, 0x00, 0x00]);
        with_tlvs.extend([0xe0, 0x00, 0x03, 1, 2, 3]);
        let header = v2(0x21, 0x21, &with_tlvs);
        assert_eq!(
            decode(&header, Versions::V2),
            done(52 + 14, "[::1]:65535", "[2001:db8::7]:443")
        );
        prefixes_are_incomplete(&header, &[Versions::V2]);
        // A TLV running past the header, or cut in its length.
        for bad in [&[0x01, 0x00, 0x03, b'h', b'2'][..], &[0x01, 0x00], &[0x04]] {
            let mut block = block.clone();
            block.extend(bad);
            assert_eq!(
                decode(&v2(0x21, 0x21, &block), Versions::V2),
                Err(ProxyError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn v2_local_unspec_and_unix_keep_the_real_endpoints() {
        // LOCAL: the block is skipped whatever the family says (§2.2), even
        // one that would be invalid for PROXY.
        assert_eq!(
            decode(&v2(0x20, 0x00, &[]), Versions::V2),
            done_without_addresses(16)
        );
        assert_eq!(
            decode(&v2(0x20, 0x11, &[1; 12]), Versions::V2),
            done_without_addresses(28)
        );
        assert_eq!(
            decode(&v2(0x20, 0xff, &[1; 3]), Versions::V2),
            done_without_addresses(19)
        );
        // PROXY with UNSPEC family or protocol: accepted, addresses ignored.
        assert_eq!(
            decode(&v2(0x21, 0x00, &[]), Versions::V2),
            done_without_addresses(16)
        );
        assert_eq!(
            decode(&v2(0x21, 0x10, &[9; 12]), Versions::V2),
            done_without_addresses(28)
        );
        // AF_UNIX: two 108-byte paths, no IP address to give.
        let mut paths = [0u8; 216];
        paths[..9].copy_from_slice(b"/tmp/a.sk");
        assert_eq!(
            decode(&v2(0x21, 0x31, &paths), Versions::V2),
            done_without_addresses(232)
        );
        assert_eq!(
            decode(&v2(0x21, 0x32, &paths[..215]), Versions::V2),
            Err(ProxyError::Malformed)
        );
    }

    #[test]
    fn v2_fields_out_of_the_spec_are_refused() {
        let ipv4 = [127, 0, 0, 1, 127, 0, 0, 2, 0, 1, 0, 2];
        let cases: &[(Vec<u8>, ProxyError)] = &[
            // Versions other than 2.
            (v2(0x11, 0x11, &ipv4), ProxyError::UnsupportedVersion),
            (v2(0x31, 0x11, &ipv4), ProxyError::UnsupportedVersion),
            (v2(0x01, 0x11, &ipv4), ProxyError::UnsupportedVersion),
            // Unassigned commands, families and protocols.
            (v2(0x22, 0x11, &ipv4), ProxyError::Malformed),
            (v2(0x2f, 0x11, &ipv4), ProxyError::Malformed),
            (v2(0x21, 0x41, &ipv4), ProxyError::Malformed),
            (v2(0x21, 0x13, &ipv4), ProxyError::Malformed),
            // A block too short for its family's addresses.
            (v2(0x21, 0x11, &ipv4[..11]), ProxyError::Malformed),
            (v2(0x21, 0x21, &[0; 35]), ProxyError::Malformed),
            (v2(0x21, 0x11, &[]), ProxyError::Malformed),
        ];
        for (header, want) in cases {
            assert_eq!(decode(header, Versions::V2), Err(*want), "{header:?}");
            assert_eq!(decode(header, Versions::Auto), Err(*want), "{header:?}");
        }
        // The version is judged as soon as its byte is in.
        assert_eq!(
            decode(&v2(0x11, 0x11, &ipv4)[..13], Versions::V2),
            Err(ProxyError::UnsupportedVersion)
        );
    }

    #[test]
    fn v2_lengths_past_the_bound_are_too_long() {
        let mut header = v2(0x21, 0x11, &[0; 12]);
        let longest = u16::try_from(MAX_V2_LEN - 16).unwrap();
        header[14..16].copy_from_slice(&(longest + 1).to_be_bytes());
        // Refused from the length alone, before the block is in.
        assert_eq!(
            decode(&header[..16], Versions::V2),
            Err(ProxyError::TooLong)
        );
        header[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(decode(&header, Versions::V2), Err(ProxyError::TooLong));
        // The longest accepted: addresses, then one TLV filling the rest.
        let mut block = vec![0; 12];
        let fill = usize::from(longest) - 12 - 3;
        block.extend([0x04]);
        block.extend(u16::try_from(fill).unwrap().to_be_bytes());
        block.resize(usize::from(longest), 0);
        assert_eq!(
            decode(&v2(0x21, 0x11, &block), Versions::V2),
            done(MAX_V2_LEN, "0.0.0.0:0", "0.0.0.0:0")
        );
    }

    #[test]
    fn versions_from_the_command_line() {
        assert_eq!("off".parse(), Ok(Versions::Off));
        assert_eq!("v1".parse(), Ok(Versions::V1));
        assert_eq!("v2".parse(), Ok(Versions::V2));
        assert_eq!("auto".parse(), Ok(Versions::Auto));
        assert_eq!("V1".parse::<Versions>(), Err(UnknownVersions));
        assert_eq!("".parse::<Versions>(), Err(UnknownVersions));
        assert_eq!(Versions::default(), Versions::Off);
    }
}
