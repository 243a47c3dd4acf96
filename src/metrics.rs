//! The Prometheus metrics of CONTRACT §5, registered once in the default
//! registry (which Pingora's own metrics use too) and rendered by the admin
//! listener.

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};
use std::sync::OnceLock;

pub struct Metrics {
    pub requests: IntCounterVec,
    pub denied: IntCounterVec,
    pub upstream_seconds: Histogram,
    pub upstream_healthy: IntGaugeVec,
    pub inflight: IntGaugeVec,
    pub reloads: IntCounterVec,
    pub access_log_dropped: IntCounter,
    pub active: IntGauge,
    pub request_buffer_bytes: IntGauge,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics, registered on first use.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        // Registration only fails on a duplicate name, which is a bug here.
        Metrics {
            requests: register_int_counter_vec!(
                "colorgate_requests_total",
                "Requests answered, by route and status",
                &["route", "status"]
            )
            .expect("register colorgate_requests_total"),
            denied: register_int_counter_vec!(
                "colorgate_denied_total",
                "Requests refused by a check, by reason",
                &["reason"]
            )
            .expect("register colorgate_denied_total"),
            upstream_seconds: register_histogram!(
                "colorgate_upstream_seconds",
                "Time from sending a request upstream to its response header",
                vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0
                ]
            )
            .expect("register colorgate_upstream_seconds"),
            upstream_healthy: register_int_gauge_vec!(
                "colorgate_upstream_healthy",
                "1 when the server is considered healthy",
                &["upstream", "server"]
            )
            .expect("register colorgate_upstream_healthy"),
            inflight: register_int_gauge_vec!(
                "colorgate_inflight",
                "Requests in flight to an upstream",
                &["upstream"]
            )
            .expect("register colorgate_inflight"),
            reloads: register_int_counter_vec!(
                "colorgate_config_reloads_total",
                "Config reloads, by result",
                &["result"]
            )
            .expect("register colorgate_config_reloads_total"),
            access_log_dropped: register_int_counter!(
                "colorgate_access_log_dropped_total",
                "Access log lines dropped because the writer fell behind"
            )
            .expect("register colorgate_access_log_dropped_total"),
            active: register_int_gauge!(
                "colorgate_requests_active",
                "Client requests being handled now"
            )
            .expect("register colorgate_requests_active"),
            request_buffer_bytes: register_int_gauge!(
                "colorgate_request_buffer_bytes",
                "Memory reserved for request bodies being read whole (limits.request_buffer_memory)"
            )
            .expect("register colorgate_request_buffer_bytes"),
        }
    })
}

/// The text exposition of every registered metric. Gauges that mirror
/// gateway state (in flight, health) are read at scrape time rather than
/// kept up to date on the request path, and rebuilt from scratch: after a
/// reload an upstream or server no longer configured must not linger with
/// its last value. (Scrapes are served by the admin service's one thread.)
pub fn render(gw: &crate::gateway::Gateway) -> Vec<u8> {
    let m = get();
    m.inflight.reset();
    m.upstream_healthy.reset();
    let buffered = gw.buffer_memory.in_use();
    m.request_buffer_bytes
        .set(i64::try_from(buffered).unwrap_or(i64::MAX));
    for (name, u) in &gw.upstreams {
        m.inflight
            .with_label_values(&[name])
            .set(u.inflight.current() as i64);
        for b in &u.backends {
            let up = b.healthy.load(std::sync::atomic::Ordering::Relaxed);
            m.upstream_healthy
                .with_label_values(&[name, &b.label])
                .set(i64::from(up));
        }
    }
    use prometheus::Encoder;
    let mut buf = Vec::with_capacity(8192);
    let _ = prometheus::TextEncoder::new().encode(&prometheus::gather(), &mut buf);
    buf
}

/// `colorgate_requests_total` for one route label, with each status's
/// counter looked up once: `with_label_values` hashes both labels and takes
/// the vector's lock on every call, which showed on the request path.
pub struct RequestCounters {
    route: String,
    /// Statuses 100–599, resolved on first use.
    by_status: Box<[OnceLock<IntCounter>]>,
}

impl RequestCounters {
    pub fn new(route: &str) -> RequestCounters {
        RequestCounters {
            route: route.to_string(),
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
        }
    }

    pub fn inc(&self, status: u16) {
        let resolve = || {
            let mut buf = itoa::Buffer::new();
            get()
                .requests
                .with_label_values(&[&self.route, buf.format(status)])
        };
        match self.by_status.get(usize::from(status).wrapping_sub(100)) {
            Some(cell) => cell.get_or_init(resolve).inc(),
            // Status 0 (the client left before an answer) and the odd one.
            None => resolve().inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_counters_are_the_registered_children() {
        let c = RequestCounters::new("/metrics-test/");
        let child = |s: &str| {
            get()
                .requests
                .with_label_values(&["/metrics-test/", s])
                .get()
        };
        c.inc(200);
        c.inc(200);
        c.inc(0);
        c.inc(999);
        assert_eq!(child("200"), 2);
        assert_eq!(child("0"), 1);
        assert_eq!(child("999"), 1);
    }
}
