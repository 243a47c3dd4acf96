//! Observability, end to end against the real binary: the JSON access log
//! (CONTRACT §4) line by line for a 200, 401, 403, 413 and 429 (and 404,
//! 502, upstream answers, trusted proxies, hostile header bytes); tokens kept
//! out of every log; `access_log: false`; SIGUSR1 reopen after a rename with
//! nothing lost; `path: "-"`; the flush on SIGTERM and SIGINT and in `-d`
//! mode; `access_log.path` changed by SIGHUP; the Prometheus metrics of
//! CONTRACT §5 moving as requests are made; SIGHUP reload counters; and the
//! admin listener's `/status` and 404s.
//!
//! Log lines are written by a thread that wakes every 20 ms: every wait here
//! is a bounded poll (`wait_access_log`, `eventually`, `wait_metric`).

mod common;

use common::{config, GatewayConfig, Response, Upstream, IO_TIMEOUT};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a log line or a counter may take to show up after its response.
const SETTLE: Duration = Duration::from_secs(5);

/// Every field of CONTRACT §4's access-log line.
const FIELDS: [&str; 20] = [
    "time",
    "request_id",
    "remote_addr",
    "client_ip",
    "method",
    "uri",
    "route",
    "status",
    "bytes_sent",
    "bytes_received",
    "request_time",
    "upstream_addr",
    "upstream_status",
    "upstream_time",
    "user_id",
    "auth",
    "deny",
    "referer",
    "user_agent",
    "x_forwarded_for",
];

// ---------------------------------------------------------------------------
// The access log
// ---------------------------------------------------------------------------

#[test]
fn log_lines_of_a_200_401_403_413_and_429_carry_every_contract_field() {
    let upstream = Upstream::start();
    let (cfg, token) = checks_config(&upstream);
    let gw = cfg.start();
    let bearer = format!("Bearer {token}");
    let ua = r#"probe/1.0 "quoted" back\slash"#;

    let before = SystemTime::now();
    // 200: through JWT, with a query string and the three logged headers.
    let ok = gw.request(
        "GET",
        "/private/item?color=1&size=2",
        &[
            ("Authorization", &bearer),
            ("Referer", "https://example.com/page?x=1"),
            ("User-Agent", ua),
            ("X-Forwarded-For", "198.51.100.7"),
        ],
        b"",
    );
    assert_eq!(ok.status, 200, "{}", ok.body_str());
    // 200 with a request body: bytes_received counts it.
    let post = gw.request("POST", "/echo", &[], &[b'p'; 700]);
    assert_eq!(post.status, 200);
    // 401: no token, then a token that is not one.
    let missing = gw.get("/private/item");
    assert_eq!(missing.status, 401);
    let invalid = gw.request(
        "GET",
        "/private/item",
        &[("Authorization", "Bearer not-a-token.ZZZQQQ.XXXWWW")],
        b"",
    );
    assert_eq!(invalid.status, 401);
    // 403: the client (127.0.0.1) is not in 10.0.0.0/8.
    let forbidden = gw.get("/closed/x");
    assert_eq!(forbidden.status, 403);
    // 413: 2k over a 1k limit, with a valid token (so user_id is known).
    let big = gw.request(
        "POST",
        "/private/upload",
        &[("Authorization", &bearer)],
        &[b'b'; 2048],
    );
    assert_eq!(big.status, 413);
    // 429: 1r/m, no burst: the first passes, the second is refused.
    let first = gw.get("/limited/a");
    assert_eq!(first.status, 200);
    let limited = gw.get("/limited/b");
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
    let after = SystemTime::now();

    let answered = [
        &ok, &post, &missing, &invalid, &forbidden, &big, &first, &limited,
    ];
    let lines = gw.wait_access_log(answered.len(), SETTLE);
    assert_eq!(lines.len(), answered.len(), "{lines:#?}");
    let by_id = index_by_request_id(&lines);
    for resp in answered {
        let id = request_id(resp);
        let line = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("no log line for request {id}: {lines:#?}"));
        for f in FIELDS {
            assert!(line.get(f).is_some(), "field {f} missing: {line}");
        }
        let t = parse_time(line["time"].as_str().expect("time is a string"));
        assert!(
            t + Duration::from_secs(1) >= before && t <= after + SETTLE,
            "time {} is not now: {line}",
            line["time"]
        );
        assert_eq!(line["status"], resp.status, "{line}");
        assert_eq!(line["remote_addr"], "127.0.0.1", "{line}");
        assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
        let bytes_sent = line["bytes_sent"].as_u64().expect("bytes_sent");
        assert!(bytes_sent >= resp.body.len() as u64, "{line}");
        assert!(line["bytes_received"].as_u64().expect("bytes_received") > 0);
        let request_time = line["request_time"].as_f64().expect("request_time");
        assert!((0.0..10.0).contains(&request_time), "{line}");
        if resp.status != 200 {
            // Refused before the upstream was contacted.
            for f in ["upstream_addr", "upstream_status", "upstream_time"] {
                assert!(line[f].is_null(), "{f} set on a refusal: {line}");
            }
            assert!(
                line["deny"].is_string(),
                "a refusal names its check: {line}"
            );
        } else {
            assert_eq!(line["upstream_addr"], upstream.addr(), "{line}");
            assert_eq!(line["upstream_status"], 200, "{line}");
            let ut = line["upstream_time"].as_f64().expect("upstream_time");
            assert!(ut >= 0.0 && ut <= request_time + 0.0015, "{line}");
            assert!(line["deny"].is_null(), "{line}");
        }
    }

    let ok_line = &by_id[request_id(&ok).as_str()];
    assert_eq!(ok_line["method"], "GET");
    assert_eq!(ok_line["uri"], "/private/item?color=1&size=2");
    assert_eq!(ok_line["route"], "/private");
    assert_eq!(ok_line["user_id"], "u");
    assert_eq!(ok_line["auth"], "ok");
    assert_eq!(ok_line["referer"], "https://example.com/page?x=1");
    assert_eq!(ok_line["user_agent"], ua);
    assert_eq!(ok_line["x_forwarded_for"], "198.51.100.7");
    // Header and body (exact to the byte: bytes_sent_is_the_header_and_…).
    assert!(ok_line["bytes_sent"].as_u64().unwrap() > ok.body.len() as u64);

    let post_line = &by_id[request_id(&post).as_str()];
    assert_eq!(post_line["method"], "POST");
    assert_eq!(post_line["route"], "/");
    assert_eq!(post_line["auth"], "none");
    assert!(post_line["user_id"].is_null());
    assert!(
        post_line["bytes_received"].as_u64().unwrap() > 700,
        "{post_line}"
    );

    let missing_line = &by_id[request_id(&missing).as_str()];
    assert_eq!(missing_line["uri"], "/private/item");
    assert_eq!(missing_line["route"], "/private");
    assert_eq!(missing_line["auth"], "missing");
    assert!(missing_line["user_id"].is_null());
    for f in ["referer", "x_forwarded_for", "user_agent"] {
        assert!(missing_line[f].is_null(), "{f} not sent: {missing_line}");
    }
    let invalid_line = &by_id[request_id(&invalid).as_str()];
    assert_eq!(invalid_line["auth"], "invalid");
    assert_eq!(invalid_line["deny"], missing_line["deny"]);

    let forbidden_line = &by_id[request_id(&forbidden).as_str()];
    assert_eq!(forbidden_line["route"], "/closed");
    assert_eq!(forbidden_line["deny"], "allowlist");
    assert_eq!(forbidden_line["auth"], "none");

    let big_line = &by_id[request_id(&big).as_str()];
    assert_eq!(big_line["method"], "POST");
    assert_eq!(big_line["deny"], "body_size");
    assert_eq!(big_line["auth"], "ok");
    assert_eq!(big_line["user_id"], "u");

    let first_line = &by_id[request_id(&first).as_str()];
    assert_eq!(first_line["route"], "/limited");
    let limited_line = &by_id[request_id(&limited).as_str()];
    assert_eq!(limited_line["uri"], "/limited/b");
    assert_eq!(limited_line["deny"], "rate_limit:one");
    assert_eq!(limited_line["auth"], "none");
}

#[test]
fn a_token_never_appears_in_the_access_log_or_stderr() {
    let upstream = Upstream::start();
    let (cfg, token) = checks_config(&upstream);
    let cfg = cfg
        .section(
            "upstreams",
            &format!(
                "app:\n  servers: [\"{}\"]\n  connect_timeout: 2s\n  read_timeout: 5s\n\
                 down:\n  servers: [\"{}\"]\n  connect_timeout: 1s",
                upstream.addr(),
                common::unreachable_addr()
            ),
        )
        .routes(&format!(
            "- path: /dead\n  upstream: down\n  auth: jwt\n{}",
            CHECK_ROUTES
        ));
    let gw = cfg.start();
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];

    // Every path a token can take: accepted, proxied with a body, refused by
    // size, by rate, by an upstream that is down, and an expired-looking one.
    let statuses = [
        gw.request("GET", "/private/a?q=1", &auth, b"").status,
        gw.request("POST", "/private/b", &auth, b"{\"x\":1}").status,
        gw.request("POST", "/private/c", &auth, &[b'b'; 2048])
            .status,
        gw.request("GET", "/limited/1", &auth, b"").status,
        gw.request("GET", "/limited/2", &auth, b"").status,
        gw.request("GET", "/dead/x", &auth, b"").status,
        gw.request(
            "GET",
            "/private/d",
            &[("Authorization", &format!("bearer {token}x"))],
            b"",
        )
        .status,
    ];
    assert_eq!(statuses, [200, 200, 413, 200, 429, 502, 401]);
    gw.wait_access_log(statuses.len(), SETTLE);
    let mut gw = gw;
    gw.stop();

    let log = std::fs::read_to_string(gw.dir().join("access.log")).unwrap();
    let stderr = gw.stderr();
    let stdout = gw.stdout();
    for (name, text) in [
        ("access log", &log),
        ("stderr", &stderr),
        ("stdout", &stdout),
    ] {
        assert!(
            !text.contains(&token),
            "the token is in the {name}:\n{text}"
        );
        // Nor any telling part of it (the payload and the signature).
        for part in token.split('.').skip(1) {
            assert!(
                !text.contains(part),
                "part of the token is in the {name}:\n{text}"
            );
        }
    }
    assert!(
        !log.contains("Bearer") && !log.contains("bearer"),
        "an Authorization value is in the access log:\n{log}"
    );
}

#[test]
fn routes_with_access_log_false_are_not_logged() {
    let upstream = Upstream::start();
    let gw = config(&upstream)
        .routes(
            "- path: /health\n  match: exact\n  upstream: app\n  auth: none\n  access_log: false\n\
             - path: /\n  upstream: app\n  auth: none",
        )
        .start();

    for _ in 0..3 {
        assert_eq!(gw.get("/health").status, 200);
    }
    // The writer keeps order: once a later request's line is there, an
    // earlier one would be too.
    let marker = gw.get("/after-health");
    assert_eq!(marker.status, 200);
    let lines = gw.wait_access_log(1, SETTLE);
    assert_eq!(
        upstream.requests().len(),
        4,
        "the health checks were proxied"
    );
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["uri"], "/after-health");
    assert_eq!(lines[0]["request_id"], request_id(&marker));

    // Not logged, but still counted.
    let m = wait_metric(
        &gw,
        "colorgate_requests_total",
        &[("route", "/health"), ("status", "200")],
        3.0,
    );
    assert_eq!(m, 3.0);
}

#[test]
fn a_jwt_route_refused_before_the_token_check_does_not_log_auth_none() {
    let upstream = Upstream::start();
    let (cfg, token) = checks_config(&upstream);
    let gw = cfg
        .routes("- path: /guarded\n  upstream: app\n  auth: jwt\n  allowlist: true")
        .start();

    let resp = gw.request(
        "GET",
        "/guarded/x",
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    );
    assert_eq!(resp.status, 403);
    let lines = gw.wait_access_log(1, SETTLE);
    assert_eq!(lines[0]["deny"], "allowlist");
    assert_ne!(lines[0]["auth"], "none", "{}", lines[0]);
}

#[test]
fn an_unmatched_request_is_logged_with_a_null_route() {
    let upstream = Upstream::start();
    let gw = config(&upstream)
        .routes("- path: /only\n  upstream: app\n  auth: none")
        .start();

    let resp = gw.get("/elsewhere?a=b");
    assert_eq!(resp.status, 404);

    let line = only_line_for(&gw, &resp);
    assert_eq!(line["uri"], "/elsewhere?a=b");
    assert!(line["route"].is_null(), "{line}");
    assert!(line["upstream_addr"].is_null(), "{line}");
    assert!(upstream.requests().is_empty());
}

#[test]
fn a_request_pingora_cannot_read_is_logged_and_counted_as_malformed() {
    let upstream = Upstream::start();
    let gw = config(&upstream).start();

    let resp = gw.raw(b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(resp.status, 400);

    let line = only_line_for(&gw, &resp);
    assert_eq!(line["deny"], "malformed");
    assert_eq!(line["remote_addr"], "127.0.0.1");
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!(line["bytes_sent"], resp.body.len());
    assert!(line["route"].is_null(), "{line}");
    assert!(upstream.requests().is_empty());
    assert_eq!(
        wait_metric(
            &gw,
            "colorgate_denied_total",
            &[("reason", "malformed")],
            1.0
        ),
        1.0
    );
    let text = scrape(&gw);
    let labels = [("route", ""), ("status", "400")];
    assert_eq!(
        metric(&text, "colorgate_requests_total", &labels),
        Some(1.0)
    );
}

#[test]
fn a_header_that_trickles_in_is_cut_off_at_the_header_timeout_and_logged_as_408() {
    // A slowloris: each byte comes well within any per-read timeout, the
    // header never ends. nginx's client_header_timeout bounds the whole header.
    let upstream = Upstream::start();
    let gw = config(&upstream)
        .section("limits", "header_timeout: 1s")
        .start();

    let mut conn = gw.conn();
    conn.write(b"GET /trickle HTTP/1.1\r\nHost: a\r\n");
    let sent = conn.trickle_header(50);
    assert!(
        sent.is_some(),
        "still open after 5 s of a 1 s header timeout"
    );

    let lines = gw.wait_access_log(1, SETTLE);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], 408);
    assert_eq!(lines[0]["deny"], "header_timeout");
    assert_eq!(lines[0]["bytes_sent"], 0);
    assert!(lines[0]["route"].is_null(), "{}", lines[0]);
    assert!(upstream.requests().is_empty());
    assert_eq!(
        wait_metric(
            &gw,
            "colorgate_denied_total",
            &[("reason", "header_timeout")],
            1.0
        ),
        1.0
    );
    let labels = [("route", ""), ("status", "408")];
    assert_eq!(
        metric(&scrape(&gw), "colorgate_requests_total", &labels),
        Some(1.0)
    );
}

#[test]
fn on_a_kept_alive_connection_the_header_timeout_starts_with_the_header() {
    // The wait between two requests is the keep-alive timeout's; the next
    // header then has the whole header timeout. A new connection that sends
    // nothing is closed at the header timeout, and is not a request.
    let upstream = Upstream::start();
    let gw = config(&upstream)
        .section("limits", "header_timeout: 1s\nkeepalive_timeout: 30s")
        .start();

    let mut idle = gw.conn();
    let mut conn = gw.conn();
    assert_eq!(conn.send("GET", "/first", &[], b"").status, 200);
    assert!(
        idle.peer_closed(Duration::from_secs(5)),
        "a connection that sent nothing outlived the header timeout"
    );
    // Idle longer than the header timeout, within the keep-alive timeout.
    assert!(!conn.peer_closed(Duration::from_millis(1500)));
    assert_eq!(conn.send("GET", "/second", &[], b"").status, 200);

    conn.write(b"GET /third HTTP/1.1\r\nHost: a\r\n");
    assert!(conn.trickle_header(50).is_some());
    let lines = gw.wait_access_log(3, SETTLE);
    let seen: Vec<_> = lines
        .iter()
        .map(|l| (l["uri"].as_str().unwrap_or(""), l["status"].as_u64()))
        .collect();
    assert_eq!(
        seen,
        [
            ("/first", Some(200)),
            ("/second", Some(200)),
            ("", Some(408))
        ],
        "the idle connection is not logged"
    );
    assert_eq!(upstream.requests().len(), 2);
}

#[test]
fn behind_a_trusted_proxy_client_ip_and_request_id_come_from_its_headers() {
    let upstream = Upstream::start();
    let gw = config(&upstream)
        .section("access", "trusted_proxies: [127.0.0.1]")
        .start();

    let resp = gw.request(
        "GET",
        "/via-proxy",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Request-Id", "edge-id-0001"),
        ],
        b"",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-request-id"), Some("edge-id-0001"));

    let lines = gw.wait_access_log(1, SETTLE);
    let line = &lines[0];
    assert_eq!(line["request_id"], "edge-id-0001");
    assert_eq!(line["remote_addr"], "127.0.0.1", "the peer: {line}");
    assert_eq!(line["client_ip"], "203.0.113.9", "the client: {line}");
    assert_eq!(line["x_forwarded_for"], "203.0.113.9", "{line}");
}

#[test]
fn a_repeated_x_forwarded_for_is_logged_whole() {
    let upstream = Upstream::start();
    let gw = config(&upstream).start();

    let resp = gw.request(
        "GET",
        "/two-proxies",
        &[
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-For", "198.51.100.2, 198.51.100.3"),
        ],
        b"",
    );
    assert_eq!(resp.status, 200);

    let lines = gw.wait_access_log(1, SETTLE);
    assert_eq!(
        lines[0]["x_forwarded_for"], "198.51.100.1, 198.51.100.2, 198.51.100.3",
        "{}",
        lines[0]
    );
}

#[test]
fn an_untrusted_clients_request_id_is_not_logged_as_the_request_id() {
    let upstream = Upstream::start();
    let gw = config(&upstream).start();

    let resp = gw.request("GET", "/x", &[("X-Request-Id", "chosen-by-client")], b"");
    assert_eq!(resp.status, 200);
    let id = request_id(&resp);
    assert_ne!(id, "chosen-by-client");

    let lines = gw.wait_access_log(1, SETTLE);
    assert_eq!(lines[0]["request_id"], id.as_str());
}

/// `bytes_sent` is every byte the client received, header included, as
/// nginx's `$bytes_sent` is: for a proxied answer and for a refusal.
#[test]
fn bytes_sent_is_the_header_and_the_body_as_they_went_on_the_wire() {
    let upstream = Upstream::start();
    let gw = config(&upstream).start();

    let mut received = HashMap::new();
    for (path, status) in [("/x", " 200 "), ("/a/../../x", " 400 ")] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let raw = gw.raw_answer(req.as_bytes());
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with("HTTP/1.1") && text.contains(status),
            "{text}"
        );
        let id = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("x-request-id"))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| panic!("no request id: {text}"));
        received.insert(id, raw.len() as u64);
    }

    let lines = gw.wait_access_log(2, SETTLE);
    for line in &lines {
        let id = line["request_id"].as_str().unwrap();
        assert_eq!(line["bytes_sent"], received[id], "{line}");
    }
}

#[test]
fn hostile_bytes_in_headers_and_uri_still_make_one_valid_json_line_each() {
    let upstream = Upstream::start();
    let gw = config(&upstream).start();

    // (A raw `"` in the request line is refused by Pingora's parser before
    // colorgate sees the request, so the URI carries only a backslash.)
    let mut req = format!(
        "GET /q?b=\\&c=%22 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
        gw.port()
    )
    .into_bytes();
    req.extend_from_slice(b"User-Agent: tab\there \"q\" \\ \xe8\xaf\xb7 \xff\xfe end\r\n");
    req.extend_from_slice(b"Referer: {\"not\":\"json\"}\r\n");
    req.extend_from_slice(b"\r\n");
    let resp = gw.raw(&req);
    assert_eq!(resp.status, 200, "{resp:?}");

    let marker = gw.get("/marker");
    // Every line must parse (wait_access_log panics otherwise) and there
    // must be exactly two of them: an unescaped newline would make more.
    let lines = gw.wait_access_log(2, SETTLE);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let line = lines
        .iter()
        .find(|l| l["request_id"] == request_id(&resp).as_str())
        .expect("a line for the hostile request");
    assert_eq!(line["uri"], "/q?b=\\&c=%22");
    assert_eq!(line["referer"], "{\"not\":\"json\"}");
    let ua = line["user_agent"].as_str().unwrap();
    assert!(ua.starts_with("tab\there \"q\" \\ 请 "), "{ua:?}");
    assert!(ua.ends_with(" end"), "{ua:?}");
    assert!(lines
        .iter()
        .any(|l| l["request_id"] == request_id(&marker).as_str()));
}

#[test]
fn upstream_answers_are_logged_apart_from_gateway_answers() {
    let upstream = Upstream::start();
    let down = common::unreachable_addr();
    let gw = config(&upstream)
        .section(
            "upstreams",
            &format!(
                "app:\n  servers: [\"{}\"]\n  connect_timeout: 2s\n  read_timeout: 5s\n\
                 down:\n  servers: [\"{down}\"]\n  connect_timeout: 1s",
                upstream.addr()
            ),
        )
        .routes(
            "- path: /dead\n  upstream: down\n  auth: none\n\
             - path: /app\n  upstream: app\n  auth: none",
        )
        .start();

    let from_upstream = gw.get("/app/status/404");
    assert_eq!(from_upstream.status, 404);
    let unrouted = gw.get("/nowhere");
    assert_eq!(unrouted.status, 404);
    let bad_gateway = gw.get("/dead/x");
    assert_eq!(bad_gateway.status, 502);
    let big = gw.get("/app/big/300000");
    assert_eq!(big.body.len(), 300_000);

    let lines = gw.wait_access_log(4, SETTLE);
    let by_id = index_by_request_id(&lines);
    let l = by_id[request_id(&from_upstream).as_str()];
    assert_eq!(l["route"], "/app");
    assert_eq!(l["upstream_status"], 404);
    assert_eq!(l["upstream_addr"], upstream.addr());
    assert!(l["upstream_time"].is_number(), "{l}");
    assert!(l["deny"].is_null(), "{l}");
    let l = by_id[request_id(&unrouted).as_str()];
    assert!(l["route"].is_null(), "{l}");
    assert!(l["upstream_status"].is_null(), "{l}");
    let l = by_id[request_id(&bad_gateway).as_str()];
    assert_eq!(l["status"], 502);
    assert_eq!(l["route"], "/dead");
    assert_eq!(
        l["upstream_addr"],
        down.as_str(),
        "the server it tried: {l}"
    );
    assert!(l["upstream_status"].is_null(), "{l}");
    let l = by_id[request_id(&big).as_str()];
    let sent = l["bytes_sent"].as_u64().unwrap();
    // The body, every byte, and a header.
    assert!((300_000 + 50..300_000 + 1_000).contains(&sent), "{l}");
}

#[test]
fn a_streamed_body_over_the_limit_is_logged_as_a_413_body_size() {
    let upstream = Upstream::start();
    let gw = config(&upstream)
        .section("limits", "max_body_size: 1k")
        .start();
    let text = scrape(&gw);
    let before = metric(&text, "colorgate_denied_total", &[("reason", "body_size")]).unwrap_or(0.0);

    let resp = gw.request(
        "POST",
        "/stream",
        &[("Transfer-Encoding", "chunked")],
        &common::chunked(&[b's'; 4096], 512),
    );
    assert_eq!(resp.status, 413);

    let lines = gw.wait_access_log(1, SETTLE);
    let line = &lines[0];
    assert_eq!(line["request_id"], request_id(&resp).as_str());
    assert_eq!(line["status"], 413);
    assert_eq!(line["deny"], "body_size");
    assert!(line["upstream_status"].is_null(), "{line}");
    assert_eq!(
        wait_metric(
            &gw,
            "colorgate_denied_total",
            &[("reason", "body_size")],
            before + 1.0
        ),
        before + 1.0
    );
}

#[test]
fn sigint_still_flushes_the_lines_of_answered_requests() {
    let upstream = Upstream::start();
    let mut gw = config(&upstream).server("grace_period", "0s").start();

    let ids: Vec<String> = {
        let mut conn = gw.conn();
        (0..50)
            .map(|i| request_id(&conn.send("GET", &format!("/fast/{i}"), &[], b"")))
            .collect()
    };
    gw.signal(libc::SIGINT);
    gw.wait_exit(Duration::from_secs(15))
        .expect("exited after SIGINT");
    let lines = gw.access_log_lines();
    let logged: HashSet<&str> = lines
        .iter()
        .filter_map(|l| l["request_id"].as_str())
        .collect();
    let lost: Vec<&String> = ids
        .iter()
        .filter(|id| !logged.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} lines lost: {lost:?}",
        lost.len(),
        ids.len()
    );
}

#[test]
fn sigusr1_after_a_rename_moves_the_log_to_a_new_file_and_loses_nothing() {
    let upstream = Upstream::start();
    let mut gw = config(&upstream).start();
    let log = gw.dir().join("access.log");

    // Background traffic the whole time: every one of these must land in
    // exactly one of the files.
    let stop = Arc::new(AtomicBool::new(false));
    let port = gw.port();
    let hammer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut ids = Vec::new();
            // One kept-alive connection: a new one per request ran the
            // machine out of ephemeral ports under a parallel test run.
            let mut conn = common::Conn::open(port);
            while !stop.load(SeqCst) {
                let r = conn.send("GET", "/hammer", &[], b"");
                assert_eq!(r.status, 200);
                ids.push(request_id(&r));
            }
            ids
        })
    };

    let mut files = Vec::new(); // (rotated file, ids that must be in it)
    let mut next: Vec<String> = (0..10)
        .map(|i| request_id(&gw.get(&format!("/a/{i}"))))
        .collect();
    for round in 1..=2 {
        wait_ids_in(&log, &next);
        let rotated = gw.dir().join(format!("access.log.{round}"));
        std::fs::rename(&log, &rotated).unwrap();
        // After the rename and before the signal: still the old file.
        for i in 0..5 {
            next.push(request_id(&gw.get(&format!("/between/{round}/{i}"))));
        }
        wait_ids_in(&rotated, &next);
        gw.signal(libc::SIGUSR1);
        // The reopen creates the file at the configured path.
        common::eventually(SETTLE, || log.exists().then_some(()));
        files.push((rotated, std::mem::take(&mut next)));
        next = (0..10)
            .map(|i| request_id(&gw.get(&format!("/after/{round}/{i}"))))
            .collect();
    }
    stop.store(true, SeqCst);
    let hammered = hammer.join().unwrap();
    files.push((log.clone(), next));

    let expected: usize = files.iter().map(|(_, ids)| ids.len()).sum::<usize>() + hammered.len();
    let all = common::eventually(SETTLE, || {
        let all: Vec<(usize, Value)> = files
            .iter()
            .enumerate()
            .flat_map(|(i, (p, _))| read_json_lines(p).into_iter().map(move |l| (i, l)))
            .collect();
        (all.len() >= expected).then_some(all)
    });
    assert_eq!(all.len(), expected, "lines in the files vs requests made");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (file, line) in &all {
        let id = line["request_id"].as_str().unwrap().to_string();
        assert!(seen.insert(id, *file).is_none(), "logged twice: {line}");
    }
    for (i, (path, ids)) in files.iter().enumerate() {
        for id in ids {
            assert_eq!(
                seen.get(id),
                Some(&i),
                "request {id} is not in {}",
                path.display()
            );
        }
    }
    for id in &hammered {
        assert!(seen.contains_key(id), "background request {id} was lost");
    }
    assert!(gw.try_status().is_none(), "SIGUSR1 stopped the gateway");
}

#[test]
fn path_dash_writes_the_access_log_to_stdout() {
    let upstream = Upstream::start();
    let gw = config(&upstream)
        .section("access_log", "path: \"-\"")
        .start();

    let ids: Vec<String> = (0..3)
        .map(|i| request_id(&gw.get(&format!("/out/{i}?n={i}"))))
        .collect();

    let lines = common::eventually(SETTLE, || {
        Some(gw.stdout_json_lines()).filter(|l| l.len() >= ids.len())
    });
    assert_eq!(lines.len(), ids.len(), "{}", gw.stdout());
    for (i, id) in ids.iter().enumerate() {
        let line = lines
            .iter()
            .find(|l| l["request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no line for {id}: {lines:#?}"));
        for f in FIELDS {
            assert!(line.get(f).is_some(), "field {f} missing: {line}");
        }
        assert_eq!(line["uri"], format!("/out/{i}?n={i}"));
    }
    assert!(!gw.dir().join("access.log").exists());

    // SIGUSR1 (logrotate) keeps stdout as it is.
    let mut gw = gw;
    gw.signal(libc::SIGUSR1);
    let after = request_id(&gw.get("/out/after-usr1"));
    common::eventually(SETTLE, || {
        let lines = gw.stdout_json_lines();
        lines
            .iter()
            .any(|l| l["request_id"] == after.as_str())
            .then_some(())
    });
    assert!(gw.try_status().is_none());
    assert!(
        !gw.dir().join("-").exists(),
        "\"-\" was taken as a file name"
    );
}

#[test]
fn sigterm_flushes_every_line_including_requests_finished_in_the_grace_period() {
    let upstream = Upstream::start();
    let mut gw = config(&upstream).start();
    let port = gw.port();

    let mut ids: Vec<String> = {
        let mut conn = gw.conn();
        (0..30)
            .map(|i| request_id(&conn.send("GET", &format!("/burst/{i}"), &[], b"")))
            .collect()
    };
    // One still in flight when SIGTERM arrives; answered during the grace period.
    let slow = std::thread::spawn(move || common::http(port, "GET", "/slow/400", &[], b""));
    upstream.wait_for_requests(31, IO_TIMEOUT);
    gw.signal(libc::SIGTERM);
    let slow = slow.join().unwrap();
    assert_eq!(slow.status, 200, "the in-flight request was cut");
    ids.push(request_id(&slow));

    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("exited after SIGTERM");
    assert!(status.success(), "exit status {status}");
    let lines = gw.access_log_lines();
    let logged: HashSet<&str> = lines
        .iter()
        .filter_map(|l| l["request_id"].as_str())
        .collect();
    for id in &ids {
        assert!(
            logged.contains(id.as_str()),
            "request {id} missing after SIGTERM"
        );
    }
    assert_eq!(lines.len(), ids.len());
}

#[test]
fn a_daemonized_gateway_writes_its_access_log_and_flushes_it_on_sigterm() {
    let upstream = Upstream::start();
    let cfg = config(&upstream);
    // `run -d`: the process we spawn forks the daemon and waits for it (and
    // never hears back, see `run_d_returns_once_the_daemon_is_ready`).
    let mut parent = common::Gateway::spawn(&cfg, &["-d"]);
    let mut daemon = Daemon::from_pid_file(&cfg, parent.pid());
    common::eventually(common::READY_TIMEOUT, || {
        std::net::TcpStream::connect(("127.0.0.1", cfg.port)).ok()
    });

    let ids: Vec<String> = (0..5)
        .map(|i| request_id(&common::http(cfg.port, "GET", &format!("/d/{i}"), &[], b"")))
        .collect();
    let read = || read_json_lines(&cfg.path("access.log"));
    let lines = common::eventually(SETTLE, || Some(read()).filter(|l| l.len() >= ids.len()));
    assert_eq!(lines.len(), ids.len());

    let last = request_id(&common::http(cfg.port, "GET", "/d/last", &[], b""));
    assert!(daemon.stop(), "the daemon did not stop on SIGTERM");
    let lines = read();
    assert_eq!(lines.len(), ids.len() + 1);
    assert!(lines.iter().any(|l| l["request_id"] == last.as_str()));
    parent.stop();
}

#[test]
fn run_d_returns_once_the_daemon_is_ready() {
    let upstream = Upstream::start();
    let cfg = config(&upstream);
    let mut parent = common::Gateway::spawn(&cfg, &["-d"]);
    let mut daemon = Daemon::from_pid_file(&cfg, parent.pid());
    let status = parent.wait_exit(common::READY_TIMEOUT);
    daemon.stop();
    let status = status.expect("`run -d` did not return");
    assert!(status.success(), "`run -d` exited with {status}");
}

#[test]
fn a_reload_that_changes_access_log_path_moves_the_log() {
    let upstream = Upstream::start();
    let cfg = config(&upstream);
    let mut gw = cfg.start();
    let first = request_id(&gw.get("/one"));
    gw.wait_access_log(1, SETTLE);

    cfg.clone()
        .section("access_log", "path: {dir}/moved.log")
        .write();
    gw.signal(libc::SIGHUP);
    wait_metric(
        &gw,
        "colorgate_config_reloads_total",
        &[("result", "ok")],
        1.0,
    );
    let second = request_id(&gw.get("/two"));

    let moved = gw.dir().join("moved.log");
    wait_ids_in(&moved, std::slice::from_ref(&second));
    let old: Vec<String> = gw
        .access_log_lines()
        .iter()
        .map(|l| l["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(old, [first]);
    assert_eq!(read_json_lines(&moved).len(), 1);
}

#[test]
fn after_a_reload_to_an_unopenable_log_path_logrotate_still_works() {
    let upstream = Upstream::start();
    let cfg = config(&upstream);
    let mut gw = cfg.start();
    let log = cfg.path("access.log");

    // A typo in the new path: the directory does not exist. Whether the
    // reload is refused or applied, no line may be lost.
    cfg.clone()
        .section("access_log", "path: {dir}/no-such-dir/access.log")
        .write();
    gw.signal(libc::SIGHUP);
    common::eventually(SETTLE, || {
        let text = scrape(&gw);
        let done = metric(&text, "colorgate_config_reloads_total", &[("result", "ok")]).or(metric(
            &text,
            "colorgate_config_reloads_total",
            &[("result", "error")],
        ));
        done.filter(|n| *n >= 1.0)
    });
    let before = vec![request_id(&gw.get("/before-rotation"))];
    wait_ids_in(&log, &before);

    // logrotate: rename, SIGUSR1. The log must move to a new file, not stay
    // in the renamed one (which logrotate compresses or deletes).
    let rotated = cfg.path("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    gw.signal(libc::SIGUSR1);
    let reopened = common::eventually(SETTLE, || {
        let wanted = cfg.path("no-such-dir/access.log");
        [log.clone(), wanted].into_iter().find(|p| p.exists())
    });
    let after = vec![request_id(&gw.get("/after-rotation"))];
    wait_ids_in(&reopened, &after);
    assert_eq!(
        read_json_lines(&rotated).len(),
        1,
        "only the line from before"
    );
}

#[test]
fn check_refuses_an_access_log_path_that_start_up_cannot_open() {
    let upstream = Upstream::start();
    let cfg = config(&upstream).section("access_log", "path: {dir}/no-such-dir/access.log");
    let path = cfg.write();

    let out = common::colorgate(&["check", "-c", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "check accepted it; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("access_log.path"), "{stderr}");
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

#[test]
fn requests_total_and_upstream_seconds_count_each_request_exactly_once() {
    let upstream = Upstream::start();
    let gw = config(&upstream)
        .routes(
            "- path: /health\n  match: exact\n  upstream: app\n  auth: none\n  access_log: false\n\
             - path: /\n  upstream: app\n  auth: none",
        )
        .start();
    let ok = [("route", "/"), ("status", "200")];
    let not_found = [("route", "/"), ("status", "404")];
    let text = scrape(&gw);
    let ok0 = metric(&text, "colorgate_requests_total", &ok).unwrap_or(0.0);
    let nf0 = metric(&text, "colorgate_requests_total", &not_found).unwrap_or(0.0);
    let up0 = metric(&text, "colorgate_upstream_seconds_count", &[]).unwrap_or(0.0);

    for i in 0..7 {
        assert_eq!(gw.get(&format!("/n/{i}")).status, 200);
    }
    for _ in 0..2 {
        assert_eq!(gw.get("/status/404").status, 404);
    }
    assert_eq!(gw.get("/health").status, 200);

    assert_eq!(
        wait_metric(&gw, "colorgate_requests_total", &ok, ok0 + 7.0),
        ok0 + 7.0
    );
    assert_eq!(
        wait_metric(&gw, "colorgate_requests_total", &not_found, nf0 + 2.0),
        nf0 + 2.0
    );
    let text = scrape(&gw);
    assert_eq!(
        metric(
            &text,
            "colorgate_requests_total",
            &[("route", "/health"), ("status", "200")]
        ),
        Some(1.0)
    );
    // One observation per upstream response: 7 + 2 + the health check.
    let up = metric(&text, "colorgate_upstream_seconds_count", &[]).unwrap();
    assert_eq!(up, up0 + 10.0);
    assert!(text.contains("# TYPE colorgate_upstream_seconds histogram"));
    assert_eq!(
        metric(
            &text,
            "colorgate_upstream_seconds_bucket",
            &[("le", "+Inf")]
        ),
        Some(up)
    );
    let sum = metric(&text, "colorgate_upstream_seconds_sum", &[]).unwrap();
    assert!((0.0..10.0 * 5.0).contains(&sum), "sum {sum}");
    assert_eq!(
        metric(&text, "colorgate_access_log_dropped_total", &[]),
        Some(0.0)
    );
}

#[test]
fn denied_total_counts_each_refusal_by_its_reason() {
    let upstream = Upstream::start();
    let (cfg, token) = checks_config(&upstream);
    let gw = cfg.start();
    let bearer = format!("Bearer {token}");
    let text = scrape(&gw);
    assert_eq!(
        metric(&text, "colorgate_denied_total", &[("reason", "allowlist")]),
        None
    );

    assert_eq!(gw.get("/private/x").status, 401);
    assert_eq!(gw.get("/private/y").status, 401);
    assert_eq!(gw.get("/closed/x").status, 403);
    assert_eq!(gw.get("/limited/1").status, 200);
    assert_eq!(gw.get("/limited/2").status, 429);
    assert_eq!(gw.get("/limited/3").status, 429);
    assert_eq!(gw.get("/limited/4").status, 429);
    let big = [("Authorization", bearer.as_str())];
    assert_eq!(
        gw.request("POST", "/private/u", &big, &[b'b'; 2048]).status,
        413
    );
    assert_eq!(gw.request("GET", "/private/ok", &big, b"").status, 200);

    // The 401's reason is whatever the log calls it; the others are fixed.
    let lines = gw.wait_access_log(9, SETTLE);
    let auth_reason = lines
        .iter()
        .find(|l| l["status"] == 401)
        .and_then(|l| l["deny"].as_str())
        .expect("a 401 line with a deny reason")
        .to_string();
    for (reason, n) in [
        (auth_reason.as_str(), 2.0),
        ("allowlist", 1.0),
        ("rate_limit:one", 3.0),
        ("body_size", 1.0),
    ] {
        assert_eq!(
            wait_metric(&gw, "colorgate_denied_total", &[("reason", reason)], n),
            n,
            "colorgate_denied_total{{reason=\"{reason}\"}}"
        );
    }
    let text = scrape(&gw);
    for (route, status, n) in [
        ("/private", "401", 2.0),
        ("/closed", "403", 1.0),
        ("/limited", "429", 3.0),
        ("/limited", "200", 1.0),
        ("/private", "413", 1.0),
        ("/private", "200", 1.0),
    ] {
        assert_eq!(
            metric(
                &text,
                "colorgate_requests_total",
                &[("route", route), ("status", status)]
            ),
            Some(n),
            "requests_total{{route={route},status={status}}}"
        );
    }
    // Refusals never reach the upstream, so they are not observed there.
    assert_eq!(
        metric(&text, "colorgate_upstream_seconds_count", &[]),
        Some(2.0)
    );
}

#[test]
fn inflight_and_upstream_healthy_gauges_reflect_the_upstream() {
    let upstream = Upstream::start();
    let gw = config(&upstream).start();
    let app = [("upstream", "app")];
    let addr = upstream.addr();
    let server = [("upstream", "app"), ("server", addr.as_str())];

    let text = scrape(&gw);
    assert_eq!(
        metric(&text, "colorgate_inflight", &app),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "colorgate_upstream_healthy", &server),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "colorgate_access_log_dropped_total", &[]),
        Some(0.0)
    );
    for name in [
        "colorgate_requests_total counter",
        "colorgate_denied_total counter",
        "colorgate_upstream_seconds histogram",
        "colorgate_upstream_healthy gauge",
        "colorgate_inflight gauge",
        "colorgate_access_log_dropped_total counter",
    ] {
        // Vectors without a sample yet have no TYPE line: only check the ones that do.
        let metric_name = name.split(' ').next().unwrap();
        if text.lines().any(|l| l.starts_with(metric_name)) {
            assert!(text.contains(&format!("# TYPE {name}")), "{name}: {text}");
        }
    }

    let port = gw.port();
    let slow = std::thread::spawn(move || common::http(port, "GET", "/slow/1500", &[], b""));
    upstream.wait_for_requests(1, IO_TIMEOUT);
    let during = metric(&scrape(&gw), "colorgate_inflight", &app);
    assert_eq!(slow.join().unwrap().status, 200);
    assert_eq!(during, Some(1.0));
    let after = common::eventually(SETTLE, || {
        metric(&scrape(&gw), "colorgate_inflight", &app).filter(|v| *v == 0.0)
    });
    assert_eq!(after, 0.0);
}

#[test]
fn sighup_counts_reloads_ok_and_error_and_a_bad_config_keeps_serving() {
    let upstream = Upstream::start();
    let cfg = config(&upstream);
    let mut gw = cfg.start();
    assert_eq!(
        metric(
            &scrape(&gw),
            "colorgate_config_reloads_total",
            &[("result", "ok")]
        ),
        None
    );

    // A good config, with a new route.
    cfg.clone()
        .routes(
            "- path: /new\n  upstream: app\n  auth: none\n- path: /\n  upstream: app\n  auth: none",
        )
        .write();
    gw.signal(libc::SIGHUP);
    wait_metric(
        &gw,
        "colorgate_config_reloads_total",
        &[("result", "ok")],
        1.0,
    );
    assert_eq!(gw.get("/new/x").status, 200);
    let lines = gw.wait_access_log(1, SETTLE);
    assert_eq!(lines[0]["route"], "/new", "the reload was not applied");

    // A broken one: refused, counted, the old config keeps serving.
    std::fs::write(
        cfg.path("colorgate.yaml"),
        cfg.yaml() + "no_such_section: true\nroutes: [\n",
    )
    .unwrap();
    gw.signal(libc::SIGHUP);
    wait_metric(
        &gw,
        "colorgate_config_reloads_total",
        &[("result", "error")],
        1.0,
    );
    let text = scrape(&gw);
    assert_eq!(
        metric(&text, "colorgate_config_reloads_total", &[("result", "ok")]),
        Some(1.0)
    );
    assert!(
        gw.try_status().is_none(),
        "a bad config stopped the gateway"
    );
    let resp = gw.get("/new/y");
    assert_eq!(resp.status, 200);
    let lines = gw.wait_access_log(2, SETTLE);
    assert_eq!(lines[1]["route"], "/new");
    assert_eq!(gw.admin_get("/status").status, 200);
}

#[test]
fn after_a_reload_the_gauges_name_only_the_current_upstreams_and_servers() {
    let first = Upstream::start();
    let second = Upstream::start();
    let cfg = config(&first);
    let mut gw = cfg.start();
    let text = scrape(&gw);
    let old_server = [("upstream", "app"), ("server", &*first.addr())];
    assert_eq!(
        metric(&text, "colorgate_upstream_healthy", &old_server),
        Some(1.0)
    );

    // The upstream is renamed and its server replaced.
    cfg.clone()
        .section(
            "upstreams",
            &format!("gpu:\n  servers: [\"{}\"]", second.addr()),
        )
        .routes("- path: /\n  upstream: gpu\n  auth: none")
        .write();
    gw.signal(libc::SIGHUP);
    wait_metric(
        &gw,
        "colorgate_config_reloads_total",
        &[("result", "ok")],
        1.0,
    );
    assert_eq!(gw.get("/x").status, 200);
    assert_eq!(second.requests().len(), 1);

    let text = scrape(&gw);
    let new_server = [("upstream", "gpu"), ("server", &*second.addr())];
    assert_eq!(
        metric(&text, "colorgate_upstream_healthy", &new_server),
        Some(1.0),
        "{text}"
    );
    // (The request's slot is released just after its response.)
    common::eventually(SETTLE, || {
        metric(&scrape(&gw), "colorgate_inflight", &[("upstream", "gpu")]).filter(|v| *v == 0.0)
    });
    assert_eq!(
        metric(&text, "colorgate_upstream_healthy", &old_server),
        None,
        "a server no longer configured is still reported healthy:\n{text}"
    );
    assert_eq!(
        metric(&text, "colorgate_inflight", &[("upstream", "app")]),
        None,
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// The admin listener
// ---------------------------------------------------------------------------

#[test]
fn status_is_json_with_version_uptime_config_listeners_and_upstreams() {
    let upstream = Upstream::start();
    let cfg = config(&upstream);
    let gw = cfg.start();

    let resp = gw.admin_get("/status");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let s = resp.json();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"), "{s}");
    assert!(
        s["uptime_seconds"].as_f64().is_some_and(|u| u >= 0.0),
        "{s}"
    );
    let file = s["config_file"].as_str().expect("config_file");
    assert_eq!(
        std::fs::canonicalize(file).unwrap(),
        std::fs::canonicalize(cfg.path("colorgate.yaml")).unwrap()
    );
    let listeners = s["listeners"].as_array().expect("listeners");
    assert_eq!(listeners.len(), 1, "{s}");
    assert_eq!(listeners[0]["address"], format!("127.0.0.1:{}", gw.port()));
    let servers = s["upstreams"]["app"]["servers"]
        .as_array()
        .expect("app servers");
    assert_eq!(servers.len(), 1, "{s}");
    assert_eq!(servers[0]["address"], upstream.addr());
    assert_eq!(servers[0]["healthy"], true);
    assert_eq!(s["upstreams"]["app"]["inflight"], 0);
}

#[test]
fn unknown_admin_paths_are_404_and_the_admin_listener_is_not_the_proxy() {
    let upstream = Upstream::start();
    let gw = config(&upstream)
        .routes("- path: /api/\n  upstream: app\n  auth: none")
        .start();

    for path in [
        "/",
        "/nope",
        "/metrics/extra",
        "/statusx",
        "/api/colorize",
        "/api/",
    ] {
        let resp = gw.admin_get(path);
        assert_eq!(resp.status, 404, "admin {path}");
    }
    let post = common::http(gw.admin_port(), "POST", "/metrics", &[], b"x");
    assert_ne!(post.status, 200, "POST /metrics");
    assert!(
        upstream.requests().is_empty(),
        "the admin port proxied a request"
    );
    // And the proxy does not serve the admin's pages: /api/metrics goes upstream.
    let proxied = gw.get("/api/metrics");
    assert_eq!(proxied.status, 200);
    assert_eq!(proxied.json()["ok"], true);
    assert_eq!(gw.get("/metrics").status, 404);
    assert!(!gw.get("/status").body_str().contains("uptime"));
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const CHECK_ROUTES: &str = "\
- path: /health
  match: exact
  upstream: app
  auth: none
  access_log: false
- path: /private
  upstream: app
  auth: jwt
- path: /closed
  upstream: app
  auth: none
  allowlist: true
- path: /limited
  upstream: app
  auth: none
  rate_limits: [one]
- path: /
  upstream: app
  auth: none";

/// A daemon started by `run -d` (not our child: found through the pid file).
/// Stopped when dropped, so a failing test does not leave it behind.
struct Daemon {
    pid: libc::pid_t,
    config: String,
}

impl Daemon {
    /// Waits for the pid file to name a process other than `parent`.
    fn from_pid_file(cfg: &GatewayConfig, parent: u32) -> Daemon {
        let file = cfg.path("colorgate.pid");
        let pid = common::eventually(common::READY_TIMEOUT, || {
            let text = std::fs::read_to_string(&file).ok()?;
            text.trim().parse::<u32>().ok().filter(|p| *p != parent)
        });
        let daemon = Daemon {
            pid: pid as libc::pid_t,
            config: cfg.path("colorgate.yaml").display().to_string(),
        };
        assert!(
            daemon.alive(),
            "pid {pid} from the pid file is not our daemon"
        );
        daemon
    }
    /// Running, and still the colorgate we started (not a recycled pid).
    fn alive(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let running = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'));
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        running && String::from_utf8_lossy(&cmdline).contains(&self.config)
    }
    /// SIGTERM, then SIGKILL after `STOP_TIMEOUT`. True if SIGTERM was enough.
    fn stop(&mut self) -> bool {
        if !self.alive() {
            return true;
        }
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + common::STOP_TIMEOUT;
        while self.alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.alive() {
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            return false;
        }
        true
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A gateway that can answer each refusal of the done-when (401, 403, 413,
/// 429), and a token for user `u` minted with `colorgate token issue`.
fn checks_config(upstream: &Upstream) -> (GatewayConfig, String) {
    let cfg = config(upstream)
        .file("jwt.secret", "observability-test-secret-0123456789\n")
        .section(
            "auth",
            "jwt:\n  algorithms: [HS256]\n  secret_file: {dir}/jwt.secret",
        )
        .section("access", "allowlist: [10.0.0.0/8]")
        .section(
            "rate_limits",
            "one: { rate: 1r/m, burst: 0, nodelay: true }",
        )
        .section("limits", "max_body_size: 1k")
        .routes(CHECK_ROUTES);
    let path = cfg.write();
    let out = common::colorgate(&[
        "token",
        "issue",
        "-c",
        path.to_str().unwrap(),
        "--user",
        "u",
    ]);
    assert!(
        out.status.success(),
        "token issue: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
    (cfg, token)
}

/// The access log's one line, with every field, for `resp`'s request.
fn only_line_for(gw: &common::Gateway, resp: &Response) -> Value {
    let lines = gw.wait_access_log(1, SETTLE);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = lines[0].clone();
    for f in FIELDS {
        assert!(line.get(f).is_some(), "field {f} missing: {line}");
    }
    assert_eq!(line["request_id"], request_id(resp));
    assert_eq!(line["status"], resp.status);
    line
}

fn request_id(resp: &Response) -> String {
    resp.header("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on {resp:?}"))
        .to_string()
}

fn index_by_request_id(lines: &[Value]) -> HashMap<&str, &Value> {
    let mut out = HashMap::new();
    for l in lines {
        let id = l["request_id"].as_str().expect("request_id is a string");
        assert!(out.insert(id, l).is_none(), "request id logged twice: {id}");
    }
    out
}

fn read_json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: line is not JSON ({e}): {l}", path.display()))
        })
        .collect()
}

/// Polls until every id has a line in `path`.
fn wait_ids_in(path: &Path, ids: &[String]) {
    common::eventually(SETTLE, || {
        let lines = read_json_lines(path);
        let have: HashSet<&str> = lines
            .iter()
            .filter_map(|l| l["request_id"].as_str())
            .collect();
        ids.iter()
            .all(|id| have.contains(id.as_str()))
            .then_some(())
    });
}

/// `2026-11-26T20:01:02.123Z` exactly (UTC, milliseconds), as a time.
fn parse_time(s: &str) -> SystemTime {
    let b = s.as_bytes();
    let shape_ok = b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    assert!(shape_ok, "time {s:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ");
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (hh, mm, ss, ms) = (n(11..13), n(14..16), n(17..19), n(20..23));
    assert!((1..=12).contains(&m) && (1..=31).contains(&d) && hh < 24 && mm < 60 && ss < 60);
    // days_from_civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let millis = ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000 + ms) as u64;
    UNIX_EPOCH + Duration::from_millis(millis)
}

/// GET /metrics on the admin port: 200, Prometheus text.
fn scrape(gw: &common::Gateway) -> String {
    let resp = gw.admin_get("/metrics");
    assert_eq!(resp.status, 200, "/metrics: {}", resp.body_str());
    let ctype = resp.header("content-type").unwrap_or("");
    assert!(ctype.starts_with("text/plain"), "content-type {ctype}");
    resp.body_str()
}

/// The value of the sample `name` whose labels are exactly `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut found = None;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (sample_name, sample_labels, value) = parse_sample(line);
        if sample_name == name && sample_labels == want {
            assert!(found.is_none(), "{name}{labels:?} appears twice:\n{text}");
            found = Some(value);
        }
    }
    found
}

/// `name{k="v",...} value` → parts; label values unescaped.
fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let mut labels = BTreeMap::new();
    let (name, rest) = match line.find('{') {
        Some(i) => {
            let mut rest = &line[i + 1..];
            loop {
                rest = rest.trim_start_matches(',');
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest
                    .find("=\"")
                    .unwrap_or_else(|| panic!("bad sample: {line}"));
                let key = rest[..eq].to_string();
                let mut value = String::new();
                let mut chars = rest[eq + 2..].char_indices();
                let end = loop {
                    match chars.next() {
                        Some((j, '"')) => break eq + 2 + j + 1,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => panic!("bad sample: {line}"),
                        },
                        Some((_, c)) => value.push(c),
                        None => panic!("bad sample: {line}"),
                    }
                };
                labels.insert(key, value);
                rest = &rest[end..];
            }
            (line[..i].to_string(), rest)
        }
        None => {
            let i = line
                .find(' ')
                .unwrap_or_else(|| panic!("bad sample: {line}"));
            (line[..i].to_string(), &line[i..])
        }
    };
    let value = rest.trim().split(' ').next().unwrap();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
    };
    (name, labels, value)
}

/// Scrapes until the sample reaches `at_least` (counters move in the logging
/// phase, which may end after the client has its response); returns the value
/// then, so an overshoot is visible to the caller.
fn wait_metric(gw: &common::Gateway, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let text = scrape(gw);
        let v = metric(&text, name, labels);
        if v.is_some_and(|v| v >= at_least) {
            return v.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}{labels:?} = {v:?}, wanted {at_least}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
