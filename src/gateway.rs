//! The compiled configuration: everything the request path reads, built
//! once per load by `config::compile` and swapped in whole on reload. The
//! proxy takes one snapshot per request, so a request finishes on the
//! config it started with and never sees a half-applied reload.

use crate::checks::allowlist::IpSet;
use crate::checks::concurrency::{ClientIpInflight, UserInflight};
use crate::checks::jwt::JwtVerifier;
use crate::checks::rate_limit::RateZone;
use crate::checks::request_buffer::BufferMemory;
use crate::respond::ErrorBodies;
use crate::routes::{MatchKind, PathChange};
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use http::HeaderValue;
use pingora_http::CaseHeader;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A listening socket. Applied at start only (changing it needs `-u`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub addr: SocketAddr,
    pub redirect_https: bool,
    pub tls: Option<TlsSpec>,
    pub http2: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub min_tls13: bool,
}

/// Process-level settings, applied at start only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSettings {
    pub threads: usize,
    pub work_stealing: bool,
    pub cpu_affinity: bool,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub grace_period: Duration,
    pub admin: Option<SocketAddr>,
    pub listeners: Vec<ListenerSpec>,
    /// Sum of the upstreams' `keepalive`: Pingora has one pool for all.
    pub keepalive_pool: usize,
}

/// Which requests a rate-limit zone counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneKey {
    ClientIp,
    User,
}

pub struct Route {
    pub path: String,
    pub kind: MatchKind,
    pub change: PathChange,
    pub upstream: Arc<Upstream>,
    pub jwt: bool,
    pub allowlist: bool,
    /// Zones keyed by client IP: run before JWT.
    pub ip_zones: Vec<Arc<RateZone>>,
    /// Zones keyed by user: run after JWT.
    pub user_zones: Vec<Arc<RateZone>>,
    pub access_log: bool,
    /// Read each body whole before the upstream is asked (`checks::request_buffer`).
    pub request_buffering: bool,
    /// `colorgate_requests_total{route=path}`, resolved once per status.
    pub requests: crate::metrics::RequestCounters,
}

/// Everything a request reads, compiled from one config file.
pub struct Gateway {
    pub file: PathBuf,
    pub loaded_at: SystemTime,
    pub process: ProcessSettings,
    pub routes: Vec<Route>,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    pub jwt: Option<JwtVerifier>,
    pub allowlist: IpSet,
    pub trusted_proxies: IpSet,
    pub zones: BTreeMap<String, (ZoneKey, Arc<RateZone>)>,
    pub per_user_cap: Option<usize>,
    pub upstream_cap: Option<usize>,
    pub user_inflight: Arc<UserInflight>,
    /// nginx's `limit_conn` on the client address: requests in flight per IP.
    pub per_ip_cap: Option<usize>,
    pub client_ip_inflight: Arc<ClientIpInflight>,
    pub max_body_size: u64,
    /// The most memory `buffer_memory` may hold.
    pub request_buffer_memory: u64,
    /// Bodies being buffered, all requests together; kept across reloads.
    pub buffer_memory: Arc<BufferMemory>,
    pub max_header_size: usize,
    pub keepalive_timeout: Duration,
    /// nginx's `client_header_timeout`; process-wide (`server::apply_header_timeout`).
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub send_timeout: Duration,
    pub response_headers: Vec<(CaseHeader, HeaderValue)>,
    pub hsts: Option<HeaderValue>,
    /// Fields of an upstream's answer not passed on (`headers.hide`).
    pub hidden_headers: Vec<http::HeaderName>,
    /// `response_headers` and `hsts`, serialized for HTTP/1 responses,
    /// and `hidden_headers`.
    pub fixed_headers: crate::respond::FixedHeaders,
    pub errors: ErrorBodies,
    /// `colorgate_requests_total{route=""}`: requests no route matched.
    pub unrouted: crate::metrics::RequestCounters,
    pub access_log_path: String,
}

impl Gateway {
    /// First route that matches the normalized path.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| crate::routes::matches(r.kind, &r.path, path))
    }
}

/// The gateway in force, shared by the proxy, the admin listener and
/// reload. Reload stores a new one; requests load a snapshot.
pub type SharedGateway = Arc<ArcSwap<Gateway>>;

pub fn shared(gw: Gateway) -> SharedGateway {
    Arc::new(ArcSwap::from_pointee(gw))
}
