//! Request buffering, nginx's `proxy_request_buffering on` (its default): a
//! request's body is read whole before the upstream is contacted. A slow
//! upload then holds neither an upstream connection nor one of the GPU's
//! in-flight slots (`concurrency.upstream`) while it trickles in, and the
//! upstream is sent one body of known length however the client framed it.
//!
//! The bodies being read are held in memory, within
//! `limits.request_buffer_memory` across every request at once: a body that
//! does not fit in what is left is refused (503 `unavailable`), where nginx
//! would spill it to a temporary file. `limits.max_connections_per_ip` and
//! `concurrency.per_user`, checked before, bound one client's share.

use bytes::Bytes;
use pingora_error::ErrorType;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes reserved for bodies being buffered, across all requests.
/// Survives reloads, so a reload never forgets what is held.
#[derive(Debug, Default)]
pub struct BufferMemory {
    used: AtomicU64,
}

/// Memory reserved for one body; returned on drop, on every path.
#[derive(Debug)]
pub struct Reservation {
    owner: Arc<BufferMemory>,
    bytes: u64,
}

impl BufferMemory {
    /// Reserve `bytes` unless that would take the total over `limit`.
    pub fn reserve(self: &Arc<Self>, bytes: u64, limit: u64) -> Option<Reservation> {
        self.take(bytes, limit).then(|| Reservation {
            owner: self.clone(),
            bytes,
        })
    }

    fn take(&self, bytes: u64, limit: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

impl Reservation {
    /// Make the reservation at least `bytes`; false if the memory is not there.
    pub fn grow_to(&mut self, bytes: u64, limit: u64) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        let more = bytes - self.bytes;
        if !self.owner.take(more, limit) {
            return false;
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.owner.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A body read whole, in the pieces it was read in (they are not copied
/// into one buffer: a 1 MiB copy cost more CPU than the rest of an upload),
/// with the memory it is counted against, held until the request ends.
#[derive(Debug)]
pub struct Buffered {
    pub pieces: Vec<Bytes>,
    pub len: u64,
    _memory: Reservation,
}

/// Why a body could not be buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Over `limits.max_body_size` (413).
    TooLarge,
    /// Not within what is left of `limits.request_buffer_memory` (503).
    NoMemory,
    /// Nothing arrived within `limits.body_timeout` (closed, logged 408).
    TimedOut,
    /// Framing that cannot be read, a broken chunk (400).
    Malformed,
    /// The client left before sending it all: no one to answer.
    ClientGone,
}

/// Chunked bodies (no declared length) reserve memory in steps of this size,
/// not one atomic update per piece read.
const GROW_STEP: u64 = 64 << 10;

/// Collects a body's pieces within both limits. `declared`: the request's
/// `Content-Length`, already checked against `max_body` (`body_limit`).
pub struct Collector {
    pieces: Vec<Bytes>,
    len: u64,
    memory: Reservation,
    max_body: u64,
    limit: u64,
}

impl Collector {
    pub fn start(
        memory: &Arc<BufferMemory>,
        limit: u64,
        declared: Option<u64>,
        max_body: u64,
    ) -> Result<Collector, Stop> {
        let first = declared.unwrap_or(0).min(max_body);
        let reservation = memory.reserve(first, limit).ok_or(Stop::NoMemory)?;
        Ok(Collector {
            pieces: Vec::new(),
            len: 0,
            memory: reservation,
            max_body,
            limit,
        })
    }

    /// Take one piece; the request is refused once the body passes a limit.
    pub fn push(&mut self, piece: Bytes) -> Result<(), Stop> {
        let total = self.len + piece.len() as u64;
        if total > self.max_body {
            return Err(Stop::TooLarge);
        }
        let want = total.next_multiple_of(GROW_STEP).min(self.max_body);
        if total > self.memory.bytes && !self.memory.grow_to(want, self.limit) {
            return Err(Stop::NoMemory);
        }
        self.len = total;
        if !piece.is_empty() {
            self.pieces.push(piece);
        }
        Ok(())
    }

    pub fn finish(self) -> Buffered {
        Buffered {
            pieces: self.pieces,
            len: self.len,
            _memory: self.memory,
        }
    }
}

/// What a failed read of the body means for the answer.
pub fn stop_for(e: &pingora_error::Error) -> Stop {
    match e.etype() {
        ErrorType::ReadTimedout => Stop::TimedOut,
        // Pingora's HTTP/1 body reader's own kinds (not exported).
        ErrorType::Custom("InvalidChunk" | "InvalidTrailerEnd") => Stop::Malformed,
        ErrorType::InvalidHTTPHeader => Stop::Malformed,
        _ => Stop::ClientGone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_reserved_up_to_the_limit_and_returned_on_drop() {
        let memory = Arc::new(BufferMemory::default());
        let a = memory.reserve(60, 100).expect("60 of 100");
        assert!(memory.reserve(41, 100).is_none(), "61 + 41 > 100");
        let b = memory.reserve(40, 100).expect("exactly the limit");
        assert_eq!(memory.in_use(), 100);
        drop(a);
        assert_eq!(memory.in_use(), 40);
        drop(b);
        assert_eq!(memory.in_use(), 0);
    }

    #[test]
    fn a_reservation_grows_only_into_free_memory() {
        let memory = Arc::new(BufferMemory::default());
        let _other = memory.reserve(50, 100).expect("50");
        let mut r = memory.reserve(10, 100).expect("10");
        assert!(r.grow_to(50, 100));
        assert!(!r.grow_to(51, 100), "would take the total to 101");
        assert!(r.grow_to(20, 100), "already that big");
        assert_eq!(memory.in_use(), 100);
        drop(r);
        assert_eq!(memory.in_use(), 50);
    }

    #[test]
    fn a_declared_body_is_reserved_whole_before_any_byte_is_read() {
        let memory = Arc::new(BufferMemory::default());
        let _busy = memory.reserve(900, 1000).expect("900");
        assert_eq!(
            Collector::start(&memory, 1000, Some(101), 500).err(),
            Some(Stop::NoMemory)
        );
        let mut c = Collector::start(&memory, 1000, Some(100), 500).expect("fits");
        c.push(Bytes::from(vec![1; 60])).expect("first piece");
        c.push(Bytes::from(vec![2; 40])).expect("second piece");
        assert_eq!(memory.in_use(), 1000, "no more than declared");
        let done = c.finish();
        assert_eq!(done.len, 100);
        let whole: Vec<u8> = done.pieces.concat();
        assert_eq!(&whole[58..62], &[1, 1, 2, 2]);
        drop(done);
        assert_eq!(memory.in_use(), 900);
    }

    #[test]
    fn a_chunked_body_grows_in_steps_and_stops_at_either_limit() {
        let memory = Arc::new(BufferMemory::default());
        let limit = 4 * GROW_STEP;
        let mut c = Collector::start(&memory, limit, None, 2 * GROW_STEP).expect("empty start");
        assert_eq!(memory.in_use(), 0);
        c.push(Bytes::from_static(b"x")).expect("one byte");
        assert_eq!(memory.in_use(), GROW_STEP, "one step, not one byte");
        let piece = Bytes::from(vec![0u8; GROW_STEP as usize]);
        c.push(piece.clone()).expect("second step");
        c.push(piece.slice(1..))
            .expect("exactly max_body with the first byte");
        assert_eq!(c.push(Bytes::from_static(b"y")), Err(Stop::TooLarge));

        let _held = memory
            .reserve(GROW_STEP * 3 / 2, limit)
            .expect("with c's two steps, 3.5 of 4");
        let mut d = Collector::start(&memory, limit, None, limit).expect("empty start");
        assert_eq!(d.push(piece.slice(..10)), Err(Stop::NoMemory));
    }

    #[test]
    fn read_errors_map_to_the_answer_nginx_gives() {
        let e = |t| pingora_error::Error::new(t);
        assert_eq!(stop_for(&e(ErrorType::ReadTimedout)), Stop::TimedOut);
        assert_eq!(
            stop_for(&e(ErrorType::new("InvalidChunk"))),
            Stop::Malformed
        );
        let premature = ErrorType::new("PrematureBodyEnd");
        assert_eq!(stop_for(&e(premature)), Stop::ClientGone);
        assert_eq!(stop_for(&e(ErrorType::ConnectionClosed)), Stop::ClientGone);
    }
}
