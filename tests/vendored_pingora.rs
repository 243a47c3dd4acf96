//! Properties of the vendored Pingora (`vendor/README.md`) that no request
//! through the binary can show, checked on its public API over a real
//! socket pair. (Pingora's own unit tests need crates this offline tree
//! does not have.)

use bytes::Bytes;
use pingora_core::protocols::http::v1::{client, server};
use pingora_core::protocols::l4::stream::Stream;
use pingora_http::RequestHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn pair() -> (UnixStream, Stream) {
    let (peer, ours) = UnixStream::pair().expect("socket pair");
    (peer, Stream::from(ours))
}

/// A server session that has read the request `head` from its client.
async fn request_read(head: &[u8]) -> (UnixStream, server::HttpSession) {
    let (mut client, stream) = pair();
    let mut session = server::HttpSession::new(Box::new(stream));
    client.write_all(head).await.unwrap();
    session
        .read_request()
        .await
        .expect("request")
        .expect("head");
    (client, session)
}

/// A client session that has sent a GET and read the response `head` from
/// its upstream.
async fn response_read(head: &[u8]) -> (UnixStream, client::HttpSession) {
    let (mut upstream, stream) = pair();
    let mut session = client::HttpSession::new(Box::new(stream));
    let req = RequestHeader::build("GET", b"/image", None).unwrap();
    session.write_request_header(Box::new(req)).await.unwrap();
    let mut sent = [0u8; 256];
    let n = upstream.read(&mut sent).await.unwrap();
    assert!(sent[..n].starts_with(b"GET /image HTTP/1.1\r\n"));
    upstream.write_all(head).await.unwrap();
    session.read_response().await.expect("response head");
    (upstream, session)
}

/// Whether `second` starts in memory where `first` ends: the two pieces
/// were cut from one buffer, not copied into allocations of their own.
fn contiguous(first: &Bytes, second: &Bytes) -> bool {
    first.as_ptr().wrapping_add(first.len()) == second.as_ptr()
}

// Patch 61: a request body of known length goes upstream in the pieces it
// was read in, without a copy of each.
#[tokio::test]
async fn a_sized_request_body_is_handed_on_in_the_buffer_it_was_read_into() {
    let (mut client, mut session) =
        request_read(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 300\r\n\r\n").await;

    client.write_all(&[b'a'; 100]).await.unwrap();
    let first = session.read_body_bytes().await.unwrap().expect("piece");
    // The rest of the body, and a pipelined request behind it.
    client.write_all(&[b'b'; 200]).await.unwrap();
    client
        .write_all(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let second = session.read_body_bytes().await.unwrap().expect("piece");

    assert_eq!(&first[..], &[b'a'; 100][..]);
    assert_eq!(&second[..], &[b'b'; 200][..]);
    assert!(contiguous(&first, &second), "each piece was copied");
    assert_eq!(session.read_body_bytes().await.unwrap(), None);
}

// Patch 61: the pieces are the body and nothing else, when the body came
// with the header and the next request with the body.
#[tokio::test]
async fn a_sized_request_body_read_with_its_header_stops_at_its_length() {
    let (_client, mut session) = request_read(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\n\r\n").await;

    let body = session.read_body_bytes().await.unwrap().expect("piece");
    assert_eq!(&body[..], b"hello");
    assert_eq!(session.read_body_bytes().await.unwrap(), None);
}

// Patch 61: a chunked body's pieces leave its framing behind (they are
// copied out of a buffer that keeps it).
#[tokio::test]
async fn a_chunked_request_body_arrives_without_its_framing() {
    let (mut client, mut session) =
        request_read(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
    client
        .write_all(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .await
        .unwrap();

    let mut body = Vec::new();
    while let Some(piece) = session.read_body_bytes().await.unwrap() {
        body.extend_from_slice(&piece);
    }
    assert_eq!(body, b"hello world");
}

// Patch 61: an upstream's sized response body, likewise, but a piece
// smaller than half the buffer is copied (a slow client's queue of small
// pieces would otherwise hold a 64 KiB buffer each).
#[tokio::test]
async fn a_sized_response_body_hands_on_large_pieces_and_copies_small_ones() {
    let (mut upstream, mut session) = response_read(
        b"HTTP/1.1 200 OK
Content-Length: 40100

",
    )
    .await;
    upstream.write_all(&[b'a'; 40_000]).await.unwrap();
    let large = session.read_body_bytes().await.unwrap().expect("piece");
    // Shared with the reader's buffer: not a copy.
    assert!(!large.is_unique(), "the large piece was copied");
    upstream.write_all(&[b'b'; 100]).await.unwrap();
    let small = session.read_body_bytes().await.unwrap().expect("piece");

    assert_eq!(&large[..], &[b'a'; 40_000][..]);
    assert_eq!(&small[..], &[b'b'; 100][..]);
    assert!(
        small.is_unique(),
        "the small piece holds the reader's buffer"
    );
    assert_eq!(session.read_body_bytes().await.unwrap(), None);
    assert_eq!(session.body_bytes_received(), 40_100);
}

// Patch 64: a body read whole and handed back is read again, piece by
// piece and the same pieces, and is not done until the last is read.
#[tokio::test]
async fn a_body_handed_back_is_read_again_in_its_pieces() {
    let (mut client, mut session) =
        request_read(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n").await;
    client.write_all(b"abcdefgh").await.unwrap();
    let mut read = Vec::new();
    while let Some(piece) = session.read_body_bytes().await.unwrap() {
        read.push(piece);
    }
    assert!(session.is_body_done());

    session.replay_body(vec![read[0].slice(..3), read[0].slice(3..)]);

    assert!(!session.is_body_done(), "pieces are still to be read");
    let first = session.read_body_bytes().await.unwrap().expect("piece");
    assert!(!session.is_body_done(), "one piece is still to be read");
    let second = session.read_body_bytes().await.unwrap().expect("piece");
    assert_eq!((&first[..], &second[..]), (&b"abc"[..], &b"defgh"[..]));
    assert_eq!(first.as_ptr(), read[0].as_ptr(), "the piece was copied");
    assert!(session.is_body_done());
    assert_eq!(session.read_body_bytes().await.unwrap(), None);
}

/// Patch 65: a request's futures take its server and upstream sessions by
/// value, several times each; the sessions are boxed so that each move is a
/// few words, not the 390 to 768 bytes of the largest kind of session.
#[test]
fn the_sessions_a_request_moves_are_a_few_words() {
    use pingora_core::protocols::http::{client::HttpSession, ServerSession};
    use std::mem::size_of;
    // A box, or the fat pointer of a custom session, and the variant's tag.
    assert!(size_of::<ServerSession>() <= 3 * size_of::<usize>());
    assert!(size_of::<HttpSession>() <= 2 * size_of::<usize>());
}

/// Patch 66: the session notes an `Upgrade` line as it parses the request,
/// and answers `is_upgrade_req` from that note until the header is lent out
/// to be changed; then it looks again.
#[tokio::test]
async fn an_upgrade_request_is_known_as_read_and_after_a_filter_changes_it() {
    let upgrade =
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
    let (_client, session) = request_read(upgrade).await;
    assert!(session.is_upgrade_req());

    // HTTP/1.0 has no upgrade, whatever its fields say.
    let old = b"GET /ws HTTP/1.0\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
    let (_client, session) = request_read(old).await;
    assert!(!session.is_upgrade_req());

    let (_client, mut session) = request_read(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(!session.is_upgrade_req());
    session
        .req_header_mut()
        .insert_header("Upgrade", "websocket")
        .unwrap();
    assert!(session.is_upgrade_req());

    let (_client, mut session) = request_read(upgrade).await;
    session.req_header_mut().remove_header("Upgrade");
    assert!(!session.is_upgrade_req());
}

/// The `Host` checks as they were before vendor patch 68 (a search for `@`,
/// then patch 57's loop over nginx's rule): the reason each refuses with,
/// or `None`.
fn host_refusal_before(host: &[u8]) -> Option<&'static str> {
    if host.contains(&b'@') {
        return Some("userinfo in Host header");
    }
    let mut name_end = host.len();
    let mut in_literal = false;
    let mut in_port = false;
    let mut last_dot = None;
    for (i, &b) in host.iter().enumerate() {
        match b {
            b'.' => {
                if i > 0 && last_dot == Some(i - 1) {
                    return Some("invalid Host header");
                }
                last_dot = Some(i);
            }
            b':' if !in_port && !in_literal => {
                name_end = i;
                in_port = true;
            }
            b'[' if i == 0 => in_literal = true,
            b']' if in_literal => {
                name_end = i + 1;
                in_literal = false;
                in_port = true;
            }
            b'/' | 0..=0x20 | 0x7f => return Some("invalid Host header"),
            _ => {}
        }
    }
    let name_end = match last_dot {
        Some(dot) if dot + 1 == name_end => dot,
        _ => name_end,
    };
    (name_end == 0).then_some("invalid Host header")
}

/// Vendor patch 68: the `Host` check looks each byte up in a table, in one
/// pass that also finds an `@`. Every `Host` of up to five bytes made of
/// the bytes the check looks at (and two it passes) is refused, or not,
/// for the reason it was before.
#[test]
fn a_host_is_judged_as_before_the_one_pass_check() {
    let alphabet = b"a1.:[]@/ \t\x80";
    let mut host = Vec::new();
    let mut checked = 0;
    for len in 0..=5u32 {
        for n in 0..alphabet.len().pow(len) {
            host.clear();
            let mut rest = n;
            for _ in 0..len {
                host.push(alphabet[rest % alphabet.len()]);
                rest /= alphabet.len();
            }
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            let value = http::HeaderValue::from_bytes(&host).expect("a header value");
            req.append_header(http::header::HOST, value).unwrap();
            let refusal =
                pingora_core::protocols::http::authority::validate_request_authority(&req)
                    .err()
                    .map(|e| e.context.as_ref().map(|c| c.as_str().to_string()));
            let before = host_refusal_before(&host).map(|r| Some(r.to_string()));
            assert_eq!(refusal, before, "{:?}", String::from_utf8_lossy(&host));
            checked += 1;
        }
    }
    assert_eq!(checked, 1 + 11 + 121 + 1331 + 14641 + 161051);
}

/// Vendor patch 69: the upstream session learns a request's framing and its
/// `Upgrade` line from the fields as it writes them, not by looking them up
/// after: the body is framed, and an upgrade known, as the fields say.
#[tokio::test]
async fn a_request_sent_upstream_is_framed_by_the_fields_it_was_written_with() {
    /// The fields, what `hello` then puts on the wire, and whether the
    /// request is an upgrade.
    type Case = (&'static [(&'static str, &'static str)], &'static [u8], bool);
    let cases: [Case; 6] = [
        (&[("Content-Length", "5")], b"hello", false),
        (
            &[("Transfer-Encoding", "chunked")],
            b"5\r\nhello\r\n",
            false,
        ),
        // Two lines, one value: the full rules decide.
        (
            &[("Content-Length", "5"), ("content-length", "5")],
            b"hello",
            false,
        ),
        (&[("Content-Length", "5, 5")], b"hello", false),
        // No length: a request without one has no body.
        (&[], b"", false),
        (&[("Upgrade", "websocket")], b"", true),
    ];
    for (fields, wire, upgrade) in cases {
        let (mut upstream, stream) = pair();
        let mut session = client::HttpSession::new(Box::new(stream));
        let mut req = RequestHeader::build("POST", b"/image", None).unwrap();
        for (name, value) in fields {
            req.append_header(name.to_string(), *value).unwrap();
        }
        session.write_request_header(Box::new(req)).await.unwrap();
        let mut head = vec![0u8; 512];
        let n = upstream.read(&mut head).await.unwrap();
        assert!(head[..n].ends_with(b"\r\n\r\n"), "{fields:?}");

        let written = session.write_body(b"hello").await.unwrap();
        assert_eq!(written.is_some(), !wire.is_empty(), "{fields:?}");
        if !wire.is_empty() {
            let mut sent = vec![0u8; wire.len()];
            upstream.read_exact(&mut sent).await.unwrap();
            assert_eq!(sent, wire, "{fields:?}");
        }
        assert_eq!(session.is_upgrade_req(), upgrade, "{fields:?}");
    }

    // HTTP/1.0 has no upgrade, whatever its fields say.
    let (_upstream, stream) = pair();
    let mut session = client::HttpSession::new(Box::new(stream));
    let mut req = RequestHeader::build("GET", b"/ws", None).unwrap();
    req.set_version(http::Version::HTTP_10);
    req.append_header("Upgrade", "websocket").unwrap();
    session.write_request_header(Box::new(req)).await.unwrap();
    assert!(!session.is_upgrade_req());
}

/// Vendor patch 70: whether a connection is kept follows the first
/// `Connection` line of what was read and written, noted as the headers
/// are parsed and written rather than looked up afterwards; a request
/// header lent out to be changed is looked at again.
#[tokio::test]
async fn keep_alive_follows_the_connection_lines_as_read_and_written() {
    const EMPTY: &str = "Content-Length: 0\r\n\r\n";
    // Upstream: (the request's `Connection`, the answer's head, kept?)
    let upstream_cases = [
        (None, "HTTP/1.1 200 OK\r\n", true),
        (None, "HTTP/1.1 200 OK\r\nConnection: close\r\n", false),
        (
            Some("close"),
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n",
            false,
        ),
        (None, "HTTP/1.0 200 OK\r\n", false),
        (None, "HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\n", true),
        (
            None,
            "HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\n",
            false,
        ),
        (
            None,
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n",
            true,
        ),
    ];
    for (connection, status_and_fields, kept) in upstream_cases {
        let (mut upstream, stream) = pair();
        let mut session = client::HttpSession::new(Box::new(stream));
        let mut req = RequestHeader::build("GET", b"/image", None).unwrap();
        if let Some(value) = connection {
            req.append_header("Connection", value).unwrap();
        }
        session.write_request_header(Box::new(req)).await.unwrap();
        let mut sent = [0u8; 256];
        let _ = upstream.read(&mut sent).await.unwrap();
        let head = format!("{status_and_fields}{EMPTY}");
        upstream.write_all(head.as_bytes()).await.unwrap();
        session
            .read_resp_header_parts()
            .await
            .expect("response head");
        while session.read_body_bytes().await.unwrap().is_some() {}
        session.respect_keepalive();
        assert_eq!(session.will_keepalive(), kept, "{connection:?} {head:?}");
    }

    // Client: (the request's head, kept?)
    let client_cases = [
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            false,
        ),
        ("GET / HTTP/1.0\r\nHost: a\r\n\r\n", false),
        (
            "GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
            true,
        ),
        (
            "GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
            false,
        ),
    ];
    for (head, kept) in client_cases {
        let (_client, mut session) = request_read(head.as_bytes()).await;
        session.respect_keepalive();
        assert_eq!(session.will_keepalive(), kept, "{head:?}");
    }
    let (_client, mut session) =
        request_read(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    session.req_header_mut().remove_header("Connection");
    session.respect_keepalive();
    assert!(session.will_keepalive(), "the changed header decides");
}

/// Vendor patch 71: a request on its way upstream whose authority is
/// settled (origin form, one `Host` nginx would take, not CONNECT) skips
/// the reconciling after the filters; it is one that validation passes.
/// Anything else is not settled, and takes the full path.
#[test]
fn only_an_origin_form_request_with_one_good_host_skips_the_reconciling() {
    use pingora_core::protocols::http::authority::{
        settled_origin_form_authority, validate_request_authority,
    };
    let request = |method: &str, target: &str, hosts: &[&str]| {
        let mut req = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        for host in hosts {
            req.append_header("Host", *host).unwrap();
        }
        req
    };
    let settled = [
        request("GET", "/image?x=1", &["127.0.0.1:8080"]),
        request("POST", "/", &["[::1]:80"]),
        request("GET", "/", &["a.b."]),
    ];
    for req in &settled {
        assert!(settled_origin_form_authority(req), "{req:?}");
        assert!(validate_request_authority(req).is_ok(), "{req:?}");
    }
    let unsettled = [
        request("GET", "http://a/image", &["a"]),
        request("CONNECT", "a:443", &["a:443"]),
        request("CONNECT", "/", &["a"]),
        request("OPTIONS", "*", &["a"]),
        request("GET", "/", &[]),
        request("GET", "/", &["a", "a"]),
        request("GET", "/", &["user@a"]),
        request("GET", "/", &["a..b"]),
        request("GET", "/", &["a b"]),
    ];
    for req in &unsettled {
        assert!(!settled_origin_form_authority(req), "{req:?}");
    }
}

/// Vendor patch 72: the framing fields are told by name in any case, a
/// byte at a time no longer; a name that differs only where case cannot
/// reach (`_` for `-`) is another field.
#[tokio::test]
async fn framing_fields_are_known_in_any_case_and_only_by_their_own_name() {
    for (head, body) in [
        ("POST / HTTP/1.1\r\nHost: a\r\nCONTENT-length: 5\r\n\r\nhello", Some("hello")),
        ("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\n\r\nhello", Some("hello")),
        (
            "POST / HTTP/1.1\r\nHost: a\r\ntransfer-ENCODING: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Some("hello"),
        ),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\nhello", None),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Lengtx: 5\r\n\r\nhello", None),
    ] {
        let (_client, mut session) = request_read(head.as_bytes()).await;
        let mut got = Vec::new();
        while let Some(piece) = session.read_body_bytes().await.unwrap() {
            got.extend_from_slice(&piece);
        }
        let want = body.map_or(&b""[..], str::as_bytes);
        assert_eq!(got, want, "{head:?}");
    }
    // And as a field written upstream, in the spelling of the map.
    let (mut upstream, stream) = pair();
    let mut session = client::HttpSession::new(Box::new(stream));
    let mut req = RequestHeader::build("POST", b"/", None).unwrap();
    req.append_header("CONTENT-LENGTH", "5").unwrap();
    session.write_request_header(Box::new(req)).await.unwrap();
    let mut head = [0u8; 256];
    let _ = upstream.read(&mut head).await.unwrap();
    assert_eq!(session.write_body(b"hello").await.unwrap(), Some(5));
}
