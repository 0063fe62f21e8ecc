//! Why airlock refuses or fails a request: one error type for every phase
//! (admit, decide, credential, send, respond), whose variants carry the
//! facts and know their [`Side`]. The policy's own outcomes arrive as
//! [`Error::Policy`]; everything else is the proxy's.
//!
//! Each variant's `Display` is the message the agent reads. The status,
//! the `x-airlock-denied` code, the next step and the audit code are not
//! here: [`crate::respond::refusal`] maps an error to all of them, in one
//! place. Messages never quote a secret or an upstream's own words beyond
//! what the variant names (a decoder's or TLS library's fixed text); every
//! message is scrubbed again before it is sent.

use std::time::Duration;

use airlock_policy::{AuthError, Denial, RouteId};

use crate::redact::DecodeError;
use crate::upstream::{ConnectError, Failure};

/// Whose fault a refusal is: what the agent can do about it differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The agent's request (or credentials) is refused.
    Agent,
    /// The upstream failed, or answered what airlock cannot pass on.
    Upstream,
    /// A secret could not be fetched.
    Vault,
    /// airlock itself failed.
    Internal,
}

/// Every way a request is refused or fails before its answer is complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A policy outcome: `decide`, a trailer or WebSocket message check, or
    /// an egress refusal in the policy's words.
    #[error("{}", .0.message)]
    Policy(Denial),
    /// Missing or wrong proxy credentials.
    #[error("{}", .0.denial().message)]
    Auth(AuthError),
    /// A CONNECT whose target is not `host:port` (RFC 9110 §9.3.6).
    #[error("a CONNECT target must be host:port with a port in 1-65535 (an IPv6 address in brackets: [::1]:443)")]
    BadConnectTarget,
    /// A request neither CONNECT nor absolute-form `http://`.
    #[error("airlock is a proxy: it serves CONNECT and absolute-form http:// requests")]
    NotAProxyRequest,
    /// More header fields than `[limits] max_headers`.
    #[error("the request has {count} header fields; airlock accepts at most {max}")]
    TooManyHeaderFields {
        /// Fields sent.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A request head over `[limits] max_header_bytes`.
    #[error("the request head is {bytes} bytes; airlock accepts at most {max}")]
    HeadTooLarge {
        /// Bytes sent.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A head hyper refused before airlock saw it (`too_large`: over
    /// hyper's own cap, else malformed). Recorded, never answered by
    /// airlock: hyper answers it.
    #[error("hyper refused {}", if *too_large { "a request head over the size limit" } else { "a malformed request" })]
    HeadRejected {
        /// Over the size cap rather than malformed.
        too_large: bool,
    },
    /// A request body over its route's (or the default) limit, in bytes.
    #[error("the request body is larger than this route's limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// More than one `Host` field.
    #[error("the request has more than one Host header")]
    MultipleHost,
    /// The request names another host than its connection's.
    #[error("this connection is to {connected}, but the request names another host")]
    Misdirected {
        /// The connection's `host[:port]`.
        connected: String,
    },
    /// The request target does not make a URI with the destination.
    #[error("the request target is not a valid URI")]
    InvalidTarget,
    /// An injected secret would go to a plain-HTTP upstream.
    #[error(
        "this request would carry route '{route}''s credential to http://{authority} in cleartext; airlock sends \
         secrets only over verified TLS"
    )]
    Cleartext {
        /// The route's name.
        route: String,
        /// The destination's `host[:port]`.
        authority: String,
    },
    /// A route allowed cleartext to private addresses, and the host
    /// resolved to a public one.
    #[error(
        "{host} resolves to {ip}, a public address; route '{route}' allows cleartext only to loopback or private addresses"
    )]
    PublicCleartext {
        /// The host.
        host: String,
        /// The address refused.
        ip: std::net::IpAddr,
        /// The route's name.
        route: String,
        /// The destination's `host[:port]`.
        authority: String,
    },
    /// The route's secret could not be fetched; `reason` never holds a
    /// command's stderr.
    #[error("the credential for route '{route}' is unavailable: {reason}")]
    SecretUnavailable {
        /// The route's name.
        route: String,
        /// Why, in the vault's words.
        reason: String,
    },
    /// A body holding the route's placeholder in a form the route's `body`
    /// does not swap in.
    #[error("route '{route}' swaps its placeholder into request bodies, but {why}, so it was not sent")]
    Unsubstitutable {
        /// The route's name.
        route: String,
        /// What kind of body it was.
        why: Unsubstitutable,
    },
    /// A request to a route that signs (`aws_sigv4`) that airlock cannot
    /// sign again.
    #[error("route '{route}' re-signs requests with AWS SigV4, but this one cannot be: {why}")]
    Unsignable {
        /// The route's name.
        route: String,
        /// Why, in words that quote no value.
        why: String,
    },
    /// A request to a route that signs found no room in the signing budget
    /// (the request bodies held to be signed, over every request).
    #[error(
        "route '{route}' re-signs requests with AWS SigV4, and airlock holds as much of request bodies to sign as it may; try again"
    )]
    SigningBusy {
        /// The route's name.
        route: String,
    },
    /// The agent's request body failed (ended early, or a stream reset)
    /// while airlock read it.
    #[error("the request body ended before it was complete")]
    AgentBody,
    /// A credential airlock mints could not be minted (the token endpoint
    /// refused, failed or was unreachable); `transient` when trying again
    /// later may work.
    #[error("the credential for route '{route}' could not be minted: {reason}")]
    MintFailed {
        /// The route's name.
        route: String,
        /// Why, naming the endpoint and its status or error code.
        reason: String,
        /// Whether it may pass by itself.
        transient: bool,
    },
    /// The upstream connection could not be made.
    #[error(transparent)]
    Connect(ConnectError),
    /// The request to the upstream failed after connecting.
    #[error(transparent)]
    Upstream(Failure),
    /// No response head within `[limits] upstream_response_timeout`.
    #[error("no response from {host} within {after:?}")]
    Timeout {
        /// The upstream host.
        host: String,
        /// The limit.
        after: Duration,
    },
    /// A resend was due but the body was not kept.
    #[error("the request body could not be sent again")]
    ResendImpossible,
    /// A failure a resend would have covered, not resent.
    #[error("{source}: {cause}, and the request was not resent, as {why}")]
    NotResent {
        /// The failure.
        source: Box<Error>,
        /// What the upstream did (`Resend::cause`).
        cause: &'static str,
        /// Why it was not resent.
        why: NotResentWhy,
    },
    /// A protocol switch airlock cannot scan.
    #[error("{0}; airlock relays only WebSocket, whose frames it can scan")]
    Upgrade(UpgradeRefusal),
    /// A response body in codings airlock cannot decode.
    #[error("the upstream answered {status} with a body airlock cannot scan: {source}")]
    UnscannableEncoding {
        /// The upstream's status.
        status: u16,
        /// The decoder's refusal.
        source: DecodeError,
    },
    /// `application/grpc-web-text`, which cannot be scanned piecewise.
    #[error(
        "the upstream answered {status} with application/grpc-web-text: base64 that servers pad piece by piece, \
         which airlock cannot scan"
    )]
    GrpcWebText {
        /// The upstream's status.
        status: u16,
    },
    /// gRPC messages compressed in a coding airlock cannot decode.
    #[error("the upstream answered {status} with gRPC messages airlock cannot scan: {}", grpc_why(source))]
    GrpcCoding {
        /// The upstream's status.
        status: u16,
        /// The decoder's refusal (the coding itself is never quoted).
        source: DecodeError,
    },
    /// More than one `grpc-encoding`.
    #[error("the upstream answered {status} with more than one grpc-encoding")]
    GrpcCodings {
        /// The upstream's status.
        status: u16,
    },
    /// A response body that failed to decode after its head arrived.
    #[error("the upstream's response body could not be decoded for scanning")]
    BodyUndecodable,
    /// The upstream went silent while sending a body.
    #[error("the upstream sent nothing for {0:?} while sending the body")]
    BodySilent(Duration),
    /// The upstream failed while sending a body.
    #[error("the upstream failed while sending the response body")]
    BodyFailed,
    /// An action API request that is not a usable envelope.
    #[error(transparent)]
    Envelope(EnvelopeError),
    /// An intercepted connection refused before its first request.
    #[error(transparent)]
    TlsStart(TlsStartError),
}

/// Why a body holding a route's placeholder could not have it swapped in.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Unsubstitutable {
    /// A `Content-Encoding` other than identity.
    #[error("this body is compressed (Content-Encoding) and holds the placeholder")]
    Compressed,
    /// A compressed body that did not decode, or in a coding airlock does
    /// not decode: it cannot be searched for the placeholder.
    #[error("this body is compressed in a way airlock cannot decode, so it cannot be searched for the placeholder")]
    Undecodable,
    /// A `multipart/*` body.
    #[error("this body is multipart and holds the placeholder")]
    Multipart,
    /// Another media type than the route's `body` names.
    #[error("this body is {found}, not {wanted}, and holds the placeholder")]
    MediaType {
        /// The media type the route swaps in, in words.
        wanted: &'static str,
        /// The body's, or "of no stated type" / "of two stated types".
        found: String,
    },
}

/// Why a failure was not resent.
#[derive(Debug)]
pub enum NotResentWhy {
    /// Its body was over what airlock keeps for a resend.
    BodyNotKept,
    /// Its method is not idempotent.
    NotIdempotent(http::Method),
}

impl std::fmt::Display for NotResentWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotResentWhy::BodyNotKept => {
                write!(f, "its body was over the {} bytes airlock keeps for a resend", crate::replay::REPLAY_LIMIT)
            }
            NotResentWhy::NotIdempotent(method) => {
                write!(f, "{method} is not idempotent (RFC 9110 §9.2.2) and the upstream may have acted on it")
            }
        }
    }
}

/// A protocol switch airlock refused.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeRefusal {
    /// A `101` to a request that asked for none.
    #[error("the upstream switched protocols unasked")]
    Unasked,
    /// A `101` to a WebSocket handshake naming another protocol.
    #[error("the upstream answered a WebSocket handshake by switching to another protocol")]
    OtherProtocol,
    /// A WebSocket extension accepted though none was offered.
    #[error("the upstream accepted a WebSocket extension airlock did not offer")]
    Extension,
}

/// Why a gRPC coding cannot be scanned, without quoting it.
fn grpc_why(e: &DecodeError) -> String {
    match e {
        DecodeError::Unsupported => {
            "their grpc-encoding is one airlock does not decode (it decodes gzip, deflate, br and zstd)".to_owned()
        }
        other => other.to_string(),
    }
}

/// Where the action API listens on the proxy's listener.
pub const ACTION_PATH: &str = "/v1/actions";

/// The only action verb defined so far: an HTTP request to a service.
pub const ACTION_VERB: &str = "api_bridge.request";

/// An action API request that is not a usable envelope (DESIGN.md,
/// "Approved-action requests").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not a POST.
    #[error("{ACTION_PATH} takes POST, not {method}")]
    Method {
        /// The method sent.
        method: http::Method,
    },
    /// Sent by a web page.
    #[error("the action API does not serve requests from web pages (the request has an Origin header)")]
    Origin,
    /// Over `[limits] max_request_body`.
    #[error("the action envelope is larger than [limits] max_request_body ({limit} bytes)")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The body failed while it was read.
    #[error("the action envelope could not be read")]
    Unreadable,
    /// The body did not arrive within `header_read_timeout`.
    #[error("the action envelope did not arrive within {after:?}")]
    Slow {
        /// The limit.
        after: Duration,
    },
    /// Not JSON of the envelope's shape; `reason` is serde's, scrubbed.
    #[error("the action envelope is not valid: {reason}")]
    Invalid {
        /// What serde said.
        reason: String,
    },
    /// The envelope names another tenant than the credentials.
    #[error("the envelope names tenant '{named}', but the credentials are tenant '{tenant}''s")]
    Tenant {
        /// The tenant named.
        named: String,
        /// The authenticated tenant.
        tenant: String,
    },
    /// A verb other than `api_bridge.request`.
    #[error("unknown verb '{verb}'")]
    Verb {
        /// The verb sent.
        verb: String,
    },
    /// No route of the tenant has the service's name.
    #[error("tenant '{tenant}' has no service (route) named '{service}'")]
    NoService {
        /// The tenant.
        tenant: String,
        /// The service named.
        service: String,
        /// The tenant's services (routes with one exact host).
        services: Vec<String>,
    },
    /// The service is a wildcard route.
    #[error("service '{service}' is a wildcard route ({authority}); an action needs a route with one exact host")]
    WildcardService {
        /// The tenant.
        tenant: String,
        /// The route's name.
        service: String,
        /// The route.
        route: RouteId,
        /// The route's host pattern and port.
        authority: String,
    },
    /// Not an HTTP method.
    #[error("'{method}' is not an HTTP method")]
    NotAMethod {
        /// What was sent.
        method: String,
    },
    /// CONNECT.
    #[error("CONNECT is not an action")]
    Connect,
    /// A path not starting with `/`, or with a fragment.
    #[error("the path must start with '/' and hold no fragment ('#')")]
    Path,
    /// Path and query do not make a request target.
    #[error("the path is not a valid request target")]
    Target,
    /// A query value that is not a string, number or boolean.
    #[error("query parameter '{key}' is not a string, number or boolean")]
    QueryValue {
        /// The parameter.
        key: String,
    },
    /// Not a header name.
    #[error("'{name}' is not a valid header name")]
    HeaderName {
        /// What was sent.
        name: String,
    },
    /// A header airlock sets itself.
    #[error("the envelope may not set the '{name}' header; airlock sets it")]
    ReservedHeader {
        /// The header.
        name: String,
    },
    /// A header value that is not a string.
    #[error("header '{name}' is not a string")]
    HeaderNotString {
        /// The header.
        name: String,
    },
    /// A header value a header cannot carry (never quoted).
    #[error("header '{name}' holds characters a header cannot carry")]
    HeaderChars {
        /// The header.
        name: String,
    },
    /// A `body_encoding` other than `utf-8` or `base64`.
    #[error("unknown body_encoding '{encoding}'")]
    BodyEncoding {
        /// What was sent.
        encoding: String,
    },
    /// A base64 body that does not decode.
    #[error("the body is not valid base64")]
    Base64,
    /// A base64 body that is not a string.
    #[error("a base64 body must be a string")]
    Base64NotString,
}

/// Why an intercepted connection was refused before its first request.
/// Recorded only: there is no request to answer.
#[derive(Debug, thiserror::Error)]
pub enum TlsStartError {
    /// The ClientHello could not be read.
    #[error("the agent's TLS start failed: {0}")]
    Hello(std::io::Error),
    /// The SNI names another host than the CONNECT.
    #[error("the TLS server name differs from the CONNECT host")]
    ServerName,
    /// airlock could not mint a leaf certificate.
    #[error("airlock could not mint a certificate: {0}")]
    Mint(airlock_ca::CaError),
    /// The handshake failed.
    #[error("the agent's TLS handshake failed (does it trust airlock's CA?): {0}")]
    Handshake(std::io::Error),
    /// The handshake did not finish in time.
    #[error("the agent did not finish its TLS handshake within {0:?}")]
    Timeout(Duration),
}

impl Error {
    /// Whose fault it is.
    pub fn side(&self) -> Side {
        match self {
            Error::Policy(_)
            | Error::Auth(_)
            | Error::BadConnectTarget
            | Error::NotAProxyRequest
            | Error::TooManyHeaderFields { .. }
            | Error::HeadTooLarge { .. }
            | Error::HeadRejected { .. }
            | Error::BodyTooLarge { .. }
            | Error::MultipleHost
            | Error::Misdirected { .. }
            | Error::InvalidTarget
            | Error::Cleartext { .. }
            | Error::Unsubstitutable { .. }
            | Error::Unsignable { .. }
            | Error::AgentBody
            | Error::PublicCleartext { .. }
            | Error::Envelope(_) => Side::Agent,
            Error::TlsStart(TlsStartError::Mint(_)) => Side::Internal,
            Error::TlsStart(_) => Side::Agent,
            Error::SecretUnavailable { .. } | Error::MintFailed { .. } => Side::Vault,
            Error::SigningBusy { .. } => Side::Internal,
            Error::Connect(_)
            | Error::Upstream(_)
            | Error::Timeout { .. }
            | Error::ResendImpossible
            | Error::Upgrade(_)
            | Error::UnscannableEncoding { .. }
            | Error::GrpcWebText { .. }
            | Error::GrpcCoding { .. }
            | Error::GrpcCodings { .. }
            | Error::BodyUndecodable
            | Error::BodySilent(_)
            | Error::BodyFailed => Side::Upstream,
            Error::NotResent { source, .. } => source.side(),
        }
    }
}

impl From<Denial> for Error {
    fn from(d: Denial) -> Self {
        Error::Policy(d)
    }
}

impl From<EnvelopeError> for Error {
    fn from(e: EnvelopeError) -> Self {
        Error::Envelope(e)
    }
}
