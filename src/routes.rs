//! Routing: nginx-style path normalization, then the first route whose
//! `exact` or `prefix` path matches, then the path the upstream is sent
//! (`rewrite` / `strip_prefix`, query string kept).

use std::borrow::Cow;

/// The path climbs above `/` (`/../x`) or has a broken `%` escape: a 400.
#[derive(Debug, PartialEq, Eq)]
pub struct BadPath;

/// Normalize as nginx does before `location` matching: decode `%XX` of
/// unreserved characters, resolve `.` and `..`, merge `//`. Other escapes
/// stay encoded (upper-cased), so `%2F` never becomes a separator.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, BadPath> {
    let b = path.as_bytes();
    let clean = b.first() == Some(&b'/')
        && !b.contains(&b'%')
        && !b.windows(2).any(|w| w == b"//" || w == b"/.");
    if clean {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in decoded.split('/') {
        trailing_slash = false;
        match seg {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(BadPath);
                }
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

fn decode_unreserved(path: &str) -> Result<String, BadPath> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(BadPath)?;
            let (h, l) = (hex_val(hex[0])?, hex_val(hex[1])?);
            let c = (h << 4) | l;
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                out.push(c as char);
            } else {
                out.push('%');
                out.push(hex[0].to_ascii_uppercase() as char);
                out.push(hex[1].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            // Safe: `path` is a str, and we only split at ASCII bytes.
            let next = b[i..]
                .iter()
                .position(|&c| c == b'%')
                .map_or(b.len(), |p| i + p);
            out.push_str(&path[i..next]);
            i = next;
        }
    }
    Ok(out)
}

fn hex_val(c: u8) -> Result<u8, BadPath> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(BadPath),
    }
}

/// How a route's path is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Exact,
    Prefix,
}

/// What a route does to the path before it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathChange {
    Keep,
    /// Replace the matched part.
    Rewrite(String),
    /// Drop the matched part (`/api/x` → `/x`).
    StripPrefix,
}

/// Does `route_path` match `path` (already normalized)?
pub fn matches(kind: MatchKind, route_path: &str, path: &str) -> bool {
    match kind {
        MatchKind::Exact => path == route_path,
        MatchKind::Prefix => path.starts_with(route_path),
    }
}

/// The path and query the upstream receives.
pub fn upstream_uri(
    change: &PathChange,
    route_path: &str,
    path: &str,
    query: Option<&str>,
) -> String {
    let rest = path.get(route_path.len()..).unwrap_or("");
    let mut out = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1) + 16);
    match change {
        PathChange::Keep => out.push_str(path),
        PathChange::Rewrite(to) => {
            out.push_str(to);
            out.push_str(rest);
        }
        PathChange::StripPrefix => {
            if !rest.starts_with('/') {
                out.push('/');
            }
            out.push_str(rest);
        }
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, BadPath> {
        normalize(p).map(|c| c.into_owned())
    }

    #[test]
    fn clean_paths_are_borrowed_unchanged() {
        assert!(matches!(
            normalize("/api/colorize"),
            Ok(Cow::Borrowed("/api/colorize"))
        ));
    }

    #[test]
    fn dot_segments_resolve_and_slashes_merge() {
        assert_eq!(norm("/api/../health").unwrap(), "/health");
        assert_eq!(norm("//api/colorize").unwrap(), "/api/colorize");
        assert_eq!(norm("/a/./b/").unwrap(), "/a/b/");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a//b///c").unwrap(), "/a/b/c");
    }

    #[test]
    fn encoded_dots_are_decoded_then_resolved() {
        assert_eq!(norm("/api/%2e%2e/health").unwrap(), "/health");
        assert_eq!(norm("/%61pi/x").unwrap(), "/api/x");
    }

    #[test]
    fn reserved_escapes_stay_encoded() {
        assert_eq!(norm("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(norm("/a%20b").unwrap(), "/a%20b");
    }

    #[test]
    fn climbing_above_root_or_broken_escapes_are_bad() {
        assert_eq!(norm("/.."), Err(BadPath));
        assert_eq!(norm("/api/../../etc/passwd"), Err(BadPath));
        assert_eq!(norm("/%2e%2e/x"), Err(BadPath));
        assert_eq!(norm("/a%zz"), Err(BadPath));
        assert_eq!(norm("/a%2"), Err(BadPath));
    }

    #[test]
    fn prefix_is_a_plain_string_prefix_as_in_nginx() {
        assert!(matches(MatchKind::Prefix, "/api/", "/api/x"));
        assert!(!matches(MatchKind::Prefix, "/api/", "/api"));
        assert!(matches(
            MatchKind::Prefix,
            "/api/colorize",
            "/api/colorizer"
        ));
        assert!(matches(MatchKind::Exact, "/health", "/health"));
        assert!(!matches(MatchKind::Exact, "/health", "/health/"));
    }

    #[test]
    fn rewrite_and_strip_keep_the_query() {
        let rw = PathChange::Rewrite("/colorize".into());
        assert_eq!(
            upstream_uri(&rw, "/api/colorize", "/api/colorize", Some("a=1")),
            "/colorize?a=1"
        );
        assert_eq!(
            upstream_uri(&PathChange::StripPrefix, "/api/", "/api/x/y", Some("q")),
            "/x/y?q"
        );
        assert_eq!(
            upstream_uri(&PathChange::StripPrefix, "/api", "/api", None),
            "/"
        );
        assert_eq!(upstream_uri(&PathChange::Keep, "/", "/a", None), "/a");
    }
}
