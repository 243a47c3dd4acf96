//! Who the client is. A peer that is not a trusted proxy is the client, and
//! nothing it sends in `X-Forwarded-For` / `X-Real-IP` is believed. Behind a
//! trusted proxy, `X-Forwarded-For` is walked from the right, skipping
//! trusted hops (nginx `real_ip_recursive on`), so the leftmost entry — the
//! one any client can write — is used only when every hop after it is trusted.

pub use crate::checks::allowlist::canonical;
use crate::checks::allowlist::IpSet;
use std::net::IpAddr;

/// Whether `peer` is a trusted proxy, whose forwarding headers are read.
pub fn is_trusted(peer: IpAddr, trusted: &IpSet) -> bool {
    !trusted.is_empty() && trusted.contains(peer)
}

/// Find the client address from the peer and the headers it sent.
pub fn resolve(
    peer: IpAddr,
    xff: Option<&[u8]>,
    x_real_ip: Option<&[u8]>,
    trusted: &IpSet,
) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    // A chain that is present is walked even when it holds bytes that are
    // not UTF-8 (a client can put those on the left): they are a garbled hop,
    // never a reason to fall back to X-Real-IP, which the client may have set.
    if let Some(chain) = xff {
        let mut client = peer;
        for hop in chain.rsplit(|b| *b == b',') {
            match parse_hop(hop) {
                Some(ip) => {
                    client = ip;
                    if !trusted.contains(ip) {
                        return ip;
                    }
                }
                // A garbled hop ends the walk: the last good one stands.
                None => return client,
            }
        }
        return client;
    }
    x_real_ip.and_then(parse_hop).unwrap_or(peer)
}

fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    let hop = hop
        .strip_prefix('[')
        .and_then(|h| h.split(']').next())
        .unwrap_or(hop);
    hop.parse::<IpAddr>().ok().map(canonical)
}

/// The values of a header that may be sent several times (`X-Forwarded-For`)
/// as the one comma-separated list they mean (RFC 9110 §5.3). A proxy may
/// add its own line rather than extend the client's (HAProxy `option
/// forwardfor` does), so reading only the first line would believe the
/// client's. `None` when the header is absent.
pub fn joined_values<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Option<std::borrow::Cow<'a, [u8]>> {
    let mut values = values.into_iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(std::borrow::Cow::Borrowed(first));
    };
    let mut joined = first.to_vec();
    for v in std::iter::once(second).chain(values) {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v);
    }
    Some(std::borrow::Cow::Owned(joined))
}

/// Every line of header `name` in `headers`, as one list ([`joined_values`]).
pub fn all_lines<'a>(
    headers: &'a http::HeaderMap,
    name: &http::HeaderName,
) -> Option<std::borrow::Cow<'a, [u8]>> {
    joined_values(headers.get_all(name).iter().map(|v| v.as_bytes()))
}

/// Append the `X-Forwarded-For` sent upstream: the received chain plus the
/// peer when the peer is trusted, otherwise just the peer.
pub fn push_forwarded_for(
    out: &mut String,
    peer: IpAddr,
    received: Option<&[u8]>,
    trusted: &IpSet,
) {
    let peer = canonical(peer);
    match received.and_then(|v| std::str::from_utf8(v).ok()) {
        Some(chain) if !chain.trim().is_empty() && trusted.contains(peer) => {
            out.push_str(chain.trim());
            out.push_str(", ");
            crate::json::push_ip_text(out, peer);
        }
        _ => crate::json::push_ip_text(out, peer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(v: &[&str]) -> IpSet {
        IpSet::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn forwarded_for(peer: IpAddr, received: Option<&[u8]>, trusted: &IpSet) -> String {
        let mut out = String::new();
        push_forwarded_for(&mut out, peer, received, trusted);
        out
    }

    #[test]
    fn untrusted_peer_cannot_choose_its_address() {
        let t = trusted(&["10.0.0.0/8"]);
        let got = resolve(ip("203.0.113.9"), Some(b"1.2.3.4"), Some(b"5.6.7.8"), &t);
        assert_eq!(got, ip("203.0.113.9"));
        assert_eq!(
            forwarded_for(ip("203.0.113.9"), Some(b"1.2.3.4"), &t),
            "203.0.113.9"
        );
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let t = trusted(&["10.0.0.0/8"]);
        let xff = b"6.6.6.6, 198.51.100.7, 10.0.0.2";
        assert_eq!(
            resolve(ip("10.0.0.1"), Some(xff), None, &t),
            ip("198.51.100.7")
        );
        assert_eq!(
            forwarded_for(ip("10.0.0.1"), Some(xff), &t),
            "6.6.6.6, 198.51.100.7, 10.0.0.2, 10.0.0.1"
        );
    }

    #[test]
    fn all_trusted_falls_back_to_the_leftmost() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(ip("10.0.0.1"), Some(b"10.1.1.1, 10.2.2.2"), None, &t),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn garbage_hop_stops_the_walk() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(ip("10.0.0.1"), Some(b"1.1.1.1, junk, 10.0.0.3"), None, &t),
            ip("10.0.0.3")
        );
    }

    #[test]
    fn a_chain_that_is_not_utf8_is_walked_not_replaced_by_x_real_ip() {
        let t = trusted(&["10.0.0.0/8"]);
        let xff: &[u8] = b"\xff, 198.51.100.7, 10.0.0.2";
        let got = resolve(ip("10.0.0.1"), Some(xff), Some(b"10.9.9.9"), &t);
        assert_eq!(got, ip("198.51.100.7"));
        let garbled_last: &[u8] = b"198.51.100.7, \xff";
        let got = resolve(ip("10.0.0.1"), Some(garbled_last), Some(b"10.9.9.9"), &t);
        assert_eq!(got, ip("10.0.0.1"));
    }

    #[test]
    fn repeated_header_lines_join_in_order() {
        assert_eq!(joined_values(std::iter::empty()), None);
        let one: [&[u8]; 1] = [b"1.1.1.1"];
        assert_eq!(joined_values(one).as_deref(), Some(&b"1.1.1.1"[..]));
        let lines: [&[u8]; 3] = [b"10.1.1.1", b"203.0.113.9", b"10.0.0.2"];
        let joined = joined_values(lines).unwrap();
        assert_eq!(&*joined, b"10.1.1.1, 203.0.113.9, 10.0.0.2");
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(ip("10.0.0.1"), Some(&joined), None, &t),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn x_real_ip_from_trusted_proxy_and_ipv6() {
        let t = trusted(&["::1/128", "127.0.0.1"]);
        assert_eq!(
            resolve(ip("::1"), None, Some(b"2001:db8::5"), &t),
            ip("2001:db8::5")
        );
        assert_eq!(
            resolve(ip("::ffff:127.0.0.1"), Some(b"[2001:db8::7]"), None, &t),
            ip("2001:db8::7")
        );
    }
}
