// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Lightweight timer for systems with high rate of operations with timeout
//! associated with them
//!
//! Users don't need to interact with this module.
//!
//! The idea is to bucket timers into finite time slots so that operations that
//! start and end quickly don't have to create their own timers all the time
//!
//! Benchmark:
//! - create 7.809622ms total, 78ns avg per iteration
//! - drop: 1.348552ms total, 13ns avg per iteration
//!
//! tokio timer:
//! - create 34.317439ms total, 343ns avg per iteration
//! - drop: 10.694154ms total, 106ns avg per iteration

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;
use tokio::sync::Notify;

const RESOLUTION_MS: u64 = 10;
const RESOLUTION_DURATION: Duration = Duration::from_millis(RESOLUTION_MS);

// round to the NEXT timestamp based on the resolution
#[inline]
fn round_to(raw: u64, resolution: u64) -> u64 {
    raw - 1 + resolution - (raw - 1) % resolution
}
// millisecond resolution as most
// colorgate patch 17: milliseconds as u64 (584 million years) rather than
// u128, whose division is a library call on every registration.
#[derive(PartialEq, PartialOrd, Eq, Ord, Clone, Copy, Debug)]
struct Time(u64);

impl From<u64> for Time {
    fn from(raw_ms: u64) -> Self {
        Time(round_to(raw_ms, RESOLUTION_MS))
    }
}

impl From<Duration> for Time {
    fn from(d: Duration) -> Self {
        Time(round_to(d.as_millis() as u64, RESOLUTION_MS))
    }
}

impl Time {
    pub fn not_after(&self, ts: u64) -> bool {
        self.0 <= ts
    }
}

/// the stub for waiting for a timer to be expired.
pub struct TimerStub(Arc<Notify>, Arc<AtomicBool>);

impl TimerStub {
    /// Wait for the timer to expire.
    pub async fn poll(self) {
        if self.1.load(Ordering::SeqCst) {
            return;
        }
        self.0.notified().await;
    }
}

struct Timer(Arc<Notify>, Arc<AtomicBool>);

impl Timer {
    pub fn new() -> Self {
        Timer(Arc::new(Notify::new()), Arc::new(AtomicBool::new(false)))
    }

    pub fn fire(&self) {
        self.1.store(true, Ordering::SeqCst);
        self.0.notify_waiters();
    }

    pub fn subscribe(&self) -> TimerStub {
        TimerStub(self.0.clone(), self.1.clone())
    }

    // colorgate patch 17
    fn share(&self) -> Timer {
        Timer(self.0.clone(), self.1.clone())
    }
}

/// One thread's timers.
// colorgate patch 17: with the two slots it inserted last. A thread
// registers a few distinct durations (a keep-alive wait, an upstream read),
// each rounded into the current 10 ms slot, so nearly every registration
// finds its slot among the last two inserted without searching the tree.
#[derive(Default)]
struct ThreadTimers {
    tree: BTreeMap<Time, Timer>,
    recent: [Option<(Time, Timer)>; 2],
}

impl ThreadTimers {
    fn get(&self, at: Time) -> Option<&Timer> {
        for (t, timer) in self.recent.iter().flatten() {
            if *t == at {
                return Some(timer);
            }
        }
        self.tree.get(&at)
    }

    fn insert(&mut self, at: Time, timer: Timer) {
        // A slot the clock thread fires stays here until two newer ones
        // replace it; it is never asked for again (slots are registered in
        // the future), and if it were, its stub would return at once.
        self.recent = [Some((at, timer.share())), self.recent[0].take()];
        self.tree.insert(at, timer);
    }
}

/// The object that holds all the timers registered to it.
pub struct TimerManager {
    // each thread insert into its local timer tree to avoid lock contention
    timers: ThreadLocal<RwLock<ThreadTimers>>,
    zero: Instant, // the reference zero point of Timestamp
    // Start a new clock thread if this is -1 or staled. The clock thread should keep updating this
    clock_watchdog: AtomicI64,
    paused: AtomicBool,
}

// Consider the clock thread is dead after it fails to update the thread in DELAYS_SEC
const DELAYS_SEC: i64 = 2; // TODO: make sure this value is larger than RESOLUTION_DURATION

impl Default for TimerManager {
    fn default() -> Self {
        TimerManager {
            timers: ThreadLocal::new(),
            zero: Instant::now(),
            clock_watchdog: AtomicI64::new(-DELAYS_SEC),
            paused: AtomicBool::new(false),
        }
    }
}

impl TimerManager {
    /// Create a new [TimerManager]
    pub fn new() -> Self {
        Self::default()
    }

    // This thread sleeps for a resolution time and then fires all the timers that are due to fire
    pub(crate) fn clock_thread(&self) {
        loop {
            std::thread::sleep(RESOLUTION_DURATION);
            let now = Instant::now() - self.zero;
            self.clock_watchdog
                .store(now.as_secs() as i64, Ordering::Relaxed);
            if self.is_paused_for_fork() {
                // just stop acquiring the locks, waiting for fork to happen
                continue;
            }
            let now = now.as_millis() as u64;
            // iterate through the timer tree for all threads
            for thread_timer in self.timers.iter() {
                let timers = &mut thread_timer.write().tree;
                // Fire all timers until now
                loop {
                    let key_to_remove = timers.iter().next().and_then(|(k, _)| {
                        if k.not_after(now) {
                            Some(*k)
                        } else {
                            None
                        }
                    });
                    if let Some(k) = key_to_remove {
                        let timer = timers.remove(&k);
                        // safe to unwrap, the key is from iter().next()
                        timer.unwrap().fire();
                    } else {
                        break;
                    }
                }
                // write lock drops here
            }
        }
    }

    // False if the clock is already started
    // If true, the caller must start the clock thread next
    #[cfg(test)] // colorgate patch 26: callers read the clock once, `_at`
    pub(crate) fn should_i_start_clock(&self) -> bool {
        self.should_i_start_clock_at(self.since_zero())
    }

    // colorgate patch 26: the time since `zero`, read once by a caller that
    // both checks the clock thread and registers a timer.
    pub(crate) fn since_zero(&self) -> Duration {
        Instant::now().saturating_duration_since(self.zero)
    }

    // colorgate patch 26: `should_i_start_clock` at a time already read.
    pub(crate) fn should_i_start_clock_at(&self, since_zero: Duration) -> bool {
        let Err(prev) = self.is_clock_running_at(since_zero) else {
            return false;
        };
        let now = since_zero.as_secs() as i64;
        let res =
            self.clock_watchdog
                .compare_exchange(prev, now, Ordering::SeqCst, Ordering::SeqCst);
        res.is_ok()
    }

    // Ok(()) if clock is running (watch dog is within DELAYS_SEC of now)
    // Err(time) if watch do stopped at `time`
    #[cfg(test)] // colorgate patch 26: callers read the clock once, `_at`
    pub(crate) fn is_clock_running(&self) -> Result<(), i64> {
        self.is_clock_running_at(self.since_zero())
    }

    fn is_clock_running_at(&self, since_zero: Duration) -> Result<(), i64> {
        let now = since_zero.as_secs() as i64;
        let prev = self.clock_watchdog.load(Ordering::SeqCst);
        if now < prev + DELAYS_SEC {
            Ok(())
        } else {
            Err(prev)
        }
    }

    /// Register a timer.
    ///
    /// When the timer expires, the [TimerStub] will be notified.
    pub fn register_timer(&self, duration: Duration) -> TimerStub {
        self.register_timer_at(self.since_zero(), duration)
    }

    // colorgate patch 26: `register_timer` at a time already read.
    pub(crate) fn register_timer_at(&self, since_zero: Duration, duration: Duration) -> TimerStub {
        if self.is_paused_for_fork() {
            // Return a dummy TimerStub that will trigger right away.
            // This is fine assuming pause_for_fork() is called right before fork().
            // The only possible register_timer() is from another thread which will
            // be entirely lost after fork()
            // TODO: buffer these register calls instead (without a lock)
            let timer = Timer::new();
            timer.fire();
            return timer.subscribe();
        }
        let now: Time = (since_zero + duration).into();
        let thread_timers = self.timers.get_or(|| RwLock::new(ThreadTimers::default()));
        {
            let timers = thread_timers.read();
            if let Some(t) = timers.get(now) {
                return t.subscribe();
            }
        } // drop read lock

        let timer = Timer::new();
        let mut timers = thread_timers.write();
        // Usually we check if another thread has insert the same node before we get the write lock,
        // but because only this thread will insert anything to its local timers tree, there
        // is no possible race that can happen. The only other thread is the clock thread who
        // only removes timer from the tree
        let stub = timer.subscribe();
        timers.insert(now, timer);
        stub
    }

    fn is_paused_for_fork(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Pause the timer for fork()
    ///
    /// Because RwLock across fork() is undefined behavior, this function makes sure that no one
    /// holds any locks.
    ///
    /// This function should be called right before fork().
    pub fn pause_for_fork(&self) {
        self.paused.store(true, Ordering::SeqCst);
        // wait for everything to get out of their locks
        std::thread::sleep(RESOLUTION_DURATION * 2);
    }

    /// Unpause the timer after fork()
    ///
    /// This function should be called right after fork().
    pub fn unpause(&self) {
        self.paused.store(false, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_round() {
        assert_eq!(round_to(30, 10), 30);
        assert_eq!(round_to(31, 10), 40);
        assert_eq!(round_to(29, 10), 30);
    }

    #[test]
    fn test_time() {
        let t: Time = 128.into(); // t will round to 130
        assert_eq!(t, Duration::from_millis(130).into());
        assert!(!t.not_after(128));
        assert!(!t.not_after(129));
        assert!(t.not_after(130));
        assert!(t.not_after(131));
    }

    // colorgate patch 17
    #[test]
    fn test_slots_are_found_among_the_recent_and_in_the_tree() {
        let same = |a: Option<&Timer>, b: &Timer| a.is_some_and(|a| Arc::ptr_eq(&a.0, &b.0));
        let mut timers = ThreadTimers::default();
        let (t10, t20, t30) = (Timer::new(), Timer::new(), Timer::new());
        let (k10, k20, k30) = (Time(10), Time(20), Time(30));
        timers.insert(k10, t10.share());
        timers.insert(k20, t20.share());
        assert!(same(timers.get(k10), &t10));
        assert!(same(timers.get(k20), &t20));
        // k10 leaves the recent pair; the tree still has it.
        timers.insert(k30, t30.share());
        assert!(same(timers.get(k30), &t30));
        assert!(same(timers.get(k10), &t10));
        assert!(timers.recent.iter().flatten().all(|(k, _)| *k != k10));
        assert!(timers.get(Time(40)).is_none());
        // What the clock thread removed is not found in the tree.
        timers.tree.remove(&k10);
        assert!(timers.get(k10).is_none());
    }

    #[test]
    fn test_time_is_milliseconds_rounded_up() {
        let t: Time = Duration::from_nanos(1_000_001).into();
        assert_eq!(t, Time(10));
        let t: Time = Duration::from_secs(60 * 60 * 24 * 365 * 1000).into();
        assert!(t.not_after(t.0) && !t.not_after(t.0 - 1));
    }

    #[tokio::test]
    async fn test_timer_manager() {
        let tm_a = Arc::new(TimerManager::new());
        let tm = tm_a.clone();
        std::thread::spawn(move || tm_a.clock_thread());

        let now = Instant::now();
        let t1 = tm.register_timer(Duration::from_secs(1));
        let t2 = tm.register_timer(Duration::from_secs(1));
        t1.poll().await;
        assert_eq!(now.elapsed().as_secs(), 1);
        let now = Instant::now();
        t2.poll().await;
        // t2 fired along t1 so no extra wait time
        assert_eq!(now.elapsed().as_secs(), 0);
    }

    #[test]
    fn test_timer_manager_start_check() {
        let tm = Arc::new(TimerManager::new());
        assert!(tm.should_i_start_clock());
        assert!(!tm.should_i_start_clock());
        assert!(tm.is_clock_running().is_ok());
    }

    #[test]
    fn test_timer_manager_watchdog() {
        let tm = Arc::new(TimerManager::new());
        assert!(tm.should_i_start_clock());
        assert!(!tm.should_i_start_clock());

        // we don't actually start the clock thread, sleep for the watchdog to expire
        std::thread::sleep(Duration::from_secs(DELAYS_SEC as u64 + 1));
        assert!(tm.is_clock_running().is_err());
        assert!(tm.should_i_start_clock());
    }

    #[tokio::test]
    async fn test_timer_manager_pause() {
        let tm_a = Arc::new(TimerManager::new());
        let tm = tm_a.clone();
        std::thread::spawn(move || tm_a.clock_thread());

        let now = Instant::now();
        let t1 = tm.register_timer(Duration::from_secs(2));
        tm.pause_for_fork();
        // no actual fork happen, we just test that pause and unpause work

        // any timer in this critical section is timed out right away
        let t2 = tm.register_timer(Duration::from_secs(2));
        t2.poll().await;
        assert_eq!(now.elapsed().as_secs(), 0);

        std::thread::sleep(Duration::from_secs(1));
        tm.unpause();
        t1.poll().await;
        assert_eq!(now.elapsed().as_secs(), 2);
    }
}
