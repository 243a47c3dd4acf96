//! Memory and cost of a rate-limit zone under a flood of distinct client IPs.
//!
//! The contract says a zone's state "is bounded in memory whatever the number
//! of distinct keys". This sends one million distinct client-IP keys (16
//! bytes each, as the proxy builds them) through `rate_limit::check` into a
//! zone with the default `max_keys` (100,000), and reports:
//! - the process's resident memory (VmRSS) before the zone is built and after
//!   the flood, and so the bytes per key held;
//! - the keys the zone holds (must be ≤ `max_keys`: the run fails otherwise);
//! - the limiter's cost per request, while the zone fills and once every new
//!   key evicts the least recently used one;
//! - ratios of that cost to two baselines measured in the same run: the same
//!   loop with an empty zone list (key making, clock read and `check`'s own
//!   overhead), and inserting the same keys into a plain unbounded `HashMap`
//!   (what the zone would cost without its bound, memory included).
//!
//! The same flood then goes into a zone with `max_keys` = 1,000,000, and
//! two million keys into it, to show that memory follows the setting and
//! stops there. Each row runs in a fresh child process (this binary with
//! `--scenario`), so memory freed by one row cannot hide another's growth.
//! The binary's allocator (mimalloc) is used, so bytes per key are the
//! gateway's.
//!
//! Run: `cargo bench --bench rate_limit_memory`. Under `cargo test --benches`
//! (no `--bench` argument) it runs a small version as a smoke test.

use colorgate::checks::rate_limit::{
    check, monotonic_ms, Node, RateZone, ZoneSpec, DEFAULT_MAX_KEYS, NODELAY,
};
use std::collections::HashMap;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::process::{Command, ExitCode};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What one child process measures.
#[derive(Clone, Copy)]
enum Kind {
    /// `check(&[], now)`: the loop without any zone.
    EmptyZoneList,
    /// A zone with the contract's `api_global` spec and the given `max_keys`.
    Zone,
    /// `HashMap<Box<[u8]>, Node>::insert`: the zone's entry without its bound.
    HashMap,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::EmptyZoneList => "empty",
            Kind::Zone => "zone",
            Kind::HashMap => "hashmap",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        [Kind::EmptyZoneList, Kind::Zone, Kind::HashMap]
            .into_iter()
            .find(|k| k.name() == s)
    }
}

/// One row of the report.
struct Scenario {
    label: &'static str,
    kind: Kind,
    max_keys: usize,
    inserts: u32,
}

/// What a child reports back, one line of numbers.
struct Measured {
    rss_before_kb: u64,
    rss_after_kb: u64,
    keys_held: usize,
    fill_ns: f64,
    evict_ns: Option<f64>,
    total_ns: f64,
}

/// The key the proxy uses for a client IP: IPv4 as IPv4-mapped IPv6.
fn client_key(i: u32) -> [u8; 16] {
    Ipv4Addr::from(0x0100_0000 + i).to_ipv6_mapped().octets()
}

fn vm_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Times `op` over keys `from..to`, in ns per call.
fn timed(from: u32, to: u32, mut op: impl FnMut(&[u8; 16])) -> f64 {
    let start = Instant::now();
    for i in from..to {
        op(&client_key(i));
    }
    start.elapsed().as_nanos() as f64 / f64::from((to - from).max(1))
}

/// Child side: run one scenario and print its numbers on one line.
fn run_scenario(kind: Kind, max_keys: usize, inserts: u32) {
    let rss_before_kb = vm_rss_kb();
    let fill_to = inserts.min(u32::try_from(max_keys).unwrap_or(u32::MAX));
    let (keys_held, fill_ns, evict_ns) = match kind {
        Kind::EmptyZoneList => {
            let ns = timed(0, inserts, |key| {
                black_box(key);
                black_box(check(&[], monotonic_ms()));
            });
            (0, ns, None)
        }
        Kind::Zone => {
            // The contract's api_global: 5r/s, burst 10, nodelay. Every key
            // is new, so every request is admitted and inserts a key.
            let rate = ZoneSpec::parse_rate("5r/s").expect("valid rate");
            let mut spec = ZoneSpec::new(rate, 10, NODELAY);
            spec.max_keys = max_keys;
            let zone = RateZone::new("api_global", spec);
            let flood = |key: &[u8; 16]| {
                black_box(check(&[(&zone, key)], monotonic_ms()));
            };
            let fill = timed(0, fill_to, flood);
            let evict = (inserts > fill_to).then(|| timed(fill_to, inserts, flood));
            (zone.len(), fill, evict)
        }
        Kind::HashMap => {
            let mut map: HashMap<Box<[u8]>, Node> = HashMap::new();
            let ns = timed(0, inserts, |key| {
                map.insert(key[..].into(), Node::fresh(monotonic_ms()));
            });
            (map.len(), ns, None)
        }
    };
    let rss_after_kb = vm_rss_kb();
    let total_ns = match evict_ns {
        Some(e) => {
            (fill_ns * f64::from(fill_to) + e * f64::from(inserts - fill_to)) / f64::from(inserts)
        }
        None => fill_ns,
    };
    println!(
        "{rss_before_kb} {rss_after_kb} {keys_held} {fill_ns} {} {total_ns}",
        evict_ns.map_or(-1.0, |e| e)
    );
}

/// Parent side: run `s` in a fresh process and read its line back.
fn measure(s: &Scenario) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(exe)
        .args(["--scenario", s.kind.name()])
        .arg(s.max_keys.to_string())
        .arg(s.inserts.to_string())
        .output()
        .map_err(|e| format!("{}: cannot start: {e}", s.label))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{}: {}: {err}", s.label, out.status));
    }
    let f: Vec<f64> = text
        .split_whitespace()
        .map(|v| {
            v.parse()
                .map_err(|_| format!("{}: bad output {text:?}", s.label))
        })
        .collect::<Result<_, _>>()?;
    let [before, after, keys, fill, evict, total] = f[..] else {
        return Err(format!("{}: bad output {text:?}", s.label));
    };
    Ok(Measured {
        rss_before_kb: before as u64,
        rss_after_kb: after as u64,
        keys_held: keys as usize,
        fill_ns: fill,
        evict_ns: (evict >= 0.0).then_some(evict),
        total_ns: total,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        let kind = args.get(i + 1).and_then(|k| Kind::parse(k));
        let max_keys = args.get(i + 2).and_then(|v| v.parse().ok());
        let inserts = args.get(i + 3).and_then(|v| v.parse().ok());
        let (Some(kind), Some(max_keys), Some(inserts)) = (kind, max_keys, inserts) else {
            eprintln!("usage: --scenario empty|zone|hashmap MAX_KEYS INSERTS");
            return ExitCode::FAILURE;
        };
        run_scenario(kind, max_keys, inserts);
        return ExitCode::SUCCESS;
    }

    // `cargo bench` passes --bench; `cargo test --benches` does not: then a
    // small run that still checks the bound.
    let full = args.iter().any(|a| a == "--bench");
    let (million, default_keys) = if full {
        (1_000_000, DEFAULT_MAX_KEYS)
    } else {
        (20_000, 2_000)
    };
    let big = million as usize;
    let row = |label, kind, max_keys, inserts| Scenario {
        label,
        kind,
        max_keys,
        inserts,
    };
    let scenarios = [
        row("baseline: empty zone list", Kind::EmptyZoneList, 0, million),
        row("baseline: HashMap, unbounded", Kind::HashMap, 0, million),
        row("zone, default max_keys", Kind::Zone, default_keys, million),
        row("zone, max_keys = inserts", Kind::Zone, big, million),
        row("zone, max_keys = inserts/2", Kind::Zone, big, 2 * million),
    ];

    let mut rows = Vec::new();
    for s in &scenarios {
        match measure(s) {
            Ok(m) => rows.push((s, m)),
            Err(e) => {
                eprintln!("rate_limit_memory: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let empty_ns = rows[0].1.total_ns;
    let hashmap_ns = rows[1].1.total_ns;

    println!("rate_limit_memory: distinct client-IP keys through rate_limit::check, one process per row (VmRSS in MiB)");
    println!(
        "{:<36} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "scenario",
        "max_keys",
        "inserted",
        "held",
        "RSS0",
        "RSS1",
        "ΔRSS",
        "B/key",
        "fill ns",
        "evict ns",
        "ns/req",
        "x empty",
        "x HashMap"
    );
    let mut bounded = true;
    for (s, m) in &rows {
        let delta_kb = m.rss_after_kb.saturating_sub(m.rss_before_kb);
        let per_key = if m.keys_held > 0 {
            format!("{:.0}", delta_kb as f64 * 1024.0 / m.keys_held as f64)
        } else {
            "-".into()
        };
        let max_keys = match s.kind {
            Kind::Zone => s.max_keys.to_string(),
            _ => "-".into(),
        };
        let evict = m.evict_ns.map_or("-".into(), |e| format!("{e:.1}"));
        let mib = |kb: u64| kb as f64 / 1024.0;
        println!(
            "{:<36} {:>9} {:>9} {:>9} {:>8.1} {:>8.1} {:>8.1} {:>9} {:>8.1} {:>8} {:>8.1} {:>9.2} {:>9.2}",
            s.label, max_keys, s.inserts, m.keys_held, mib(m.rss_before_kb), mib(m.rss_after_kb),
            mib(delta_kb), per_key, m.fill_ns, evict, m.total_ns,
            m.total_ns / empty_ns, m.total_ns / hashmap_ns
        );
        if matches!(s.kind, Kind::Zone) && m.keys_held > s.max_keys {
            eprintln!(
                "{}: {} keys held, over max_keys {}",
                s.label, m.keys_held, s.max_keys
            );
            bounded = false;
        }
    }
    println!(
        "ratios are to the baselines above, measured in this run: empty zone list {empty_ns:.1} ns/req, HashMap insert {hashmap_ns:.1} ns/req"
    );
    if !full {
        println!("(smoke-test mode: {million} keys; run `cargo bench --bench rate_limit_memory` for figures)");
    }
    if bounded {
        println!("bounded: every zone holds at most its max_keys");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
