// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::*;
use bytes::Bytes;

#[derive(Debug, Clone)]
pub struct CaseHeaderName(Bytes);

impl CaseHeaderName {
    pub fn new(name: String) -> Self {
        CaseHeaderName(name.into())
    }
}

impl CaseHeaderName {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(buf: &[u8]) -> Self {
        CaseHeaderName(Bytes::copy_from_slice(buf))
    }
}

/// A trait that converts into case-sensitive header names.
pub trait IntoCaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName;

    /// colorgate patch: the name both parsed and as it is sent, `None` if it
    /// is not a valid header name. By default the case-preserved bytes are
    /// parsed (and a name outside `http`'s standard set allocated) on every
    /// insert; a [`CaseHeader`] was parsed once, when it was made.
    fn into_header_names(self) -> Option<(HeaderName, CaseHeaderName)>
    where
        Self: Sized,
    {
        let case = self.into_case_header_name();
        let name = HeaderName::from_bytes(case.as_slice()).ok()?;
        Some((name, case))
    }
}

/// colorgate patch: a header name parsed once, with the case it is sent in.
/// Inserting one costs two map inserts and no parsing or allocation.
#[derive(Debug, Clone)]
pub struct CaseHeader {
    name: HeaderName,
    case: CaseHeaderName,
}

impl CaseHeader {
    /// A lowercase name known at compile time (it panics there otherwise).
    pub const fn from_static(name: &'static str) -> CaseHeader {
        CaseHeader {
            name: HeaderName::from_static(name),
            case: CaseHeaderName(Bytes::from_static(name.as_bytes())),
        }
    }

    /// A lowercase name known at compile time, sent spelled as `spelled`
    /// (the same letters, in any case); it does not compile otherwise.
    pub const fn from_static_spelled(name: &'static str, spelled: &'static str) -> CaseHeader {
        let (a, b) = (name.as_bytes(), spelled.as_bytes());
        assert!(a.len() == b.len(), "the spelling has other letters");
        let mut i = 0;
        while i < a.len() {
            assert!(
                a[i] == b[i].to_ascii_lowercase(),
                "the spelling has other letters"
            );
            i += 1;
        }
        CaseHeader {
            name: HeaderName::from_static(name),
            case: CaseHeaderName(Bytes::from_static(spelled.as_bytes())),
        }
    }

    /// `name`, sent as written; `None` if it is not a valid header name.
    pub fn new(name: &str) -> Option<CaseHeader> {
        Some(CaseHeader {
            name: HeaderName::from_bytes(name.as_bytes()).ok()?,
            case: CaseHeaderName(Bytes::copy_from_slice(name.as_bytes())),
        })
    }

    /// The parsed (lowercase) name, for lookups.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }
}

impl IntoCaseHeaderName for &CaseHeader {
    fn into_case_header_name(self) -> CaseHeaderName {
        self.case.clone()
    }

    fn into_header_names(self) -> Option<(HeaderName, CaseHeaderName)> {
        Some((self.name.clone(), self.case.clone()))
    }
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(&self))
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(self))
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }
}

fn titled_header_name(header_name: &HeaderName) -> Bytes {
    titled_header_name_str(header_name).map_or_else(
        || Bytes::copy_from_slice(header_name.as_str().as_bytes()),
        |s| Bytes::from_static(s.as_bytes()),
    )
}

/// The name as it goes out when no case was kept for it: the conventional
/// spelling of a standard name, the (lowercase) name itself otherwise.
///
/// colorgate patch: every standard name of `http` is listed (Pingora listed
/// twelve), because a header set that keeps case stores no name spelled like
/// this (see `CaseNames` in lib.rs): `User-Agent` and `Authorization` are
/// what clients send.
pub(crate) fn titled_header_name_str(header_name: &HeaderName) -> Option<&'static str> {
    // Keyed by length and first byte, so any name costs a jump and at most
    // a couple of compares: this runs for every header of every message.
    let name = header_name.as_str();
    let first = *name.as_bytes().first()?;
    let (lower, titled) = match (name.len(), first) {
        (2, b't') => ("te", "TE"),
        (3, b'a') => ("age", "Age"),
        (3, b'd') => ("dnt", "DNT"),
        (3, b'v') => ("via", "Via"),
        (4, b'd') => ("date", "Date"),
        (4, b'e') => ("etag", "ETag"),
        (4, b'f') => ("from", "From"),
        (4, b'h') => ("host", "Host"),
        (4, b'l') => ("link", "Link"),
        (4, b'v') => ("vary", "Vary"),
        (5, b'a') => ("allow", "Allow"),
        (5, b'r') => ("range", "Range"),
        (6, b'a') => ("accept", "Accept"),
        (6, b'c') => ("cookie", "Cookie"),
        (6, b'e') => ("expect", "Expect"),
        (6, b'o') => ("origin", "Origin"),
        (6, b'p') => ("pragma", "Pragma"),
        (6, b's') => ("server", "Server"),
        (7, b'a') => ("alt-svc", "Alt-Svc"),
        (7, b'e') => ("expires", "Expires"),
        (7, b'r') => match name {
            "referer" => ("referer", "Referer"),
            "refresh" => ("refresh", "Refresh"),
            _ => return None,
        },
        (7, b't') => ("trailer", "Trailer"),
        (7, b'u') => ("upgrade", "Upgrade"),
        (7, b'w') => ("warning", "Warning"),
        (8, b'i') => match name {
            "if-match" => ("if-match", "If-Match"),
            "if-range" => ("if-range", "If-Range"),
            _ => return None,
        },
        (8, b'l') => ("location", "Location"),
        (9, b'f') => ("forwarded", "Forwarded"),
        (10, b'c') => ("connection", "Connection"),
        (10, b's') => ("set-cookie", "Set-Cookie"),
        (10, b'u') => ("user-agent", "User-Agent"),
        (11, b'r') => ("retry-after", "Retry-After"),
        (12, b'c') => match name {
            "cache-status" => ("cache-status", "Cache-Status"),
            "content-type" => ("content-type", "Content-Type"),
            _ => return None,
        },
        (12, b'm') => ("max-forwards", "Max-Forwards"),
        (13, b'a') => match name {
            "accept-ranges" => ("accept-ranges", "Accept-Ranges"),
            "authorization" => ("authorization", "Authorization"),
            _ => return None,
        },
        (13, b'c') => match name {
            "cache-control" => ("cache-control", "Cache-Control"),
            "content-range" => ("content-range", "Content-Range"),
            _ => return None,
        },
        (13, b'i') => ("if-none-match", "If-None-Match"),
        (13, b'l') => ("last-modified", "Last-Modified"),
        (14, b'a') => ("accept-charset", "Accept-Charset"),
        (14, b'c') => ("content-length", "Content-Length"),
        (15, b'a') => match name {
            "accept-encoding" => ("accept-encoding", "Accept-Encoding"),
            "accept-language" => ("accept-language", "Accept-Language"),
            _ => return None,
        },
        (15, b'p') => ("public-key-pins", "Public-Key-Pins"),
        (15, b'r') => ("referrer-policy", "Referrer-Policy"),
        (15, b'x') => ("x-frame-options", "X-Frame-Options"),
        (16, b'c') => match name {
            "content-encoding" => ("content-encoding", "Content-Encoding"),
            "content-language" => ("content-language", "Content-Language"),
            "content-location" => ("content-location", "Content-Location"),
            _ => return None,
        },
        (16, b'w') => ("www-authenticate", "WWW-Authenticate"),
        (16, b'x') => ("x-xss-protection", "X-XSS-Protection"),
        (17, b'c') => ("cdn-cache-control", "CDN-Cache-Control"),
        (17, b'i') => ("if-modified-since", "If-Modified-Since"),
        (17, b's') => ("sec-websocket-key", "Sec-WebSocket-Key"),
        (17, b't') => ("transfer-encoding", "Transfer-Encoding"),
        (18, b'p') => ("proxy-authenticate", "Proxy-Authenticate"),
        (19, b'c') => ("content-disposition", "Content-Disposition"),
        (19, b'i') => ("if-unmodified-since", "If-Unmodified-Since"),
        (19, b'p') => ("proxy-authorization", "Proxy-Authorization"),
        (20, b's') => ("sec-websocket-accept", "Sec-WebSocket-Accept"),
        (21, b's') => ("sec-websocket-version", "Sec-WebSocket-Version"),
        (22, b'a') => ("access-control-max-age", "Access-Control-Max-Age"),
        (22, b's') => ("sec-websocket-protocol", "Sec-WebSocket-Protocol"),
        (22, b'x') => match name {
            "x-content-type-options" => ("x-content-type-options", "X-Content-Type-Options"),
            "x-dns-prefetch-control" => ("x-dns-prefetch-control", "X-DNS-Prefetch-Control"),
            _ => return None,
        },
        (23, b'c') => ("content-security-policy", "Content-Security-Policy"),
        (24, b's') => ("sec-websocket-extensions", "Sec-WebSocket-Extensions"),
        (25, b's') => ("strict-transport-security", "Strict-Transport-Security"),
        (25, b'u') => ("upgrade-insecure-requests", "Upgrade-Insecure-Requests"),
        (27, b'a') => ("access-control-allow-origin", "Access-Control-Allow-Origin"),
        (27, b'p') => ("public-key-pins-report-only", "Public-Key-Pins-Report-Only"),
        (28, b'a') => match name {
            "access-control-allow-headers" => (
                "access-control-allow-headers",
                "Access-Control-Allow-Headers",
            ),
            "access-control-allow-methods" => (
                "access-control-allow-methods",
                "Access-Control-Allow-Methods",
            ),
            _ => return None,
        },
        (29, b'a') => match name {
            "access-control-expose-headers" => (
                "access-control-expose-headers",
                "Access-Control-Expose-Headers",
            ),
            "access-control-request-method" => (
                "access-control-request-method",
                "Access-Control-Request-Method",
            ),
            _ => return None,
        },
        (30, b'a') => (
            "access-control-request-headers",
            "Access-Control-Request-Headers",
        ),
        (32, b'a') => (
            "access-control-allow-credentials",
            "Access-Control-Allow-Credentials",
        ),
        (35, b'c') => (
            "content-security-policy-report-only",
            "Content-Security-Policy-Report-Only",
        ),
        _ => return None,
    };
    (name == lower).then_some(titled)
}

/// The bytes `header_name` is sent as when no case was kept for it.
pub(crate) fn default_case(header_name: &HeaderName) -> &str {
    titled_header_name_str(header_name).unwrap_or(header_name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"Server");
    }

    // colorgate patch: every standard name has its conventional spelling.
    #[test]
    fn standard_names_are_sent_titled_and_others_as_they_are() {
        for (name, sent) in [
            (header::X_FRAME_OPTIONS, "X-Frame-Options"),
            (header::AUTHORIZATION, "Authorization"),
            (header::USER_AGENT, "User-Agent"),
            (header::ETAG, "ETag"),
            (header::TE, "TE"),
            (header::SEC_WEBSOCKET_KEY, "Sec-WebSocket-Key"),
            (header::CONTENT_TYPE, "Content-Type"),
            (header::CACHE_STATUS, "Cache-Status"),
        ] {
            assert_eq!(default_case(&name), sent);
        }
        for custom in ["x-real-ip", "x-request-id", "content-typo", "x"] {
            let name = HeaderName::from_static(custom);
            assert_eq!(titled_header_name_str(&name), None);
            assert_eq!(default_case(&name), custom);
        }
    }

    #[test]
    fn test_case_header() {
        const X: CaseHeader = CaseHeader::from_static("x-real-ip");
        let (name, case) = (&X).into_header_names().unwrap();
        assert_eq!(name, "x-real-ip");
        assert_eq!(case.as_slice(), b"x-real-ip");
        const H: CaseHeader = CaseHeader::from_static_spelled(
            "strict-transport-security",
            "Strict-Transport-Security",
        );
        let (name, case) = (&H).into_header_names().unwrap();
        assert_eq!(name, header::STRICT_TRANSPORT_SECURITY);
        assert_eq!(case.as_slice(), b"Strict-Transport-Security");
        let h = CaseHeader::new("X-Frame-Options").unwrap();
        assert_eq!(h.name(), &header::X_FRAME_OPTIONS);
        assert_eq!((&h).into_case_header_name().as_slice(), b"X-Frame-Options");
        assert!(CaseHeader::new("bad name").is_none());
        let (name, case) = "FoO".into_header_names().unwrap();
        assert_eq!((name.as_str(), case.as_slice()), ("foo", &b"FoO"[..]));
        assert!("bad name".into_header_names().is_none());
    }
}
