//! IP sets: the route allowlist (403 `forbidden`) and the trusted proxies.
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match as the IPv4 address,
//! so a dual-stack listener cannot be used to slip past an IPv4 rule.

use ipnet::IpNet;
use std::net::IpAddr;

/// A set of CIDRs and single addresses, parsed once at config load.
#[derive(Debug, Default, Clone)]
pub struct IpSet {
    nets: Vec<IpNet>,
}

impl IpSet {
    /// Parse `entries`; each bad entry is reported with its index.
    pub fn parse(entries: &[String]) -> Result<IpSet, Vec<(usize, String)>> {
        let mut nets = Vec::with_capacity(entries.len());
        let mut errors = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let entry = entry.trim();
            let parsed = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => nets.push(canonical_net(net)),
                Err(_) => errors.push((i, format!("invalid IP address or CIDR {entry:?}"))),
            }
        }
        if errors.is_empty() {
            Ok(IpSet { nets })
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; every other address unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// A mapped-IPv4 CIDR in the config (`::ffff:10.0.0.0/104`) becomes the IPv4 one.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            if let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96) {
                return IpNet::V4(n);
            }
        }
    }
    net
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[&str]) -> IpSet {
        let v: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        IpSet::parse(&v).expect("valid set")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid ip")
    }

    #[test]
    fn cidrs_and_single_addresses_match() {
        let s = set(&["192.168.1.0/24", "10.0.0.0/8", "203.0.113.7"]);
        assert!(s.contains(ip("192.168.1.200")));
        assert!(s.contains(ip("10.255.0.1")));
        assert!(s.contains(ip("203.0.113.7")));
        assert!(!s.contains(ip("203.0.113.8")));
        assert!(!s.contains(ip("192.168.2.1")));
    }

    #[test]
    fn ipv4_mapped_ipv6_matches_as_ipv4() {
        let s = set(&["10.0.0.0/8"]);
        assert!(s.contains(ip("::ffff:10.1.2.3")));
        assert!(!s.contains(ip("::ffff:11.1.2.3")));
        let mapped_rule = set(&["::ffff:10.0.0.0/104"]);
        assert!(mapped_rule.contains(ip("10.9.9.9")));
    }

    #[test]
    fn ipv6_cidrs_match() {
        let s = set(&["2001:db8::/32", "::1"]);
        assert!(s.contains(ip("2001:db8:1::5")));
        assert!(s.contains(ip("::1")));
        assert!(!s.contains(ip("2001:db9::1")));
        assert!(!s.contains(ip("127.0.0.1")));
    }

    #[test]
    fn bad_entries_are_reported_by_index() {
        let v = vec![
            "10.0.0.0/8".to_string(),
            "10.0.0.0/33".into(),
            "nope".into(),
        ];
        let errs = IpSet::parse(&v).unwrap_err();
        assert_eq!(errs.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2]);
    }
}
