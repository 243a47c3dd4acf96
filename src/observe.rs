//! What a finished request leaves behind: a line in the access log
//! (CONTRACT §4, formatted by hand into one buffer) and its counters
//! (CONTRACT §5). Called from `logging`, on every path.

use crate::access_log::{push_rfc3339_millis, AccessLog};
use crate::json;
use pingora_core::protocols::http::ServerSession as HttpSession;
use pingora_proxy::Session;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

/// The parts of a request's context the record needs.
pub struct RequestRecord<'a> {
    pub start: Instant,
    pub request_id: &'a str,
    pub route: Option<&'a str>,
    pub log: bool,
    pub client_ip: Option<IpAddr>,
    pub user: Option<&'a str>,
    pub auth: &'a str,
    pub deny: Option<&'a str>,
    pub upstream_addr: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub upstream_time: Option<Duration>,
    pub bytes_received: u64,
}

pub fn record(s: &Session, r: RequestRecord<'_>, status: u16, log: &AccessLog) {
    let m = crate::metrics::get();
    let mut status_buf = itoa::Buffer::new();
    let status_str = status_buf.format(status);
    m.requests
        .with_label_values(&[r.route.unwrap_or(""), status_str])
        .inc();
    if let Some(reason) = r.deny {
        m.denied.with_label_values(&[reason]).inc();
    }
    if r.log {
        log.write(line(s, &r, status));
    }
}

fn line(s: &Session, r: &RequestRecord<'_>, status: u16) -> String {
    let req = s.req_header();
    let header_len = match s.as_downstream() {
        HttpSession::H1(h1) => h1.get_headers_raw_bytes().len() as u64,
        _ => 0,
    };
    let mut o = String::with_capacity(512);
    o.push_str("{\"time\":\"");
    push_rfc3339_millis(&mut o, SystemTime::now());
    o.push_str("\",\"request_id\":");
    json::push_str(&mut o, r.request_id);
    o.push_str(",\"remote_addr\":");
    match s.client_addr().and_then(|a| a.as_inet()) {
        Some(a) => {
            let _ = write!(o, "\"{}\"", a.ip());
        }
        None => o.push_str("null"),
    }
    o.push_str(",\"client_ip\":");
    match r.client_ip {
        Some(ip) => {
            let _ = write!(o, "\"{ip}\"");
        }
        None => o.push_str("null"),
    }
    o.push_str(",\"method\":");
    json::push_str(&mut o, req.method.as_str());
    o.push_str(",\"uri\":");
    json::push_str(&mut o, req.uri.path_and_query().map_or("/", |p| p.as_str()));
    o.push_str(",\"route\":");
    json::push_opt(&mut o, r.route);
    let _ = write!(
        o,
        ",\"status\":{status},\"bytes_sent\":{},\"bytes_received\":{},\"request_time\":{:.3}",
        s.body_bytes_sent(),
        header_len + r.bytes_received,
        r.start.elapsed().as_secs_f64()
    );
    o.push_str(",\"upstream_addr\":");
    json::push_opt(&mut o, r.upstream_addr);
    o.push_str(",\"upstream_status\":");
    match r.upstream_status {
        Some(st) => {
            let _ = write!(o, "{st}");
        }
        None => o.push_str("null"),
    }
    o.push_str(",\"upstream_time\":");
    match r.upstream_time {
        Some(t) => {
            let _ = write!(o, "{:.3}", t.as_secs_f64());
        }
        None => o.push_str("null"),
    }
    o.push_str(",\"user_id\":");
    json::push_opt(&mut o, r.user);
    o.push_str(",\"auth\":");
    json::push_str(&mut o, r.auth);
    o.push_str(",\"deny\":");
    json::push_opt(&mut o, r.deny);
    for (key, name) in [
        ("referer", "referer"),
        ("user_agent", "user-agent"),
        ("x_forwarded_for", "x-forwarded-for"),
    ] {
        let _ = write!(o, ",\"{key}\":");
        // Every line of a repeated header, as nginx 1.23+ logs them.
        let mut values = req.headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => o.push_str("null"),
            (Some(v), None) => json::push_bytes(&mut o, v.as_bytes()),
            (Some(first), Some(second)) => {
                let mut joined = first.as_bytes().to_vec();
                for v in std::iter::once(second).chain(values) {
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(v.as_bytes());
                }
                json::push_bytes(&mut o, &joined);
            }
        }
    }
    o.push('}');
    o
}
