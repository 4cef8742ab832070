//! The PROXY protocol decoder, `proxy::decode`: no panic on any input, for
//! any accepted versions; a prefix decodes as incomplete or as the whole
//! does; endpoints written as a v1 line or a v2 block, TLVs and all, decode
//! to themselves; endpoints it accepts, written again either way, decode to
//! the same.

use std::net::{IpAddr, SocketAddr};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use rgun_worker::proxy::{self, Decoded, Versions};

use crate::head::apply;
use crate::keep::{self, Raw, Saved, seeds_file};

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn saved(bytes: &[u8]) -> impl FnOnce() -> Saved {
    move || Saved {
        bytes: bytes.to_vec(),
        extension: "bin",
    }
}

/// `PROXY TCP4|TCP6 src dst sport dport\r\n` for two addresses of one
/// family.
fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// A v2 PROXY command for TCP between two addresses of one family, then
/// the TLVs.
fn v2(source: SocketAddr, destination: SocketAddr, tlvs: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut block = Vec::new();
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            block.extend(s.octets());
            block.extend(d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            block.extend(s.octets());
            block.extend(d.octets());
            0x21
        }
        _ => unreachable!("one family"),
    };
    block.extend(source.port().to_be_bytes());
    block.extend(destination.port().to_be_bytes());
    for (kind, value) in tlvs {
        block.push(*kind);
        block.extend(u16::try_from(value.len()).unwrap().to_be_bytes());
        block.extend(value);
    }
    let mut out = V2_SIGNATURE.to_vec();
    out.extend([0x21, family]);
    out.extend(u16::try_from(block.len()).unwrap().to_be_bytes());
    out.extend(block);
    out
}

/// Two endpoints of one family.
fn endpoints() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<[u8; 4]>(),
            any::<u16>()
        )
            .prop_map(|(s, sp, d, dp)| {
                (
                    SocketAddr::new(IpAddr::from(s), sp),
                    SocketAddr::new(IpAddr::from(d), dp),
                )
            }),
        (
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<u16>()
        )
            .prop_map(|(s, sp, d, dp)| {
                (
                    SocketAddr::new(IpAddr::from(s), sp),
                    SocketAddr::new(IpAddr::from(d), dp),
                )
            }),
    ]
}

fn tlvs() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    vec((any::<u8>(), vec(any::<u8>(), 0..8)), 0..3)
}

fn versions() -> impl Strategy<Value = Versions> {
    select(&[Versions::Off, Versions::V1, Versions::V2, Versions::Auto][..])
}

/// Headers by the spec, the forms without addresses too.
fn header() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => endpoints().prop_map(|(s, d)| v1(s, d)),
        3 => (endpoints(), tlvs()).prop_map(|((s, d), tlvs)| v2(s, d, &tlvs)),
        1 => select(vec![
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN ffff:f::f ffff:f::f 65535 65535\r\n",
            // LOCAL, then PROXY with UNSPEC, then AF_UNIX (paths cut short
            // or not: the edits may fix or break the length).
            b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x00\x00\x03abc",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x31\x00\x04/a\0\0",
        ]).prop_map(<[u8]>::to_vec),
    ]
}

/// Headers with bytes after them, a few bytes changed now and then, and
/// bytes of any value behind the start of a signature.
fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => (
            header(),
            vec(any::<u8>(), 0..6),
            prop_oneof![2 => Just(Vec::new()), 1 => vec(crate::head::edit(), 1..4)],
        )
            .prop_map(|(mut bytes, after, edits)| {
                bytes.extend(after);
                apply(&mut bytes, &edits);
                bytes
            }),
        1 => (select(vec![&b""[..], b"PROXY ", V2_SIGNATURE]), vec(any::<u8>(), 0..64))
            .prop_map(|(start, rest)| [start, &rest].concat()),
    ]
}

proptest! {
    #![proptest_config(keep::config(seeds_file!("proxy"), "proxy"))]

    /// A header cut anywhere is incomplete or decodes as the whole: the
    /// caller may decode again whenever more bytes come.
    #[test]
    fn a_prefix_is_incomplete_or_the_same_answer(
        Raw(bytes) in input().prop_map(Raw),
        accept in versions(),
    ) {
        keep::check(saved(&bytes), || {
            let whole = proxy::decode(&bytes, accept);
            if let Ok(Decoded::Done { consumed, .. }) = whole {
                prop_assert!(consumed <= bytes.len());
                prop_assert!(accept != Versions::Off || consumed == 0);
            }
            for end in 0..bytes.len() {
                let part = proxy::decode(&bytes[..end], accept);
                let agrees = match (part, whole) {
                    (Ok(Decoded::Incomplete), Ok(Decoded::Done { consumed, .. })) => {
                        end < consumed
                    }
                    (Ok(Decoded::Incomplete), _) => true,
                    (Ok(Decoded::Done { consumed, .. }), _) => end >= consumed && part == whole,
                    (Err(_), _) => part == whole,
                };
                prop_assert!(
                    agrees,
                    "cut at {end} of {:?} ({accept:?}): {part:?}, but the whole: {whole:?}",
                    Raw(bytes.clone())
                );
            }
            Ok(())
        })?;
    }

    /// Endpoints written either way decode to themselves, and what follows
    /// the header is left alone.
    #[test]
    fn endpoints_decode_to_themselves(
        (source, destination) in endpoints(),
        tlvs in tlvs(),
        after in vec(any::<u8>(), 0..8),
    ) {
        for (header, modes) in [
            (v1(source, destination), [Versions::V1, Versions::Auto]),
            (v2(source, destination, &tlvs), [Versions::V2, Versions::Auto]),
        ] {
            let bytes = [&header[..], &after].concat();
            keep::check(saved(&bytes), || {
                for accept in modes {
                    prop_assert_eq!(
                        proxy::decode(&bytes, accept),
                        Ok(Decoded::Done {
                            consumed: header.len(),
                            source: Some(source),
                            destination: Some(destination),
                        }),
                        "{:?}",
                        Raw(bytes.clone())
                    );
                }
                Ok(())
            })?;
        }
    }

    /// Whatever endpoints a header was accepted with, written again as a
    /// v1 line and as a v2 block, decode to the same.
    #[test]
    fn accepted_endpoints_written_again_decode_the_same(Raw(bytes) in input().prop_map(Raw)) {
        keep::check(saved(&bytes), || {
            let Ok(Decoded::Done {
                source: Some(source),
                destination: Some(destination),
                ..
            }) = proxy::decode(&bytes, Versions::Auto)
            else {
                return Ok(());
            };
            prop_assert_eq!(source.is_ipv4(), destination.is_ipv4());
            for again in [v1(source, destination), v2(source, destination, &[])] {
                prop_assert_eq!(
                    proxy::decode(&again, Versions::Auto),
                    Ok(Decoded::Done {
                        consumed: again.len(),
                        source: Some(source),
                        destination: Some(destination),
                    }),
                    "{:?} written again as {:?}",
                    Raw(bytes.clone()),
                    Raw(again.clone())
                );
            }
            Ok(())
        })?;
    }
}
