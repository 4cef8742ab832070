//! Whom the worker believes about where a client is: the peers listed in
//! `--forwarded-allow-ips` (their `X-Forwarded-*` headers count) and in
//! `--proxy-allow-from` (their PROXY protocol header counts), as Gunicorn
//! 24 takes them: addresses and CIDR ranges, or `*`. Also the
//! `X-Forwarded-For` rule that names the client behind trusted proxies.
//! Nothing here reads a socket or a header line: the callers hand over
//! addresses and the header's hops.

use std::net::{IpAddr, SocketAddr};

/// One entry of an allow list: an address range in CIDR notation (a bare
/// address is its own /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                prefix_bits_equal(&base.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                prefix_bits_equal(&base.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` bits of `a` and `b` are the same.
fn prefix_bits_equal(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[whole] & mask) == (b[whole] & mask)
}

/// An allow list entry that is no address, range or `*`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address, a CIDR range (10.0.0.0/8) or *")]
pub struct BadEntry(pub String);

/// Peers whose word about the client is taken: listed addresses and
/// ranges, or every one (`*`). A peer on a Unix socket is a local proxy and
/// always trusted, as in Gunicorn.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    any: bool,
    networks: Vec<Network>,
}

impl AllowList {
    /// Comma-separated entries, blanks ignored: `127.0.0.1,::1`,
    /// `10.0.0.0/8`, `*`.
    pub fn parse(list: &str) -> Result<AllowList, BadEntry> {
        let mut allow = AllowList::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                allow.any = true;
            } else {
                allow
                    .networks
                    .push(network(entry).ok_or_else(|| BadEntry(entry.to_string()))?);
            }
        }
        Ok(allow)
    }

    /// Every peer (`*`).
    pub fn any() -> AllowList {
        AllowList {
            any: true,
            networks: Vec::new(),
        }
    }

    /// Whether `peer` is trusted; `None` is a Unix socket's peer.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        match peer {
            None => true,
            Some(ip) => self.contains(ip),
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        // A dual-stack listener sees an IPv4 client as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        self.any || self.networks.iter().any(|n| n.contains(ip))
    }
}

/// `ADDRESS` or `ADDRESS/PREFIX`, the address in its canonical form.
fn network(entry: &str) -> Option<Network> {
    let (addr, prefix) = match entry.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (entry, None),
    };
    let base = addr.parse::<IpAddr>().ok()?.to_canonical();
    let max = if base.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u8>().ok().filter(|&p| p <= max)?
        }
        Some(_) => return None,
    };
    Some(Network { base, prefix })
}

/// The client an `X-Forwarded-For` chain names, behind `peer` (a proxy in
/// the allow list): walking the hops from the right, every hop that is
/// itself a trusted proxy is passed over, and the first that is not is the
/// client, so that a client cannot choose its own address by writing hops
/// of its own on the left. When every hop is trusted, the leftmost is the
/// client; a hop that is no address ends the walk at the last one that
/// was. `hops` are the header's list elements, left to right, over all its
/// lines in order.
pub fn forwarded_client<'h>(
    hops: impl DoubleEndedIterator<Item = &'h [u8]>,
    allow: &AllowList,
) -> Option<IpAddr> {
    let mut client = None;
    for hop in hops.rev() {
        let Some(ip) = hop_address(hop) else {
            break;
        };
        client = Some(ip);
        if !allow.contains(ip) {
            break;
        }
    }
    client
}

/// A hop: an address, or an address with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`, as some balancers write it), or a bracketed IPv6
/// address.
fn hop_address(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn addresses_and_ranges() {
        let allow =
            AllowList::parse("127.0.0.1, ::1,10.0.0.0/8,192.168.4.0/22,2001:db8::/32").unwrap();
        for trusted in [
            "127.0.0.1",
            "::1",
            "10.0.0.0",
            "10.255.255.255",
            "192.168.4.0",
            "192.168.7.255",
            "2001:db8::1",
            "2001:db8:ffff::",
            // An IPv4 client of a dual-stack listener.
            "::ffff:10.1.2.3",
        ] {
            assert!(allow.trusts(ip(trusted)), "{trusted}");
        }
        for untrusted in [
            "127.0.0.2",
            "11.0.0.0",
            "192.168.3.255",
            "192.168.8.0",
            "2001:db9::",
            "::ffff:127.0.0.2",
            "::2",
        ] {
            assert!(!allow.trusts(ip(untrusted)), "{untrusted}");
        }
        // A Unix socket's peer is a local proxy.
        assert!(allow.trusts(None));
    }

    #[test]
    fn prefix_edges() {
        let all4 = AllowList::parse("0.0.0.0/0").unwrap();
        assert!(all4.trusts(ip("203.0.113.9")));
        assert!(!all4.trusts(ip("2001:db8::1")), "v4 ranges hold no v6");
        let odd = AllowList::parse("172.16.0.0/12").unwrap();
        assert!(odd.trusts(ip("172.31.255.255")));
        assert!(!odd.trusts(ip("172.32.0.0")));
        let host = AllowList::parse("2001:db8::7/128").unwrap();
        assert!(host.trusts(ip("2001:db8::7")));
        assert!(!host.trusts(ip("2001:db8::6")));
        // Host bits set in the base are ignored, as Python's strict=False.
        let loose = AllowList::parse("10.1.2.3/8").unwrap();
        assert!(loose.trusts(ip("10.200.0.1")));
    }

    #[test]
    fn star_and_empty() {
        assert!(AllowList::parse("*").unwrap().trusts(ip("198.51.100.1")));
        assert!(
            AllowList::parse(" 10.0.0.1 , * ")
                .unwrap()
                .trusts(ip("::9"))
        );
        assert!(!AllowList::parse("").unwrap().trusts(ip("127.0.0.1")));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "localhost",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "1.2.3",
            "10.0.0.1:80",
        ] {
            let err = AllowList::parse(&format!("127.0.0.1,{bad}")).unwrap_err();
            assert_eq!(err, BadEntry(bad.to_string()));
        }
    }

    fn client(chain: &str, allow: &str) -> Option<IpAddr> {
        let allow = AllowList::parse(allow).unwrap();
        let hops: Vec<&[u8]> = chain
            .split(',')
            .map(|h| h.trim().as_bytes())
            .filter(|h| !h.is_empty())
            .collect();
        forwarded_client(hops.into_iter(), &allow)
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let proxies = "127.0.0.1,10.0.0.0/8";
        // One proxy: the hop it appended.
        assert_eq!(client("203.0.113.7", proxies), ip("203.0.113.7"));
        // A client that forges hops on the left does not choose its address.
        assert_eq!(client("1.1.1.1, 203.0.113.7", proxies), ip("203.0.113.7"));
        // Trusted proxies on the right are passed over.
        assert_eq!(
            client("1.1.1.1, 203.0.113.7, 10.0.0.2, 10.0.0.3", proxies),
            ip("203.0.113.7")
        );
        // All trusted: the leftmost.
        assert_eq!(client("10.0.0.9, 10.0.0.3", proxies), ip("10.0.0.9"));
        // `*` trusts every hop: the leftmost.
        assert_eq!(client("1.1.1.1, 203.0.113.7", "*"), ip("1.1.1.1"));
    }

    #[test]
    fn a_hop_that_is_no_address_ends_the_walk() {
        let proxies = "10.0.0.0/8";
        assert_eq!(client("unknown", proxies), None);
        assert_eq!(client("", proxies), None);
        assert_eq!(client("203.0.113.7, unknown", proxies), None);
        // The last address seen before it stands.
        assert_eq!(
            client("203.0.113.7, _hidden, 10.0.0.5", proxies),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn hops_with_ports_and_brackets() {
        let proxies = "10.0.0.0/8";
        assert_eq!(client("203.0.113.7:4711", proxies), ip("203.0.113.7"));
        assert_eq!(
            client("[2001:db8::5]:4711, 10.0.0.1", proxies),
            ip("2001:db8::5")
        );
        assert_eq!(client("[2001:db8::5]", proxies), ip("2001:db8::5"));
        assert_eq!(client("2001:db8::5", proxies), ip("2001:db8::5"));
        assert_eq!(client("::ffff:203.0.113.7", proxies), ip("203.0.113.7"));
    }
}
