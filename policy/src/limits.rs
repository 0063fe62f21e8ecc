//! `[limits]`: how much and how long airlock accepts from agents and
//! upstreams before it refuses or gives up. Every limit has a default that
//! suits an agent calling APIs; none can be switched off.

use std::time::Duration;

use serde::Deserialize;

use crate::units::{InvalidUnit, Size, parse_duration};

/// Why `[limits]` is not valid. Names the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// A duration or size that cannot be read.
    #[error("[limits] {key}: {error}")]
    Unreadable {
        /// The key.
        key: &'static str,
        /// What is wrong with its value.
        error: InvalidUnit,
    },
    /// A duration or count of zero, where at least one is needed.
    #[error("[limits] {key} must be more than zero")]
    Zero {
        /// The key.
        key: &'static str,
    },
    /// A value outside the range the limit allows.
    #[error("[limits] {key} must be {range}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// The range, as people write it ("at least 1KiB").
        range: &'static str,
    },
}

/// The raw `[limits]` table: sizes as `65536` or `"64KiB"`, durations as
/// `"30s"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    max_header_bytes: Option<Size>,
    max_headers: Option<usize>,
    max_request_body: Option<Size>,
    header_read_timeout: Option<String>,
    idle_timeout: Option<String>,
    tunnel_idle_timeout: Option<String>,
    upstream_connect_timeout: Option<String>,
    upstream_response_timeout: Option<String>,
    upstream_read_timeout: Option<String>,
    max_connections: Option<usize>,
    max_decoded_ratio: Option<u64>,
    shutdown_grace: Option<String>,
    max_action_response: Option<Size>,
    max_websocket_message: Option<Size>,
    upstream_pool_idle_timeout: Option<String>,
    max_response_header_bytes: Option<Size>,
    max_grpc_message: Option<Size>,
}

/// The checked `[limits]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The request line plus all header lines of one request, in bytes.
    /// Over it: `431 request_too_large`.
    pub max_header_bytes: usize,
    /// Header fields in one request. Over it: `431 request_too_large`.
    pub max_headers: usize,
    /// A request body, in bytes, unless the route sets its own. Over it:
    /// `413 request_too_large`.
    pub max_request_body: u64,
    /// How long an agent may take to send a request's head (slowloris).
    pub header_read_timeout: Duration,
    /// How long an agent connection may sit with no request in flight.
    pub idle_timeout: Duration,
    /// How long an opaque tunnel or an upgraded connection (WebSocket) may
    /// pass no bytes either way before it is closed.
    pub tunnel_idle_timeout: Duration,
    /// TCP connect plus TLS handshake to an upstream.
    pub upstream_connect_timeout: Duration,
    /// From sending the request to the upstream's response head.
    pub upstream_response_timeout: Duration,
    /// The longest silence while reading an upstream's response body.
    pub upstream_read_timeout: Duration,
    /// Agent connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// How many times larger than its encoded size a compressed response may
    /// decode to (after the first MiB). More: the stream is aborted as
    /// `unredactable_body` (a decompression bomb).
    pub max_decoded_ratio: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// The scrubbed response body an approved-action answer carries at
    /// most, in bytes; a longer one is cut (never inside a placeholder or
    /// a UTF-8 character) and flagged `truncated`.
    pub max_action_response: u64,
    /// The largest WebSocket message relayed, in bytes: each is held whole
    /// while it is scanned. A larger one closes the connection (`1009`).
    /// 1 MiB by default, as Python's `websockets` library: messages are held
    /// whole, so the memory WebSockets can take is this times
    /// `max_connections`.
    pub max_websocket_message: u64,
    /// How long an idle upstream connection is kept for reuse. 4 s by
    /// default: under the shortest keep-alive common servers keep (Apache
    /// httpd's and Node's 5 s; nginx keeps 75 s), so airlock drops an idle
    /// connection before the server closes it, rather than race the close
    /// with its next request (a race a non-idempotent request cannot be
    /// retried out of).
    pub upstream_pool_idle_timeout: Duration,
    /// The largest upstream response head accepted, in bytes: the status
    /// line and header fields of HTTP/1.1, or the header list size of
    /// HTTP/2 (each field's name and value plus 32, RFC 9113 §6.5.2). Over
    /// it: `502 upstream_unreachable`. 400 KiB by default, hyper's own
    /// HTTP/1.1 cap (curl accepts about 300 KiB, browsers 256 KiB).
    pub max_response_header_bytes: usize,
    /// The largest compressed gRPC message relayed, in bytes, decoded: a
    /// compressed message is held whole while it is decoded and scanned
    /// (an uncompressed one streams through at any size). A larger one
    /// aborts the call. 4 MiB by default, gRPC's own default limit on a
    /// received message.
    pub max_grpc_message: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_request_body: 32 << 20,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            tunnel_idle_timeout: Duration::from_secs(600),
            upstream_connect_timeout: Duration::from_secs(10),
            upstream_response_timeout: Duration::from_secs(300),
            upstream_read_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            max_decoded_ratio: 100,
            shutdown_grace: Duration::from_secs(10),
            max_action_response: 1 << 20,
            max_websocket_message: 1 << 20,
            upstream_pool_idle_timeout: Duration::from_secs(4),
            max_response_header_bytes: 400 << 10,
            max_grpc_message: 4 << 20,
        }
    }
}

impl Limits {
    pub(crate) fn build(raw: RawLimits) -> Result<Limits, LimitsError> {
        let d = Limits::default();
        let duration = |key: &'static str, value: Option<String>, default: Duration| -> Result<Duration, LimitsError> {
            let Some(text) = value else { return Ok(default) };
            let t = parse_duration(&text).map_err(|error| LimitsError::Unreadable { key, error })?;
            if t.is_zero() {
                return Err(LimitsError::Zero { key });
            }
            Ok(t)
        };
        let count = |key: &'static str, value: Option<usize>, default: usize| match value {
            Some(0) => Err(LimitsError::Zero { key }),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let size = |key: &'static str, value: Option<Size>, default: u64| -> Result<u64, LimitsError> {
            value
                .map(|s| s.bytes())
                .transpose()
                .map(|v| v.unwrap_or(default))
                .map_err(|error| LimitsError::Unreadable { key, error })
        };
        let out_of_range = |key, range| Err(LimitsError::OutOfRange { key, range });
        let max_header_bytes = size("max_header_bytes", raw.max_header_bytes, d.max_header_bytes as u64)?;
        if !(1024..=(16 << 20)).contains(&max_header_bytes) {
            return out_of_range("max_header_bytes", "between 1KiB and 16MiB");
        }
        let max_decoded_ratio = raw.max_decoded_ratio.unwrap_or(d.max_decoded_ratio);
        if max_decoded_ratio < 2 {
            return out_of_range("max_decoded_ratio", "at least 2");
        }
        let max_action_response = size("max_action_response", raw.max_action_response, d.max_action_response)?;
        if max_action_response == 0 {
            return Err(LimitsError::Zero { key: "max_action_response" });
        }
        let max_websocket_message = size("max_websocket_message", raw.max_websocket_message, d.max_websocket_message)?;
        if max_websocket_message < 1024 {
            return out_of_range("max_websocket_message", "at least 1KiB");
        }
        let max_response_header_bytes =
            size("max_response_header_bytes", raw.max_response_header_bytes, d.max_response_header_bytes as u64)?;
        if !((8 << 10)..=(16 << 20)).contains(&max_response_header_bytes) {
            return out_of_range("max_response_header_bytes", "between 8KiB and 16MiB");
        }
        let max_grpc_message = size("max_grpc_message", raw.max_grpc_message, d.max_grpc_message)?;
        if max_grpc_message < 1024 {
            return out_of_range("max_grpc_message", "at least 1KiB");
        }
        Ok(Limits {
            max_header_bytes: max_header_bytes as usize,
            max_headers: count("max_headers", raw.max_headers, d.max_headers)?,
            max_request_body: size("max_request_body", raw.max_request_body, d.max_request_body)?,
            header_read_timeout: duration("header_read_timeout", raw.header_read_timeout, d.header_read_timeout)?,
            idle_timeout: duration("idle_timeout", raw.idle_timeout, d.idle_timeout)?,
            tunnel_idle_timeout: duration("tunnel_idle_timeout", raw.tunnel_idle_timeout, d.tunnel_idle_timeout)?,
            upstream_connect_timeout: duration(
                "upstream_connect_timeout",
                raw.upstream_connect_timeout,
                d.upstream_connect_timeout,
            )?,
            upstream_response_timeout: duration(
                "upstream_response_timeout",
                raw.upstream_response_timeout,
                d.upstream_response_timeout,
            )?,
            upstream_read_timeout: duration(
                "upstream_read_timeout",
                raw.upstream_read_timeout,
                d.upstream_read_timeout,
            )?,
            max_connections: count("max_connections", raw.max_connections, d.max_connections)?,
            max_decoded_ratio,
            shutdown_grace: duration("shutdown_grace", raw.shutdown_grace, d.shutdown_grace)?,
            max_action_response,
            max_websocket_message,
            upstream_pool_idle_timeout: duration(
                "upstream_pool_idle_timeout",
                raw.upstream_pool_idle_timeout,
                d.upstream_pool_idle_timeout,
            )?,
            max_response_header_bytes: max_response_header_bytes as usize,
            max_grpc_message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_action_response_defaults_parses_and_refuses_zero() {
        let build = |text: &str| Limits::build(toml::from_str::<RawLimits>(text).expect("valid toml"));
        assert_eq!(build("").map(|l| l.max_action_response), Ok(1 << 20));
        assert_eq!(build("max_action_response = \"4KiB\"").map(|l| l.max_action_response), Ok(4096));
        assert_eq!(build("max_action_response = 0"), Err(LimitsError::Zero { key: "max_action_response" }));
        assert_eq!(build("").map(|l| l.max_websocket_message), Ok(1 << 20));
        assert_eq!(build("max_websocket_message = \"64KiB\"").map(|l| l.max_websocket_message), Ok(65536));
        assert!(matches!(
            build("max_websocket_message = 10"),
            Err(LimitsError::OutOfRange { key: "max_websocket_message", .. })
        ));
        assert_eq!(build("").map(|l| l.max_grpc_message), Ok(4 << 20));
        assert_eq!(build("max_grpc_message = \"16MiB\"").map(|l| l.max_grpc_message), Ok(16 << 20));
        assert!(matches!(build("max_grpc_message = 10"), Err(LimitsError::OutOfRange { key: "max_grpc_message", .. })));
    }

    #[test]
    fn upstream_pool_and_response_head_limits_default_parse_and_refuse_nonsense() {
        let build = |text: &str| Limits::build(toml::from_str::<RawLimits>(text).expect("valid toml"));
        assert_eq!(build("").map(|l| l.upstream_pool_idle_timeout), Ok(Duration::from_secs(4)));
        let l = build("upstream_pool_idle_timeout = \"90s\"");
        assert_eq!(l.map(|l| l.upstream_pool_idle_timeout), Ok(Duration::from_secs(90)));
        assert_eq!(
            build("upstream_pool_idle_timeout = \"0s\""),
            Err(LimitsError::Zero { key: "upstream_pool_idle_timeout" })
        );
        assert_eq!(build("").map(|l| l.max_response_header_bytes), Ok(400 << 10));
        assert_eq!(build("max_response_header_bytes = \"1MiB\"").map(|l| l.max_response_header_bytes), Ok(1 << 20));
        assert!(matches!(
            build("max_response_header_bytes = 100"),
            Err(LimitsError::OutOfRange { key: "max_response_header_bytes", .. })
        ));
        assert!(toml::from_str::<RawLimits>("upstream_pool_idle = \"4s\"").is_err(), "unknown keys are still errors");
    }
}
