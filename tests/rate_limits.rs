//! Rate limits and in-flight caps against the real binary: per-user zones, per-IP
//! zones before JWT, several zones on one route, Retry-After, and the in-flight caps
//! (`concurrency.per_user`, `concurrency.upstream`, `limits.max_connections_per_ip`)
//! released on every path.
//!
//! The zones here use per-minute rates so that no allowance comes back during a test:
//! the counts do not depend on how fast the machine is. The in-flight tests hold a
//! request in the upstream with `/slow/<ms>` and wait for it to be there (the upstream
//! records a request before sleeping) rather than sleeping a fixed time.

mod common;

use common::{build_request, Conn, GatewayConfig, Response, Upstream};
use std::time::{Duration, Instant};

const SECRET: &str = "rate-limit-test-secret-0123456789abcdef0123456789abcdef\n";

/// A gateway config whose routes can use `auth: jwt` (HS256, secret file).
fn jwt_config(upstream_addr: &str) -> GatewayConfig {
    GatewayConfig::new(upstream_addr)
        .file("jwt.secret", SECRET)
        .section(
            "auth",
            "jwt:\n  algorithms: [HS256]\n  secret_file: {dir}/jwt.secret",
        )
}

/// `colorgate token issue -c <cfg> --user <user>`: the token alone on stdout.
fn token(cfg: &GatewayConfig, user: &str) -> String {
    let path = cfg.write();
    let path = path.to_str().expect("utf-8 path");
    let out = common::colorgate(&["token", "issue", "-c", path, "--user", user]);
    assert!(
        out.status.success(),
        "token issue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).expect("utf-8 token");
    token.trim().to_string()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Asserts one of our JSON refusals with a `Retry-After` of whole seconds (>= 1);
/// returns the Retry-After value.
fn assert_refusal(resp: &Response, status: u16, code: &str) -> u64 {
    assert_eq!(
        resp.status,
        status,
        "wanted {status} {code}, got {} {}",
        resp.status,
        resp.body_str()
    );
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let body = resp.json();
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(
        body["request_id"].as_str(),
        resp.header("x-request-id"),
        "{body}"
    );
    let retry = resp.header("retry-after").expect("Retry-After header");
    let secs: u64 = retry
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {retry:?} is not whole seconds"));
    assert!(secs >= 1, "Retry-After {secs}");
    secs
}

fn assert_rate_limited(resp: &Response) -> u64 {
    assert_refusal(resp, 429, "rate_limited")
}

/// Sends a request without reading its answer: it stays in flight (e.g. in `/slow/`).
fn send_only(port: u16, path: &str, headers: &[(&str, &str)]) -> Conn {
    let mut conn = Conn::open(port);
    conn.write(&build_request(port, "GET", path, headers, b"", true));
    conn
}

/// Polls `attempt` every 20 ms until it returns true; false after `limit`.
fn within(limit: Duration, mut attempt: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if attempt() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Access-log `deny` values in order, once `n` lines are there.
fn denies(gw: &common::Gateway, n: usize) -> Vec<Option<String>> {
    let lines = gw.wait_access_log(n, Duration::from_secs(10));
    lines
        .iter()
        .map(|l| l["deny"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn per_user_zones_give_each_user_a_separate_bucket() {
    let upstream = Upstream::start();
    let cfg = jwt_config(&upstream.addr())
        .section(
            "rate_limits",
            "per_user: { rate: 1r/m, burst: 1, nodelay: true, key: user }",
        )
        .routes("- path: /\n  upstream: app\n  auth: jwt\n  rate_limits: [per_user]");
    let (alice, bob) = (token(&cfg, "alice"), token(&cfg, "bob"));
    let gw = cfg.start();
    let as_user = |t: &str| gw.request("GET", "/work", &[("Authorization", &bearer(t))], b"");

    // Both users come from the same address: only the user tells them apart.
    assert_eq!(as_user(&alice).status, 200);
    assert_eq!(as_user(&alice).status, 200);
    assert_rate_limited(&as_user(&alice));
    assert_eq!(as_user(&bob).status, 200, "bob has his own bucket");
    assert_eq!(as_user(&bob).status, 200);
    assert_rate_limited(&as_user(&bob));
    assert_rate_limited(&as_user(&alice));

    let users: Vec<_> = upstream
        .requests()
        .iter()
        .map(|r| r.header("x-user-id").map(str::to_string))
        .collect();
    let want = ["alice", "alice", "bob", "bob"].map(|u| Some(u.to_string()));
    assert_eq!(users, want);
    let deny = denies(&gw, 7);
    let limited = Some("rate_limit:per_user".to_string());
    assert_eq!(
        deny.iter().filter(|d| **d == limited).count(),
        3,
        "{deny:?}"
    );
}

#[test]
fn a_per_ip_zone_cuts_a_flood_of_bad_tokens_before_jwt() {
    let upstream = Upstream::start();
    let cfg = jwt_config(&upstream.addr())
        .section(
            "rate_limits",
            "per_ip: { rate: 1r/m, burst: 2, nodelay: true, key: client_ip }",
        )
        .routes("- path: /\n  upstream: app\n  auth: jwt\n  rate_limits: [per_ip]");
    let good = token(&cfg, "alice");
    let gw = cfg.start();

    let bad = [("Authorization", "Bearer not.a.token")];
    let statuses: Vec<u16> = (0..8)
        .map(|_| gw.request("GET", "/", &bad, b"").status)
        .collect();
    // 1 + burst answered by JWT (401), then the zone answers before JWT looks (429).
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429, 429, 429]);
    let resp = gw.request("GET", "/", &bad, b"");
    assert_rate_limited(&resp);
    assert_eq!(resp.header("www-authenticate"), None, "JWT never ran");
    // The zone is per address: a good token from the same address is limited too.
    assert_rate_limited(&gw.request("GET", "/", &[("Authorization", &bearer(&good))], b""));
    assert!(upstream.requests().is_empty());
    let deny = denies(&gw, 10);
    assert_eq!(
        deny[..3],
        [
            Some("auth".to_string()),
            Some("auth".into()),
            Some("auth".into())
        ]
    );
    assert!(
        deny[3..]
            .iter()
            .all(|d| d.as_deref() == Some("rate_limit:per_ip")),
        "{deny:?}"
    );
}

/// `headers.hide` is for the upstream's answers (nginx's
/// `proxy_hide_header`): the gateway's own 429 keeps its `Retry-After`,
/// and carries the configured fields and one request id, on a connection
/// that also served a proxied answer.
#[test]
fn hidden_names_do_not_strip_the_gateways_own_refusals() {
    let upstream = Upstream::start();
    let gw = common::config(&upstream)
        .section("headers", "hide: [Retry-After, Server]")
        .section(
            "rate_limits",
            "one: { rate: 1r/m, burst: 0, nodelay: true }",
        )
        .routes("- path: /\n  upstream: app\n  auth: none\n  rate_limits: [one]")
        .start();
    let mut conn = gw.conn();

    let passed = conn.send("GET", "/first", &[], b"");
    let refused = conn.send("GET", "/second", &[], b"");

    assert_eq!(passed.status, 200, "{}", passed.body_str());
    assert_rate_limited(&refused);
    for resp in [&passed, &refused] {
        assert_eq!(resp.header_all("x-request-id").len(), 1, "{resp:?}");
        assert_eq!(resp.header_all("x-frame-options"), ["DENY"], "{resp:?}");
    }
}

/// Route `/ab/` has zones [a, b], b the tighter: b rejects, and a (checked first) must
/// not be charged for those rejected requests, as in nginx.
#[test]
fn a_request_rejected_by_a_later_zone_costs_the_earlier_zone_nothing() {
    let upstream = Upstream::start();
    let gw = common::config(&upstream)
        .section(
            "rate_limits",
            "a: { rate: 1r/m, burst: 2, nodelay: true }\nb: { rate: 1r/m, burst: 0, nodelay: true }",
        )
        .routes(
            "- path: /ab/\n  upstream: app\n  auth: none\n  rate_limits: [a, b]\n\
             - path: /a/\n  upstream: app\n  auth: none\n  rate_limits: [a]",
        )
        .start();

    assert_eq!(gw.get("/ab/1").status, 200);
    for _ in 0..5 {
        assert_rate_limited(&gw.get("/ab/more"));
    }
    // a has spent 1 of its 1 + 2: two more pass, then a is full.
    assert_eq!(
        gw.get("/a/1").status,
        200,
        "zone a was charged for b's rejections"
    );
    assert_eq!(
        gw.get("/a/2").status,
        200,
        "zone a was charged for b's rejections"
    );
    assert_rate_limited(&gw.get("/a/3"));
    // Both zones full now: a, checked first, answers.
    assert_rate_limited(&gw.get("/ab/2"));

    let deny = denies(&gw, 10);
    let want = |z: &str| Some(format!("rate_limit:{z}"));
    assert_eq!(deny[0], None);
    assert!(deny[1..6].iter().all(|d| *d == want("b")), "{deny:?}");
    assert_eq!(deny[6..], [None, None, want("a"), want("a")], "{deny:?}");
}

/// The same rule across the JWT step: a per-IP zone (checked before JWT) must not be
/// charged for requests that the per-user zone (after JWT) rejects.
#[test]
fn a_request_rejected_by_a_per_user_zone_costs_the_per_ip_zone_nothing() {
    let upstream = Upstream::start();
    let cfg = jwt_config(&upstream.addr())
        .section(
            "rate_limits",
            "ip: { rate: 1r/m, burst: 2, nodelay: true, key: client_ip }\n\
             user: { rate: 1r/m, burst: 0, nodelay: true, key: user }",
        )
        .routes(
            "- path: /both/\n  upstream: app\n  auth: jwt\n  rate_limits: [ip, user]\n\
             - path: /ip/\n  upstream: app\n  auth: none\n  rate_limits: [ip]",
        );
    let alice = token(&cfg, "alice");
    let gw = cfg.start();
    let auth = [("Authorization", bearer(&alice))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();

    assert_eq!(gw.request("GET", "/both/1", &auth, b"").status, 200);
    for _ in 0..4 {
        assert_rate_limited(&gw.request("GET", "/both/more", &auth, b""));
    }
    // The per-IP zone has spent 1 of its 1 + 2.
    assert_eq!(
        gw.get("/ip/1").status,
        200,
        "ip zone charged for user-zone rejections"
    );
    assert_eq!(
        gw.get("/ip/2").status,
        200,
        "ip zone charged for user-zone rejections"
    );
    assert_rate_limited(&gw.get("/ip/3"));
}

#[test]
fn retry_after_is_when_the_zone_accepts_again() {
    let upstream = Upstream::start();
    let gw = common::config(&upstream)
        .section(
            "rate_limits",
            "per_min: { rate: 1r/m, burst: 0, nodelay: true }\n\
             tenth: { rate: 6r/m, burst: 0 }",
        )
        .routes(
            "- path: /min/\n  upstream: app\n  auth: none\n  rate_limits: [per_min]\n\
             - path: /tenth/\n  upstream: app\n  auth: none\n  rate_limits: [tenth]",
        )
        .start();

    assert_eq!(gw.get("/min/1").status, 200);
    let first = Instant::now();
    let retry = assert_rate_limited(&gw.get("/min/2"));
    // nginx truncates 1r/m to 16 requests per 1000 s, so the next request is admitted
    // after 62.5 s, and Retry-After is that rounded up: 63 (the module's documented
    // value for an immediate retry; 62 only if half a second passed in between).
    if first.elapsed() < Duration::from_millis(400) {
        assert_eq!(retry, 63);
    } else {
        assert!((62..=63).contains(&retry), "Retry-After {retry}");
    }

    // 6r/m is exactly one request per 10 s.
    assert_eq!(gw.get("/tenth/1").status, 200);
    let first = Instant::now();
    let retry = assert_rate_limited(&gw.get("/tenth/2"));
    if first.elapsed() < Duration::from_millis(400) {
        assert_eq!(retry, 10);
    } else {
        assert!((9..=10).contains(&retry), "Retry-After {retry}");
    }
    let body = gw.get("/tenth/3").json();
    assert_eq!(body["error"], "rate_limited");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[test]
fn per_user_in_flight_cap_refuses_the_same_user_only() {
    let upstream = Upstream::start();
    let cfg = jwt_config(&upstream.addr())
        .section("concurrency", "per_user: 1")
        .section(
            "upstreams",
            "app:\n  servers: [\"{upstream}\"]\n  connect_timeout: 2s\n  read_timeout: 60s",
        )
        .routes("- path: /\n  upstream: app\n  auth: jwt");
    let (alice, bob) = (token(&cfg, "alice"), token(&cfg, "bob"));
    let gw = cfg.start();
    let (alice, bob) = (bearer(&alice), bearer(&bob));

    let mut held = send_only(gw.port(), "/slow/4000", &[("Authorization", &alice)]);
    upstream.wait_for_requests(1, Duration::from_secs(10));

    let again = gw.request("GET", "/", &[("Authorization", &alice)], b"");
    assert_rate_limited(&again);
    assert_eq!(
        gw.request("GET", "/", &[("Authorization", &bob)], b"")
            .status,
        200
    );
    assert_eq!(
        upstream.requests().len(),
        2,
        "alice's second request reached the upstream"
    );

    // Released on success: once the slow answer is back, alice passes again.
    assert_eq!(held.read_response(false).status, 200);
    assert_eq!(
        gw.request("GET", "/", &[("Authorization", &alice)], b"")
            .status,
        200
    );
    let deny = denies(&gw, 4);
    assert!(
        deny.contains(&Some("concurrency:user".to_string())),
        "{deny:?}"
    );
}

#[test]
fn upstream_in_flight_cap_answers_503_with_retry_after() {
    let upstream = Upstream::start();
    let gw = common::config(&upstream)
        .section("concurrency", "upstream: 1")
        .section(
            "upstreams",
            "app:\n  servers: [\"{upstream}\"]\n  connect_timeout: 2s\n  read_timeout: 60s",
        )
        .start();

    let mut held = send_only(gw.port(), "/slow/4000", &[]);
    upstream.wait_for_requests(1, Duration::from_secs(10));
    assert_refusal(&gw.get("/second"), 503, "unavailable");
    assert_refusal(&gw.get("/third"), 503, "unavailable");
    assert_eq!(upstream.requests().len(), 1);
    assert_eq!(upstream.max_in_flight(), 1);

    assert_eq!(held.read_response(false).status, 200);
    assert_eq!(
        gw.get("/after").status,
        200,
        "slot not released after success"
    );
}

/// `limits.max_connections_per_ip` is nginx's `limit_conn` on the client address:
/// requests in flight per client IP (as found through trusted proxies), over it
/// `429` before the token is even looked at, released when an answer is done.
#[test]
fn per_ip_in_flight_cap_refuses_the_same_client_only() {
    let upstream = Upstream::start();
    let cfg = jwt_config(&upstream.addr())
        .section("limits", "max_connections_per_ip: 2")
        .section("access", "trusted_proxies: [127.0.0.1]")
        .section(
            "upstreams",
            "app:\n  servers: [\"{upstream}\"]\n  connect_timeout: 2s\n  read_timeout: 60s",
        )
        .routes("- path: /\n  upstream: app\n  auth: jwt");
    let alice = bearer(&token(&cfg, "alice"));
    let gw = cfg.start();
    let from = |ip: &'static str| [("Authorization", alice.as_str()), ("X-Forwarded-For", ip)];

    let mut held: Vec<Conn> = (0..2)
        .map(|_| send_only(gw.port(), "/slow/30000", &from("203.0.113.7")))
        .collect();
    upstream.wait_for_requests(2, Duration::from_secs(10));

    // A third from the same client is refused, even without a token: the cap
    // runs before JWT.
    assert_rate_limited(&gw.request("GET", "/", &from("203.0.113.7"), b""));
    let no_token = [("X-Forwarded-For", "203.0.113.7")];
    assert_rate_limited(&gw.request("GET", "/", &no_token, b""));
    // Another client (same user, same TCP peer) is not affected.
    assert_eq!(
        gw.request("GET", "/", &from("198.51.100.9"), b"").status,
        200
    );
    assert_eq!(
        upstream.requests().len(),
        3,
        "a refused request reached the upstream"
    );

    let refused = Some("max_connections_per_ip".to_string());
    assert_eq!(denies(&gw, 3), [refused.clone(), refused, None]);
    let metrics = gw.admin_get("/metrics").body_str().to_string();
    assert!(
        metrics
            .lines()
            .any(|l| l == "colorgate_denied_total{reason=\"max_connections_per_ip\"} 2"),
        "{metrics}"
    );

    // An aborted request gives its slot back.
    drop(held.pop());
    let released = within(Duration::from_secs(10), || {
        gw.request("GET", "/", &from("203.0.113.7"), b"").status == 200
    });
    assert!(released, "the aborted request still holds its slot");
}

/// A client that hangs up while its request waits on the upstream frees both its
/// per-user and its upstream slot then, not when the upstream finally answers (30 s).
#[test]
fn a_client_abort_releases_the_in_flight_slots() {
    let upstream = Upstream::start();
    let cfg = jwt_config(&upstream.addr())
        .section("concurrency", "per_user: 1\nupstream: 1")
        .section(
            "upstreams",
            "app:\n  servers: [\"{upstream}\"]\n  connect_timeout: 2s\n  read_timeout: 60s",
        )
        .routes("- path: /\n  upstream: app\n  auth: jwt");
    let (alice, bob) = (token(&cfg, "alice"), token(&cfg, "bob"));
    let gw = cfg.start();
    let (alice, bob) = (bearer(&alice), bearer(&bob));
    let as_user = |t: &str| gw.request("GET", "/", &[("Authorization", t)], b"");

    let held = send_only(gw.port(), "/slow/30000", &[("Authorization", &alice)]);
    upstream.wait_for_requests(1, Duration::from_secs(10));
    assert_rate_limited(&as_user(&alice));
    assert_refusal(&as_user(&bob), 503, "unavailable");

    drop(held);
    // Bounded poll: well before the upstream would answer the aborted request.
    let released = within(Duration::from_secs(10), || as_user(&alice).status == 200);
    assert!(released, "the aborted request still holds its slots");
    assert_eq!(as_user(&bob).status, 200);
}

/// Upstream errors release the slots: an unreachable upstream (502) and a timed-out
/// one (504) never leave the caps full.
#[test]
fn upstream_errors_release_the_in_flight_slots() {
    let cfg = jwt_config(&common::unreachable_addr())
        .section("concurrency", "per_user: 1\nupstream: 1")
        .routes("- path: /\n  upstream: app\n  auth: jwt");
    let alice = bearer(&token(&cfg, "alice"));
    let gw = cfg.start();
    for _ in 0..4 {
        let resp = gw.request("GET", "/", &[("Authorization", &alice)], b"");
        assert_eq!(resp.status, 502, "{}", resp.body_str());
        assert_eq!(resp.json()["error"], "bad_gateway");
    }
    drop(gw);

    let upstream = Upstream::start();
    let gw = common::config(&upstream)
        .section("concurrency", "upstream: 1")
        .section(
            "upstreams",
            "app:\n  servers: [\"{upstream}\"]\n  connect_timeout: 2s\n  read_timeout: 300ms",
        )
        .start();
    let resp = gw.get("/slow/3000");
    assert_eq!(resp.status, 504, "{}", resp.body_str());
    assert_eq!(resp.json()["error"], "gateway_timeout");
    assert_eq!(
        gw.get("/after").status,
        200,
        "slot not released after a timeout"
    );
}
