//! Header names colorgate writes or reads on every request, parsed once.
//! Pingora parses a name given as text on every insert, and allocates one
//! outside `http`'s standard set; a [`CaseHeader`] (our vendored
//! pingora-http, see `vendor/README.md`) is inserted as it is.

use pingora_http::CaseHeader;

// The fields added to upstream requests, spelled as nginx users write them
// in `proxy_set_header` (and as the contract does). They go out as lines
// (vendor patch 45), where a spelling costs nothing.
pub static X_FORWARDED_FOR: CaseHeader =
    CaseHeader::from_static_spelled("x-forwarded-for", "X-Forwarded-For");
pub static X_FORWARDED_PROTO: CaseHeader =
    CaseHeader::from_static_spelled("x-forwarded-proto", "X-Forwarded-Proto");
pub static X_REAL_IP: CaseHeader = CaseHeader::from_static_spelled("x-real-ip", "X-Real-IP");
pub static X_REQUEST_ID: CaseHeader =
    CaseHeader::from_static_spelled("x-request-id", "X-Request-Id");
pub static X_USER_ID: CaseHeader = CaseHeader::from_static_spelled("x-user-id", "X-User-Id");
/// `X-Request-Id` as inserted into a response's header map (HTTP/2, and
/// the gateway's own answers; a proxied HTTP/1 answer carries it as a
/// line, spelled as `X_REQUEST_ID`): a spelling other than lowercase there
/// would cost a second map of names per response (names are
/// case-insensitive; clients compare them so).
pub static RESPONSE_REQUEST_ID: CaseHeader = CaseHeader::from_static("x-request-id");
/// Spelled as it is conventionally (and by nginx users in `add_header`):
/// a standard name in lowercase would cost a second map of names per response.
pub static STRICT_TRANSPORT_SECURITY: CaseHeader =
    CaseHeader::from_static_spelled("strict-transport-security", "Strict-Transport-Security");

/// The client's fields that the gateway replaces with its own on the way
/// upstream (or, for `Authorization`, keeps to itself; for `Expect`,
/// answers itself), removed from `req`. Most requests carry none but
/// `Authorization`: one pass over the names present finds which, rather
/// than a lookup per name.
pub fn remove_forwarding_fields(req: &mut pingora_http::RequestHeader) {
    let ours = [
        &http::header::AUTHORIZATION,
        &http::header::EXPECT,
        X_REAL_IP.name(),
        X_FORWARDED_FOR.name(),
        X_FORWARDED_PROTO.name(),
        X_REQUEST_ID.name(),
        X_USER_ID.name(),
    ];
    let mut present = ours.map(|_| false);
    for name in req.headers.keys() {
        if let Some(i) = ours.iter().position(|o| *o == name) {
            present[i] = true;
        }
    }
    for (name, _) in ours.iter().zip(present).filter(|(_, p)| *p) {
        req.remove_header(*name);
    }
}
