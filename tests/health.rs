//! Active health checks: a server that fails its checks gets no traffic,
//! and an upstream with no healthy server answers 503.

mod common;

use common::{config, eventually, unreachable_addr, Upstream};
use std::time::Duration;

fn upstream_section(servers: &[String]) -> String {
    let list = servers
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "app:\n  servers: [{list}]\n  policy: round_robin\n  connect_timeout: 1s\n  \
         health_check: {{ path: /health, interval: 100ms, timeout: 500ms, unhealthy_after: 1 }}\n"
    )
}

#[test]
fn a_server_that_fails_its_check_gets_no_traffic() {
    let upstream = Upstream::start();
    let down = unreachable_addr();
    let cfg = config(&upstream).section(
        "upstreams",
        &upstream_section(&[upstream.addr(), down.clone()]),
    );
    let gw = cfg.start();

    let gauge = format!("colorgate_upstream_healthy{{server=\"{down}\",upstream=\"app\"}} 0");
    eventually(Duration::from_secs(10), || {
        gw.admin_get("/metrics")
            .body_str()
            .contains(&gauge)
            .then_some(())
    });

    // Round robin over two servers would send half of these to the dead one.
    for i in 0..20 {
        let resp = gw.get(&format!("/work/{i}"));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.body_str());
    }
    let up = format!(
        "colorgate_upstream_healthy{{server=\"{}\",upstream=\"app\"}} 1",
        upstream.addr()
    );
    assert!(gw.admin_get("/metrics").body_str().contains(&up));
    assert!(
        upstream.requests().iter().any(|r| r.uri == "/health"),
        "the live server was checked"
    );
}

#[test]
fn no_healthy_server_is_a_503_with_retry_after() {
    let upstream = Upstream::start();
    let cfg = config(&upstream).section("upstreams", &upstream_section(&[unreachable_addr()]));
    let gw = cfg.start();

    let resp = eventually(Duration::from_secs(10), || {
        let r = gw.get("/work");
        (r.status == 503).then_some(r)
    });
    assert_eq!(resp.json()["error"], "unavailable");
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(resp.header("content-type"), Some("application/json"));
}
