//! The checks a request passes, each small and tested on its own; the
//! proxy calls them in the contract's order (see `proxy.rs`).

pub mod allowlist;
pub mod body_limit;
pub mod concurrency;
pub mod jwt;
pub mod rate_limit;
pub mod request_buffer;
pub mod request_sanity;
pub mod token_cache;
