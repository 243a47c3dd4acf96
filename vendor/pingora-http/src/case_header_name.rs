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
    ///
    /// The spelling is `None` when it is known to be the default one
    /// (`default_case`): a header set that has kept no spelling yet then
    /// need not compare it, and one that has makes it only then.
    fn into_header_names(self) -> Option<(HeaderName, Option<CaseHeaderName>)>
    where
        Self: Sized,
    {
        let case = self.into_case_header_name();
        let name = HeaderName::from_bytes(case.as_slice()).ok()?;
        Some((name, Some(case)))
    }
}

/// colorgate patch: a header name parsed once, with the case it is sent in.
/// Inserting one costs two map inserts and no parsing or allocation.
#[derive(Debug, Clone)]
pub struct CaseHeader {
    name: HeaderName,
    case: CaseHeaderName,
    /// Whether `case` is the default spelling, found out on first use (a
    /// `const` constructor cannot tell a standard name from another).
    default: std::sync::OnceLock<bool>,
    /// `case` as text, for a name known at compile time: written into a
    /// line of text without being checked as UTF-8 again (patch 45).
    text: Option<&'static str>,
}

impl CaseHeader {
    /// A lowercase name known at compile time (it panics there otherwise).
    pub const fn from_static(name: &'static str) -> CaseHeader {
        CaseHeader {
            name: HeaderName::from_static(name),
            case: CaseHeaderName(Bytes::from_static(name.as_bytes())),
            default: std::sync::OnceLock::new(),
            text: Some(name),
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
            default: std::sync::OnceLock::new(),
            text: Some(spelled),
        }
    }

    /// `name`, sent as written; `None` if it is not a valid header name.
    pub fn new(name: &str) -> Option<CaseHeader> {
        Some(CaseHeader {
            name: HeaderName::from_bytes(name.as_bytes()).ok()?,
            case: CaseHeaderName(Bytes::copy_from_slice(name.as_bytes())),
            default: std::sync::OnceLock::new(),
            text: None,
        })
    }

    /// The parsed (lowercase) name, for lookups.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// colorgate patch 45: the name as it is sent.
    pub fn spelling(&self) -> &[u8] {
        self.case.as_slice()
    }

    /// The name as it is sent, as text, when it was known at compile time.
    pub fn spelling_text(&self) -> Option<&'static str> {
        self.text
    }
}

impl IntoCaseHeaderName for &CaseHeader {
    fn into_case_header_name(self) -> CaseHeaderName {
        self.case.clone()
    }

    fn into_header_names(self) -> Option<(HeaderName, Option<CaseHeaderName>)> {
        let default = *self
            .default
            .get_or_init(|| self.case.as_slice() == default_case(&self.name).as_bytes());
        Some((self.name.clone(), (!default).then(|| self.case.clone())))
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

    // colorgate patch: the name is already parsed (the default would parse
    // its spelling again, and allocate a name outside the standard set), and
    // it is sent in the default spelling.
    fn into_header_names(self) -> Option<(HeaderName, Option<CaseHeaderName>)> {
        Some((self, None))
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(self))
    }

    // colorgate patch: see `HeaderName`'s.
    fn into_header_names(self) -> Option<(HeaderName, Option<CaseHeaderName>)> {
        Some((self.clone(), None))
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }
}

/// colorgate patch 48: a header name as a parser found it, `buf[start..end]`,
/// not yet cut out of the buffer. Cutting it out (`Bytes::slice`) counts a
/// reference to the buffer up and, once the name is parsed, down again: two
/// atomic operations per field, for a spelling that is almost always the
/// default one and so never kept. This cuts it out only when it is kept.
#[derive(Debug, Clone, Copy)]
pub struct BufHeaderName<'a> {
    buf: &'a Bytes,
    start: usize,
    end: usize,
}

impl<'a> BufHeaderName<'a> {
    /// The name at `buf[start..end]`; out-of-range bounds make an invalid name.
    pub fn new(buf: &'a Bytes, start: usize, end: usize) -> Self {
        BufHeaderName { buf, start, end }
    }

    fn bytes(&self) -> &'a [u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }
}

impl IntoCaseHeaderName for BufHeaderName<'_> {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.buf.slice_ref(self.bytes()))
    }

    fn into_header_names(self) -> Option<(HeaderName, Option<CaseHeaderName>)> {
        let bytes = self.bytes();
        let name = HeaderName::from_bytes(bytes).ok()?;
        let case = (bytes != default_case(&name).as_bytes())
            .then(|| CaseHeaderName(self.buf.slice_ref(bytes)));
        Some((name, case))
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
    use http::header;
    // Keyed by length and first byte, so any name costs a jump and at most
    // a couple of compares: this runs for every header of every message.
    // The compares are of parsed names (a standard name is its index in
    // `http`'s table), not of their text, which took a `memcmp` call each.
    let name = header_name.as_str();
    let first = *name.as_bytes().first()?;
    let (lower, titled) = match (name.len(), first) {
        (2, b't') => (header::TE, "TE"),
        (3, b'a') => (header::AGE, "Age"),
        (3, b'd') => (header::DNT, "DNT"),
        (3, b'v') => (header::VIA, "Via"),
        (4, b'd') => (header::DATE, "Date"),
        (4, b'e') => (header::ETAG, "ETag"),
        (4, b'f') => (header::FROM, "From"),
        (4, b'h') => (header::HOST, "Host"),
        (4, b'l') => (header::LINK, "Link"),
        (4, b'v') => (header::VARY, "Vary"),
        (5, b'a') => (header::ALLOW, "Allow"),
        (5, b'r') => (header::RANGE, "Range"),
        (6, b'a') => (header::ACCEPT, "Accept"),
        (6, b'c') => (header::COOKIE, "Cookie"),
        (6, b'e') => (header::EXPECT, "Expect"),
        (6, b'o') => (header::ORIGIN, "Origin"),
        (6, b'p') => (header::PRAGMA, "Pragma"),
        (6, b's') => (header::SERVER, "Server"),
        (7, b'a') => (header::ALT_SVC, "Alt-Svc"),
        (7, b'e') => (header::EXPIRES, "Expires"),
        (7, b'r') => {
            if *header_name == header::REFERER {
                (header::REFERER, "Referer")
            } else if *header_name == header::REFRESH {
                (header::REFRESH, "Refresh")
            } else {
                return None;
            }
        }
        (7, b't') => (header::TRAILER, "Trailer"),
        (7, b'u') => (header::UPGRADE, "Upgrade"),
        (7, b'w') => (header::WARNING, "Warning"),
        (8, b'i') => {
            if *header_name == header::IF_MATCH {
                (header::IF_MATCH, "If-Match")
            } else if *header_name == header::IF_RANGE {
                (header::IF_RANGE, "If-Range")
            } else {
                return None;
            }
        }
        (8, b'l') => (header::LOCATION, "Location"),
        (9, b'f') => (header::FORWARDED, "Forwarded"),
        (10, b'c') => (header::CONNECTION, "Connection"),
        (10, b's') => (header::SET_COOKIE, "Set-Cookie"),
        (10, b'u') => (header::USER_AGENT, "User-Agent"),
        (11, b'r') => (header::RETRY_AFTER, "Retry-After"),
        (12, b'c') => {
            if *header_name == header::CACHE_STATUS {
                (header::CACHE_STATUS, "Cache-Status")
            } else if *header_name == header::CONTENT_TYPE {
                (header::CONTENT_TYPE, "Content-Type")
            } else {
                return None;
            }
        }
        (12, b'm') => (header::MAX_FORWARDS, "Max-Forwards"),
        (13, b'a') => {
            if *header_name == header::ACCEPT_RANGES {
                (header::ACCEPT_RANGES, "Accept-Ranges")
            } else if *header_name == header::AUTHORIZATION {
                (header::AUTHORIZATION, "Authorization")
            } else {
                return None;
            }
        }
        (13, b'c') => {
            if *header_name == header::CACHE_CONTROL {
                (header::CACHE_CONTROL, "Cache-Control")
            } else if *header_name == header::CONTENT_RANGE {
                (header::CONTENT_RANGE, "Content-Range")
            } else {
                return None;
            }
        }
        (13, b'i') => (header::IF_NONE_MATCH, "If-None-Match"),
        (13, b'l') => (header::LAST_MODIFIED, "Last-Modified"),
        (14, b'a') => (header::ACCEPT_CHARSET, "Accept-Charset"),
        (14, b'c') => (header::CONTENT_LENGTH, "Content-Length"),
        (15, b'a') => {
            if *header_name == header::ACCEPT_ENCODING {
                (header::ACCEPT_ENCODING, "Accept-Encoding")
            } else if *header_name == header::ACCEPT_LANGUAGE {
                (header::ACCEPT_LANGUAGE, "Accept-Language")
            } else {
                return None;
            }
        }
        (15, b'p') => (header::PUBLIC_KEY_PINS, "Public-Key-Pins"),
        (15, b'r') => (header::REFERRER_POLICY, "Referrer-Policy"),
        (15, b'x') => (header::X_FRAME_OPTIONS, "X-Frame-Options"),
        (16, b'c') => {
            if *header_name == header::CONTENT_ENCODING {
                (header::CONTENT_ENCODING, "Content-Encoding")
            } else if *header_name == header::CONTENT_LANGUAGE {
                (header::CONTENT_LANGUAGE, "Content-Language")
            } else if *header_name == header::CONTENT_LOCATION {
                (header::CONTENT_LOCATION, "Content-Location")
            } else {
                return None;
            }
        }
        (16, b'w') => (header::WWW_AUTHENTICATE, "WWW-Authenticate"),
        (16, b'x') => (header::X_XSS_PROTECTION, "X-XSS-Protection"),
        (17, b'c') => (header::CDN_CACHE_CONTROL, "CDN-Cache-Control"),
        (17, b'i') => (header::IF_MODIFIED_SINCE, "If-Modified-Since"),
        (17, b's') => (header::SEC_WEBSOCKET_KEY, "Sec-WebSocket-Key"),
        (17, b't') => (header::TRANSFER_ENCODING, "Transfer-Encoding"),
        (18, b'p') => (header::PROXY_AUTHENTICATE, "Proxy-Authenticate"),
        (19, b'c') => (header::CONTENT_DISPOSITION, "Content-Disposition"),
        (19, b'i') => (header::IF_UNMODIFIED_SINCE, "If-Unmodified-Since"),
        (19, b'p') => (header::PROXY_AUTHORIZATION, "Proxy-Authorization"),
        (20, b's') => (header::SEC_WEBSOCKET_ACCEPT, "Sec-WebSocket-Accept"),
        (21, b's') => (header::SEC_WEBSOCKET_VERSION, "Sec-WebSocket-Version"),
        (22, b'a') => (header::ACCESS_CONTROL_MAX_AGE, "Access-Control-Max-Age"),
        (22, b's') => (header::SEC_WEBSOCKET_PROTOCOL, "Sec-WebSocket-Protocol"),
        (22, b'x') => {
            if *header_name == header::X_CONTENT_TYPE_OPTIONS {
                (header::X_CONTENT_TYPE_OPTIONS, "X-Content-Type-Options")
            } else if *header_name == header::X_DNS_PREFETCH_CONTROL {
                (header::X_DNS_PREFETCH_CONTROL, "X-DNS-Prefetch-Control")
            } else {
                return None;
            }
        }
        (23, b'c') => (header::CONTENT_SECURITY_POLICY, "Content-Security-Policy"),
        (24, b's') => (header::SEC_WEBSOCKET_EXTENSIONS, "Sec-WebSocket-Extensions"),
        (25, b's') => (
            header::STRICT_TRANSPORT_SECURITY,
            "Strict-Transport-Security",
        ),
        (25, b'u') => (
            header::UPGRADE_INSECURE_REQUESTS,
            "Upgrade-Insecure-Requests",
        ),
        (27, b'a') => (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            "Access-Control-Allow-Origin",
        ),
        (27, b'p') => (
            header::PUBLIC_KEY_PINS_REPORT_ONLY,
            "Public-Key-Pins-Report-Only",
        ),
        (28, b'a') => {
            if *header_name == header::ACCESS_CONTROL_ALLOW_HEADERS {
                (
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    "Access-Control-Allow-Headers",
                )
            } else if *header_name == header::ACCESS_CONTROL_ALLOW_METHODS {
                (
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    "Access-Control-Allow-Methods",
                )
            } else {
                return None;
            }
        }
        (29, b'a') => {
            if *header_name == header::ACCESS_CONTROL_EXPOSE_HEADERS {
                (
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    "Access-Control-Expose-Headers",
                )
            } else if *header_name == header::ACCESS_CONTROL_REQUEST_METHOD {
                (
                    header::ACCESS_CONTROL_REQUEST_METHOD,
                    "Access-Control-Request-Method",
                )
            } else {
                return None;
            }
        }
        (30, b'a') => (
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "Access-Control-Request-Headers",
        ),
        (32, b'a') => (
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            "Access-Control-Allow-Credentials",
        ),
        (35, b'c') => (
            header::CONTENT_SECURITY_POLICY_REPORT_ONLY,
            "Content-Security-Policy-Report-Only",
        ),
        _ => return None,
    };
    (*header_name == lower).then_some(titled)
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
    fn a_name_in_a_buffer_is_cut_out_only_when_its_spelling_is_kept() {
        let buf =
            Bytes::from_static(b"Content-Type: a\r\ncontent-TYPE: b\r\nx-one: c\r\nX-One: d\r\n");
        let names = |start, end| BufHeaderName::new(&buf, start, end).into_header_names();
        let at = |s: &str| {
            let start = buf
                .windows(s.len())
                .position(|w| w == s.as_bytes())
                .unwrap();
            (start, start + s.len())
        };
        // The default spellings: parsed, nothing kept.
        for s in ["Content-Type", "x-one"] {
            let (start, end) = at(s);
            let (name, case) = names(start, end).unwrap();
            assert_eq!(name.as_str(), s.to_ascii_lowercase());
            assert!(case.is_none(), "{s}");
        }
        // Any other spelling is kept, as sent.
        for s in ["content-TYPE", "X-One"] {
            let (start, end) = at(s);
            let (name, case) = names(start, end).unwrap();
            assert_eq!(name.as_str(), s.to_ascii_lowercase());
            assert_eq!(case.unwrap().as_slice(), s.as_bytes());
        }
        // Not a name, or not in the buffer: refused, no panic.
        let (start, _) = at(": a");
        assert!(names(start, start + 3).is_none());
        assert!(names(0, 0).is_none());
        assert!(names(5, buf.len() + 1).is_none());
        assert!(names(9, 3).is_none());
        assert_eq!(
            BufHeaderName::new(&buf, 0, 12)
                .into_case_header_name()
                .as_slice(),
            b"Content-Type"
        );
    }

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

    // colorgate patch: a parsed name is not parsed again, and comes out as
    // the default (which parses its spelling) would give it.
    #[test]
    fn a_parsed_name_gives_what_parsing_its_spelling_gives() {
        for name in [
            header::CONTENT_LENGTH,
            header::ETAG,
            HeaderName::from_static("x-request-id"),
        ] {
            let case = name.clone().into_case_header_name();
            let parsed = HeaderName::from_bytes(case.as_slice()).unwrap();
            let (owned, owned_case) = name.clone().into_header_names().unwrap();
            let (borrowed, borrowed_case) = (&name).into_header_names().unwrap();
            assert_eq!((&owned, &borrowed), (&parsed, &parsed));
            // Known to be the default spelling, which is `case`.
            assert!(owned_case.is_none() && borrowed_case.is_none());
            assert_eq!(default_case(&name).as_bytes(), case.as_slice());
        }
    }

    #[test]
    fn test_case_header() {
        // A spelling is given only where it is not the default one.
        static X: CaseHeader = CaseHeader::from_static("x-real-ip");
        for _ in 0..2 {
            let (name, case) = (&X).into_header_names().unwrap();
            assert_eq!(name, "x-real-ip");
            assert!(case.is_none());
        }
        static H: CaseHeader = CaseHeader::from_static_spelled(
            "strict-transport-security",
            "Strict-Transport-Security",
        );
        let (name, case) = (&H).into_header_names().unwrap();
        assert_eq!(name, header::STRICT_TRANSPORT_SECURITY);
        assert!(case.is_none());
        static L: CaseHeader = CaseHeader::from_static("x-frame-options");
        let (name, case) = (&L).into_header_names().unwrap();
        assert_eq!(name, header::X_FRAME_OPTIONS);
        assert_eq!(case.unwrap().as_slice(), b"x-frame-options");
        let h = CaseHeader::new("X-Frame-Options").unwrap();
        assert_eq!(h.name(), &header::X_FRAME_OPTIONS);
        assert_eq!((&h).into_case_header_name().as_slice(), b"X-Frame-Options");
        assert!((&h).into_header_names().unwrap().1.is_none());
        let h = CaseHeader::new("X-Request-ID").unwrap();
        let (name, case) = (&h).into_header_names().unwrap();
        assert_eq!(name, "x-request-id");
        assert_eq!(case.unwrap().as_slice(), b"X-Request-ID");
        assert!(CaseHeader::new("bad name").is_none());
        let (name, case) = "FoO".into_header_names().unwrap();
        assert_eq!(
            (name.as_str(), case.unwrap().as_slice()),
            ("foo", &b"FoO"[..])
        );
        assert!("bad name".into_header_names().is_none());
    }
}
