//! The request's story, in the contract's order (CONTRACT §3). Each step is
//! one call into a small module under `checks/`; the first refusal answers.
//!
//! malformed? (400/431) → route (404) → allowlist (403) → per-IP rate
//! limits and in-flight cap (429) → JWT (401) → per-user rate limits and
//! in-flight cap (429) → body size (413) → the body read whole (413/503,
//! `request_buffering`) → the upstream's in-flight cap (503) → proxy, with
//! forwarded headers set and client-sent ones replaced → security headers
//! on the way back → access log and metrics.

use crate::access_log::AccessLog;
use crate::checks::{body_limit, rate_limit, request_buffer, request_sanity};
use crate::gateway::{Gateway, Route, SharedGateway};
use crate::respond::{self, Reject};
use crate::{client_ip, headers, routes};
use bytes::Bytes;
use pingora_core::protocols::http::v1::common::is_expect_continue_req;
use pingora_core::protocols::http::ServerSession as HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{H1Fields, RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What kind of listener a proxy service serves.
#[derive(Debug, Clone, Copy)]
pub enum ListenerKind {
    Plain,
    Tls,
    /// Answers every request with a 301 to the TLS listener on this port.
    RedirectHttps {
        tls_port: u16,
    },
}

pub struct Proxy {
    pub gateway: SharedGateway,
    pub access_log: Arc<AccessLog>,
    pub kind: ListenerKind,
}

/// Per-request state, from the first filter to the access log.
pub struct Ctx {
    gw: Arc<Gateway>,
    start: Instant,
    pub request_id: String,
    route: Option<usize>,
    /// The normalized path, when it differs from the request's.
    path: Option<String>,
    client_ip: Option<IpAddr>,
    user: Option<String>,
    /// `ok`, `none`, or why the token was refused.
    auth: &'static str,
    /// The check that refused the request (`allowlist`, `rate_limit:zone`, …).
    deny: Option<String>,
    body: body_limit::BodyCounter,
    /// The body, read whole before the upstream was contacted.
    buffered: Option<request_buffer::Buffered>,
    /// Held while the request is in flight; released on drop, on every path.
    slots: Slots,
    _active: ActiveRequest,
    /// The server of the route's upstream this request went to.
    backend: Option<usize>,
    upstream_start: Option<Instant>,
    upstream_time: Option<Duration>,
    upstream_status: Option<u16>,
}

/// Counts the request in `colorgate_requests_active` for as long as it lives.
struct ActiveRequest;

impl ActiveRequest {
    fn new() -> Self {
        crate::metrics::get().active.inc();
        ActiveRequest
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        crate::metrics::get().active.dec();
    }
}

#[derive(Default)]
struct Slots {
    _upstream: Option<crate::checks::concurrency::UpstreamSlot>,
    _user: Option<crate::checks::concurrency::UserSlot>,
    _client_ip: Option<crate::checks::concurrency::ClientIpSlot>,
    _backend: Option<crate::upstream::BackendSlot>,
}

impl Ctx {
    fn route(&self) -> Option<&Route> {
        self.route.map(|i| &self.gw.routes[i])
    }
}

/// A refusal decided by a check, with the reason for logs and metrics.
struct Refusal {
    /// `None`: the client is gone, there is no one to answer.
    reject: Option<Reject>,
    deny: Option<String>,
}

impl Refusal {
    fn new(reject: Reject, deny: &str) -> Refusal {
        Refusal {
            reject: Some(reject),
            deny: Some(deny.to_string()),
        }
    }

    /// No answer: the client is gone, or is dropped unanswered as nginx drops it.
    fn unanswered(deny: &str) -> Refusal {
        Refusal {
            reject: None,
            deny: Some(deny.to_string()),
        }
    }
}

impl From<Reject> for Refusal {
    fn from(reject: Reject) -> Self {
        Refusal {
            reject: Some(reject),
            deny: None,
        }
    }
}

impl Proxy {
    fn tls(&self) -> bool {
        matches!(self.kind, ListenerKind::Tls)
    }

    /// The checks, in order. `Ok(())` lets the request through.
    async fn admit(&self, s: &mut Session, ctx: &mut Ctx) -> std::result::Result<(), Refusal> {
        // Borrowed, not cloned: each clone and drop of the shared `Arc` is a
        // write to a cache line both worker threads use.
        let gw = &*ctx.gw;

        // Framing nginx would refuse, before anything reads the request.
        let sanity = match s.as_downstream() {
            HttpSession::H1(h1) => {
                request_sanity::check_h1(&h1.get_headers_raw_bytes(), gw.max_header_size)
            }
            _ => request_sanity::check_h2(header_bytes(s.req_header()), gw.max_header_size),
        };
        if let Err(m) = sanity {
            let reject = match m {
                request_sanity::Malformed::HeadersTooLarge => Reject::HeadersTooLarge,
                request_sanity::Malformed::BadRequest(_) => Reject::BadRequest,
            };
            return Err(Refusal::new(reject, "malformed"));
        }
        // TRACE echoes the request back; nginx answers 405 whatever the
        // location, and so does the gateway, before anything else looks.
        if s.req_header().method == http::Method::TRACE {
            return Err(Refusal::new(Reject::MethodNotAllowed, "method"));
        }

        // Route on the normalized path; climbing above `/` is a 400.
        let path = routes::normalize(s.req_header().uri.path())
            .map_err(|_| Refusal::new(Reject::BadRequest, "path"))?;
        let idx = gw
            .routes
            .iter()
            .position(|r| routes::matches(r.kind, &r.path, &path))
            .ok_or(Reject::NotFound)?;
        if let std::borrow::Cow::Owned(p) = path {
            ctx.path = Some(p);
        }
        ctx.route = Some(idx);
        let route = &gw.routes[idx];
        // A JWT route refused before the token is looked at says so in the log.
        ctx.auth = if route.jwt { "unchecked" } else { "none" };
        let ip = ctx.client_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));

        // Only allowed networks reach the GPU.
        if route.allowlist && !gw.allowlist.contains(ip) {
            return Err(Refusal::new(Reject::Forbidden, "allowlist"));
        }

        // Per-IP limits run before JWT, so a flood of bad tokens is cut
        // cheaply. With per-user zones too, they are only peeked here and
        // charged together with those after JWT: as in nginx, a request a
        // later zone rejects costs the earlier zones nothing.
        let key = ip_key(ip);
        let ip_zones: Zones = route.ip_zones.iter().map(|z| (&**z, &key[..])).collect();
        let defer_ip = route.jwt && !route.user_zones.is_empty() && !ip_zones.is_empty();
        if defer_ip {
            if let rate_limit::Decision::Reject {
                zone,
                retry_after_secs,
            } = rate_limit::peek(&ip_zones, rate_limit::monotonic_ms())
            {
                return Err(limited(&ip_zones, zone, retry_after_secs));
            }
        } else if !ip_zones.is_empty() {
            apply_rate_limit(s, &ip_zones).await?;
        }

        // nginx's `limit_conn` on the client address: one client cannot
        // hold every worker and upstream slot with parallel requests.
        if let Some(cap) = gw.per_ip_cap {
            match gw.client_ip_inflight.acquire(&ip, cap) {
                Some(slot) => ctx.slots._client_ip = Some(slot),
                None => {
                    if defer_ip {
                        // Refused by the cap, not by a zone: the zones count it.
                        apply_rate_limit(s, &ip_zones).await?;
                    }
                    let reject = Reject::RateLimited { retry_after: 1 };
                    return Err(Refusal::new(reject, "max_connections_per_ip"));
                }
            }
        }

        // The token: checked in-process, never logged, never forwarded.
        if route.jwt {
            let verifier = gw.jwt.as_ref().ok_or(Reject::Internal)?;
            let auth = s.req_header().headers.get(http::header::AUTHORIZATION);
            let verified = verifier.verify_bearer(auth.map(|v| v.as_bytes()));
            match verified {
                Ok(user) => {
                    ctx.auth = "ok";
                    ctx.user = Some(user);
                }
                Err(why) => {
                    ctx.auth = why.as_str();
                    if defer_ip {
                        // Refused by JWT, not by a zone: the per-IP zones count it.
                        apply_rate_limit(s, &ip_zones).await?;
                    }
                    let bearer_sent = !why.is_missing();
                    return Err(Refusal::new(Reject::Unauthorized { bearer_sent }, "auth"));
                }
            }
        }

        // Per-user limits and the in-flight caps that protect the GPU.
        if let Some(user) = ctx.user.as_deref() {
            if !route.user_zones.is_empty() {
                let deferred = ip_zones.iter().copied().filter(|_| defer_ip);
                let users = route.user_zones.iter().map(|z| (&**z, user.as_bytes()));
                let zones: Zones = deferred.chain(users).collect();
                apply_rate_limit(s, &zones).await?;
            }
            if let Some(cap) = gw.per_user_cap {
                let slot = gw.user_inflight.acquire(user, cap).ok_or_else(|| {
                    Refusal::new(Reject::RateLimited { retry_after: 1 }, "concurrency:user")
                })?;
                ctx.slots._user = Some(slot);
            }
        }
        // Body size from Content-Length, before the upstream is contacted.
        let declared = content_length(s.req_header());
        if !body_limit::declared_fits(declared, gw.max_body_size) {
            return Err(Refusal::new(Reject::PayloadTooLarge, "body_size"));
        }
        Ok(())
    }

    /// Between admission and the upstream: the client told to send its
    /// body, the body read whole (`request_buffering`), a slot at the upstream.
    async fn prepare_upstream(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
    ) -> std::result::Result<(), Refusal> {
        s.set_read_timeout(Some(ctx.gw.body_timeout));
        let has_body = !s.is_body_empty();
        // Memory for a declared body is found before the client sends it.
        let buffering = ctx.route().is_some_and(|r| r.request_buffering);
        let collector = if buffering && has_body {
            Some(start_buffering(s, ctx)?)
        } else {
            // Streamed: the upstream is busy from the first byte.
            hold_upstream_slot(ctx)?;
            None
        };
        // Admitted: a client waiting to send its body (HTTP/1.1
        // `Expect: 100-continue`) is told to go on, as nginx tells it;
        // refusals come instead. An upstream may never answer it
        // (Werkzeug does not: curl waited a second before each upload
        // over 1 MiB), and `Expect` is not passed on (`headers`).
        if has_body && is_expect_continue_req(s.req_header()) {
            s.write_continue_response()
                .await
                .map_err(|_| Refusal::unanswered("client_closed"))?;
        }
        if let Some(collector) = collector {
            let mut buffered = read_whole_body(s, ctx, collector).await?;
            // Only now is the GPU's slot taken: a slow upload never holds it.
            hold_upstream_slot(ctx)?;
            // The proxy reads the body again from the session, as it arrived.
            let pieces = std::mem::take(&mut buffered.pieces);
            s.downstream_session
                .replay_request_body(pieces)
                .map_err(|_| Refusal::from(Reject::Internal))?;
            ctx.buffered = Some(buffered);
        }
        Ok(())
    }

    /// Write one of our JSON errors and end the request.
    async fn refuse(&self, s: &mut Session, ctx: &mut Ctx, reject: Reject) -> Result<()> {
        let gw = ctx.gw.clone();
        let body = gw.errors.body(reject, &ctx.request_id);
        let mut header = respond::error_fields(reject, body.len())?;
        let session = &mut s.downstream_session;
        respond::add_own_headers(session, &mut header, &gw, &ctx.request_id, self.tls())?;
        if has_body(s.req_header()) && !s.is_body_done() {
            // The body was not read: the connection cannot carry another request.
            s.set_keepalive(None);
        }
        s.write_response_header(Box::new(header), false).await?;
        s.write_response_body(Some(body), true).await?;
        Ok(())
    }

    async fn redirect(&self, s: &mut Session, ctx: &mut Ctx, tls_port: u16) -> Result<()> {
        let req = s.req_header();
        let host = match req.headers.get(http::header::HOST) {
            Some(h) => h.to_str().ok().filter(|h| valid_host(h)),
            // HTTP/1.0 may omit Host; HTTP/1.1 must send it (nginx: 400).
            None if req.version < http::Version::HTTP_11 => Some("localhost"),
            None => None,
        };
        let Some(host) = host else {
            ctx.deny = Some("malformed".into());
            return self.refuse(s, ctx, Reject::BadRequest).await;
        };
        let host = strip_port(host);
        // `OPTIONS *` has no path to keep.
        let uri = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = if uri.starts_with('/') { uri } else { "/" };
        let location = if tls_port == 443 {
            format!("https://{host}{uri}")
        } else {
            format!("https://{host}:{tls_port}{uri}")
        };
        let mut resp = ResponseHeader::build(301, Some(6))?;
        resp.insert_header(http::header::LOCATION, location)?;
        resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
        let session = &mut s.downstream_session;
        respond::add_own_headers(session, &mut resp, &ctx.gw, &ctx.request_id, false)?;
        if has_body(s.req_header()) {
            s.set_keepalive(None);
        }
        s.write_response_header(Box::new(resp), true).await
    }
}

/// The upstream's in-flight cap (`concurrency.upstream`), the GPU's guard.
fn hold_upstream_slot(ctx: &mut Ctx) -> std::result::Result<(), Refusal> {
    let route = ctx.route().ok_or(Reject::Internal)?;
    let slot = route
        .upstream
        .inflight
        .acquire(ctx.gw.upstream_cap)
        .ok_or_else(|| {
            let reject = Reject::Unavailable { retry_after: 1 };
            Refusal::new(reject, "concurrency:upstream")
        })?;
    ctx.slots._upstream = Some(slot);
    Ok(())
}

/// Memory for a body about to be read whole: its declared length, taken
/// now, so a body that cannot fit is refused before it is sent.
fn start_buffering(
    s: &Session,
    ctx: &Ctx,
) -> std::result::Result<request_buffer::Collector, Refusal> {
    let gw = &*ctx.gw;
    let declared = content_length(s.req_header());
    let limit = gw.request_buffer_memory;
    request_buffer::Collector::start(&gw.buffer_memory, limit, declared, gw.max_body_size)
        .map_err(buffering_refusal)
}

/// The request's body, read whole within `max_body_size`, the buffers'
/// memory and `body_timeout` (set on the session) per read.
async fn read_whole_body(
    s: &mut Session,
    ctx: &mut Ctx,
    mut collector: request_buffer::Collector,
) -> std::result::Result<request_buffer::Buffered, Refusal> {
    loop {
        match s.read_request_body().await {
            Ok(Some(piece)) => {
                ctx.body.add(piece.len(), u64::MAX);
                collector.push(piece).map_err(buffering_refusal)?;
            }
            Ok(None) => return Ok(collector.finish()),
            Err(e) => return Err(buffering_refusal(request_buffer::stop_for(&e))),
        }
    }
}

fn buffering_refusal(stop: request_buffer::Stop) -> Refusal {
    use request_buffer::Stop;
    match stop {
        Stop::TooLarge => Refusal::new(Reject::PayloadTooLarge, "body_size"),
        Stop::NoMemory => Refusal::new(Reject::Unavailable { retry_after: 1 }, "request_buffer"),
        Stop::Malformed => Refusal::new(Reject::BadRequest, "malformed"),
        // nginx on client_body_timeout: closed unanswered, logged 408.
        Stop::TimedOut => Refusal::unanswered("body_timeout"),
        Stop::ClientGone => Refusal::unanswered("client_closed"),
    }
}

fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The zones one request is checked against, with the key it has in each;
/// routes have a few, so they live on the stack.
type Zones<'a> = smallvec::SmallVec<[(&'a rate_limit::RateZone, &'a [u8]); 4]>;

/// `limits.keepalive_timeout` as Pingora takes it: whole seconds, where 0
/// would mean "for ever". As in nginx, 0 turns keep-alive off; a fraction
/// of a second is rounded up rather than down to that "for ever".
fn keepalive_secs(t: Duration) -> Option<u64> {
    (!t.is_zero()).then(|| t.as_secs() + u64::from(t.subsec_nanos() > 0))
}

/// nginx limit_req across the route's zones: delay (without blocking a
/// thread) or refuse.
async fn apply_rate_limit(
    s: &mut Session,
    zones: &[(&rate_limit::RateZone, &[u8])],
) -> std::result::Result<(), Refusal> {
    match rate_limit::check(zones, rate_limit::monotonic_ms()) {
        rate_limit::Decision::Allow { delay_ms: 0 } => Ok(()),
        rate_limit::Decision::Allow { delay_ms } => {
            let sleep = tokio::time::sleep(Duration::from_millis(delay_ms));
            if has_body(s.req_header()) {
                sleep.await;
                return Ok(());
            }
            // As nginx: a client that hangs up during its delay is not proxied.
            tokio::select! {
                () = sleep => Ok(()),
                _ = s.read_body_or_idle(true) => Err(Refusal::unanswered("client_closed")),
            }
        }
        rate_limit::Decision::Reject {
            zone,
            retry_after_secs,
        } => Err(limited(zones, zone, retry_after_secs)),
    }
}

fn limited(zones: &[(&rate_limit::RateZone, &[u8])], zone: usize, retry_after: u64) -> Refusal {
    Refusal {
        reject: Some(Reject::RateLimited { retry_after }),
        deny: Some(format!("rate_limit:{}", zones[zone].0.name)),
    }
}

fn ip_key(ip: IpAddr) -> [u8; 16] {
    match crate::checks::allowlist::canonical(ip) {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn has_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

fn header_bytes(req: &RequestHeader) -> usize {
    req.headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.uri.path_and_query().map_or(0, |p| p.as_str().len())
}

/// RFC 3986 `host [":" port]`: an IP literal in brackets, or a reg-name /
/// IPv4 address; anything else (a `/`, `@`, space...) is not a host.
fn valid_host(h: &str) -> bool {
    let (name_ok, rest) = match h.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((lit, rest)) => (
                !lit.is_empty()
                    && lit
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b":.%".contains(&b)),
                rest,
            ),
            None => return false,
        },
        None => {
            let (name, rest) = h.find(':').map_or((h, ""), |i| h.split_at(i));
            (
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b)),
                rest,
            )
        }
    };
    name_ok
        && (rest.is_empty()
            || rest
                .strip_prefix(':')
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())))
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port → [v6]
        return rest.find(']').map_or(host, |i| &host[..i + 2]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            gw: self.gateway.load_full(),
            start: Instant::now(),
            request_id: String::new(),
            route: None,
            path: None,
            client_ip: None,
            user: None,
            auth: "none",
            deny: None,
            body: Default::default(),
            buffered: None,
            slots: Slots::default(),
            _active: ActiveRequest::new(),
            backend: None,
            upstream_start: None,
            upstream_time: None,
            upstream_status: None,
        }
    }

    /// The compression module is never used: skip its per-request cost.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    async fn request_filter(&self, s: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // Borrowed, not cloned (see `admit`).
        let gw = &*ctx.gw;
        // Who is asking: the peer, or the client behind a trusted proxy.
        let peer = s
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let sent = &s.req_header().headers;
        // What a peer says about the client is read only from a trusted proxy.
        let trusted_peer = client_ip::is_trusted(peer, &gw.trusted_proxies);
        ctx.client_ip = Some(if trusted_peer {
            // Every X-Forwarded-For line counts: a proxy may add its own line.
            let xff = client_ip::all_lines(sent, headers::X_FORWARDED_FOR.name());
            client_ip::resolve(
                peer,
                xff.as_deref(),
                sent.get(headers::X_REAL_IP.name()).map(|v| v.as_bytes()),
                &gw.trusted_proxies,
            )
        } else {
            client_ip::canonical(peer)
        });
        let sent_id = trusted_peer.then(|| sent.get(headers::X_REQUEST_ID.name()));
        ctx.request_id = match sent_id.flatten() {
            Some(v) if respond::acceptable_request_id(v.as_bytes()) => {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            }
            _ => respond::new_request_id(),
        };
        s.set_keepalive(keepalive_secs(gw.keepalive_timeout));
        // Requests a client sends before reading the answers (HTTP/1.1
        // pipelining) are served in order, as nginx serves them. Without
        // this, Pingora answers the first and closes the connection.
        s.downstream_session.set_pipelining_enabled(true);
        // nginx send_timeout: a client that stops reading our answer is dropped.
        s.set_write_timeout(Some(gw.send_timeout));

        if let ListenerKind::RedirectHttps { tls_port } = self.kind {
            self.redirect(s, ctx, tls_port).await?;
            return Ok(true);
        }
        let admitted = match self.admit(s, ctx).await {
            Ok(()) => self.prepare_upstream(s, ctx).await,
            refused => refused,
        };
        match admitted {
            Ok(()) => Ok(false),
            Err(refusal) => {
                ctx.deny = refusal.deny;
                match refusal.reject {
                    Some(reject) => {
                        self.refuse(s, ctx, reject).await?;
                        Ok(true)
                    }
                    // From the client's side: `fail_to_proxy` answers nothing.
                    None => Err(
                        Error::explain(ErrorType::ConnectionClosed, "request dropped").into_down(),
                    ),
                }
            }
        }
    }

    async fn request_body_filter(
        &self,
        _s: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // A body read whole was counted as it was read; its pieces pass.
        if ctx.buffered.is_some() {
            return Ok(());
        }
        let len = body.as_ref().map_or(0, |b| b.len());
        if !ctx.body.add(len, ctx.gw.max_body_size) {
            // Stop before this chunk is forwarded: the upstream never sees
            // more than the limit.
            *body = None;
            ctx.deny = Some("body_size".into());
            return Error::e_explain(ErrorType::HTTPStatus(413), "body over max_body_size");
        }
        Ok(())
    }

    async fn upstream_peer(&self, _s: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let route_idx = ctx
            .route
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route"))?;
        let upstream = &ctx.gw.routes[route_idx].upstream;
        let (backend, peer, slot) = upstream.pick().ok_or_else(|| {
            Error::explain(ErrorType::HTTPStatus(503), "every server is unhealthy")
        })?;
        ctx.slots._backend = Some(slot);
        ctx.backend = Some(backend);
        ctx.upstream_start = Some(Instant::now());
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        s: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(route) = ctx.route() {
            // Absolute-form targets go upstream in origin-form (RFC 9112 3.2.1).
            if route.change != routes::PathChange::Keep
                || ctx.path.is_some()
                || !req.raw_path().starts_with(b"/")
            {
                let path = ctx.path.as_deref().unwrap_or(req.uri.path());
                let uri = routes::upstream_uri(&route.change, &route.path, path, req.uri.query());
                // From the String itself: `parse` would copy it into a new buffer.
                let uri = http::Uri::try_from(uri)
                    .map_err(|e| Error::because(ErrorType::InternalError, "rewritten uri", e))?;
                req.set_uri(uri);
            }
        }
        if let Some(buffered) = &ctx.buffered {
            // nginx sends a buffered body with its length, however it came.
            req.remove_header(&http::header::TRANSFER_ENCODING);
            req.insert_header(http::header::CONTENT_LENGTH, buffered.len)?;
        }
        let peer = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let ip = ctx.client_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let trusted = &ctx.gw.trusted_proxies;
        // The chain received is extended only for a trusted proxy.
        let received = peer
            .filter(|p| client_ip::is_trusted(*p, trusted))
            .and_then(|_| client_ip::all_lines(&req.headers, headers::X_FORWARDED_FOR.name()));
        // Ours go as lines after the client's fields (vendor patch 45): one
        // buffer, rather than five inserts into the header map.
        let mut fields = H1Fields::with_capacity(160);
        fields.push_with(&headers::X_REAL_IP, |v| crate::json::push_ip_text(v, ip))?;
        if let Some(p) = peer {
            let chain = received.as_deref();
            fields.push_with(&headers::X_FORWARDED_FOR, |v| {
                client_ip::push_forwarded_for(v, p, chain, trusted)
            })?;
        }
        fields.push(
            &headers::X_FORWARDED_PROTO,
            if self.tls() { "https" } else { "http" },
        )?;
        fields.push(&headers::X_REQUEST_ID, &ctx.request_id)?;
        if let Some(user) = &ctx.user {
            fields.push(&headers::X_USER_ID, user)?;
        }
        drop(received);
        // Fields of these names from the client are replaced, never passed on.
        headers::remove_forwarding_fields(req);
        req.set_h1_extra_fields(fields);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_status = Some(resp.status.as_u16());
        if let Some(t) = ctx.upstream_start {
            let elapsed = t.elapsed();
            ctx.upstream_time = Some(elapsed);
            crate::metrics::get()
                .upstream_seconds
                .observe(elapsed.as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let session = &mut s.downstream_session;
        respond::add_proxied_headers(session, resp, &ctx.gw, &ctx.request_id, self.tls())
    }

    /// A request whose header Pingora refused while reading it (framing it
    /// cannot trust, a duplicate Host) still gets the contract's JSON 400,
    /// a log line and its counts, like the malformed requests we refuse.
    fn invalid_request_response(&self, s: &HttpSession, _e: &Error) -> (ResponseHeader, Bytes) {
        let gw = self.gateway.load();
        let reject = Reject::BadRequest;
        let id = respond::new_request_id();
        let body = gw.errors.body(reject, &id);
        let answer = match respond::error_header(reject, &gw, &id, self.tls(), body.len()) {
            Ok(header) => (header, body),
            Err(_) => (HttpSession::generate_error(reject.status()), Bytes::new()),
        };
        let peer = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let sent = answer.1.len() as u64;
        let status = (reject.status(), "malformed");
        crate::observe::record_unreadable(&gw, peer, &id, status, sent, &self.access_log);
        answer
    }

    /// A client that sent part of a header and not the rest within
    /// `limits.header_timeout` (a slowloris): closed without an answer and
    /// logged as 408, as nginx does on `client_header_timeout`.
    fn request_header_timed_out(&self, s: &HttpSession, _e: &Error) {
        let gw = self.gateway.load();
        let peer = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let id = respond::new_request_id();
        let status = (408, "header_timeout");
        crate::observe::record_unreadable(&gw, peer, &id, status, 0, &self.access_log);
    }

    async fn fail_to_proxy(&self, s: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        use ErrorType::*;
        let reject = match e.etype() {
            HTTPStatus(code) => Some(Reject::from_status(*code)),
            _ => match e.esource() {
                ErrorSource::Upstream => match e.etype() {
                    ReadTimedout | WriteTimedout => Some(Reject::GatewayTimeout),
                    _ => Some(Reject::BadGateway),
                },
                ErrorSource::Downstream => match e.etype() {
                    WriteError | ReadError | ConnectionClosed | ReadTimedout | WriteTimedout => {
                        None
                    }
                    _ => Some(Reject::BadRequest),
                },
                ErrorSource::Internal | ErrorSource::Unset => Some(Reject::Internal),
            },
        };
        let code = match reject {
            Some(r) if final_status(s).is_none() => {
                if let Err(err) = self.refuse(s, ctx, r).await {
                    log::debug!("could not send the {} answer: {err}", r.status());
                }
                r.status()
            }
            _ => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A refused request is not an error worth a log line; an upstream failure is.
    fn suppress_error_log(&self, _s: &Session, _ctx: &Ctx, e: &Error) -> bool {
        match e.etype() {
            ErrorType::HTTPStatus(code) => *code < 500,
            _ => *e.esource() == ErrorSource::Downstream,
        }
    }

    async fn logging(&self, s: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = match final_status(s) {
            Some(status) => status,
            // nginx logs a body that stopped arriving as 408, unanswered.
            None if ctx.deny.as_deref() == Some("body_timeout") => 408,
            None => 0,
        };
        crate::observe::record(s, ctx_view(ctx), status, &self.access_log);
    }
}

/// The status of the answer written, if one was: a `100 Continue` is not
/// one (the client still waits for it).
fn final_status(s: &Session) -> Option<u16> {
    let status = s.response_written()?.status.as_u16();
    (status >= 200).then_some(status)
}

fn ctx_view(ctx: &Ctx) -> crate::observe::RequestRecord<'_> {
    let route = ctx.route();
    crate::observe::RequestRecord {
        start: ctx.start,
        request_id: &ctx.request_id,
        route: route.map(|r| r.path.as_str()),
        counters: route.map_or(&ctx.gw.unrouted, |r| &r.requests),
        log: route.is_none_or(|r| r.access_log),
        client_ip: ctx.client_ip,
        user: ctx.user.as_deref(),
        auth: ctx.auth,
        deny: ctx.deny.as_deref(),
        upstream_addr: route
            .zip(ctx.backend)
            .map(|(r, b)| r.upstream.backends[b].label.as_str()),
        upstream_status: ctx.upstream_status,
        upstream_time: ctx.upstream_time,
        bytes_received: ctx.body.total(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_port_handles_names_v4_and_v6() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn keepalive_zero_is_off_and_fractions_round_up_not_to_for_ever() {
        assert_eq!(keepalive_secs(Duration::ZERO), None);
        assert_eq!(keepalive_secs(Duration::from_millis(500)), Some(1));
        assert_eq!(keepalive_secs(Duration::from_millis(1500)), Some(2));
        assert_eq!(keepalive_secs(Duration::from_secs(75)), Some(75));
    }
}
