//! Tokens verified recently. A client sends the same token for hours, so
//! its signature and claims are checked once, and each later request only
//! looks it up (by the whole token, never a hash of it alone) and checks
//! the clock against the `exp`/`nbf` it carried. Only tokens that passed
//! every check are kept; the cache belongs to one `JwtVerifier`, so a reload
//! that rotates keys starts with an empty one. Memory is bounded: a full
//! shard is emptied, which costs nothing but re-verification.

use std::collections::HashMap;
use std::sync::Mutex;

/// Keys are whole tokens, a few hundred bytes, hashed on every request:
/// foldhash costs a fraction of SipHash there. Only tokens that verified are
/// stored, so a client cannot choose keys to collide.
type Tokens = HashMap<Box<[u8]>, Verified, foldhash::fast::RandomState>;

const SHARDS: usize = 8;
/// Per shard; 8 × 2048 tokens of a few hundred bytes: well under 10 MB.
const PER_SHARD: usize = 2048;

#[derive(Debug, Clone)]
struct Verified {
    user: String,
    exp: Option<u64>,
    nbf: Option<u64>,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Cached {
    /// Verified before and still inside its validity window.
    User(String),
    /// Verified before, but its `exp` (plus leeway) has passed.
    Expired,
    /// Not verified before: check it in full.
    Miss,
}

pub struct TokenCache {
    shards: Vec<Mutex<Tokens>>,
    leeway: u64,
}

/// Never prints the tokens: they are credentials.
impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenCache {{ {} tokens }}", self.len())
    }
}

impl TokenCache {
    pub fn new(leeway_secs: u64) -> TokenCache {
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Tokens::default())).collect(),
            leeway: leeway_secs,
        }
    }

    fn shard(&self, token: &[u8]) -> &Mutex<Tokens> {
        // The signature's last bytes are as good as random; FNV-1a over a
        // few of them spreads tokens evenly (a single base64 character of an
        // ES256 signature would not: its last one takes only 4 values).
        let tail = &token[token.len().saturating_sub(12)..];
        let h = tail.iter().fold(0x811c_9dc5_u32, |h, &c| {
            (h ^ u32::from(c)).wrapping_mul(0x0100_0193)
        });
        &self.shards[h as usize % SHARDS]
    }

    pub fn get(&self, token: &[u8], now: u64) -> Cached {
        let mut map = self.shard(token).lock().unwrap_or_else(|p| p.into_inner());
        let Some(v) = map.get(token) else {
            return Cached::Miss;
        };
        if v.exp
            .is_some_and(|exp| now > exp.saturating_add(self.leeway))
        {
            map.remove(token);
            return Cached::Expired;
        }
        if v.nbf
            .is_some_and(|nbf| now.saturating_add(self.leeway) < nbf)
        {
            // Cannot happen for a token that verified, unless the clock
            // stepped back: verify it again then.
            return Cached::Miss;
        }
        Cached::User(v.user.clone())
    }

    pub fn insert(&self, token: &[u8], user: &str, exp: Option<u64>, nbf: Option<u64>) {
        let mut map = self.shard(token).lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= PER_SHARD {
            map.clear();
        }
        map.insert(
            Box::from(token),
            Verified {
                user: user.to_string(),
                exp,
                nbf,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_token_is_found_until_it_expires_past_the_leeway() {
        let c = TokenCache::new(30);
        assert_eq!(c.get(b"a.b.c", 1000), Cached::Miss);
        c.insert(b"a.b.c", "alice", Some(1000), None);
        assert_eq!(c.get(b"a.b.c", 1000), Cached::User("alice".into()));
        assert_eq!(c.get(b"a.b.c", 1030), Cached::User("alice".into()));
        assert_eq!(c.get(b"a.b.c", 1031), Cached::Expired);
        assert_eq!(
            c.get(b"a.b.c", 1000),
            Cached::Miss,
            "an expired entry is dropped"
        );
    }

    #[test]
    fn only_the_exact_token_matches() {
        let c = TokenCache::new(0);
        c.insert(b"a.b.c", "alice", None, None);
        assert_eq!(c.get(b"a.b.d", 0), Cached::Miss);
        assert_eq!(c.get(b"a.b.c ", 0), Cached::Miss);
    }

    #[test]
    fn memory_is_bounded_whatever_the_number_of_tokens() {
        let c = TokenCache::new(0);
        for i in 0..100_000 {
            c.insert(format!("tok{i}").as_bytes(), "u", None, None);
        }
        assert!(c.len() <= SHARDS * PER_SHARD);
    }

    #[test]
    fn tokens_that_differ_only_near_the_end_spread_over_the_shards() {
        let c = TokenCache::new(0);
        let used: std::collections::HashSet<_> = ["w", "A", "Q", "g"]
            .iter()
            .flat_map(|last| (0..64).map(move |i| format!("h.p.sig{i:02}xx{last}")))
            .map(|t| c.shard(t.as_bytes()) as *const _ as usize)
            .collect();
        assert_eq!(used.len(), SHARDS);
    }

    #[test]
    fn a_clock_stepped_back_before_nbf_means_verify_again() {
        let c = TokenCache::new(0);
        c.insert(b"t", "u", None, Some(500));
        assert_eq!(c.get(b"t", 400), Cached::Miss);
        assert_eq!(c.get(b"t", 500), Cached::User("u".into()));
    }
}
