//! Upstreams: their servers, resolved once at load, and the choice of
//! server per request (`least_inflight` or `round_robin`). Each server
//! carries a ready-made `HttpPeer` with the configured timeouts, so a
//! request only clones it. Active health checks will set `healthy`.

use crate::checks::concurrency::UpstreamInflight;
use pingora_core::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    LeastInflight,
    RoundRobin,
}

/// One server of an upstream.
#[derive(Debug)]
pub struct Backend {
    /// As written in the config, for logs and metrics labels.
    pub label: String,
    pub addr: SocketAddr,
    peer: HttpPeer,
    inflight: Arc<AtomicUsize>,
    pub healthy: AtomicBool,
}

/// Counts a request on its backend while it is in flight.
#[derive(Debug)]
pub struct BackendSlot(Arc<AtomicUsize>);

impl Drop for BackendSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `health_check:` of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
}

#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub backends: Vec<Backend>,
    pub policy: Policy,
    next: AtomicUsize,
    /// Requests in flight to the whole upstream (the `concurrency.upstream` cap).
    pub inflight: Arc<UpstreamInflight>,
    /// Active health checks, when configured (see `health.rs`).
    pub health: Option<HealthSpec>,
}

impl Upstream {
    pub fn new(
        name: &str,
        servers: Vec<(String, SocketAddr)>,
        policy: Policy,
        timeouts: Timeouts,
        inflight: Arc<UpstreamInflight>,
    ) -> Upstream {
        let backends = servers
            .into_iter()
            .map(|(label, addr)| {
                let mut peer = HttpPeer::new(addr, false, String::new());
                peer.options.connection_timeout = Some(timeouts.connect);
                peer.options.read_timeout = Some(timeouts.read);
                peer.options.write_timeout = Some(timeouts.write);
                // nginx keeps idle upstream connections 60 s (keepalive_timeout).
                peer.options.idle_timeout = Some(Duration::from_secs(60));
                // Each request gets a clone of this peer; fixing its reuse hash
                // here spares hashing it twice per request (vendor patch 43).
                peer.fix_reuse_hash();
                Backend {
                    label,
                    addr,
                    peer,
                    inflight: Arc::new(AtomicUsize::new(0)),
                    healthy: AtomicBool::new(true),
                }
            })
            .collect();
        Upstream {
            name: name.to_string(),
            backends,
            policy,
            next: AtomicUsize::new(0),
            inflight,
            health: None,
        }
    }

    /// Choose a server; `None` when every server is marked unhealthy.
    pub fn pick(&self) -> Option<(usize, Box<HttpPeer>, BackendSlot)> {
        let n = self.backends.len();
        let healthy = |i: &usize| self.backends[*i].healthy.load(Ordering::Relaxed);
        let idx = if n == 1 {
            Some(0).filter(healthy)
        } else {
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let order = (0..n).map(|k| (start + k) % n).filter(healthy);
            match self.policy {
                Policy::RoundRobin => order.take(1).next(),
                Policy::LeastInflight => {
                    order.min_by_key(|i| self.backends[*i].inflight.load(Ordering::Relaxed))
                }
            }
        }?;
        let b = &self.backends[idx];
        b.inflight.fetch_add(1, Ordering::Relaxed);
        Some((
            idx,
            Box::new(b.peer.clone()),
            BackendSlot(b.inflight.clone()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(policy: Policy, n: u16) -> Upstream {
        let servers = (0..n)
            .map(|i| {
                let a: SocketAddr = format!("127.0.0.1:{}", 7000 + i).parse().unwrap();
                (a.to_string(), a)
            })
            .collect();
        let t = Timeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
            write: Duration::from_secs(1),
        };
        Upstream::new("u", servers, policy, t, Arc::default())
    }

    #[test]
    fn round_robin_cycles() {
        let u = up(Policy::RoundRobin, 3);
        let picks: Vec<usize> = (0..6).map(|_| u.pick().unwrap().0).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_inflight_avoids_the_busy_server() {
        let u = up(Policy::LeastInflight, 2);
        let (first, _peer, _held) = u.pick().unwrap();
        for _ in 0..4 {
            assert_ne!(u.pick().unwrap().0, first);
        }
    }

    #[test]
    fn unhealthy_servers_are_skipped_and_none_left_is_none() {
        let u = up(Policy::RoundRobin, 2);
        u.backends[0].healthy.store(false, Ordering::Relaxed);
        assert!((0..4).all(|_| u.pick().unwrap().0 == 1));
        u.backends[1].healthy.store(false, Ordering::Relaxed);
        assert!(u.pick().is_none());
    }

    #[test]
    fn each_server_pools_its_own_connections() {
        use pingora_core::upstreams::peer::Peer;
        let u = up(Policy::RoundRobin, 2);
        let hash = |(_, peer, _): (usize, Box<HttpPeer>, BackendSlot)| peer.reuse_hash();
        let (a, b, a_again) = (
            hash(u.pick().unwrap()),
            hash(u.pick().unwrap()),
            hash(u.pick().unwrap()),
        );
        assert_ne!(a, b);
        assert_eq!(a, a_again);
        // The hash fixed at setup is the one Pingora would compute.
        let mut fresh = HttpPeer::new("127.0.0.1:7000", false, String::new());
        fresh.options = u.backends[0].peer.options.clone();
        assert_eq!(a, fresh.reuse_hash());
    }
}
