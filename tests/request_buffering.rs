//! Request buffering (`limits.request_buffering`, nginx's
//! `proxy_request_buffering on`): an upload is read whole before the
//! upstream is contacted, so a slow client holds no upstream slot while it
//! sends, and the upstream gets one body of known length.

mod common;

use common::{config, eventually, Upstream, IO_TIMEOUT};
use std::time::Duration;

/// A request's header with `Expect: 100-continue`: the gateway's `100`
/// says the request was admitted, before any of its body is sent.
fn upload_head(path: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {length}\r\n\
         Expect: 100-continue\r\n\r\n"
    )
}

#[test]
fn a_slow_upload_holds_no_upstream_slot_until_its_body_is_in() {
    // The GPU takes one request at a time. A client sends half its image
    // and stalls: with buffering the GPU stays free for others; streamed,
    // the stalled upload holds the GPU's only slot.
    let upstream = Upstream::start();
    for buffering in [true, false] {
        let gw = config(&upstream)
            .section("concurrency", "upstream: 1")
            .section("limits", &format!("request_buffering: {buffering}"))
            .start();
        let mut slow = gw.conn();
        slow.write(upload_head("/colorize", 1000).as_bytes());
        let admitted = slow.read_status_line();
        assert_eq!(admitted.as_deref(), Some("HTTP/1.1 100 Continue"));
        slow.write(&[b'a'; 500]);

        let other = gw.get("/other");

        if buffering {
            assert_eq!(other.status, 200, "{}", other.body_str());
            slow.write(&[b'b'; 500]);
            let done = slow.read_response(false);
            assert_eq!(done.status, 200, "{}", done.body_str());
            let r = upstream.wait_for_requests(2, IO_TIMEOUT);
            let uris: Vec<&str> = r.iter().map(|r| r.uri.as_str()).collect();
            assert_eq!(uris, ["/other", "/colorize"], "the upload went up last");
            assert_eq!(r[1].body.len(), 1000);
            assert_eq!((&r[1].body[499..501]), b"ab");
        } else {
            assert_eq!(other.status, 503, "streamed: the slot is the upload's");
            assert_eq!(other.json()["error"], "unavailable");
        }
        upstream.clear();
    }
}

#[test]
fn a_chunked_upload_goes_upstream_with_its_length() {
    // nginx sends a buffered body with Content-Length whatever the client
    // used: upstreams that cannot read chunked bodies get them whole.
    let upstream = Upstream::start();
    let gw = config(&upstream).start();
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();

    let resp = gw.request(
        "POST",
        "/chunked",
        &[("Transfer-Encoding", "chunked")],
        &common::chunked(&body, 700),
    );

    assert_eq!(resp.status, 200, "{}", resp.body_str());
    let r = upstream.wait_for_requests(1, IO_TIMEOUT);
    assert_eq!(r[0].header("content-length"), Some("5000"));
    assert_eq!(r[0].header("transfer-encoding"), None);
    assert!(r[0].body == body, "the body was changed on the way");
}

#[test]
fn each_route_can_stream_or_buffer_as_an_nginx_location_can() {
    // `request_buffering` on a route overrides `limits`, as
    // `proxy_request_buffering` in a location overrides the server's.
    let upstream = Upstream::start();
    let routes = "- path: /stream\n  upstream: app\n  auth: none\n  request_buffering: false\n\
                  - path: /buffer\n  upstream: app\n  auth: none\n  request_buffering: true\n\
                  - path: /\n  upstream: app\n  auth: none";
    for default in [true, false] {
        let gw = config(&upstream)
            .section("limits", &format!("request_buffering: {default}"))
            .routes(routes)
            .start();
        for path in ["/stream", "/buffer", "/default"] {
            let body = common::chunked(b"as it came", 3);
            let chunked = [("Transfer-Encoding", "chunked")];
            let resp = gw.request("POST", path, &chunked, &body);
            assert_eq!(resp.status, 200, "{path}: {}", resp.body_str());
        }

        let framing: Vec<(Option<String>, Option<String>)> = upstream
            .wait_for_requests(3, IO_TIMEOUT)
            .iter()
            .map(|r| {
                assert_eq!(r.body, b"as it came");
                let te = r.header("transfer-encoding").map(str::to_string);
                (te, r.header("content-length").map(str::to_string))
            })
            .collect();
        let streamed = (Some("chunked".to_string()), None);
        let buffered = (None, Some("10".to_string()));
        let by_default = if default { &buffered } else { &streamed };
        assert_eq!(
            framing,
            [streamed.clone(), buffered.clone(), by_default.clone()],
            "limits.request_buffering: {default}"
        );
        upstream.clear();
    }
}

#[test]
fn uploads_share_the_buffer_memory_and_give_it_back() {
    // 1,500 bytes for every body being read: a 1,000-byte upload in
    // progress leaves room for 500 more, not 600. The memory comes back
    // when the upload is done.
    let upstream = Upstream::start();
    let gw = config(&upstream)
        .section("limits", "max_body_size: 1000\nrequest_buffer_memory: 1500")
        .start();
    let mut first = gw.conn();
    first.write(upload_head("/first", 1000).as_bytes());
    assert_eq!(
        first.read_status_line().as_deref(),
        Some("HTTP/1.1 100 Continue")
    );

    let too_much = gw.request("POST", "/second", &[], &[b'x'; 600]);
    // A client that waits for the go-ahead is refused before it sends.
    let mut waiting = gw.conn();
    waiting.write(upload_head("/waits", 600).as_bytes());
    let not_now = waiting.read_status_line();
    let fits = gw.request("POST", "/third", &[], &[b'y'; 500]);
    // The first upload's, declared (the others' go when their requests end).
    eventually(IO_TIMEOUT, || (buffer_bytes(&gw) == 1000).then_some(()));
    first.write(&[b'z'; 1000]);
    let first_done = first.read_response(false);
    let after = gw.request("POST", "/fourth", &[], &[b'w'; 1000]);

    eventually(IO_TIMEOUT, || (buffer_bytes(&gw) == 0).then_some(()));
    assert_eq!(too_much.status, 503, "{}", too_much.body_str());
    assert_eq!(too_much.json()["error"], "unavailable");
    assert_eq!(too_much.header("retry-after"), Some("1"));
    assert_eq!(not_now.as_deref(), Some("HTTP/1.1 503 Service Unavailable"));
    assert_eq!(fits.status, 200, "{}", fits.body_str());
    assert_eq!(first_done.status, 200, "{}", first_done.body_str());
    assert_eq!(after.status, 200, "{}", after.body_str());
    let uris: Vec<String> = upstream.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris, ["/third", "/first", "/fourth"]);
    let log = gw.wait_access_log(5, IO_TIMEOUT);
    let refused = log.iter().find(|l| l["uri"] == "/second");
    let refused = refused.unwrap_or_else(|| panic!("no log line for /second: {log:#?}"));
    assert_eq!(
        (refused["status"].as_u64(), refused["deny"].as_str()),
        (Some(503), Some("request_buffer"))
    );
}

/// `colorgate_request_buffer_bytes`, from the admin listener.
fn buffer_bytes(gw: &common::Gateway) -> u64 {
    let metrics = gw.admin_get("/metrics").body_str();
    let line = metrics
        .lines()
        .find_map(|l| l.strip_prefix("colorgate_request_buffer_bytes "));
    let line = line.unwrap_or_else(|| panic!("no buffer gauge in:\n{metrics}"));
    line.trim().parse().expect("a count")
}

#[test]
fn a_chunked_upload_passing_max_body_size_is_refused_before_the_upstream_sees_it() {
    let upstream = Upstream::start();
    let gw = config(&upstream)
        .section("limits", "max_body_size: 1k")
        .start();

    let resp = gw.request(
        "POST",
        "/stream",
        &[("Transfer-Encoding", "chunked")],
        &common::chunked(&[b'z'; 1025], 256),
    );
    let next = gw.request(
        "POST",
        "/exactly",
        &[("Transfer-Encoding", "chunked")],
        &common::chunked(&[b'z'; 1024], 256),
    );

    assert_eq!(resp.status, 413, "{}", resp.body_str());
    assert_eq!(resp.json()["error"], "payload_too_large");
    assert_eq!(next.status, 200, "{}", next.body_str());
    let uris: Vec<String> = upstream.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris, ["/exactly"]);
}

#[test]
fn a_broken_chunk_is_a_json_400_and_nothing_goes_upstream() {
    let upstream = Upstream::start();
    let gw = config(&upstream).start();

    let resp = gw.raw(
        b"POST /broken HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\nzz\r\nnot a chunk\r\n0\r\n\r\n",
    );

    assert_eq!(resp.status, 400, "{}", resp.body_str());
    assert_eq!(resp.json()["error"], "bad_request");
    assert!(upstream.requests().is_empty(), "{:#?}", upstream.requests());
}

#[test]
fn an_upload_that_stops_arriving_is_dropped_unanswered_and_logged_408() {
    // nginx's client_body_timeout: the connection is closed without an
    // answer and the request logged 408; the upstream never hears of it.
    let upstream = Upstream::start();
    let gw = config(&upstream)
        .section("limits", "body_timeout: 300ms")
        .start();
    let mut stalled = gw.conn();
    stalled.write(upload_head("/stalled", 100).as_bytes());
    assert_eq!(
        stalled.read_status_line().as_deref(),
        Some("HTTP/1.1 100 Continue")
    );
    stalled.write(&[b's'; 10]);

    assert!(
        stalled.peer_closed(Duration::from_secs(10)),
        "still open long after body_timeout"
    );
    let log = gw.wait_access_log(1, IO_TIMEOUT);
    assert_eq!(log[0]["uri"], "/stalled");
    assert_eq!(log[0]["status"], 408);
    assert_eq!(log[0]["deny"], "body_timeout");
    assert!(upstream.requests().is_empty(), "{:#?}", upstream.requests());
}

#[test]
fn an_upload_whose_client_leaves_half_way_never_reaches_the_upstream() {
    // The gateway reads on to the end of the body before the upstream is
    // asked; a client that hangs up half-way leaves nothing behind it but
    // a log line, and the memory it held is returned.
    let upstream = Upstream::start();
    let gw = config(&upstream).start();
    let mut leaving = gw.conn();
    leaving.write(upload_head("/half", 1000).as_bytes());
    assert_eq!(
        leaving.read_status_line().as_deref(),
        Some("HTTP/1.1 100 Continue")
    );
    leaving.write(&[b'h'; 500]);
    drop(leaving);

    let log = gw.wait_access_log(1, IO_TIMEOUT);
    let after = gw.get("/after");

    assert_eq!(log[0]["uri"], "/half");
    assert_eq!(log[0]["deny"], "client_closed", "{:#?}", log[0]);
    assert_eq!(after.status, 200, "{}", after.body_str());
    let uris: Vec<String> = upstream.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris, ["/after"]);
    eventually(IO_TIMEOUT, || (buffer_bytes(&gw) == 0).then_some(()));
}
