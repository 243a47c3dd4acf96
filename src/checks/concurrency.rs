//! In-flight caps that protect the GPU: per user and per client IP (429),
//! and per upstream (503). A slot is held by a guard stored in the request
//! context, so it is released on every path — success, error, client
//! abort — when the context is dropped. Counts are exact (no sketch), so
//! an innocent user is never refused for someone else's load.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Requests in flight to one upstream. Survives reloads (shared by name).
#[derive(Debug, Default)]
pub struct UpstreamInflight {
    count: AtomicUsize,
}

/// Releases an upstream slot on drop.
#[derive(Debug)]
pub struct UpstreamSlot(Arc<UpstreamInflight>);

impl UpstreamInflight {
    /// Take a slot unless `cap` are taken already (`None`: no cap, still counted for metrics).
    pub fn acquire(self: &Arc<Self>, cap: Option<usize>) -> Option<UpstreamSlot> {
        let mut current = self.count.load(Ordering::Relaxed);
        loop {
            if cap.is_some_and(|c| current >= c) {
                return None;
            }
            match self.count.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(UpstreamSlot(self.clone())),
                Err(seen) => current = seen,
            }
        }
    }

    pub fn current(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for UpstreamSlot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

const SHARDS: usize = 16;

/// Requests in flight per key (a user, a client IP); entries disappear when
/// they reach zero, so memory follows the number of keys with a request in
/// flight.
#[derive(Debug)]
pub struct KeyedInflight<K> {
    shards: Vec<Mutex<HashMap<K, usize>>>,
}

/// Requests in flight per verified user (`concurrency.per_user`).
pub type UserInflight = KeyedInflight<String>;
/// Requests in flight per client IP (`limits.max_connections_per_ip`).
pub type ClientIpInflight = KeyedInflight<IpAddr>;

/// Releases a keyed slot on drop.
#[derive(Debug)]
pub struct KeyedSlot<K: Eq + Hash> {
    owner: Arc<KeyedInflight<K>>,
    key: K,
}

pub type UserSlot = KeyedSlot<String>;
pub type ClientIpSlot = KeyedSlot<IpAddr>;

impl<K> Default for KeyedInflight<K> {
    fn default() -> Self {
        KeyedInflight {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// FNV-1a: cheap and good enough to spread keys over 16 locks (each map
/// inside keeps std's randomly seeded hasher).
struct Fnv(u32);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u32).wrapping_mul(0x01000193);
        }
    }

    fn finish(&self) -> u64 {
        self.0 as u64
    }
}

impl<K: Eq + Hash> KeyedInflight<K> {
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Mutex<HashMap<K, usize>> {
        let mut h = Fnv(0x811c9dc5);
        key.hash(&mut h);
        &self.shards[h.finish() as usize % SHARDS]
    }

    fn lock<Q: Hash + ?Sized>(&self, key: &Q) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        self.shard(key)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Take a slot for `key` unless it already holds `cap`.
    pub fn acquire<Q>(self: &Arc<Self>, key: &Q, cap: usize) -> Option<KeyedSlot<K>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut map = self.lock(key);
        match map.get_mut(key) {
            Some(n) if *n >= cap => return None,
            Some(n) => *n += 1,
            None if cap == 0 => return None,
            None => {
                map.insert(key.to_owned(), 1);
            }
        }
        Some(KeyedSlot {
            owner: self.clone(),
            key: key.to_owned(),
        })
    }

    pub fn current<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock(key).get(key).copied().unwrap_or(0)
    }
}

impl<K: Eq + Hash> Drop for KeyedSlot<K> {
    fn drop(&mut self) {
        let mut map = self.owner.lock(&self.key);
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_cap_refuses_then_frees_on_drop() {
        let u = Arc::new(UpstreamInflight::default());
        let a = u.acquire(Some(2)).expect("first");
        let _b = u.acquire(Some(2)).expect("second");
        assert!(u.acquire(Some(2)).is_none());
        drop(a);
        assert!(u.acquire(Some(2)).is_some());
    }

    #[test]
    fn uncapped_upstream_still_counts() {
        let u = Arc::new(UpstreamInflight::default());
        let _a = u.acquire(None).expect("no cap");
        assert_eq!(u.current(), 1);
    }

    #[test]
    fn per_user_cap_is_per_user_and_entries_vanish_at_zero() {
        let u = Arc::new(UserInflight::default());
        let a1 = u.acquire("alice", 1).expect("alice first");
        assert!(u.acquire("alice", 1).is_none());
        let b1 = u.acquire("bob", 1).expect("bob unaffected");
        drop(a1);
        drop(b1);
        assert_eq!(u.current("alice"), 0);
        let total: usize = u.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(total, 0);
    }

    #[test]
    fn per_ip_cap_counts_each_address_alone() {
        let u = Arc::new(ClientIpInflight::default());
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        let b: IpAddr = "2001:db8::7".parse().unwrap();
        let a1 = u.acquire(&a, 2).expect("first");
        let a2 = u.acquire(&a, 2).expect("second");
        assert!(u.acquire(&a, 2).is_none(), "third over the cap");
        let _b1 = u.acquire(&b, 2).expect("another address is not affected");
        drop(a1);
        let _a3 = u.acquire(&a, 2).expect("a slot freed on drop");
        drop(a2);
        assert_eq!(u.current(&a), 1);
    }

    #[test]
    fn a_zero_cap_refuses_and_leaves_nothing_behind() {
        let u = Arc::new(UserInflight::default());
        assert!(u.acquire("alice", 0).is_none());
        assert_eq!(u.current("alice"), 0);
        let total: usize = u.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(total, 0);
    }
}
