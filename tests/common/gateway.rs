//! Config builder and the colorgate child process.

use super::http::{self, Conn, Response};
use super::{free_port, Upstream};
use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long `start` waits for the listeners to accept before failing the test.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Default config for one upstream: the contract's `server`, `listeners`, `upstreams`
/// (`app`), `routes` (`/` -> app, auth none) and `access_log` sections.
pub fn config(upstream: &Upstream) -> GatewayConfig {
    GatewayConfig::new(&upstream.addr())
}

/// Renders a colorgate YAML config. Owns a temp dir (shared by clones and by every
/// `Gateway` started from it, so a `-u` upgrade process sees the same pid file and socket;
/// deleted when the last one is dropped) and two pre-allocated free ports.
///
/// Section bodies and `server` values may use the placeholders `{dir}`, `{port}`,
/// `{admin_port}` and `{upstream}`, substituted by `yaml()`.
#[derive(Clone)]
pub struct GatewayConfig {
    dir: Arc<tempfile::TempDir>,
    pub port: u16,
    pub admin_port: u16,
    pub upstream: String,
    server: Vec<(String, String)>,
    sections: Vec<(String, String)>,
    full: Option<String>,
}

impl GatewayConfig {
    pub fn new(upstream_addr: &str) -> GatewayConfig {
        let dir = tempfile::Builder::new()
            .prefix("colorgate-test-")
            .tempdir()
            .expect("temp dir");
        let cfg = GatewayConfig {
            dir: Arc::new(dir),
            port: free_port(),
            admin_port: free_port(),
            upstream: upstream_addr.to_string(),
            server: vec![],
            sections: vec![],
            full: None,
        };
        cfg.server("threads", "1")
            .server("pid_file", "{dir}/colorgate.pid")
            .server("upgrade_sock", "{dir}/upgrade.sock")
            .server("grace_period", "1s")
            .server("admin", "127.0.0.1:{admin_port}")
            .section("listeners", "- address: 127.0.0.1:{port}")
            .section(
                "upstreams",
                "app:\n  servers: [\"{upstream}\"]\n  connect_timeout: 2s\n  read_timeout: 5s",
            )
            .routes("- path: /\n  upstream: app\n  auth: none")
            .section("access_log", "path: {dir}/access.log")
    }
    /// Sets (or replaces) `server.<key>`; an empty value removes the key.
    pub fn server(mut self, key: &str, value: &str) -> Self {
        set(&mut self.server, key, value);
        self
    }
    /// Sets (or replaces) a top-level section; `body` is the YAML under `name:`, written at
    /// any indentation (it is dedented, then indented two spaces). Empty body removes it.
    pub fn section(mut self, name: &str, body: &str) -> Self {
        set(&mut self.sections, name, body);
        self
    }
    pub fn routes(self, body: &str) -> Self {
        self.section("routes", body)
    }
    /// Replaces the whole rendered text (placeholders still apply), for configs the
    /// builder cannot express, e.g. invalid ones.
    pub fn full_yaml(mut self, text: &str) -> Self {
        self.full = Some(text.to_string());
        self
    }
    /// Writes a file (key, certificate...) into the temp dir; chainable.
    pub fn file(self, name: &str, contents: impl AsRef<[u8]>) -> Self {
        fs::write(self.path(name), contents).expect("write file into gateway dir");
        self
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }
    pub fn yaml(&self) -> String {
        let text = self.full.clone().unwrap_or_else(|| {
            let mut out = String::from("server:\n");
            for (k, v) in &self.server {
                out += &format!("  {k}: {v}\n");
            }
            for (name, body) in &self.sections {
                out += &format!("{name}:\n{}", indent(body));
            }
            out
        });
        text.replace("{dir}", &self.dir().display().to_string())
            .replace("{port}", &self.port.to_string())
            .replace("{admin_port}", &self.admin_port.to_string())
            .replace("{upstream}", &self.upstream)
    }
    /// Writes `<dir>/colorgate.yaml` and returns its path (for `colorgate check -c`).
    pub fn write(&self) -> PathBuf {
        let path = self.path("colorgate.yaml");
        fs::write(&path, self.yaml()).expect("write config");
        path
    }
    pub fn start(&self) -> Gateway {
        Gateway::start(self)
    }
}

fn set(list: &mut Vec<(String, String)>, key: &str, value: &str) {
    list.retain(|(k, _)| k != key);
    if !value.trim().is_empty() {
        list.push((key.to_string(), value.to_string()));
    }
}

/// Dedent `body` and indent it by two spaces, as a section's YAML body.
pub fn indent(body: &str) -> String {
    let lines: Vec<&str> = body.trim_matches('\n').lines().collect();
    let width = |l: &&str| l.len() - l.trim_start().len();
    let min = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(width)
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| format!("  {}\n", l.get(min..).unwrap_or("").trim_end()))
        .collect()
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A running `colorgate run -c <dir>/colorgate.yaml`. Stdout/stderr go to files in the
/// temp dir. Stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Gateway {
    cfg: GatewayConfig,
    child: Child,
    status: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Gateway {
    pub fn start(cfg: &GatewayConfig) -> Gateway {
        Gateway::start_with_args(cfg, &[])
    }
    /// Spawns with extra args after `run -c <file>` and waits until ready.
    pub fn start_with_args(cfg: &GatewayConfig, args: &[&str]) -> Gateway {
        let mut gw = Gateway::spawn(cfg, args);
        gw.wait_ready();
        gw
    }
    /// Spawns without waiting. For `-u` upgrades: the old process still holds the ports,
    /// so probing proves nothing; wait on the old process's exit instead.
    pub fn spawn(cfg: &GatewayConfig, args: &[&str]) -> Gateway {
        let n = SEQ.fetch_add(1, SeqCst);
        let (stdout, stderr) = (
            cfg.path(&format!("gateway{n}.stdout")),
            cfg.path(&format!("gateway{n}.stderr")),
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_colorgate"));
        cmd.arg("run")
            .arg("-c")
            .arg(cfg.write())
            .args(args)
            .current_dir(cfg.dir());
        cmd.stdin(Stdio::null()).env("RUST_BACKTRACE", "1");
        cmd.stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap());
        // If the test binary dies (crash, CI timeout) take the gateway with it so it does not
        // keep the ports. Caveat: this fires when the *spawning thread* exits, so keep a
        // Gateway on the test thread that started it.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn colorgate");
        Gateway {
            cfg: cfg.clone(),
            child,
            status: None,
            stdout,
            stderr,
        }
    }
    /// Probes the listener (and the admin port if configured) every 20 ms until they accept.
    /// Panics with the captured stderr if the process exits or `READY_TIMEOUT` passes.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut ports = vec![self.cfg.port];
        if self
            .cfg
            .server
            .iter()
            .any(|(k, v)| k == "admin" && v.contains("{admin_port}"))
            && self.cfg.full.is_none()
        {
            ports.push(self.cfg.admin_port);
        }
        for port in ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Some(status) = self.try_status() {
                    panic!("colorgate exited before listening on {port} ({status})\n--- stderr ---\n{}", self.stderr());
                }
                if Instant::now() > deadline {
                    let status = self.kill();
                    panic!("colorgate not listening on {port} after {READY_TIMEOUT:?} (killed: {status:?})\n--- stderr ---\n{}", self.stderr());
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn port(&self) -> u16 {
        self.cfg.port
    }
    pub fn admin_port(&self) -> u16 {
        self.cfg.admin_port
    }
    pub fn dir(&self) -> &Path {
        self.cfg.dir()
    }
    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }
    /// `(name, /proc/<pid>/task/<tid>/status)` of each of the gateway's
    /// threads.
    pub fn thread_statuses(&self) -> Vec<(String, String)> {
        let tasks = format!("/proc/{}/task", self.pid());
        let mut out = Vec::new();
        for task in std::fs::read_dir(tasks).expect("the gateway's /proc/<pid>/task") {
            let dir = task.expect("a task entry").path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if let Ok(status) = std::fs::read_to_string(dir.join("status")) {
                out.push((comm.trim_end().to_string(), status));
            }
        }
        out
    }
    /// `/proc/<pid>/task/<tid>/status` of each of the `n` worker threads of
    /// the listeners (threads named after a listener's address, which the
    /// kernel cuts to 15 bytes: "colorgate 127.0"). A helper thread that a
    /// listener thread starts (Pingora's timer clock, the access-log writer)
    /// carries its creator's name until it sets its own: this waits until
    /// exactly `n` threads have the name.
    pub fn listener_thread_statuses(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + http::IO_TIMEOUT;
        loop {
            let threads = self.thread_statuses();
            let listeners: Vec<String> = threads
                .iter()
                .filter(|(name, _)| name.starts_with("colorgate 127."))
                .map(|(_, status)| status.clone())
                .collect();
            if listeners.len() == n {
                return listeners;
            }
            let names: Vec<&String> = threads.iter().map(|(name, _)| name).collect();
            assert!(
                Instant::now() < deadline,
                "not {n} listener threads: {names:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
    /// How often each of the `n` listener threads has gone to sleep and been
    /// woken (`voluntary_ctxt_switches`), in `listener_thread_statuses` order.
    pub fn listener_thread_wakeups(&self, n: usize) -> Vec<u64> {
        self.listener_thread_statuses(n)
            .iter()
            .map(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("voluntary_ctxt_switches in /proc/<pid>/task/<tid>/status")
            })
            .collect()
    }

    /// Exit status if it has exited (reaps it). Never blocks.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }
    /// Sends `sig` to the process this Gateway spawned. Panics if it already exited: once
    /// reaped its PID may belong to someone else, so it is never signalled after that.
    pub fn signal(&mut self, sig: i32) {
        assert!(
            self.try_status().is_none(),
            "colorgate already exited; not signalling {sig}"
        );
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }
    /// Polls for exit for up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.try_status().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        self.try_status()
    }
    /// SIGTERM, wait up to `STOP_TIMEOUT`, then SIGKILL. Idempotent; never panics (Drop uses it).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.try_status().is_none() {
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            if self.wait_exit(STOP_TIMEOUT).is_none() {
                self.kill();
            }
        }
        self.status
    }
    fn kill(&mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        self.status
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
    /// `<dir>/access.log` (the default `access_log.path`), one JSON value per line.
    /// Panics on a line that is not JSON. A last line without its newline is
    /// being written as we read, and is left for the next look.
    pub fn access_log_lines(&self) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(self.cfg.path("access.log")).unwrap_or_default();
        let written = text.rfind('\n').map_or(0, |end| end + 1);
        text[..written]
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {l}"))
            })
            .collect()
    }
    /// JSON lines on stdout (access log with `path: "-"`); other lines are skipped.
    pub fn stdout_json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
    /// Polls `access_log_lines` until it has `n` lines (logs may be written after the response).
    pub fn wait_access_log(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        super::eventually(timeout, || {
            Some(self.access_log_lines()).filter(|l| l.len() >= n)
        })
    }

    pub fn get(&self, path: &str) -> Response {
        http::http(self.port(), "GET", path, &[], b"")
    }
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        http::http(self.port(), method, path, headers, body)
    }
    pub fn raw(&self, bytes: &[u8]) -> Response {
        http::raw(self.port(), bytes)
    }
    /// Every byte of the answer to `bytes`, as it came (see [`http::raw_answer`]).
    pub fn raw_answer(&self, bytes: &[u8]) -> Vec<u8> {
        http::raw_answer(self.port(), bytes)
    }
    pub fn conn(&self) -> Conn {
        Conn::open(self.port())
    }
    pub fn admin_get(&self, path: &str) -> Response {
        http::http(self.admin_port(), "GET", path, &[], b"")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}
