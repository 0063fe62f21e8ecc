//! airlock: a local forward HTTPS interception proxy that lets AI agents
//! call APIs without ever holding the keys.
//!
//! # Following one request
//!
//! Modules sit in layers; each imports only those below it, never one that
//! imports it back.
//!
//! 1. [`listener`] binds, accepts agent connections (a `conn` span each,
//!    at most `max_connections`, their life in `conn`) and reads each
//!    request on them: the health check, the action API ([`actions`]), or
//!    a proxy request — a CONNECT or an absolute-form `http://` request.
//! 2. **admit** ([`pipeline::admit`]): the destination is parsed from the
//!    CONNECT target or the URI's authority, the head's size checked, and
//!    the proxy credentials authenticated (wrong ones slowed per address by
//!    `throttle`). A [`pipeline::RequestCtx`] is made at arrival and
//!    carries tenant, destination, route, request id, start time, scrubbed
//!    path and counters through every phase.
//! 3. A CONNECT goes to `connect` (a `tunnel` span): a routed host (or any,
//!    under `egress = "deny"`) to [`intercept`], which terminates the
//!    agent's TLS with a leaf from the CA and serves HTTP/1.1 or HTTP/2 on
//!    it, each request entering [`pipeline::handle`]; an unrouted host
//!    under `egress = "tunnel"` to [`tunnel`] (bytes relayed by `relay`).
//!    A plain-HTTP request enters the pipeline directly.
//! 4. **decide** ([`pipeline::decide`]): the policy's pure decision.
//! 5. **credential** ([`pipeline::credential`]): the route's credential
//!    applied (the secret fetched from the vault through `fetch`); for a
//!    WebSocket handshake under a route whose `websocket` lists message
//!    kinds, the secret its relay swaps into the agent's messages
//!    ([`pipeline::frames`]).
//! 6. **send** ([`pipeline::send`]): the upstream request through
//!    [`upstream`]'s connector and pools, its body wrapped by `body`,
//!    resent once when safe (`replay`).
//! 7. **respond** ([`pipeline::response`]): the agent's answer, its head
//!    from an allow-list and its body through [`redact`]'s decoder and
//!    redactor (`scrub` holds the compiled sets); a WebSocket's frames in
//!    `websocket`.
//! 8. **record** ([`pipeline::record`]): the one [`audit`] record, built
//!    from the context. A refusal anywhere is an [`error::Error`], mapped to
//!    status, code, message, next step and audit code by
//!    [`respond::refusal`] — the one place — and answered, logged and
//!    recorded by `RequestCtx::deny`.
//!
//! Everything a connection needs is in [`state`]: the config snapshot
//! (reloaded without stopping), the vault, the leaf cache, the audit log
//! and the throttle. The CLI is the `airlock` binary (`src/cli/`), with
//! AIRLOCK_HOME in [`home`], `airlock run`'s environment in [`agent`],
//! `airlock check` in [`check`] and the MCP server in [`mcp`].
//!
//! What it must never do: forward a request the policy did not allow, send
//! `Proxy-Authorization` upstream, fall back to unverified upstream TLS, or
//! write a secret value into a log line, an audit record, an error message
//! or a response.
#![deny(missing_docs)]
// The docs describe the internals a request passes through, linked: read
// them with `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

pub mod actions;
pub mod agent;
pub mod audit;
mod body;
pub mod catalogue;
pub mod check;
pub mod config_edit;
mod conn;
mod connect;
mod encoding;
pub mod error;
mod fetch;
pub mod headers;
pub mod home;
pub mod instance;
pub mod intercept;
pub mod listener;
pub mod mcp;
mod mint;
pub mod pipeline;
pub mod redact;
mod relay;
mod replay;
pub mod respond;
mod scrub;
mod sigv4;
pub mod state;
mod substitute;
mod throttle;
pub mod tunnel;
pub mod upstream;
mod websocket;
pub mod workspace;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod egress_tests;

pub use listener::{Proxy, Reloader, RunningProxy};
pub use state::ReloadError;

/// A test-only fault hook, compiled into debug builds only: once enabled,
/// an intercepted request carrying `x-airlock-fault: panic` panics inside
/// its connection's task, to show a panic there cannot take the proxy down.
#[cfg(debug_assertions)]
pub mod fault {
    use std::sync::atomic::{AtomicBool, Ordering};

    static ENABLED: AtomicBool = AtomicBool::new(false);

    /// Turns the hook on for this process.
    pub fn enable() {
        ENABLED.store(true, Ordering::Relaxed);
    }

    pub(crate) fn check(headers: &http::HeaderMap) {
        if ENABLED.load(Ordering::Relaxed) && headers.get("x-airlock-fault").is_some_and(|v| v == "panic") {
            panic!("fault injected by x-airlock-fault");
        }
    }
}

/// Whether a log event may be written: airlock's own crates log at the
/// level `RUST_LOG` asks for; every other target (hyper, h2, rustls,
/// tungstenite, …) at most at `WARN`, since libraries' debug and trace
/// output quotes bytes from peers — a WebSocket close reason, an HTTP/2
/// GOAWAY's debug data — which may hold a secret.
pub fn log_allowed(target: &str, level: tracing::Level) -> bool {
    let ours = ["airlock", "airlock_policy", "airlock_ca"]
        .iter()
        .any(|c| target.strip_prefix(c).is_some_and(|rest| rest.is_empty() || rest.starts_with("::")));
    ours || level <= tracing::Level::WARN
}

/// The error type of boxed bodies and services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type airlock sends to clients and upstreams.
pub type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// A scratch folder for unit tests, removed when dropped.
#[cfg(test)]
pub(crate) struct TestDir(pub(crate) std::path::PathBuf);

#[cfg(test)]
impl TestDir {
    /// A new empty folder under the system's temporary directory, its
    /// name `airlock-TAG-` and a random id.
    pub(crate) fn new(tag: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!("airlock-{tag}-{}", respond::request_id()));
        std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
        TestDir(dir)
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn library_logs_are_capped_at_warn() {
        use tracing::Level;
        assert!(super::log_allowed("airlock::forward", Level::TRACE));
        assert!(super::log_allowed("airlock_policy", Level::DEBUG));
        assert!(!super::log_allowed("tungstenite::protocol", Level::DEBUG));
        assert!(!super::log_allowed("h2::proto::connection", Level::DEBUG));
        assert!(!super::log_allowed("airlockish", Level::DEBUG));
        assert!(super::log_allowed("hyper", Level::WARN));
    }
}
