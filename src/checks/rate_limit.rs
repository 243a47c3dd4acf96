//! Request rate limiting with the exact semantics of nginx `limit_req`
//! (`ngx_http_limit_req_module.c`), so limits ported from nginx behave the same.
//! Owns zone specs ([`ZoneSpec`]), per-key bucket arithmetic ([`Node`]), the
//! per-zone state backend ([`RateStore`]: in-memory [`LocalStore`] now, a shared
//! store later) and the multi-zone check-then-account ([`check`]). Time comes in
//! as monotonic `now_ms` ([`monotonic_ms`]) so tests are deterministic. The API
//! is sync and locks are held per map operation only: safe from async code.

use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use lru::LruCache;

/// Default bound on keys per zone.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// `delay` value meaning nginx's `nodelay`.
pub const NODELAY: u64 = u64::MAX;
/// Shards per [`LocalStore`], so concurrent requests rarely share a lock.
const SHARDS: usize = 16;

/// Milliseconds since first use, from a monotonic clock: wall-clock jumps
/// must not refill or drain buckets.
pub fn monotonic_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let elapsed = EPOCH.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// One `limit_req_zone` + `limit_req` pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneSpec {
    /// Millirequests per second, nginx form `n*1000/scale` ([`ZoneSpec::parse_rate`]).
    pub rate: u64,
    /// Requests allowed above the rate before rejecting.
    pub burst: u64,
    /// Excess requests served undelayed: [`NODELAY`] = `nodelay`, 0 = delay all.
    pub delay: u64,
    /// Keys remembered; the least recently used are forgotten first.
    pub max_keys: usize,
}

impl ZoneSpec {
    /// A spec with [`DEFAULT_MAX_KEYS`].
    pub fn new(rate: u64, burst: u64, delay: u64) -> Self {
        let max_keys = DEFAULT_MAX_KEYS;
        ZoneSpec {
            rate,
            burst,
            delay,
            max_keys,
        }
    }

    /// `"10r/s"` / `"300r/m"` → nginx's stored rate, truncated as nginx does
    /// (`1r/m` → 16: one request per 62.5 s). As in nginx a bare number is r/s;
    /// digits only (`parse` alone would take a leading `+`).
    pub fn parse_rate(s: &str) -> Result<u64, String> {
        let (digits, scale) = match (s.strip_suffix("r/s"), s.strip_suffix("r/m")) {
            (Some(d), _) => (d, 1),
            (_, Some(d)) => (d, 60),
            _ => (s, 1),
        };
        let bad = || format!("invalid rate {s:?}: want a positive integer and r/s or r/m");
        match digits.parse::<u64>() {
            Ok(n) if n > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => {
                n.checked_mul(1000).map(|m| m / scale).ok_or_else(bad)
            }
            _ => Err(bad()),
        }
    }

    /// Rate for divisions: a hand-built 0 acts as 1 rather than panic. All
    /// bucket arithmetic is i128 so that no u64/i64 input can overflow.
    fn rate_i(&self) -> i128 {
        i128::from(self.rate.max(1))
    }

    /// nginx `ngx_http_limit_req_account`: the wait for a request that left
    /// the bucket at `excess`: 0 within `delay`, else `(excess-delay)*1000/rate`.
    pub fn delay_ms(&self, excess: i64) -> u64 {
        let over = i128::from(excess) - i128::from(self.delay) * 1000;
        u64::try_from(over.max(0) * 1000 / self.rate_i()).unwrap_or(u64::MAX)
    }
}

/// State of one key in one zone, as nginx's `ngx_http_limit_req_node_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    /// Millirequests above the rate (the bucket level).
    pub excess: i64,
    /// `now_ms` of the last accounted request that moved the clock.
    pub last: u64,
}

/// One key in one zone, evaluated without committing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek {
    /// Would pass, leaving the bucket at `excess` (which sets the delay).
    Pass { excess: i64 },
    /// Over burst (nginx `NGX_BUSY`); retrying sooner than this fails too.
    Busy { retry_after_ms: u64 },
}

impl Node {
    /// A new key: nginx stores excess 0, not 1000, so the first request is
    /// never delayed and a burst of `b` admits `b + 1` at once.
    pub fn fresh(now_ms: u64) -> Self {
        let (excess, last) = (0, now_ms);
        Node { excess, last }
    }

    /// nginx's `ms = now - last` and `excess = node.excess - rate*ms/1000 +
    /// 1000` floored at 0. A clock up to 60 s behind counts as `ms = 0`;
    /// further behind as 1, so an accepted request re-syncs `last` (as nginx).
    fn decay(&self, now_ms: u64, spec: &ZoneSpec) -> (u64, i64) {
        let ms = match now_ms.checked_sub(self.last) {
            Some(ms) => ms,
            None if self.last - now_ms > 60_000 => 1,
            None => 0,
        };
        // rate*ms/1000 in u64 whenever it fits (real rates and gaps always
        // do): an i128 division is a library call, on every check of every zone.
        let rate = spec.rate.max(1);
        let drained = match rate.checked_mul(ms) {
            Some(p) => i128::from(p / 1000),
            None => spec.rate_i() * i128::from(ms) / 1000,
        };
        let e = i128::from(self.excess) - drained + 1000;
        (ms, i64::try_from(e.max(0)).unwrap_or(i64::MAX))
    }

    /// nginx's lookup on an existing node; busy iff `excess > burst*1000`.
    ///
    /// Retry-After: a request at `now + t` sees `ms' = ms + t` and passes iff
    /// `excess - floor(rate*ms'/1000) + 1000 <= burst`, i.e. iff `rate*ms' >=
    /// 1000*need` (`need = excess + 1000 - burst`), so `t = ceil(1000*need/rate)
    /// minus ms`; busy means `need > rate*ms/1000`, so `t >= 1`. This keeps
    /// nginx's truncated rate (1r/m waits 62.5 s).
    pub fn evaluate(&self, now_ms: u64, spec: &ZoneSpec) -> Peek {
        let (ms, excess) = self.decay(now_ms, spec);
        let burst = i128::from(spec.burst) * 1000;
        if i128::from(excess) <= burst {
            return Peek::Pass { excess };
        }
        let need = i128::from(self.excess) + 1000 - burst;
        let at = (need * 1000 + spec.rate_i() - 1) / spec.rate_i();
        let wait = u64::try_from(at - i128::from(ms)).unwrap_or(u64::MAX);
        let retry_after_ms = wait.max(1);
        Peek::Busy { retry_after_ms }
    }

    /// Accounts one accepted request: store the recomputed excess, and move
    /// `last` only if time moved (nginx), so sub-ms bursts keep their origin.
    pub fn account(&mut self, now_ms: u64, spec: &ZoneSpec) -> i64 {
        let (ms, excess) = self.decay(now_ms, spec);
        self.excess = excess;
        if ms != 0 {
            self.last = now_ms;
        }
        excess
    }
}

/// Per-zone state backend, split into peek and commit because nginx checks
/// every zone before accounting any (a request rejected by a later zone costs
/// earlier zones nothing). A shared (Redis) store reuses [`Node`]'s arithmetic.
pub trait RateStore: Send + Sync {
    /// Evaluates `key` without changing or inserting it (unknown: excess 0).
    fn peek(&self, key: &[u8], now_ms: u64, spec: &ZoneSpec) -> Peek;
    /// Accounts one request unconditionally (nginx's account step for zones
    /// already checked), inserting unknown keys. Returns the new excess.
    fn commit(&self, key: &[u8], now_ms: u64, spec: &ZoneSpec) -> i64;
    /// Atomic check-and-commit (nginx's lookup with `account=1`, for the last
    /// zone), so racing requests cannot both take the bucket's last slot.
    fn acquire(&self, key: &[u8], now_ms: u64, spec: &ZoneSpec) -> Peek;
    /// Keys currently held (best effort for shared stores).
    fn key_count(&self) -> usize;
}

type Map = LruCache<Box<[u8]>, Node>;

/// In-process store: sharded LRU maps, so memory stays bounded by `max_keys`
/// whatever keys clients send; lookups by `&[u8]` never allocate.
pub struct LocalStore {
    shards: Box<[Mutex<Map>]>,
    /// Keys per shard. The maps grow up to it rather than reserve it up
    /// front: a zone sized for 100k keys costs nothing until it is used.
    cap: usize,
    /// Random per store, so clients cannot aim all their keys at one shard;
    /// foldhash, as this runs several times per request.
    hasher: foldhash::fast::RandomState,
}

impl LocalStore {
    /// At most `max_keys` keys in total (at least 1): tiny bounds use fewer
    /// shards so that the total never exceeds `max_keys`.
    pub fn new(max_keys: usize) -> Self {
        let count = max_keys.clamp(1, SHARDS);
        let cap = (max_keys / count).max(1);
        let shards = (0..count)
            .map(|_| Mutex::new(LruCache::unbounded()))
            .collect();
        let hasher = foldhash::fast::RandomState::default();
        LocalStore {
            shards,
            cap,
            hasher,
        }
    }

    /// Insert a new key, dropping the least recently used one at the bound.
    fn insert(&self, map: &mut Map, key: &[u8], node: Node) {
        if map.len() >= self.cap {
            map.pop_lru();
        }
        map.put(key.into(), node);
    }

    /// Locks the key's shard. Poison is recovered: a critical section is one
    /// map operation, so a panic cannot leave the map half-updated.
    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Map> {
        let idx = (self.hasher.hash_one(key) % self.shards.len() as u64) as usize;
        let shard = &self.shards[idx];
        shard.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RateStore for LocalStore {
    fn peek(&self, key: &[u8], now_ms: u64, spec: &ZoneSpec) -> Peek {
        // `get` refreshes recency, as nginx moves the node to the queue head.
        let node = self.shard(key).get(key).copied();
        node.map_or(Peek::Pass { excess: 0 }, |n| n.evaluate(now_ms, spec))
    }

    fn commit(&self, key: &[u8], now_ms: u64, spec: &ZoneSpec) -> i64 {
        let mut map = self.shard(key);
        if let Some(node) = map.get_mut(key) {
            return node.account(now_ms, spec);
        }
        self.insert(&mut map, key, Node::fresh(now_ms));
        0
    }

    fn acquire(&self, key: &[u8], now_ms: u64, spec: &ZoneSpec) -> Peek {
        let mut map = self.shard(key);
        let Some(node) = map.get_mut(key) else {
            self.insert(&mut map, key, Node::fresh(now_ms));
            return Peek::Pass { excess: 0 };
        };
        match node.evaluate(now_ms, spec) {
            Peek::Pass { .. } => Peek::Pass {
                excess: node.account(now_ms, spec),
            },
            busy => busy,
        }
    }

    fn key_count(&self) -> usize {
        let len = |s: &Mutex<Map>| s.lock().unwrap_or_else(PoisonError::into_inner).len();
        self.shards.iter().map(len).sum()
    }
}

/// A named zone: its spec and the state of every key in it.
pub struct RateZone {
    pub name: String,
    pub spec: ZoneSpec,
    store: Box<dyn RateStore>,
}

impl RateZone {
    /// A zone in a [`LocalStore`] bounded by `spec.max_keys`.
    pub fn new(name: impl Into<String>, spec: ZoneSpec) -> Self {
        Self::with_store(name, spec, Box::new(LocalStore::new(spec.max_keys)))
    }

    /// A zone in another store (e.g. one shared between gateways).
    pub fn with_store(name: impl Into<String>, spec: ZoneSpec, store: Box<dyn RateStore>) -> Self {
        let name = name.into();
        RateZone { name, spec, store }
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.store.key_count()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve it after sleeping `delay_ms` (0 = at once).
    Allow { delay_ms: u64 },
    /// Refuse it. `zone` indexes [`check`]'s slice; `retry_after_secs` (>= 1)
    /// is when that zone would accept the key (a lower bound if others are full).
    Reject { zone: usize, retry_after_secs: u64 },
}

/// nginx's multi-zone check + account: zones are checked in order without
/// committing, and the first full one rejects with nothing committed anywhere.
/// Otherwise the last counted zone is checked-and-committed atomically, then
/// the earlier ones are committed; the delay is the maximum over zones. Locks
/// are per map operation, so racing requests can overshoot slightly (as nginx).
///
/// As in nginx, a zone whose key is empty (how `limit_req` is made
/// conditional) or longer than 65535 bytes is skipped for this request.
pub fn check(zones: &[(&RateZone, &[u8])], now_ms: u64) -> Decision {
    let counted = |i: &usize| (1..=65_535).contains(&zones[*i].1.len());
    let Some(last) = (0..zones.len()).rev().find(counted) else {
        return Decision::Allow { delay_ms: 0 };
    };
    let reject = |zone: usize, retry_after_ms: u64| {
        log::debug!("limiting requests by zone \"{}\"", zones[zone].0.name);
        let retry_after_secs = retry_after_ms.div_ceil(1000).max(1);
        Decision::Reject {
            zone,
            retry_after_secs,
        }
    };
    for i in (0..last).filter(counted) {
        let (zone, key) = zones[i];
        if let Peek::Busy { retry_after_ms } = zone.store.peek(key, now_ms, &zone.spec) {
            return reject(i, retry_after_ms);
        }
    }
    let (zone, key) = zones[last];
    let mut delay_ms = match zone.store.acquire(key, now_ms, &zone.spec) {
        Peek::Busy { retry_after_ms } => return reject(last, retry_after_ms),
        Peek::Pass { excess } => zone.spec.delay_ms(excess),
    };
    for (zone, key) in (0..last).filter(counted).map(|i| zones[i]) {
        let excess = zone.store.commit(key, now_ms, &zone.spec);
        delay_ms = delay_ms.max(zone.spec.delay_ms(excess));
    }
    Decision::Allow { delay_ms }
}

/// [`check`] without the account step: what it would decide now, committing and
/// inserting nothing. For zones checked early but charged later, e.g. a route's per-IP
/// zones before JWT with its per-user zones after: peek the per-IP zones before JWT, then
/// [`check`] them together with the per-user zones, so that a request a per-user zone
/// rejects costs the per-IP zones nothing (as nginx checks all zones before accounting).
pub fn peek(zones: &[(&RateZone, &[u8])], now_ms: u64) -> Decision {
    let mut delay_ms = 0;
    for (i, (zone, key)) in zones.iter().enumerate() {
        if !(1..=65_535).contains(&key.len()) {
            continue;
        }
        match zone.store.peek(key, now_ms, &zone.spec) {
            Peek::Busy { retry_after_ms } => {
                let retry_after_secs = retry_after_ms.div_ceil(1000).max(1);
                return Decision::Reject {
                    zone: i,
                    retry_after_secs,
                };
            }
            Peek::Pass { excess } => delay_ms = delay_ms.max(zone.spec.delay_ms(excess)),
        }
    }
    Decision::Allow { delay_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"10.0.0.1";

    fn zone(rate: &str, burst: u64, delay: u64) -> RateZone {
        let rate = ZoneSpec::parse_rate(rate).expect("valid rate");
        RateZone::new("test", ZoneSpec::new(rate, burst, delay))
    }

    /// One request for `KEY` through `zones` at each of `times`, rendered as
    /// `ok` (no delay), `+N` (delayed N ms) or `rejZ:S` (zone Z, retry in S s).
    fn hits(zones: &[&RateZone], times: &[u64]) -> String {
        let zones: Vec<(&RateZone, &[u8])> = zones.iter().map(|z| (*z, KEY)).collect();
        let show = |t: &u64| match check(&zones, *t) {
            Decision::Allow { delay_ms: 0 } => "ok".to_string(),
            Decision::Allow { delay_ms } => format!("+{delay_ms}"),
            Decision::Reject {
                zone,
                retry_after_secs,
            } => format!("rej{zone}:{retry_after_secs}"),
        };
        times.iter().map(show).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn nodelay_burst_10_lets_11_through_then_one_per_200ms() {
        let z = zone("5r/s", 10, NODELAY);
        let want = format!("{}{}", "ok ".repeat(11), "rej0:1 ".repeat(19));
        assert_eq!(hits(&[&z], &[1_000; 30]), want.trim_end());
        for t in (1_200..=3_000).step_by(200) {
            assert_eq!(hits(&[&z], &[t - 1, t, t]), "rej0:1 ok rej0:1");
        }
    }

    #[test]
    fn delay_8_serves_9_at_once_then_100ms_steps_and_rejects_the_22nd() {
        let want = "+100 +200 +300 +400 +500 +600 +700 +800 +900 +1000 +1100 +1200 rej0:1";
        let got = hits(&[&zone("10r/s", 20, 8)], &[5; 22]);
        assert_eq!(got, format!("{}{want}", "ok ".repeat(9)));
    }

    #[test]
    fn without_nodelay_second_immediate_request_waits_one_interval() {
        assert_eq!(hits(&[&zone("10r/s", 5, 0)], &[0; 3]), "ok +100 +200");
        assert_eq!(hits(&[&zone("4r/s", 5, 0)], &[0; 2]), "ok +250");
    }

    #[test]
    fn per_minute_rates_truncate_like_nginx() {
        let rates = ["10r/s", "300r/m", "1r/m", "2r/m", "7"].map(ZoneSpec::parse_rate);
        assert_eq!(rates, [10_000, 5_000, 16, 33, 7_000].map(Ok));
        for bad in ",0r/s,0r/m,r/s,-1r/s,+1r/s,1.5r/s,10r/h,99999999999999999999r/s".split(',') {
            assert!(ZoneSpec::parse_rate(bad).is_err(), "{bad}");
        }
        let z = zone("60r/m", 0, 0);
        assert_eq!(hits(&[&z], &[10_000, 10_999, 11_000]), "ok rej0:1 ok");
        // 1r/m is 16 millireq/s, so the next request is admitted after 62.5 s.
        let z = zone("1r/m", 0, 0);
        assert_eq!(hits(&[&z], &[0, 62_499, 62_500]), "ok rej0:1 ok");
    }

    #[test]
    fn rejected_request_consumes_no_zone() {
        let (wide, narrow) = (zone("10r/s", 5, NODELAY), zone("1r/s", 0, NODELAY));
        let want = format!("ok{}", " rej1:1".repeat(10));
        assert_eq!(hits(&[&wide, &narrow], &[0; 11]), want);
        // The wide zone still has its whole burst of 5 left.
        assert_eq!(hits(&[&wide], &[0; 6]), "ok ok ok ok ok rej0:1");
        // Rejected by the first zone: a new key is not inserted into the second.
        let fresh = zone("1r/s", 0, NODELAY);
        assert_eq!(hits(&[&narrow, &fresh], &[0]), "rej0:1");
        assert!(fresh.is_empty());
    }

    #[test]
    fn peek_decides_as_check_but_commits_nothing() {
        let (wide, narrow) = (zone("1r/m", 2, NODELAY), zone("1r/m", 0, 5));
        let both: [(&RateZone, &[u8]); 2] = [(&wide, KEY), (&narrow, KEY)];
        for _ in 0..3 {
            assert_eq!(peek(&both, 0), Decision::Allow { delay_ms: 0 });
        }
        assert!(wide.is_empty() && narrow.is_empty());
        assert_eq!(hits(&[&wide, &narrow], &[0]), "ok");
        let full = Decision::Reject {
            zone: 1,
            retry_after_secs: 63,
        };
        assert_eq!(peek(&both, 0), full);
        assert_eq!(peek(&both, 0), check(&both, 0));
        // The rejected check charged neither zone: the wide one has 2 left.
        assert_eq!(hits(&[&wide], &[0, 0, 0]), "ok ok rej0:63");
        let slow = zone("1r/s", 5, 0);
        assert_eq!(hits(&[&slow], &[0]), "ok");
        assert_eq!(peek(&[(&slow, KEY)], 0), Decision::Allow { delay_ms: 1000 });
        assert_eq!(peek(&[(&slow, b"")], 0), Decision::Allow { delay_ms: 0 });
    }

    #[test]
    fn delay_is_the_maximum_over_zones() {
        let (slow, fast) = (zone("1r/s", 5, 0), zone("10r/s", 5, 0));
        assert_eq!(hits(&[&slow, &fast], &[0, 0]), "ok +1000");
        assert_eq!(hits(&[&fast, &slow], &[0]), "+2000");
    }

    #[test]
    fn retry_after_is_at_least_one_second_and_exact_for_slow_rates() {
        // 6r/m is 100 millireq/s: exactly 10 s per request.
        let z = zone("6r/m", 0, 0);
        assert_eq!(hits(&[&z], &[0, 0, 4_500, 10_000]), "ok rej0:10 rej0:6 ok");
        // 1r/m is 16 millireq/s in nginx, so 62.5 s; 100r/s waits 10 ms: 1 s.
        assert_eq!(hits(&[&zone("1r/m", 0, 0)], &[0, 0]), "ok rej0:63");
        assert_eq!(hits(&[&zone("100r/s", 0, 0)], &[0, 0]), "ok rej0:1");
    }

    #[test]
    fn retry_after_ms_is_the_first_instant_that_passes() {
        for (rate, burst) in [("1r/m", 0), ("2r/m", 3), ("7r/s", 1)] {
            let spec = ZoneSpec::new(ZoneSpec::parse_rate(rate).expect("rate"), burst, 0);
            let mut node = Node::fresh(0);
            (0..=burst).for_each(|_| _ = node.account(17, &spec));
            let retry = |now| match node.evaluate(now, &spec) {
                Peek::Busy { retry_after_ms } => retry_after_ms,
                Peek::Pass { .. } => 0,
            };
            let t = retry(17);
            assert!(
                retry(16 + t) > 0 && retry(17 + t) == 0,
                "{rate} burst {burst}"
            );
        }
    }

    #[test]
    fn lru_bounds_memory_to_max_keys() {
        for (max_keys, inserts) in [(1_000, 1_000_000u32), (3, 100)] {
            let mut spec = ZoneSpec::new(10_000, 0, NODELAY);
            spec.max_keys = max_keys;
            let z = RateZone::new("bounded", spec);
            for i in 0..inserts {
                check(&[(&z, &i.to_le_bytes())], u64::from(i));
            }
            assert!(z.len() <= max_keys, "{} > {max_keys}", z.len());
        }
    }

    #[test]
    fn decay_is_the_same_whether_rate_times_gap_fits_in_u64_or_not() {
        let rate = u64::MAX / 1000;
        let spec = ZoneSpec::new(rate, 0, NODELAY);
        let node = Node {
            excess: i64::MAX,
            last: 0,
        };
        // 1000 ms fits in u64 (exactly at the edge), 1001 does not.
        for ms in [0, 1, 999, 1000, 1001, 5000, u64::MAX] {
            let want = i128::from(node.excess) - i128::from(rate) * i128::from(ms) / 1000 + 1000;
            let want = i64::try_from(want.max(0)).unwrap_or(i64::MAX);
            assert_eq!(node.decay(ms, &spec), (ms, want), "ms {ms}");
        }
    }

    #[test]
    fn clock_going_backwards_does_not_panic() {
        let times = [100_000, 99_000, 0, u64::MAX, 0, 5, u64::MAX, 1];
        hits(&[&zone("5r/s", 2, 1)], &times);
        // More than 60 s back, an accepted request re-syncs `last` (nginx
        // counts it as 1 ms elapsed), so decay resumes from the new clock.
        let times = [1_000_000, 1_000_000, 500_000, 501_000];
        assert_eq!(hits(&[&zone("1r/s", 5, 0)], &times), "ok +1000 +1999 +1999");
    }

    #[test]
    fn empty_key_is_not_limited_and_first_request_is_never_delayed() {
        let z = zone("1r/s", 0, 0);
        let long = vec![b'x'; 65_536];
        for key in [&b""[..], &long] {
            (0..5).for_each(|_| assert_eq!(check(&[(&z, key)], 0), check(&[], 0)));
        }
        assert!(z.is_empty());
        assert_eq!(hits(&[&z], &[0]), "ok");
    }

    #[test]
    fn concurrent_requests_never_exceed_the_burst() {
        let z = zone("1r/s", 99, NODELAY);
        let total: usize = std::thread::scope(|s| {
            let run = || hits(&[&z], &[0; 50]).matches("ok").count();
            let handles: Vec<_> = (0..4).map(|_| s.spawn(run)).collect();
            handles.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        assert_eq!(total, 100);
    }
}
