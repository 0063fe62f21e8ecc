//! The one place where denials become HTTP responses (DESIGN.md,
//! "Denials"): status from the code, `x-airlock-denied`, the JSON body with
//! code, message, next step and request id, and `Proxy-Authenticate` for
//! 407s.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use airlock_policy::Denial;

use crate::Body;

/// Response header naming the request id of every answer airlock gives.
pub const REQUEST_ID_HEADER: &str = "x-airlock-request-id";
/// Response header naming the denial code.
pub const DENIED_HEADER: &str = "x-airlock-denied";

/// A fresh request id: 16 random bytes, hex.
pub fn request_id() -> String {
    let mut b = [0u8; 12];
    // getrandom only fails when the OS has no entropy source at all; a
    // fixed id is then still unique enough to tell log lines apart.
    let _ = getrandom::fill(&mut b);
    crate::hex(&b)
}

/// The JSON body of a denial.
pub fn denial_json(denial: &Denial, request_id: &str) -> serde_json::Value {
    serde_json::json!({
        "error": {
            "code": denial.code.as_str(),
            "message": denial.message,
            "next_step": denial.next_step,
            "request_id": request_id,
        }
    })
}

/// Turns a denial into the response the agent sees.
pub fn denial_response(denial: &Denial, request_id: &str) -> Response<Body> {
    with_denial_head(denial, request_id, denial_json(denial, request_id))
}

/// A denial as a gRPC client reads it: a trailers-only answer (`200`,
/// `content-type: application/grpc`, `grpc-status` and `grpc-message` in
/// the one head that ends the stream) carrying the code, message, next
/// step and request id, with `x-airlock-denied` and the request id as for
/// any denial. A gRPC client reports only the status of an HTTP error
/// (`Received http2 header with status: 403`), never its body, so the
/// JSON denial would tell the agent nothing it can act on.
pub fn grpc_denial_response(denial: &Denial, request_id: &str) -> Response<Body> {
    let text = format!(
        "airlock refused this call ({}): {}; next step: {} (request {request_id})",
        denial.code.as_str(),
        denial.message,
        denial.next_step
    );
    let mut resp = Response::new(empty());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(grpc_status(denial.status())));
    if let Ok(message) = HeaderValue::from_str(&grpc_percent_encode(&text)) {
        h.insert("grpc-message", message);
    }
    h.insert(DENIED_HEADER, HeaderValue::from_static(denial.code.as_str()));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        h.insert(REQUEST_ID_HEADER, id);
    }
    resp
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

/// `grpc-message` encoding: UTF-8, with every byte outside printable ASCII
/// and `%` itself percent-encoded (gRPC over HTTP/2, "Responses").
fn grpc_percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The answer to an approved-action request that was denied (DESIGN.md,
/// "Approved-action requests"): the denial's status and headers, and
/// `{"request_id", "decision": "deny", "error": {…}}`.
pub fn action_denial_response(denial: &Denial, request_id: &str) -> Response<Body> {
    let mut json = denial_json(denial, request_id);
    json["request_id"] = request_id.into();
    json["decision"] = "deny".into();
    with_denial_head(denial, request_id, json)
}

/// A denial's status and headers around a JSON body. A 407 challenges for
/// proxy credentials; a 401 (the action API's answer to missing or wrong
/// credentials, as it is not spoken to as a proxy) for `Authorization`.
fn with_denial_head(denial: &Denial, request_id: &str, json: serde_json::Value) -> Response<Body> {
    let mut body = json.to_string();
    body.push('\n');
    let status = StatusCode::from_u16(denial.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(DENIED_HEADER, HeaderValue::from_static(denial.code.as_str()));
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
    use airlock_policy::DenialCode;

    #[test]
    fn proxy_auth_denials_carry_the_challenge() {
        let d = Denial::new(DenialCode::ProxyAuthRequired, "m", "n");
        let r = denial_response(&d, "abc");
        assert_eq!(r.status(), 407);
        assert_eq!(r.headers()["proxy-authenticate"], "Basic realm=\"airlock\"");
        assert_eq!(r.headers()[DENIED_HEADER], "proxy_auth_required");
        let d = Denial::new(DenialCode::HostNotAllowed, "m", "n");
        let r = denial_response(&d, "abc");
        assert_eq!(r.status(), 403);
        assert!(!r.headers().contains_key("proxy-authenticate"));
        assert_eq!(denial_json(&d, "abc")["error"]["request_id"], "abc");
        assert_eq!(request_id().len(), 24);
    }

    #[test]
    fn grpc_denials_are_trailers_only_answers() {
        let d = Denial::new(DenialCode::WrongTenant, "100% not yours", "use your own");
        let r = grpc_denial_response(&d, "abc");
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
        let d = Denial { status: Some(401), ..Denial::new(DenialCode::ProxyAuthRequired, "m", "n") };
        let r = action_denial_response(&d, "abc");
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"airlock\"");
        assert!(!r.headers().contains_key("proxy-authenticate"));
        assert_eq!(r.headers()[DENIED_HEADER], "proxy_auth_required");
    }
}
