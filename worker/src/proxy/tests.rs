//! The decoder against the specification's examples and limits.
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

#[test]
fn a_signature_is_told_from_a_request_as_soon_as_the_bytes_allow() {
    assert_eq!(signature_present(b""), None);
    assert_eq!(signature_present(b"P"), None);
    assert_eq!(signature_present(b"PRO"), None);
    assert_eq!(signature_present(b"PROXY "), Some(true));
    assert_eq!(signature_present(b"PROXY TCP4 1.2.3.4"), Some(true));
    assert_eq!(signature_present(b"POST / HTTP/1.1\r\n"), Some(false));
    assert_eq!(signature_present(b"PUT"), Some(false));
    assert_eq!(signature_present(b"PROXYX"), Some(false));
    assert_eq!(signature_present(b"GET / HTTP/1.1\r\n"), Some(false));
    assert_eq!(signature_present(b"\r\n"), None);
    // Empty lines before a request line (RFC 9112 §2.2) are no signature.
    assert_eq!(signature_present(b"\r\nGET"), Some(false));
    assert_eq!(signature_present(V2_SIGNATURE), Some(true));
    assert_eq!(signature_present(&V2_SIGNATURE[..11]), None);
}
