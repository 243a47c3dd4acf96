//! The skeleton, end to end: routes, forwarded headers, security headers,
//! JSON errors, malformed requests — against the real binary and a real
//! upstream.

mod common;

use common::{config, Upstream};

#[test]
fn a_request_reaches_the_upstream_with_forwarded_and_security_headers() {
    let upstream = Upstream::start();
    let gw = config(&upstream).start();

    let resp = gw.request(
        "GET",
        "/hello?x=1",
        &[("X-Forwarded-For", "6.6.6.6"), ("X-User-Id", "mallory")],
        b"",
    );

    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-frame-options"), Some("DENY"));
    assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
    let id = resp.header("x-request-id").expect("request id").to_string();
    let seen = upstream.wait_for_requests(1, common::IO_TIMEOUT);
    let r = &seen[0];
    assert_eq!(r.uri, "/hello?x=1");
    assert_eq!(r.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));
    assert_eq!(r.header("x-user-id"), None);
    assert_eq!(
        r.header("host"),
        Some(format!("127.0.0.1:{}", gw.port()).as_str())
    );
}

#[test]
fn no_route_is_a_json_404() {
    let upstream = Upstream::start();
    let gw = config(&upstream)
        .routes("- path: /only\n  upstream: app\n  auth: none")
        .start();

    let resp = gw.get("/elsewhere");

    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let body = resp.json();
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["request_id"], resp.header("x-request-id").unwrap());
    assert_eq!(resp.header("x-frame-options"), Some("DENY"));
    assert!(upstream.requests().is_empty());
}
