//! SIGHUP: re-read the config file and every file it names, validate it
//! exactly as `check` does, and swap it in whole. A bad config is refused,
//! logged at ERROR with its key paths, counted, and the old one keeps
//! serving. Rate-limit zones and in-flight counters carry over (see
//! `config::compile`).

use crate::access_log::AccessLog;
use crate::gateway::SharedGateway;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone)]
pub struct Reloader {
    pub file: PathBuf,
    pub gateway: SharedGateway,
    /// The TLS listeners' certificates, re-read on every reload.
    pub certs: crate::tls::ListenerCerts,
}

impl Reloader {
    pub fn new(file: PathBuf, gateway: SharedGateway) -> Reloader {
        Reloader {
            file,
            gateway,
            certs: Default::default(),
        }
    }
}

impl Reloader {
    /// Returns true when the new config was installed.
    pub fn reload(&self, access_log: &Arc<AccessLog>) -> bool {
        let m = crate::metrics::get();
        let old = self.gateway.load_full();
        match crate::config::load(&self.file, Some(&old)) {
            Ok(new) => {
                for what in crate::server::restart_only_changes(&old, &new) {
                    log::warn!("reload: {what} changed; it takes effect only after a restart or an upgrade with `colorgate run -u`");
                }
                // Validation already loaded every pair; this swaps them in.
                for e in self.certs.reload(&new.process.listeners) {
                    log::error!("reload: {e}; the old certificate keeps serving");
                }
                if new.access_log_path != old.access_log_path {
                    access_log.set_path(&new.access_log_path);
                }
                crate::server::apply_header_timeout(&new);
                self.gateway.store(Arc::new(new));
                m.reloads.with_label_values(&["ok"]).inc();
                log::info!("reload: {} applied", self.file.display());
                true
            }
            Err(errors) => {
                m.reloads.with_label_values(&["error"]).inc();
                log::error!("reload refused, the previous config keeps serving:\n{errors}");
                false
            }
        }
    }
}
