//! colorgate: an API gateway for GPU-bound model APIs (DeOldify and
//! friends), built on Pingora. One binary and one YAML file in place of
//! nginx + an `auth_request` service + a token script.
//!
//! Where things live: `config` parses and validates (shared by start-up,
//! `check` and reload) into a `gateway::Gateway`; `proxy` is the request's
//! story and calls the `checks` in order; `respond` writes our answers;
//! `observe` and `access_log` record them; `server` wires Pingora up.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod checks;
pub mod client_ip;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod headers;
pub mod health;
pub mod json;
pub mod metrics;
pub mod observe;
pub mod proxy;
pub mod reload;
pub mod respond;
pub mod routes;
pub mod server;
pub mod tls;
pub mod upstream;
