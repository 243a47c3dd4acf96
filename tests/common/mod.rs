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

pub use gateway::{config, Gateway, GatewayConfig, READY_TIMEOUT, STOP_TIMEOUT};
pub use http::{build_request, chunked, http, raw, read_response, Conn, Response, IO_TIMEOUT};
pub use upstream::{RecordedRequest, Upstream};

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago: binds 127.0.0.1:0, reads the port, closes.
/// Small race: another process may take it before the gateway binds it. The kernel hands
/// out ephemeral ports round-robin, so a reuse within a test's lifetime is very unlikely.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
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
