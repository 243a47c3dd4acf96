//! The admin listener (`server.admin`, loopback by default): `GET /metrics`
//! in Prometheus text format and `GET /status` as a small JSON summary.
//! It is a Pingora service like the proxy, so it is handed over on `-u`.

use crate::gateway::SharedGateway;
use crate::json;
use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Instant, UNIX_EPOCH};

pub struct Admin {
    pub gateway: SharedGateway,
    pub started: Instant,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, ctype, body) =
            match (s.req_header().method.as_str(), s.req_header().uri.path()) {
                ("GET", "/metrics") => (
                    200,
                    "text/plain; version=0.0.4",
                    crate::metrics::render(&self.gateway.load()),
                ),
                ("GET", "/status") => (200, "application/json", self.status().into_bytes()),
                _ => (
                    404,
                    "application/json",
                    b"{\"error\":\"not_found\"}".to_vec(),
                ),
            };
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_default()
    }
}

impl Admin {
    fn status(&self) -> String {
        let gw = self.gateway.load();
        let mut o = String::with_capacity(512);
        o.push_str("{\"version\":");
        json::push_str(&mut o, env!("CARGO_PKG_VERSION"));
        let _ = write!(
            o,
            ",\"uptime_seconds\":{}",
            self.started.elapsed().as_secs()
        );
        o.push_str(",\"config_file\":");
        json::push_str(&mut o, &gw.file.display().to_string());
        let loaded = gw
            .loaded_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let _ = write!(o, ",\"config_loaded_at\":{loaded},\"listeners\":[");
        for (i, l) in gw.process.listeners.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let kind = if l.redirect_https {
                "redirect_https"
            } else if l.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let _ = write!(o, "{{\"address\":\"{}\",\"kind\":\"{kind}\"}}", l.addr);
        }
        o.push_str("],\"upstreams\":{");
        for (i, (name, u)) in gw.upstreams.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            json::push_str(&mut o, name);
            let _ = write!(o, ":{{\"inflight\":{},\"servers\":[", u.inflight.current());
            for (j, b) in u.backends.iter().enumerate() {
                if j > 0 {
                    o.push(',');
                }
                o.push_str("{\"address\":");
                json::push_str(&mut o, &b.label);
                let _ = write!(o, ",\"healthy\":{}}}", b.healthy.load(Ordering::Relaxed));
            }
            o.push_str("]}");
        }
        o.push_str("}}");
        o
    }
}
