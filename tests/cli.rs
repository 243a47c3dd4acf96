//! The command line (CONTRACT §1), against the real binary: `check` on the
//! shipped config and on broken ones, `run` without a file, the default
//! subcommand, and `demo` on a busy port.

mod common;

use common::{colorgate, Upstream, IO_TIMEOUT};
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A temp dir holding a copy of `conf/colorgate.yaml` and the files it names
/// (`jwt.secret`, `tls/cert.pem`, `tls/key.pem`), freshly generated.
struct ShippedConf {
    dir: tempfile::TempDir,
}

impl ShippedConf {
    fn new() -> ShippedConf {
        let dir = tempfile::Builder::new()
            .prefix("colorgate-cli-")
            .tempdir()
            .expect("temp dir");
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/colorgate.yaml");
        // The files the shipped config names, made here as install.sh makes
        // them in /etc/colorgate; the log directory is /var/log/colorgate there.
        let text = fs::read_to_string(&shipped).expect("read the shipped config");
        let log = "path: /var/log/colorgate/access.log";
        assert_eq!(
            text.matches(log).count(),
            1,
            "the shipped access_log.path moved"
        );
        let text = text.replace(log, "path: access.log");
        fs::write(dir.path().join("colorgate.yaml"), text).expect("copy the shipped config");
        fs::write(
            dir.path().join("jwt.secret"),
            "c2VjcmV0LWtleS1mb3ItdGhlLWNsaS10ZXN0cy0zMmI=\n",
        )
        .unwrap();
        fs::create_dir(dir.path().join("tls")).unwrap();
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=localhost", "-keyout", "tls/key.pem"])
            .args(["-out", "tls/cert.pem"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ShippedConf { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn text(&self) -> String {
        fs::read_to_string(self.path("colorgate.yaml")).unwrap()
    }

    /// Writes `name` next to the shipped copy with each `(from, to)` replaced
    /// exactly once (panics if `from` is not found exactly once); returns its path.
    fn variant(&self, name: &str, edits: &[(&str, &str)]) -> String {
        let mut text = self.text();
        for (from, to) in edits {
            assert_eq!(
                text.matches(from).count(),
                1,
                "{from:?} must occur exactly once in the shipped config"
            );
            text = text.replacen(from, to, 1);
        }
        let path = self.path(name);
        fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `check -c file`: exit 1, nothing on stdout, and exactly `lines` on stderr.
fn assert_check_fails_with(file: &str, lines: &[String]) {
    let out = colorgate(&["check", "-c", file]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let expected: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(stderr(&out), expected);
}

/// 1-based line of the only line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(hits.len(), 1, "{needle:?} on lines {hits:?}");
    hits[0]
}

/// The only stderr line of a failed `check`, which must start with `prefix`.
fn single_error_line(file: &str, prefix: &str) -> String {
    let out = colorgate(&["check", "-c", file]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with(prefix),
        "{:?} does not start with {prefix:?}",
        lines[0]
    );
    lines[0].to_string()
}

// ---------------------------------------------------------------------------
// colorgate check
// ---------------------------------------------------------------------------

#[test]
fn check_accepts_the_shipped_config_with_its_key_files() {
    let conf = ShippedConf::new();
    let file = conf.path("colorgate.yaml").display().to_string();

    let out = colorgate(&["check", "-c", &file]);

    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), "configuration OK\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_names_a_route_with_an_unknown_upstream() {
    let conf = ShippedConf::new();
    let file = conf.variant(
        "typo.yaml",
        &[(
            "    upstream: deoldify\n    rewrite: /colorize",
            "    upstream: deoldfy\n    rewrite: /colorize",
        )],
    );

    assert_check_fails_with(
        &file,
        &[format!(
            "{file}: routes[1].upstream: unknown upstream \"deoldfy\""
        )],
    );
}

#[test]
fn check_names_an_unknown_key_with_its_path_and_line() {
    let conf = ShippedConf::new();
    let file = conf.variant("key.yaml", &[("    keepalive: 32 ", "    keepalve: 32 ")]);
    let line = line_of(&fs::read_to_string(&file).unwrap(), "keepalve:");

    let err = single_error_line(
        &file,
        &format!("{file}: upstreams.deoldify.keepalve: unknown field `keepalve`"),
    );

    assert!(err.ends_with(&format!(" at line {line} column 5")), "{err}");
}

#[test]
fn check_names_a_bad_duration_with_its_own_line() {
    let conf = ShippedConf::new();
    let file = conf.variant("dur.yaml", &[("grace_period: 30s", "grace_period: 30x")]);
    let text = fs::read_to_string(&file).unwrap();
    let line = line_of(&text, "grace_period: 30x");
    let column = text.lines().nth(line - 1).unwrap().find("30x").unwrap() + 1;

    let err = single_error_line(&file, &format!("{file}: server.grace_period: "));

    assert!(err.contains("\"30x\""), "{err}");
    assert!(
        err.ends_with(&format!(" at line {line} column {column}")),
        "{err}"
    );
}

#[test]
fn check_names_a_bad_size_with_its_own_line() {
    let conf = ShippedConf::new();
    let file = conf.variant("size.yaml", &[("max_body_size: 50M", "max_body_size: 50Q")]);
    let text = fs::read_to_string(&file).unwrap();
    let line = line_of(&text, "max_body_size: 50Q");
    let column = text.lines().nth(line - 1).unwrap().find("50Q").unwrap() + 1;

    let err = single_error_line(&file, &format!("{file}: limits.max_body_size: "));

    assert!(err.contains("\"50Q\""), "{err}");
    assert!(
        err.ends_with(&format!(" at line {line} column {column}")),
        "{err}"
    );
}

#[test]
fn check_names_a_bad_cidr() {
    let conf = ShippedConf::new();
    let file = conf.variant("cidr.yaml", &[("- 10.0.0.0/8", "- 10.0.0.0/33")]);

    assert_check_fails_with(
        &file,
        &[format!(
            "{file}: access.allowlist[1]: invalid IP address or CIDR \"10.0.0.0/33\""
        )],
    );
}

#[test]
fn check_refuses_allowlist_routes_with_an_empty_allowlist() {
    let conf = ShippedConf::new();
    let file = conf.variant(
        "allow.yaml",
        &[(
            "    - 192.168.1.0/24\n    - 10.0.0.0/8\n    - 203.0.113.0/24\n",
            "    []\n",
        )],
    );
    let msg = "allowlist: true with an empty access.allowlist would refuse everyone";

    assert_check_fails_with(
        &file,
        &[
            format!("{file}: routes[1].allowlist: {msg}"),
            format!("{file}: routes[2].allowlist: {msg}"),
        ],
    );
}

#[test]
fn check_names_an_unknown_rate_limit_zone() {
    let conf = ShippedConf::new();
    let file = conf.variant(
        "zone.yaml",
        &[(
            "[api_global, api_burst, per_user]",
            "[api_global, api_brust, per_user]",
        )],
    );

    assert_check_fails_with(
        &file,
        &[format!(
            "{file}: routes[1].rate_limits[1]: unknown rate limit zone \"api_brust\""
        )],
    );
}

#[test]
fn check_prints_every_problem_not_just_the_first() {
    let conf = ShippedConf::new();
    let file = conf.variant(
        "many.yaml",
        &[
            ("- 10.0.0.0/8", "- 10.0.0.0/33"),
            (
                "[api_global, api_burst, per_user]",
                "[api_global, api_brust, per_user]",
            ),
            (
                "    upstream: deoldify\n    strip_prefix: true",
                "    upstream: deoldfy\n    strip_prefix: true",
            ),
            ("secret_file: jwt.secret", "secret_file: missing.secret"),
        ],
    );
    let out = colorgate(&["check", "-c", &file]);

    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    let missing = conf.path("missing.secret").display().to_string();
    for expected in [
        format!("{file}: auth.jwt.secret_file: cannot read {missing}: "),
        format!("{file}: access.allowlist[1]: invalid IP address or CIDR \"10.0.0.0/33\""),
        format!("{file}: routes[1].rate_limits[1]: unknown rate limit zone \"api_brust\""),
        format!("{file}: routes[2].upstream: unknown upstream \"deoldfy\""),
    ] {
        assert_eq!(
            lines.iter().filter(|l| l.starts_with(&expected)).count(),
            1,
            "{expected:?} in\n{err}"
        );
    }
    assert_eq!(lines.len(), 4, "{err}");
}

#[test]
fn check_refuses_a_max_header_size_pingora_cannot_honour() {
    let conf = ShippedConf::new();
    let file = conf.variant(
        "hdr.yaml",
        &[("max_header_size: 16k", "max_header_size: 2M")],
    );

    assert_check_fails_with(
        &file,
        &[format!(
            "{file}: limits.max_header_size: must be at most 1048575 bytes (1M - 1, Pingora's header buffer)"
        )],
    );
}

#[test]
fn check_refuses_client_timeouts_of_zero() {
    // Each would time every read or write out at once.
    let conf = ShippedConf::new();
    let file = conf.variant(
        "ht.yaml",
        &[
            ("header_timeout: 60s", "header_timeout: 0s"),
            ("body_timeout: 60s", "body_timeout: 0s\n  send_timeout: 0ms"),
        ],
    );

    assert_check_fails_with(
        &file,
        &[
            format!("{file}: limits.header_timeout: must be more than 0"),
            format!("{file}: limits.body_timeout: must be more than 0"),
            format!("{file}: limits.send_timeout: must be more than 0"),
        ],
    );
}

#[test]
fn check_refuses_buffer_memory_that_cannot_hold_one_allowed_body() {
    // 50M bodies may come in; 10M of buffers could never read one whole.
    let conf = ShippedConf::new();
    let file = conf.variant(
        "buf.yaml",
        &[("request_buffer_memory: 256M", "request_buffer_memory: 10M")],
    );
    assert_check_fails_with(
        &file,
        &[format!(
            "{file}: limits.request_buffer_memory: 10485760 bytes cannot hold one body of \
             limits.max_body_size (52428800 bytes) while request_buffering is on"
        )],
    );

    // Streamed bodies need no buffers.
    let streamed = conf.variant(
        "stream.yaml",
        &[
            ("request_buffering: true", "request_buffering: false"),
            ("request_buffer_memory: 256M", "request_buffer_memory: 10M"),
        ],
    );
    let out = colorgate(&["check", "-c", &streamed]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Unless a route buffers its own.
    let one_route = conf.variant(
        "route.yaml",
        &[
            ("request_buffering: true", "request_buffering: false"),
            ("request_buffer_memory: 256M", "request_buffer_memory: 10M"),
            (
                "rewrite: /colorize",
                "rewrite: /colorize\n    request_buffering: true",
            ),
        ],
    );
    assert_check_fails_with(
        &one_route,
        &[format!(
            "{one_route}: limits.request_buffer_memory: 10485760 bytes cannot hold one body of \
             limits.max_body_size (52428800 bytes) while request_buffering is on"
        )],
    );
}

#[test]
fn check_refuses_response_headers_that_frame_the_answer() {
    // A configured Content-Length or Connection would contradict the
    // framing the gateway writes for each response.
    let conf = ShippedConf::new();
    let file = conf.variant(
        "frame.yaml",
        &[(
            "X-XSS-Protection: \"1; mode=block\"",
            "X-XSS-Protection: \"1; mode=block\"\n    Content-Length: \"5\"\n    connection: close",
        )],
    );

    let why = "frames the response or concerns the connection: the gateway writes it";
    assert_check_fails_with(
        &file,
        &[
            format!("{file}: headers.response.Content-Length: {why}"),
            format!("{file}: headers.response.connection: {why}"),
        ],
    );
}

#[test]
fn check_refuses_hidden_headers_that_frame_the_answer_or_are_no_names() {
    let conf = ShippedConf::new();
    let file = conf.variant(
        "hide.yaml",
        &[(
            "hide: [Server, X-Pad,",
            "hide: [Server, Transfer-Encoding, \"not a name\", X-Pad,",
        )],
    );

    let why = "frames the response or concerns the connection: the gateway writes it";
    assert_check_fails_with(
        &file,
        &[
            format!("{file}: headers.hide[1]: {why}"),
            format!("{file}: headers.hide[2]: invalid header name"),
        ],
    );
}

#[test]
fn check_refuses_a_per_ip_cap_of_zero() {
    // nginx refuses `limit_conn addr 0` too: it would refuse every request.
    let conf = ShippedConf::new();
    let file = conf.variant(
        "conn.yaml",
        &[(
            "body_timeout: 60s",
            "body_timeout: 60s\n  max_connections_per_ip: 0",
        )],
    );

    assert_check_fails_with(
        &file,
        &[format!(
            "{file}: limits.max_connections_per_ip: must be at least 1 (leave it out for no limit)"
        )],
    );
}

#[test]
fn check_refuses_cpu_affinity_for_work_stealing_threads() {
    // nginx pins worker processes; work-stealing threads trade connections,
    // so pinning them would keep nothing on a CPU.
    let conf = ShippedConf::new();
    let file = conf.variant(
        "aff.yaml",
        &[
            ("  work_stealing: false ", "  work_stealing: true  "),
            ("  cpu_affinity: false ", "  cpu_affinity: true "),
        ],
    );

    assert_check_fails_with(
        &file,
        &[format!(
            "{file}: server.cpu_affinity: needs server.work_stealing: false (work-stealing \
             threads trade connections, so pinning them keeps nothing on a CPU)"
        )],
    );
}

#[test]
fn check_refuses_a_certificate_that_does_not_parse() {
    let conf = ShippedConf::new();
    fs::write(conf.path("tls/cert.pem"), "not a certificate\n").unwrap();
    let file = conf.path("colorgate.yaml").display().to_string();

    let out = colorgate(&["check", "-c", &file]);

    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("{file}: listeners[1].tls: ")),
        "{err}"
    );
}

#[test]
fn check_of_a_missing_file_fails_with_its_name() {
    let conf = ShippedConf::new();
    let file = conf.path("nope.yaml").display().to_string();

    let err = single_error_line(&file, &format!("{file}: cannot read: "));

    assert!(err.contains("No such file"), "{err}");
}

// ---------------------------------------------------------------------------
// colorgate run / colorgate -c FILE / colorgate demo
// ---------------------------------------------------------------------------

const NO_CONFIG: &str =
    "colorgate run: a config file is required (-c FILE); try `colorgate demo` for a first look\n";

#[test]
fn run_without_a_config_file_fails_cleanly() {
    for args in [&["run"][..], &[][..]] {
        let out = colorgate(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
        assert_eq!(stderr(&out), NO_CONFIG, "{args:?}");
    }
}

/// A colorgate process spawned by a test; SIGTERM then SIGKILL on drop.
struct Spawned {
    child: Child,
    status: Option<ExitStatus>,
}

impl Spawned {
    fn new(args: &[&str], dir: &Path) -> Spawned {
        Spawned::with_env(args, dir, &[])
    }

    fn with_env(args: &[&str], dir: &Path, env: &[(&str, &Path)]) -> Spawned {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_colorgate"));
        cmd.args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Dies with the test thread that spawned it, so it never keeps a port.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        Spawned {
            child: cmd.spawn().expect("spawn colorgate"),
            status: None,
        }
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for exit up to `timeout`; kills it (and fails) if it does not exit.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while self.try_status().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("colorgate did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.status.unwrap()
    }

    /// Probes 127.0.0.1:`port` every 20 ms until it accepts; panics with
    /// the captured stderr if the process exits or `READY_TIMEOUT` passes.
    fn wait_listening(&mut self, port: u16) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + common::READY_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.try_status() {
                panic!(
                    "exited ({status}) before listening on {addr}: {}",
                    self.stderr()
                );
            }
            assert!(Instant::now() < deadline, "not listening on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it wrote on stderr (call after it exited).
    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// Everything it wrote on stdout (call after it exited).
    fn stdout(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            use std::io::Read;
            let _ = o.read_to_string(&mut s);
        }
        s
    }

    fn stop(&mut self) {
        if self.try_status().is_none() {
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + common::STOP_TIMEOUT;
            while self.try_status().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if self.try_status().is_none() {
                let _ = self.child.kill();
                self.status = self.child.wait().ok();
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn config_flag_without_a_subcommand_runs_the_gateway() {
    let upstream = Upstream::start();
    let cfg = common::config(&upstream);
    let file = cfg.write().display().to_string();
    let mut gw = Spawned::new(&["-c", &file], cfg.dir());

    gw.wait_listening(cfg.port);

    let resp = common::http(cfg.port, "GET", "/default-subcommand", &[], b"");
    assert_eq!(resp.status, 200, "{:?}", resp.body_str());
    assert_eq!(resp.json()["uri"], "/default-subcommand");
    assert_eq!(upstream.wait_for_requests(1, IO_TIMEOUT).len(), 1);

    gw.stop();
    assert_eq!(gw.status.and_then(|s| s.code()), Some(0));
}

#[test]
fn the_demo_serves_and_takes_its_files_away_when_stopped() {
    // Its files (the token's signing secret among them) live in a directory
    // of their own under $TMPDIR, for as long as the demo runs. Free ports
    // for all three of its listeners (the defaults are 8080, 7860, 9180).
    let tmp = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let free = || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let (gateway, colorizer, admin) = (free(), free(), free());
    let port: u16 = gateway.parse().unwrap();
    let mut demo = Spawned::with_env(
        &[
            "demo",
            "--port",
            &gateway,
            "--colorizer-port",
            &colorizer,
            "--admin-port",
            &admin,
        ],
        work.path(),
        &[("TMPDIR", tmp.path())],
    );
    demo.wait_listening(port);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let dir = tmp
        .path()
        .join(format!("colorgate-demo-{}", demo.child.id()));
    assert!(dir.join("jwt.secret").is_file(), "{dir:?}");

    // Without the token printed for it, the demo's gateway refuses.
    use std::io::{Read, Write};
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn.write_all(b"GET /api/colorize HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    // Its metrics are on the admin port it was given.
    let mut metrics = TcpStream::connect(("127.0.0.1", admin.parse::<u16>().unwrap())).unwrap();
    metrics.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    metrics
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = metrics.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains("colorgate_requests_total"), "{answer}");

    demo.stop();
    assert_eq!(demo.try_status().and_then(|s| s.code()), Some(0));
    assert!(!dir.exists(), "{dir:?} left behind");
    // Nothing was written into the working directory either.
    assert_eq!(fs::read_dir(work.path()).unwrap().count(), 0);
}

#[test]
fn demo_on_a_busy_port_is_a_one_line_error() {
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = busy.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Spawned::new(&["demo", "--port", &port], dir.path());

    let status = demo.wait_exit(common::READY_TIMEOUT);

    assert_eq!(status.code(), Some(1));
    assert_eq!(demo.stdout(), "");
    let err = demo.stderr();
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err:?}");
    // Nothing was written into the working directory.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    drop(busy);
}
