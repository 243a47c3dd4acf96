//! Our own answers: the contract's JSON error bodies
//! (`{"error","message","request_id"}`), the status and extra headers for
//! each kind of refusal, and the headers every response carries (security
//! headers, `X-Request-Id`, HSTS on TLS).

use crate::gateway::Gateway;
use crate::headers;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_core::protocols::http::v1::server::FixedResponseHeaders;
use pingora_core::protocols::http::ServerSession;
use pingora_http::{CaseHeader, H1Fields, ResponseHeader};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Every way colorgate answers a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    BadRequest,
    /// `bearer_sent`: a Bearer token was sent (and was bad).
    Unauthorized {
        bearer_sent: bool,
    },
    Forbidden,
    NotFound,
    PayloadTooLarge,
    HeadersTooLarge,
    RateLimited {
        retry_after: u64,
    },
    BadGateway,
    Unavailable {
        retry_after: u64,
    },
    GatewayTimeout,
    Internal,
    /// TRACE, which nginx refuses too: it would echo the request, cookies
    /// and credentials included, back to whoever could make a browser send it.
    MethodNotAllowed,
}

/// The error codes, in the order of `Reject`'s variants (`Reject::index`).
pub const CODES: [&str; 12] = [
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "payload_too_large",
    "headers_too_large",
    "rate_limited",
    "bad_gateway",
    "unavailable",
    "gateway_timeout",
    "internal_error",
    "method_not_allowed",
];

const DEFAULT_MESSAGES: [&str; 12] = [
    "malformed request",
    "a valid access token is required",
    "access from your address is not allowed",
    "no route matches this path",
    "request body exceeds the size limit",
    "request headers exceed the size limit",
    "too many requests, retry later",
    "the upstream service is unreachable",
    "the upstream service is unavailable, retry later",
    "the upstream service timed out",
    "internal error",
    "this method is not allowed",
];

impl Reject {
    fn index(self) -> usize {
        match self {
            Reject::BadRequest => 0,
            Reject::Unauthorized { .. } => 1,
            Reject::Forbidden => 2,
            Reject::NotFound => 3,
            Reject::PayloadTooLarge => 4,
            Reject::HeadersTooLarge => 5,
            Reject::RateLimited { .. } => 6,
            Reject::BadGateway => 7,
            Reject::Unavailable { .. } => 8,
            Reject::GatewayTimeout => 9,
            Reject::Internal => 10,
            Reject::MethodNotAllowed => 11,
        }
    }

    pub fn status(self) -> u16 {
        [400, 401, 403, 404, 413, 431, 429, 502, 503, 504, 500, 405][self.index()]
    }

    pub fn code(self) -> &'static str {
        CODES[self.index()]
    }

    /// The refusal for an error status Pingora or a check produced.
    pub fn from_status(status: u16) -> Reject {
        match status {
            400 => Reject::BadRequest,
            401 => Reject::Unauthorized { bearer_sent: true },
            403 => Reject::Forbidden,
            404 => Reject::NotFound,
            405 => Reject::MethodNotAllowed,
            413 => Reject::PayloadTooLarge,
            431 => Reject::HeadersTooLarge,
            429 => Reject::RateLimited { retry_after: 1 },
            502 => Reject::BadGateway,
            503 => Reject::Unavailable { retry_after: 1 },
            504 => Reject::GatewayTimeout,
            s if (400..500).contains(&s) => Reject::BadRequest,
            _ => Reject::Internal,
        }
    }
}

/// The error bodies with their messages (defaults or `errors:` overrides),
/// rendered once at load up to the request id.
#[derive(Debug)]
pub struct ErrorBodies {
    prefixes: Vec<String>,
}

impl ErrorBodies {
    /// `overrides` maps an error code to its message; unknown codes are
    /// reported by the caller's validation, not here.
    pub fn new(overrides: &BTreeMap<String, String>) -> ErrorBodies {
        let prefixes = CODES
            .iter()
            .zip(DEFAULT_MESSAGES)
            .map(|(code, default)| {
                let msg = overrides.get(*code).map_or(default, |s| s.as_str());
                let mut p = String::from("{\"error\":\"");
                p.push_str(code);
                p.push_str("\",\"message\":");
                crate::json::push_str(&mut p, msg);
                p.push_str(",\"request_id\":");
                p
            })
            .collect();
        ErrorBodies { prefixes }
    }

    pub fn body(&self, reject: Reject, request_id: &str) -> Bytes {
        let prefix = &self.prefixes[reject.index()];
        let mut s = String::with_capacity(prefix.len() + request_id.len() + 4);
        s.push_str(prefix);
        crate::json::push_str(&mut s, request_id);
        s.push('}');
        Bytes::from(s)
    }
}

/// The configured response headers (and HSTS, for TLS listeners) as one
/// block each, serialized at config load. HTTP/1 responses carry the block
/// as it is (vendor patch 44) rather than taking each field into their
/// header map: that cost about 1.4k instructions per request, 3% of a
/// proxied request, for three fields that never change. The block also
/// drops the upstream's fields `headers.hide` names (vendor patch 53), in
/// the same pass over the response's names.
#[derive(Debug, Default)]
pub struct FixedHeaders {
    plain: Option<Arc<FixedResponseHeaders>>,
    tls: Option<Arc<FixedResponseHeaders>>,
}

impl FixedHeaders {
    pub fn new(
        fields: &[(CaseHeader, HeaderValue)],
        hsts: Option<&HeaderValue>,
        hidden: &[HeaderName],
    ) -> pingora_error::Result<Self> {
        let block = |hsts: Option<&HeaderValue>| -> pingora_error::Result<_> {
            let mut h = ResponseHeader::build(200, Some(fields.len() + 1))?;
            for (name, value) in fields {
                h.insert_header(name, value.clone())?;
            }
            if let Some(hsts) = hsts {
                h.insert_header(&headers::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
            }
            // The response's own request id is a line of its own (see
            // `add_proxied_headers`), so the block drops the upstream's.
            let dropped = hidden.iter().chain([headers::RESPONSE_REQUEST_ID.name()]);
            let fixed = FixedResponseHeaders::new(&h)?.hiding(dropped.cloned());
            Ok(Some(Arc::new(fixed)))
        };
        Ok(FixedHeaders {
            plain: block(None)?,
            tls: block(hsts)?,
        })
    }
}

/// Add what every proxied response carries (see [`add_common_headers`]).
/// On HTTP/1 the fixed fields go out as the block made at config load,
/// which also drops the upstream's fields that `headers.hide` names.
pub fn add_proxied_headers(
    session: &mut ServerSession,
    resp: &mut ResponseHeader,
    gw: &Gateway,
    request_id: &str,
    tls: bool,
) -> pingora_error::Result<()> {
    if through_fixed_block(session, gw, request_id, tls)? {
        return Ok(());
    }
    hide(resp, &gw.hidden_headers);
    add_common_headers(resp, gw, request_id, tls)
}

/// The same for the gateway's own answers (refusals, redirects), of which
/// nothing is hidden: through the block only if it drops none of their
/// fields (`headers.hide` may name `Retry-After`; it is meant for the
/// upstream's).
pub fn add_own_headers(
    session: &mut ServerSession,
    resp: &mut ResponseHeader,
    gw: &Gateway,
    request_id: &str,
    tls: bool,
) -> pingora_error::Result<()> {
    let block_drops_ours = carries_any(resp, &gw.hidden_headers);
    if !block_drops_ours && through_fixed_block(session, gw, request_id, tls)? {
        return Ok(());
    }
    add_common_headers(resp, gw, request_id, tls)
}

/// On HTTP/1, have the session write the fixed block and the request id
/// after the response's own fields: `false` (nothing done) otherwise.
fn through_fixed_block(
    session: &mut ServerSession,
    gw: &Gateway,
    request_id: &str,
    tls: bool,
) -> pingora_error::Result<bool> {
    let fixed = if tls {
        &gw.fixed_headers.tls
    } else {
        &gw.fixed_headers.plain
    };
    match fixed {
        Some(fixed) if session.set_fixed_response_headers(fixed.clone()) => {
            // A line after the block (vendor patch 56), spelled as the
            // upstream gets it, rather than a value in the header map.
            let mut line = H1Fields::with_capacity(16 + request_id.len());
            line.push(&headers::X_REQUEST_ID, request_id)?;
            session.set_response_h1_fields(line);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Drop the upstream's fields that `headers.hide` names (nginx's
/// `proxy_hide_header`), where no fixed block does it: one pass over the
/// response's names finds whether there is any.
fn hide(resp: &mut ResponseHeader, hidden: &[HeaderName]) {
    if carries_any(resp, hidden) {
        for name in hidden {
            resp.remove_header(name);
        }
    }
}

/// Whether `resp` has a field of any of these names: one pass over its
/// names, not a lookup per name.
fn carries_any(resp: &ResponseHeader, names: &[HeaderName]) -> bool {
    resp.headers.keys().any(|n| names.contains(n))
}

/// Add what every response carries: the configured security headers, the
/// request id, and HSTS on TLS listeners.
pub fn add_common_headers(
    resp: &mut ResponseHeader,
    gw: &Gateway,
    request_id: &str,
    tls: bool,
) -> pingora_error::Result<()> {
    for (name, value) in &gw.response_headers {
        resp.insert_header(name, value.clone())?;
    }
    // Never indexed by HPACK (HTTP/2): a value that is new on every
    // response would otherwise enter the connection's table each time and
    // push out the entries of the fields that repeat (the security headers).
    let mut id = HeaderValue::from_str(request_id).map_err(|e| {
        pingora_error::Error::because(pingora_error::ErrorType::InternalError, "request id", e)
    })?;
    id.set_sensitive(true);
    resp.insert_header(&headers::RESPONSE_REQUEST_ID, id)?;
    if tls {
        if let Some(hsts) = &gw.hsts {
            resp.insert_header(&headers::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
        }
    }
    Ok(())
}

/// The full response header for a refusal, where no session can write the
/// fixed block.
pub fn error_header(
    reject: Reject,
    gw: &Gateway,
    request_id: &str,
    tls: bool,
    body_len: usize,
) -> pingora_error::Result<ResponseHeader> {
    let mut resp = error_fields(reject, body_len)?;
    add_common_headers(&mut resp, gw, request_id, tls)?;
    Ok(resp)
}

/// A refusal's own fields: what every response carries is added by
/// [`add_own_headers`] (or [`add_common_headers`]).
pub fn error_fields(reject: Reject, body_len: usize) -> pingora_error::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(reject.status(), Some(8))?;
    resp.insert_header(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )?;
    resp.insert_header(http::header::CONTENT_LENGTH, body_len)?;
    resp.insert_header(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    )?;
    match reject {
        Reject::Unauthorized { bearer_sent } => {
            let v = if bearer_sent {
                "Bearer realm=\"colorgate\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"colorgate\""
            };
            resp.insert_header(http::header::WWW_AUTHENTICATE, HeaderValue::from_static(v))?;
        }
        Reject::RateLimited { retry_after } | Reject::Unavailable { retry_after } => {
            resp.insert_header(http::header::RETRY_AFTER, retry_after.max(1))?;
        }
        _ => {}
    }
    Ok(resp)
}

/// A fresh request id: 32 hex digits from a per-thread generator, so ids
/// are unique without a shared counter or a syscall per request.
pub fn new_request_id() -> String {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
    }
    let mut digits = [0u8; 32];
    STATE.with(|s| {
        for half in digits.chunks_exact_mut(16) {
            // xorshift64*: fast, and seeded per thread from the OS.
            let mut x = s.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            s.set(x);
            let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
            for (i, d) in half.iter_mut().enumerate() {
                *d = b"0123456789abcdef"[((v >> (60 - 4 * i)) & 0xf) as usize];
            }
        }
    });
    // Written into a buffer and copied once: a push per digit cost more
    // than the digits (the check cannot fail, they are ASCII).
    std::str::from_utf8(&digits).unwrap_or_default().to_owned()
}

/// A request id from a trusted proxy is kept if it looks like one.
pub fn acceptable_request_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 128 && v.iter().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_headers_have_a_block_for_each_listener_kind_and_refuse_framing_fields() {
        // Even with no field to add or hide, a block replaces the upstream's
        // request id with the line of our own.
        let none = FixedHeaders::new(&[], None, &[]).unwrap();
        assert!(none.plain.is_some() && none.tls.is_some());
        let length = CaseHeader::new("Content-Length").unwrap();
        let framing = [(length, HeaderValue::from_static("5"))];
        assert!(FixedHeaders::new(&framing, None, &[]).is_err());
    }

    #[test]
    fn error_body_is_the_contract_json() {
        let mut o = BTreeMap::new();
        o.insert(
            "unauthorized".to_string(),
            "请提供有效的访问令牌".to_string(),
        );
        let bodies = ErrorBodies::new(&o);
        let b = bodies.body(Reject::Unauthorized { bearer_sent: false }, "abc");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"], "unauthorized");
        assert_eq!(v["message"], "请提供有效的访问令牌");
        assert_eq!(v["request_id"], "abc");
        let nf: serde_json::Value =
            serde_json::from_slice(&bodies.body(Reject::NotFound, "x")).unwrap();
        assert_eq!(nf["error"], "not_found");
    }

    #[test]
    fn request_ids_are_32_hex_and_distinct() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        // Every digit position takes every value: no nibble is dropped.
        let ids: Vec<String> = (0..2000).map(|_| new_request_id()).collect();
        for i in 0..32 {
            let seen: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_bytes()[i]).collect();
            assert_eq!(seen.len(), 16, "digit {i}");
        }
    }

    #[test]
    fn statuses_map_both_ways() {
        for s in [400, 401, 403, 404, 413, 431, 429, 502, 503, 504] {
            assert_eq!(Reject::from_status(s).status(), s);
        }
    }
}
