//! airlock: a local forward HTTPS interception proxy that lets AI agents
//! call APIs without ever holding the keys.
//!
//! This crate wires the parts together: the listener and proxy
//! authentication ([`server`], with wrong credentials slowed per address
//! in `throttle`), CONNECT handling and TLS interception
//! ([`intercept`], [`tunnel`]), the request pipeline (decide → inject →
//! forward, in [`forward`], with the upstream side of it in `send` and
//! WebSocket frames in `websocket`), approved-action requests ([`actions`]) and
//! their MCP server ([`mcp`]), the upstream client ([`upstream`]), denials
//! ([`respond`]), the audit log ([`audit`]) and AIRLOCK_HOME ([`home`]); the CLI is the `airlock` binary.
//!
//! What it must never do: forward a request the policy did not allow, send
//! `Proxy-Authorization` upstream, fall back to unverified upstream TLS, or
//! write a secret value into a log line, an audit record, an error message
//! or a response.
#![deny(missing_docs)]

pub mod actions;
pub mod agent;
pub mod audit;
pub mod check;
mod encoding;
mod fetch;
pub mod forward;
pub mod headers;
pub mod home;
pub mod intercept;
mod limits;
pub mod mcp;
pub mod redact;
mod replay;
pub mod respond;
mod scrub;
mod send;
pub mod server;
mod throttle;
pub mod tunnel;
pub mod upstream;
mod websocket;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod egress_tests;

pub use server::{Proxy, ReloadError, Reloader, RunningProxy};

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

/// Lower-case hex of `bytes`, in one allocation (request ids and audit
/// hashes are made on every request).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The error type of boxed bodies and services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type airlock sends to clients and upstreams.
pub type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

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

    #[test]
    fn hex_is_lower_case_two_digits_per_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::hex(&[]), "");
    }
}
