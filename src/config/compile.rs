//! Validation and compilation in one pass: every check `colorgate check`
//! promises (key files readable, certs parse, CIDRs valid, every route names
//! a real upstream, every rate limit a real zone) happens while building the
//! runtime [`Gateway`], so what passes `check` is exactly what serves. All
//! problems are collected, not just the first.

use super::schema::{self, Config};
use super::ConfigError;
use crate::checks::allowlist::IpSet;
use crate::checks::concurrency::{ClientIpInflight, UpstreamInflight, UserInflight};
use crate::checks::jwt::{JwtSettings, JwtVerifier, KeySource};
use crate::checks::rate_limit::{RateZone, ZoneSpec};
use crate::checks::request_buffer::BufferMemory;
use crate::gateway::{Gateway, ListenerSpec, ProcessSettings, Route, TlsSpec, ZoneKey};
use crate::respond::{ErrorBodies, FixedHeaders, CODES};
use crate::routes::{MatchKind, PathChange};
use crate::upstream::{Policy, Timeouts, Upstream};
use http::HeaderValue;
use pingora_core::protocols::http::v1::server::FixedResponseHeaders;
use pingora_http::CaseHeader;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// The largest request header block Pingora's HTTP/1 reader accepts
/// (`pingora_core::protocols::http::v1::common::MAX_HEADER_SIZE`, private).
const PINGORA_MAX_HEADER_SIZE: u64 = 1_048_575;

/// Build the runtime gateway from a parsed config. `file` anchors relative
/// paths; `previous` lends state that must survive a reload.
pub fn compile(
    cfg: Config,
    file: &Path,
    previous: Option<&Gateway>,
) -> Result<Gateway, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let base = file.parent().unwrap_or(Path::new("."));
    let resolve = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };

    let process = process_settings(&cfg, &resolve, &mut errs);
    let upstreams = upstreams(&cfg, previous, &mut errs);
    let jwt = jwt(&cfg, &resolve, &mut errs);

    let allowlist = ip_set(&cfg.access.allowlist, "access.allowlist", &mut errs);
    let trusted_proxies = ip_set(
        &cfg.access.trusted_proxies,
        "access.trusted_proxies",
        &mut errs,
    );
    let zones = zones(&cfg, previous, &mut errs);

    let mut routes = Vec::with_capacity(cfg.routes.len());
    if cfg.routes.is_empty() {
        errs.push(ConfigError::new("routes", "at least one route is required"));
    }
    for (i, r) in cfg.routes.iter().enumerate() {
        let at = |k: &str| format!("routes[{i}].{k}");
        if !r.path.starts_with('/') {
            errs.push(ConfigError::new(
                at("path"),
                format!("must start with '/': {:?}", r.path),
            ));
        }
        let upstream = match upstreams.get(&r.upstream) {
            Some(u) => Some(u.clone()),
            None => {
                errs.push(ConfigError::new(
                    at("upstream"),
                    format!("unknown upstream {:?}", r.upstream),
                ));
                None
            }
        };
        let uses_jwt = match r.auth {
            Some(schema::RouteAuth::Jwt) => true,
            Some(schema::RouteAuth::None) => false,
            None => cfg.auth.jwt.is_some(),
        };
        if uses_jwt && cfg.auth.jwt.is_none() {
            errs.push(ConfigError::new(
                at("auth"),
                "auth: jwt needs an auth.jwt section",
            ));
        }
        if r.allowlist && cfg.access.allowlist.is_empty() {
            errs.push(ConfigError::new(
                at("allowlist"),
                "allowlist: true with an empty access.allowlist would refuse everyone",
            ));
        }
        let change = match (&r.rewrite, r.strip_prefix) {
            (Some(_), true) => {
                errs.push(ConfigError::new(
                    at("rewrite"),
                    "rewrite and strip_prefix exclude each other",
                ));
                PathChange::Keep
            }
            (Some(to), false) if !to.starts_with('/') => {
                errs.push(ConfigError::new(
                    at("rewrite"),
                    format!("must start with '/': {to:?}"),
                ));
                PathChange::Keep
            }
            (Some(to), false) => PathChange::Rewrite(to.clone()),
            (None, true) => PathChange::StripPrefix,
            (None, false) => PathChange::Keep,
        };
        let (mut ip_zones, mut user_zones) = (Vec::new(), Vec::new());
        for (j, name) in r.rate_limits.iter().enumerate() {
            match zones.get(name) {
                Some((ZoneKey::ClientIp, z)) => ip_zones.push(z.clone()),
                Some((ZoneKey::User, z)) => {
                    if !uses_jwt {
                        errs.push(ConfigError::new(
                            format!("routes[{i}].rate_limits[{j}]"),
                            format!("zone {name:?} is keyed by user but the route has no auth"),
                        ));
                    }
                    user_zones.push(z.clone())
                }
                None => errs.push(ConfigError::new(
                    format!("routes[{i}].rate_limits[{j}]"),
                    format!("unknown rate limit zone {name:?}"),
                )),
            }
        }
        if let Some(upstream) = upstream {
            routes.push(Route {
                path: r.path.clone(),
                kind: match r.match_ {
                    schema::Match::Exact => MatchKind::Exact,
                    schema::Match::Prefix => MatchKind::Prefix,
                },
                change,
                upstream,
                jwt: uses_jwt,
                allowlist: r.allowlist,
                ip_zones,
                user_zones,
                access_log: r.access_log,
                request_buffering: r.request_buffering.unwrap_or(cfg.limits.request_buffering),
                requests: crate::metrics::RequestCounters::new(&r.path),
            });
        }
    }

    // Framing and connection fields are the server's to write: neither
    // configured nor hidden.
    const SESSION_OWNED: &str =
        "frames the response or concerns the connection: the gateway writes it";
    let mut response_headers = Vec::new();
    for (name, value) in &cfg.headers.response {
        let at = format!("headers.response.{name}");
        // Sent in the case it is written, as nginx's add_header does.
        match (
            CaseHeader::new(name).ok_or(()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), _) if FixedResponseHeaders::is_session_owned(n.name()) => {
                errs.push(ConfigError::new(at, SESSION_OWNED))
            }
            (Ok(n), Ok(v)) => response_headers.push((n, v)),
            (Err(_), _) => errs.push(ConfigError::new(at, "invalid header name")),
            (_, Err(_)) => errs.push(ConfigError::new(at, "invalid header value")),
        }
    }
    let mut hidden_headers = Vec::new();
    for (i, name) in cfg.headers.hide.iter().enumerate() {
        let at = format!("headers.hide[{i}]");
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) if FixedResponseHeaders::is_session_owned(&n) => {
                errs.push(ConfigError::new(at, SESSION_OWNED))
            }
            Ok(n) => hidden_headers.push(n),
            Err(_) => errs.push(ConfigError::new(at, "invalid header name")),
        }
    }
    let hsts = (cfg.headers.hsts > 0).then(|| {
        HeaderValue::from_str(&format!("max-age={}", cfg.headers.hsts))
            .unwrap_or(HeaderValue::from_static("max-age=31536000"))
    });

    for code in cfg.errors.keys() {
        if !CODES.contains(&code.as_str()) {
            errs.push(ConfigError::new(
                format!("errors.{code}"),
                format!("unknown error code (one of: {})", CODES.join(", ")),
            ));
        }
    }

    if let Some(redis) = &cfg.redis {
        errs.push(ConfigError::new(
            "redis",
            format!(
                "a shared Redis store ({}) is not supported by this build yet",
                redis.url
            ),
        ));
    }
    if cfg.limits.max_connections_per_ip == Some(0) {
        errs.push(ConfigError::new(
            "limits.max_connections_per_ip",
            "must be at least 1 (leave it out for no limit)",
        ));
    }
    // A zero timeout would time every read or write out at once.
    for (key, t) in [
        ("limits.header_timeout", &cfg.limits.header_timeout),
        ("limits.body_timeout", &cfg.limits.body_timeout),
        ("limits.send_timeout", &cfg.limits.send_timeout),
    ] {
        if t.0.is_zero() {
            errs.push(ConfigError::new(key, "must be more than 0"));
        }
    }
    // Every body the limits let in must fit in the buffers on its own.
    let (max_body, buffers) = (
        cfg.limits.max_body_size.0,
        cfg.limits.request_buffer_memory.0,
    );
    let buffering = cfg.limits.request_buffering
        || cfg.routes.iter().any(|r| r.request_buffering == Some(true));
    if buffering && buffers < max_body {
        errs.push(ConfigError::new(
            "limits.request_buffer_memory",
            format!(
                "{buffers} bytes cannot hold one body of limits.max_body_size ({max_body} bytes) \
                 while request_buffering is on"
            ),
        ));
    }
    if cfg.concurrency.per_user == Some(0) {
        errs.push(ConfigError::new(
            "concurrency.per_user",
            "must be at least 1",
        ));
    }
    if cfg.concurrency.upstream == Some(0) {
        errs.push(ConfigError::new(
            "concurrency.upstream",
            "must be at least 1",
        ));
    }
    let max_header_size = cfg.limits.max_header_size.0;
    if max_header_size < 1024 {
        errs.push(ConfigError::new(
            "limits.max_header_size",
            "must be at least 1k",
        ));
    }
    // Pingora refuses a header block over this itself, with a 400, before
    // any check of ours runs: a larger limit would be a promise not kept.
    if max_header_size > PINGORA_MAX_HEADER_SIZE {
        errs.push(ConfigError::new(
            "limits.max_header_size",
            format!(
                "must be at most {PINGORA_MAX_HEADER_SIZE} bytes (1M - 1, Pingora's header buffer)"
            ),
        ));
    }
    if cfg.access_log.path.is_empty() {
        errs.push(ConfigError::new(
            "access_log.path",
            "must be a file path or \"-\"",
        ));
    } else if cfg.access_log.path != "-" {
        // What start-up will open, checked now so `check` and reload agree with it.
        let path = resolve(&cfg.access_log.path);
        let problem = match std::fs::OpenOptions::new().append(true).open(&path) {
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match path.parent() {
                Some(dir) if dir.is_dir() => None,
                _ => Some(format!("directory of {} does not exist", path.display())),
            },
            Err(e) => Some(format!("cannot open {}: {e}", path.display())),
        };
        if let Some(p) = problem {
            errs.push(ConfigError::new("access_log.path", p));
        }
    }

    let fixed = FixedHeaders::new(&response_headers, hsts.as_ref(), &hidden_headers);
    let fixed_headers = fixed.unwrap_or_else(|e| {
        errs.push(ConfigError::new("headers.response", e.to_string()));
        FixedHeaders::default()
    });

    let (Some(process), true) = (process, errs.is_empty()) else {
        return Err(errs);
    };
    Ok(Gateway {
        file: file.to_path_buf(),
        loaded_at: SystemTime::now(),
        process,
        routes,
        upstreams,
        jwt,
        allowlist: allowlist.unwrap_or_default(),
        trusted_proxies: trusted_proxies.unwrap_or_default(),
        zones,
        per_user_cap: cfg.concurrency.per_user,
        upstream_cap: cfg.concurrency.upstream,
        user_inflight: previous.map_or_else(
            || Arc::new(UserInflight::default()),
            |p| p.user_inflight.clone(),
        ),
        per_ip_cap: cfg.limits.max_connections_per_ip,
        client_ip_inflight: previous.map_or_else(
            || Arc::new(ClientIpInflight::default()),
            |p| p.client_ip_inflight.clone(),
        ),
        max_body_size: cfg.limits.max_body_size.0,
        request_buffer_memory: cfg.limits.request_buffer_memory.0,
        buffer_memory: previous.map_or_else(
            || Arc::new(BufferMemory::default()),
            |p| p.buffer_memory.clone(),
        ),
        max_header_size: usize::try_from(max_header_size).unwrap_or(usize::MAX),
        keepalive_timeout: cfg.limits.keepalive_timeout.0,
        header_timeout: cfg.limits.header_timeout.0,
        body_timeout: cfg.limits.body_timeout.0,
        send_timeout: cfg.limits.send_timeout.0,
        fixed_headers,
        response_headers,
        hsts,
        hidden_headers,
        errors: ErrorBodies::new(&cfg.errors),
        unrouted: crate::metrics::RequestCounters::new(""),
        access_log_path: if cfg.access_log.path == "-" {
            "-".into()
        } else {
            resolve(&cfg.access_log.path).display().to_string()
        },
    })
}

fn process_settings(
    cfg: &Config,
    resolve: &dyn Fn(&str) -> PathBuf,
    errs: &mut Vec<ConfigError>,
) -> Option<ProcessSettings> {
    let mut ok = true;
    let mut fail = |path: String, msg: String| {
        errs.push(ConfigError::new(path, msg));
        ok = false;
    };
    let s = &cfg.server;
    if s.threads == 0 || s.threads > 1024 {
        fail("server.threads".into(), "must be between 1 and 1024".into());
    }
    if s.cpu_affinity && s.work_stealing {
        // Tasks move between work-stealing threads: pinning the threads
        // would not keep a connection on a CPU.
        fail(
            "server.cpu_affinity".into(),
            "needs server.work_stealing: false (work-stealing threads trade \
             connections, so pinning them keeps nothing on a CPU)"
                .into(),
        );
    }
    let admin = match &s.admin {
        None => None,
        Some(a) => match a.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                fail(
                    "server.admin".into(),
                    format!("invalid address {a:?} (use ip:port)"),
                );
                None
            }
        },
    };
    let mut listeners = Vec::new();
    if cfg.listeners.is_empty() {
        fail(
            "listeners".into(),
            "at least one listener is required".into(),
        );
    }
    for (i, l) in cfg.listeners.iter().enumerate() {
        let addr = match l.address.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                fail(
                    format!("listeners[{i}].address"),
                    format!("invalid address {:?} (use ip:port)", l.address),
                );
                continue;
            }
        };
        if admin == Some(addr) || listeners.iter().any(|x: &ListenerSpec| x.addr == addr) {
            fail(
                format!("listeners[{i}].address"),
                format!("{addr} is used twice"),
            );
        }
        let tls = match &l.tls {
            None => None,
            Some(t) => {
                let min_tls13 = match t.min_version.as_str() {
                    "1.2" => false,
                    "1.3" => true,
                    v => {
                        fail(
                            format!("listeners[{i}].tls.min_version"),
                            format!("must be \"1.2\" or \"1.3\", not {v:?}"),
                        );
                        false
                    }
                };
                let (cert, key) = (resolve(&t.cert), resolve(&t.key));
                if let Err(e) = crate::tls::check_pair(&cert, &key) {
                    fail(format!("listeners[{i}].tls"), e);
                }
                Some(TlsSpec {
                    cert,
                    key,
                    min_tls13,
                })
            }
        };
        if l.redirect_https && tls.is_some() {
            fail(
                format!("listeners[{i}].redirect_https"),
                "a TLS listener cannot redirect to itself".into(),
            );
        }
        if l.http2.is_some() && tls.is_none() {
            fail(
                format!("listeners[{i}].http2"),
                "HTTP/2 needs tls (h2c is not offered)".into(),
            );
        }
        listeners.push(ListenerSpec {
            addr,
            redirect_https: l.redirect_https,
            http2: tls.is_some() && l.http2.unwrap_or(true),
            tls,
        });
    }
    if cfg.listeners.iter().any(|l| l.redirect_https)
        && !cfg.listeners.iter().any(|l| l.tls.is_some())
    {
        fail(
            "listeners".into(),
            "redirect_https needs a TLS listener to redirect to".into(),
        );
    }
    let keepalive_pool = cfg
        .upstreams
        .values()
        .map(|u| u.keepalive)
        .sum::<usize>()
        .max(1);
    ok.then(|| ProcessSettings {
        threads: s.threads,
        work_stealing: s.work_stealing,
        cpu_affinity: s.cpu_affinity,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        grace_period: s.grace_period.0,
        admin,
        listeners,
        keepalive_pool,
    })
}

fn upstreams(
    cfg: &Config,
    previous: Option<&Gateway>,
    errs: &mut Vec<ConfigError>,
) -> BTreeMap<String, Arc<Upstream>> {
    let mut out = BTreeMap::new();
    if cfg.upstreams.is_empty() {
        errs.push(ConfigError::new(
            "upstreams",
            "at least one upstream is required",
        ));
    }
    for (name, u) in &cfg.upstreams {
        let at = |k: &str| format!("upstreams.{name}.{k}");
        if u.servers.is_empty() {
            errs.push(ConfigError::new(
                at("servers"),
                "at least one server is required",
            ));
            continue;
        }
        let mut servers = Vec::new();
        for (i, s) in u.servers.iter().enumerate() {
            // Resolved once here, never on the request path.
            match s.to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(addr)) => servers.push((s.clone(), addr)),
                _ => errs.push(ConfigError::new(
                    format!("upstreams.{name}.servers[{i}]"),
                    format!("cannot resolve {s:?} (use host:port)"),
                )),
            }
        }
        if let Some(hc) = &u.health_check {
            if !hc.path.starts_with('/') {
                errs.push(ConfigError::new(
                    at("health_check.path"),
                    "must start with '/'",
                ));
            }
            if hc.healthy_after == 0 || hc.unhealthy_after == 0 {
                errs.push(ConfigError::new(
                    at("health_check"),
                    "healthy_after and unhealthy_after must be at least 1",
                ));
            }
            if hc.interval.0.is_zero() || hc.timeout.0.is_zero() {
                errs.push(ConfigError::new(
                    at("health_check"),
                    "interval and timeout must be above 0",
                ));
            }
        }
        let health = u
            .health_check
            .as_ref()
            .map(|hc| crate::upstream::HealthSpec {
                path: hc.path.clone(),
                interval: hc.interval.0,
                timeout: hc.timeout.0,
                healthy_after: hc.healthy_after,
                unhealthy_after: hc.unhealthy_after,
            });
        // The in-flight count outlives a reload, or a reload would reset the cap.
        let inflight = previous.and_then(|p| p.upstreams.get(name)).map_or_else(
            || Arc::new(UpstreamInflight::default()),
            |p| p.inflight.clone(),
        );
        let policy = match u.policy {
            schema::Policy::LeastInflight => Policy::LeastInflight,
            schema::Policy::RoundRobin => Policy::RoundRobin,
        };
        let timeouts = Timeouts {
            connect: u.connect_timeout.0,
            read: u.read_timeout.0,
            write: u.write_timeout.0,
        };
        out.insert(
            name.clone(),
            Arc::new(upstream_with_health(
                name, servers, policy, timeouts, inflight, health, previous,
            )),
        );
    }
    out
}

/// A server keeps the health it was last found in across a reload, so a
/// reload does not send traffic back to a server known to be down.
fn upstream_with_health(
    name: &str,
    servers: Vec<(String, SocketAddr)>,
    policy: Policy,
    timeouts: Timeouts,
    inflight: Arc<UpstreamInflight>,
    health: Option<crate::upstream::HealthSpec>,
    previous: Option<&Gateway>,
) -> Upstream {
    let mut up = Upstream::new(name, servers, policy, timeouts, inflight);
    if health.is_some() {
        if let Some(old) = previous.and_then(|p| p.upstreams.get(name)) {
            for b in &up.backends {
                if let Some(o) = old.backends.iter().find(|o| o.label == b.label) {
                    let h = o.healthy.load(std::sync::atomic::Ordering::Relaxed);
                    b.healthy.store(h, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }
    up.health = health;
    up
}

fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // One trailing newline is an editor's, not the key's.
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    Ok(bytes)
}

fn jwt(
    cfg: &Config,
    resolve: &dyn Fn(&str) -> PathBuf,
    errs: &mut Vec<ConfigError>,
) -> Option<JwtVerifier> {
    let j = cfg.auth.jwt.as_ref()?;
    let at = |k: &str| format!("auth.jwt.{k}");
    let mut algorithms = Vec::new();
    for (i, a) in j.algorithms.iter().enumerate() {
        match a.parse::<jsonwebtoken::Algorithm>() {
            Ok(alg) => algorithms.push(alg),
            Err(_) => errs.push(ConfigError::new(
                format!("auth.jwt.algorithms[{i}]"),
                format!("unknown algorithm {a:?}"),
            )),
        }
    }
    if j.algorithms.is_empty() {
        errs.push(ConfigError::new(
            at("algorithms"),
            "at least one algorithm is required",
        ));
    }
    let sources = [
        j.secret_file.is_some(),
        j.secret_env.is_some(),
        j.public_key_file.is_some(),
        j.jwks_file.is_some(),
    ];
    if sources.iter().filter(|x| **x).count() != 1 {
        errs.push(ConfigError::new(
            "auth.jwt",
            "set exactly one of secret_file, secret_env, public_key_file, jwks_file",
        ));
        return None;
    }
    let key = if let Some(f) = &j.secret_file {
        read_secret(&resolve(f))
            .map(KeySource::Secret)
            .map_err(|e| (at("secret_file"), e))
    } else if let Some(var) = &j.secret_env {
        std::env::var(var)
            .map(|v| KeySource::Secret(v.into_bytes()))
            .map_err(|_| {
                (
                    at("secret_env"),
                    format!("environment variable {var} is not set"),
                )
            })
    } else if let Some(f) = &j.public_key_file {
        std::fs::read(resolve(f))
            .map(KeySource::PublicKeyPem)
            .map_err(|e| (at("public_key_file"), format!("cannot read {f}: {e}")))
    } else if let Some(f) = &j.jwks_file {
        std::fs::read_to_string(resolve(f))
            .map(KeySource::Jwks)
            .map_err(|e| (at("jwks_file"), format!("cannot read {f}: {e}")))
    } else {
        return None;
    };
    let key = match key {
        Ok(k) => k,
        Err((path, msg)) => {
            errs.push(ConfigError::new(path, msg));
            return None;
        }
    };
    let signing_key_pem = match &j.signing_key_file {
        None => None,
        Some(f) => match std::fs::read(resolve(f)) {
            Ok(b) => Some(b),
            Err(e) => {
                errs.push(ConfigError::new(
                    at("signing_key_file"),
                    format!("cannot read {f}: {e}"),
                ));
                None
            }
        },
    };
    if j.user_claim.is_empty() {
        errs.push(ConfigError::new(at("user_claim"), "must not be empty"));
    }
    let settings = JwtSettings {
        algorithms,
        key,
        signing_key_pem,
        require_exp: j.require_exp,
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
        leeway_secs: j.leeway.0.as_secs(),
        user_claim: j.user_claim.clone(),
    };
    match JwtVerifier::new(settings) {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(ConfigError::new("auth.jwt", e));
            None
        }
    }
}

fn ip_set(entries: &[String], path: &str, errs: &mut Vec<ConfigError>) -> Option<IpSet> {
    match IpSet::parse(entries) {
        Ok(s) => Some(s),
        Err(bad) => {
            for (i, msg) in bad {
                errs.push(ConfigError::new(format!("{path}[{i}]"), msg));
            }
            None
        }
    }
}

fn zones(
    cfg: &Config,
    previous: Option<&Gateway>,
    errs: &mut Vec<ConfigError>,
) -> BTreeMap<String, (ZoneKey, Arc<RateZone>)> {
    let mut out = BTreeMap::new();
    for (name, z) in &cfg.rate_limits {
        let at = |k: &str| format!("rate_limits.{name}.{k}");
        let rate = match ZoneSpec::parse_rate(&z.rate) {
            Ok(r) => r,
            Err(e) => {
                errs.push(ConfigError::new(at("rate"), e));
                continue;
            }
        };
        if z.nodelay && z.delay.is_some() {
            errs.push(ConfigError::new(
                at("delay"),
                "delay and nodelay exclude each other",
            ));
        }
        if z.store == schema::Store::Redis && cfg.redis.is_none() {
            errs.push(ConfigError::new(
                at("store"),
                "store: redis needs a redis: section",
            ));
        }
        if z.max_keys == 0 {
            errs.push(ConfigError::new(at("max_keys"), "must be at least 1"));
        }
        let spec = ZoneSpec {
            rate,
            burst: z.burst,
            delay: if z.nodelay {
                u64::MAX
            } else {
                z.delay.unwrap_or(0)
            },
            max_keys: z.max_keys.max(1),
        };
        let key = match z.key {
            schema::ZoneKey::ClientIp => ZoneKey::ClientIp,
            schema::ZoneKey::User => ZoneKey::User,
        };
        // A zone whose definition did not change keeps its counters.
        let zone = previous
            .and_then(|p| p.zones.get(name))
            .filter(|(k, old)| *k == key && old.spec == spec)
            .map(|(_, old)| old.clone())
            .unwrap_or_else(|| Arc::new(RateZone::new(name, spec)));
        out.insert(name.clone(), (key, zone));
    }
    out
}
