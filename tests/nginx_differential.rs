//! Differential test of the rate limiter: real nginx (`limit_req`) and colorgate run
//! the same zones and are replayed the same request schedules, one system after the
//! other so they never compete for the CPU. The outcomes are compared: accepted
//! (200, delayed or not) versus rejected (nginx answers 503 by default, colorgate 429),
//! and for zones that delay, how many accepted requests were answered at once versus
//! held back.
//!
//! nginx runs as a non-daemon, single-process child (`master_process off`, so killing
//! its PID stops everything) with every path (pid, error log, temp dirs) in a temp dir,
//! and proxies to the same test upstream as colorgate (`return 200` would answer in the
//! rewrite phase, before `limit_req` runs).
//!
//! Counts are compared exactly where the schedule stays well away from a bucket
//! boundary, and with one request of slack where it cannot (steady streams above the
//! rate keep the bucket exactly full, so client jitter decides single requests).

mod common;

use common::{build_request, free_port, Conn, Gateway, Upstream};
use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

const NGINX: &str = "/usr/sbin/nginx";

/// An accepted request answered later than this after it was sent counts as delayed.
/// Every delayed request in the burst schedules waits at least 500 ms.
const PROMPT: Duration = Duration::from_millis(250);

/// The tests share the two cores with nothing else of theirs: one schedule at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a zone treats the excess over its rate.
#[derive(Clone, Copy, Debug)]
enum Mode {
    NoDelay,
    /// `delay=N` (0: every excess request is delayed, nginx's default).
    Delay(u32),
}

/// One `limit_req_zone` + `limit_req` pair, served under `/<name>/`.
#[derive(Clone, Copy, Debug)]
struct Zone {
    name: &'static str,
    rate: &'static str,
    burst: u32,
    mode: Mode,
}

impl Zone {
    fn path(&self) -> String {
        format!("/{}/x", self.name)
    }
}

/// `count` requests to `zone`, released together `at_ms` after the schedule starts.
#[derive(Clone, Copy, Debug)]
struct Wave {
    at_ms: u64,
    zone: usize,
    count: usize,
}

/// One request stream: `count` single requests, `every_ms` apart.
fn stream(zone: usize, count: usize, every_ms: u64) -> Vec<Wave> {
    (0..count)
        .map(|i| Wave {
            at_ms: i as u64 * every_ms,
            zone,
            count: 1,
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Prompt,
    Delayed,
    Rejected,
}

/// Per zone and per wave index: accepted at once, accepted later, rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counts {
    prompt: usize,
    delayed: usize,
    rejected: usize,
}

impl Counts {
    fn accepted(&self) -> usize {
        self.prompt + self.delayed
    }
}

/// What one system did with a schedule: counts per zone, and per wave.
#[derive(Debug, Default)]
struct Observed {
    per_zone: Vec<Counts>,
    per_wave: Vec<Counts>,
}

/// Either system, from the schedule's point of view.
trait Target {
    fn port(&self) -> u16;
    fn name(&self) -> &'static str;
    /// The status this system answers for a request over the burst.
    fn reject_status(&self) -> u16;
}

struct ColorgateTarget(Gateway);

impl Target for ColorgateTarget {
    fn port(&self) -> u16 {
        self.0.port()
    }
    fn name(&self) -> &'static str {
        "colorgate"
    }
    fn reject_status(&self) -> u16 {
        429
    }
}

/// A running nginx; SIGTERM then SIGKILL to its PID when dropped.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Target for Nginx {
    fn port(&self) -> u16 {
        self.port
    }
    fn name(&self) -> &'static str {
        "nginx"
    }
    fn reject_status(&self) -> u16 {
        503
    }
}

impl Nginx {
    fn start(zones: &[Zone], upstream: &str) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: the nginx differential test needs real nginx; \
             run `bash .ci/deps` (as root) to install it, as CI does"
        );
        let dir = tempfile::Builder::new()
            .prefix("colorgate-nginx-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let d = dir.path().display().to_string();
        let mut conf = format!(
            "master_process off;\nworker_processes 1;\nerror_log {d}/error.log info;\n\
             pid {d}/nginx.pid;\nevents {{ worker_connections 512; }}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n"
        );
        for z in zones {
            let _ = writeln!(
                conf,
                "limit_req_zone $binary_remote_addr zone={}:1m rate={};",
                z.name, z.rate
            );
        }
        let _ = writeln!(conf, "server {{\nlisten 127.0.0.1:{port};");
        for z in zones {
            let mode = match z.mode {
                Mode::NoDelay => " nodelay".to_string(),
                Mode::Delay(0) => String::new(),
                Mode::Delay(n) => format!(" delay={n}"),
            };
            let _ = writeln!(
                conf,
                "location /{name}/ {{ limit_req zone={name} burst={burst}{mode}; \
                 proxy_pass http://{upstream}; }}",
                name = z.name,
                burst = z.burst
            );
        }
        conf += "}\n}\n";
        let conf_path = dir.path().join("nginx.conf");
        fs::write(&conf_path, conf).expect("write nginx.conf");
        let mut cmd = Command::new(NGINX);
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-g")
            .arg("daemon off;")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("stdout")).expect("stdout file"))
            .stderr(fs::File::create(dir.path().join("stderr")).expect("stderr file"));
        // If this test process dies, nginx must not keep running (and holding the port).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn nginx");
        let mut nginx = Nginx { child, port, dir };
        nginx.wait_ready();
        nginx
    }

    fn logs(&self) -> String {
        let read = |f: &str| fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "--- stderr ---\n{}\n--- error.log ---\n{}",
            read("stderr"),
            read("error.log")
        )
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + common::READY_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited before listening ({status})\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "nginx not listening on {} after {:?}\n{}",
                self.port,
                common::READY_TIMEOUT,
                self.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + common::STOP_TIMEOUT;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            // Child::kill is SIGKILL to this child's PID; harmless if it already exited.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// colorgate with the same zones, one `auth: none` route per zone.
fn colorgate(zones: &[Zone], upstream: &Upstream) -> ColorgateTarget {
    let mut limits = String::new();
    let mut routes = String::new();
    for z in zones {
        let mode = match z.mode {
            Mode::NoDelay => "nodelay: true".to_string(),
            Mode::Delay(n) => format!("delay: {n}"),
        };
        let _ = writeln!(
            limits,
            "{}: {{ rate: {}, burst: {}, {mode}, key: client_ip }}",
            z.name, z.rate, z.burst
        );
        let _ = write!(
            routes,
            "- path: /{0}/\n  upstream: app\n  auth: none\n  rate_limits: [{0}]\n",
            z.name
        );
    }
    let gw = common::config(upstream)
        .section("rate_limits", &limits)
        .routes(&routes)
        .start();
    ColorgateTarget(gw)
}

/// Replays `waves` (sorted by time) against `target`. Every request has its own
/// connection, opened before its wave is due; the requests of a wave (of every zone
/// due at that instant) are released together by one barrier, so a burst really
/// arrives at once, and a delayed answer never holds back the rest of the schedule.
fn replay(target: &dyn Target, zones: &[Zone], waves: &[Wave]) -> Observed {
    let port = target.port();
    let reject = target.reject_status();
    let system = target.name();
    let results: Arc<Mutex<Vec<(usize, usize, Outcome)>>> = Arc::default();
    let mut threads = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    while i < waves.len() {
        let at = waves[i].at_ms;
        let group: Vec<(usize, Wave)> = waves
            .iter()
            .copied()
            .enumerate()
            .skip(i)
            .take_while(|(_, w)| w.at_ms == at)
            .collect();
        i += group.len();
        let total: usize = group.iter().map(|(_, w)| w.count).sum();
        let barrier = Arc::new(Barrier::new(total + 1));
        for (wave_idx, w) in group {
            for _ in 0..w.count {
                let barrier = barrier.clone();
                let results = results.clone();
                let path = zones[w.zone].path();
                let zone = w.zone;
                threads.push(thread::spawn(move || {
                    let mut conn = Conn::open(port);
                    let request = build_request(port, "GET", &path, &[], b"", true);
                    barrier.wait();
                    let sent = Instant::now();
                    conn.write(&request);
                    let resp = conn.read_response(false);
                    let took = sent.elapsed();
                    let outcome = match resp.status {
                        200 if took < PROMPT => Outcome::Prompt,
                        200 => Outcome::Delayed,
                        s if s == reject => Outcome::Rejected,
                        s => panic!(
                            "{system}: unexpected answer {s} {:?} for {path}",
                            resp.body_str()
                        ),
                    };
                    results.lock().unwrap().push((zone, wave_idx, outcome));
                }));
            }
        }
        let due = start + Duration::from_millis(at);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        barrier.wait();
    }
    for t in threads {
        t.join().expect("request thread");
    }
    let mut seen = Observed {
        per_zone: vec![Counts::default(); zones.len()],
        per_wave: vec![Counts::default(); waves.len()],
    };
    for (zone, wave, outcome) in results.lock().unwrap().iter() {
        for c in [&mut seen.per_zone[*zone], &mut seen.per_wave[*wave]] {
            match outcome {
                Outcome::Prompt => c.prompt += 1,
                Outcome::Delayed => c.delayed += 1,
                Outcome::Rejected => c.rejected += 1,
            }
        }
    }
    seen
}

/// Runs the schedule against nginx, then (nginx stopped) against colorgate.
fn both(zones: &[Zone], waves: &[Wave]) -> (Observed, Observed) {
    let _one_at_a_time = serial();
    let upstream = Upstream::start();
    let nginx = {
        let nginx = Nginx::start(zones, &upstream.addr());
        let seen = replay(&nginx, zones, waves);
        drop(nginx);
        seen
    };
    let cg = {
        let gw = colorgate(zones, &upstream);
        replay(&gw, zones, waves)
    };
    for (i, z) in zones.iter().enumerate() {
        eprintln!(
            "{:<10} {:>5} burst {:>2} {:<9}: nginx {:?} | colorgate {:?}",
            z.name,
            z.rate,
            z.burst,
            format!("{:?}", z.mode),
            nginx.per_zone[i],
            cg.per_zone[i]
        );
    }
    (nginx, cg)
}

fn close(a: usize, b: usize, slack: usize) -> bool {
    a.abs_diff(b) <= slack
}

/// 30 requests at once on each zone (one zone after the other): nodelay lets 1+burst
/// through at once; `delay=3` sends 4 at once and holds 3 back; plain delays all but
/// the first. The rates are slow enough (one request per 500 ms) that no allowance comes
/// back while a burst is being dispatched, so the counts must be exactly nginx's.
#[test]
fn a_burst_of_30_gets_the_same_answers_as_nginx() {
    let zones = [
        Zone {
            name: "nodelay",
            rate: "2r/s",
            burst: 10,
            mode: Mode::NoDelay,
        },
        Zone {
            name: "delay3",
            rate: "2r/s",
            burst: 6,
            mode: Mode::Delay(3),
        },
        Zone {
            name: "plain",
            rate: "120r/m",
            burst: 4,
            mode: Mode::Delay(0),
        },
    ];
    // Zones one after another, 2.5 s apart: the delayed answers (up to 2 s) are over
    // before the next burst, so a burst never shares the CPU with another's replies.
    let waves: Vec<Wave> = (0..zones.len())
        .map(|z| Wave {
            at_ms: z as u64 * 2_500,
            zone: z,
            count: 30,
        })
        .collect();
    let (nginx, cg) = both(&zones, &waves);

    let want = [
        Counts {
            prompt: 11,
            delayed: 0,
            rejected: 19,
        },
        Counts {
            prompt: 4,
            delayed: 3,
            rejected: 23,
        },
        Counts {
            prompt: 1,
            delayed: 4,
            rejected: 25,
        },
    ];
    for (i, z) in zones.iter().enumerate() {
        let (n, c) = (&nginx.per_zone[i], &cg.per_zone[i]);
        // Accept/reject is exact; prompt vs delayed gets one of slack (it is timed).
        assert_eq!(n.accepted(), want[i].accepted(), "nginx, zone {}", z.name);
        assert_eq!(
            c.accepted(),
            n.accepted(),
            "zone {}: {c:?} vs nginx {n:?}",
            z.name
        );
        assert!(
            close(c.prompt, n.prompt, 1) && close(n.prompt, want[i].prompt, 1),
            "zone {}: answered at once: colorgate {c:?}, nginx {n:?}, model {:?}",
            z.name,
            want[i]
        );
        assert!(
            close(c.delayed, n.delayed, 1),
            "zone {}: delayed: colorgate {c:?}, nginx {n:?}",
            z.name
        );
    }
}

/// A steady stream above the rate (one request per 70 ms against 5r/s): after the
/// burst, one in roughly three gets through. The bucket stays exactly full, so each
/// request sits on a boundary: one request of slack.
#[test]
fn a_steady_stream_above_the_rate_is_cut_to_the_rate_like_nginx() {
    let zones = [
        Zone {
            name: "fast_nd",
            rate: "5r/s",
            burst: 3,
            mode: Mode::NoDelay,
        },
        Zone {
            name: "fast_dl",
            rate: "5r/s",
            burst: 3,
            mode: Mode::Delay(1),
        },
    ];
    let mut waves = stream(0, 40, 70);
    waves.extend(stream(1, 40, 70));
    waves.sort_by_key(|w| w.at_ms);
    let (nginx, cg) = both(&zones, &waves);

    for (i, z) in zones.iter().enumerate() {
        let (n, c) = (&nginx.per_zone[i], &cg.per_zone[i]);
        // 1 + burst at first, then 5/s over the 2.73 s of the stream: about 17.
        assert!(
            (14..=20).contains(&n.accepted()),
            "nginx accepted {n:?} on {}",
            z.name
        );
        assert!(
            close(c.accepted(), n.accepted(), 1),
            "zone {}: accepted: colorgate {c:?}, nginx {n:?}",
            z.name
        );
        assert!(n.rejected > 0 && c.rejected > 0, "zone {}", z.name);
    }
    // The delay zone holds requests back in both; the nodelay zone never does.
    assert_eq!(nginx.per_zone[0].delayed, 0);
    assert_eq!(cg.per_zone[0].delayed, 0);
    let (n, c) = (&nginx.per_zone[1], &cg.per_zone[1]);
    assert!(
        n.delayed > 0 && c.delayed > 0,
        "colorgate {c:?}, nginx {n:?}"
    );
}

/// A stream below the rate (one request per 300 ms against 5r/s) is never limited nor
/// delayed, by either, with or without nodelay.
#[test]
fn a_stream_below_the_rate_passes_untouched_like_nginx() {
    let zones = [
        Zone {
            name: "slow_nd",
            rate: "5r/s",
            burst: 1,
            mode: Mode::NoDelay,
        },
        Zone {
            name: "slow_dl",
            rate: "300r/m",
            burst: 1,
            mode: Mode::Delay(0),
        },
    ];
    let mut waves = stream(0, 12, 300);
    waves.extend(stream(1, 12, 300));
    waves.sort_by_key(|w| w.at_ms);
    let (nginx, cg) = both(&zones, &waves);

    let all = Counts {
        prompt: 12,
        delayed: 0,
        rejected: 0,
    };
    for (i, z) in zones.iter().enumerate() {
        assert_eq!(nginx.per_zone[i], all, "nginx, zone {}", z.name);
        assert_eq!(cg.per_zone[i], all, "colorgate, zone {}", z.name);
    }
}

/// Bursts of 10 separated by pauses, on a nodelay and a `delay=2` zone (1r/s, burst 4):
/// the first burst gets 1+4, each burst 2.3 s later gets what 2.3 s refilled (2), and
/// after a long pause the whole burst is back (5). Every wave is at least 300 ms from a
/// boundary, so the counts per wave must be equal.
#[test]
fn bursts_separated_by_pauses_refill_like_nginx() {
    let zones = [
        Zone {
            name: "pause_nd",
            rate: "1r/s",
            burst: 4,
            mode: Mode::NoDelay,
        },
        Zone {
            name: "pause_dl",
            rate: "60r/m",
            burst: 4,
            mode: Mode::Delay(2),
        },
    ];
    let times = [0, 2_300, 4_600, 10_100];
    let mut waves = Vec::new();
    for at_ms in times {
        for zone in 0..zones.len() {
            waves.push(Wave {
                at_ms,
                zone,
                count: 10,
            });
        }
    }
    let (nginx, cg) = both(&zones, &waves);

    let accepted = |o: &Observed, zone: usize| -> Vec<usize> {
        let waves = waves.iter().zip(&o.per_wave);
        waves
            .filter(|(w, _)| w.zone == zone)
            .map(|(_, c)| c.accepted())
            .collect()
    };
    for (i, z) in zones.iter().enumerate() {
        let (n, c) = (accepted(&nginx, i), accepted(&cg, i));
        eprintln!("{}: accepted per wave: nginx {n:?} colorgate {c:?}", z.name);
        assert_eq!(n, [5, 2, 2, 5], "nginx, zone {}", z.name);
        assert_eq!(c, n, "zone {}", z.name);
    }
    // delay=2: in the first and last bursts 3 go at once and 2 wait (1 s and 2 s);
    // in the bursts after a short pause the bucket is already past 2, so both wait.
    for o in [&nginx, &cg] {
        let dl: Vec<(usize, usize)> = waves
            .iter()
            .zip(&o.per_wave)
            .filter(|(w, _)| w.zone == 1)
            .map(|(_, c)| (c.prompt, c.delayed))
            .collect();
        assert_eq!(dl, [(3, 2), (0, 2), (0, 2), (3, 2)], "{o:?}");
        let nd = o.per_zone[0].delayed;
        assert_eq!(nd, 0, "nodelay zone delayed {nd} requests");
    }
}

/// A client that hangs up while its request is held back by a zone: nginx watches the
/// connection during the delay ("client prematurely closed connection") and never
/// forwards the request; colorgate must not spend an upstream (GPU) call on it either.
///
/// No fixed wait decides it: a marker request sent after the abandoned one, on the same
/// zone, is delayed about a second longer, so by the time its answer is back the
/// abandoned request would have been forwarded already.
#[test]
fn a_delayed_request_whose_client_left_is_not_forwarded_as_in_nginx() {
    let zones = [Zone {
        name: "left",
        rate: "1r/s",
        burst: 5,
        mode: Mode::Delay(0),
    }];
    let _one_at_a_time = serial();
    let upstream = Upstream::start();
    let abandon = |target: &dyn Target| -> Vec<String> {
        upstream.clear();
        let port = target.port();
        let get = |path: &str| {
            let mut conn = Conn::open(port);
            conn.write(&build_request(port, "GET", path, &[], b"", true));
            conn
        };
        assert_eq!(get("/left/first").read_response(false).status, 200);
        let left = get("/left/abandoned");
        // Let the gateway read (and account) it before the marker, then hang up.
        thread::sleep(Duration::from_millis(200));
        drop(left);
        let marker = get("/left/marker").read_response(false);
        assert_eq!(marker.status, 200, "{}: marker", target.name());
        upstream.requests().into_iter().map(|r| r.uri).collect()
    };
    let nginx = {
        let nginx = Nginx::start(&zones, &upstream.addr());
        abandon(&nginx)
    };
    let cg = abandon(&colorgate(&zones, &upstream));
    eprintln!("forwarded: nginx {nginx:?} | colorgate {cg:?}");
    assert_eq!(nginx, ["/left/first", "/left/marker"], "nginx");
    assert_eq!(
        cg, nginx,
        "colorgate forwarded a request whose client had left"
    );
}
