//! A recording HTTP/1.1 upstream: one thread per connection, keep-alive, Content-Length
//! and chunked request bodies. Every request is recorded before it is answered.
//!
//! Behaviour switches are matched anywhere in the path, so they survive route prefixes
//! (`/api/slow/300` works like `/slow/300`):
//! - `/slow/<ms>`: sleep `ms` before answering (timeouts, in-flight caps, graceful upgrade);
//! - `/status/<code>`: answer that status (bodiless for 204/304; avoid 1xx);
//! - `/big/<n>`: answer `n` bytes of `x` as application/octet-stream;
//! - `/shouting-length`, `/chunked-answer`, `/unframed-answer`: frame the answer with
//!   `CONTENT-LENGTH` in capitals; in chunks, announced as `transfer-ENCODING: chunked`;
//!   or by closing the connection after it (no length, `Connection: close`);
//! - `/own-security-headers`: add `X-Frame-Options` and `X-Content-Type-Options` of its own;
//! - `/held-body`: send the header at once and the body only once
//!   [`Upstream::release_bodies`] is called (a stream the upstream writes as it goes);
//! - `/hangup`: answer as usual, keep-alive, then send FIN (an upstream whose keep-alive
//!   timer fired while the connection sat idle in the gateway's pool). The read side stays
//!   open, so a request the gateway still sends on it is recorded (and never answered);
//! - otherwise 200 `application/json`:
//!   `{"ok":true,"method":..,"uri":..,"headers":{lowercase name: value},"body_len":N}`
//!   (repeated headers are joined with ", ").

use super::http::{
    chunked, find_header, lowercase_names, read_body, read_header_lines, read_line, IO_TIMEOUT,
};
use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A request as the upstream received it from the gateway.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub uri: String,
    pub version: String,
    /// Lowercase names, wire order, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// The same names, spelled as they arrived.
    pub names_as_sent: Vec<String>,
    pub body: Vec<u8>,
    /// Sequence number of the TCP connection it came on (equal numbers = connection reuse).
    pub conn: usize,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    log: Mutex<Vec<RecordedRequest>>,
    /// Open connections, so Drop can shut them down and unblock their threads.
    conns: Mutex<HashMap<usize, TcpStream>>,
    next_conn: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    hangups: AtomicUsize,
    /// `/held-body` answers send their bodies once this is set.
    bodies_released: AtomicBool,
}

pub struct Upstream {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Listens on 127.0.0.1:<ephemeral> (bound here, so no port race) and serves until dropped.
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if sh.stop.load(SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let id = sh.next_conn.fetch_add(1, SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    sh.conns.lock().unwrap().insert(id, clone);
                }
                let sh = sh.clone();
                thread::spawn(move || {
                    serve(&sh, stream, id);
                    sh.conns.lock().unwrap().remove(&id);
                });
            }
        });
        Upstream {
            port,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    /// `127.0.0.1:<port>`, as written in the gateway's `servers:` list.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// Snapshot of everything recorded so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log.lock().unwrap().clone()
    }
    pub fn clear(&self) {
        self.shared.log.lock().unwrap().clear();
    }
    /// Polls until at least `n` requests were recorded; panics after `timeout`.
    /// Requests are recorded before `/slow/` sleeps, so this also tells "it is in flight".
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let reqs = self.requests();
            if reqs.len() >= n {
                return reqs;
            }
            assert!(
                Instant::now() < deadline,
                "upstream got {} requests, wanted {n}: {reqs:#?}",
                reqs.len()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
    /// TCP connections accepted so far (pooling tests: fewer connections than requests).
    pub fn connections(&self) -> usize {
        self.shared.next_conn.load(SeqCst)
    }
    /// Connections `/hangup` has sent FIN on so far.
    pub fn hangups(&self) -> usize {
        self.shared.hangups.load(SeqCst)
    }
    /// Lets `/held-body` answers send their bodies.
    pub fn release_bodies(&self) {
        self.shared.bodies_released.store(true, SeqCst);
    }
    /// Requests received but not yet answered right now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(SeqCst)
    }
    /// Highest `in_flight` seen (concurrency-cap tests).
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // unblock accept()
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for (_, c) in self.shared.conns.lock().unwrap().drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// Number after `key` anywhere in the path, e.g. `path_arg("/a/slow/250/b", "/slow/") == Some(250)`.
fn path_arg(uri: &str, key: &str) -> Option<u64> {
    let path = uri.split('?').next()?;
    let rest = &path[path.find(key)? + key.len()..];
    rest.split('/').next()?.parse().ok()
}

fn serve(sh: &Shared, stream: TcpStream, conn: usize) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(stream);
    loop {
        let Some(start) = read_line(&mut r) else {
            return;
        };
        if start.is_empty() {
            continue; // stray CR LF between requests is allowed
        }
        let lines = read_header_lines(&mut r);
        let names_as_sent = lines.iter().map(|(k, _)| k.clone()).collect();
        let headers = lowercase_names(lines);
        let mut parts = start.split_whitespace().map(str::to_string);
        let (method, uri, version) = (
            parts.next().unwrap(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        // `/no-continue`: never answers `Expect: 100-continue`, as Werkzeug.
        let expects =
            find_header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if expects && !uri.contains("/no-continue") {
            let _ = out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        // `/answers-early`: a 413 before any of the body is read, as an
        // application refusing an upload by its Content-Length does; then it
        // hangs up with the body unread, or (`/answers-early-drain`) reads
        // and discards the body and serves the connection on.
        let early = uri.contains("/answers-early");
        let body = if early {
            Vec::new()
        } else {
            read_body(&mut r, &headers, false)
        };
        let close = version == "HTTP/1.0"
            || find_header(&headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let req = RecordedRequest {
            method,
            uri,
            version,
            headers,
            names_as_sent,
            body,
            conn,
        };
        if early {
            let drain = req.uri.contains("/answers-early-drain");
            sh.log.lock().unwrap().push(req.clone());
            let head = format!(
                "HTTP/1.1 413 Error\r\nContent-Type: application/json\r\nContent-Length: 15\r\n{}\r\n{{\"early\":\"yes\"}}",
                if drain { "" } else { "Connection: close\r\n" }
            );
            let ok = out.write_all(head.as_bytes()).is_ok();
            if drain && ok {
                read_body(&mut r, &req.headers, false);
                continue;
            }
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
        let now = sh.in_flight.fetch_add(1, SeqCst) + 1;
        sh.max_in_flight.fetch_max(now, SeqCst);
        sh.log.lock().unwrap().push(req.clone());

        if let Some(ms) = path_arg(&req.uri, "/slow/") {
            thread::sleep(Duration::from_millis(ms));
        }
        let status = path_arg(&req.uri, "/status/").map_or(200, |s| s as u16);
        let (ctype, payload) = match path_arg(&req.uri, "/big/") {
            Some(n) => ("application/octet-stream", vec![b'x'; n as usize]),
            None => ("application/json", default_body(&req)),
        };
        // `/http10` answers as HTTP/1.0, where only `Connection: keep-alive`
        // (`/http10-keepalive`) lets the gateway reuse the connection.
        let http10 = req.uri.contains("/http10");
        let mut head = format!(
            "HTTP/1.{} {status} {}\r\n",
            if http10 { 0 } else { 1 },
            if status < 400 { "OK" } else { "Error" }
        );
        if req.uri.contains("/http10-keepalive") {
            head += "Connection: keep-alive\r\n";
        }
        let chunks = req.uri.contains("/chunked-answer");
        let unframed = req.uri.contains("/unframed-answer");
        let close = close || unframed;
        if status != 204 && status != 304 {
            head += &format!("Content-Type: {ctype}\r\n");
            if chunks {
                head += "transfer-ENCODING: chunked\r\n";
            } else if !unframed {
                let name = if req.uri.contains("/shouting-length") {
                    "CONTENT-LENGTH"
                } else {
                    "Content-Length"
                };
                head += &format!("{name}: {}\r\n", payload.len());
            }
        }
        if req.uri.contains("/own-security-headers") {
            // What the gateway's configured headers must replace, not join.
            head += "X-Frame-Options: SAMEORIGIN\r\nx-content-type-options: sniff\r\n";
            head += "X-Request-Id: the-upstreams-own\r\n";
        }
        if req.uri.contains("/mixed-case") {
            // One name no one would choose, one standard name in lowercase.
            head += "x-MiXeD-Case: 1\r\ncache-control: no-store\r\n";
        }
        if req.uri.contains("/says-who") {
            // What nginx hides by default, and a field it passes on.
            head += "Server: upstream/1.0\r\nX-Accel-Redirect: /internal/x\r\n";
            head += "X-Powered-By: Flask\r\n";
        }
        if req.uri.contains("/dated") {
            // A clock the gateway's own `Date` must replace, not join.
            head += "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
        }
        // `/says-close`: `Connection: close`, yet the socket stays open, so
        // only the header tells the gateway not to send another request on it.
        if close || req.uri.contains("/says-close") {
            head += "Connection: close\r\n";
        }
        head += "\r\n";
        let mut bytes = head.into_bytes();
        if req.uri.contains("/late-body") {
            // The header alone first, so the body is read on its own.
            let _ = out.write_all(&bytes).and_then(|()| out.flush());
            bytes.clear();
            thread::sleep(Duration::from_millis(50));
        }
        if req.uri.contains("/held-body") {
            // The header alone, and the body once the test lets it go.
            let _ = out.write_all(&bytes).and_then(|()| out.flush());
            bytes.clear();
            let deadline = Instant::now() + IO_TIMEOUT;
            while !sh.bodies_released.load(SeqCst)
                && !sh.stop.load(SeqCst)
                && Instant::now() < deadline
            {
                thread::sleep(Duration::from_millis(5));
            }
        }
        if req.method != "HEAD" && status != 204 && status != 304 {
            if chunks {
                bytes.extend(chunked(&payload, 16));
            } else {
                bytes.extend(payload);
            }
        }
        if req.uri.contains("/overlong") {
            // Bytes past the Content-Length, as a broken upstream sends them.
            bytes.extend_from_slice(b"JUNK");
        }
        let ok = out.write_all(&bytes).is_ok();
        sh.in_flight.fetch_sub(1, SeqCst);
        if req.uri.contains("/hangup") && ok {
            let _ = out.shutdown(Shutdown::Write);
            sh.hangups.fetch_add(1, SeqCst);
            continue;
        }
        if close || !ok {
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn default_body(req: &RecordedRequest) -> Vec<u8> {
    let mut headers = serde_json::Map::new();
    for (k, v) in &req.headers {
        let joined = match headers.get(k).and_then(|old| old.as_str()) {
            Some(old) => format!("{old}, {v}"),
            None => v.clone(),
        };
        headers.insert(k.clone(), joined.into());
    }
    let body = serde_json::json!({
        "ok": true, "method": req.method, "uri": req.uri, "headers": headers, "body_len": req.body.len(),
    });
    body.to_string().into_bytes()
}
