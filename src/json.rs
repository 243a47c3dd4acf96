//! The few bits of JSON we write by hand on the request path (error bodies,
//! access-log lines): building them with `serde_json::json!` costs
//! microseconds per request, appending to a reused buffer costs nanoseconds.

/// Append `s` as a JSON string literal, quotes included.
pub fn push_str(out: &mut String, s: &str) {
    // Most strings need no escape at all: checked eight bytes at a time (the
    // last few one by one), then copied in one piece.
    if !may_need_any_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    // Scan bytes, not chars: almost every byte of a log line needs no escape.
    while i < bytes.len() {
        // Eight at a time while none of them can need one.
        while let Some(chunk) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            if may_need_escape(word) {
                break;
            }
            i += 8;
        }
        let Some(&b) = bytes.get(i) else { break };
        let (esc, len) = match b {
            b'"' => ("\\\"", 1),
            b'\\' => ("\\\\", 1),
            b'\n' => ("\\n", 1),
            b'\r' => ("\\r", 1),
            b'\t' => ("\\t", 1),
            0..=0x1f => ("", 1),
            // U+2028 and U+2029 (E2 80 A8/A9) end a line in JavaScript.
            0xe2 if matches!(bytes.get(i + 1..i + 3), Some([0x80, 0xa8 | 0xa9])) => ("", 3),
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let c = s[i..].chars().next().map_or(0, |c| c as u32);
            out.push_str("\\u");
            for shift in [12, 8, 4, 0] {
                out.push(char::from(
                    b"0123456789abcdef"[((c >> shift) & 0xf) as usize],
                ));
            }
        } else {
            out.push_str(esc);
        }
        i += len;
        start = i;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Whether any byte of `bytes` may need an escape: `false` means none does.
fn may_need_any_escape(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        if may_need_escape(u64::from_le_bytes(word.try_into().unwrap_or_default())) {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| !(0x20..0x80).contains(&b) || b == b'"' || b == b'\\')
}

/// Whether any of the eight bytes in `word` is a control byte, `"`, a backslash or
/// not ASCII (which may start U+2028/9): the bit tricks of "Bit Twiddling
/// Hacks" (`haszero`, `hasless`), which can report a byte that is not there
/// but never miss one that is, so a `true` only sends the scan byte by byte.
fn may_need_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    word & HIGH != 0
        || word.wrapping_sub(ONES * 0x20) & HIGH != 0
        || has_zero(word ^ (ONES * u64::from(b'"')))
        || has_zero(word ^ (ONES * u64::from(b'\\')))
}

/// Append an unsigned integer.
pub fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Append `n` left-padded with zeros to `width` digits.
pub fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

/// Append a duration in seconds with millisecond precision (`0.812`), as
/// nginx logs `$request_time`; rounded to the nearest millisecond.
pub fn push_secs_millis(out: &mut String, d: std::time::Duration) {
    // In u64, not `as_nanos()`'s u128, whose division is a library call
    // (twice per log line). The rounding may carry into the next second.
    let ms = d
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from((d.subsec_nanos() + 500_000) / 1_000_000));
    push_u64(out, ms / 1000);
    out.push('.');
    push_padded(out, ms % 1000, 3);
}

/// Append an IP address as a JSON string.
pub fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    out.push('"');
    push_ip_text(out, ip);
    out.push('"');
}

/// Append an IP address as text. IPv4 by hand: `Display` goes through the
/// formatting machinery and costs several times more, on every request.
pub fn push_ip_text(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            // Digit by digit: this runs four times per request (X-Real-IP,
            // X-Forwarded-For, the log line's two), and a copy call per
            // octet cost more than the byte or three it copied.
            out.reserve(15);
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if o >= 100 {
                    out.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    out.push(char::from(b'0' + o / 10 % 10));
                }
                out.push(char::from(b'0' + o % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Append bytes that should be text (headers): invalid UTF-8 is replaced.
pub fn push_bytes(out: &mut String, b: &[u8]) {
    push_str(out, &String::from_utf8_lossy(b));
}

/// Append `Some(s)` as a string, `None` as `null`.
pub fn push_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip_through_a_real_parser() {
        let nasty = "quote\" back\\ nl\n tab\t ctl\u{1} uni 请 \u{2028}";
        let mut out = String::new();
        push_str(&mut out, nasty);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, nasty);
    }

    #[test]
    fn every_special_byte_is_escaped_at_every_offset_of_a_word() {
        for special in [
            "\"", "\\", "\n", "\u{1}", "\u{1f}", "\u{2028}", "\u{2029}", "é",
        ] {
            // Long strings (a word at a time) and short ones (byte by byte).
            let cases = (0..17)
                .map(|at| (at, 20 - at))
                .chain((0..8).flat_map(|at| (0..8 - at).map(move |after| (at, after))));
            for (at, after) in cases {
                let s = format!("{}{special}{}", "a".repeat(at), "b".repeat(after));
                let mut out = String::new();
                push_str(&mut out, &s);
                let back: String = serde_json::from_str(&out).unwrap();
                assert_eq!(back, s);
                let raw_line_breaks = ['\n', '\u{2028}', '\u{2029}']
                    .iter()
                    .any(|&c| out.contains(c));
                assert!(!raw_line_breaks, "{out}");
            }
        }
    }

    #[test]
    fn numbers_durations_and_addresses_match_display() {
        let mut out = String::new();
        push_padded(&mut out, 7, 3);
        out.push(' ');
        push_u64(&mut out, 18_446_744_073_709_551_615);
        assert_eq!(out, "007 18446744073709551615");
        for (nanos, want) in [
            (0, "0.000"),
            (499_999, "0.000"),
            (500_000, "0.001"),
            (812_000_000, "0.812"),
            (61_999_600_000, "62.000"),
            (1_999_499_999, "1.999"),
            (3_000_499_999, "3.000"),
        ] {
            let mut out = String::new();
            push_secs_millis(&mut out, std::time::Duration::from_nanos(nanos));
            assert_eq!(out, want, "{nanos} ns");
        }
        for ip in [
            "0.0.0.0",
            "203.0.113.255",
            "10.1.22.3",
            "::1",
            "2001:db8::7",
        ] {
            let mut out = String::new();
            push_ip(&mut out, ip.parse().unwrap());
            assert_eq!(out, format!("\"{ip}\""));
        }
    }

    #[test]
    fn every_ipv4_octet_is_written_as_display_writes_it() {
        for o in 0..=255u8 {
            for ip in [
                std::net::Ipv4Addr::new(o, 0, 255, o),
                std::net::Ipv4Addr::new(9, o, o, 100),
            ] {
                let mut text = String::new();
                push_ip_text(&mut text, ip.into());
                assert_eq!(text, ip.to_string());
            }
        }
    }
}
