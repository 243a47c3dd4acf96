//! Framing checks nginx makes before anything else (CONTRACT §3): a request
//! with both `Content-Length` and `Transfer-Encoding`, a bad or duplicate
//! `Content-Length`, or a missing or duplicate `Host` is a 400; headers over
//! `max_header_size` are a 431. Pingora quietly repairs some of these (it
//! drops `Content-Length` when `Transfer-Encoding` is present), so the HTTP/1
//! check reads the raw header block as the client sent it.
//!
//! The request target must be a path (`/x`) or an absolute `http(s)://` URL,
//! as nginx requires: anything else (`*`, `..`, `host/x`) would be routed on
//! the path the URI parser makes of it while the upstream is sent the raw
//! target, i.e. routed on one path and served another.

/// Why a request is refused before routing.
#[derive(Debug, PartialEq, Eq)]
pub enum Malformed {
    /// 400 `bad_request`, with the reason for the log.
    BadRequest(&'static str),
    /// 431 `headers_too_large`.
    HeadersTooLarge,
}

/// Check an HTTP/1 request from its raw header block (request line included).
pub fn check_h1(raw: &[u8], max_header_size: usize) -> Result<(), Malformed> {
    if raw.len() > max_header_size {
        return Err(Malformed::HeadersTooLarge);
    }
    // Lines are found with memchr and only names starting h/c/t (any case)
    // are looked at: this runs over every request's whole header block.
    let mut lines = LineIter { raw, start: 0 };
    let request_line = lines.next().unwrap_or_default();
    let http10 = trim(request_line).ends_with(b"HTTP/1.0");
    // `METHOD SP target SP version`; Pingora has already parsed it.
    let target = request_line
        .split(|&b| b == b' ')
        .filter(|p| !p.is_empty())
        .nth(1)
        .unwrap_or_default();
    if !origin_or_absolute_form(target) {
        return Err(Malformed::BadRequest(
            "request target is not a path or http(s) URL",
        ));
    }
    let (mut hosts, mut lengths, mut encodings) = (0, 0, 0);
    for line in lines {
        let line = trim(line);
        if !matches!(line.first().map(|b| b | 0x20), Some(b'h' | b'c' | b't')) {
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (name, value) = (trim(&line[..colon]), trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(Malformed::BadRequest("invalid Content-Length"));
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings += 1;
        }
    }
    if lengths > 1 {
        return Err(Malformed::BadRequest("duplicate Content-Length"));
    }
    if lengths > 0 && encodings > 0 {
        return Err(Malformed::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if hosts > 1 {
        return Err(Malformed::BadRequest("duplicate Host"));
    }
    if hosts == 0 && !http10 {
        return Err(Malformed::BadRequest("missing Host"));
    }
    Ok(())
}

/// The `\n`-separated lines of a header block (a `split` that finds the
/// separators with memchr rather than a byte at a time).
struct LineIter<'a> {
    raw: &'a [u8],
    start: usize,
}

impl<'a> Iterator for LineIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.raw.get(self.start..)?;
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                self.start += i + 1;
                Some(&rest[..i])
            }
            None => {
                self.start = self.raw.len() + 1;
                Some(rest)
            }
        }
    }
}

/// `/path…` (origin-form) or `http://…` / `https://…` (absolute-form).
fn origin_or_absolute_form(target: &[u8]) -> bool {
    let starts_with_ci = |prefix: &[u8]| {
        target
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    target.first() == Some(&b'/') || starts_with_ci(b"http://") || starts_with_ci(b"https://")
}

/// HTTP/2 framing is checked by the h2 codec; only the size is ours.
pub fn check_h2(header_bytes: usize, max_header_size: usize) -> Result<(), Malformed> {
    if header_bytes > max_header_size {
        Err(Malformed::HeadersTooLarge)
    } else {
        Ok(())
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str) -> Result<(), Malformed> {
        check_h1(raw.as_bytes(), 16 * 1024)
    }

    #[test]
    fn ordinary_requests_pass() {
        assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(()));
        assert_eq!(
            check("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n"),
            Ok(())
        );
        assert_eq!(check("GET / HTTP/1.0\r\n\r\n"), Ok(()));
    }

    #[test]
    fn content_length_with_transfer_encoding_is_400() {
        let r = check(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(matches!(r, Err(Malformed::BadRequest(_))));
    }

    #[test]
    fn duplicate_or_bad_content_length_is_400() {
        let dup =
            check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(dup, Err(Malformed::BadRequest("duplicate Content-Length")));
        let bad = check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\n");
        assert_eq!(bad, Err(Malformed::BadRequest("invalid Content-Length")));
        let neg = check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n");
        assert_eq!(neg, Err(Malformed::BadRequest("invalid Content-Length")));
    }

    #[test]
    fn lines_are_found_with_any_line_ending_and_name_case() {
        // Bare LF endings and a last line without one still count.
        assert_eq!(
            check("GET / HTTP/1.1\nHOST: a\nhost: b"),
            Err(Malformed::BadRequest("duplicate Host"))
        );
        assert_eq!(
            check("POST / HTTP/1.1\nhost: a\nTRANSFER-ENCODING: chunked\ncontent-LENGTH: 1"),
            Err(Malformed::BadRequest(
                "both Content-Length and Transfer-Encoding"
            ))
        );
        // Names that only end like or contain the checked ones do not count.
        assert_eq!(
            check("GET / HTTP/1.1\r\nX-Host: a\r\nHost-Name: b\r\n\r\n"),
            Err(Malformed::BadRequest("missing Host"))
        );
        assert_eq!(
            check("GET / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 1\r\nContent-Lengths: x\r\n\r\n"),
            Ok(())
        );
    }

    #[test]
    fn missing_or_duplicate_host_is_400() {
        assert_eq!(
            check("GET / HTTP/1.1\r\n\r\n"),
            Err(Malformed::BadRequest("missing Host"))
        );
        assert_eq!(
            check("GET / HTTP/1.1\r\nHost: a\r\nHOST: b\r\n\r\n"),
            Err(Malformed::BadRequest("duplicate Host"))
        );
    }

    #[test]
    fn a_target_that_is_not_a_path_or_http_url_is_400() {
        for target in ["*", "..", "a/b", "evil.com/health", "ftp://a/x"] {
            assert_eq!(
                check(&format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n")),
                Err(Malformed::BadRequest(
                    "request target is not a path or http(s) URL"
                )),
                "{target}"
            );
        }
        for target in ["/", "/x?y", "http://a/x", "HTTPS://a"] {
            assert_eq!(
                check(&format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n")),
                Ok(()),
                "{target}"
            );
        }
    }

    #[test]
    fn oversized_headers_are_431() {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "a".repeat(200)
        );
        assert_eq!(
            check_h1(big.as_bytes(), 100),
            Err(Malformed::HeadersTooLarge)
        );
        assert_eq!(check_h2(101, 100), Err(Malformed::HeadersTooLarge));
        assert_eq!(check_h2(100, 100), Ok(()));
    }
}
