//! Turning a compiled gateway into a running Pingora server: one proxy
//! service per kind of listener (plain, TLS, redirect), the admin service,
//! our signal handling (SIGHUP reload, SIGUSR1 reopen logs, SIGQUIT/SIGTERM/
//! SIGINT as Pingora defines them), and the final access-log flush.

use crate::access_log::AccessLog;
use crate::admin::Admin;
use crate::gateway::{Gateway, ListenerSpec, SharedGateway};
use crate::proxy::{ListenerKind, Proxy};
use crate::reload::Reloader;
use async_trait::async_trait;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::listening::Service;
use pingora_core::services::ServiceWithDependents;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

/// How `run` was asked to start.
#[derive(Debug, Default, Clone, Copy)]
pub struct StartMode {
    pub upgrade: bool,
    pub daemon: bool,
}

/// Build and run the server until it is told to stop. `extra` services
/// (the demo's stand-in colorizer) run in the same process.
pub fn run(
    gateway: SharedGateway,
    reloader: Option<Reloader>,
    mode: StartMode,
    extra: Vec<Box<dyn ServiceWithDependents>>,
) -> Result<(), String> {
    let gw = gateway.load_full();
    let access_log = Arc::new(
        AccessLog::start(&gw.access_log_path)
            .map_err(|e| format!("access_log.path {}: {e}", gw.access_log_path))?,
    );
    // Nothing here reads the streams' pending-read and -write times
    // (Pingora's timing digest), and keeping them reads the clock four
    // times per request (vendor/README.md, patch 27).
    pingora_core::protocols::l4::stream::set_pending_time_tracking(false);
    apply_header_timeout(&gw);
    let p = &gw.process;
    let conf = server_conf(p, mode);
    let opt = Opt {
        upgrade: mode.upgrade,
        daemon: mode.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // Daemonized, the bootstrap (which takes the sockets over on `-u` and
    // tells the launcher to return) must run after the fork: as a service
    // every other service waits for. In the foreground it runs right here.
    let bootstrap = if mode.daemon {
        Some(server.bootstrap_as_a_service())
    } else {
        server.bootstrap();
        None
    };
    let after_bootstrap = |h: pingora_core::services::ServiceHandle| {
        if let Some(b) = &bootstrap {
            h.add_dependency(b);
        }
    };

    let certs = reloader
        .as_ref()
        .map(|r| r.certs.clone())
        .unwrap_or_default();
    let tls_port = p
        .listeners
        .iter()
        .find(|l| l.tls.is_some())
        .map(|l| l.addr.port());
    for l in &p.listeners {
        let kind = match (l.redirect_https, &l.tls, tls_port) {
            (true, _, Some(port)) => ListenerKind::RedirectHttps { tls_port: port },
            (_, Some(_), _) => ListenerKind::Tls,
            _ => ListenerKind::Plain,
        };
        let proxy = Proxy {
            gateway: gateway.clone(),
            access_log: access_log.clone(),
            kind,
        };
        let mut svc = pingora_proxy::http_proxy_service_with_name(
            &server.configuration,
            proxy,
            &format!("colorgate {}", l.addr),
        );
        if let Some(app) = svc.app_logic_mut() {
            // nginx's keepalive_timeout closes idle HTTP/2 connections too;
            // Pingora keeps them for ever unless told.
            let mut options = pingora_core::apps::HttpServerOptions::default();
            // Pingora may end a connection idle for 0 s before its first
            // stream arrives: with keep-alive off (0s) a client still gets 1 s.
            options.h2_idle_timeout = Some(gw.keepalive_timeout.max(Duration::from_secs(1)));
            app.server_options = Some(options);
        }
        if p.cpu_affinity {
            // Each listener's threads, pinned in turn to the CPUs
            // (vendor/README.md, patch 38), as nginx pins its workers.
            svc.set_runtime_opts_override(std::sync::Arc::new(|global| {
                Some(pingora_core::server::RuntimeOpts {
                    cpu_affinity: true,
                    ..global.clone()
                })
            }));
        }
        add_listener(&mut svc, l, &certs)?;
        after_bootstrap(server.add_service(svc));
    }
    if let Some(addr) = p.admin {
        let mut admin = Service::new(
            "colorgate admin".to_string(),
            Admin {
                gateway: gateway.clone(),
                started: Instant::now(),
            },
        );
        admin.add_tcp(&addr.to_string());
        admin.threads = Some(1);
        after_bootstrap(server.add_service(admin));
    }
    // Health checks run in the serving process (after a -d fork).
    let checker = crate::health::HealthChecker {
        gateway: gateway.clone(),
    };
    after_bootstrap(
        server.add_service(pingora_core::services::background::background_service(
            "health checks",
            checker,
        )),
    );
    for svc in extra {
        after_bootstrap(server.add_boxed_service(svc));
    }
    drop(gw);

    let signals = Signals {
        reloader,
        access_log: access_log.clone(),
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    // Every line of the requests that finished in the grace period.
    access_log.flush();
    Ok(())
}

fn add_listener<A>(
    svc: &mut Service<A>,
    l: &ListenerSpec,
    certs: &crate::tls::ListenerCerts,
) -> Result<(), String> {
    let addr = l.addr.to_string();
    match &l.tls {
        None => {
            // No read buffer under plain HTTP: Pingora reads headers and bodies
            // into buffers of its own, so the default 64 KiB only added a copy.
            // (TLS keeps it, as rustls reads records in pieces of 4 KiB; it
            // exists only while a body streams in: vendor patch 49.)
            let unbuffered = L4BufferSettings::default().read(0);
            svc.add_listener(ListenerConfig::tcp(&addr).l4_buffer(unbuffered))
        }
        Some(tls) => {
            let settings = certs.settings(l.addr, tls, l.http2)?;
            svc.add_tls_with_settings(&addr, None, settings);
        }
    }
    Ok(())
}

/// Pingora's shutdown signals, plus the two it does not know: SIGHUP and SIGUSR1.
struct Signals {
    reloader: Option<Reloader>,
    access_log: Arc<AccessLog>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let streams = (|| {
            Ok::<_, std::io::Error>((
                signal(SignalKind::hangup())?,
                signal(SignalKind::user_defined1())?,
                signal(SignalKind::quit())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })();
        let (mut hup, mut usr1, mut quit, mut term, mut int) = match streams {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot install signal handlers: {e}");
                return ShutdownSignal::FastShutdown;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => match &self.reloader {
                    // Reading files is blocking: keep it off the runtime's worker.
                    Some(r) => {
                        let r = r.clone();
                        let log = self.access_log.clone();
                        let _ = tokio::task::spawn_blocking(move || r.reload(&log)).await;
                    }
                    None => log::warn!("SIGHUP: this instance has no config file to reload"),
                },
                _ = usr1.recv() => {
                    log::info!("SIGUSR1: reopening the access log");
                    // Waits (briefly) for the writer thread: off the runtime's worker.
                    let log = self.access_log.clone();
                    let _ = tokio::task::spawn_blocking(move || log.reopen()).await;
                }
                // The log is flushed when the drain ends (after `run`), not
                // here: the new process is waiting for the sockets.
                _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
                _ = term.recv() => return ShutdownSignal::GracefulTerminate,
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
    }
}

/// Pingora's settings for the process settings of the config.
fn server_conf(p: &crate::gateway::ProcessSettings, mode: StartMode) -> ServerConf {
    ServerConf {
        threads: p.threads,
        pid_file: p.pid_file.clone(),
        upgrade_sock: p.upgrade_sock.clone(),
        // Drain for the configured time, never Pingora's 300 s default.
        grace_period_seconds: Some(p.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(p.grace_period.as_secs().max(1)),
        upstream_keepalive_pool_size: p.keepalive_pool,
        daemon: mode.daemon,
        // The launcher of `run -d` returns once the daemon has bootstrapped
        // (pid file written, listening sockets taken over on -u): Pingora's
        // daemon_wait_for_ready, with the race in 0.9.1's launcher fixed in
        // vendor/pingora-core (vendor/README.md, patch 5).
        daemon_wait_for_ready: mode.daemon,
        work_stealing: p.work_stealing,
        ..ServerConf::default()
    }
}

/// `limits.header_timeout`, which Pingora applies while it reads a header,
/// before any hook of ours runs (vendor/README.md, patch 32): set at start
/// and by every reload.
pub fn apply_header_timeout(gw: &Gateway) {
    pingora_core::protocols::http::v1::server::set_header_timeout(Some(gw.header_timeout));
}

/// Used by `check`, `run` and reload: what a new config would change that
/// only a restart (`-u`) can apply.
pub fn restart_only_changes(old: &Gateway, new: &Gateway) -> Vec<&'static str> {
    let (a, b) = (&old.process, &new.process);
    let mut out = Vec::new();
    if a.listeners != b.listeners {
        out.push("listeners");
    }
    if a.threads != b.threads {
        out.push("server.threads");
    }
    if a.work_stealing != b.work_stealing {
        out.push("server.work_stealing");
    }
    if a.cpu_affinity != b.cpu_affinity {
        out.push("server.cpu_affinity");
    }
    if a.admin != b.admin {
        out.push("server.admin");
    }
    if a.pid_file != b.pid_file
        || a.upgrade_sock != b.upgrade_sock
        || a.grace_period != b.grace_period
    {
        out.push("server.pid_file/upgrade_sock/grace_period");
    }
    if old.keepalive_timeout != new.keepalive_timeout {
        // HTTP/1 takes the new one now; HTTP/2's idle timeout is set per service.
        out.push("limits.keepalive_timeout (for HTTP/2 connections)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{server_conf, StartMode};
    use pingora_core::protocols::l4::stream::{set_pending_time_tracking, Stream};
    use pingora_core::protocols::GetTimingDigest;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The switch `run` turns off: with it on, a read that waits for the
    /// peer adds its wait to the stream's pending time; off, nothing does.
    #[tokio::test]
    async fn streams_time_their_waits_only_while_tracking_is_on() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut server: Stream = listener.accept().await.unwrap().0.into();
        let wait = Duration::from_millis(20);
        for on in [true, false, true] {
            set_pending_time_tracking(on);
            let before = server.get_read_pending_time();
            let mut buf = [0u8; 1];
            // The read is polled (and pends) before the byte is sent.
            let (read, _) = tokio::join!(server.read(&mut buf), async {
                tokio::time::sleep(wait).await;
                client.write_all(b"x").await.unwrap();
            });
            assert_eq!(read.unwrap(), 1);
            let added = server.get_read_pending_time() - before;
            if on {
                assert!(added >= wait, "tracking on: {added:?} added");
            } else {
                assert_eq!(added, Duration::ZERO, "tracking off");
            }
        }
    }

    /// `server.work_stealing` reaches Pingora's settings, and is off (a
    /// runtime per thread, nginx's model) when the key is left out.
    #[test]
    fn work_stealing_is_pingoras_setting_and_off_by_default() {
        let conf = |server: &str| {
            let yaml = format!(
                "server:\n{server}upstreams:\n  app:\n    servers: [\"127.0.0.1:9\"]\n\
                 routes:\n  - path: /\n    upstream: app\n    auth: none\n"
            );
            let gw = crate::config::load_str(&yaml, std::path::Path::new("t.yaml"), None)
                .unwrap_or_else(|e| panic!("{e}"));
            server_conf(&gw.process, StartMode::default())
        };
        assert!(!conf("  threads: 2\n").work_stealing);
        assert!(!conf("  work_stealing: false\n").work_stealing);
        assert!(conf("  work_stealing: true\n").work_stealing);
    }
}
