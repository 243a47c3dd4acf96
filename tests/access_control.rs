//! Access control end to end, against the real binary: JWT bearer auth (401
//! and what reaches the upstream), `colorgate token issue|verify`, the
//! allowlist and the client address behind trusted proxies (403), body
//! limits (413), and the order the contract puts them in.
//!
//! Tokens come from `tests/fixtures/jwt/tokens.json`, made with PyJWT, so the
//! gateway is checked against an independent implementation. Only tokens
//! whose claims must be relative to now (leeway) or that PyJWT was not asked
//! for (unusable user ids) are minted here.

mod common;

use common::{config, Gateway, GatewayConfig, RecordedRequest, Response, Upstream};
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufReader, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://auth.colorgate.test";
const AUDIENCE: &str = "colorgate";
const BARE_CHALLENGE: &str = r#"Bearer realm="colorgate""#;
const INVALID_TOKEN_CHALLENGE: &str = r#"Bearer realm="colorgate", error="invalid_token""#;
const UNAUTHORIZED_MESSAGE: &str = "a valid access token is required";
const FORBIDDEN_MESSAGE: &str = "access from your address is not allowed";
const TOO_LARGE_MESSAGE: &str = "request body exceeds the size limit";
/// How long to wait for an access log line (the writer flushes every 20 ms).
const LOG_WAIT: Duration = Duration::from_secs(5);

/// `/api/` needs a token; everything else is open.
const JWT_ROUTES: &str = "
- path: /api/
  upstream: app
  auth: jwt
- path: /
  upstream: app
  auth: none
";

// ---------------------------------------------------------------------------
// Fixtures and helpers
// ---------------------------------------------------------------------------

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A PyJWT-made token from `tokens.json`.
fn token(name: &str) -> String {
    static TOKENS: OnceLock<Value> = OnceLock::new();
    let all = TOKENS.get_or_init(|| serde_json::from_slice(&fixture("tokens.json")).unwrap());
    all[name]
        .as_str()
        .unwrap_or_else(|| panic!("no fixture token {name:?}"))
        .to_string()
}

fn hmac_secret() -> Vec<u8> {
    let mut s = fixture("hs_secret.txt");
    while s.last().is_some_and(|b| b.is_ascii_whitespace()) {
        s.pop();
    }
    s
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token over `claims` with the fixture secret, for claims that
/// must be relative to the current time.
fn hs256_now(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&hmac_secret()),
    )
    .unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A gateway whose `/api/` routes need a token checked with `jwt` (the YAML
/// under `auth.jwt:`). Every key fixture is copied into the gateway's
/// directory so `jwt` can name them relatively.
fn jwt_config(upstream: &Upstream, jwt: &str) -> GatewayConfig {
    let mut cfg = config(upstream)
        .file("jwt.secret", fixture("hs_secret.txt"))
        .file("jwks.json", fixture("jwks.json"));
    for key in ["rsa", "rsa2", "ec256", "ec384", "ed25519"] {
        for part in ["public", "private"] {
            let name = format!("{key}_{part}.pem");
            cfg = cfg.file(&name, fixture(&name));
        }
    }
    let body = format!("jwt:\n{}", common::indent(jwt));
    cfg.section("auth", &body).routes(JWT_ROUTES)
}

/// HS256 with issuer, audience and a 30 s leeway: the contract's usual setup.
fn hs256_config(upstream: &Upstream) -> GatewayConfig {
    jwt_config(
        upstream,
        &format!(
            "
            algorithms: [HS256]
            secret_file: jwt.secret
            issuer: \"{ISSUER}\"
            audience: \"{AUDIENCE}\"
            leeway: 30s
            "
        ),
    )
}

/// The contract's error body, exactly: three keys, the id from the header.
fn assert_error_body(resp: &Response, code: &str, message: &str) {
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let id = resp.header("x-request-id").expect("x-request-id header");
    assert_eq!(
        resp.json(),
        json!({"error": code, "message": message, "request_id": id}),
        "status {}",
        resp.status
    );
}

fn assert_unauthorized(resp: &Response, challenge: &str) {
    assert_eq!(resp.status, 401, "body: {}", resp.body_str());
    assert_eq!(resp.header_all("www-authenticate"), vec![challenge]);
    assert_error_body(resp, "unauthorized", UNAUTHORIZED_MESSAGE);
}

fn assert_forbidden(resp: &Response) {
    assert_eq!(resp.status, 403, "body: {}", resp.body_str());
    assert_eq!(resp.header("www-authenticate"), None);
    assert_error_body(resp, "forbidden", FORBIDDEN_MESSAGE);
}

fn assert_payload_too_large(resp: &Response) {
    assert_eq!(resp.status, 413, "body: {}", resp.body_str());
    assert_error_body(resp, "payload_too_large", TOO_LARGE_MESSAGE);
}

/// The access log line of the request that got `resp` (matched by request id).
fn log_line_for(gw: &Gateway, resp: &Response) -> Value {
    let id = resp.header("x-request-id").expect("x-request-id header");
    common::eventually(LOG_WAIT, || {
        gw.access_log_lines()
            .into_iter()
            .find(|l| l["request_id"] == id)
    })
}

/// Sends `authorization` (or none) to a JWT route and checks the whole
/// refusal: status, challenge, body, nothing sent upstream, and the reason in
/// the access log.
fn expect_refused(
    gw: &Gateway,
    upstream: &Upstream,
    authorization: Option<&str>,
    challenge: &str,
    reason: &str,
) {
    let before = upstream.requests().len();
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    let resp = gw.request("GET", "/api/colorize", &headers, b"");
    assert_unauthorized(&resp, challenge);
    let line = log_line_for(gw, &resp);
    assert_eq!(
        (
            &line["status"],
            &line["auth"],
            &line["deny"],
            &line["user_id"]
        ),
        (&json!(401), &json!(reason), &json!("auth"), &Value::Null),
        "authorization {authorization:?}"
    );
    assert_eq!(upstream.requests().len(), before, "nothing goes upstream");
}

/// Sends `authorization` to a JWT route, expects a 200 and returns the
/// request as the upstream received it.
fn expect_accepted(gw: &Gateway, upstream: &Upstream, authorization: &str) -> RecordedRequest {
    let before = upstream.requests().len();
    let resp = gw.request(
        "GET",
        "/api/whoami",
        &[("Authorization", authorization)],
        b"",
    );
    assert_eq!(resp.status, 200, "body: {}", resp.body_str());
    let seen = upstream.requests();
    assert_eq!(seen.len(), before + 1);
    seen.last().unwrap().clone()
}

/// Runs `colorgate` to completion: (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = common::colorgate(args);
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn issue(cfg_file: &Path, extra: &[&str]) -> String {
    let file = cfg_file.to_str().unwrap();
    let mut args = vec!["token", "issue", "-c", file];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = cli(&args);
    assert_eq!(code, 0, "token issue failed: {stderr}");
    let token = stdout.trim().to_string();
    assert_eq!(stdout, format!("{token}\n"), "the token alone on stdout");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token:?}");
    token
}

fn b64_json(part: &str) -> Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

// ---------------------------------------------------------------------------
// 401: what is refused
// ---------------------------------------------------------------------------

#[test]
fn no_authorization_header_is_401_with_a_bare_bearer_challenge() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();

    expect_refused(&gw, &upstream, None, BARE_CHALLENGE, "missing");
}

#[test]
fn basic_credentials_count_as_no_bearer_token() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();

    expect_refused(
        &gw,
        &upstream,
        Some("Basic dXNlcjpwYXNz"),
        BARE_CHALLENGE,
        "missing",
    );
}

#[test]
fn malformed_bearer_tokens_are_401_invalid_token() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();
    let valid = token("hs256_valid");
    let without_signature = valid.rsplit_once('.').unwrap().0.to_string();

    for bad in [
        "Bearer not-a-jwt".to_string(),
        "Bearer a.b.c".to_string(),
        bearer(&without_signature),
        format!("Bearer {valid} extra"),
    ] {
        expect_refused(
            &gw,
            &upstream,
            Some(&bad),
            INVALID_TOKEN_CHALLENGE,
            "invalid",
        );
    }
}

#[test]
fn token_signed_with_another_secret_is_refused() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();

    expect_refused(
        &gw,
        &upstream,
        Some(&bearer(&token("hs256_other_secret"))),
        INVALID_TOKEN_CHALLENGE,
        "invalid",
    );
}

#[test]
fn alg_none_token_is_refused() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();

    expect_refused(
        &gw,
        &upstream,
        Some(&bearer(&token("alg_none"))),
        INVALID_TOKEN_CHALLENGE,
        "invalid",
    );
}

#[test]
fn hs256_token_keyed_with_the_rsa_public_key_is_refused_by_an_rs256_gateway() {
    let upstream = Upstream::start();
    let gw = jwt_config(
        &upstream,
        "algorithms: [RS256]\npublic_key_file: rsa_public.pem",
    )
    .start();

    // The key works for real RS256 tokens...
    expect_accepted(&gw, &upstream, &bearer(&token("rs256_valid")));
    // ...and is never taken as an HMAC secret.
    expect_refused(
        &gw,
        &upstream,
        Some(&bearer(&token("confusion_hs256_rsa_pubkey"))),
        INVALID_TOKEN_CHALLENGE,
        "invalid",
    );
}

#[test]
fn expired_token_outside_leeway_is_401_expired() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();

    // Expired in the year 2000.
    expect_refused(
        &gw,
        &upstream,
        Some(&bearer(&token("hs256_expired"))),
        INVALID_TOKEN_CHALLENGE,
        "expired",
    );
    // Expired two minutes ago, with 30 s of leeway.
    let t = now();
    let recent = hs256_now(json!({
        "user_id": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": t - 300, "exp": t - 120,
    }));
    expect_refused(
        &gw,
        &upstream,
        Some(&bearer(&recent)),
        INVALID_TOKEN_CHALLENGE,
        "expired",
    );
}

#[test]
fn token_expired_within_leeway_is_accepted() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();
    let t = now();
    let just_expired = hs256_now(json!({
        "user_id": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": t - 300, "exp": t - 5,
    }));

    let seen = expect_accepted(&gw, &upstream, &bearer(&just_expired));

    assert_eq!(seen.header("x-user-id"), Some("alice"));
}

#[test]
fn token_not_yet_valid_is_401_not_yet_valid() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();

    expect_refused(
        &gw,
        &upstream,
        Some(&bearer(&token("hs256_nbf_future"))),
        INVALID_TOKEN_CHALLENGE,
        "not_yet_valid",
    );
}

#[test]
fn wrong_or_missing_issuer_is_401_wrong_issuer() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();

    for name in ["hs256_wrong_iss", "hs256_no_iss"] {
        expect_refused(
            &gw,
            &upstream,
            Some(&bearer(&token(name))),
            INVALID_TOKEN_CHALLENGE,
            "wrong_issuer",
        );
    }
}

#[test]
fn wrong_audience_is_401_wrong_audience() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();

    expect_refused(
        &gw,
        &upstream,
        Some(&bearer(&token("hs256_wrong_aud"))),
        INVALID_TOKEN_CHALLENGE,
        "wrong_audience",
    );
}

#[test]
fn token_without_exp_is_401_missing_exp() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();

    expect_refused(
        &gw,
        &upstream,
        Some(&bearer(&token("hs256_no_exp"))),
        INVALID_TOKEN_CHALLENGE,
        "missing_exp",
    );
}

#[test]
fn token_without_the_user_claim_is_401_missing_user() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();

    expect_refused(
        &gw,
        &upstream,
        Some(&bearer(&token("hs256_no_user"))),
        INVALID_TOKEN_CHALLENGE,
        "missing_user",
    );
}

#[test]
fn user_claim_that_cannot_travel_as_a_header_is_401_missing_user() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();
    let t = now();

    // Control characters would make X-User-Id an invalid header (a 500);
    // surrounding spaces would be stripped upstream, turning " alice" into
    // "alice" behind the per-user limits' back.
    for user in [
        "alice\nX-Admin: 1",
        "alice\u{7f}",
        "\talice",
        " alice",
        "alice ",
    ] {
        let t = hs256_now(json!({
            "user_id": user, "iss": ISSUER, "aud": AUDIENCE, "iat": t, "exp": t + 600,
        }));
        expect_refused(
            &gw,
            &upstream,
            Some(&bearer(&t)),
            INVALID_TOKEN_CHALLENGE,
            "missing_user",
        );
    }
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();
    let t = token("hs256_valid");

    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let seen = expect_accepted(&gw, &upstream, &format!("{scheme} {t}"));
        assert_eq!(seen.header("x-user-id"), Some("alice"), "{scheme}");
    }
}

// ---------------------------------------------------------------------------
// Accepted tokens: what the upstream gets
// ---------------------------------------------------------------------------

#[test]
fn valid_token_sends_x_user_id_upstream_and_never_the_authorization_header() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();

    let resp = gw.request(
        "POST",
        "/api/colorize",
        &[
            ("Authorization", &bearer(&token("hs256_valid"))),
            ("X-User-Id", "mallory"),
        ],
        b"{}",
    );

    assert_eq!(resp.status, 200, "body: {}", resp.body_str());
    let seen = upstream.wait_for_requests(1, common::IO_TIMEOUT);
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    let user_ids: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k == "x-user-id")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        user_ids,
        vec!["alice"],
        "the client's X-User-Id is replaced"
    );
    assert_eq!(r.header("authorization"), None);
    let line = log_line_for(&gw, &resp);
    assert_eq!(
        (
            &line["status"],
            &line["auth"],
            &line["deny"],
            &line["user_id"]
        ),
        (&json!(200), &json!("ok"), &Value::Null, &json!("alice"))
    );
}

#[test]
fn numeric_user_claim_is_sent_upstream_as_its_decimal_string() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();

    let seen = expect_accepted(&gw, &upstream, &bearer(&token("hs256_numeric_user")));

    assert_eq!(seen.header("x-user-id"), Some("42"));
}

#[test]
fn route_without_auth_forwards_neither_authorization_nor_a_client_x_user_id() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream).start();

    let resp = gw.request(
        "GET",
        "/open",
        &[
            ("Authorization", &bearer(&token("hs256_valid"))),
            ("X-User-Id", "mallory"),
        ],
        b"",
    );

    assert_eq!(resp.status, 200);
    let r = &upstream.requests()[0];
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.header("x-user-id"), None);
    assert_eq!(log_line_for(&gw, &resp)["auth"], "none");
}

#[test]
fn rs256_token_verifies_with_a_public_key_file() {
    let upstream = Upstream::start();
    let gw = jwt_config(
        &upstream,
        "algorithms: [RS256]\npublic_key_file: rsa_public.pem",
    )
    .start();

    let seen = expect_accepted(&gw, &upstream, &bearer(&token("rs256_valid")));
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    // Signed with the other RSA key.
    expect_refused(
        &gw,
        &upstream,
        Some(&bearer(&token("jwks_2025-b"))),
        INVALID_TOKEN_CHALLENGE,
        "invalid",
    );
    // A real signature with an algorithm that is not configured.
    expect_refused(
        &gw,
        &upstream,
        Some(&bearer(&token("rs512_valid"))),
        INVALID_TOKEN_CHALLENGE,
        "invalid",
    );
}

#[test]
fn es256_token_verifies_with_a_public_key_file() {
    let upstream = Upstream::start();
    let gw = jwt_config(
        &upstream,
        "algorithms: [ES256]\npublic_key_file: ec256_public.pem",
    )
    .start();

    let seen = expect_accepted(&gw, &upstream, &bearer(&token("es256_valid")));
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    expect_refused(
        &gw,
        &upstream,
        Some(&bearer(&token("es384_valid"))),
        INVALID_TOKEN_CHALLENGE,
        "invalid",
    );
}

#[test]
fn eddsa_token_verifies_with_a_public_key_file() {
    let upstream = Upstream::start();
    let gw = jwt_config(
        &upstream,
        "algorithms: [EdDSA]\npublic_key_file: ed25519_public.pem",
    )
    .start();

    let seen = expect_accepted(&gw, &upstream, &bearer(&token("eddsa_valid")));
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    expect_refused(
        &gw,
        &upstream,
        Some(&bearer(&token("es256_valid"))),
        INVALID_TOKEN_CHALLENGE,
        "invalid",
    );
}

#[test]
fn jwks_accepts_both_rotated_keys_and_refuses_an_unknown_kid() {
    let upstream = Upstream::start();
    let gw = jwt_config(&upstream, "algorithms: [RS256]\njwks_file: jwks.json").start();

    for name in ["jwks_2024-a", "jwks_2025-b"] {
        let seen = expect_accepted(&gw, &upstream, &bearer(&token(name)));
        assert_eq!(seen.header("x-user-id"), Some("alice"), "{name}");
    }
    // Unknown kid; the right kid over another key's signature; no kid with
    // two keys to choose from.
    for name in ["jwks_unknown_kid", "jwks_kid_mismatch", "jwks_no_kid"] {
        expect_refused(
            &gw,
            &upstream,
            Some(&bearer(&token(name))),
            INVALID_TOKEN_CHALLENGE,
            "invalid",
        );
    }
}

/// `colorgate run` with extra environment variables. The harness's
/// `Gateway` inherits the test process's environment, and changing that
/// while other tests spawn processes is a race.
struct EnvGateway {
    child: Child,
    port: u16,
    stderr: PathBuf,
}

impl EnvGateway {
    fn start(cfg: &GatewayConfig, env: &[(&str, &str)]) -> EnvGateway {
        let stderr = cfg.path("env-gateway.stderr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_colorgate"));
        cmd.arg("run")
            .arg("-c")
            .arg(cfg.write())
            .current_dir(cfg.dir())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap());
        // Die with the test, as the harness's gateways do.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut gw = EnvGateway {
            child: cmd.spawn().expect("spawn colorgate"),
            port: cfg.port,
            stderr,
        };
        let deadline = Instant::now() + common::READY_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", gw.port)).is_err() {
            if let Some(status) = gw.child.try_wait().unwrap() {
                panic!("colorgate exited ({status}): {}", gw.stderr_text());
            }
            assert!(
                Instant::now() < deadline,
                "not listening: {}",
                gw.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        gw
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for EnvGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn hmac_secret_can_come_from_an_environment_variable() {
    let upstream = Upstream::start();
    let var = "COLORGATE_ACCESS_CONTROL_TEST_SECRET";
    let secret = String::from_utf8(hmac_secret()).unwrap();
    let cfg = jwt_config(
        &upstream,
        &format!("algorithms: [HS256]\nsecret_env: {var}"),
    );
    let gw = EnvGateway::start(&cfg, &[(var, &secret)]);

    let ok = common::http(
        gw.port,
        "GET",
        "/api/x",
        &[("Authorization", &bearer(&token("hs256_valid")))],
        b"",
    );
    let bad = common::http(
        gw.port,
        "GET",
        "/api/x",
        &[("Authorization", &bearer(&token("hs256_other_secret")))],
        b"",
    );

    assert_eq!(ok.status, 200, "body: {}", ok.body_str());
    assert_eq!(upstream.requests()[0].header("x-user-id"), Some("alice"));
    assert_unauthorized(&bad, INVALID_TOKEN_CHALLENGE);
    assert_eq!(upstream.requests().len(), 1);
}

// ---------------------------------------------------------------------------
// The access log: reasons, never tokens
// ---------------------------------------------------------------------------

#[test]
fn tokens_never_appear_in_the_access_log_or_on_stderr() {
    let upstream = Upstream::start();
    let mut gw = hs256_config(&upstream).start();
    let names = [
        "hs256_valid",
        "hs256_other_secret",
        "alg_none",
        "hs256_expired",
        "hs256_nbf_future",
        "hs256_wrong_iss",
        "hs256_wrong_aud",
        "hs256_no_exp",
        "hs256_no_user",
    ];
    let mut sent: Vec<String> = names.iter().map(|n| token(n)).collect();
    sent.push("not-a-jwt-but-secret-looking".into());
    for t in &sent {
        gw.request("GET", "/api/x", &[("Authorization", &bearer(t))], b"");
        // Also on a route that does not check tokens.
        gw.request("GET", "/open", &[("Authorization", &bearer(t))], b"");
    }
    let lines = gw.wait_access_log(2 * sent.len(), LOG_WAIT);
    let auths: Vec<&str> = lines
        .iter()
        .filter(|l| l["route"] == "/api/")
        .map(|l| l["auth"].as_str().unwrap())
        .collect();
    assert_eq!(
        auths,
        vec![
            "ok",
            "invalid",
            "invalid",
            "expired",
            "not_yet_valid",
            "wrong_issuer",
            "wrong_audience",
            "missing_exp",
            "missing_user",
            "invalid"
        ]
    );
    gw.stop();

    let log = std::fs::read_to_string(gw.dir().join("access.log")).unwrap();
    let stderr = gw.stderr();
    let stdout = gw.stdout();
    for t in &sent {
        // Not the token, and not any of its parts either (a log that drops
        // the signature still carries the claims).
        let parts: Vec<&str> = t.split('.').filter(|p| p.len() > 8).collect();
        for (what, text) in [
            ("access log", &log),
            ("stderr", &stderr),
            ("stdout", &stdout),
        ] {
            assert!(!text.contains(t.as_str()), "token in the {what}");
            for p in &parts {
                assert!(!text.contains(p), "token part {p:?} in the {what}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// colorgate token issue | verify
// ---------------------------------------------------------------------------

#[test]
fn issued_token_is_accepted_by_the_running_gateway_and_verifies_to_its_claims() {
    let upstream = Upstream::start();
    let cfg = hs256_config(&upstream);
    let file = cfg.write();
    let gw = cfg.start();

    let before = now();
    let issued = issue(
        &file,
        &["--user", "u", "--ttl", "1h", "--claim", "role=admin"],
    );
    let after = now();

    let seen = expect_accepted(&gw, &upstream, &bearer(&issued));
    assert_eq!(seen.header("x-user-id"), Some("u"));

    let (code, stdout, stderr) = cli(&["token", "verify", "-c", file.to_str().unwrap(), &issued]);
    assert_eq!(code, 0, "stderr: {stderr}");
    let claims: Value = serde_json::from_str(stdout.trim()).expect("claims JSON on stdout");
    let mut keys: Vec<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["aud", "exp", "iat", "iss", "role", "user_id"]);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["user_id"], "u");
    assert_eq!(claims["role"], "admin");
    let iat = claims["iat"].as_u64().unwrap();
    assert!(
        (before..=after).contains(&iat),
        "iat {iat} not in [{before}, {after}]"
    );
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 3600);
    // The header names the configured algorithm.
    assert_eq!(b64_json(issued.split('.').next().unwrap())["alg"], "HS256");
}

#[test]
fn token_verify_prints_the_claims_of_a_pyjwt_token() {
    let upstream = Upstream::start();
    let cfg = hs256_config(&upstream);
    let file = cfg.write();

    let (code, stdout, stderr) = cli(&[
        "token",
        "verify",
        "-c",
        file.to_str().unwrap(),
        &token("hs256_valid"),
    ]);

    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(stdout.trim()).unwrap(),
        json!({"user_id": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": 1700000000u64, "exp": 4102444800u64})
    );
}

#[test]
fn token_verify_of_a_tampered_token_exits_1_with_the_reason() {
    use base64::Engine;
    let upstream = Upstream::start();
    let cfg = hs256_config(&upstream);
    let file = cfg.write();
    let file = file.to_str().unwrap();
    let issued = issue(Path::new(file), &["--user", "u", "--ttl", "1h"]);
    // Same signature, the payload now says user "admin".
    let parts: Vec<&str> = issued.split('.').collect();
    let mut claims = b64_json(parts[1]);
    claims["user_id"] = json!("admin");
    let forged_payload =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);

    let (code, stdout, stderr) = cli(&["token", "verify", "-c", file, &tampered]);
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert_eq!(stderr.trim(), "token rejected: invalid");

    let (code, stdout, stderr) = cli(&["token", "verify", "-c", file, &token("hs256_expired")]);
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert_eq!(stderr.trim(), "token rejected: expired");
}

#[test]
fn token_issue_refuses_a_user_the_gateway_would_not_accept() {
    let upstream = Upstream::start();
    let cfg = hs256_config(&upstream);
    let file = cfg.write();

    for user in [" alice", "alice\nbob", ""] {
        let (code, stdout, stderr) = cli(&[
            "token",
            "issue",
            "-c",
            file.to_str().unwrap(),
            "--user",
            user,
        ]);
        assert_eq!((code, stdout.as_str()), (1, ""), "user {user:?}");
        assert!(stderr.contains("the user"), "user {user:?}: {stderr}");
    }
}

#[test]
fn es256_token_issued_with_signing_key_file_is_accepted() {
    let upstream = Upstream::start();
    let cfg = jwt_config(
        &upstream,
        &format!(
            "
            algorithms: [ES256]
            public_key_file: ec256_public.pem
            signing_key_file: ec256_private.pem
            issuer: \"{ISSUER}\"
            "
        ),
    );
    let file = cfg.write();
    let gw = cfg.start();

    let issued = issue(&file, &["--user", "erin", "--ttl", "10m"]);

    assert_eq!(b64_json(issued.split('.').next().unwrap())["alg"], "ES256");
    let seen = expect_accepted(&gw, &upstream, &bearer(&issued));
    assert_eq!(seen.header("x-user-id"), Some("erin"));
    // PyJWT's ES256 token verifies with the same key.
    expect_accepted(&gw, &upstream, &bearer(&token("es256_valid")));
    let (code, stdout, _) = cli(&["token", "verify", "-c", file.to_str().unwrap(), &issued]);
    assert_eq!(code, 0);
    let claims: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (&claims["user_id"], &claims["iss"]),
        (&json!("erin"), &json!(ISSUER))
    );
}

// ---------------------------------------------------------------------------
// Allowlist and the client address
// ---------------------------------------------------------------------------

/// `/api/` is allowlisted (no token needed), `/open` is not.
fn allowlist_config(upstream: &Upstream, access: &str) -> GatewayConfig {
    config(upstream).section("access", access).routes(
        "
        - path: /api/
          upstream: app
          auth: none
          allowlist: true
        - path: /
          upstream: app
          auth: none
        ",
    )
}

#[test]
fn allowlist_without_the_client_address_is_403_forbidden() {
    let upstream = Upstream::start();
    let gw = allowlist_config(&upstream, "allowlist: [10.0.0.0/8, 192.168.1.0/24]").start();

    let resp = gw.get("/api/colorize");

    assert_forbidden(&resp);
    let line = log_line_for(&gw, &resp);
    assert_eq!(
        (&line["status"], &line["deny"], &line["client_ip"]),
        (&json!(403), &json!("allowlist"), &json!("127.0.0.1"))
    );
    // The route without `allowlist: true` is open to the same client.
    assert_eq!(gw.get("/open").status, 200);
    assert_eq!(upstream.requests().len(), 1);
    assert_eq!(upstream.requests()[0].uri, "/open");
}

#[test]
fn allowlist_containing_the_loopback_network_lets_the_request_through() {
    let upstream = Upstream::start();
    let gw = allowlist_config(&upstream, "allowlist: [10.0.0.0/8, 127.0.0.0/8]").start();

    let resp = gw.get("/api/colorize");

    assert_eq!(resp.status, 200, "body: {}", resp.body_str());
    assert_eq!(upstream.requests()[0].uri, "/api/colorize");
    assert_eq!(log_line_for(&gw, &resp)["deny"], Value::Null);
}

#[test]
fn spoofed_forwarding_headers_from_an_untrusted_peer_do_not_pass_the_allowlist() {
    let upstream = Upstream::start();
    let gw = allowlist_config(&upstream, "allowlist: [10.0.0.0/8]").start();
    let spoof = [("X-Forwarded-For", "10.1.1.1"), ("X-Real-IP", "10.1.1.1")];

    let refused = gw.request("GET", "/api/colorize", &spoof, b"");
    let open = gw.request("GET", "/open", &spoof, b"");

    assert_forbidden(&refused);
    assert_eq!(log_line_for(&gw, &refused)["client_ip"], "127.0.0.1");
    assert_eq!(open.status, 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen[0].header("x-real-ip"), Some("127.0.0.1"));
}

#[test]
fn behind_a_trusted_proxy_the_client_is_the_rightmost_untrusted_forwarded_address() {
    let upstream = Upstream::start();
    let gw = allowlist_config(
        &upstream,
        "
        trusted_proxies: [127.0.0.1, 10.0.0.0/8]
        allowlist: [203.0.113.0/24]
        ",
    )
    .start();

    // 10.0.0.2 is a trusted hop and is skipped; 6.6.6.6 (leftmost, written by
    // anyone) is never reached.
    let chain = "6.6.6.6, 203.0.113.7, 10.0.0.2";
    let allowed = gw.request("GET", "/api/x", &[("X-Forwarded-For", chain)], b"");

    assert_eq!(allowed.status, 200, "body: {}", allowed.body_str());
    let seen = &upstream.requests()[0];
    assert_eq!(seen.header("x-real-ip"), Some("203.0.113.7"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("6.6.6.6, 203.0.113.7, 10.0.0.2, 127.0.0.1")
    );
    let line = log_line_for(&gw, &allowed);
    assert_eq!(
        (
            &line["client_ip"],
            &line["remote_addr"],
            &line["x_forwarded_for"]
        ),
        (&json!("203.0.113.7"), &json!("127.0.0.1"), &json!(chain))
    );

    // An allowed address on the left does not help when the hop the
    // trusted proxy saw is outside the allowlist.
    let refused = gw.request(
        "GET",
        "/api/x",
        &[("X-Forwarded-For", "203.0.113.7, 6.6.6.6")],
        b"",
    );
    assert_forbidden(&refused);
    assert_eq!(log_line_for(&gw, &refused)["client_ip"], "6.6.6.6");
    assert_eq!(upstream.requests().len(), 1);
}

/// A trusted proxy in front, the allowlisted route behind it.
fn behind_trusted_proxy(upstream: &Upstream) -> Gateway {
    allowlist_config(
        upstream,
        "
        trusted_proxies: [127.0.0.1]
        allowlist: [10.0.0.0/8]
        ",
    )
    .start()
}

#[test]
fn forwarded_for_that_is_not_utf8_never_lets_x_real_ip_choose_the_client() {
    let upstream = Upstream::start();
    let gw = behind_trusted_proxy(&upstream);

    // The proxy appended the client it saw (6.6.6.6) to a chain the client
    // started with a non-UTF-8 byte, and passed the client's X-Real-IP on.
    let resp = gw.raw(
        b"GET /api/x HTTP/1.1\r\nHost: h\r\n\
          X-Forwarded-For: \xff, 6.6.6.6\r\n\
          X-Real-IP: 10.1.1.1\r\nConnection: close\r\n\r\n",
    );

    assert_forbidden(&resp);
    assert_eq!(log_line_for(&gw, &resp)["client_ip"], "6.6.6.6");
    assert!(upstream.requests().is_empty());
}

#[test]
fn forwarded_for_sent_as_two_header_lines_is_walked_as_one_chain() {
    let upstream = Upstream::start();
    let gw = behind_trusted_proxy(&upstream);

    // The client's own line first, then the line the trusted proxy added
    // (HAProxy `option forwardfor` adds a line instead of extending).
    let spoofed = gw.raw(
        b"GET /api/x HTTP/1.1\r\nHost: h\r\n\
          X-Forwarded-For: 10.1.1.1\r\n\
          X-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n",
    );
    assert_forbidden(&spoofed);
    assert_eq!(log_line_for(&gw, &spoofed)["client_ip"], "203.0.113.9");

    let real = gw.raw(
        b"GET /open HTTP/1.1\r\nHost: h\r\n\
          X-Forwarded-For: 10.1.1.1\r\n\
          X-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(real.status, 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-real-ip"), Some("203.0.113.9"));
    assert_eq!(
        seen[0].header("x-forwarded-for"),
        Some("10.1.1.1, 203.0.113.9, 127.0.0.1")
    );
}

/// A free port on ::1, or `None` when this machine has no IPv6 loopback.
fn ipv6_loopback_port() -> Option<u16> {
    TcpListener::bind((Ipv6Addr::LOCALHOST, 0))
        .ok()
        .map(|l| l.local_addr().unwrap().port())
}

/// A gateway listening on 127.0.0.1 and on [::1]:`v6_port`.
fn dual_stack_allowlist_gateway(upstream: &Upstream, v6_port: u16, allowlist: &str) -> Gateway {
    allowlist_config(upstream, &format!("allowlist: {allowlist}"))
        .section(
            "listeners",
            &format!("- address: 127.0.0.1:{{port}}\n- address: \"[::1]:{v6_port}\""),
        )
        .start()
}

/// One request over IPv6 to [::1]:`port` (waits for the listener to accept).
fn get_over_ipv6(port: u16, path: &str) -> Response {
    let addr = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let stream = common::eventually(common::READY_TIMEOUT, || TcpStream::connect(addr).ok());
    stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    let host = format!("[::1]:{port}");
    let request = common::build_request(port, "GET", path, &[("Host", &host)], b"", true);
    (&stream).write_all(&request).unwrap();
    common::read_response(&mut BufReader::new(stream), false)
}

#[test]
fn ipv6_client_passes_an_allowlist_naming_its_address() {
    let Some(v6_port) = ipv6_loopback_port() else {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    };
    let upstream = Upstream::start();
    let gw = dual_stack_allowlist_gateway(&upstream, v6_port, "[\"::1\"]");

    let resp = get_over_ipv6(v6_port, "/api/x");

    assert_eq!(resp.status, 200, "body: {}", resp.body_str());
    let seen = &upstream.requests()[0];
    assert_eq!(seen.header("x-real-ip"), Some("::1"));
    assert_eq!(seen.header("x-forwarded-for"), Some("::1"));
    assert_eq!(log_line_for(&gw, &resp)["client_ip"], "::1");
    // The IPv4 loopback is not on this list.
    assert_forbidden(&gw.get("/api/x"));
}

#[test]
fn ipv6_client_is_forbidden_by_an_ipv4_only_allowlist() {
    let Some(v6_port) = ipv6_loopback_port() else {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    };
    let upstream = Upstream::start();
    let gw = dual_stack_allowlist_gateway(&upstream, v6_port, "[127.0.0.0/8, 10.0.0.0/8]");

    let resp = get_over_ipv6(v6_port, "/api/x");

    assert_forbidden(&resp);
    assert_eq!(log_line_for(&gw, &resp)["client_ip"], "::1");
    assert!(upstream.requests().is_empty());
    // The same route over IPv4 passes.
    assert_eq!(gw.get("/api/x").status, 200);
}

// ---------------------------------------------------------------------------
// Body limits
// ---------------------------------------------------------------------------

fn body_limit_gateway(upstream: &Upstream) -> Gateway {
    config(upstream)
        .section("limits", "max_body_size: 1k")
        .start()
}

fn chunked_post(gw: &Gateway, body: &[u8], chunk: usize) -> Response {
    gw.request(
        "POST",
        "/upload",
        &[("Transfer-Encoding", "chunked")],
        &common::chunked(body, chunk),
    )
}

/// What the upstream got of refused bodies: never more than the limit.
fn assert_upstream_got_at_most(upstream: &Upstream, limit: usize) {
    for r in upstream.requests() {
        assert!(
            r.body_len() <= limit,
            "upstream received {} body bytes",
            r.body_len()
        );
    }
}

#[test]
fn content_length_of_exactly_the_limit_passes() {
    let upstream = Upstream::start();
    let gw = body_limit_gateway(&upstream);

    let resp = gw.request("POST", "/upload", &[], &[b'a'; 1024]);

    assert_eq!(resp.status, 200, "body: {}", resp.body_str());
    assert_eq!(upstream.requests()[0].body, vec![b'a'; 1024]);
}

#[test]
fn content_length_over_the_limit_is_413_and_nothing_reaches_the_upstream() {
    let upstream = Upstream::start();
    let gw = body_limit_gateway(&upstream);

    let resp = gw.request("POST", "/upload", &[], &[b'a'; 1025]);

    assert_payload_too_large(&resp);
    let line = log_line_for(&gw, &resp);
    assert_eq!(
        (&line["status"], &line["deny"]),
        (&json!(413), &json!("body_size"))
    );
    assert!(upstream.requests().is_empty());
    assert_eq!(
        upstream.connections(),
        0,
        "the upstream was not even contacted"
    );
}

#[test]
fn chunked_body_over_the_limit_is_413_and_the_upstream_gets_at_most_the_limit() {
    let upstream = Upstream::start();
    let gw = body_limit_gateway(&upstream);

    let resp = chunked_post(&gw, &[b'a'; 4096], 512);

    assert_payload_too_large(&resp);
    let line = log_line_for(&gw, &resp);
    assert_eq!(
        (&line["status"], &line["deny"]),
        (&json!(413), &json!("body_size"))
    );
    assert_upstream_got_at_most(&upstream, 1024);
}

#[test]
fn chunked_body_of_exactly_the_limit_passes() {
    let upstream = Upstream::start();
    let gw = body_limit_gateway(&upstream);

    let resp = chunked_post(&gw, &[b'b'; 1024], 256);

    assert_eq!(resp.status, 200, "body: {}", resp.body_str());
    assert_eq!(upstream.requests()[0].body, vec![b'b'; 1024]);
}

#[test]
fn many_small_chunks_adding_up_past_the_limit_are_413() {
    let upstream = Upstream::start();
    let gw = body_limit_gateway(&upstream);

    // 11 chunks of 100 bytes: each small, the sum one chunk over 1 KiB.
    let resp = chunked_post(&gw, &[b'c'; 1100], 100);

    assert_payload_too_large(&resp);
    assert_eq!(log_line_for(&gw, &resp)["deny"], "body_size");
    assert_upstream_got_at_most(&upstream, 1024);
}

// ---------------------------------------------------------------------------
// The order of the checks
// ---------------------------------------------------------------------------

#[test]
fn forbidden_address_gets_403_before_its_token_is_looked_at() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream)
        .section("access", "allowlist: [10.0.0.0/8]")
        .routes(
            "
            - path: /api/
              upstream: app
              auth: jwt
              allowlist: true
            ",
        )
        .start();

    for authorization in [
        None,
        Some("Bearer not-a-jwt".to_string()),
        Some(bearer(&token("hs256_valid"))),
    ] {
        let headers: Vec<(&str, &str)> = authorization
            .as_deref()
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        let resp = gw.request("GET", "/api/x", &headers, b"");
        assert_forbidden(&resp);
        assert_eq!(log_line_for(&gw, &resp)["deny"], "allowlist");
    }
    assert!(upstream.requests().is_empty());
}

#[test]
fn bad_token_with_an_oversized_body_gets_401_and_a_good_one_413() {
    let upstream = Upstream::start();
    let gw = hs256_config(&upstream)
        .section("limits", "max_body_size: 1k")
        .start();
    let body = [b'a'; 2048];

    let bad = gw.request(
        "POST",
        "/api/x",
        &[("Authorization", "Bearer not-a-jwt")],
        &body,
    );
    let good = gw.request(
        "POST",
        "/api/x",
        &[("Authorization", &bearer(&token("hs256_valid")))],
        &body,
    );

    assert_unauthorized(&bad, INVALID_TOKEN_CHALLENGE);
    assert_payload_too_large(&good);
    assert_eq!(log_line_for(&gw, &good)["user_id"], "alice");
    assert!(upstream.requests().is_empty());
}

/// Repeat requests skip the signature check (the verified-token cache), but
/// never the clock: a token accepted a moment ago is refused as `expired`
/// once its `exp` passes.
#[test]
fn a_token_accepted_before_is_refused_once_it_expires() {
    let upstream = Upstream::start();
    let cfg = jwt_config(
        &upstream,
        "
        algorithms: [HS256]
        secret_file: jwt.secret
        leeway: 0s
        ",
    );
    let gw = cfg.start();
    let exp = now() + 2;
    let token = hs256_now(json!({"user_id": "alice", "exp": exp}));
    let auth = bearer(&token);

    let first = gw.request("GET", "/api/x", &[("Authorization", auth.as_str())], b"");
    assert_eq!(first.status, 200, "{}", first.body_str());
    assert_eq!(
        gw.request("GET", "/api/x", &[("Authorization", auth.as_str())], b"")
            .status,
        200
    );

    let refused = common::eventually(Duration::from_secs(10), || {
        let r = gw.request("GET", "/api/x", &[("Authorization", auth.as_str())], b"");
        (r.status != 200).then_some(r)
    });
    assert!(now() > exp, "refused before the token expired");
    assert_unauthorized(
        &refused,
        "Bearer realm=\"colorgate\", error=\"invalid_token\"",
    );
    assert_eq!(log_line_for(&gw, &refused)["auth"], "expired");
}
