//! What each check on colorgate's request path costs, one at a time and
//! together.
//!
//! `../shared/PERFORMANCE-NOTES.md` sets the budget: plain nginx spends
//! 20–25 µs of CPU on a proxied request, and Pingora alone already spends
//! more, so whatever colorgate adds must be close to nothing. Every case here
//! is therefore reported twice:
//!
//! 1. by criterion (its usual estimate and change report), and
//! 2. after criterion, in one table measured by a plain loop in this same
//!    process: ns/op, the ratio to a trivial baseline measured in the same
//!    run (copying a 200-byte header into a reused buffer, so the ratio
//!    survives a faster or slower machine), and the share of nginx's whole
//!    per-request CPU budget (taken as 22 µs) the case costs.
//!
//! Groups (each case is what the proxy does per request, with its inputs):
//! - `baseline`: the 200-byte header copy every ratio is taken against.
//! - `route`: `routes::normalize` + first match over the contract's route
//!   table (3 routes): a clean path, one that needs normalizing, a 404; a
//!   10-route table whose hit is the last route; and the `rewrite` URI.
//! - `allowlist`: `IpSet::contains` over 3 CIDRs, IPv4 and IPv6, hit and miss.
//! - `client_ip`: `client_ip::resolve` behind a trusted chain (two trusted
//!   hops to skip), for an untrusted peer, and the `X-Forwarded-For` sent on.
//! - `rate_limit`: `rate_limit::check` with one and two zones, for one hot
//!   key and for a rotating set of 100k client IPs (the zone's default
//!   `max_keys`: with 16 shards, the fuller shards evict on most lookups, so
//!   this is the busy-zone worst case); plus a hot key that is refused.
//! - `jwt`: `JwtVerifier::verify` for HS256, ES256 and EdDSA, verifier built
//!   once as at config load. `verify` caches tokens it has verified, so each
//!   algorithm is measured twice: `new_token` cycles through tokens minted
//!   at start (more than the cache keeps: every call misses and pays
//!   signature + claims + cache insert, as a client's first request does),
//!   and `cached` repeats the fixture token from tests/fixtures/jwt (the
//!   lookup a client reusing its token pays).
//! - `request_id`: `respond::new_request_id`.
//! - `access_log`: the contract §4 line, formatted by `observe::LogLine`
//!   (what the gateway runs per request): into a reused `String`, and into
//!   a fresh one per line as `observe.rs` does (the line is moved into the
//!   log queue).
//! - `sequence`: one admitted request through allowlist, per-IP rate limit,
//!   `Authorization: Bearer` parse and JWT verify, with HS256 and with ES256
//!   (issue 3's "one full check sequence"), over rotating client IPs, with a
//!   new token each time and with one cached token.
//!
//! Run: `cargo bench --bench request_path -- --warm-up-time 1 --measurement-time 2`.
//! The ratio table always covers every case, whatever criterion filter is
//! given. Under `cargo test --benches` each case runs once (a smoke test).
//! The binary's allocator (mimalloc) is used here too, so allocation costs
//! match the gateway's.

use colorgate::checks::allowlist::IpSet;
use colorgate::checks::jwt::{JwtSettings, JwtVerifier, KeySource};
use colorgate::checks::rate_limit::{self, check, monotonic_ms, Decision, RateZone, ZoneSpec};
use colorgate::client_ip;
use colorgate::observe::LogLine;
use colorgate::respond::new_request_id;
use colorgate::routes::{self, MatchKind, PathChange};
use criterion::Criterion;
use jsonwebtoken::Algorithm;
use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Plain nginx's CPU per proxied request (PERFORMANCE-NOTES: 20–25 µs).
const NGINX_REQUEST_NS: f64 = 22_000.0;
/// The ratio table: rounds per case (the median is reported), the most
/// iterations per round, and the time a round aims at for slow cases.
const ROUNDS: usize = 5;
const MAX_ITERS_PER_ROUND: u64 = 40_000;
const ROUND_BUDGET_NS: f64 = 60e6;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/");
const ISSUER: &str = "https://auth.colorgate.test";
const AUDIENCE: &str = "colorgate";
const ROTATING_KEYS: u32 = 100_000;
/// Distinct tokens minted for the `new_token` cases (HMAC, then ES256 and
/// EdDSA, whose signing is slow). The verifier caches up to 8 × 2,048
/// verified tokens and empties a shard when it is full; cycling through this
/// many keeps every shard's share above 2,048, so each lookup misses and
/// pays the whole verification (and the cache insert), as the first request
/// with a token does.
const FRESH_TOKENS: [usize; 2] = [65_536, 24_576];

/// One benchmarked operation: criterion and the ratio table run the same closure.
struct Case<'a> {
    group: &'static str,
    name: &'static str,
    run: Box<dyn FnMut() + 'a>,
}

impl<'a> Case<'a> {
    fn new(group: &'static str, name: &'static str, run: impl FnMut() + 'a) -> Self {
        let run = Box::new(run);
        Case { group, name, run }
    }
}

/// A route as the proxy sees it: how it matches, its path, what it does to the path.
struct RouteEntry {
    kind: MatchKind,
    path: &'static str,
    change: PathChange,
}

/// The contract's (and conf/colorgate.yaml's) route table, in order.
fn contract_routes() -> Vec<RouteEntry> {
    let route = |kind, path, change| RouteEntry { kind, path, change };
    vec![
        route(MatchKind::Exact, "/health", PathChange::Keep),
        route(
            MatchKind::Prefix,
            "/api/colorize",
            PathChange::Rewrite("/colorize".into()),
        ),
        route(MatchKind::Prefix, "/api/", PathChange::StripPrefix),
    ]
}

/// Ten routes: seven that `/api/...` paths do not match, ahead of the
/// contract's three, so a hit on `/api/` scans the whole table.
fn ten_routes() -> Vec<RouteEntry> {
    let others = [
        "/v1/models",
        "/v1/jobs/",
        "/static/",
        "/admin/",
        "/metrics",
        "/docs/",
        "/v2/colorize",
    ];
    let mut table: Vec<RouteEntry> = others
        .into_iter()
        .map(|path| RouteEntry {
            kind: MatchKind::Prefix,
            path,
            change: PathChange::Keep,
        })
        .collect();
    table.extend(contract_routes());
    table
}

/// What `proxy::admit` does to find the route: normalize, then first match.
fn route_index(table: &[RouteEntry], raw_path: &str) -> Option<usize> {
    let path = routes::normalize(raw_path).ok()?;
    table
        .iter()
        .position(|r| routes::matches(r.kind, r.path, &path))
}

fn ip_set(entries: &[&str]) -> IpSet {
    let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
    IpSet::parse(&entries).expect("valid CIDRs")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid address")
}

/// The rate-limit key the proxy uses for a client IP (a copy of the private
/// `proxy::ip_key`): 16 bytes, IPv4 as IPv4-mapped IPv6.
fn ip_key(ip: IpAddr) -> [u8; 16] {
    match colorgate::checks::allowlist::canonical(ip) {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A zone that admits every request, so that every `check` takes the
/// longest path (account, not refuse): a billion r/s with a burst of a
/// million covers any number of requests within one millisecond.
fn admitting_zone(name: &str) -> RateZone {
    RateZone::new(
        name,
        ZoneSpec::new(1_000_000_000_000, 1_000_000, rate_limit::NODELAY),
    )
}

/// The contract's `api_global` zone: 5r/s, burst 10, nodelay.
fn api_global_zone() -> RateZone {
    let rate = ZoneSpec::parse_rate("5r/s").expect("valid rate");
    RateZone::new("api_global", ZoneSpec::new(rate, 10, rate_limit::NODELAY))
}

/// 100k distinct client IPs in 10.0.0.0/8 (inside the contract allowlist).
fn rotating_clients() -> Vec<(IpAddr, [u8; 16])> {
    (0..ROTATING_KEYS)
        .map(|i| {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i));
            (ip, ip_key(ip))
        })
        .collect()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A verifier as config load builds it: one algorithm, issuer and audience
/// checked, the contract's default leeway.
/// The private key, when given, only serves to mint the `new_token` cases' tokens.
fn verifier(algorithm: Algorithm, key: KeySource, private_pem: Option<&str>) -> JwtVerifier {
    JwtVerifier::new(JwtSettings {
        algorithms: vec![algorithm],
        key,
        signing_key_pem: private_pem.map(fixture),
        require_exp: true,
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        leeway_secs: 30,
        user_claim: "user_id".into(),
    })
    .unwrap_or_else(|e| panic!("{algorithm:?} verifier: {e}"))
}

/// `n` distinct valid tokens, as `Authorization` values.
fn mint(v: &JwtVerifier, n: usize) -> Vec<String> {
    let bearer = |i| match v.issue(&format!("user{i:06}"), 3600, &[]) {
        Ok(token) => format!("Bearer {token}"),
        Err(e) => panic!("minting tokens: {e}"),
    };
    (0..n).map(bearer).collect()
}

/// The token in an `Authorization` value made by [`mint`].
fn token(authorization: &str) -> &str {
    authorization
        .strip_prefix("Bearer ")
        .unwrap_or(authorization)
}

/// Everything the cases read, built once before any measurement.
struct Fixtures {
    contract_routes: Vec<RouteEntry>,
    ten_routes: Vec<RouteEntry>,
    allow_v4: IpSet,
    allow_v6: IpSet,
    trusted: IpSet,
    clients: Vec<(IpAddr, [u8; 16])>,
    zone_a: RateZone,
    zone_b: RateZone,
    zone_refusing: RateZone,
    seq_zone: RateZone,
    hs256: JwtVerifier,
    es256: JwtVerifier,
    eddsa: JwtVerifier,
    tokens: HashMap<String, String>,
    bearer_hs256: Vec<u8>,
    bearer_es256: Vec<u8>,
    fresh_hs256: Vec<String>,
    fresh_es256: Vec<String>,
    fresh_eddsa: Vec<String>,
    log: LogLine<'static>,
}

impl Fixtures {
    /// `full`: mint [`FRESH_TOKENS`] (a smoke test mints a few).
    fn new(full: bool) -> Fixtures {
        let tokens: HashMap<String, String> =
            serde_json::from_slice(&fixture("tokens.json")).expect("tokens.json");
        let secret = String::from_utf8(fixture("hs_secret.txt")).expect("utf-8 secret");
        let secret = secret.trim().as_bytes().to_vec();
        let bearer = |name: &str| format!("Bearer {}", tokens[name]).into_bytes();
        let hs256 = verifier(Algorithm::HS256, KeySource::Secret(secret), None);
        let es256 = verifier(
            Algorithm::ES256,
            KeySource::PublicKeyPem(fixture("ec256_public.pem")),
            Some("ec256_private.pem"),
        );
        let eddsa = verifier(
            Algorithm::EdDSA,
            KeySource::PublicKeyPem(fixture("ed25519_public.pem")),
            Some("ed25519_private.pem"),
        );
        let [hmac, signed] = if full { FRESH_TOKENS } else { [16, 16] };
        let start = Instant::now();
        let fresh_hs256 = mint(&hs256, hmac);
        let [fresh_es256, fresh_eddsa] = [&es256, &eddsa].map(|v| mint(v, signed));
        eprintln!(
            "request_path: minted {hmac} HS256 + 2 x {signed} ES256/EdDSA tokens in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        // Flood the hot key last, so that every measured check is refused.
        let zone_refusing = api_global_zone();
        let key = ip_key(ip("203.0.113.7"));
        for _ in 0..20 {
            check(&[(&zone_refusing, &key)], monotonic_ms());
        }
        Fixtures {
            contract_routes: contract_routes(),
            ten_routes: ten_routes(),
            allow_v4: ip_set(&["192.168.1.0/24", "10.0.0.0/8", "203.0.113.0/24"]),
            allow_v6: ip_set(&["2001:db8:1::/48", "fd00::/8", "2001:db8:ff00::/40"]),
            trusted: ip_set(&["10.0.0.0/8", "172.16.0.0/12", "fd00::/8"]),
            clients: rotating_clients(),
            zone_a: admitting_zone("per_ip_a"),
            zone_b: admitting_zone("per_ip_b"),
            zone_refusing,
            seq_zone: admitting_zone("api_global"),
            hs256,
            es256,
            eddsa,
            bearer_hs256: bearer("hs256_valid"),
            bearer_es256: bearer("es256_valid"),
            fresh_hs256,
            fresh_es256,
            fresh_eddsa,
            tokens,
            log: contract_log_line(),
        }
    }

    /// The inputs are what the cases claim: a wrong fixture would measure a
    /// refusal instead of the work.
    fn check_inputs(&self) {
        let table = &self.contract_routes;
        assert_eq!(route_index(table, "/api/colorize"), Some(1));
        assert_eq!(route_index(table, "/api/v1/../colorize"), Some(1));
        assert_eq!(route_index(table, "/nope"), None);
        assert_eq!(route_index(&self.ten_routes, "/api/jobs/42"), Some(9));
        assert!(self.allow_v4.contains(ip("203.0.113.7")));
        assert!(self.allow_v6.contains(ip("2001:db8:ff01::5")));
        let got = client_ip::resolve(
            ip("10.0.0.1"),
            Some(b"203.0.113.7, 10.0.0.3, 10.0.0.2"),
            None,
            &self.trusted,
        );
        assert_eq!(got, ip("203.0.113.7"));
        for (name, v) in [
            ("hs256_valid", &self.hs256),
            ("es256_valid", &self.es256),
            ("eddsa_valid", &self.eddsa),
        ] {
            assert_eq!(
                v.verify(&self.tokens[name]).as_deref(),
                Ok("alice"),
                "{name}"
            );
        }
        for (fresh, v) in [
            (&self.fresh_hs256, &self.hs256),
            (&self.fresh_es256, &self.es256),
            (&self.fresh_eddsa, &self.eddsa),
        ] {
            assert_eq!(v.verify(token(&fresh[0])).as_deref(), Ok("user000000"));
        }
        let key = ip_key(ip("203.0.113.7"));
        let refused = check(&[(&self.zone_refusing, &key)], monotonic_ms());
        assert!(matches!(refused, Decision::Reject { .. }));
        let both = [(&self.zone_a, &key[..]), (&self.zone_b, &key[..])];
        assert!(matches!(
            check(&both, monotonic_ms()),
            Decision::Allow { .. }
        ));
    }
}

/// The contract §4 example line, as `observe::LogLine` holds it.
fn contract_log_line() -> LogLine<'static> {
    LogLine {
        time: SystemTime::now(),
        request_id: "3f9c2a7d41e0b8c65a1d9e2f70b4c3a8",
        remote_addr: Some(ip("203.0.113.7")),
        client_ip: Some(ip("203.0.113.7")),
        method: "POST",
        uri: "/api/colorize?render_factor=35",
        route: Some("/api/colorize"),
        status: 200,
        bytes_sent: 123_456,
        bytes_received: 654_321,
        request_time: Duration::from_millis(812),
        upstream_addr: Some("127.0.0.1:7860"),
        upstream_status: Some(200),
        upstream_time: Some(Duration::from_millis(807)),
        user_id: Some("user123"),
        auth: "ok",
        deny: None,
        referer: None,
        user_agent: Some(std::borrow::Cow::Borrowed(b"curl/8.5")),
        x_forwarded_for: None,
    }
}

/// One admitted request through the checks `proxy::admit` runs before the
/// upstream: allowlist, the per-IP zone, the bearer token, its verification.
fn admit(
    fx: &Fixtures,
    verifier: &JwtVerifier,
    client: &(IpAddr, [u8; 16]),
    authorization: &[u8],
) -> Result<String, &'static str> {
    let (ip, key) = client;
    if !fx.allow_v4.contains(*ip) {
        return Err("allowlist");
    }
    if let Decision::Reject { .. } = check(&[(&fx.seq_zone, key)], monotonic_ms()) {
        return Err("rate_limit");
    }
    verifier
        .verify_bearer(Some(authorization))
        .map_err(|_| "auth")
}

/// Cycles through `items` (client IPs, tokens), one per call.
fn rotating<'a, T>(items: &'a [T]) -> impl FnMut() -> &'a T + 'a {
    let mut i = 0;
    move || {
        i = (i + 1) % items.len();
        &items[i]
    }
}

fn cases(fx: &Fixtures) -> Vec<Case<'_>> {
    let header = [b'x'; 200];
    let mut copy = Vec::with_capacity(256);
    let mut line = String::with_capacity(512);
    let colorize = &fx.contract_routes[1];
    let hot = ip_key(ip("203.0.113.7"));
    // Addresses are parsed here, not in the measured closures.
    let [v4_hit, v4_miss, v4_mapped, v6_hit, v6_miss] = [
        "203.0.113.7",
        "198.51.100.7",
        "::ffff:10.1.2.3",
        "2001:db8:ff01::5",
        "2001:db9::1",
    ]
    .map(ip);
    let [proxy_v4, proxy_v6, outsider] = ["10.0.0.1", "fd00::1", "198.51.100.7"].map(ip);
    let (mut next_a, mut next_b) = (rotating(&fx.clients), rotating(&fx.clients));
    let [mut seq_ip1, mut seq_ip2, mut seq_ip3, mut seq_ip4] =
        [(); 4].map(|_| rotating(&fx.clients));
    let [mut next_hs, mut next_es, mut next_eddsa] =
        [&fx.fresh_hs256, &fx.fresh_es256, &fx.fresh_eddsa].map(|t| rotating(t));
    let [hs256_token, es256_token, eddsa_token] =
        ["hs256_valid", "es256_valid", "eddsa_valid"].map(|name| fx.tokens[name].as_str());
    let [mut seq_hs, mut seq_es] = [&fx.fresh_hs256, &fx.fresh_es256].map(|t| rotating(t));
    vec![
        Case::new("baseline", "copy_200B_header", move || {
            copy.clear();
            copy.extend_from_slice(black_box(&header));
            black_box(&copy);
        }),
        // route
        Case::new("route", "contract3_clean_path", move || {
            black_box(route_index(&fx.contract_routes, black_box("/api/colorize")));
        }),
        Case::new("route", "contract3_needs_normalizing", move || {
            let p = black_box("/api/v1/../colorize");
            black_box(route_index(&fx.contract_routes, p));
        }),
        Case::new("route", "contract3_no_match_404", move || {
            black_box(route_index(&fx.contract_routes, black_box("/nope")));
        }),
        Case::new("route", "table10_last_route", move || {
            black_box(route_index(&fx.ten_routes, black_box("/api/jobs/42")));
        }),
        Case::new("route", "upstream_uri_rewrite", move || {
            let path = black_box("/api/colorize");
            let q = Some("render_factor=35");
            let (change, route) = (&colorize.change, colorize.path);
            black_box(routes::upstream_uri(change, route, path, q));
        }),
        // allowlist
        Case::new("allowlist", "v4_hit_third_cidr", move || {
            black_box(fx.allow_v4.contains(black_box(v4_hit)));
        }),
        Case::new("allowlist", "v4_miss", move || {
            black_box(fx.allow_v4.contains(black_box(v4_miss)));
        }),
        Case::new("allowlist", "v4_mapped_v6_hit", move || {
            black_box(fx.allow_v4.contains(black_box(v4_mapped)));
        }),
        Case::new("allowlist", "v6_hit_third_cidr", move || {
            black_box(fx.allow_v6.contains(black_box(v6_hit)));
        }),
        Case::new("allowlist", "v6_miss", move || {
            black_box(fx.allow_v6.contains(black_box(v6_miss)));
        }),
        // client_ip
        Case::new("client_ip", "trusted_chain_v4_2hops", move || {
            let xff: &[u8] = black_box(b"203.0.113.7, 10.0.0.3, 10.0.0.2");
            let peer = black_box(proxy_v4);
            black_box(client_ip::resolve(peer, Some(xff), None, &fx.trusted));
        }),
        Case::new("client_ip", "trusted_chain_v6_1hop", move || {
            let xff: &[u8] = black_box(b"2001:db8::7, fd00::3");
            let peer = black_box(proxy_v6);
            black_box(client_ip::resolve(peer, Some(xff), None, &fx.trusted));
        }),
        Case::new("client_ip", "untrusted_peer", move || {
            let xff: &[u8] = black_box(b"1.2.3.4");
            let peer = black_box(outsider);
            black_box(client_ip::resolve(peer, Some(xff), None, &fx.trusted));
        }),
        Case::new("client_ip", "forwarded_for_trusted", move || {
            let xff: &[u8] = black_box(b"203.0.113.7, 10.0.0.3");
            let peer = black_box(proxy_v4);
            let mut line = String::with_capacity(64);
            client_ip::push_forwarded_for(&mut line, peer, Some(xff), &fx.trusted);
            black_box(line);
        }),
        // rate_limit: zones on the stack here; the proxy collects them into a Vec.
        Case::new("rate_limit", "one_zone_hot_key", move || {
            let zones = [(&fx.zone_a, &black_box(hot)[..])];
            black_box(check(&zones, monotonic_ms()));
        }),
        Case::new("rate_limit", "two_zones_hot_key", move || {
            let key = black_box(hot);
            let zones = [(&fx.zone_a, &key[..]), (&fx.zone_b, &key[..])];
            black_box(check(&zones, monotonic_ms()));
        }),
        Case::new("rate_limit", "one_zone_100k_keys", move || {
            let (_, key) = next_a();
            black_box(check(&[(&fx.zone_a, key)], monotonic_ms()));
        }),
        Case::new("rate_limit", "two_zones_100k_keys", move || {
            let (_, key) = next_b();
            let zones = [(&fx.zone_a, &key[..]), (&fx.zone_b, &key[..])];
            black_box(check(&zones, monotonic_ms()));
        }),
        Case::new("rate_limit", "one_zone_hot_key_refused", move || {
            let zones = [(&fx.zone_refusing, &black_box(hot)[..])];
            black_box(check(&zones, monotonic_ms()));
        }),
        // jwt: a token seen for the first time, and one the verifier has cached.
        Case::new("jwt", "verify_hs256_new_token", move || {
            black_box(fx.hs256.verify(token(next_hs())).ok());
        }),
        Case::new("jwt", "verify_es256_new_token", move || {
            black_box(fx.es256.verify(token(next_es())).ok());
        }),
        Case::new("jwt", "verify_eddsa_new_token", move || {
            black_box(fx.eddsa.verify(token(next_eddsa())).ok());
        }),
        Case::new("jwt", "verify_hs256_cached", move || {
            black_box(fx.hs256.verify(black_box(hs256_token)).ok());
        }),
        Case::new("jwt", "verify_es256_cached", move || {
            black_box(fx.es256.verify(black_box(es256_token)).ok());
        }),
        Case::new("jwt", "verify_eddsa_cached", move || {
            black_box(fx.eddsa.verify(black_box(eddsa_token)).ok());
        }),
        Case::new("request_id", "new_request_id", move || {
            black_box(new_request_id());
        }),
        // access_log
        Case::new("access_log", "line_reused_buffer", move || {
            line.clear();
            black_box(&fx.log).write_json(&mut line);
            black_box(&line);
        }),
        Case::new("access_log", "line_fresh_string", move || {
            let mut o = String::with_capacity(512);
            black_box(&fx.log).write_json(&mut o);
            black_box(o);
        }),
        // sequence: rotating client IPs; a new token each time, or one cached token.
        Case::new("sequence", "hs256_new_token", move || {
            let authorization = seq_hs().as_bytes();
            black_box(admit(fx, &fx.hs256, seq_ip1(), authorization)).expect("admitted");
        }),
        Case::new("sequence", "es256_new_token", move || {
            let authorization = seq_es().as_bytes();
            black_box(admit(fx, &fx.es256, seq_ip2(), authorization)).expect("admitted");
        }),
        Case::new("sequence", "hs256_cached_token", move || {
            black_box(admit(fx, &fx.hs256, seq_ip3(), &fx.bearer_hs256)).expect("admitted");
        }),
        Case::new("sequence", "es256_cached_token", move || {
            black_box(admit(fx, &fx.es256, seq_ip4(), &fx.bearer_es256)).expect("admitted");
        }),
    ]
}

/// Median ns/op over `ROUNDS` timed loops, each sized to about
/// `ROUND_BUDGET_NS` (at most `MAX_ITERS_PER_ROUND`); one tiny round in
/// smoke-test mode.
fn ns_per_op(run: &mut dyn FnMut(), full: bool) -> f64 {
    if !full {
        let start = Instant::now();
        (0..10).for_each(|_| run());
        return start.elapsed().as_nanos() as f64 / 10.0;
    }
    let start = Instant::now();
    (0..200).for_each(|_| run());
    let estimate = (start.elapsed().as_nanos() as f64 / 200.0).max(1.0);
    let iters = ((ROUND_BUDGET_NS / estimate) as u64).clamp(100, MAX_ITERS_PER_ROUND);
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            (0..iters).for_each(|_| run());
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

/// The table every group's ratios are read from (see the module doc).
fn print_ratio_table(cases: &mut [Case<'_>], full: bool) {
    let measured: Vec<(String, &'static str, f64)> = cases
        .iter_mut()
        .map(|c| {
            let ns = ns_per_op(&mut *c.run, full);
            (format!("{}/{}", c.group, c.name), c.group, ns)
        })
        .collect();
    let baseline = measured
        .iter()
        .find(|m| m.1 == "baseline")
        .map_or(1.0, |m| m.2);
    println!();
    println!("ratio to baseline (same run, same process; baseline = baseline/copy_200B_header = {baseline:.1} ns/op)");
    println!(
        "and share of plain nginx's per-request CPU ({} µs, PERFORMANCE-NOTES.md):",
        NGINX_REQUEST_NS / 1000.0
    );
    println!(
        "{:<44} {:>11} {:>12} {:>14}",
        "case", "ns/op", "x baseline", "nginx share"
    );
    let mut group = "";
    for (name, g, ns) in &measured {
        if *g != group && !group.is_empty() {
            println!();
        }
        group = g;
        println!(
            "{name:<44} {ns:>11.1} {:>12.1} {:>13.3}%",
            ns / baseline,
            100.0 * ns / NGINX_REQUEST_NS
        );
    }
    if !full {
        println!("(smoke-test mode: 10 iterations per case; run `cargo bench` for figures)");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; `cargo test --benches` does not.
    let full = args.iter().any(|a| a == "--bench");
    let listing = args.iter().any(|a| a == "--list");

    let fx = Fixtures::new(full);
    fx.check_inputs();
    let mut cases = cases(&fx);

    let mut criterion = Criterion::default().configure_from_args();
    let mut groups: Vec<&'static str> = cases.iter().map(|c| c.group).collect();
    groups.dedup();
    for name in groups {
        let mut group = criterion.benchmark_group(name);
        for case in cases.iter_mut().filter(|c| c.group == name) {
            group.bench_function(case.name, |b| b.iter(&mut case.run));
        }
        group.finish();
    }
    criterion.final_summary();

    if !listing {
        print_ratio_table(&mut cases, full);
    }
}
