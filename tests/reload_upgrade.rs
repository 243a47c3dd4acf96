//! Hot reload (SIGHUP) and zero-downtime upgrade (`-u` + SIGQUIT), under a
//! continuous load of valid requests from several client threads, on both
//! new and kept-alive connections.

mod common;

use common::{config, eventually, Conn, Gateway, GatewayConfig, Response, Upstream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const JWT: &str = "jwt:\n  algorithms: [HS256]\n  secret_file: jwt.secret\n  issuer: test\n";
const ROUTES: &str = "- path: /api/\n  upstream: app\n  auth: jwt\n  allowlist: true\n- path: /\n  upstream: app\n  auth: none\n";

fn issue_token(cfg: &GatewayConfig, user: &str) -> String {
    let out = common::colorgate(&[
        "token",
        "issue",
        "-c",
        cfg.write().to_str().unwrap(),
        "--user",
        user,
    ]);
    assert!(
        out.status.success(),
        "token issue: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Load from `threads` clients until stopped: even threads keep one
/// connection alive, odd ones open a new connection per request. A request
/// on a kept-alive connection that the server closed before answering is
/// retried once on a new connection, as real clients do.
struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<()>>,
    results: Arc<Mutex<Vec<(usize, u16, String)>>>,
    sent: Arc<AtomicUsize>,
}

impl Load {
    fn start(port: u16, threads: usize, path: &'static str, token: Arc<Mutex<String>>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicUsize::new(0));
        let handles = (0..threads)
            .map(|t| {
                let (stop, results, sent, token) =
                    (stop.clone(), results.clone(), sent.clone(), token.clone());
                thread::spawn(move || {
                    let mut conn: Option<Conn> = None;
                    // Bounded: stops by itself even if the test forgets to.
                    for _ in 0..20_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let tok = token.lock().unwrap().clone();
                        let auth = format!("Bearer {tok}");
                        let headers = [("Authorization", auth.as_str())];
                        let keep = t % 2 == 0;
                        let reused = keep && conn.is_some();
                        let mut resp = send(&mut conn, port, path, &headers, keep);
                        if resp.status == 0 && reused {
                            conn = None;
                            resp = send(&mut conn, port, path, &headers, keep);
                        }
                        if resp
                            .header("connection")
                            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
                        {
                            conn = None;
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                        results.lock().unwrap().push((t, resp.status, tok));
                    }
                })
            })
            .collect();
        Load {
            stop,
            handles,
            results,
            sent,
        }
    }

    fn wait_for(&self, n: usize) {
        let base = self.sent.load(Ordering::Relaxed);
        eventually(Duration::from_secs(20), || {
            (self.sent.load(Ordering::Relaxed) >= base + n).then_some(())
        });
    }

    fn finish(self) -> Vec<(usize, u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join().unwrap();
        }
        Arc::try_unwrap(self.results).unwrap().into_inner().unwrap()
    }
}

fn send(
    conn: &mut Option<Conn>,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    keep: bool,
) -> Response {
    if !keep {
        return match Conn::try_open(port) {
            Ok(mut c) => {
                let mut h = headers.to_vec();
                h.push(("Connection", "close"));
                c.send("GET", path, &h, b"")
            }
            Err(_) => Response::default(),
        };
    }
    if conn.is_none() {
        *conn = Conn::try_open(port).ok();
    }
    match conn.as_mut() {
        Some(c) => c.send("GET", path, headers, b""),
        None => Response::default(),
    }
}

#[test]
fn reload_rotates_the_jwt_secret_and_changes_the_allowlist_with_zero_failed_requests() {
    let upstream = Upstream::start();
    let cfg = config(&upstream)
        .file("jwt.secret", "first-secret-first-secret-first-secret")
        .section("auth", JWT)
        .section("access", "allowlist: [127.0.0.0/8]")
        .routes(ROUTES);
    let mut gw = cfg.start();
    let old_token = issue_token(&cfg, "alice");
    let token = Arc::new(Mutex::new(old_token.clone()));
    let load = Load::start(gw.port(), 4, "/api/work", token.clone());
    load.wait_for(200);

    // Rotate the secret: the old token stops working, a new one works.
    std::fs::write(cfg.path("jwt.secret"), "second-secret-second-secret-second").unwrap();
    let new_token = issue_token(&cfg, "alice");
    gw.signal(libc::SIGHUP);
    eventually(Duration::from_secs(5), || {
        let auth = format!("Bearer {new_token}");
        (gw.request("GET", "/api/probe", &[("Authorization", &auth)], b"")
            .status
            == 200)
            .then_some(())
    });
    *token.lock().unwrap() = new_token.clone();
    load.wait_for(200);

    // Shrink the allowlist so 127.0.0.1 is out: 403 from then on.
    let yaml = cfg
        .clone()
        .section("access", "allowlist: [10.0.0.0/8]")
        .yaml();
    std::fs::write(cfg.dir().join("colorgate.yaml"), yaml).unwrap();
    gw.signal(libc::SIGHUP);
    eventually(Duration::from_secs(5), || {
        (gw.request("GET", "/api/probe", &[], b"").status == 403).then_some(())
    });
    load.wait_for(200);
    let results = load.finish();

    // Every answer is a deliberate one: 200, the old token's 401 after the
    // rotation, or the 403 after the allowlist change. No 0 (broken
    // connection), no 5xx.
    // Each client thread's answers are in order; across threads they are not.
    let mut seen_403 = std::collections::HashSet::new();
    for (thread, status, tok) in &results {
        match status {
            200 => assert!(
                !seen_403.contains(thread),
                "a 200 after this client saw the new allowlist"
            ),
            401 => assert_eq!(tok, &old_token, "the new token was refused"),
            403 => {
                seen_403.insert(*thread);
            }
            other => panic!("request failed with {other} during reload"),
        }
    }
    assert!(
        results.iter().any(|(_, s, t)| *s == 200 && *t == new_token),
        "new token never served"
    );
    assert!(!seen_403.is_empty());
    let metrics = gw.admin_get("/metrics").body_str();
    assert!(
        metrics.contains("colorgate_config_reloads_total{result=\"ok\"} 2"),
        "{metrics}"
    );
}

#[test]
fn a_broken_config_on_sighup_is_refused_and_the_old_one_keeps_serving() {
    let upstream = Upstream::start();
    let cfg = config(&upstream);
    let mut gw = cfg.start();
    assert_eq!(gw.get("/x").status, 200);

    let broken = cfg
        .clone()
        .routes("- path: /\n  upstream: nowhere\n")
        .yaml();
    std::fs::write(cfg.dir().join("colorgate.yaml"), broken).unwrap();
    gw.signal(libc::SIGHUP);

    let metrics = eventually(Duration::from_secs(5), || {
        let m = gw.admin_get("/metrics").body_str();
        m.contains("colorgate_config_reloads_total{result=\"error\"} 1")
            .then_some(m)
    });
    assert!(!metrics.contains("result=\"ok\""));
    assert_eq!(gw.get("/x").status, 200);
    let stderr = gw.stderr();
    assert!(
        stderr.contains("routes[0].upstream: unknown upstream \"nowhere\""),
        "{stderr}"
    );
    assert!(stderr.contains("ERROR"), "{stderr}");
}

#[test]
fn rate_limit_state_survives_a_reload_that_does_not_touch_the_zone() {
    let upstream = Upstream::start();
    let zone = |rate: &str| {
        format!("tight: {{ rate: {rate}, burst: 0, nodelay: true }}\nother: {{ rate: 1r/s }}\n")
    };
    let routes = "- path: /\n  upstream: app\n  auth: none\n  rate_limits: [tight]\n";
    let cfg = config(&upstream)
        .section("rate_limits", &zone("1r/m"))
        .routes(routes);
    let mut gw = cfg.start();
    assert_eq!(gw.get("/a").status, 200);
    assert_eq!(gw.get("/a").status, 429);

    // Another zone and the headers change; `tight` does not: still limited.
    let changed = cfg
        .clone()
        .section(
            "rate_limits",
            &zone("1r/m").replace("other: { rate: 1r/s }", "other: { rate: 2r/s }"),
        )
        .section("headers", "response:\n  X-Reloaded: \"yes\"\n");
    std::fs::write(cfg.dir().join("colorgate.yaml"), changed.yaml()).unwrap();
    gw.signal(libc::SIGHUP);
    let resp = eventually(Duration::from_secs(5), || {
        let r = gw.get("/a");
        r.header("x-reloaded").is_some().then_some(r)
    });
    assert_eq!(resp.status, 429, "the zone's state was lost on reload");

    // Changing the zone itself starts it afresh.
    let redefined = cfg.clone().section("rate_limits", &zone("2r/m"));
    std::fs::write(cfg.dir().join("colorgate.yaml"), redefined.yaml()).unwrap();
    gw.signal(libc::SIGHUP);
    eventually(Duration::from_secs(5), || {
        (gw.get("/a").status == 200).then_some(())
    });
}

#[test]
fn a_reload_applies_a_new_header_timeout_to_the_headers_read_after_it() {
    let upstream = Upstream::start();
    let cfg = config(&upstream).section("limits", "header_timeout: 60s");
    let mut gw = cfg.start();

    let shorter = cfg
        .clone()
        .section("limits", "header_timeout: 1s")
        .section("headers", "response:\n  X-Reloaded: \"yes\"\n");
    std::fs::write(cfg.dir().join("colorgate.yaml"), shorter.yaml()).unwrap();
    gw.signal(libc::SIGHUP);
    eventually(Duration::from_secs(5), || {
        gw.get("/x").header("x-reloaded").map(|_| ())
    });

    let mut conn = gw.conn();
    conn.write(b"GET /slow HTTP/1.1\r\nHost: a\r\n");
    assert!(
        conn.trickle_header(50).is_some(),
        "still open after 5 s of a header timeout reloaded to 1 s"
    );
}

#[test]
fn upgrade_with_u_hands_over_every_listener_and_loses_no_request() {
    let upstream = Upstream::start();
    let cfg = config(&upstream);
    let mut old = cfg.start();
    let port = old.port();
    let load = Load::start(port, 4, "/work", Arc::new(Mutex::new(String::new())));
    load.wait_for(100);

    // A slow request in flight across the hand-over.
    let slow = thread::spawn(move || common::http(port, "GET", "/slow/1500", &[], b""));
    upstream.wait_for_requests(1, Duration::from_secs(10));
    eventually(Duration::from_secs(10), || {
        (upstream.in_flight() > 0).then_some(())
    });

    let mut new = Gateway::spawn(&cfg, &["-u"]);
    // The new process waits on the upgrade socket; SIGQUIT makes the old one send.
    eventually(Duration::from_secs(10), || {
        cfg.path("upgrade.sock").exists().then_some(())
    });
    old.signal(libc::SIGQUIT);
    assert_eq!(
        slow.join().unwrap().status,
        200,
        "the in-flight request was cut"
    );
    let exited = old
        .wait_exit(Duration::from_secs(30))
        .expect("old process exits after its grace period");
    assert!(
        exited.success(),
        "old process: {exited:?}\n{}",
        old.stderr()
    );
    load.wait_for(200);
    // The admin listener was handed over too.
    assert_eq!(new.admin_get("/status").status, 200);
    let results = load.finish();
    let failed: Vec<_> = results.iter().filter(|(_, s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(5)]
    );

    // Every request has its access-log line (old and new process share the file).
    let expected = results.len() + 1 + 1; // load + slow + the admin probe is not logged
    let lines = new.wait_access_log(expected - 1, Duration::from_secs(10));
    assert_eq!(lines.len(), expected - 1);
    new.stop();
}

#[test]
fn daemon_mode_returns_once_serving_and_writes_the_pid_file() {
    let upstream = Upstream::start();
    let cfg = config(&upstream);
    // Whatever happens below, the daemon this test starts is ended.
    let _daemon = DaemonGuard(cfg.path("colorgate.pid"));
    // Output to files: the daemon keeps them open after the launcher exits.
    let log = std::fs::File::create(cfg.path("daemon.out")).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_colorgate"))
        .args(["run", "-d", "-c", cfg.write().to_str().unwrap()])
        .current_dir(cfg.dir())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .expect("run -d");
    assert!(
        status.success(),
        "run -d: {status:?}\n{}",
        std::fs::read_to_string(cfg.path("daemon.out")).unwrap_or_default()
    );
    // The launcher has returned: the daemon is set up and its pid file
    // names it; it serves once its listeners are bound.
    let pid: i32 = std::fs::read_to_string(cfg.path("colorgate.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let resp = eventually(Duration::from_secs(10), || {
        let r = Conn::try_open(cfg.port)
            .ok()
            .map(|mut c| c.send("GET", "/x", &[("Connection", "close")], b""));
        r.filter(|r| r.status != 0)
    });
    assert_eq!(resp.status, 200);
    assert_eq!(upstream.requests().len(), 1);
    assert!(pid > 1 && pid != std::process::id() as i32);
}

/// Ends the daemon this test started, by the PID it wrote.
struct DaemonGuard(std::path::PathBuf);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid.filter(|p| *p > 1) {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

#[test]
fn a_reload_that_needs_a_restart_says_so_and_applies_the_rest() {
    let upstream = Upstream::start();
    // Work stealing (not the default), so that the reload below can change
    // both runtime keys: pinning needs per-thread runtimes.
    let cfg = config(&upstream).server("work_stealing", "true");
    let mut gw = cfg.start();

    // A new listener, thread count and runtime kind need `-u`; the header
    // applies now.
    let other = common::free_port();
    let changed = cfg
        .clone()
        .server("threads", "2")
        .server("work_stealing", "false")
        .server("cpu_affinity", "true")
        .section(
            "listeners",
            &format!(
                "- address: 127.0.0.1:{}\n- address: 127.0.0.1:{other}\n",
                cfg.port
            ),
        )
        .section("limits", "keepalive_timeout: 30s")
        .section("headers", "response:\n  X-Reloaded: \"yes\"\n");
    std::fs::write(cfg.dir().join("colorgate.yaml"), changed.yaml()).unwrap();
    gw.signal(libc::SIGHUP);

    eventually(Duration::from_secs(5), || {
        gw.get("/x").header("x-reloaded").map(|_| ())
    });
    let stderr = eventually(Duration::from_secs(5), || {
        let e = gw.stderr();
        e.contains("server.threads changed").then_some(e)
    });
    assert!(stderr.contains("listeners changed"), "{stderr}");
    assert!(stderr.contains("server.work_stealing changed"), "{stderr}");
    assert!(stderr.contains("server.cpu_affinity changed"), "{stderr}");
    // HTTP/1 takes a new keep-alive timeout now; HTTP/2's idle timeout waits.
    assert!(
        stderr.contains("limits.keepalive_timeout (for HTTP/2 connections) changed"),
        "{stderr}"
    );
    assert!(stderr.contains("colorgate run -u"), "{stderr}");
    assert!(
        Conn::try_open(other).is_err(),
        "a listener was added without a restart"
    );
}
