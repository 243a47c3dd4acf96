//! In-flight caps that protect the GPU: per user (429) and per upstream
//! (503). A slot is held by a guard stored in the request context, so it is
//! released on every path — success, error, client abort — when the
//! context is dropped. Counts are exact (no sketch), so an innocent user is
//! never refused for someone else's load.

use std::collections::HashMap;
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

/// Requests in flight per user; entries disappear when they reach zero, so
/// memory follows the number of users with a request in flight.
#[derive(Debug)]
pub struct UserInflight {
    shards: Vec<Mutex<HashMap<Box<str>, usize>>>,
}

/// Releases a user slot on drop.
#[derive(Debug)]
pub struct UserSlot {
    owner: Arc<UserInflight>,
    user: Box<str>,
}

impl Default for UserInflight {
    fn default() -> Self {
        UserInflight {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl UserInflight {
    fn shard(&self, user: &str) -> &Mutex<HashMap<Box<str>, usize>> {
        // FNV-1a: cheap and good enough to spread user ids over 16 locks.
        let mut h: u32 = 0x811c9dc5;
        for b in user.bytes() {
            h = (h ^ b as u32).wrapping_mul(0x01000193);
        }
        &self.shards[h as usize % SHARDS]
    }

    /// Take a slot for `user` unless they already hold `cap`.
    pub fn acquire(self: &Arc<Self>, user: &str, cap: usize) -> Option<UserSlot> {
        let mut map = self
            .shard(user)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let n = map.entry(Box::from(user)).or_insert(0);
        if *n >= cap {
            if *n == 0 {
                map.remove(user);
            }
            return None;
        }
        *n += 1;
        Some(UserSlot {
            owner: self.clone(),
            user: Box::from(user),
        })
    }

    pub fn current(&self, user: &str) -> usize {
        let map = self
            .shard(user)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(user).copied().unwrap_or(0)
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut map = self
            .owner
            .shard(&self.user)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(n) = map.get_mut(&*self.user) {
            *n -= 1;
            if *n == 0 {
                map.remove(&*self.user);
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
}
