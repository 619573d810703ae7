//! Address classification for egress (contract §6, step 3): is a resolved address public, or
//! internal by any spelling? Pure, so it is property-tested here; the egress proxy applies it to
//! every address a name resolves to, and connects only to an address it has checked.
//!
//! IPv4 embedded in IPv6 is judged by the embedded address: IPv4-mapped (`::ffff:0:0/96`),
//! IPv4-compatible (`::/96`, deprecated), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`). Teredo
//! (`2001::/32`) obscures its embedded address and is blocked outright.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why an address is not public (`None` from [`blocked_reason`] means public).
pub type Reason = &'static str;

/// The reason `ip` must not be reached, or `None` when it is a public address.
pub fn blocked_reason(ip: IpAddr) -> Option<Reason> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => v4_reason(v4),
            None => v6_reason(v6),
        },
    }
}

/// True when `ip` is public (see [`blocked_reason`]).
pub fn is_public(ip: IpAddr) -> bool {
    blocked_reason(ip).is_none()
}

/// The IPv4 address an IPv6 address carries, for the embeddings judged by it.
pub fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        // ::ffff:a.b.c.d (mapped)
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        // ::a.b.c.d (compatible), but not :: and ::1 themselves
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(tail),
        // 64:ff9b::a.b.c.d (NAT64 well-known prefix)
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 2002:AABB:CCDD::/48 (6to4)
        [0x2002, _, _, _, _, _, _, _] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<Reason> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (10, _, _) => "private (10.0.0.0/8)",
        (100, 64..=127, _) => "shared address space (100.64.0.0/10)",
        (127, _, _) => "loopback (127.0.0.0/8)",
        (169, 254, _) => "link-local (169.254.0.0/16)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) => "documentation (192.0.2.0/24)",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (198, 51, 100) => "documentation (198.51.100.0/24)",
        (203, 0, 113) => "documentation (203.0.113.0/24)",
        (224..=239, _, _) => "multicast (224.0.0.0/4)",
        (255, 255, 255) if ip == Ipv4Addr::BROADCAST => "broadcast",
        (240..=255, _, _) => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<Reason> {
    let s = ip.segments();
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => "unspecified (::)",
        [0, 0, 0, 0, 0, 0, 0, 1] => "loopback (::1)",
        [0, 0, 0, 0, 0, 0, 0, _] => "IPv4-compatible (::/96)",
        [0x64, 0xff9b, 1, ..] => "local-use NAT64 (64:ff9b:1::/48)",
        [0x100, 0, 0, 0, ..] => "discard-only (100::/64)",
        [0x2001, 0, ..] => "Teredo (2001::/32)",
        [0x2001, 2, 0, ..] => "benchmarking (2001:2::/48)",
        [0x2001, 0xdb8, ..] => "documentation (2001:db8::/32)",
        [0x2001, x, ..] if (0x10..=0x1f).contains(&x) => "ORCHID (2001:10::/28)",
        [x, ..] if x & 0xfff0 == 0x3ff0 => "documentation (3fff::/20)",
        [x, ..] if x & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        [x, ..] if x & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        [x, ..] if x & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        [x, ..] if x & 0xff00 == 0xff00 => "multicast (ff00::/8)",
        // Only global unicast (2000::/3) is public; everything else is unassigned or special.
        [x, ..] if x & 0xe000 != 0x2000 => "not global unicast (outside 2000::/3)",
        _ => return None,
    })
}

/// An operator-opened range (`RUMI_EGRESS_ALLOW_CIDRS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the range; an IPv6 spelling of an IPv4 address counts as that address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(x)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(x) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(x)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(x) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `a.b.c.d/n` or `x::y/n`; a bare address is a single host.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has an invalid prefix length"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

/// The first of a name's addresses that egress must not reach (and why), skipping those the
/// operator opened: one blocked address blocks the whole name, so a resolver cannot hand the
/// proxy a public address now and an internal one at connect time.
pub fn first_blocked(ips: &[IpAddr], allow: &[Cidr]) -> Option<(IpAddr, Reason)> {
    ips.iter()
        .filter(|ip| !allow.iter().any(|c| c.contains(**ip)))
        .find_map(|ip| blocked_reason(*ip).map(|why| (*ip, why)))
}

/// The operator's explanation of a blocked name: which address, which range, and the setting
/// that would open exactly that address (for a local test upstream, never for production).
pub fn blocked_explanation(host: &str, ip: IpAddr, why: Reason) -> String {
    let single = if ip.is_ipv4() { 32 } else { 128 };
    format!(
        "{host} resolves to {ip}, a {why} address, which egress never reaches; \
         RUMI_EGRESS_ALLOW_CIDRS={ip}/{single} would open that one address (for a local test \
         upstream, not for production)"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_blocked_address_is_named_unless_opened() {
        let ips: Vec<IpAddr> = vec![
            "93.184.215.14".parse().unwrap(),
            "127.0.0.2".parse().unwrap(),
        ];
        let (ip, why) = first_blocked(&ips, &[]).unwrap();
        assert_eq!(ip, "127.0.0.2".parse::<IpAddr>().unwrap());
        let text = blocked_explanation("api.test", ip, why);
        assert!(text.contains("127.0.0.2") && text.contains(why), "{text}");
        assert!(
            text.contains("RUMI_EGRESS_ALLOW_CIDRS=127.0.0.2/32"),
            "{text}"
        );
        let opened: Cidr = "127.0.0.0/8".parse().unwrap();
        assert_eq!(first_blocked(&ips, &[opened]), None);
        assert_eq!(first_blocked(&ips[..1], &[]), None);
    }

    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }
    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    #[test]
    fn every_spelling_of_an_internal_address_is_blocked() {
        for s in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "203.0.113.9",
        ] {
            assert!(!is_public(v4(s)), "{s}");
        }
        for s in [
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:101::1",
            "64:ff9b:1::1",
            "100::1",
            "fec0::1",
        ] {
            assert!(!is_public(v6(s)), "{s}");
        }
    }

    #[test]
    fn public_addresses_pass_in_every_spelling() {
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert!(is_public(v4(s)), "{s}");
        }
        for s in [
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(v6(s)), "{s}");
        }
    }

    #[test]
    fn cidrs_parse_and_match_embedded_spellings() {
        let c: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(c.contains(v4("127.0.0.2")));
        assert!(c.contains(v6("::ffff:127.0.0.2")));
        assert!(!c.contains(v4("128.0.0.1")));
        let host: Cidr = "10.0.0.5".parse().unwrap();
        assert!(host.contains(v4("10.0.0.5")) && !host.contains(v4("10.0.0.6")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(v4("1.2.3.4")));
        let six: Cidr = "fd00::/8".parse().unwrap();
        assert!(six.contains(v6("fd12::1")) && !six.contains(v6("fe80::1")));
        for bad in [
            "",
            "x",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/-1",
            "10.0.0.0/a",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    fn std_says_internal(ip: Ipv4Addr) -> bool {
        ip.is_private()
            || ip.is_loopback()
            || ip.is_link_local()
            || ip.is_multicast()
            || ip.is_broadcast()
            || ip.is_unspecified()
            || ip.is_documentation()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Every embedding of an IPv4 address is judged exactly as the address itself.
        #[test]
        fn embedded_spellings_agree_with_the_ipv4_address(raw in any::<u32>()) {
            let ip = Ipv4Addr::from(raw);
            let o = ip.octets();
            let want = is_public(IpAddr::V4(ip));
            let mapped = ip.to_ipv6_mapped();
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, (raw >> 16) as u16, raw as u16);
            let six_to_four = Ipv6Addr::new(0x2002, u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([o[2], o[3]]), 0, 0, 0, 0, 1);
            prop_assert_eq!(is_public(IpAddr::V6(mapped)), want);
            prop_assert_eq!(is_public(IpAddr::V6(nat64)), want);
            prop_assert_eq!(is_public(IpAddr::V6(six_to_four)), want);
            if raw >> 16 != 0 {
                let compat = Ipv6Addr::new(0, 0, 0, 0, 0, 0, (raw >> 16) as u16, raw as u16);
                prop_assert_eq!(is_public(IpAddr::V6(compat)), want);
            }
        }

        /// Whatever the standard library calls internal is blocked, and so is the shared range.
        #[test]
        fn the_classifier_is_at_least_as_strict_as_std(raw in any::<u32>()) {
            let ip = Ipv4Addr::from(raw);
            if std_says_internal(ip) || (ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64) {
                prop_assert!(!is_public(IpAddr::V4(ip)), "{}", ip);
            }
        }

        /// IPv6: loopback, ULA, link-local, multicast and everything outside 2000::/3 are blocked.
        #[test]
        fn ipv6_outside_global_unicast_is_blocked(raw in any::<u128>()) {
            let ip = Ipv6Addr::from(raw);
            let first = ip.segments()[0];
            let special = ip.is_loopback() || ip.is_unspecified() || ip.is_multicast()
                || first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80 || first & 0xe000 != 0x2000;
            if special && embedded_v4(ip).is_none() {
                prop_assert!(!is_public(IpAddr::V6(ip)), "{}", ip);
            }
        }
    }
}
