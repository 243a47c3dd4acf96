//! Header names colorgate writes or reads on every request, parsed once.
//! Pingora parses a name given as text on every insert, and allocates one
//! outside `http`'s standard set; a [`CaseHeader`] (our vendored
//! pingora-http, see `vendor/README.md`) is inserted as it is.

use pingora_http::CaseHeader;

pub static X_FORWARDED_FOR: CaseHeader = CaseHeader::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: CaseHeader = CaseHeader::from_static("x-forwarded-proto");
pub static X_REAL_IP: CaseHeader = CaseHeader::from_static("x-real-ip");
pub static X_REQUEST_ID: CaseHeader = CaseHeader::from_static("x-request-id");
pub static X_USER_ID: CaseHeader = CaseHeader::from_static("x-user-id");
/// Spelled as it is conventionally (and by nginx users in `add_header`):
/// a standard name in lowercase would cost a second map of names per response.
pub static STRICT_TRANSPORT_SECURITY: CaseHeader =
    CaseHeader::from_static_spelled("strict-transport-security", "Strict-Transport-Security");
