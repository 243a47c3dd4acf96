//! colorgate patch: the pool of idle upstream connections, without a task
//! per connection.
//!
//! Upstream Pingora parks every released connection in `pingora_pool` and
//! spawns a task that watches it (for the peer closing it, the idle timeout,
//! or eviction) until a request takes it back, which then waits for that task
//! to hand the connection over. On a keep-alive proxy that is one task spawn,
//! two extra task wake-ups, a oneshot channel and a `Notify` per request.
//!
//! Here an idle connection is only a `(key, deadline, stream)` entry in one
//! bounded list, oldest first. Taking one checks its deadline and whether the
//! peer closed it (the socket is readable, which tokio's readiness already
//! knows without a syscall), like nginx's keepalive cache does when it reuses
//! a connection. A connection the peer closed while idle keeps its descriptor
//! until it is taken, evicted, or expires at a later `get`/`put`; the list is
//! bounded, so at most `capacity` descriptors wait that way.
//!
//! The list is kept per thread, as nginx keeps its cache per worker process:
//! a request takes and returns connections on its own thread's list, so
//! neither the lock nor the entries move between cores on every request,
//! and with per-thread runtimes (`work_stealing: false`) a connection stays
//! with the runtime whose reactor drives its socket (patch 40: there a thread
//! never takes another's). `capacity` bounds each thread's list, as nginx's
//! `keepalive` bounds each worker's cache.

use crate::protocols::Stream;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Idle {
    key: u64,
    since: Instant,
    deadline: Option<Instant>,
    stream: Stream,
}

pub(crate) struct IdlePool {
    capacity: usize,
    /// One list per thread (threads past `SHARDS` share); each oldest
    /// first, requests take the newest for their key (LIFO, as nginx).
    shards: Box<[Shard]>,
}

/// Threads that use a pool get lists of their own, up to this many.
const SHARDS: usize = 64;

/// A cache line (or two) of its own, so that two threads' locks never share one.
#[repr(align(128))]
struct Shard(Mutex<VecDeque<Idle>>);

/// Threads that have used a pool so far.
static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's list in every pool, numbered in the order threads first use one.
    static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// What `put` pushed out of the pool: closed after the lock is released.
pub(crate) struct Evicted {
    pub(crate) idle_for: Option<Duration>,
    _stream: Option<Stream>,
}

impl IdlePool {
    pub(crate) fn new(capacity: usize) -> Self {
        IdlePool {
            capacity,
            shards: (0..SHARDS)
                .map(|_| Shard(Mutex::new(VecDeque::new())))
                .collect(),
        }
    }

    /// The calling thread's list.
    fn idle(&self) -> &Mutex<VecDeque<Idle>> {
        &self.shards[SHARD.with(|s| *s)].0
    }

    /// Park `stream` under `key`. A full pool drops its oldest connection.
    pub(crate) fn put(&self, key: u64, stream: Stream, timeout: Option<Duration>) -> Evicted {
        if self.capacity == 0 {
            return Evicted {
                idle_for: None,
                _stream: Some(stream),
            };
        }
        let now = Instant::now();
        let entry = Idle {
            key,
            since: now,
            deadline: timeout.map(|t| now + t),
            stream,
        };
        let mut idle = self.idle().lock();
        let oldest = (idle.len() >= self.capacity)
            .then(|| idle.pop_front())
            .flatten();
        idle.push_back(entry);
        drop(idle);
        Evicted {
            idle_for: oldest.as_ref().map(|o| o.since.elapsed()),
            _stream: oldest.map(|o| o.stream),
        }
    }

    /// The most recently parked connection for `key` that has not expired
    /// and that the peer has not closed, from this thread's list or, when
    /// that has none, another thread's (a request whose task moved to
    /// another thread returned its connection there; connecting anew instead
    /// would overfill that list and churn connections). Dead ones met on the
    /// way are closed.
    ///
    /// colorgate patch 40: on a per-thread (no-steal) runtime, only this
    /// thread's list. A socket's readiness comes through the runtime it was
    /// registered with; another thread's connection would wake that thread
    /// on every read, as nginx's workers never share their caches.
    pub(crate) fn get(&self, key: u64, usable: impl Fn(&mut Stream) -> bool) -> Option<Stream> {
        let own = SHARD.with(|s| *s);
        let threads = NEXT.load(Ordering::Relaxed).clamp(1, SHARDS);
        let lists = if pingora_runtime::on_no_steal_thread() {
            1
        } else {
            threads
        };
        (0..lists)
            .map(|k| &self.shards[(own + k) % threads].0)
            .find_map(|idle| Self::take(idle, key, &usable))
    }

    fn take(
        idle: &Mutex<VecDeque<Idle>>,
        key: u64,
        usable: &impl Fn(&mut Stream) -> bool,
    ) -> Option<Stream> {
        loop {
            let now = Instant::now();
            let mut idle = idle.lock();
            let mut expired = Vec::new();
            while idle
                .front()
                .is_some_and(|o| o.deadline.is_some_and(|d| d <= now))
            {
                expired.extend(idle.pop_front());
            }
            let found = idle
                .iter()
                .rposition(|c| c.key == key)
                .and_then(|i| idle.remove(i));
            drop(idle);
            drop(expired);
            let mut conn = found?;
            if conn.deadline.is_some_and(|d| d <= now) {
                continue;
            }
            if usable(&mut conn.stream) {
                return Some(conn.stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::{l4, UniqueID};
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (Stream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap());
        let (c, s) = tokio::join!(c, l.accept());
        (Box::new(l4::stream::Stream::from(c.unwrap())), s.unwrap().0)
    }

    #[tokio::test]
    async fn takes_the_newest_of_its_key_and_evicts_the_oldest() {
        let pool = IdlePool::new(2);
        let (a, _pa) = pair().await;
        let (b, _pb) = pair().await;
        let (c, _pc) = pair().await;
        let (b_id, c_id) = (b.id(), c.id());
        assert!(pool.put(1, a, None).idle_for.is_none());
        assert!(pool.put(2, b, None).idle_for.is_none());
        // Full: the oldest (key 1) goes.
        assert!(pool.put(2, c, None).idle_for.is_some());
        assert!(pool.get(1, |_| true).is_none());
        assert_eq!(pool.get(2, |_| true).map(|s| s.id()), Some(c_id));
        assert_eq!(pool.get(2, |_| true).map(|s| s.id()), Some(b_id));
        assert!(pool.get(2, |_| true).is_none());
    }

    #[tokio::test]
    async fn expired_and_unusable_connections_are_never_handed_out() {
        let pool = IdlePool::new(4);
        let (a, _pa) = pair().await;
        let (b, mut pb) = pair().await;
        pool.put(1, a, Some(Duration::ZERO));
        assert!(pool.get(1, |_| true).is_none());
        pool.put(1, b, None);
        pb.shutdown().await.unwrap();
        assert!(pool.get(1, |_| false).is_none());
        assert!(pool.idle().lock().is_empty());
    }
}
