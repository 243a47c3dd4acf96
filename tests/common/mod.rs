//! Integration-test harness for colorgate. Each test file does `mod common;`.
//!
//! ```ignore
//! let upstream = common::Upstream::start();
//! let gw = common::config(&upstream).section("limits", "max_body: 1KiB").start();
//! let resp = gw.request("POST", "/api", &[("Authorization", "Bearer x")], b"{}");
//! assert_eq!(resp.status, 200);
//! assert_eq!(upstream.requests()[0].header("authorization"), Some("Bearer x"));
//! ```
//!
//! std-only on purpose (plus serde_json, tempfile, libc): no async runtime, and a raw
//! byte-level client so malformed requests can be sent.

// Every test binary compiles this module but uses only part of it.
#![allow(dead_code, unused_imports)]

mod gateway;
mod http;
mod upstream;

pub use gateway::{config, indent, Gateway, GatewayConfig, READY_TIMEOUT, STOP_TIMEOUT};
pub use http::{
    build_request, chunked, http, raw, read_response, upload_body, Conn, Response, IO_TIMEOUT,
};
pub use upstream::{RecordedRequest, Upstream};

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago, for the gateway to bind. Taken below
/// the kernel's ephemeral range (32768+ here): a port handed out by
/// `bind(0)` can be taken again by any outgoing connection (the gateway's
/// own upstream and health-check connections among them) before the
/// gateway binds it; ports from 20000–32767 are only ever handed out here,
/// each once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    // Test binaries run one after another; a per-process offset keeps a
    // rerun from reusing the ports a previous run may still hold.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..COUNT {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}

/// An address nobody listens on (connection refused), for "upstream down" tests.
/// Same small race as [`free_port`].
pub fn unreachable_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Runs the colorgate binary to completion (CLI tests), e.g. `colorgate(&["check", "-c", p])`.
pub fn colorgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_colorgate"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run colorgate")
}

/// Polls `f` every 10 ms until it returns `Some`; panics after `timeout`.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
