//! The one place where refusals become answers (DESIGN.md, "Denials"):
//! [`refusal`] maps an [`Error`] to its status, `x-airlock-denied` code,
//! message, next step and audit code; [`Refusal::response`] writes it in
//! the form the agent reads — JSON, a gRPC status, or the action API's
//! envelope — with the request id, and `Proxy-Authenticate` (or
//! `WWW-Authenticate`) on a challenge.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use airlock_policy::{DenialCode, RouteId};

use crate::Body;
use crate::encoding::grpc_percent_encode;
use crate::error::{EnvelopeError, Error, TlsStartError, Unsubstitutable};
use crate::upstream::{Advice, ConnectError, FailureKind};

/// Response header naming the request id of every answer airlock gives.
pub const REQUEST_ID_HEADER: &str = "x-airlock-request-id";
/// Response header naming the denial code.
pub const DENIED_HEADER: &str = "x-airlock-denied";

/// A fresh request id: 12 random bytes, hex (24 characters).
pub fn request_id() -> String {
    let mut b = [0u8; 12];
    // getrandom only fails when the OS has no entropy source at all; a
    // fixed id is then still unique enough to tell log lines apart.
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// A denial code (DESIGN.md, "Denials"): the policy's, and the proxy's own
/// for the vault, the upstream, bodies and request shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// A policy outcome.
    Policy(DenialCode),
    /// The secret could not be fetched (503).
    SecretUnavailable,
    /// The upstream could not be reached (502).
    UpstreamUnreachable,
    /// The upstream's TLS certificate did not verify (502).
    UpstreamTlsFailed,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
    /// A response body that cannot be scanned for secrets (502).
    UnredactableBody,
    /// The request is over a size limit (431 for heads, 413 for bodies).
    RequestTooLarge,
    /// The request names another host than its connection (421).
    MisdirectedRequest,
    /// The request is malformed or not something a proxy serves (400).
    BadRequest,
    /// An injected secret would go out in cleartext (403).
    InsecureUpstream,
    /// A body holding the route's placeholder in a form the route does
    /// not swap in: compressed, multipart, another media type (415).
    UnsubstitutableBody,
    /// A request to a route that signs that cannot be signed again (400).
    UnsignableRequest,
}

impl Code {
    /// The code as written in responses and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Policy(c) => c.as_str(),
            Code::SecretUnavailable => "secret_unavailable",
            Code::UpstreamUnreachable => "upstream_unreachable",
            Code::UpstreamTlsFailed => "upstream_tls_failed",
            Code::UpstreamTimeout => "upstream_timeout",
            Code::UnredactableBody => "unredactable_body",
            Code::RequestTooLarge => "request_too_large",
            Code::MisdirectedRequest => "misdirected_request",
            Code::BadRequest => "bad_request",
            Code::InsecureUpstream => "insecure_upstream",
            Code::UnsubstitutableBody => "unsubstitutable_body",
            Code::UnsignableRequest => "unsignable_request",
        }
    }

    /// The usual HTTP status of a refusal with this code.
    fn status(self) -> u16 {
        match self {
            Code::Policy(DenialCode::ProxyAuthRequired | DenialCode::UnknownTenant) => 407,
            Code::Policy(DenialCode::BadRequest) | Code::BadRequest | Code::UnsignableRequest => 400,
            Code::Policy(_) | Code::InsecureUpstream => 403,
            Code::SecretUnavailable => 503,
            Code::UpstreamUnreachable | Code::UpstreamTlsFailed | Code::UnredactableBody => 502,
            Code::UpstreamTimeout => 504,
            Code::RequestTooLarge => 431,
            Code::MisdirectedRequest => 421,
            // RFC 9110 §15.5.16: content in a format (a Content-Type or
            // Content-Encoding) not supported.
            Code::UnsubstitutableBody => 415,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is refused: an agent speaking to airlock as a proxy, or to the
/// action API on its listener (the origin there, so credentials are
/// challenged with `401`, not `407`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// CONNECT, absolute-form and intercepted requests.
    Proxy,
    /// `POST /v1/actions`.
    ActionApi,
}

/// A refusal as the agent and the audit log see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The code (`x-airlock-denied`, the JSON `code`, the audit `code`).
    pub code: Code,
    /// The HTTP status.
    pub status: u16,
    /// What happened.
    pub message: String,
    /// What to do next, without asking for a key.
    pub next_step: Cow<'static, str>,
    /// The route the policy named, when it named one.
    pub route: Option<RouteId>,
}

/// What to do about a request that was not resent.
const RESEND_NEXT_STEP: &str = "send the request again if repeating it is safe (the upstream may have acted on it)";
/// What to do about an answer airlock cannot scan.
const CHECK_API_NEXT_STEP: &str = "retry; if it persists, ask the operator to check the API";

/// Maps an error to its refusal: the one place codes, statuses and next
/// steps are chosen (DESIGN.md, "Denials").
pub fn refusal(err: &Error, to: Audience) -> Refusal {
    let (code, next_step): (Code, Cow<'static, str>) = match err {
        Error::Policy(d) => (Code::Policy(d.code), d.next_step.clone().into()),
        Error::Auth(e) => {
            let next = match to {
                Audience::Proxy => e.denial().next_step.into(),
                Audience::ActionApi => "send the tenant's credentials as `Authorization: Basic base64(tenant:token)` \
                                        (curl -u tenant:token); `airlock env --tenant <tenant>` shows them in HTTPS_PROXY"
                    .into(),
            };
            (Code::Policy(e.denial().code), next)
        }
        Error::BadConnectTarget => (Code::BadRequest, "send CONNECT host:port, e.g. CONNECT api.example.com:443".into()),
        Error::NotAProxyRequest => (
            Code::BadRequest,
            "set HTTPS_PROXY/HTTP_PROXY to airlock's address instead of sending requests to it directly".into(),
        ),
        Error::TooManyHeaderFields { .. } => (Code::RequestTooLarge, "send fewer header fields".into()),
        Error::HeadTooLarge { .. } => {
            (Code::RequestTooLarge, "send smaller headers (a cookie or token may have grown too large)".into())
        }
        Error::HeadRejected { too_large: true } => (Code::RequestTooLarge, "send smaller headers".into()),
        Error::HeadRejected { too_large: false } => (Code::BadRequest, "send a well-formed HTTP/1.1 request".into()),
        Error::BodyTooLarge { .. } => (
            Code::RequestTooLarge,
            "send a smaller body, or ask the operator to raise max_request_body for this route".into(),
        ),
        Error::MultipleHost => (Code::BadRequest, "send exactly one Host header".into()),
        Error::Misdirected { connected } => (
            Code::MisdirectedRequest,
            format!(
                "open a separate connection (CONNECT) for the other host; requests on this one may only go to {connected}"
            )
            .into(),
        ),
        Error::InvalidTarget => (Code::BadRequest, "send a valid request path".into()),
        Error::Cleartext { authority, .. } => (
            Code::InsecureUpstream,
            format!(
                "use https://{authority}/… (with HTTPS_PROXY set); if the API only speaks plain HTTP, ask the operator"
            )
            .into(),
        ),
        Error::PublicCleartext { authority, .. } => {
            (Code::InsecureUpstream, format!("use https://{authority}/…").into())
        }
        Error::Unsubstitutable { why, .. } => (Code::UnsubstitutableBody, unsubstitutable_next_step(why).into()),
        Error::AgentBody => (Code::BadRequest, "send the request again with its whole body".into()),
        Error::SigningBusy { .. } => (
            Code::UnsignableRequest,
            "retry in a moment: airlock holds at most 256 MiB of request bodies being signed, and that is in use".into(),
        ),
        Error::Unsignable { .. } => (
            Code::UnsignableRequest,
            "send it as an AWS SDK signs an ordinary call: a SHA-256 payload hash or UNSIGNED-PAYLOAD, or chunks of \
             at most 8 MiB; a body without x-amz-content-sha256 of at most 16 MiB"
                .into(),
        ),
        Error::MintFailed { transient: true, .. } => (
            Code::SecretUnavailable,
            "retry later: the token endpoint is failing or unreachable; if it persists, ask the operator to run \
             `airlock check`"
                .into(),
        ),
        Error::MintFailed { transient: false, .. } => (
            Code::SecretUnavailable,
            "ask the operator to run `airlock check` and fix the route's credential; retrying will not help until then"
                .into(),
        ),
        Error::SecretUnavailable { .. } => (
            Code::SecretUnavailable,
            "ask the operator to run `airlock check` and fix the secret; retrying will not help until then".into(),
        ),
        Error::Connect(e) => connect_refusal(e),
        Error::Upstream(f) => {
            let code = match f.kind {
                FailureKind::Unreachable => Code::UpstreamUnreachable,
                FailureKind::Tls => Code::UpstreamTlsFailed,
                FailureKind::Timeout => Code::UpstreamTimeout,
            };
            (code, advice(f.advice).into())
        }
        Error::Timeout { .. } => (Code::UpstreamTimeout, advice(Advice::RetryLater).into()),
        Error::ResendImpossible => (Code::UpstreamUnreachable, RESEND_NEXT_STEP.into()),
        Error::NotResent { source, .. } => (refusal(source, to).code, RESEND_NEXT_STEP.into()),
        Error::Upgrade(_) => (
            Code::UnredactableBody,
            "send the request without an Upgrade header (airlock strips h2c and every upgrade but WebSocket)".into(),
        ),
        Error::UnscannableEncoding { .. } => (
            Code::UnredactableBody,
            "retry without asking for that encoding (airlock asks upstreams for identity); if it persists, ask the \
             operator to check the API"
                .into(),
        ),
        Error::GrpcWebText { .. } => (
            Code::UnredactableBody,
            "call with application/grpc-web or application/grpc (binary), which airlock scans message by message".into(),
        ),
        Error::GrpcCoding { .. } => (
            Code::UnredactableBody,
            "call without compression (airlock asks upstreams for grpc-accept-encoding: identity); if it persists, \
             ask the operator to check the API"
                .into(),
        ),
        Error::GrpcCodings { .. } => (Code::UnredactableBody, "ask the operator to check the API".into()),
        Error::BodyUndecodable => (Code::UnredactableBody, CHECK_API_NEXT_STEP.into()),
        Error::BodySilent(_) => (
            Code::UpstreamTimeout,
            "retry later; if the API is slow by design, ask the operator to raise [limits] upstream_read_timeout".into(),
        ),
        Error::BodyFailed => (Code::UpstreamUnreachable, "retry; if it persists, the API is failing".into()),
        Error::Envelope(e) => envelope_refusal(e),
        Error::TlsStart(e) => {
            let code = match e {
                TlsStartError::ServerName => Code::MisdirectedRequest,
                _ => Code::BadRequest,
            };
            (code, "check that the agent trusts airlock's CA and names the CONNECT host".into())
        }
    };
    let status = match err {
        Error::Auth(_) if to == Audience::ActionApi => 401,
        Error::BodyTooLarge { .. } | Error::Envelope(EnvelopeError::TooLarge { .. }) => 413,
        Error::Envelope(EnvelopeError::Method { .. }) => 405,
        Error::Envelope(EnvelopeError::Origin) => 403,
        Error::Envelope(EnvelopeError::Slow { .. }) => 408,
        Error::SigningBusy { .. } => 503,
        _ => code.status(),
    };
    let route = match err {
        Error::Policy(d) => d.route,
        Error::Envelope(EnvelopeError::WildcardService { route, .. }) => Some(*route),
        _ => None,
    };
    Refusal { code, status, message: err.to_string(), next_step, route }
}

/// What to do about a body the placeholder could not be swapped in.
fn unsubstitutable_next_step(why: &Unsubstitutable) -> String {
    match why {
        Unsubstitutable::Compressed | Unsubstitutable::Undecodable => {
            "send the body uncompressed (no Content-Encoding); airlock swaps the placeholder only in plain bodies"
                .into()
        }
        Unsubstitutable::Multipart => {
            "send the placeholder in a form (application/x-www-form-urlencoded) or JSON body, or in a header the \
             route lists"
                .into()
        }
        Unsubstitutable::MediaType { wanted, .. } => format!("send the body as {wanted}"),
    }
}

/// A connection failure's code and next step. A refusal by the egress rule
/// is answered in the policy's own words by the caller, which knows the
/// tenant and route; these are its fallback.
fn connect_refusal(e: &ConnectError) -> (Code, Cow<'static, str>) {
    match e {
        ConnectError::Unreachable { .. } | ConnectError::Loop { .. } => {
            (Code::UpstreamUnreachable, advice(Advice::CheckHost).into())
        }
        ConnectError::Tls { .. } => (Code::UpstreamTlsFailed, advice(e.advice()).into()),
        ConnectError::Timeout { .. } => (Code::UpstreamTimeout, advice(Advice::RetryLater).into()),
        ConnectError::PrivateAddress { host, .. } => (
            Code::Policy(DenialCode::PrivateEgressDenied),
            format!("if {host} is meant to be reachable, ask the operator to add a route for it").into(),
        ),
        ConnectError::PublicAddress { .. } => (Code::InsecureUpstream, "use https:// (with HTTPS_PROXY set)".into()),
    }
}

/// What to do about an upstream failure.
fn advice(a: Advice) -> &'static str {
    match a {
        Advice::CheckHost => {
            "check the host name and port, and that the host is reachable from the machine running airlock"
        }
        Advice::RetryLater => "retry later; if it persists, check the host is up",
        Advice::UpstreamCa => {
            "the upstream's certificate did not verify; if this is a private API, ask the operator to add its CA to \
             [proxy].upstream_ca"
        }
        Advice::ClientCertificate => {
            "the API wants a client certificate (mutual TLS), and airlock presents none for this route; ask the \
             operator"
        }
        Advice::ClientCertificateRefused => {
            "the API refused the client certificate airlock presents for this route (expired, revoked, or from a CA \
             it does not trust); ask the operator to check the route's client_cert"
        }
        Advice::Retry => {
            "retry the request; if it persists, the upstream is at fault: ask the operator to check the API"
        }
    }
}

/// An envelope's refusal code and next step.
fn envelope_refusal(e: &EnvelopeError) -> (Code, Cow<'static, str>) {
    use crate::error::{ACTION_PATH as PATH, ACTION_VERB as VERB};
    let bad = |next: Cow<'static, str>| (Code::BadRequest, next);
    match e {
        EnvelopeError::Method { .. } => bad(format!("POST the action envelope as JSON to {PATH}").into()),
        EnvelopeError::Origin => bad("call the action API from the agent's process, not from a browser".into()),
        EnvelopeError::TooLarge { .. } => (
            Code::RequestTooLarge,
            "send a smaller body, or ask the operator to raise [limits] max_request_body".into(),
        ),
        EnvelopeError::Unreadable => bad("send the whole envelope again".into()),
        EnvelopeError::Slow { .. } => bad("send the envelope in one go".into()),
        EnvelopeError::Invalid { .. } => {
            bad("send JSON like {\"tenant\": \"…\", \"service\": \"…\", \"method\": \"GET\", \"path\": \"/…\"} \
             (fields: tenant, service, verb, method, path, query, headers, body, body_encoding)"
                .into())
        }
        EnvelopeError::Tenant { tenant, .. } => (
            Code::Policy(DenialCode::WrongTenant),
            format!("set \"tenant\": \"{tenant}\" in the envelope, or use the credentials of the tenant it names")
                .into(),
        ),
        EnvelopeError::Verb { .. } => bad(format!("use \"verb\": \"{VERB}\" (or leave it out)").into()),
        EnvelopeError::NoService { tenant, service, services } => (
            Code::Policy(DenialCode::HostNotAllowed),
            format!(
                "use one of tenant '{tenant}''s services ({}), or ask the operator to add a route named '{service}'",
                if services.is_empty() { "it has none".to_owned() } else { services.join(", ") },
            )
            .into(),
        ),
        EnvelopeError::WildcardService { tenant, .. } => (
            Code::Policy(DenialCode::HostNotAllowed),
            format!("ask the operator to add a route for the exact host to tenant '{tenant}'").into(),
        ),
        EnvelopeError::NotAMethod { .. } => bad("use GET, POST, …".into()),
        EnvelopeError::Connect => bad("use the API's own methods (GET, POST, …)".into()),
        EnvelopeError::Path => bad(
            "send the path as in the API's documentation, e.g. \"/v3/a/123/calls.json\"; put parameters in \"query\""
                .into(),
        ),
        EnvelopeError::Target => bad("percent-encode spaces and other special characters in the path".into()),
        EnvelopeError::QueryValue { .. } => {
            bad("give each query parameter a string, number or boolean value, or an array of them".into())
        }
        EnvelopeError::HeaderName { .. } => bad("use header names of letters, digits and '-'".into()),
        EnvelopeError::ReservedHeader { name } => bad(format!("leave '{name}' out of \"headers\"").into()),
        EnvelopeError::HeaderNotString { .. } => bad("give each header a string value (or an array of strings)".into()),
        EnvelopeError::HeaderChars { .. } => bad("send header values without control characters or line breaks".into()),
        EnvelopeError::BodyEncoding { .. } => bad("use \"utf-8\" or \"base64\"".into()),
        EnvelopeError::Base64 => bad("send base64 (standard alphabet, padded) or a text body".into()),
        EnvelopeError::Base64NotString => bad("send the base64 text as a JSON string".into()),
    }
}

/// The forms a refusal is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `{"error": {…}}` JSON.
    Json,
    /// A gRPC trailers-only answer.
    Grpc,
    /// The action API's `{"request_id", "decision": "deny", "error"}`.
    Action,
    /// An AWS error document (`<ErrorResponse><Error><Code>…`), for a
    /// request to a route that signs: AWS SDKs show an error's code and
    /// message from that, and only the status from anything else.
    Aws,
    /// Lines of `text/plain`, for git: it prints a failed request's body
    /// (as `remote: …` lines) only when it is plain text, and otherwise
    /// only the status.
    Text,
}

impl Refusal {
    /// The refusal with `scrub` applied to its texts: a message may quote
    /// an upstream's or agent's words, and nothing the agent reads may hold
    /// a secret.
    pub fn scrubbed(self, scrub: impl Fn(&str) -> String) -> Refusal {
        Refusal { message: scrub(&self.message), next_step: scrub(&self.next_step).into(), ..self }
    }

    /// The answer the agent gets, in `form`.
    pub fn response(&self, request_id: &str, form: Form) -> Response<Body> {
        match form {
            Form::Json => self.with_head(request_id, self.json(request_id)),
            Form::Grpc => self.grpc(request_id),
            Form::Aws => self.aws(request_id),
            Form::Text => self.text(request_id),
            Form::Action => {
                let mut json = self.json(request_id);
                json["request_id"] = request_id.into();
                json["decision"] = "deny".into();
                self.with_head(request_id, json)
            }
        }
    }

    /// The JSON body of a self.
    pub fn json(&self, request_id: &str) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "code": self.code.as_str(),
                "message": self.message,
                "next_step": self.next_step,
                "request_id": request_id,
            }
        })
    }

    /// A denial as a gRPC client reads it: a trailers-only answer (`200`,
    /// `content-type: application/grpc`, `grpc-status` and `grpc-message` in
    /// the one head that ends the stream) carrying the code, message, next
    /// step and request id, with `x-airlock-denied` and the request id as for
    /// any denial. A gRPC client reports only the status of an HTTP error
    /// (`Received http2 header with status: 403`), never its body, so the
    /// JSON denial would tell the agent nothing it can act on.
    fn grpc(&self, request_id: &str) -> Response<Body> {
        let text = format!(
            "airlock refused this call ({}): {}; next step: {} (request {request_id})",
            self.code.as_str(),
            self.message,
            self.next_step
        );
        let mut resp = Response::new(empty());
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(grpc_status(self.status)));
        if let Ok(message) = HeaderValue::from_str(&grpc_percent_encode(&text)) {
            h.insert("grpc-message", message);
        }
        h.insert(DENIED_HEADER, HeaderValue::from_static(self.code.as_str()));
        if let Ok(id) = HeaderValue::from_str(request_id) {
            h.insert(REQUEST_ID_HEADER, id);
        }
        resp
    }

    /// A denial's status and headers around a JSON body. A 407 challenges for
    /// proxy credentials; a 401 (the action API's answer to missing or wrong
    /// credentials, as it is not spoken to as a proxy) for `Authorization`.
    fn with_head(&self, request_id: &str, json: serde_json::Value) -> Response<Body> {
        let mut body = json.to_string();
        body.push('\n');
        self.with_body(request_id, body, "application/json")
    }

    /// The denial as AWS services write an error (the query and REST-XML
    /// protocols' `ErrorResponse`, which botocore and the other SDKs parse
    /// into the error's code and message): airlock's code, and its message,
    /// next step and request id in one sentence.
    fn aws(&self, request_id: &str) -> Response<Body> {
        let message = format!("{} Next step: {} (airlock request {request_id})", self.message, self.next_step);
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Type>Sender</Type><Code>{}</Code>\
             <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>\n",
            self.code.as_str(),
            xml_escape(&message),
            xml_escape(request_id)
        );
        self.with_body(request_id, body, "application/xml")
    }

    /// The denial as lines of plain text: the code, the message, the next
    /// step and the request id, one per line.
    fn text(&self, request_id: &str) -> Response<Body> {
        let body = format!(
            "airlock refused this request: {}\n{}\nNext step: {}\nRequest id: {request_id}\n",
            self.code.as_str(),
            self.message,
            self.next_step
        );
        self.with_body(request_id, body, "text/plain; charset=utf-8")
    }

    fn with_body(&self, request_id: &str, body: String, content_type: &'static str) -> Response<Body> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::FORBIDDEN);
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        // The code in the reason phrase too (HTTP/1.1 only): clients that
        // show nothing of a refused CONNECT's body show its status line
        // (requests' "Tunnel connection failed: 403 airlock
        // private_egress_denied", git's, curl's).
        if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(format!("airlock {}", self.code.as_str())) {
            resp.extensions_mut().insert(reason);
        }
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(DENIED_HEADER, HeaderValue::from_static(self.code.as_str()));

        if let Ok(id) = HeaderValue::from_str(request_id) {
            h.insert(REQUEST_ID_HEADER, id);
        }
        let challenge = HeaderValue::from_static("Basic realm=\"airlock\"");
        match status {
            StatusCode::PROXY_AUTHENTICATION_REQUIRED => h.insert(header::PROXY_AUTHENTICATE, challenge),
            StatusCode::UNAUTHORIZED => h.insert(header::WWW_AUTHENTICATE, challenge),
            _ => None,
        };
        resp
    }
}

/// The gRPC status code for a denial's HTTP status: gRPC's own mapping of
/// HTTP statuses (`doc/http-grpc-status-mapping.md`) where it has one,
/// and for the rest the code that says the same.
fn grpc_status(http: u16) -> u16 {
    match http {
        400 => 13,                   // INTERNAL, as gRPC maps a 400
        401 | 407 => 16,             // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        413 | 431 => 8,              // RESOURCE_EXHAUSTED
        421 | 429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// `text` with XML's five special characters as references.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use airlock_policy::{AuthError, Denial};

    fn policy(code: DenialCode, message: &str, next: &str) -> Error {
        Error::Policy(Denial::new(code, message, next))
    }

    #[test]
    fn proxy_auth_denials_carry_the_challenge() {
        let r = refusal(&Error::Auth(AuthError::Missing), Audience::Proxy).response("abc", Form::Json);
        assert_eq!(r.status(), 407);
        assert_eq!(r.headers()["proxy-authenticate"], "Basic realm=\"airlock\"");
        assert_eq!(r.headers()[DENIED_HEADER], "proxy_auth_required");
        let d = refusal(&policy(DenialCode::HostNotAllowed, "m", "n"), Audience::Proxy);
        let r = d.response("abc", Form::Json);
        assert_eq!(r.status(), 403);
        assert!(!r.headers().contains_key("proxy-authenticate"));
        assert_eq!(d.json("abc")["error"]["request_id"], "abc");
        assert_eq!((d.message.as_str(), &*d.next_step), ("m", "n"));
        assert_eq!(request_id().len(), 24);
    }

    #[tokio::test]
    async fn aws_denials_are_error_documents_with_the_text_escaped() {
        let d = refusal(&policy(DenialCode::PresignedUrlRefused, "a <b> & 'c'", "do \"d\""), Audience::Proxy);
        let r = d.response("abc", Form::Aws);
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["content-type"], "application/xml");
        assert_eq!(r.headers()[DENIED_HEADER], "presigned_url_refused");
        let body = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            body.contains(
                "<Error><Type>Sender</Type><Code>presigned_url_refused</Code><Message>a &lt;b&gt; &amp; &apos;c&apos; \
                 Next step: do &quot;d&quot; (airlock request abc)</Message></Error><RequestId>abc</RequestId>"
            ),
            "{body}"
        );
    }

    #[test]
    fn grpc_denials_are_trailers_only_answers() {
        let d = refusal(&policy(DenialCode::WrongTenant, "100% not yours", "use your own"), Audience::Proxy);
        let r = d.response("abc", Form::Grpc);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(r.headers()["grpc-status"], "7");
        assert_eq!(
            r.headers()["grpc-message"],
            "airlock refused this call (wrong_tenant): 100%25 not yours; next step: use your own (request abc)"
        );
        assert_eq!(r.headers()[DENIED_HEADER], "wrong_tenant");
        assert!(http_body::Body::is_end_stream(r.body()));
        assert_eq!(grpc_status(504), 14);
        assert_eq!(grpc_status(413), 8);
        assert_eq!(grpc_percent_encode("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn action_denials_carry_the_decision_and_a_401_challenge() {
        let d = refusal(&Error::Auth(AuthError::Missing), Audience::ActionApi);
        let r = d.response("abc", Form::Action);
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"airlock\"");
        assert!(!r.headers().contains_key("proxy-authenticate"));
        assert_eq!(r.headers()[DENIED_HEADER], "proxy_auth_required");
        assert!(d.next_step.starts_with("send the tenant's credentials as `Authorization: Basic"));
    }

    #[test]
    fn statuses_follow_the_error_not_only_the_code() {
        let status = |e: Error| refusal(&e, Audience::ActionApi).status;
        assert_eq!(status(Error::BodyTooLarge { limit: 1 }), 413);
        assert_eq!(status(Error::HeadTooLarge { bytes: 2, max: 1 }), 431);
        assert_eq!(status(EnvelopeError::Method { method: http::Method::GET }.into()), 405);
        assert_eq!(status(EnvelopeError::Origin.into()), 403);
        assert_eq!(status(EnvelopeError::Slow { after: std::time::Duration::from_secs(1) }.into()), 408);
        assert_eq!(status(Error::SecretUnavailable { route: "r".into(), reason: "x".into() }), 503);
        assert_eq!(status(Error::Timeout { host: "h".into(), after: std::time::Duration::from_secs(1) }), 504);
        assert_eq!(status(Error::Misdirected { connected: "h".into() }), 421);
    }
}
