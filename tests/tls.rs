//! TLS listeners and HTTP/2 against the real binary: certificates made here
//! (rcgen; the openssl CLI for RSA keys and the PKCS#1 / SEC1 key formats), a
//! rustls client that pins protocol versions and ALPN and shows the peer's
//! certificate, and an h2 client for HTTP/2 through the gateway.

mod common;

use bytes::Bytes;
use common::{config, free_port, GatewayConfig, Upstream, IO_TIMEOUT};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls::{ProtocolVersion, SupportedProtocolVersion};
use serde_json::Value;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A test certificate authority; clients trust only the CAs a test names.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A leaf certificate for 127.0.0.1 and localhost, and its key, as PEM.
#[derive(Clone)]
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = ec_key();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("colorgate test CA {name}"),
        );
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf signed by this CA for `key`; `key_pem` is what goes in key.pem
    /// (the key in whatever format the test wants to serve it in).
    fn leaf_with(&self, cn: &str, key: &rcgen::KeyPair, key_pem: String) -> Leaf {
        let mut p =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.serial_number = Some(rcgen::SerialNumber::from(rand_u64()));
        let cert = p.signed_by(key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem,
            der: cert.der().to_vec(),
        }
    }

    /// A leaf with a fresh ECDSA P-256 key in PKCS#8.
    fn leaf(&self, cn: &str) -> Leaf {
        let key = ec_key();
        let pem = key.serialize_pem();
        self.leaf_with(cn, &key, pem)
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() >> 1 // positive, non-zero in practice
}

fn ec_key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

/// Runs the openssl CLI with `input` on stdin and returns its stdout; panics
/// with its stderr when it fails.
fn openssl(args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "the openssl CLI (Debian package `openssl`) is needed for RSA keys and PKCS#1/SEC1",
        );
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh RSA-2048 key in PKCS#8 PEM (ring, under rcgen, cannot generate RSA).
fn rsa_pkcs8_pem() -> String {
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        b"",
    )
}

/// The same key in the "traditional" format: PKCS#1 for RSA, SEC1 for EC.
fn traditional_pem(pkcs8_pem: &str) -> String {
    openssl(&["pkey", "-traditional"], pkcs8_pem.as_bytes())
}

// ---------------------------------------------------------------------------
// Gateway configs
// ---------------------------------------------------------------------------

/// The TLS listener's YAML (list item), cert.pem / key.pem in the config's dir.
fn tls_listener(addr: &str, extra_tls: &str, extra: &str) -> String {
    let mut s = format!("- address: {addr}\n  tls:\n    cert: cert.pem\n    key: key.pem\n");
    if !extra_tls.is_empty() {
        s += &format!("    {extra_tls}\n");
    }
    if !extra.is_empty() {
        s += &format!("  {extra}\n");
    }
    s
}

/// One TLS listener on `{port}` (probed by the harness) serving `leaf`.
fn tls_config(upstream: &Upstream, leaf: &Leaf) -> GatewayConfig {
    with_pair(config(upstream), leaf)
        .section("listeners", &tls_listener("127.0.0.1:{port}", "", ""))
}

fn with_pair(cfg: GatewayConfig, leaf: &Leaf) -> GatewayConfig {
    cfg.file("cert.pem", &leaf.cert_pem)
        .file("key.pem", &leaf.key_pem)
}

// ---------------------------------------------------------------------------
// TLS client (HTTP/1.1, sync rustls)
// ---------------------------------------------------------------------------

const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12_13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12, &rustls::version::TLS13];

/// A client that trusts only `cas`, speaks only `versions` and offers `alpn`.
fn client(
    cas: &[CertificateDer<'static>],
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    client_with_provider(
        cas,
        versions,
        alpn,
        rustls::crypto::ring::default_provider(),
    )
}

fn client_with_provider(
    cas: &[CertificateDer<'static>],
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
    provider: rustls::crypto::CryptoProvider,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone()).unwrap();
    }
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A TLS 1.2-only client that, like OpenSSL's `-tls1_2`, lists only TLS 1.2
/// cipher suites (rustls alone would also list the TLS 1.3 ones).
fn tls12_suites_only_client(ca: &CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| s.version() == &rustls::version::TLS12);
    client_with_provider(std::slice::from_ref(ca), TLS12, &[], provider)
}

/// One TLS connection with the handshake done; HTTP/1.1 requests on it.
struct TlsConn {
    port: u16,
    reader: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsConn {
    /// Connects and completes the handshake, or returns why it failed.
    fn connect(port: u16, cfg: Arc<ClientConfig>) -> Result<TlsConn, String> {
        Self::connect_as(port, cfg, "localhost")
    }

    fn connect_as(port: u16, cfg: Arc<ClientConfig>, name: &str) -> Result<TlsConn, String> {
        let mut tcp =
            TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut conn = ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .map_err(|e| format!("handshake: {e}"))?;
        }
        Ok(TlsConn {
            port,
            reader: BufReader::new(StreamOwned::new(conn, tcp)),
        })
    }

    fn tls(&self) -> &ClientConnection {
        &self.reader.get_ref().conn
    }
    fn version(&self) -> Option<ProtocolVersion> {
        self.tls().protocol_version()
    }
    fn alpn(&self) -> Option<Vec<u8>> {
        self.tls().alpn_protocol().map(|p| p.to_vec())
    }
    /// DER of the certificate the server presented.
    fn peer_cert(&self) -> Vec<u8> {
        self.tls().peer_certificates().expect("peer certificate")[0].to_vec()
    }

    /// A keep-alive request (see `common::build_request`) and its response.
    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> common::Response {
        let bytes = common::build_request(self.port, method, path, headers, body, false);
        let _ = self.reader.get_mut().write_all(&bytes);
        let _ = self.reader.get_mut().flush();
        common::read_response(&mut self.reader, method.eq_ignore_ascii_case("HEAD"))
    }
}

/// One HTTP/1.1 request over a new TLS connection that trusts only `ca`.
fn https(port: u16, ca: &CertificateDer<'static>, path: &str) -> common::Response {
    let mut c = TlsConn::connect(
        port,
        client(std::slice::from_ref(ca), TLS12_13, &[b"http/1.1"]),
    )
    .unwrap_or_else(|e| panic!("TLS to {port}: {e}"));
    c.send("GET", path, &[], b"")
}

// ---------------------------------------------------------------------------
// HTTP/2 client (h2 over tokio-rustls)
// ---------------------------------------------------------------------------

struct H2Req {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// `:authority`, when not the gateway's address.
    authority: Option<String>,
}

fn h2req(method: &'static str, path: &str) -> H2Req {
    H2Req {
        method,
        path: path.to_string(),
        headers: vec![],
        body: vec![],
        authority: None,
    }
}

impl H2Req {
    fn authority(mut self, authority: &str) -> Self {
        self.authority = Some(authority.to_string());
        self
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
    fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }
}

#[derive(Debug)]
struct H2Resp {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl H2Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

struct H2Session {
    alpn: Option<Vec<u8>>,
    version: Option<ProtocolVersion>,
    responses: Vec<H2Resp>,
}

/// Sends `reqs` one after the other on one new HTTP/2 connection (ALPN `h2`
/// only, trusting only `ca`). Everything is bounded by a timeout, so a gateway
/// that hangs fails the test instead of hanging it.
fn h2(port: u16, ca: &CertificateDer<'static>, reqs: Vec<H2Req>) -> Result<H2Session, String> {
    let cfg = client(std::slice::from_ref(ca), TLS12_13, &[b"h2"]);
    let rt = client_runtime();
    rt.block_on(async move {
        tokio::time::timeout(IO_TIMEOUT * 2, h2_run(port, cfg, reqs))
            .await
            .map_err(|_| "HTTP/2 exchange timed out".to_string())?
    })
}

/// A runtime for one async client exchange on the test's thread.
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the test client")
}

/// A TLS connection to the gateway for `localhost`, as `cfg` allows.
async fn tls_connect(
    port: u16,
    cfg: Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|x| format!("connect: {x}"))?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|x| format!("TLS handshake: {x}"))
}

/// An HTTP/2 client connection over TLS, ready for a request, and the task
/// that drives it (abort it when done).
async fn h2_client(
    port: u16,
    cfg: Arc<ClientConfig>,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = tls_connect(port, cfg).await.expect("TLS");
    let (send, connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    (send.ready().await.expect("h2 ready"), driver)
}

async fn h2_run(port: u16, cfg: Arc<ClientConfig>, reqs: Vec<H2Req>) -> Result<H2Session, String> {
    let tls = tls_connect(port, cfg).await?;
    let (alpn, version) = {
        let c = tls.get_ref().1;
        (c.alpn_protocol().map(|p| p.to_vec()), c.protocol_version())
    };
    if alpn.as_deref() != Some(b"h2") {
        return Ok(H2Session {
            alpn,
            version,
            responses: vec![],
        });
    }
    let (mut send, connection) = h2::client::handshake(tls)
        .await
        .map_err(|x| format!("h2 handshake: {x}"))?;
    let driver = tokio::spawn(connection);
    let mut responses = Vec::new();
    for r in reqs {
        send = send.ready().await.map_err(|x| format!("h2 ready: {x}"))?;
        let mut b = http::Request::builder()
            .method(r.method)
            .uri(match &r.authority {
                Some(a) => format!("https://{a}{}", r.path),
                None => format!("https://127.0.0.1:{port}{}", r.path),
            });
        for (k, v) in &r.headers {
            b = b.header(*k, v.as_str());
        }
        let (resp, mut stream) = send
            .send_request(b.body(()).unwrap(), r.body.is_empty())
            .map_err(|x| format!("h2 send_request: {x}"))?;
        let body = Bytes::from(r.body);
        let body_task = (!body.is_empty()).then(|| {
            tokio::spawn(async move {
                send_body(&mut stream, body).await;
                stream // kept alive until the response is read
            })
        });
        let resp = resp.await.map_err(|x| format!("h2 response: {x}"))?;
        let (parts, mut recv) = resp.into_parts();
        let mut body = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|x| format!("h2 response body: {x}"))?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        if let Some(t) = body_task {
            t.abort();
        }
        responses.push(H2Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        });
    }
    drop(send);
    driver.abort();
    Ok(H2Session {
        alpn,
        version,
        responses,
    })
}

/// Sends `body` as flow control allows; stops quietly when the server resets
/// the stream (it may answer before reading the body).
async fn send_body(stream: &mut h2::SendStream<Bytes>, mut body: Bytes) {
    while !body.is_empty() {
        stream.reserve_capacity(body.len().min(1 << 16));
        let cap = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            _ => return,
        };
        if cap == 0 {
            continue;
        }
        let chunk = body.split_to(cap.min(body.len()));
        if stream.send_data(chunk, body.is_empty()).is_err() {
            return;
        }
    }
}

/// Just one request on its own HTTP/2 connection; asserts ALPN chose h2.
fn h2_one(port: u16, ca: &CertificateDer<'static>, req: H2Req) -> H2Resp {
    let s = h2(port, ca, vec![req]).unwrap_or_else(|e| panic!("HTTP/2 to {port}: {e}"));
    assert_eq!(s.alpn.as_deref(), Some(&b"h2"[..]), "ALPN must select h2");
    s.responses.into_iter().next().unwrap()
}

// ---------------------------------------------------------------------------
// openssl s_client, raw handshakes
// ---------------------------------------------------------------------------

/// `openssl s_client` against the port with stdin closed, killed after 10 s.
/// Returns (handshake completed, everything it printed).
fn s_client(port: u16, ca_file: &std::path::Path, args: &[&str]) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", "localhost", "-CAfile"])
        .arg(ca_file)
        .args(["-verify_return_error"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl CLI is needed for the s_client tests");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let done =
        out.status.success() && text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (done, text)
}

/// A TLS 1.1 ClientHello (no supported_versions extension), as an old client
/// sends it, written by hand so nothing on this machine can refuse to send it.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version: TLS 1.1
    body.extend([0x5a; 32]); // random
    body.push(0); // no session id
    let suites: [u16; 4] = [0xc013, 0xc014, 0x002f, 0x0035];
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]); // compression: null
                         // The extensions rustls wants before it looks at the version, so the
                         // refusal below is about the version and nothing else.
    let ext = |ty: u16, data: &[u8]| {
        let mut e = ty.to_be_bytes().to_vec();
        e.extend((data.len() as u16).to_be_bytes());
        e.extend(data);
        e
    };
    let list = |items: &[u16]| {
        let mut l = ((items.len() * 2) as u16).to_be_bytes().to_vec();
        items.iter().for_each(|i| l.extend(i.to_be_bytes()));
        l
    };
    let mut exts = ext(0x000d, &list(&[0x0403, 0x0804, 0x0401])); // signature_algorithms
    exts.extend(ext(0x000a, &list(&[0x001d, 0x0017]))); // supported_groups
    exts.extend(ext(0x000b, &[1, 0])); // ec_point_formats: uncompressed
    body.extend((exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut hs = vec![1]; // ClientHello
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((hs.len() as u16).to_be_bytes());
    record.extend(hs);
    record
}

/// What the server sends back to `hello` (until it closes or 5 s pass).
fn raw_handshake_reply(port: u16, hello: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(hello).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------

/// The contract's error: status, JSON `{"error","message","request_id"}` whose
/// request id is the response's X-Request-Id, and the security headers.
fn assert_h2_error(resp: &H2Resp, status: u16, code: &str) {
    assert_eq!(
        resp.status,
        status,
        "{resp:?} {:?}",
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let body = resp.json();
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let id = resp.header("x-request-id").expect("x-request-id");
    assert_eq!(body["request_id"], id);
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    assert_eq!(resp.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        resp.header("strict-transport-security"),
        Some("max-age=31536000")
    );
}

fn wait_port(port: u16) {
    common::eventually(common::READY_TIMEOUT, || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
}

fn alert_description(reply: &[u8]) -> Option<u8> {
    // Alert record: type 21, version (2), length 2, level, description.
    (reply.len() >= 7 && reply[0] == 0x15).then(|| reply[6])
}

// ---------------------------------------------------------------------------
// HTTPS basics
// ---------------------------------------------------------------------------

#[test]
fn https_request_verifies_against_the_test_ca_and_is_forwarded_as_https() {
    let ca = Ca::new("basic");
    let leaf = ca.leaf("gateway one");
    let upstream = Upstream::start();
    let plain = free_port();
    let gw = with_pair(config(&upstream), &leaf)
        .section(
            "listeners",
            &format!(
                "{}- address: 127.0.0.1:{plain}",
                tls_listener("127.0.0.1:{port}", "", "")
            ),
        )
        .start();
    wait_port(plain);

    let mut c = TlsConn::connect(gw.port(), client(&[ca.der()], TLS12_13, &[b"http/1.1"]))
        .expect("handshake with a client that trusts only the test CA");
    assert_eq!(c.peer_cert(), leaf.der);
    assert_eq!(c.alpn().as_deref(), Some(&b"http/1.1"[..]));
    let resp = c.send("GET", "/hello?x=1", &[("X-Forwarded-Proto", "http")], b"");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert_eq!(resp.header("x-frame-options"), Some("DENY"));
    let seen = upstream.wait_for_requests(1, IO_TIMEOUT);
    assert_eq!(seen[0].uri, "/hello?x=1");
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen[0].header("x-request-id"), resp.header("x-request-id"));

    // Keep-alive over TLS, and HSTS on our own errors too.
    let resp = c.send("GET", "/status/404", &[], b"");
    assert_eq!(resp.status, 404);
    assert_eq!(
        resp.header("strict-transport-security"),
        Some("max-age=31536000")
    );

    // The plain listener: no HSTS, forwarded as http.
    upstream.clear();
    let resp = common::http(plain, "GET", "/plain", &[], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("strict-transport-security"), None);
    assert_eq!(resp.header("x-frame-options"), Some("DENY"));
    let seen = upstream.wait_for_requests(1, IO_TIMEOUT);
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("http"));

    // A client that trusts some other CA refuses the gateway's certificate.
    let other = Ca::new("other");
    let err = TlsConn::connect(gw.port(), client(&[other.der()], TLS12_13, &[]))
        .err()
        .expect("a client trusting another CA must fail verification");
    assert!(
        err.contains("certificate") || err.contains("Unknown"),
        "{err}"
    );
    // And by IP address (the leaf names 127.0.0.1 too; no SNI is sent then).
    let mut c = TlsConn::connect_as(gw.port(), client(&[ca.der()], TLS12_13, &[]), "127.0.0.1")
        .expect("handshake by IP address");
    assert_eq!(c.send("GET", "/", &[], b"").status, 200);
}

#[test]
fn hsts_max_age_follows_the_config_and_zero_turns_it_off() {
    let ca = Ca::new("hsts");
    let leaf = ca.leaf("hsts");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf)
        .section("headers", "hsts: 600")
        .start();
    let resp = https(gw.port(), &ca.der(), "/");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("strict-transport-security"),
        Some("max-age=600")
    );
    drop(gw);

    let gw = tls_config(&upstream, &leaf)
        .section("headers", "hsts: 0")
        .start();
    let resp = https(gw.port(), &ca.der(), "/");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("strict-transport-security"), None);
}

#[test]
fn rsa_and_ecdsa_keys_in_pkcs8_pkcs1_and_sec1_all_serve() {
    let ca = Ca::new("formats");
    let ec = ec_key();
    let rsa_pkcs8 = rsa_pkcs8_pem();
    let rsa = rcgen::KeyPair::from_pem(&rsa_pkcs8).expect("rcgen reads the RSA PKCS#8 key");
    let ec_sec1 = traditional_pem(&ec.serialize_pem());
    let rsa_pkcs1 = traditional_pem(&rsa_pkcs8);
    assert!(ec_sec1.contains("BEGIN EC PRIVATE KEY"), "{ec_sec1}");
    assert!(rsa_pkcs1.contains("BEGIN RSA PRIVATE KEY"), "{rsa_pkcs1}");
    let leaves = [
        (
            "ecdsa-pkcs8",
            ca.leaf_with("ecdsa-pkcs8", &ec, ec.serialize_pem()),
        ),
        ("ecdsa-sec1", ca.leaf_with("ecdsa-sec1", &ec, ec_sec1)),
        (
            "rsa-pkcs8",
            ca.leaf_with("rsa-pkcs8", &rsa, rsa_pkcs8.clone()),
        ),
        ("rsa-pkcs1", ca.leaf_with("rsa-pkcs1", &rsa, rsa_pkcs1)),
    ];

    // One gateway, one TLS listener per format.
    let upstream = Upstream::start();
    let mut cfg = config(&upstream);
    let mut listeners = String::new();
    let mut ports = Vec::new();
    for (i, (name, leaf)) in leaves.iter().enumerate() {
        cfg = cfg
            .file(&format!("{name}.crt"), &leaf.cert_pem)
            .file(&format!("{name}.key"), &leaf.key_pem);
        let port = if i == 0 { cfg.port } else { free_port() };
        ports.push(port);
        listeners += &format!(
            "- address: 127.0.0.1:{port}\n  tls:\n    cert: {name}.crt\n    key: {name}.key\n"
        );
    }
    let cfg = cfg.section("listeners", &listeners);
    let check = common::colorgate(&["check", "-c", cfg.write().to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let gw = cfg.start();
    for ((name, leaf), port) in leaves.iter().zip(&ports) {
        wait_port(*port);
        for versions in [TLS12, TLS13] {
            let mut c = TlsConn::connect(*port, client(&[ca.der()], versions, &[]))
                .unwrap_or_else(|e| panic!("{name} over {versions:?}: {e}"));
            assert_eq!(&c.peer_cert(), &leaf.der, "{name}");
            assert_eq!(c.version(), Some(versions[0].version), "{name}");
            let resp = c.send("GET", "/", &[], b"");
            assert_eq!(resp.status, 200, "{name}: {resp:?}");
        }
    }
    drop(gw);
}

#[test]
fn a_pem_chain_with_the_intermediate_is_served_whole() {
    // cert.pem = leaf + CA: the server sends both; the client still verifies.
    let ca = Ca::new("chain");
    let mut leaf = ca.leaf("chained");
    leaf.cert_pem = format!("{}{}", leaf.cert_pem, ca.pem());
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf).start();
    let c = TlsConn::connect(gw.port(), client(&[ca.der()], TLS12_13, &[])).unwrap();
    let chain = c.tls().peer_certificates().unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].as_ref(), &leaf.der[..]);
    assert_eq!(chain[1].as_ref(), ca.der().as_ref());
}

#[test]
fn plaintext_and_garbage_on_the_tls_port_do_not_hurt_the_gateway() {
    let ca = Ca::new("garbage");
    let leaf = ca.leaf("garbage");
    let upstream = Upstream::start();
    let mut gw = tls_config(&upstream, &leaf).start();
    // Plain HTTP on the TLS port: refused (a TLS alert or a close), never proxied.
    let resp = gw.raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(resp.status, 0, "{resp:?}");
    // A truncated ClientHello, then the client goes away.
    let hello = tls11_client_hello();
    let mut c = TcpStream::connect(("127.0.0.1", gw.port())).unwrap();
    c.write_all(&hello[..hello.len() / 2]).unwrap();
    drop(c);
    // Random bytes.
    let _ = raw_handshake_reply(gw.port(), &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3]);
    assert!(upstream.requests().is_empty());
    assert!(gw.try_status().is_none(), "{}", gw.stderr());
    assert_eq!(https(gw.port(), &ca.der(), "/after").status, 200);
    assert!(!gw.stderr().contains("panicked"), "{}", gw.stderr());
}

// ---------------------------------------------------------------------------
// Protocol versions
// ---------------------------------------------------------------------------

#[test]
fn tls_1_1_is_refused_and_1_2_and_1_3_work_by_default() {
    let ca = Ca::new("versions");
    let leaf = ca.leaf("versions");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf)
        .file("ca.pem", ca.pem())
        .start();

    // A hand-written TLS 1.1 ClientHello: a fatal protocol_version alert, no ServerHello.
    let reply = raw_handshake_reply(gw.port(), &tls11_client_hello());
    assert_ne!(
        reply.first(),
        Some(&0x16),
        "the server must not answer TLS 1.1 with a handshake"
    );
    assert_eq!(
        alert_description(&reply),
        Some(70),
        "protocol_version alert, got {reply:?}"
    );

    // openssl s_client limited to TLS 1.1 (SECLEVEL=0 lets this OpenSSL offer it at all).
    let (ok, out) = s_client(
        gw.port(),
        &gw.dir().join("ca.pem"),
        &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
    );
    assert!(!ok, "TLS 1.1 handshake must fail:\n{out}");
    // Refused by the server with an alert (OpenSSL's TLS 1.1 hello carries no
    // signature_algorithms, so rustls answers handshake_failure before it
    // gets to the version), not by this OpenSSL declining to send it.
    assert!(out.contains("SSL alert number"), "{out}");
    assert!(!out.contains("no protocols available"), "{out}");

    for (versions, v) in [
        (TLS12, ProtocolVersion::TLSv1_2),
        (TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let mut c = TlsConn::connect(gw.port(), client(&[ca.der()], versions, &[])).unwrap();
        assert_eq!(c.version(), Some(v));
        assert_eq!(c.send("GET", "/", &[], b"").status, 200);
    }
    let (ok, out) = s_client(gw.port(), &gw.dir().join("ca.pem"), &["-tls1_2"]);
    assert!(ok, "openssl -tls1_2 must work with min_version 1.2:\n{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
}

#[test]
fn min_version_1_3_refuses_tls_1_2_clients_and_serves_1_3() {
    let ca = Ca::new("tls13");
    let leaf = ca.leaf("tls13");
    let upstream = Upstream::start();
    let gw = with_pair(config(&upstream), &leaf)
        .file("ca.pem", ca.pem())
        .section(
            "listeners",
            &tls_listener("127.0.0.1:{port}", "min_version: \"1.3\"", ""),
        )
        .start();

    let mut c = TlsConn::connect(gw.port(), client(&[ca.der()], TLS12_13, &[]))
        .expect("a TLS 1.3 client works");
    assert_eq!(c.version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(c.send("GET", "/", &[], b"").status, 200);
    let (ok, out) = s_client(gw.port(), &gw.dir().join("ca.pem"), &["-tls1_3"]);
    assert!(ok, "openssl -tls1_3 must work:\n{out}");

    // OpenSSL capped at 1.2 (it lists only TLS 1.2 suites).
    let (ok, out) = s_client(gw.port(), &gw.dir().join("ca.pem"), &["-tls1_2"]);
    assert!(
        !ok,
        "openssl -tls1_2 must be refused with min_version 1.3:\n{out}"
    );
    // The same from rustls.
    let r = TlsConn::connect(gw.port(), tls12_suites_only_client(&ca.der()));
    assert!(r.is_err(), "a TLS 1.2 client must be refused");

    assert!(upstream.requests().len() == 1, "{:?}", upstream.requests());
    // The gateway is fine afterwards.
    let mut c = TlsConn::connect(gw.port(), client(&[ca.der()], TLS13, &[])).unwrap();
    assert_eq!(c.send("GET", "/", &[], b"").status, 200);
}

#[test]
fn min_version_1_3_refuses_a_tls_1_2_client_that_also_lists_tls_1_3_suites() {
    let ca = Ca::new("tls13-bypass");
    let leaf = ca.leaf("tls13-bypass");
    let upstream = Upstream::start();
    let gw = with_pair(config(&upstream), &leaf)
        .section(
            "listeners",
            &tls_listener("127.0.0.1:{port}", "min_version: \"1.3\"", ""),
        )
        .start();

    // A TLS 1.2-only rustls client lists the TLS 1.3 cipher suites too (it
    // offers every suite its provider has): it must be refused all the same.
    let r = TlsConn::connect(gw.port(), client(&[ca.der()], TLS12, &[]));
    match r {
        Err(_) => {}
        Ok(mut c) => {
            // The server may only notice after the client's handshake is done:
            // then the connection must not serve a request.
            let resp = c.send("GET", "/", &[], b"");
            panic!(
                "TLS 1.2 handshake completed on a min_version 1.3 listener ({:?}); request answered {}",
                c.version(),
                resp.status
            );
        }
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    let mut c = TlsConn::connect(gw.port(), client(&[ca.der()], TLS13, &[])).unwrap();
    assert_eq!(c.send("GET", "/", &[], b"").status, 200);

    // A rotated certificate is held to the same rule.
    let mut gw = gw;
    let next = ca.leaf("tls13-bypass-rotated");
    std::fs::write(gw.dir().join("cert.pem"), &next.cert_pem).unwrap();
    std::fs::write(gw.dir().join("key.pem"), &next.key_pem).unwrap();
    gw.signal(libc::SIGHUP);
    common::eventually(Duration::from_secs(10), || {
        let c = TlsConn::connect(gw.port(), client(&[ca.der()], TLS13, &[])).ok()?;
        (c.peer_cert() == next.der).then_some(())
    });
    let r = TlsConn::connect(gw.port(), client(&[ca.der()], TLS12, &[]));
    if let Ok(mut c) = r {
        let resp = c.send("GET", "/", &[], b"");
        panic!("TLS 1.2 served after rotation: {}", resp.status);
    }
}

// ---------------------------------------------------------------------------
// HTTP/2
// ---------------------------------------------------------------------------

#[test]
fn alpn_selects_h2_and_the_upstream_gets_the_forwarded_headers() {
    let ca = Ca::new("h2");
    let leaf = ca.leaf("h2");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf).start();

    // ALPN: h2 when offered first, http/1.1 when that is all the client speaks.
    let c = TlsConn::connect(
        gw.port(),
        client(&[ca.der()], TLS12_13, &[b"h2", b"http/1.1"]),
    )
    .unwrap();
    assert_eq!(c.alpn().as_deref(), Some(&b"h2"[..]));
    drop(c);
    let c = TlsConn::connect(gw.port(), client(&[ca.der()], TLS12_13, &[b"http/1.1"])).unwrap();
    assert_eq!(c.alpn().as_deref(), Some(&b"http/1.1"[..]));
    drop(c);

    let s = h2(
        gw.port(),
        &ca.der(),
        vec![
            h2req("GET", "/hello?x=1")
                .header("x-forwarded-for", "6.6.6.6")
                .header("x-real-ip", "6.6.6.6")
                .header("x-request-id", "spoofed")
                .header("x-forwarded-proto", "http")
                .header("x-user-id", "mallory"),
            h2req("POST", "/upload")
                .header("content-type", "application/octet-stream")
                .body(vec![7u8; 100_000]),
        ],
    )
    .expect("HTTP/2 exchange");
    assert_eq!(s.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(s.version, Some(ProtocolVersion::TLSv1_3));
    let (get, post) = (&s.responses[0], &s.responses[1]);
    assert_eq!(get.status, 200, "{get:?}");
    assert_eq!(
        get.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert_eq!(get.header("x-frame-options"), Some("DENY"));
    assert_eq!(get.header("x-content-type-options"), Some("nosniff"));
    let id = get
        .header("x-request-id")
        .expect("x-request-id")
        .to_string();
    assert_ne!(id, "spoofed");

    let seen = upstream.wait_for_requests(2, IO_TIMEOUT);
    let r = &seen[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.uri, "/hello?x=1");
    assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));
    assert_eq!(r.header("x-forwarded-proto"), Some("https"));
    assert_eq!(r.header("x-user-id"), None);
    assert_eq!(
        r.header("host"),
        Some(format!("127.0.0.1:{}", gw.port()).as_str()),
        "the :authority is the upstream's Host: {:?}",
        r.headers
    );
    // The upstream echoes what it got: the same story from its side.
    let echoed = serde_json::from_slice::<Value>(&get.body).unwrap();
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");

    assert_eq!(post.status, 200, "{post:?}");
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].body_len(), 100_000);
    // Read whole before it went up (request buffering): sent with its
    // length, though an HTTP/2 client declares none.
    let framing = (
        seen[1].header("content-length"),
        seen[1].header("transfer-encoding"),
    );
    assert_eq!(framing, (Some("100000"), None));
    assert_eq!(seen[1].header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen[1].header("x-request-id"), post.header("x-request-id"),);
}

/// An HTTP/2 client that resets its stream while the upstream is still
/// working frees the in-flight slot then, as an HTTP/1.1 client that hangs
/// up does (tests/rate_limits.rs), not when the upstream answers (30 s).
/// With `work_stealing: false`, an HTTP/2 connection's streams run on the
/// thread that owns the connection (vendor patch 39), and the other thread
/// sleeps through them. Before, every other stream was sent to the other
/// thread, waking it once per stream and passing the stream's frames
/// between the two.
#[test]
fn http2_streams_run_on_the_thread_of_their_connection() {
    let ca = Ca::new("h2-thread");
    let leaf = ca.leaf("h2-thread");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf)
        .server("threads", "2")
        .server("work_stealing", "false")
        .start();
    let n = 200;
    let before = gw.listener_thread_wakeups(2);
    let s = h2(
        gw.port(),
        &ca.der(),
        (0..n)
            .map(|i| h2req("GET", &format!("/stream/{i}")))
            .collect(),
    )
    .unwrap();
    let after = gw.listener_thread_wakeups(2);

    assert_eq!(s.responses.len(), n as usize);
    assert!(s.responses.iter().all(|r| r.status == 200));
    let mut woke: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    woke.sort();
    // The connection's thread sleeps between most of the streams, which are
    // sent one after another (fewer when the machine is loaded); the other
    // thread took the connection's handover at most.
    assert!(woke[0] < n / 10, "wake-ups per thread: {woke:?}");
    assert!(woke[0] * 5 <= woke[1], "wake-ups per thread: {woke:?}");
}

#[test]
fn an_http2_stream_reset_frees_its_in_flight_slot() {
    let ca = Ca::new("h2 reset");
    let leaf = ca.leaf("h2 reset");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf)
        .section("concurrency", "upstream: 1")
        .section(
            "upstreams",
            "app:\n  servers: [\"{upstream}\"]\n  connect_timeout: 2s\n  read_timeout: 60s",
        )
        .start();
    let (port, der) = (gw.port(), ca.der());
    let cfg = client(std::slice::from_ref(&der), TLS12_13, &[b"h2"]);
    // The connection's driver runs on the worker thread while this one
    // blocks on the upstream and on HTTP/1.1 requests.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut send, driver) = h2_client(port, cfg).await;
        let req = http::Request::get(format!("https://127.0.0.1:{port}/slow/30000"))
            .body(())
            .unwrap();
        let (held, _) = send.send_request(req, true).expect("h2 send_request");

        upstream.wait_for_requests(1, IO_TIMEOUT);
        assert_eq!(
            https(port, &der, "/busy").status,
            503,
            "the slot is not taken"
        );

        drop(held); // RST_STREAM (CANCEL); the connection stays open
        common::eventually(Duration::from_secs(10), || {
            (https(port, &der, "/after").status == 200).then_some(())
        });
        assert!(!driver.is_finished(), "the HTTP/2 connection was closed");
        driver.abort();
    });
}

/// One request on a new HTTP/2 connection, then the connection left idle:
/// the status, and whether the gateway ended the connection within `wait`.
fn h2_then_idle(port: u16, ca: &CertificateDer<'static>, wait: Duration) -> (u16, bool) {
    let cfg = client(std::slice::from_ref(ca), TLS12_13, &[b"h2"]);
    let rt = client_runtime();
    rt.block_on(async move {
        let (mut send, driver) = h2_client(port, cfg).await;
        let req = http::Request::get(format!("https://127.0.0.1:{port}/idle"))
            .body(())
            .unwrap();
        let (resp, _) = send.send_request(req, true).expect("h2 send_request");
        let status = tokio::time::timeout(IO_TIMEOUT, resp)
            .await
            .expect("h2 response in time")
            .expect("h2 response")
            .status()
            .as_u16();
        // `send` stays: the client keeps the connection; only the gateway ends it.
        let ended = tokio::time::timeout(wait, driver).await.is_ok();
        drop(send);
        (status, ended)
    })
}

#[test]
fn an_idle_http2_connection_is_closed_at_the_keepalive_timeout() {
    // nginx's keepalive_timeout ends idle HTTP/2 connections as well; an
    // idle one kept for ever is a descriptor a client can pin.
    let ca = Ca::new("h2-idle");
    let leaf = ca.leaf("h2-idle");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf)
        .section("limits", "keepalive_timeout: 1s")
        .start();

    let (status, ended) = h2_then_idle(gw.port(), &ca.der(), Duration::from_secs(8));
    assert_eq!(status, 200);
    assert!(
        ended,
        "the idle HTTP/2 connection outlived keepalive_timeout by 7 s"
    );

    // Keep-alive off still serves the connection's first stream.
    let off = tls_config(&upstream, &leaf)
        .section("limits", "keepalive_timeout: 0s")
        .start();
    let (status, ended) = h2_then_idle(off.port(), &ca.der(), Duration::from_secs(8));
    assert_eq!(status, 200);
    assert!(ended);
}

#[test]
fn an_http2_client_that_never_sends_its_preface_is_closed_at_the_header_timeout() {
    // After TLS with ALPN h2 the client owes the HTTP/2 preface and
    // SETTINGS; one that sends nothing must not pin the connection.
    let ca = Ca::new("h2-mute");
    let leaf = ca.leaf("h2-mute");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf)
        .section("limits", "header_timeout: 1s")
        .start();

    let cfg = client(&[ca.der()], TLS12_13, &[b"h2"]);
    let port = gw.port();
    let closed = client_runtime().block_on(async move {
        use tokio::io::AsyncReadExt;
        let mut tls = tls_connect(port, cfg).await.expect("TLS");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut buf = [0u8; 1024];
        // Whatever the gateway sends (its SETTINGS, a GOAWAY) until it hangs up.
        tokio::time::timeout(Duration::from_secs(8), async {
            while tls.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await
        .is_ok()
    });
    assert!(
        closed,
        "a mute HTTP/2 client outlived a 1 s header timeout by 7 s"
    );
}

#[test]
fn a_client_that_never_finishes_its_tls_handshake_is_closed_at_the_header_timeout() {
    // nginx bounds the handshake by client_header_timeout; Pingora waited 60 s.
    // Both a silent client and one that stops inside its ClientHello.
    let ca = Ca::new("tls-mute");
    let leaf = ca.leaf("tls-mute");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf)
        .section("limits", "header_timeout: 1s")
        .start();

    for (what, sent) in [
        ("nothing", &b""[..]),
        (
            "half a ClientHello",
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        ),
    ] {
        let mut conn = TcpStream::connect(("127.0.0.1", gw.port())).expect("connect");
        conn.write_all(sent).expect("send");
        conn.set_read_timeout(Some(Duration::from_secs(8)))
            .expect("read timeout");
        let mut buf = [0u8; 512];
        let closed = loop {
            match conn.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        assert!(
            closed,
            "a client that sent {what} outlived a 1 s header timeout by 7 s"
        );
    }
}

/// A relay for one connection to `port` that keeps every byte the gateway
/// sent, to read the TLS records themselves. Returns its port and the bytes.
fn recording_relay(port: u16) -> (u16, Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("relay bind");
    let relay_port = listener.local_addr().unwrap().port();
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = sent.clone();
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let gateway = TcpStream::connect(("127.0.0.1", port)).expect("relay connect");
        let (mut to_gw, mut from_client) =
            (gateway.try_clone().unwrap(), client.try_clone().unwrap());
        std::thread::spawn(move || std::io::copy(&mut from_client, &mut to_gw));
        let (mut from_gw, mut to_client) = (gateway, client);
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n @ 1..) = from_gw.read(&mut buf) {
            // Kept before it is passed on: what the client read is here.
            log.lock().unwrap().extend_from_slice(&buf[..n]);
            if to_client.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    (relay_port, sent)
}

/// The lengths of the TLS records in `bytes`, which must hold whole records.
fn tls_records(bytes: &[u8]) -> Vec<usize> {
    let mut lens = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 5 {
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        assert!(rest.len() >= 5 + len, "a record cut short: {bytes:?}");
        lens.push(len);
        rest = &rest[5 + len..];
    }
    assert!(rest.is_empty(), "bytes after the last record: {rest:?}");
    lens
}

#[test]
fn uploads_and_pipelined_requests_over_tls_arrive_whole_on_one_connection() {
    // A TLS listener reads ahead into a buffer only during a burst, and holds
    // none while the connection idles (vendor/README.md, patch 49). Bodies
    // many times that buffer, small requests between them, and two requests
    // in one write must all reach the upstream byte-exact and in order.
    let ca = Ca::new("bulk");
    let leaf = ca.leaf("gateway bulk");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf)
        .section("limits", "max_body_size: 10M")
        .start();
    let image = common::upload_body(3 * 1024 * 1024 + 7);
    let mut c = TlsConn::connect(gw.port(), client(&[ca.der()], TLS12_13, &[b"http/1.1"]))
        .expect("handshake");

    let sends: [(&str, &str, &[u8]); 3] = [
        ("POST", "/bulk/1", &image),
        ("GET", "/bulk/2", b""),
        ("POST", "/bulk/3", &image[..100_000]),
    ];
    for (method, path, body) in sends {
        let resp = c.send(method, path, &[], body);
        assert_eq!(resp.status, 200, "{path}: {resp:?}");
        assert_eq!(resp.json()["body_len"], body.len(), "{path}");
    }
    // Two requests in one write: the second arrives with the first's bytes.
    let mut both = common::build_request(gw.port(), "GET", "/bulk/4", &[], b"", false);
    both.extend(common::build_request(
        gw.port(),
        "POST",
        "/bulk/5",
        &[],
        &image[..70_000],
        false,
    ));
    c.reader.get_mut().write_all(&both).unwrap();
    c.reader.get_mut().flush().unwrap();
    for (path, len) in [("/bulk/4", 0), ("/bulk/5", 70_000)] {
        let resp = common::read_response(&mut c.reader, false);
        assert_eq!(resp.status, 200, "{path}: {resp:?}");
        assert_eq!(resp.json()["uri"], path);
        assert_eq!(resp.json()["body_len"], len, "{path}");
    }

    let reqs = upstream.wait_for_requests(5, IO_TIMEOUT);
    let uris: Vec<_> = reqs.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(
        uris,
        ["/bulk/1", "/bulk/2", "/bulk/3", "/bulk/4", "/bulk/5"]
    );
    assert!(reqs[0].body == image, "the upload was changed on the way");
    assert!(reqs[2].body == image[..100_000]);
    assert!(reqs[4].body == image[..70_000]);
}

#[test]
fn a_small_response_goes_out_as_one_tls_record() {
    // nginx seals a response's header and body together; a record per write
    // costs a seal (an AEAD pass, a header, a tag) each.
    let ca = Ca::new("records");
    let leaf = ca.leaf("records");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf).start();
    let (relay, sent) = recording_relay(gw.port());

    let mut c = TlsConn::connect(relay, client(&[ca.der()], TLS12_13, &[b"http/1.1"]))
        .expect("TLS through the relay");
    // The first answer follows the session tickets; count the second's alone.
    assert_eq!(c.send("GET", "/first", &[], b"").status, 200);
    let mark = sent.lock().unwrap().len();
    let resp = c.send("GET", "/second", &[], b"");
    assert_eq!(resp.status, 200);
    assert!(!resp.body.is_empty());
    let records = tls_records(&sent.lock().unwrap()[mark..]);
    assert_eq!(records.len(), 1, "record lengths {records:?}");
}

/// Sends `req` over HTTP/2 with its body held back, reads the whole answer,
/// then sends the body (`body_len` bytes: curl does, when the answer comes
/// first) and a second request, which must be served. Returns the answer's
/// status and body, and how the first stream was reset, if it was.
fn answer_then_body(
    port: u16,
    cfg: Arc<ClientConfig>,
    req: http::Request<()>,
    body_len: usize,
) -> (u16, Vec<u8>, Option<String>) {
    client_runtime().block_on(async move {
        let (mut send, driver) = h2_client(port, cfg).await;
        let (resp, mut stream) = send.send_request(req, false).expect("send_request");
        let resp = tokio::time::timeout(IO_TIMEOUT, resp)
            .await
            .expect("an answer before the body")
            .expect("h2 response");
        let status = resp.status().as_u16();
        let mut recv = resp.into_body();
        let mut answer = Vec::new();
        while let Some(chunk) = recv.data().await {
            answer.extend_from_slice(&chunk.expect("h2 response body"));
        }
        send_body(&mut stream, Bytes::from(vec![b'x'; body_len])).await;
        // A second request on the connection: its answer comes after any
        // reset of the first stream, so the first's state is known then.
        let mut send = send.ready().await.expect("h2 ready");
        let req = http::Request::builder()
            .uri(format!("https://127.0.0.1:{port}/after"))
            .body(())
            .unwrap();
        let (resp, _) = send.send_request(req, true).expect("second request");
        let second = resp.await.expect("second response").status().as_u16();
        assert_eq!(second, 200);
        let reset = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match stream.poll_reset(cx) {
                std::task::Poll::Ready(r) => Some(format!("{r:?}")),
                std::task::Poll::Pending => None,
            })
        })
        .await;
        driver.abort();
        (status, answer, reset)
    })
}

#[test]
fn an_http2_refusal_before_the_body_still_takes_the_body_and_ends_cleanly() {
    // A client whose upload follows the answer (curl does, when the answer
    // comes first) must be able to finish it: the gateway reads and discards
    // the rest, as nginx does, instead of resetting the stream, which left
    // such clients waiting for ever.
    let ca = Ca::new("h2-early");
    let leaf = ca.leaf("h2-early");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf)
        .section("limits", "max_body_size: 1k")
        .start();
    let cfg = client(&[ca.der()], TLS12_13, &[b"h2"]);
    let port = gw.port();
    // Over max_body_size by its Content-Length: 413 before anything reads the body.
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("https://127.0.0.1:{port}/upload"))
        .header("content-length", "20000")
        .body(())
        .unwrap();
    let (status, _, reset) = answer_then_body(port, cfg, req, 20_000);
    assert_eq!(status, 413);
    assert_eq!(reset, None, "the stream was reset after the answer");
    let reached: Vec<String> = upstream.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        reached,
        ["/after"],
        "the refused upload reached the upstream"
    );
}

#[test]
fn an_upstream_that_refuses_an_http2_upload_before_reading_it_is_answered_at_once() {
    // As over HTTP/1 (tests/proxy.rs): the upstream answers 413 before
    // reading a 4 MiB upload, then hangs up or drains it. The answer must
    // reach the client well before body_timeout (the exchange is bounded
    // by the client's own timeout), and the connection serves the next
    // stream. Read whole first (the default) or streamed.
    let ca = Ca::new("h2-upstream-early");
    let leaf = ca.leaf("h2-upstream-early");
    let upstream = Upstream::start();
    let image = common::upload_body(4 * 1024 * 1024);
    for buffering in [true, false] {
        let limits =
            format!("max_body_size: 10M\nbody_timeout: 60s\nrequest_buffering: {buffering}");
        let gw = tls_config(&upstream, &leaf)
            .section("limits", &limits)
            .start();
        for path in ["/answers-early", "/answers-early-drain"] {
            let s = h2(
                gw.port(),
                &ca.der(),
                vec![
                    h2req("POST", path).body(image.clone()),
                    h2req("GET", "/after"),
                ],
            )
            .unwrap_or_else(|e| panic!("{path}, buffering {buffering}: {e}"));
            assert_eq!(s.responses[0].status, 413, "{path}, buffering {buffering}");
            assert_eq!(s.responses[0].body, br#"{"early":"yes"}"#, "{path}");
            assert_eq!(s.responses[1].status, 200, "{path}, then");
        }
    }
}

#[test]
fn an_http2_upload_that_stalls_is_cut_off_at_the_body_timeout() {
    // nginx's client_body_timeout, as on HTTP/1: Pingora timed no HTTP/2
    // body read, so a stalled upload held its stream (and any in-flight
    // slot it took) for as long as the connection stayed open.
    let ca = Ca::new("h2-stall");
    let leaf = ca.leaf("h2-stall");
    let upstream = Upstream::start();
    // Read whole first (the default) or streamed.
    for buffering in [true, false] {
        let limits = format!("body_timeout: 1s\nrequest_buffering: {buffering}");
        let gw = tls_config(&upstream, &leaf)
            .section("limits", &limits)
            // The upstream waits for the body longer than the test does.
            .section(
                "upstreams",
                "app:\n  servers: [\"{upstream}\"]\n  connect_timeout: 2s\n  read_timeout: 60s",
            )
            .start();
        let cfg = client(&[ca.der()], TLS12_13, &[b"h2"]);
        let port = gw.port();
        let outcome = client_runtime().block_on(async move {
            let (mut send, driver) = h2_client(port, cfg).await;
            let req = http::Request::builder()
                .method("POST")
                .uri(format!("https://127.0.0.1:{port}/stalled"))
                .header("content-length", "1000")
                .body(())
                .unwrap();
            let (resp, mut stream) = send.send_request(req, false).expect("send_request");
            stream
                .send_data(Bytes::from_static(b"the first 30 bytes, then none"), false)
                .expect("first piece");
            // Whatever comes (a reset, an error answer) must come well before 8 s.
            let outcome = tokio::time::timeout(Duration::from_secs(8), resp).await;
            driver.abort();
            drop(stream);
            outcome.map(|r| r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()))
        });
        assert!(
            outcome.is_ok(),
            "a stalled HTTP/2 upload outlived a 1 s body timeout by 7 s (buffering {buffering})"
        );
    }
}

#[test]
fn http2_false_offers_only_http_1_1() {
    let ca = Ca::new("no-h2");
    let leaf = ca.leaf("no-h2");
    let upstream = Upstream::start();
    let gw = with_pair(config(&upstream), &leaf)
        .section(
            "listeners",
            &tls_listener("127.0.0.1:{port}", "", "http2: false"),
        )
        .start();
    let mut c = TlsConn::connect(
        gw.port(),
        client(&[ca.der()], TLS12_13, &[b"h2", b"http/1.1"]),
    )
    .unwrap();
    assert_ne!(c.alpn().as_deref(), Some(&b"h2"[..]));
    assert_eq!(c.send("GET", "/", &[], b"").status, 200);
}

#[test]
fn the_upstreams_server_field_is_hidden_over_http2_too() {
    // HTTP/2 answers take the configured fields into their header map (no
    // prepared block), so the hiding is done there as well.
    let ca = Ca::new("h2-hide");
    let leaf = ca.leaf("h2-hide");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf).start();

    let resp = h2_one(gw.port(), &ca.der(), h2req("GET", "/says-who"));

    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("server"), None, "{:?}", resp.headers);
    assert_eq!(resp.header("x-accel-redirect"), None, "{:?}", resp.headers);
    assert_eq!(resp.header("x-powered-by"), Some("Flask"));
    assert_eq!(resp.header("x-frame-options"), Some("DENY"));
}

#[test]
fn an_http2_authority_nginx_would_refuse_is_refused() {
    // The same rule as for HTTP/1's Host (see tests/proxy.rs), and the same
    // answer: the contract's JSON 400 (Pingora's HTTP/2 layer answered a
    // bare 400 itself, before the gateway saw the request).
    let ca = Ca::new("h2-authority");
    let leaf = ca.leaf("h2-authority");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf).start();

    let s = h2(
        gw.port(),
        &ca.der(),
        vec![
            h2req("GET", "/x").authority("a..b"),
            h2req("GET", "/y").authority("a.b"),
        ],
    )
    .unwrap();

    assert_h2_error(&s.responses[0], 400, "bad_request");
    assert_eq!(s.responses[1].status, 200, "the connection still serves");
    let seen = upstream.wait_for_requests(1, IO_TIMEOUT);
    assert_eq!(
        seen.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(),
        ["/y"]
    );
}

#[test]
fn an_http2_upload_with_an_authority_nginx_would_refuse_gets_its_answer_and_ends_cleanly() {
    // The JSON 400 comes before the body; the client (curl does so) sends
    // its body after it. Dropped at once, the stream was reset while the
    // client was still sending, and curl lost the answer (exit 92).
    let ca = Ca::new("h2-authority-body");
    let leaf = ca.leaf("h2-authority-body");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf).start();
    let cfg = client(&[ca.der()], TLS12_13, &[b"h2"]);
    let port = gw.port();
    let req = http::Request::builder()
        .method("POST")
        .uri("https://a..b/upload")
        .header("content-length", "20000")
        .body(())
        .unwrap();

    let (status, answer, reset) = answer_then_body(port, cfg, req, 20_000);

    assert_eq!(status, 400);
    let body: serde_json::Value = serde_json::from_slice(&answer).expect("a JSON answer");
    assert_eq!(body["error"], "bad_request", "{body}");
    assert_eq!(reset, None, "the stream was reset after the answer");
    let reached: Vec<String> = upstream.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        reached,
        ["/after"],
        "the malformed upload reached the upstream"
    );
}

#[test]
fn refusals_over_http2_are_the_contract_json_errors() {
    let ca = Ca::new("h2-errors");
    let leaf = ca.leaf("h2-errors");
    let upstream = Upstream::start();
    let gw = tls_config(&upstream, &leaf)
        .file("jwt.secret", "a-test-secret-of-enough-length-0123456789")
        .section(
            "auth",
            "jwt:\n  algorithms: [HS256]\n  secret_file: jwt.secret",
        )
        .section(
            "rate_limits",
            "slow: { rate: 1r/m, burst: 1, nodelay: true, key: client_ip }",
        )
        .section("limits", "max_body_size: 1k")
        .routes(
            "- path: /private\n  upstream: app\n  auth: jwt\n\
             - path: /limited\n  upstream: app\n  auth: none\n  rate_limits: [slow]\n\
             - path: /\n  upstream: app\n  auth: none",
        )
        .start();
    let port = gw.port();

    // 401, with and without a token, on one HTTP/2 connection.
    let s = h2(
        port,
        &ca.der(),
        vec![
            h2req("GET", "/private"),
            h2req("GET", "/private").header("authorization", "Bearer not.a.token"),
            h2req("GET", "/open"),
        ],
    )
    .unwrap();
    assert_eq!(s.alpn.as_deref(), Some(&b"h2"[..]));
    assert_h2_error(&s.responses[0], 401, "unauthorized");
    assert_eq!(
        s.responses[0].header("www-authenticate"),
        Some("Bearer realm=\"colorgate\"")
    );
    assert_h2_error(&s.responses[1], 401, "unauthorized");
    assert_eq!(
        s.responses[1].header("www-authenticate"),
        Some("Bearer realm=\"colorgate\", error=\"invalid_token\"")
    );
    assert_eq!(s.responses[2].status, 200, "the connection still serves");

    // 429 with Retry-After: burst 1 lets two through, the third is refused.
    let s = h2(
        port,
        &ca.der(),
        (0..3).map(|_| h2req("GET", "/limited")).collect(),
    )
    .unwrap();
    assert_eq!(s.responses[0].status, 200);
    assert_eq!(s.responses[1].status, 200);
    assert_h2_error(&s.responses[2], 429, "rate_limited");
    let retry: u64 = s.responses[2]
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");

    // 413 from Content-Length, before the body is read: a 2 MiB upload on
    // a 1k limit. The client gets the answer although it is still sending.
    upstream.clear();
    let big = vec![b'x'; 2 << 20];
    let resp = h2_one(
        port,
        &ca.der(),
        h2req("POST", "/upload")
            .header("content-length", &big.len().to_string())
            .body(big.clone()),
    );
    assert_h2_error(&resp, 413, "payload_too_large");
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    // Exactly the limit passes.
    let resp = h2_one(
        port,
        &ca.der(),
        h2req("POST", "/upload").body(vec![b'y'; 1024]),
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        upstream.wait_for_requests(1, IO_TIMEOUT)[0].body_len(),
        1024
    );

    // A streamed body (no Content-Length) passing the limit: 413 as well.
    upstream.clear();
    let resp = h2_one(port, &ca.der(), h2req("POST", "/stream").body(big));
    assert_h2_error(&resp, 413, "payload_too_large");

    // The access log tells why: the Content-Length refusal is `body_size`.
    common::eventually(IO_TIMEOUT, || {
        gw.access_log_lines()
            .iter()
            .any(|l| l["status"] == 413 && l["deny"] == "body_size" && l["uri"] == "/upload")
            .then_some(())
    });

    // The framing and routing refusals answer in JSON over HTTP/2 too.
    let s = h2(
        port,
        &ca.der(),
        vec![
            h2req("GET", "/a/../../etc"),
            h2req("GET", "/x").header("x-big", &"a".repeat(20_000)),
        ],
    )
    .unwrap();
    assert_h2_error(&s.responses[0], 400, "bad_request");
    assert_h2_error(&s.responses[1], 431, "headers_too_large");

    // The gateway neither crashed nor hung: a new connection works.
    let mut gw = gw;
    assert!(
        gw.try_status().is_none(),
        "gateway exited:\n{}",
        gw.stderr()
    );
    let resp = h2_one(port, &ca.der(), h2req("GET", "/after"));
    assert_eq!(resp.status, 200);
    assert!(!gw.stderr().contains("panicked"), "{}", gw.stderr());
}

// ---------------------------------------------------------------------------
// The redirect listener
// ---------------------------------------------------------------------------

fn redirect_config(upstream: &Upstream, leaf: &Leaf, tls_port: u16) -> GatewayConfig {
    with_pair(config(upstream), leaf).section(
        "listeners",
        &format!(
            "- address: 127.0.0.1:{{port}}\n  redirect_https: true\n{}",
            tls_listener(&format!("127.0.0.1:{tls_port}"), "", "")
        ),
    )
}

fn assert_redirect(port: u16, host: &str, uri: &str, location: &str) {
    for method in ["GET", "POST"] {
        let body: &[u8] = if method == "POST" { b"{\"a\":1}" } else { b"" };
        let resp = common::http(port, method, uri, &[("Host", host)], body);
        assert_eq!(resp.status, 301, "{method} {host} {uri}: {resp:?}");
        assert_eq!(resp.header("location"), Some(location), "{host} {uri}");
        assert_eq!(resp.header("x-frame-options"), Some("DENY"));
        assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
        assert!(resp.header("x-request-id").is_some());
        assert_eq!(
            resp.header("strict-transport-security"),
            None,
            "plain listener"
        );
    }
}

#[test]
fn the_redirect_listener_sends_every_request_to_the_tls_port() {
    let ca = Ca::new("redirect");
    let leaf = ca.leaf("redirect");
    let upstream = Upstream::start();
    let tls_port = free_port();
    let gw = redirect_config(&upstream, &leaf, tls_port).start();
    let p = gw.port();

    assert_redirect(
        p,
        "example.com",
        "/a?b=1",
        &format!("https://example.com:{tls_port}/a?b=1"),
    );
    assert_redirect(
        p,
        "example.com:8080",
        "/x/y",
        &format!("https://example.com:{tls_port}/x/y"),
    );
    assert_redirect(
        p,
        "[::1]:80",
        "/v6?q",
        &format!("https://[::1]:{tls_port}/v6?q"),
    );
    assert_redirect(p, "[::1]", "/", &format!("https://[::1]:{tls_port}/"));
    assert_redirect(
        p,
        "api.example.com",
        "/api/colorize?x=%20y&z",
        &format!("https://api.example.com:{tls_port}/api/colorize?x=%20y&z"),
    );
    // Nothing reached the upstream.
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());

    // The TLS listener next to it serves.
    wait_port(tls_port);
    assert_eq!(https(tls_port, &ca.der(), "/").status, 200);
}

#[test]
fn the_redirect_listener_refuses_a_host_that_is_not_a_host() {
    let ca = Ca::new("redirect-host");
    let leaf = ca.leaf("redirect-host");
    let upstream = Upstream::start();
    let tls_port = free_port();
    let gw = redirect_config(&upstream, &leaf, tls_port).start();
    // nginx answers these 400 ("client sent invalid host header").
    for host in [
        "evil.com/x?",
        "exa mple.com",
        "[::1",
        "[::1]x",
        "example.com:80:80",
    ] {
        let resp = common::http(gw.port(), "GET", "/a", &[("Host", host)], b"");
        assert_eq!(
            resp.status,
            400,
            "Host {host:?} -> {} Location {:?}",
            resp.status,
            resp.header("location")
        );
        assert_eq!(resp.json()["error"], "bad_request");
    }
    // HTTP/1.1 requires Host (CONTRACT §3: a missing Host is a 400).
    let resp = gw.raw(b"GET /a HTTP/1.1\r\n\r\n");
    assert_eq!(resp.status, 400, "{:?}", resp.header("location"));
    assert!(upstream.requests().is_empty());
}

#[test]
fn with_the_tls_listener_on_443_the_redirect_omits_the_port() {
    // 443 needs root and a free port; skip when this machine cannot give it.
    match std::net::TcpListener::bind("127.0.0.1:443") {
        Ok(l) => drop(l),
        Err(e) => {
            eprintln!("skipped: cannot bind 127.0.0.1:443 ({e})");
            return;
        }
    }
    let ca = Ca::new("redirect443");
    let leaf = ca.leaf("redirect443");
    let upstream = Upstream::start();
    let gw = redirect_config(&upstream, &leaf, 443).start();
    assert_redirect(
        gw.port(),
        "example.com",
        "/a?b=1",
        "https://example.com/a?b=1",
    );
    assert_redirect(gw.port(), "example.com:8080", "/", "https://example.com/");
    assert_redirect(gw.port(), "[::1]:80", "/x", "https://[::1]/x");
    assert!(upstream.requests().is_empty());
}

// ---------------------------------------------------------------------------
// `colorgate check` and start-up with a bad pair
// ---------------------------------------------------------------------------

fn check_fails(cfg: &GatewayConfig, key_path: &str, what: &str) {
    let out = common::colorgate(&["check", "-c", cfg.write().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    assert!(
        stderr.contains(key_path),
        "{what}: no {key_path} in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("configuration OK"),
        "{what}"
    );
}

#[test]
fn a_missing_or_mismatched_pair_is_a_check_error_naming_the_listener() {
    let ca = Ca::new("check");
    let a = ca.leaf("a");
    let b = ca.leaf("b");
    let upstream = Upstream::start();
    // The TLS listener is the second one: the error must say listeners[1].
    let base = || {
        config(&upstream).section(
            "listeners",
            &format!(
                "- address: 127.0.0.1:{{port}}\n{}",
                tls_listener(&format!("127.0.0.1:{}", free_port()), "", "")
            ),
        )
    };

    let ok = base()
        .file("cert.pem", &a.cert_pem)
        .file("key.pem", &a.key_pem);
    let out = common::colorgate(&["check", "-c", ok.write().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));

    check_fails(
        &base().file("key.pem", &a.key_pem),
        "listeners[1].tls",
        "missing cert",
    );
    check_fails(
        &base().file("cert.pem", &a.cert_pem),
        "listeners[1].tls",
        "missing key",
    );
    check_fails(
        &base()
            .file("cert.pem", &a.cert_pem)
            .file("key.pem", &b.key_pem),
        "listeners[1].tls",
        "cert and key of different pairs",
    );
    check_fails(
        &base()
            .file("cert.pem", &a.cert_pem)
            .file("key.pem", &a.cert_pem),
        "listeners[1].tls",
        "no key in key.pem",
    );
    check_fails(
        &base()
            .file("cert.pem", &a.key_pem)
            .file("key.pem", &a.key_pem),
        "listeners[1].tls",
        "no certificate in cert.pem",
    );
    check_fails(
        &base()
            .file(
                "cert.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            )
            .file("key.pem", &a.key_pem),
        "listeners[1].tls",
        "a certificate that is not one",
    );
    check_fails(
        &base().file("cert.pem", "").file("key.pem", ""),
        "listeners[1].tls",
        "empty files",
    );
    // min_version below 1.2 is a config error with its own path.
    let low = config(&upstream)
        .file("cert.pem", &a.cert_pem)
        .file("key.pem", &a.key_pem)
        .section(
            "listeners",
            &tls_listener("127.0.0.1:{port}", "min_version: \"1.1\"", ""),
        );
    check_fails(&low, "listeners[0].tls.min_version", "min_version 1.1");

    // Listener shapes that cannot work.
    let plain_h2 =
        config(&upstream).section("listeners", "- address: 127.0.0.1:{port}\n  http2: true");
    check_fails(&plain_h2, "listeners[0].http2", "http2 without tls");
    let tls_redirect = config(&upstream)
        .file("cert.pem", &a.cert_pem)
        .file("key.pem", &a.key_pem)
        .section(
            "listeners",
            &tls_listener("127.0.0.1:{port}", "", "redirect_https: true"),
        );
    check_fails(
        &tls_redirect,
        "listeners[0].redirect_https",
        "a TLS listener redirecting",
    );
    let nowhere = config(&upstream).section(
        "listeners",
        "- address: 127.0.0.1:{port}\n  redirect_https: true",
    );
    check_fails(&nowhere, "listeners", "redirect without a TLS listener");

    // `run` refuses the same file the same way: exit 1, no panic.
    let bad = config(&upstream)
        .file("cert.pem", &a.cert_pem)
        .file("key.pem", &b.key_pem)
        .section("listeners", &tls_listener("127.0.0.1:{port}", "", ""));
    let mut gw = common::Gateway::spawn(&bad, &[]);
    let status = gw
        .wait_exit(Duration::from_secs(20))
        .expect("run must exit");
    assert_eq!(status.code(), Some(1), "{}", gw.stderr());
    assert!(gw.stderr().contains("listeners[0].tls"), "{}", gw.stderr());
    assert!(!gw.stderr().contains("panicked"), "{}", gw.stderr());
}

// ---------------------------------------------------------------------------
// Certificate rotation on SIGHUP
// ---------------------------------------------------------------------------

#[test]
fn sighup_rotates_the_certificate_for_new_connections_and_keeps_open_ones() {
    let ca1 = Ca::new("rotation-1");
    let ca2 = Ca::new("rotation-2");
    let old = ca1.leaf("old");
    let same_ca = ca1.leaf("same-ca-new-serial");
    let new = ca2.leaf("new");
    let upstream = Upstream::start();
    let mut gw = tls_config(&upstream, &old).start();
    let port = gw.port();
    let both = client(&[ca1.der(), ca2.der()], TLS12_13, &[b"http/1.1"]);

    let mut open = TlsConn::connect(port, both.clone()).unwrap();
    assert_eq!(open.peer_cert(), old.der);
    assert_eq!(open.send("GET", "/before", &[], b"").status, 200);

    let rotate = |gw: &mut common::Gateway, leaf: &Leaf| {
        std::fs::write(gw.dir().join("cert.pem"), &leaf.cert_pem).unwrap();
        std::fs::write(gw.dir().join("key.pem"), &leaf.key_pem).unwrap();
        gw.signal(libc::SIGHUP);
    };
    let new_conn_cert = || TlsConn::connect(port, both.clone()).map(|c| c.peer_cert());

    // Same CA, new serial and CN.
    rotate(&mut gw, &same_ca);
    common::eventually(Duration::from_secs(10), || {
        (new_conn_cert().ok()? == same_ca.der).then_some(())
    });
    // A different CA: a client that trusts only the old CA now refuses.
    rotate(&mut gw, &new);
    common::eventually(Duration::from_secs(10), || {
        (new_conn_cert().ok()? == new.der).then_some(())
    });
    assert!(TlsConn::connect(port, client(&[ca1.der()], TLS12_13, &[])).is_err());
    let c = h2(port, &ca2.der(), vec![h2req("GET", "/h2-after-rotation")]).unwrap();
    assert_eq!(c.responses[0].status, 200);

    // The connection opened before keeps its certificate and keeps working.
    let resp = open.send("GET", "/after", &[], b"");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(open.peer_cert(), old.der);

    // A broken certificate: refused, logged, the current one keeps serving.
    std::fs::write(
        gw.dir().join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    gw.signal(libc::SIGHUP);
    let stderr = common::eventually(Duration::from_secs(10), || {
        let s = gw.stderr();
        s.contains("listeners[0].tls").then_some(s)
    });
    assert!(stderr.contains("reload"), "{stderr}");
    assert_eq!(new_conn_cert().unwrap(), new.der);
    // A mismatched pair (the old cert with the new key): the same.
    std::fs::write(gw.dir().join("cert.pem"), &old.cert_pem).unwrap();
    let errors_before = gw.stderr().matches("listeners[0].tls").count();
    gw.signal(libc::SIGHUP);
    common::eventually(Duration::from_secs(10), || {
        (gw.stderr().matches("listeners[0].tls").count() > errors_before).then_some(())
    });
    assert_eq!(new_conn_cert().unwrap(), new.der);
    assert_eq!(open.send("GET", "/still", &[], b"").status, 200);
    assert!(gw.try_status().is_none(), "{}", gw.stderr());
    assert!(!gw.stderr().contains("panicked"), "{}", gw.stderr());
}
