//! TLS material: certificate chains and keys are read and checked at load
//! (so `check` and reload refuse a missing, unreadable or mismatched pair
//! with the key path instead of failing at the first handshake).

use pingora_rustls::{load_certs_and_key_files, ServerConfig};
use std::path::Path;

/// Read a PEM chain and key and check that they belong together.
pub fn check_pair(cert: &Path, key: &Path) -> Result<(), String> {
    for (what, p) in [("cert", cert), ("key", key)] {
        std::fs::metadata(p).map_err(|e| format!("{what} {}: {e}", p.display()))?;
    }
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let loaded = load_certs_and_key_files(&c, &k)
        .map_err(|e| format!("cannot load {c} / {k}: {e}"))?
        .ok_or_else(|| format!("no certificate in {c} or no private key in {k}"))?;
    pingora_rustls::install_default_crypto_provider();
    ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(loaded.0, loaded.1)
        .map_err(|e| format!("certificate {c} and key {k} do not match: {e}"))?;
    Ok(())
}

/// Pingora's listener settings for a TLS listener: our checked pair, ALPN
/// `h2` + `http/1.1` when HTTP/2 is on.
pub fn settings(
    tls: &crate::gateway::TlsSpec,
    http2: bool,
) -> Result<pingora_core::listeners::tls::TlsSettings, String> {
    let (c, k) = (
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let mut s = pingora_core::listeners::tls::TlsSettings::intermediate(&c, &k)
        .map_err(|e| format!("tls {c}: {e}"))?;
    if http2 {
        s.enable_h2();
    }
    Ok(s)
}
