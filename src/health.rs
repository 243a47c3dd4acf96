//! Active health checks (`upstreams.*.health_check`): a background service
//! that sends `GET <path>` to every server of an upstream that has one, on
//! its own interval, and flips the server's `healthy` flag after
//! `unhealthy_after` failures or `healthy_after` successes in a row. The
//! request path only reads the flag (`Upstream::pick` skips unhealthy
//! servers; none left is a 503). A check is a 2xx or 3xx answer within
//! `timeout`.

use crate::gateway::SharedGateway;
use crate::upstream::{Backend, HealthSpec};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How often the checker looks for servers whose interval has passed.
const TICK: Duration = Duration::from_millis(100);

pub struct HealthChecker {
    pub gateway: SharedGateway,
}

/// Consecutive results of one server, by `upstream/server`.
#[derive(Default)]
struct Streak {
    ok: u32,
    failed: u32,
    next: Option<Instant>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut streaks: HashMap<String, Streak> = HashMap::new();
        loop {
            // Whatever config is current: a reload changes what is checked.
            let gw = self.gateway.load_full();
            let now = Instant::now();
            for (name, upstream) in &gw.upstreams {
                let Some(spec) = &upstream.health else {
                    continue;
                };
                for b in &upstream.backends {
                    let streak = streaks.entry(format!("{name}/{}", b.label)).or_default();
                    if streak.next.is_some_and(|t| t > now) {
                        continue;
                    }
                    streak.next = Some(now + spec.interval);
                    let ok = probe(b, spec).await;
                    record(name, b, spec, streak, ok);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn record(upstream: &str, b: &Backend, spec: &HealthSpec, streak: &mut Streak, ok: bool) {
    let was = b.healthy.load(Ordering::Relaxed);
    if ok {
        streak.ok += 1;
        streak.failed = 0;
        if !was && streak.ok >= spec.healthy_after {
            b.healthy.store(true, Ordering::Relaxed);
            log::warn!("upstream {upstream}: server {} is healthy again", b.label);
        }
    } else {
        streak.failed += 1;
        streak.ok = 0;
        if was && streak.failed >= spec.unhealthy_after {
            b.healthy.store(false, Ordering::Relaxed);
            log::error!(
                "upstream {upstream}: server {} failed its health check",
                b.label
            );
        }
    }
}

/// One check: connect, `GET path`, read the status line.
async fn probe(b: &Backend, spec: &HealthSpec) -> bool {
    let attempt = async {
        let mut conn = TcpStream::connect(b.addr).await.ok()?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: colorgate-health\r\nConnection: close\r\n\r\n",
            spec.path, b.label
        );
        conn.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 16];
        let mut n = 0;
        while n < 12 {
            let read = conn.read(&mut buf[n..]).await.ok()?;
            if read == 0 {
                break;
            }
            n += read;
        }
        // "HTTP/1.1 200" → the status code's first digit.
        let line = &buf[..n];
        Some(line.starts_with(b"HTTP/1.") && n >= 10 && matches!(line[9], b'2' | b'3'))
    };
    matches!(
        tokio::time::timeout(spec.timeout, attempt).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{Policy, Timeouts, Upstream};
    use std::sync::Arc;

    fn spec(healthy_after: u32, unhealthy_after: u32) -> HealthSpec {
        HealthSpec {
            path: "/health".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_after,
            unhealthy_after,
        }
    }

    fn one_server() -> Upstream {
        let addr = "127.0.0.1:9".parse().unwrap();
        let t = Timeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
            write: Duration::from_secs(1),
        };
        Upstream::new(
            "u",
            vec![("s".into(), addr)],
            Policy::RoundRobin,
            t,
            Arc::default(),
        )
    }

    #[test]
    fn a_server_flips_only_after_the_configured_streaks() {
        let up = one_server();
        let b = &up.backends[0];
        let (s, mut streak) = (spec(2, 3), Streak::default());
        for _ in 0..2 {
            record("u", b, &s, &mut streak, false);
            assert!(
                b.healthy.load(Ordering::Relaxed),
                "flipped before 3 failures"
            );
        }
        record("u", b, &s, &mut streak, false);
        assert!(!b.healthy.load(Ordering::Relaxed));
        record("u", b, &s, &mut streak, true);
        assert!(
            !b.healthy.load(Ordering::Relaxed),
            "back after 1 of 2 successes"
        );
        record("u", b, &s, &mut streak, true);
        assert!(b.healthy.load(Ordering::Relaxed));
    }

    #[test]
    fn a_failure_in_between_restarts_the_streak() {
        let up = one_server();
        let b = &up.backends[0];
        let (s, mut streak) = (spec(1, 2), Streak::default());
        record("u", b, &s, &mut streak, false);
        record("u", b, &s, &mut streak, true);
        record("u", b, &s, &mut streak, false);
        assert!(b.healthy.load(Ordering::Relaxed));
    }
}
