//! The YAML schema, key for key as `CONTRACT.md` §2 names it. Every struct
//! denies unknown keys so a typo is an error with its path, never a silently
//! ignored setting. Defaults live here and are documented in
//! `conf/colorgate.yaml`.

use super::units::{Dur, Size};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    #[serde(default = "default_listeners")]
    pub listeners: Vec<Listener>,
    pub upstreams: BTreeMap<String, Upstream>,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub access: Access,
    #[serde(default)]
    pub rate_limits: BTreeMap<String, Zone>,
    #[serde(default)]
    pub redis: Option<Redis>,
    #[serde(default)]
    pub concurrency: Concurrency,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub headers: Headers,
    pub routes: Vec<Route>,
    #[serde(default)]
    pub access_log: AccessLog,
    #[serde(default)]
    pub errors: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub threads: usize,
    /// Pingora's `work_stealing`. Off (the default) runs one runtime per
    /// thread, each connection staying on the thread that took it, as
    /// nginx's workers; on, idle threads take tasks from busy ones, which
    /// measured slower here (benches/results/load.md and HISTORY.md).
    pub work_stealing: bool,
    /// nginx's `worker_cpu_affinity auto`: with `work_stealing: false`, pin
    /// worker thread `i` of each listener to the `i`-th CPU the process may
    /// use.
    pub cpu_affinity: bool,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub grace_period: Dur,
    /// `null` turns the admin listener off.
    pub admin: Option<String>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            threads: 2,
            work_stealing: false,
            cpu_affinity: false,
            pid_file: "/tmp/colorgate.pid".into(),
            upgrade_sock: "/tmp/colorgate_upgrade.sock".into(),
            grace_period: Dur(Duration::from_secs(30)),
            admin: Some("127.0.0.1:9180".into()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub address: String,
    #[serde(default)]
    pub redirect_https: bool,
    #[serde(default)]
    pub tls: Option<Tls>,
    #[serde(default)]
    pub http2: Option<bool>,
}

fn default_listeners() -> Vec<Listener> {
    vec![Listener {
        address: "127.0.0.1:8080".into(),
        redirect_https: false,
        tls: None,
        http2: None,
    }]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: String,
    pub key: String,
    #[serde(default = "default_min_tls")]
    pub min_version: String,
}

fn default_min_tls() -> String {
    "1.2".into()
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    LeastInflight,
    RoundRobin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub servers: Vec<String>,
    #[serde(default = "default_keepalive")]
    pub keepalive: usize,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "default_io_timeout")]
    pub read_timeout: Dur,
    #[serde(default = "default_io_timeout")]
    pub write_timeout: Dur,
    #[serde(default = "default_policy")]
    pub policy: Policy,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
}

fn default_keepalive() -> usize {
    32
}
fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_io_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_policy() -> Policy {
    Policy::LeastInflight
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    #[serde(default = "default_hc_interval")]
    pub interval: Dur,
    #[serde(default = "default_hc_timeout")]
    pub timeout: Dur,
    #[serde(default = "one")]
    pub healthy_after: u32,
    #[serde(default = "one")]
    pub unhealthy_after: u32,
}

fn default_hc_interval() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_hc_timeout() -> Dur {
    Dur(Duration::from_secs(2))
}
fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default)]
    pub jwt: Option<Jwt>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    pub secret_file: Option<String>,
    pub secret_env: Option<String>,
    pub public_key_file: Option<String>,
    pub jwks_file: Option<String>,
    pub signing_key_file: Option<String>,
    #[serde(default = "yes")]
    pub require_exp: bool,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[serde(default = "default_leeway")]
    pub leeway: Dur,
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
}

fn default_algorithms() -> Vec<String> {
    vec!["HS256".into()]
}
fn yes() -> bool {
    true
}
fn default_leeway() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_user_claim() -> String {
    "user_id".into()
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Access {
    pub trusted_proxies: Vec<String>,
    pub allowlist: Vec<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ZoneKey {
    ClientIp,
    User,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    Local,
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub rate: String,
    #[serde(default)]
    pub burst: u64,
    #[serde(default)]
    pub nodelay: bool,
    #[serde(default)]
    pub delay: Option<u64>,
    #[serde(default = "default_zone_key")]
    pub key: ZoneKey,
    #[serde(default = "default_store")]
    pub store: Store,
    /// Keys held before the least recently used is dropped (nginx's zone size).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_zone_key() -> ZoneKey {
    ZoneKey::ClientIp
}
fn default_store() -> Store {
    Store::Local
}
fn default_max_keys() -> usize {
    100_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    pub url: String,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub on_store_error: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Concurrency {
    pub per_user: Option<usize>,
    pub upstream: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_body_size: Size,
    pub max_header_size: Size,
    pub header_timeout: Dur,
    pub body_timeout: Dur,
    pub keepalive_timeout: Dur,
    pub send_timeout: Dur,
    pub max_connections_per_ip: Option<usize>,
    /// nginx's `proxy_request_buffering`: read each body whole before the
    /// upstream is contacted (`checks::request_buffer`).
    pub request_buffering: bool,
    /// Memory for the bodies being buffered, all requests together.
    pub request_buffer_memory: Size,
}

impl Default for Limits {
    fn default() -> Self {
        // nginx's defaults where nginx has one (client_max_body_size 1m,
        // client_body_timeout 60s, keepalive_timeout 75s, send_timeout 60s).
        Limits {
            max_body_size: Size(1 << 20),
            max_header_size: Size(16 << 10),
            header_timeout: Dur(Duration::from_secs(60)),
            body_timeout: Dur(Duration::from_secs(60)),
            keepalive_timeout: Dur(Duration::from_secs(75)),
            send_timeout: Dur(Duration::from_secs(60)),
            max_connections_per_ip: None,
            request_buffering: true,
            request_buffer_memory: Size(256 << 20),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Headers {
    pub response: BTreeMap<String, String>,
    pub hsts: u64,
    /// Fields of an upstream's answer not passed on (nginx's
    /// `proxy_hide_header`); `[]` passes every one.
    pub hide: Vec<String>,
}

/// nginx's `proxy_hide_header` defaults but `Date` (which the gateway
/// writes itself): the upstream's `Server` says what it runs and which
/// version, the others are meant for nginx, not for clients.
pub const NGINX_HIDDEN_HEADERS: [&str; 7] = [
    "Server",
    "X-Pad",
    "X-Accel-Expires",
    "X-Accel-Redirect",
    "X-Accel-Limit-Rate",
    "X-Accel-Buffering",
    "X-Accel-Charset",
];

impl Default for Headers {
    fn default() -> Self {
        let response = [
            ("X-Frame-Options", "DENY"),
            ("X-Content-Type-Options", "nosniff"),
            ("X-XSS-Protection", "1; mode=block"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Headers {
            response,
            hsts: 31_536_000,
            hide: NGINX_HIDDEN_HEADERS.map(String::from).to_vec(),
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    Exact,
    Prefix,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RouteAuth {
    None,
    Jwt,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub path: String,
    #[serde(default = "default_match", rename = "match")]
    pub match_: Match,
    pub upstream: String,
    #[serde(default)]
    pub rewrite: Option<String>,
    #[serde(default)]
    pub strip_prefix: bool,
    /// Omitted: `jwt` when `auth.jwt` is configured, else `none`.
    #[serde(default)]
    pub auth: Option<RouteAuth>,
    #[serde(default)]
    pub allowlist: bool,
    #[serde(default)]
    pub rate_limits: Vec<String>,
    #[serde(default = "yes")]
    pub access_log: bool,
    /// nginx's `proxy_request_buffering` for this route; omitted:
    /// `limits.request_buffering`.
    #[serde(default)]
    pub request_buffering: Option<bool>,
}

fn default_match() -> Match {
    Match::Prefix
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLog {
    pub path: String,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog { path: "-".into() }
    }
}
