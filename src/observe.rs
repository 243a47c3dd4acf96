//! What a finished request leaves behind: a line in the access log
//! (CONTRACT §4, formatted by hand into one buffer) and its counters
//! (CONTRACT §5). Called from `logging`, on every path.

use crate::access_log::{push_rfc3339_millis, AccessLog};
use crate::json;
use pingora_core::protocols::http::ServerSession as HttpSession;
use pingora_proxy::Session;
use std::borrow::Cow;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

/// The parts of a request's context the record needs.
pub struct RequestRecord<'a> {
    pub start: Instant,
    pub request_id: &'a str,
    pub route: Option<&'a str>,
    pub counters: &'a crate::metrics::RequestCounters,
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
    count(r.counters, status, r.deny);
    if r.log {
        log.write_with(|o| write_line(s, &r, status, o));
    }
}

/// Count and log a request Pingora refused while reading its header, so
/// before a route, a method or a URI was known (nginx logs these too):
/// `deny` is `malformed` or `header_timeout`. `peer` is the client as far
/// as we can tell: no header was read to say otherwise.
pub fn record_unreadable(
    gw: &crate::gateway::Gateway,
    peer: Option<IpAddr>,
    request_id: &str,
    (status, deny): (u16, &str),
    bytes_sent: u64,
    log: &AccessLog,
) {
    count(&gw.unrouted, status, Some(deny));
    let fields = LogLine {
        time: SystemTime::now(),
        request_id,
        remote_addr: peer,
        client_ip: peer.filter(|ip| !gw.trusted_proxies.contains(*ip)),
        method: "",
        uri: "",
        route: None,
        status,
        bytes_sent,
        bytes_received: 0,
        request_time: Duration::ZERO,
        upstream_addr: None,
        upstream_status: None,
        upstream_time: None,
        user_id: None,
        auth: "none",
        deny: Some(deny),
        referer: None,
        user_agent: None,
        x_forwarded_for: None,
    };
    log.write_with(|o| fields.write_json(o));
}

/// `colorgate_requests_total` for the answer and, for a refusal,
/// `colorgate_denied_total` for its reason.
fn count(counters: &crate::metrics::RequestCounters, status: u16, deny: Option<&str>) {
    counters.inc(status);
    if let Some(reason) = deny {
        crate::metrics::get()
            .denied
            .with_label_values(&[reason])
            .inc();
    }
}

fn write_line(s: &Session, r: &RequestRecord<'_>, status: u16, o: &mut String) {
    let req = s.req_header();
    let header_len = match s.as_downstream() {
        HttpSession::H1(h1) => h1.get_headers_raw_bytes().len() as u64,
        _ => 0,
    };
    // One pass over the names says which of the three logged headers were
    // sent at all (most requests carry few of them); only those are looked up.
    let xff_name = crate::headers::X_FORWARDED_FOR.name();
    let (mut has_referer, mut has_user_agent, mut has_xff) = (false, false, false);
    for name in req.headers.keys() {
        has_referer |= name == http::header::REFERER;
        has_user_agent |= name == http::header::USER_AGENT;
        has_xff |= name == xff_name;
    }
    // Every line of a repeated header, as nginx 1.23+ logs them.
    let header = |sent: bool, name: &http::HeaderName| {
        if sent {
            crate::client_ip::all_lines(&req.headers, name)
        } else {
            None
        }
    };
    let fields = LogLine {
        time: SystemTime::now(),
        request_id: r.request_id,
        remote_addr: s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
        client_ip: r.client_ip,
        method: req.method.as_str(),
        uri: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        route: r.route,
        status,
        // nginx's $bytes_sent: header and body. HTTP/2 headers are
        // compressed frames that Pingora does not count: body only there.
        bytes_sent: (s.header_bytes_sent().unwrap_or(0) + s.body_bytes_sent()) as u64,
        bytes_received: header_len + r.bytes_received,
        request_time: r.start.elapsed(),
        upstream_addr: r.upstream_addr,
        upstream_status: r.upstream_status,
        upstream_time: r.upstream_time,
        user_id: r.user,
        auth: r.auth,
        deny: r.deny,
        referer: header(has_referer, &http::header::REFERER),
        user_agent: header(has_user_agent, &http::header::USER_AGENT),
        x_forwarded_for: header(has_xff, xff_name),
    };
    fields.write_json(o);
}

/// Everything one access-log line says, as plain values (CONTRACT §4).
pub struct LogLine<'a> {
    pub time: SystemTime,
    pub request_id: &'a str,
    pub remote_addr: Option<IpAddr>,
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    /// Path and query, as received.
    pub uri: &'a str,
    pub route: Option<&'a str>,
    pub status: u16,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub request_time: Duration,
    pub upstream_addr: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub upstream_time: Option<Duration>,
    pub user_id: Option<&'a str>,
    pub auth: &'a str,
    pub deny: Option<&'a str>,
    pub referer: Option<Cow<'a, [u8]>>,
    pub user_agent: Option<Cow<'a, [u8]>>,
    pub x_forwarded_for: Option<Cow<'a, [u8]>>,
}

impl LogLine<'_> {
    /// Append the line as one JSON object, without a newline.
    pub fn write_json(&self, o: &mut String) {
        o.push_str("{\"time\":\"");
        push_rfc3339_millis(o, self.time);
        o.push_str("\",\"request_id\":");
        json::push_str(o, self.request_id);
        o.push_str(",\"remote_addr\":");
        push_ip(o, self.remote_addr);
        o.push_str(",\"client_ip\":");
        push_ip(o, self.client_ip);
        o.push_str(",\"method\":");
        json::push_str(o, self.method);
        o.push_str(",\"uri\":");
        json::push_str(o, self.uri);
        o.push_str(",\"route\":");
        json::push_opt(o, self.route);
        o.push_str(",\"status\":");
        json::push_u64(o, self.status.into());
        o.push_str(",\"bytes_sent\":");
        json::push_u64(o, self.bytes_sent);
        o.push_str(",\"bytes_received\":");
        json::push_u64(o, self.bytes_received);
        o.push_str(",\"request_time\":");
        json::push_secs_millis(o, self.request_time);
        o.push_str(",\"upstream_addr\":");
        json::push_opt(o, self.upstream_addr);
        o.push_str(",\"upstream_status\":");
        match self.upstream_status {
            Some(st) => json::push_u64(o, st.into()),
            None => o.push_str("null"),
        }
        o.push_str(",\"upstream_time\":");
        match self.upstream_time {
            Some(t) => json::push_secs_millis(o, t),
            None => o.push_str("null"),
        }
        o.push_str(",\"user_id\":");
        json::push_opt(o, self.user_id);
        o.push_str(",\"auth\":");
        json::push_str(o, self.auth);
        o.push_str(",\"deny\":");
        json::push_opt(o, self.deny);
        for (key, value) in [
            (",\"referer\":", &self.referer),
            (",\"user_agent\":", &self.user_agent),
            (",\"x_forwarded_for\":", &self.x_forwarded_for),
        ] {
            o.push_str(key);
            match value {
                Some(v) => json::push_bytes(o, v),
                None => o.push_str("null"),
            }
        }
        o.push('}');
    }
}

fn push_ip(o: &mut String, ip: Option<IpAddr>) {
    match ip {
        Some(ip) => json::push_ip(o, ip),
        None => o.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_every_contract_field() {
        let line = LogLine {
            time: SystemTime::UNIX_EPOCH,
            request_id: "abc",
            remote_addr: Some("203.0.113.7".parse().unwrap()),
            client_ip: None,
            method: "POST",
            uri: "/api/colorize?x=\"1\"",
            route: Some("/api/colorize"),
            status: 200,
            bytes_sent: 5,
            bytes_received: 7,
            request_time: Duration::from_millis(812),
            upstream_addr: Some("127.0.0.1:7860"),
            upstream_status: Some(200),
            upstream_time: None,
            user_id: Some("u"),
            auth: "ok",
            deny: None,
            referer: None,
            user_agent: Some(Cow::Borrowed(b"curl/8.5")),
            x_forwarded_for: None,
        };
        let mut o = String::new();
        line.write_json(&mut o);
        let v: serde_json::Value = serde_json::from_str(&o).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 20);
        assert_eq!(v["uri"], "/api/colorize?x=\"1\"");
        assert_eq!(v["request_time"], 0.812);
        assert_eq!(v["client_ip"], serde_json::Value::Null);
        assert_eq!(v["user_agent"], "curl/8.5");
    }
}
