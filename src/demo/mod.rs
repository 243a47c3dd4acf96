//! `colorgate demo` and the stand-in colorizer it runs. The stand-in speaks
//! the DeOldify API (CONTRACT §6) so a newcomer can see a real image go
//! through the gateway in their first minute, and the tests have a real
//! upstream. None of this is on the gateway's request path.

pub mod colorizer;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// Uploads bigger than this are refused by the stand-in itself.
const MAX_UPLOAD: usize = 64 << 20;

/// The stand-in colorizer as a Pingora HTTP app.
pub struct ColorizerApp;

#[async_trait]
impl ServeHttp for ColorizerApp {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let mut body = BytesMut::new();
        let mut too_big = false;
        loop {
            match s.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_UPLOAD {
                        too_big = true;
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => {
                    too_big = true;
                    break;
                }
            }
        }
        let reply = if too_big {
            colorizer::Reply {
                status: 400,
                body: br#"{"success":false,"error":"upload too large or broken"}"#.to_vec(),
            }
        } else {
            let req = s.req_header();
            let ctype = req
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let (method, path) = (req.method.as_str().to_string(), req.uri.path().to_string());
            colorizer::handle(&method, &path, ctype.as_deref(), Bytes::from(body)).await
        };
        Response::builder()
            .status(reply.status)
            .header("content-type", "application/json")
            .header("content-length", reply.body.len())
            .body(reply.body)
            .unwrap_or_default()
    }
}

/// The stand-in as a service listening on `addr`.
pub fn colorizer_service(addr: &str) -> Service<ColorizerApp> {
    let mut svc = Service::new("stand-in colorizer".to_string(), ColorizerApp);
    svc.add_tcp(addr);
    svc
}

/// The demo's config: the contract's routes, JWT with a fresh secret,
/// loopback allowed.
fn demo_config(ports: Ports, dir: &Path) -> String {
    format!(
        r#"server:
  threads: 2
  pid_file: {dir}/colorgate.pid
  upgrade_sock: {dir}/upgrade.sock
  grace_period: 1s
  admin: 127.0.0.1:{admin}
listeners:
  - address: 127.0.0.1:{port}
upstreams:
  deoldify:
    servers: ["127.0.0.1:{colorizer}"]
    read_timeout: 120s
auth:
  jwt:
    algorithms: [HS256]
    secret_file: {dir}/jwt.secret
    issuer: deoldify_api_gateway
access:
  allowlist: [127.0.0.0/8, "::1"]
rate_limits:
  api_global: {{ rate: 5r/s, burst: 10, nodelay: true }}
  per_user: {{ rate: 2r/s, burst: 5, nodelay: true, key: user }}
concurrency:
  per_user: 2
  upstream: 16
limits:
  max_body_size: 50M
routes:
  - path: /health
    match: exact
    upstream: deoldify
    auth: none
    access_log: false
  - path: /api/colorize
    upstream: deoldify
    rewrite: /colorize
    auth: jwt
    allowlist: true
    rate_limits: [api_global, per_user]
  - path: /api/
    upstream: deoldify
    strip_prefix: true
    auth: jwt
    allowlist: true
    rate_limits: [api_global]
access_log:
  path: "-"
"#,
        dir = dir.display(),
        port = ports.gateway,
        admin = ports.admin,
        colorizer = ports.colorizer,
    )
}

/// Where the demo listens, all on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub gateway: u16,
    pub colorizer: u16,
    pub admin: u16,
}

/// `colorgate demo`: the gateway and the stand-in, a ready token and a curl line.
pub fn run(ports: Ports) -> Result<(), String> {
    let port = ports.gateway;
    for p in [port, ports.colorizer, ports.admin] {
        TcpListener::bind(("127.0.0.1", p))
            .map_err(|e| format!("port 127.0.0.1:{p} is not free: {e}"))?;
    }
    let dir = std::env::temp_dir().join(format!("colorgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let secret: [u8; 32] = rand::random();
    let secret_hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&dir.join("jwt.secret"), secret_hex.as_bytes())?;
    let sample = dir.join("sample.png");
    std::fs::write(&sample, colorizer::sample_grayscale_png(320, 200))
        .map_err(|e| format!("{}: {e}", sample.display()))?;
    let config_file = dir.join("colorgate.yaml");
    std::fs::write(&config_file, demo_config(ports, &dir))
        .map_err(|e| format!("{}: {e}", config_file.display()))?;

    let gw = crate::config::load(&config_file, None).map_err(|e| e.to_string())?;
    let token =
        gw.jwt
            .as_ref()
            .ok_or("demo config has no jwt")?
            .issue("demo-user", 24 * 3600, &[])?;
    let out = PathBuf::from("colorized.png");
    eprintln!(
        "colorgate demo: gateway on http://127.0.0.1:{port}, stand-in colorizer on 127.0.0.1:{colorizer}, metrics on http://127.0.0.1:{admin}/metrics\n\
         config: {cfg}\n\n\
         A token for user \"demo-user\", valid 24h:\n\n  TOKEN={token}\n\n\
         Colorize the sample grayscale image ({sample}) through the gateway:\n\n  \
         curl -s -H \"Authorization: Bearer $TOKEN\" -F image=@{sample} http://127.0.0.1:{port}/api/colorize \
         | sed -e 's/.*\"output_img_base64\":\"//' -e 's/\".*//' | base64 -d > {out}\n\n\
         Without the token the gateway answers 401. Ctrl-C stops the demo.\n",
        cfg = config_file.display(),
        sample = sample.display(),
        out = out.display(),
        colorizer = ports.colorizer,
        admin = ports.admin,
    );
    let gateway = crate::gateway::shared(gw);
    let reloader = crate::reload::Reloader::new(config_file, gateway.clone());
    let served = crate::server::run(
        gateway,
        Some(reloader),
        crate::server::StartMode::default(),
        vec![Box::new(colorizer_service(&format!(
            "127.0.0.1:{}",
            ports.colorizer
        )))],
    );
    // The demo's files, its signing secret among them, go with it.
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("colorgate demo: could not remove {}: {e}", dir.display());
    }
    served
}

/// Secrets are written readable by their owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}
