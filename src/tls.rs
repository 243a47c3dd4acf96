//! TLS material for the HTTPS listeners. Certificates and keys are read and
//! checked at load (so `check` and reload refuse a missing, unreadable or
//! mismatched pair with its key path instead of failing at the first
//! handshake), and served through a [`CertResolver`] whose pair a reload
//! swaps: new connections get the new certificate, open ones keep theirs.

use crate::gateway::TlsSpec;
use arc_swap::ArcSwap;
use pingora_rustls::sign::{CertifiedKey, Signer, SigningKey};
use pingora_rustls::{
    load_certs_and_key_files, ClientHello, CryptoProvider, ResolvesServerCert, SignatureScheme,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Read a PEM chain and key and check that they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    for (what, p) in [("cert", cert), ("key", key)] {
        std::fs::metadata(p).map_err(|e| format!("{what} {}: {e}", p.display()))?;
    }
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let (chain, key) = load_certs_and_key_files(&c, &k)
        .map_err(|e| format!("cannot load {c} / {k}: {e}"))?
        .ok_or_else(|| format!("no certificate in {c} or no private key in {k}"))?;
    pingora_rustls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or("no TLS crypto provider")?;
    CertifiedKey::from_der(chain, key.clone_key(), provider)
        .map_err(|e| format!("certificate {c} and key {k} do not match: {e}"))
}

/// Used by config validation.
pub fn check_pair(cert: &Path, key: &Path) -> Result<(), String> {
    load_pair(cert, key).map(|_| ())
}

/// Serves the current pair of one listener; reload replaces it.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
    /// `min_version: "1.3"`: Pingora's acceptor always offers 1.2 and 1.3,
    /// so a client that offers no TLS 1.3 cipher suite gets no certificate.
    tls13_only: bool,
}

impl CertResolver {
    fn new(pair: CertifiedKey, tls13_only: bool) -> Self {
        CertResolver {
            current: ArcSwap::from_pointee(Self::guard(pair, tls13_only)),
            tls13_only,
        }
    }

    fn store(&self, pair: CertifiedKey) {
        self.current
            .store(Arc::new(Self::guard(pair, self.tls13_only)));
    }

    /// With `min_version: "1.3"` the key signs only TLS 1.3 handshakes.
    fn guard(pair: CertifiedKey, tls13_only: bool) -> CertifiedKey {
        if !tls13_only {
            return pair;
        }
        CertifiedKey {
            key: Arc::new(Tls13OnlyKey(pair.key.clone())),
            ..pair
        }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.tls13_only
            && !hello
                .cipher_suites()
                .iter()
                .any(|s| is_tls13_suite(u16::from(*s)))
        {
            return None;
        }
        Some(self.current.load_full())
    }
}

/// The cipher-suite check above cannot see the version the server already
/// chose: a client capped at TLS 1.2 may still list the TLS 1.3 suites (every
/// rustls client does). What the key is asked to sign tells them apart: a
/// TLS 1.3 server signs only its CertificateVerify (RFC 8446 4.4.3: 64
/// spaces, this context string, a zero byte, the transcript hash), a TLS 1.2
/// one only its ServerKeyExchange (client random, server random, params).
/// Refusing the latter fails every TLS 1.2 handshake on the listener.
#[derive(Debug)]
struct Tls13OnlyKey(Arc<dyn SigningKey>);

#[derive(Debug)]
struct Tls13OnlySigner(Box<dyn Signer>);

impl SigningKey for Tls13OnlyKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let signer = self.0.choose_scheme(offered)?;
        Some(Box::new(Tls13OnlySigner(signer)))
    }
    fn public_key(&self) -> Option<rustls::pki_types::SubjectPublicKeyInfoDer<'_>> {
        self.0.public_key()
    }
    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        self.0.algorithm()
    }
}

impl Signer for Tls13OnlySigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        const CONTEXT: &[u8] = b"TLS 1.3, server CertificateVerify\0";
        let tls13 = message.len() > 64 + CONTEXT.len()
            && message[..64].iter().all(|b| *b == b' ')
            && message[64..].starts_with(CONTEXT);
        if !tls13 {
            return Err(rustls::Error::General(
                "TLS 1.2 on a min_version \"1.3\" listener".into(),
            ));
        }
        self.0.sign(message)
    }
    fn scheme(&self) -> SignatureScheme {
        self.0.scheme()
    }
}

fn is_tls13_suite(id: u16) -> bool {
    // TLS_AES_128_GCM_SHA256 .. TLS_AES_128_CCM_8_SHA256 (RFC 8446 B.4).
    (0x1301..=0x1305).contains(&id)
}

/// The resolvers of this process's TLS listeners, by address.
#[derive(Debug, Default, Clone)]
pub struct ListenerCerts(Arc<Mutex<HashMap<SocketAddr, Arc<CertResolver>>>>);

impl ListenerCerts {
    /// Pingora's listener settings for a TLS listener, ALPN `h2` and
    /// `http/1.1` when HTTP/2 is on.
    pub fn settings(
        &self,
        addr: SocketAddr,
        tls: &TlsSpec,
        http2: bool,
    ) -> Result<pingora_core::listeners::tls::TlsSettings, String> {
        let pair = load_pair(&tls.cert, &tls.key)?;
        let resolver = Arc::new(CertResolver::new(pair, tls.min_tls13));
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, resolver.clone());
        // No paths: the resolver, which takes precedence, serves the pair.
        let mut s = pingora_core::listeners::tls::TlsSettings::intermediate("", "")
            .map_err(|e| format!("tls {addr}: {e}"))?;
        s.set_cert_resolver(resolver);
        if http2 {
            s.enable_h2();
        }
        Ok(s)
    }

    /// Re-read every listener's pair (SIGHUP). Errors leave that listener's
    /// old pair serving.
    pub fn reload(&self, listeners: &[crate::gateway::ListenerSpec]) -> Vec<String> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut errors = Vec::new();
        for l in listeners {
            let (Some(tls), Some(resolver)) = (&l.tls, map.get(&l.addr)) else {
                continue;
            };
            match load_pair(&tls.cert, &tls.key) {
                Ok(pair) => resolver.store(pair),
                Err(e) => errors.push(format!("listener {}: {e}", l.addr)),
            }
        }
        errors
    }
}
