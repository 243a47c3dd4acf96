//! `max_body_size` (413 `payload_too_large`): refused from `Content-Length`
//! before the upstream is contacted, or — for a streamed (chunked) body —
//! as soon as the bytes counted so far pass the limit, before the chunk
//! that passes it is forwarded. A body of exactly the limit passes.

/// Check a declared length; `None` (no header, or a streamed body) passes here.
pub fn declared_fits(content_length: Option<u64>, max: u64) -> bool {
    content_length.is_none_or(|n| n <= max)
}

/// Counts a streamed body; refuses the chunk that would pass the limit.
#[derive(Debug, Default)]
pub struct BodyCounter {
    seen: u64,
}

impl BodyCounter {
    /// Add a chunk of `len` bytes; false once the total is over `max`.
    pub fn add(&mut self, len: usize, max: u64) -> bool {
        self.seen = self.seen.saturating_add(len as u64);
        self.seen <= max
    }

    pub fn total(&self) -> u64 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_limit_passes_one_more_byte_does_not() {
        assert!(declared_fits(Some(100), 100));
        assert!(!declared_fits(Some(101), 100));
        assert!(declared_fits(None, 100));
    }

    #[test]
    fn streamed_body_is_refused_at_the_chunk_that_passes() {
        let mut c = BodyCounter::default();
        assert!(c.add(60, 100));
        assert!(c.add(40, 100));
        assert!(!c.add(1, 100));
        assert_eq!(c.total(), 101);
    }
}
