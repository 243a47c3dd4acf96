//! JWT bearer authentication: verifies `Authorization: Bearer <jwt>` tokens and
//! issues tokens for `colorgate token issue`.
//!
//! Security rules this module enforces:
//! - The configured algorithm list decides how a token is checked; the token's
//!   own `alg` header can only pick among those. `alg: none` never parses.
//! - HMAC and public-key algorithms never mix in one config, and a public key
//!   is never used as an HMAC secret, so algorithm confusion is impossible.
//! - Keys and validation rules are built once in [`JwtVerifier::new`]; the
//!   per-request path only parses and checks the token.
//! - Failures are reported as an [`AuthFailure`] whose [`AuthFailure::as_str`]
//!   is safe to log; the token itself is never logged.

use std::collections::HashSet;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Tokens longer than this are rejected before any decoding: real JWTs are a
/// few hundred bytes, and this bounds the work an attacker can make us do.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Leeway beyond a day is a misconfiguration, and a huge value would
/// underflow the `now - leeway` arithmetic inside `jsonwebtoken`.
const MAX_LEEWAY_SECS: u64 = 24 * 3600;
/// HMAC secrets shorter than the SHA-256 output weaken HS256 (RFC 7518 §3.2).
const MIN_SECRET_LEN: usize = 32;
/// Claims `issue` writes itself; `extra` may not override them.
const RESERVED_CLAIMS: [&str; 4] = ["iss", "aud", "iat", "exp"];

/// Where the verification key comes from.
#[derive(Clone)]
pub enum KeySource {
    /// Shared secret for HS256/384/512.
    Secret(Vec<u8>),
    /// A public key PEM (RSA, EC P-256/P-384 or Ed25519; SPKI or PKCS#1).
    PublicKeyPem(Vec<u8>),
    /// A JWKS document (`{"keys": [...]}`); tokens pick a key by `kid`.
    Jwks(String),
}

// Manual impl so that logging a config never prints secret bytes.
impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Secret(s) => write!(f, "Secret([redacted; {} bytes])", s.len()),
            KeySource::PublicKeyPem(p) => write!(f, "PublicKeyPem({} bytes)", p.len()),
            KeySource::Jwks(j) => write!(f, "Jwks({} bytes)", j.len()),
        }
    }
}

/// Configuration of a [`JwtVerifier`].
#[derive(Clone)]
pub struct JwtSettings {
    /// Accepted algorithms; all HMAC or all public-key.
    pub algorithms: Vec<Algorithm>,
    pub key: KeySource,
    /// Private key PEM (PKCS#8, or PKCS#1 for RSA) used only by `issue` with
    /// public-key algorithms.
    pub signing_key_pem: Option<Vec<u8>>,
    /// Reject tokens without `exp` (default true).
    pub require_exp: bool,
    /// When set, `iss` must be present and equal.
    pub issuer: Option<String>,
    /// When set, `aud` must be present and contain it.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Claim holding the user identity (default `user_id`).
    pub user_claim: String,
}

impl fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSettings")
            .field("algorithms", &self.algorithms)
            .field("key", &self.key)
            .field(
                "signing_key_pem",
                &self.signing_key_pem.as_ref().map(|_| "[redacted]"),
            )
            .field("require_exp", &self.require_exp)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("user_claim", &self.user_claim)
            .finish()
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header.
    Missing,
    /// Malformed token, bad signature, disallowed algorithm, unknown `kid`...
    Invalid,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingExp,
    MissingUser,
}

impl AuthFailure {
    /// Stable lowercase reason for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Invalid => "invalid",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::MissingExp => "missing_exp",
            AuthFailure::MissingUser => "missing_user",
        }
    }

    /// True when no Bearer token was sent at all: the response then carries
    /// a bare `WWW-Authenticate: Bearer realm="colorgate"` challenge.
    pub fn is_missing(&self) -> bool {
        matches!(self, AuthFailure::Missing)
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Extracts the token from an `Authorization` header value.
///
/// The scheme is case-insensitive and followed by one or more spaces. No
/// header, or another scheme (e.g. `Basic`), is `Missing`; `Bearer` with an
/// empty or malformed token is `Invalid`.
pub fn bearer_token(authorization: Option<&[u8]>) -> Result<&[u8], AuthFailure> {
    let token = bearer_scheme(authorization)?;
    if !is_token68_all(token) {
        return Err(AuthFailure::Invalid);
    }
    Ok(token)
}

/// [`bearer_token`] but for the charset, which [`JwtVerifier::verify_bearer`]
/// checks only for a token it has not verified before.
fn bearer_scheme(authorization: Option<&[u8]>) -> Result<&[u8], AuthFailure> {
    let value = trim_spaces(authorization.ok_or(AuthFailure::Missing)?);
    const SCHEME: &[u8] = b"bearer";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return Err(AuthFailure::Missing);
    }
    let rest = &value[SCHEME.len()..];
    match rest.first() {
        None => return Err(AuthFailure::Invalid), // "Bearer" with nothing after it
        Some(b' ') => {}
        Some(_) => return Err(AuthFailure::Missing), // another scheme, e.g. "Bearerx"
    }
    let token = trim_spaces(rest);
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(AuthFailure::Invalid);
    }
    Ok(token)
}

/// The token68 charset (RFC 7235); JWTs only use base64url and '.'. This
/// also rejects inner spaces, and makes the token ASCII: it stays bytes,
/// since a cached token is found without a UTF-8 check (see `verify`).
fn is_token68_all(token: &[u8]) -> bool {
    token.iter().fold(true, |all, &b| all & is_token68(b))
}

/// A token68 byte. It runs over every byte of every token, so it is plain
/// comparisons (no table, no early exit) that the compiler checks sixteen
/// bytes at a time.
fn is_token68(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

fn trim_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// One verification key with the validation rules for the algorithms it may
/// be used with (`jsonwebtoken` requires all algorithms of one `Validation`
/// to belong to the key's family).
#[derive(Debug)]
struct KeyEntry {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

#[derive(Debug)]
struct Signer {
    key: EncodingKey,
    header: Header,
}

/// Verifies (and optionally issues) JWTs according to a [`JwtSettings`].
#[derive(Debug)]
pub struct JwtVerifier {
    keys: Vec<KeyEntry>,
    /// JWKS mode: the key is looked up by the token's `kid`.
    by_kid: bool,
    user_claim: String,
    issuer: Option<String>,
    audience: Option<String>,
    signer: Option<Signer>,
    /// Tokens that passed every check, so repeat requests skip the crypto.
    cache: super::token_cache::TokenCache,
}

impl JwtVerifier {
    /// Builds keys and validation rules; the error says what is wrong with
    /// the configuration.
    pub fn new(s: JwtSettings) -> Result<Self, String> {
        if s.algorithms.is_empty() {
            return Err("jwt: no algorithms configured".into());
        }
        if s.user_claim.is_empty() {
            return Err("jwt: user_claim must not be empty".into());
        }
        if s.leeway_secs > MAX_LEEWAY_SECS {
            return Err(format!(
                "jwt: leeway of {}s is too large (max {MAX_LEEWAY_SECS}s)",
                s.leeway_secs
            ));
        }
        let hmac = s
            .algorithms
            .iter()
            .filter(|a| a.family() == AlgorithmFamily::Hmac)
            .count();
        if hmac != 0 && hmac != s.algorithms.len() {
            return Err(format!(
                "jwt: algorithms {:?} mix HMAC and public-key algorithms; use one kind",
                s.algorithms
            ));
        }
        let base = base_validation(&s);
        let mut signer = None;
        let (keys, by_kid) = match &s.key {
            KeySource::Secret(secret) => {
                if hmac == 0 {
                    return Err("jwt: a secret only works with HS256/384/512, \
                        not with public-key algorithms"
                        .into());
                }
                if secret.is_empty() {
                    return Err("jwt: the HMAC secret is empty".into());
                }
                if secret.len() < MIN_SECRET_LEN {
                    log::warn!(
                        "jwt: the HMAC secret is only {} bytes; use at least {MIN_SECRET_LEN}",
                        secret.len()
                    );
                }
                if s.signing_key_pem.is_some() {
                    return Err("jwt: signing_key_pem is not used with HMAC: \
                        tokens are signed with the secret"
                        .into());
                }
                signer = Some(Signer {
                    key: EncodingKey::from_secret(secret),
                    header: Header::new(s.algorithms[0]),
                });
                let validation = with_algorithms(&base, s.algorithms.clone());
                (
                    vec![KeyEntry {
                        kid: None,
                        key: DecodingKey::from_secret(secret),
                        validation,
                    }],
                    false,
                )
            }
            _ if hmac != 0 => {
                // Never derive an HMAC secret from public key material.
                return Err("jwt: HS256/384/512 need a secret, not a public key or JWKS".into());
            }
            KeySource::PublicKeyPem(pem) => {
                let (jwk, key) = parse_public_pem(pem)?;
                let algs = usable_algorithms(&jwk, &s.algorithms);
                if algs.is_empty() {
                    return Err(format!(
                        "jwt: the public key ({}) cannot verify any of {:?}",
                        key_kind(&jwk),
                        s.algorithms
                    ));
                }
                (
                    vec![KeyEntry {
                        kid: None,
                        key,
                        validation: with_algorithms(&base, algs),
                    }],
                    false,
                )
            }
            KeySource::Jwks(text) => (parse_jwks(text, &s.algorithms, &base)?, true),
        };
        if let (Some(pem), None) = (&s.signing_key_pem, &signer) {
            signer = Some(asymmetric_signer(pem, &s.algorithms, &keys)?);
        }
        Ok(JwtVerifier {
            keys,
            by_kid,
            user_claim: s.user_claim,
            issuer: s.issuer,
            audience: s.audience,
            signer,
            cache: super::token_cache::TokenCache::new(s.leeway_secs),
        })
    }

    /// Verifies the token of an `Authorization` header value, as
    /// [`bearer_token`] then [`verify`](Self::verify) would, and returns the
    /// user identity. A token verified before is found in the cache before
    /// its bytes are checked one by one: only a valid token gets there.
    pub fn verify_bearer(&self, authorization: Option<&[u8]>) -> Result<String, AuthFailure> {
        let token = bearer_scheme(authorization)?;
        if let Some(cached) = self.cached(token) {
            return cached;
        }
        if !is_token68_all(token) {
            return Err(AuthFailure::Invalid);
        }
        self.verify_uncached(token)
    }

    /// Verifies a token and returns the user identity from the user claim.
    pub fn verify(&self, token: impl AsRef<[u8]>) -> Result<String, AuthFailure> {
        let token = token.as_ref();
        match self.cached(token) {
            Some(cached) => cached,
            None => self.verify_uncached(token),
        }
    }

    /// The answer for a token verified before, if it is still cached.
    fn cached(&self, token: &[u8]) -> Option<Result<String, AuthFailure>> {
        use super::token_cache::Cached;
        match self.cache.get(token, jsonwebtoken::get_current_timestamp()) {
            Cached::User(user) => Some(Ok(user)),
            Cached::Expired => Some(Err(AuthFailure::Expired)),
            Cached::Miss => None,
        }
    }

    fn verify_uncached(&self, token: &[u8]) -> Result<String, AuthFailure> {
        // Only a token that is not cached needs to be text (a cached one
        // was, when it verified).
        let text = std::str::from_utf8(token).map_err(|_| AuthFailure::Invalid)?;
        let payload = self.verified_payload(text)?;
        let user = user_from_payload(&payload, &self.user_claim)?;
        // Cached only when its time claims read as plain numbers.
        if let Ok(t) = serde_json::from_slice::<TimeClaims>(&payload) {
            self.cache.insert(token, &user, t.exp, t.nbf);
        }
        Ok(user)
    }

    /// Like [`verify`](Self::verify), but returns all claims as compact JSON
    /// (for `colorgate token verify`).
    pub fn verified_claims_json(&self, token: &str) -> Result<String, AuthFailure> {
        let payload = self.verified_payload(token)?;
        user_from_payload(&payload, &self.user_claim)?;
        let claims: Value = serde_json::from_slice(&payload).map_err(|_| AuthFailure::Invalid)?;
        Ok(claims.to_string())
    }

    /// Issues a token for `user` valid for `ttl_secs`. `extra` claims are
    /// `key=value` pairs: numbers and booleans keep their JSON type, anything
    /// else becomes a string.
    pub fn issue(
        &self,
        user: &str,
        ttl_secs: u64,
        extra: &[(String, String)],
    ) -> Result<String, String> {
        let signer = self.signer.as_ref().ok_or(
            "jwt: cannot issue: public-key algorithms need signing_key_pem (the private key)",
        )?;
        if !usable_identity(user) {
            return Err(format!(
                "jwt: the user {user:?} is not usable as an identity: it must be non-empty, \
                 without control characters or leading/trailing spaces"
            ));
        }
        let mut claims = serde_json::Map::new();
        for (name, raw) in extra {
            if RESERVED_CLAIMS.contains(&name.as_str()) || *name == self.user_claim {
                return Err(format!(
                    "jwt: claim `{name}` is set by the issuer and cannot be given as extra"
                ));
            }
            let value = match serde_json::from_str::<Value>(raw) {
                Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
                _ => Value::String(raw.clone()),
            };
            claims.insert(name.clone(), value);
        }
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(iss) = &self.issuer {
            claims.insert("iss".into(), iss.as_str().into());
        }
        // Written too, or tokens we issue would fail our own audience check.
        if let Some(aud) = &self.audience {
            claims.insert("aud".into(), aud.as_str().into());
        }
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), now.saturating_add(ttl_secs).into());
        claims.insert(self.user_claim.clone(), user.into());
        jsonwebtoken::encode(&signer.header, &claims, &signer.key)
            .map_err(|e| format!("jwt: signing failed: {e}"))
    }

    /// Checks signature and registered claims, and returns the decoded
    /// payload JSON for the caller to pick claims from.
    fn verified_payload(&self, token: &str) -> Result<Vec<u8>, AuthFailure> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthFailure::Invalid);
        }
        let entry = self.select_key(token)?;
        // `IgnoredAny`: the library parses claims only for its own checks;
        // we then read just the user claim instead of building a full map.
        jsonwebtoken::decode::<IgnoredAny>(token, &entry.key, &entry.validation)
            .map_err(map_error)?;
        let payload = token.split('.').nth(1).ok_or(AuthFailure::Invalid)?;
        URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| AuthFailure::Invalid)
    }

    fn select_key(&self, token: &str) -> Result<&KeyEntry, AuthFailure> {
        if !self.by_kid {
            return self.keys.first().ok_or(AuthFailure::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Invalid)?;
        match header.kid.as_deref() {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            // Without a kid only an unambiguous single-key set can be used.
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .ok_or(AuthFailure::Invalid)
    }
}

fn base_validation(s: &JwtSettings) -> Validation {
    let mut v = Validation::new(s.algorithms[0]);
    v.leeway = s.leeway_secs;
    v.validate_exp = true; // checks `exp` whenever present, required or not
    v.validate_nbf = true;
    // The library only checks iss/aud when present; requiring them closes
    // the "just leave the claim out" bypass.
    let mut required = HashSet::new();
    if s.require_exp {
        required.insert("exp".to_string());
    }
    if let Some(iss) = &s.issuer {
        v.set_issuer(&[iss]);
        required.insert("iss".to_string());
    }
    // Unset audience means "not checked", not "reject tokens that carry one".
    v.validate_aud = s.audience.is_some();
    if let Some(aud) = &s.audience {
        v.set_audience(&[aud]);
        required.insert("aud".to_string());
    }
    v.required_spec_claims = required;
    v
}

fn with_algorithms(base: &Validation, algorithms: Vec<Algorithm>) -> Validation {
    Validation {
        algorithms,
        ..base.clone()
    }
}

fn map_error(e: JwtError) -> AuthFailure {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
        ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => AuthFailure::MissingExp,
            "iss" => AuthFailure::WrongIssuer,
            "aud" => AuthFailure::WrongAudience,
            _ => AuthFailure::Invalid,
        },
        _ => AuthFailure::Invalid,
    }
}

/// The configured algorithms this public key may verify: same family, the
/// matching curve for ECDSA, and the JWK's own `alg` when it names one.
fn usable_algorithms(jwk: &Jwk, configured: &[Algorithm]) -> Vec<Algorithm> {
    let jwk_alg = jwk.common.key_algorithm.map(Algorithm::try_from);
    let mut out = Vec::new();
    for &alg in configured {
        let fits_key = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => alg.family() == AlgorithmFamily::Rsa,
            AlgorithmParameters::EllipticCurve(p) => matches!(
                (&p.curve, alg),
                (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
            ),
            AlgorithmParameters::OctetKeyPair(p) => {
                p.curve == EllipticCurve::Ed25519 && alg == Algorithm::EdDSA
            }
            _ => false,
        };
        let fits_jwk_alg = match &jwk_alg {
            None => true,
            Some(Ok(a)) => *a == alg,
            Some(Err(_)) => false, // e.g. an encryption algorithm
        };
        if fits_key && fits_jwk_alg && !out.contains(&alg) {
            out.push(alg);
        }
    }
    out
}

fn key_kind(jwk: &Jwk) -> String {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => "RSA".into(),
        AlgorithmParameters::EllipticCurve(p) => format!("EC {:?}", p.curve),
        AlgorithmParameters::OctetKeyPair(p) => format!("OKP {:?}", p.curve),
        _ => "unsupported type".into(),
    }
}

fn contains_private_key(pem: &[u8]) -> bool {
    pem.windows(11).any(|w| w == b"PRIVATE KEY")
}

fn parse_public_pem(pem: &[u8]) -> Result<(Jwk, DecodingKey), String> {
    if contains_private_key(pem) {
        return Err("jwt: public_key_pem holds a private key; configure the public key".into());
    }
    // The PEM's algorithm OID decides which parser accepts it.
    let key = DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|_| {
            "jwt: public_key_pem is not an RSA, EC or Ed25519 public key PEM".to_string()
        })?;
    // Converting to a JWK also parses the key material, so a corrupt key
    // fails here rather than on every request.
    let jwk =
        Jwk::from_decoding_key(&key, None).map_err(|e| format!("jwt: unusable public key: {e}"))?;
    Ok((jwk, key))
}

fn parse_jwks(
    text: &str,
    configured: &[Algorithm],
    base: &Validation,
) -> Result<Vec<KeyEntry>, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let raw: RawSet = serde_json::from_str(text)
        .map_err(|e| format!("jwt: JWKS is not a JSON object with a `keys` array: {e}"))?;
    let mut keys: Vec<KeyEntry> = Vec::new();
    // Keys are parsed one by one so that one exotic key (unknown kty, an
    // encryption key) does not make the whole set unusable.
    for (i, value) in raw.keys.into_iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(j) => j,
            Err(e) => {
                log::warn!("jwt: JWKS key #{i} skipped: {e}");
                continue;
            }
        };
        let label = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}"));
        let common = &jwk.common;
        let for_signatures = common
            .public_key_use
            .as_ref()
            .is_none_or(|u| *u == PublicKeyUse::Signature)
            && common
                .key_operations
                .as_ref()
                .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
        if !for_signatures {
            log::warn!("jwt: JWKS key {label} skipped: not a signature verification key");
            continue;
        }
        // Symmetric JWKs fall through here too: usable_algorithms never
        // returns HMAC algorithms, and HMAC configs are refused earlier.
        let algs = usable_algorithms(&jwk, configured);
        if algs.is_empty() {
            log::warn!(
                "jwt: JWKS key {label} ({}) skipped: fits none of {configured:?}",
                key_kind(&jwk)
            );
            continue;
        }
        let key = match DecodingKey::from_jwk(&jwk) {
            Ok(k) => k,
            Err(e) => {
                log::warn!("jwt: JWKS key {label} skipped: {e}");
                continue;
            }
        };
        if jwk.common.key_id.is_some() && keys.iter().any(|k| k.kid == jwk.common.key_id) {
            return Err(format!("jwt: JWKS has two keys with kid {label:?}"));
        }
        keys.push(KeyEntry {
            kid: jwk.common.key_id,
            key,
            validation: with_algorithms(base, algs),
        });
    }
    if keys.len() > 1 && keys.iter().any(|k| k.kid.is_none()) {
        // With several keys a token must name its key; kid-less ones are unreachable.
        log::warn!("jwt: JWKS keys without a kid are ignored when the set has several keys");
        keys.retain(|k| k.kid.is_some());
    }
    if keys.is_empty() {
        return Err(format!("jwt: JWKS has no key usable with {configured:?}"));
    }
    Ok(keys)
}

/// Loads the private key for `issue` and checks that it belongs to one of
/// the verification keys, so issued tokens verify; in JWKS mode the matching
/// key's `kid` goes into the header.
fn asymmetric_signer(
    pem: &[u8],
    configured: &[Algorithm],
    keys: &[KeyEntry],
) -> Result<Signer, String> {
    if !contains_private_key(pem) {
        return Err(
            "jwt: signing_key_pem holds no private key (expected \"BEGIN PRIVATE KEY\")".into(),
        );
    }
    let key = EncodingKey::from_rsa_pem(pem)
        .or_else(|_| EncodingKey::from_ec_pem(pem))
        .or_else(|_| EncodingKey::from_ed_pem(pem))
        .map_err(|_| {
            "jwt: signing_key_pem is not a PKCS#8 (or PKCS#1 RSA) private key PEM".to_string()
        })?;
    // Public parameters of each verification key, to compare against.
    let public: Vec<AlgorithmParameters> = keys
        .iter()
        .map(|k| Jwk::from_decoding_key(&k.key, None).map(|j| j.algorithm))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("jwt: verification key unusable: {e}"))?;
    for &alg in configured.iter().filter(|a| a.family() == key.family()) {
        let Ok(derived) = Jwk::from_encoding_key(&key, alg) else {
            continue;
        };
        for (entry, params) in keys.iter().zip(&public) {
            if *params == derived.algorithm && entry.validation.algorithms.contains(&alg) {
                let mut header = Header::new(alg);
                header.kid = entry.kid.clone();
                return Ok(Signer { key, header });
            }
        }
    }
    Err(format!(
        "jwt: signing_key_pem does not match a verification key usable with {configured:?}"
    ))
}

/// The identity is sent upstream as `X-User-Id` and keys per-user limits, so
/// it must arrive there unchanged: a control character makes it an invalid
/// header value (the request would fail with a 500), and an HTTP parser
/// strips surrounding spaces, so " alice" would be limited apart from
/// "alice" yet reach the upstream as her.
fn usable_identity(user: &str) -> bool {
    !user.is_empty()
        && !user.starts_with(' ')
        && !user.ends_with(' ')
        && !user.chars().any(char::is_control)
}

/// Reads the user claim without deserializing the other claims.
/// The claims the token cache re-checks on every hit.
#[derive(Deserialize)]
struct TimeClaims {
    exp: Option<u64>,
    nbf: Option<u64>,
}

fn user_from_payload(payload: &[u8], claim: &str) -> Result<String, AuthFailure> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    match UserClaim(claim).deserialize(&mut de) {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(AuthFailure::MissingUser),
        Err(_) => Err(AuthFailure::Invalid),
    }
}

/// Seed that scans the claims object for one key, skipping other values.
struct UserClaim<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for UserClaim<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for UserClaim<'_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JWT claims object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut user = None;
        let mut seen = false;
        while let Some(is_user) = map.next_key_seed(KeyIs(self.0))? {
            if !is_user {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            // A repeated claim is ambiguous between JSON parsers; refuse it.
            if seen {
                return Err(serde::de::Error::custom("duplicate user claim"));
            }
            seen = true;
            // Accept a usable string or an integer; floats, booleans,
            // objects... are not identities.
            user = match map.next_value::<Value>()? {
                Value::String(s) if usable_identity(&s) => Some(s),
                Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
                _ => None,
            };
        }
        Ok(user)
    }
}

/// Key seed: compares without allocating, also for keys with escapes.
struct KeyIs<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a claim name")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/");
    const ISSUER: &str = "https://auth.colorgate.test";

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}{name}")).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
    }

    /// Tokens made by PyJWT (see make_fixtures.py).
    fn token(name: &str) -> String {
        let all: HashMap<String, String> = serde_json::from_slice(&fixture("tokens.json")).unwrap();
        all.get(name)
            .unwrap_or_else(|| panic!("no token {name}"))
            .clone()
    }

    fn secret() -> Vec<u8> {
        String::from_utf8(fixture("hs_secret.txt"))
            .unwrap()
            .trim()
            .as_bytes()
            .to_vec()
    }

    fn settings(algorithms: &[Algorithm], key: KeySource) -> JwtSettings {
        JwtSettings {
            algorithms: algorithms.to_vec(),
            key,
            signing_key_pem: None,
            require_exp: true,
            issuer: None,
            audience: None,
            leeway_secs: 0,
            user_claim: "user_id".into(),
        }
    }

    fn hs(alg: Algorithm) -> JwtVerifier {
        JwtVerifier::new(settings(&[alg], KeySource::Secret(secret()))).unwrap()
    }

    fn pem(alg: Algorithm, public: &str) -> JwtVerifier {
        JwtVerifier::new(settings(&[alg], KeySource::PublicKeyPem(fixture(public)))).unwrap()
    }

    fn jwks() -> JwtSettings {
        let text = String::from_utf8(fixture("jwks.json")).unwrap();
        settings(&[Algorithm::RS256], KeySource::Jwks(text))
    }

    fn config_error(s: JwtSettings) -> String {
        JwtVerifier::new(s).expect_err("config should be refused")
    }

    /// HS256 token with arbitrary claims, signed here (for time-relative cases).
    fn hs256_with(claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&secret()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn hmac_tokens_from_pyjwt_verify_and_issue_roundtrips() {
        for (alg, name) in [
            (Algorithm::HS256, "hs256"),
            (Algorithm::HS384, "hs384"),
            (Algorithm::HS512, "hs512"),
        ] {
            let v = hs(alg);
            assert_eq!(
                v.verify(token(&format!("{name}_valid"))),
                Ok("alice".into()),
                "{name}"
            );
            let issued = v.issue("bob", 60, &[]).unwrap();
            assert_eq!(v.verify(&issued), Ok("bob".into()), "{name}");
        }
    }

    #[test]
    fn public_key_tokens_from_pyjwt_verify() {
        for (alg, public, name) in [
            (Algorithm::RS256, "rsa_public.pem", "rs256_valid"),
            (Algorithm::RS512, "rsa_public.pem", "rs512_valid"),
            (Algorithm::PS256, "rsa_public.pem", "ps256_valid"),
            (Algorithm::ES256, "ec256_public.pem", "es256_valid"),
            (Algorithm::ES384, "ec384_public.pem", "es384_valid"),
            (Algorithm::EdDSA, "ed25519_public.pem", "eddsa_valid"),
        ] {
            assert_eq!(
                pem(alg, public).verify(token(name)),
                Ok("alice".into()),
                "{name}"
            );
        }
    }

    #[test]
    fn public_key_issue_roundtrips_with_signing_key() {
        for (alg, key) in [
            (Algorithm::RS256, "rsa"),
            (Algorithm::PS384, "rsa"),
            (Algorithm::ES256, "ec256"),
            (Algorithm::ES384, "ec384"),
            (Algorithm::EdDSA, "ed25519"),
        ] {
            let mut s = settings(
                &[alg],
                KeySource::PublicKeyPem(fixture(&format!("{key}_public.pem"))),
            );
            s.signing_key_pem = Some(fixture(&format!("{key}_private.pem")));
            let v = JwtVerifier::new(s).unwrap();
            let issued = v.issue("carol", 60, &[]).unwrap();
            assert_eq!(v.verify(&issued), Ok("carol".into()), "{alg:?}");
        }
    }

    #[test]
    fn issue_without_signing_key_fails_for_public_key_algorithms() {
        let err = pem(Algorithm::RS256, "rsa_public.pem")
            .issue("x", 60, &[])
            .unwrap_err();
        assert!(err.contains("signing_key_pem"), "{err}");
    }

    #[test]
    fn algorithm_confusion_hs256_signed_with_public_key_is_invalid() {
        let v = pem(Algorithm::RS256, "rsa_public.pem");
        assert_eq!(
            v.verify(token("confusion_hs256_rsa_pubkey")),
            Err(AuthFailure::Invalid)
        );
    }

    #[test]
    fn alg_none_is_invalid() {
        assert_eq!(
            hs(Algorithm::HS256).verify(token("alg_none")),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            pem(Algorithm::RS256, "rsa_public.pem").verify(token("alg_none")),
            Err(AuthFailure::Invalid)
        );
    }

    #[test]
    fn token_alg_outside_configured_list_is_invalid() {
        // Right secret, but HS384 is not configured: the token's alg never chooses.
        assert_eq!(
            hs(Algorithm::HS256).verify(token("hs384_valid")),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            pem(Algorithm::RS256, "rsa_public.pem").verify(token("ps256_valid")),
            Err(AuthFailure::Invalid)
        );
    }

    #[test]
    fn bad_signature_and_malformed_tokens_are_invalid() {
        let v = hs(Algorithm::HS256);
        assert_eq!(
            v.verify(token("hs256_other_secret")),
            Err(AuthFailure::Invalid)
        );
        let good = token("hs256_valid");
        let mut parts: Vec<&str> = good.split('.').collect();
        let other = token("hs256_no_exp");
        parts[1] = other.split('.').nth(1).unwrap(); // payload swapped, signature kept
        assert_eq!(v.verify(parts.join(".")), Err(AuthFailure::Invalid));
        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "!!!.???.***",
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(v.verify(bad), Err(AuthFailure::Invalid), "{bad:.20}");
        }
    }

    #[test]
    fn time_and_issuer_failures_map_to_their_reasons() {
        let v = hs(Algorithm::HS256);
        assert_eq!(v.verify(token("hs256_expired")), Err(AuthFailure::Expired));
        assert_eq!(
            v.verify(token("hs256_nbf_future")),
            Err(AuthFailure::NotYetValid)
        );
        assert_eq!(
            v.verify(token("hs256_no_exp")),
            Err(AuthFailure::MissingExp)
        );
        assert_eq!(
            v.verify(token("hs256_no_user")),
            Err(AuthFailure::MissingUser)
        );
        // Issuer not configured: not checked.
        assert_eq!(v.verify(token("hs256_wrong_iss")), Ok("alice".into()));

        let mut s = settings(&[Algorithm::HS256], KeySource::Secret(secret()));
        s.issuer = Some(ISSUER.into());
        let v = JwtVerifier::new(s).unwrap();
        assert_eq!(v.verify(token("hs256_valid")), Ok("alice".into()));
        assert_eq!(
            v.verify(token("hs256_wrong_iss")),
            Err(AuthFailure::WrongIssuer)
        );
        assert_eq!(
            v.verify(token("hs256_no_iss")),
            Err(AuthFailure::WrongIssuer)
        );
    }

    #[test]
    fn audience_is_checked_only_when_configured() {
        let v = hs(Algorithm::HS256);
        assert_eq!(v.verify(token("hs256_wrong_aud")), Ok("alice".into()));
        let mut s = settings(&[Algorithm::HS256], KeySource::Secret(secret()));
        s.audience = Some("colorgate".into());
        let v = JwtVerifier::new(s).unwrap();
        assert_eq!(v.verify(token("hs256_valid")), Ok("alice".into()));
        assert_eq!(
            v.verify(token("hs256_wrong_aud")),
            Err(AuthFailure::WrongAudience)
        );
        let no_aud = hs256_with(json!({"user_id": "a", "exp": now() + 60}));
        assert_eq!(v.verify(&no_aud), Err(AuthFailure::WrongAudience));
    }

    #[test]
    fn exp_is_optional_when_not_required_but_still_enforced_when_present() {
        let mut s = settings(&[Algorithm::HS256], KeySource::Secret(secret()));
        s.require_exp = false;
        let v = JwtVerifier::new(s).unwrap();
        assert_eq!(v.verify(token("hs256_no_exp")), Ok("alice".into()));
        assert_eq!(v.verify(token("hs256_expired")), Err(AuthFailure::Expired));
    }

    #[test]
    fn leeway_applies_to_exp_and_nbf() {
        let mut s = settings(&[Algorithm::HS256], KeySource::Secret(secret()));
        s.leeway_secs = 30;
        let v = JwtVerifier::new(s).unwrap();
        let t = now();
        assert_eq!(
            v.verify(hs256_with(json!({"user_id": "a", "exp": t - 10}))),
            Ok("a".into())
        );
        assert_eq!(
            v.verify(hs256_with(json!({"user_id": "a", "exp": t - 60}))),
            Err(AuthFailure::Expired)
        );
        assert_eq!(
            v.verify(hs256_with(
                json!({"user_id": "a", "exp": t + 99, "nbf": t + 10})
            )),
            Ok("a".into())
        );
        let early = hs256_with(json!({"user_id": "a", "exp": t + 999, "nbf": t + 60}));
        assert_eq!(v.verify(&early), Err(AuthFailure::NotYetValid));
        // Without leeway the 10-seconds-expired token fails.
        let strict = hs(Algorithm::HS256);
        assert_eq!(
            strict.verify(hs256_with(json!({"user_id": "a", "exp": t - 10}))),
            Err(AuthFailure::Expired)
        );
    }

    #[test]
    fn user_claim_accepts_strings_and_integers_only() {
        let v = hs(Algorithm::HS256);
        assert_eq!(v.verify(token("hs256_numeric_user")), Ok("42".into()));
        let exp = now() + 60;
        for bad in [
            json!(""),
            json!("a\nb"),
            json!("a\r\nX-Admin: 1"),
            json!("a\tb"),
            json!("a\u{7f}"),
            json!(" alice"),
            json!("alice "),
            json!(1.5),
            json!(true),
            json!(null),
            json!({"id": 1}),
            json!(["a"]),
        ] {
            let t = hs256_with(json!({"user_id": bad, "exp": exp}));
            assert_eq!(v.verify(&t), Err(AuthFailure::MissingUser), "{bad}");
        }
        let escaped_key = hs256_raw(&format!(r#"{{"user\u005fid":"esc","exp":{exp}}}"#));
        assert_eq!(v.verify(&escaped_key), Ok("esc".into()));
        let not_object = hs256_raw(r#"["user_id","a"]"#);
        assert_eq!(v.verify(&not_object), Err(AuthFailure::Invalid));
    }

    #[test]
    fn user_claim_name_is_configurable() {
        let mut s = settings(&[Algorithm::HS256], KeySource::Secret(secret()));
        s.user_claim = "sub".into();
        let v = JwtVerifier::new(s).unwrap();
        assert_eq!(
            v.verify(token("hs256_valid")),
            Err(AuthFailure::MissingUser)
        );
        assert_eq!(
            v.verify(hs256_with(json!({"sub": "dave", "exp": now() + 60}))),
            Ok("dave".into())
        );
    }

    /// HS256 token over exact claims JSON text (escapes, duplicate keys).
    fn hs256_raw(claims: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
        let key = EncodingKey::from_secret(&secret());
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{message}.{sig}")
    }

    #[test]
    fn duplicate_user_claim_is_invalid() {
        let t = hs256_raw(&format!(
            r#"{{"user_id":"a","exp":{},"user_id":"b"}}"#,
            now() + 60
        ));
        assert_eq!(hs(Algorithm::HS256).verify(&t), Err(AuthFailure::Invalid));
    }

    #[test]
    fn jwks_rotation_selects_key_by_kid() {
        let v = JwtVerifier::new(jwks()).unwrap();
        assert_eq!(v.verify(token("jwks_2024-a")), Ok("alice".into()));
        assert_eq!(v.verify(token("jwks_2025-b")), Ok("alice".into()));
        assert_eq!(
            v.verify(token("jwks_unknown_kid")),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            v.verify(token("jwks_kid_mismatch")),
            Err(AuthFailure::Invalid)
        );
        // Two keys: a token has to say which one.
        assert_eq!(v.verify(token("jwks_no_kid")), Err(AuthFailure::Invalid));
        assert_eq!(
            v.verify(token("confusion_hs256_rsa_pubkey")),
            Err(AuthFailure::Invalid)
        );
    }

    #[test]
    fn jwks_issue_uses_the_matching_kid() {
        let mut s = jwks();
        s.signing_key_pem = Some(fixture("rsa2_private.pem"));
        let v = JwtVerifier::new(s).unwrap();
        let issued = v.issue("erin", 60, &[]).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&issued).unwrap().kid.as_deref(),
            Some("2025-b")
        );
        assert_eq!(v.verify(&issued), Ok("erin".into()));
    }

    #[test]
    fn jwks_skips_unusable_keys_and_single_key_needs_no_kid() {
        let set: Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
        let first = set["keys"][0].clone();
        let doc = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "enc", "use": "enc"},
            {"kty": "weird", "kid": "w"},
            first,
        ]});
        let v = JwtVerifier::new(settings(
            &[Algorithm::RS256],
            KeySource::Jwks(doc.to_string()),
        ))
        .unwrap();
        assert_eq!(v.verify(token("jwks_no_kid")), Ok("alice".into()));
        assert_eq!(v.verify(token("jwks_2024-a")), Ok("alice".into()));
        assert_eq!(v.verify(token("jwks_2025-b")), Err(AuthFailure::Invalid));
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        let rsa = || KeySource::PublicKeyPem(fixture("rsa_public.pem"));
        let cases: Vec<(JwtSettings, &str)> = vec![
            (settings(&[], KeySource::Secret(secret())), "no algorithms"),
            (
                settings(&[Algorithm::HS256, Algorithm::RS256], rsa()),
                "mix",
            ),
            (
                settings(&[Algorithm::RS256], KeySource::Secret(secret())),
                "secret only works",
            ),
            (settings(&[Algorithm::HS256], rsa()), "need a secret"),
            (
                settings(&[Algorithm::HS256], KeySource::Secret(Vec::new())),
                "empty",
            ),
            (
                settings(
                    &[Algorithm::RS256],
                    KeySource::PublicKeyPem(b"not a pem".to_vec()),
                ),
                "not an RSA",
            ),
            (
                settings(
                    &[Algorithm::RS256],
                    KeySource::PublicKeyPem(fixture("rsa_private.pem")),
                ),
                "private key",
            ),
            (
                settings(
                    &[Algorithm::RS256],
                    KeySource::PublicKeyPem(fixture("ec256_public.pem")),
                ),
                "cannot verify",
            ),
            (
                settings(
                    &[Algorithm::ES384],
                    KeySource::PublicKeyPem(fixture("ec256_public.pem")),
                ),
                "cannot verify",
            ),
            (
                settings(&[Algorithm::RS256], KeySource::Jwks("[]".into())),
                "keys",
            ),
            (settings(&[Algorithm::ES256], jwks().key), "no key usable"),
        ];
        for (s, expected) in cases {
            let err = config_error(s);
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
        let mut s = settings(&[Algorithm::HS256], KeySource::Secret(secret()));
        s.leeway_secs = u64::MAX;
        assert!(config_error(s).contains("leeway"));
        let mut s = settings(&[Algorithm::HS256], KeySource::Secret(secret()));
        s.signing_key_pem = Some(fixture("rsa_private.pem"));
        assert!(config_error(s).contains("signing_key_pem"));
        let mut s = settings(&[Algorithm::RS256], rsa());
        s.signing_key_pem = Some(fixture("rsa2_private.pem"));
        assert!(config_error(s).contains("does not match"));
        let mut s = settings(&[Algorithm::RS256], rsa());
        s.signing_key_pem = Some(fixture("rsa_public.pem"));
        assert!(config_error(s).contains("no private key"));
        let mut s = settings(&[Algorithm::HS256], KeySource::Secret(secret()));
        s.user_claim = String::new();
        assert!(config_error(s).contains("user_claim"));
        let first =
            serde_json::from_slice::<Value>(&fixture("jwks.json")).unwrap()["keys"][0].clone();
        let dup = json!({"keys": [first.clone(), first]});
        assert!(config_error(settings(
            &[Algorithm::RS256],
            KeySource::Jwks(dup.to_string())
        ))
        .contains("two keys"));
    }

    #[test]
    fn issue_writes_standard_and_extra_claims() {
        let mut s = settings(&[Algorithm::HS256], KeySource::Secret(secret()));
        s.issuer = Some(ISSUER.into());
        s.audience = Some("colorgate".into());
        let v = JwtVerifier::new(s).unwrap();
        let extra = [
            ("tier", "gold"),
            ("quota", "5"),
            ("beta", "true"),
            ("note", "[1]"),
        ]
        .map(|(k, val)| (k.to_string(), val.to_string()));
        let issued = v.issue("frank", 300, &extra).unwrap();
        let claims: Value =
            serde_json::from_str(&v.verified_claims_json(&issued).unwrap()).unwrap();
        assert_eq!(claims["user_id"], "frank");
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["aud"], "colorgate");
        assert_eq!(
            (
                claims["tier"].clone(),
                claims["quota"].clone(),
                claims["beta"].clone()
            ),
            (json!("gold"), json!(5), json!(true))
        );
        assert_eq!(claims["note"], "[1]");
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, 300);
        for reserved in ["exp", "iss", "user_id"] {
            assert!(
                v.issue("x", 60, &[(reserved.into(), "1".into())]).is_err(),
                "{reserved}"
            );
        }
        for bad_user in ["", "a\nb", " frank", "frank "] {
            assert!(v.issue(bad_user, 60, &[]).is_err(), "{bad_user:?}");
        }
        assert_eq!(
            v.verify(v.issue("名前 with inner spaces", 60, &[]).unwrap()),
            Ok("名前 with inner spaces".into())
        );
        assert_eq!(
            v.verified_claims_json(&token("hs256_expired")),
            Err(AuthFailure::Expired)
        );
    }

    #[test]
    fn bearer_header_parsing() {
        fn ok(h: &str) -> Result<&str, AuthFailure> {
            bearer_token(Some(h.as_bytes())).map(|t| std::str::from_utf8(t).unwrap())
        }
        assert_eq!(bearer_token(None), Err(AuthFailure::Missing));
        assert_eq!(ok("Bearer a.b.c"), Ok("a.b.c"));
        assert_eq!(ok("bearer    a.b.c"), Ok("a.b.c"));
        assert_eq!(ok("BEARER a-b_c.d=.e~+/"), Ok("a-b_c.d=.e~+/"));
        assert_eq!(ok("  Bearer a.b.c  "), Ok("a.b.c"));
        for missing in [
            "",
            "Basic dXNlcjpwYXNz",
            "Bearerx.y.z",
            "Token a.b.c",
            "Bear",
        ] {
            assert_eq!(ok(missing), Err(AuthFailure::Missing), "{missing:?}");
        }
        for invalid in [
            "Bearer",
            "Bearer ",
            "Bearer     ",
            "Bearer a b",
            "Bearer a,b",
            "Bearer \"a\"",
        ] {
            assert_eq!(ok(invalid), Err(AuthFailure::Invalid), "{invalid:?}");
        }
        assert_eq!(
            bearer_token(Some(b"Bearer a\xffb")),
            Err(AuthFailure::Invalid)
        );
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(ok(&long), Err(AuthFailure::Invalid));
    }

    #[test]
    fn verify_bearer_answers_as_parsing_then_verifying_cached_or_not() {
        let v = hs(Algorithm::HS256);
        let good = token("hs256_valid");
        let headers = [
            None,
            Some(format!("Bearer {good}")),
            Some(format!("bearer   {good}  ")),
            Some(format!("Bearer {good}x")),
            Some(format!("Bearer {good} x")),
            Some(format!("Bearer \"{good}\"")),
            Some(format!("Basic {good}")),
            Some(format!("Bearer {}", token("hs256_expired"))),
            Some("Bearer a,b".into()),
            Some("Bearer".into()),
            Some(format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1))),
        ];
        // Twice: the second round finds every token that verified cached.
        for round in 0..2 {
            for h in &headers {
                let h = h.as_deref().map(str::as_bytes);
                let want = bearer_token(h).and_then(|t| v.verify(t));
                assert_eq!(v.verify_bearer(h), want, "round {round}: {h:?}");
            }
        }
        // Bytes that are not token68 are refused, cached token or not.
        let mut bad = format!("Bearer {good}").into_bytes();
        bad.push(0xff);
        assert_eq!(v.verify_bearer(Some(&bad)), Err(AuthFailure::Invalid));
    }

    #[test]
    fn failure_reasons_are_stable_strings() {
        let all = [
            (AuthFailure::Missing, "missing"),
            (AuthFailure::Invalid, "invalid"),
            (AuthFailure::Expired, "expired"),
            (AuthFailure::NotYetValid, "not_yet_valid"),
            (AuthFailure::WrongIssuer, "wrong_issuer"),
            (AuthFailure::WrongAudience, "wrong_audience"),
            (AuthFailure::MissingExp, "missing_exp"),
            (AuthFailure::MissingUser, "missing_user"),
        ];
        for (f, s) in all {
            assert_eq!(
                (f.as_str(), f.to_string(), f.is_missing()),
                (s, s.to_string(), s == "missing")
            );
        }
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let mut s = settings(&[Algorithm::RS256], KeySource::Secret(secret()));
        s.signing_key_pem = Some(fixture("rsa_private.pem"));
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("colorgate-test")
                && !shown.contains("BEGIN")
                && !shown.contains("99, 111"),
            "{shown}"
        );
        let v = hs(Algorithm::HS256);
        assert!(!format!("{v:?}").contains("99, 111"));
    }

    /// Rough hot-path timing: `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn hs256_verify_timing() {
        let v = hs(Algorithm::HS256);
        let t = token("hs256_valid");
        let n = 200_000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(v.verify(std::hint::black_box(&t)).is_ok());
        }
        println!("HS256 verify: {:?} per token", start.elapsed() / n);
    }
}
