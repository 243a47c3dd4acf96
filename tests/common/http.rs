//! Raw HTTP/1.1 client plus the wire-format reader shared with the fake upstream.
//!
//! Hand-rolled on purpose: tests must be able to send malformed requests (duplicate
//! Host, bad framing, slow writes), which an HTTP client crate would refuse to produce.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Read/write timeout for every client socket; a hung gateway fails the test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed response. Header names are lowercased; duplicates are kept in wire order.
/// `status == 0` means nothing parseable came back (then `reason` holds the first line).
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First value of a header, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    /// Every value of a header, in order (e.g. several `set-cookie`).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let hits = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name));
        hits.map(|(_, v)| v.as_str()).collect()
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON; panics with status and body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}); status {} body {:?}",
                self.status,
                self.body_str()
            )
        })
    }
}

pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One line without its CR LF; `None` on EOF, timeout or reset before any byte of it.
pub(crate) fn read_line(r: &mut impl BufRead) -> Option<String> {
    let mut buf = Vec::new();
    let _ = r.read_until(b'\n', &mut buf);
    if buf.is_empty() {
        return None;
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Header lines up to the blank line; names lowercased, values trimmed.
pub(crate) fn read_headers(r: &mut impl BufRead) -> Vec<(String, String)> {
    lowercase_names(read_header_lines(r))
}

/// Header lines with their names lowercased, as [`read_headers`] returns them.
pub(crate) fn lowercase_names(lines: Vec<(String, String)>) -> Vec<(String, String)> {
    lines
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

/// Like [`read_headers`], with each name spelled as it was sent.
pub(crate) fn read_header_lines(r: &mut impl BufRead) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    while let Some(line) = read_line(r).filter(|l| !l.is_empty()) {
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    headers
}

/// Reads a body framed by `headers`: chunked, then Content-Length, then (if `to_eof`,
/// i.e. for responses) everything until the peer closes. A truncated body is returned
/// as far as it got rather than panicking: truncation is sometimes what a test checks.
pub(crate) fn read_body(
    r: &mut impl BufRead,
    headers: &[(String, String)],
    to_eof: bool,
) -> Vec<u8> {
    let mut body = Vec::new();
    let te = find_header(headers, "transfer-encoding").unwrap_or("");
    if te.to_ascii_lowercase().contains("chunked") {
        while let Some(line) = read_line(r) {
            let size =
                u64::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
            if size == 0 {
                read_headers(r); // trailers
                break;
            }
            if r.take(size)
                .read_to_end(&mut body)
                .map_or(true, |n| n as u64 != size)
            {
                break;
            }
            read_line(r); // CR LF after the chunk
        }
    } else if let Some(len) = find_header(headers, "content-length").and_then(|v| v.parse().ok()) {
        let _ = r.take(len).read_to_end(&mut body);
    } else if to_eof {
        let _ = r.read_to_end(&mut body);
    }
    body
}

/// Reads exactly one response (skipping interim 1xx ones). `head` = the request was HEAD,
/// so the response has no body whatever its Content-Length says.
pub fn read_response(r: &mut impl BufRead, head: bool) -> Response {
    loop {
        let Some(line) = read_line(r) else {
            return Response::default();
        };
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status = parts
            .next()
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|_| version.starts_with("HTTP/"));
        let Some(status) = status else {
            let mut body = Vec::new();
            let _ = r.read_to_end(&mut body);
            return Response {
                status: 0,
                reason: line,
                headers: vec![],
                body,
            };
        };
        let reason = parts.next().unwrap_or("").to_string();
        let headers = read_headers(r);
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let bodiless = head || status < 200 || status == 204 || status == 304;
        let body = if bodiless {
            vec![]
        } else {
            read_body(r, &headers, true)
        };
        return Response {
            status,
            reason,
            headers,
            body,
        };
    }
}

/// Serialises a request. Adds `Host: 127.0.0.1:<port>` unless given, Content-Length for a
/// body (or for POST/PUT/PATCH) unless Content-Length/Transfer-Encoding is given (then the
/// body is sent as-is, see [`chunked`]), and `Connection: close` if `close` and not given.
pub fn build_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        head += &format!("Host: 127.0.0.1:{port}\r\n");
    }
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    let wants_len = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
    if wants_len && !has("content-length") && !has("transfer-encoding") {
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    if close && !has("connection") {
        head += "Connection: close\r\n";
    }
    head += "\r\n";
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// `len` bytes of a pattern that repeats every 251 bytes (a prime, so no
/// power-of-two buffer boundary lines up with it): an upload whose every
/// byte a test can check.
pub fn upload_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Encodes `body` with the chunked transfer coding in `size`-byte chunks.
/// Send it with a `("Transfer-Encoding", "chunked")` header.
pub fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(size.max(1)) {
        out.extend(format!("{:x}\r\n", piece.len()).into_bytes());
        out.extend_from_slice(piece);
        out.extend(b"\r\n");
    }
    out.extend(b"0\r\n\r\n");
    out
}

/// One request on a fresh connection with `Connection: close`. Panics if it cannot connect.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut conn = Conn::open(port);
    conn.write(&build_request(port, method, path, headers, body, true));
    conn.read_response(method.eq_ignore_ascii_case("HEAD"))
}

/// Hand-written bytes on a fresh connection; returns the first response (status 0 if none).
pub fn raw(port: u16, bytes: &[u8]) -> Response {
    Conn::open(port).send_raw(bytes)
}

/// Hand-written bytes on a fresh connection; returns every byte of the
/// answer, as it came, until the gateway closes (ask it to: `Connection: close`)
/// or resets the connection (what came before the reset is kept).
pub fn raw_answer(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(bytes).unwrap();
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    raw
}

/// A keep-alive connection: several requests, one response read per request.
pub struct Conn {
    port: u16,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(port: u16) -> Conn {
        Conn::try_open(port).unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
    }
    pub fn try_open(port: u16) -> io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            port,
            reader: BufReader::new(stream),
        })
    }
    /// Sends a request without `Connection: close` (see [`build_request`]) and reads its response.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.write(&build_request(
            self.port, method, path, headers, body, false,
        ));
        self.read_response(method.eq_ignore_ascii_case("HEAD"))
    }
    pub fn send_raw(&mut self, bytes: &[u8]) -> Response {
        self.write(bytes);
        self.read_response(bytes.starts_with(b"HEAD "))
    }
    /// Writes without reading (partial or slow requests). Errors are ignored: the gateway
    /// hanging up early is often the behaviour under test, and the read will show it.
    pub fn write(&mut self, bytes: &[u8]) {
        let _ = self.reader.get_mut().write_all(bytes);
    }
    pub fn read_response(&mut self, head: bool) -> Response {
        read_response(&mut self.reader, head)
    }
    /// The status line of the next answer, interim (`100 Continue`) or not,
    /// with its header read; `None` if the connection ended first.
    pub fn read_status_line(&mut self) -> Option<String> {
        let line = read_line(&mut self.reader)?;
        read_headers(&mut self.reader);
        Some(line)
    }
    /// The status line and header of the next answer, its body left unread
    /// (the header of a stream, read before its body is sent); `None` if the
    /// connection ended or stayed silent for `IO_TIMEOUT` first.
    pub fn read_head(&mut self) -> Option<(String, Vec<(String, String)>)> {
        let line = read_line(&mut self.reader)?;
        Some((line, read_headers(&mut self.reader)))
    }
    /// The body of the answer whose head [`Conn::read_head`] read.
    pub fn read_body(&mut self, headers: &[(String, String)]) -> Vec<u8> {
        read_body(&mut self.reader, headers, true)
    }
    /// Sends one more header line every 100 ms (the wait for the gateway to
    /// hang up is the pause) until the gateway closes the connection: the
    /// number of lines sent, or `None` if it was still open after `max` lines.
    /// Start a request's header first; this never ends it (a slowloris).
    pub fn trickle_header(&mut self, max: usize) -> Option<usize> {
        for i in 0..max {
            if self.peer_closed(Duration::from_millis(100)) {
                return Some(i);
            }
            self.write(format!("X-Pad-{i}: x\r\n").as_bytes());
        }
        None
    }
    /// True if the peer closes (EOF or reset) within `wait`; false if the socket stays open
    /// or unread bytes are waiting.
    pub fn peer_closed(&mut self, wait: Duration) -> bool {
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        let closed = match self.reader.fill_buf() {
            Ok(buf) => buf.is_empty(),
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        let _ = self.reader.get_ref().set_read_timeout(Some(IO_TIMEOUT));
        closed
    }
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }
}
