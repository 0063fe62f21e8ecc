//! Approved-action requests (DESIGN.md, "Approved-action requests"): an
//! agent that calls a tool rather than a URL POSTs an envelope to
//! `/v1/actions` on the proxy's own listener, naming a service (a route of
//! its tenant) and the request to make there.
//!
//! The envelope only chooses among what the tenant's routes already allow:
//! the host and port come from the route, never from the agent. The
//! request built from it runs through the one pipeline intercepted traffic
//! uses ([`pipeline::forward`]: decide, credential, send, respond, record), so every
//! decision, injection, redaction and audit record is the same code. What
//! this module adds is the envelope's parsing, and the answer: the scrubbed
//! response collected into JSON, its body cut at `[limits]
//! max_action_response` only after the redactor has replaced every secret,
//! and never inside a placeholder or a UTF-8 character.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use airlock_policy::host::HostPattern;
use airlock_policy::{Policy, RouteId, TenantId};

use crate::body::UpstreamSilent;
use crate::encoding::percent_encode;
use crate::error::{EnvelopeError, Error};
use crate::pipeline::{self, Destination, RequestCtx, admit};
use crate::redact::{DecodeError, REDACTED, RedactionCount};
use crate::respond::{self, Audience, Form, REQUEST_ID_HEADER};
use crate::state::Shared;
use crate::upstream::Resolver;
use crate::{Body, BoxError};

pub use crate::error::{ACTION_PATH as PATH, ACTION_VERB as VERB};

/// Whether a request on the listener is for the action API: origin-form
/// `/v1/actions`, or absolute-form `http://<this listener>/v1/actions`
/// (what an agent whose `HTTP_PROXY` points at airlock sends when it calls
/// the action API by URL: the proxy is asked for itself).
pub(crate) fn is_action<B>(req: &Request<B>, resolver: &Resolver) -> bool {
    let uri = req.uri();
    if uri.path() != PATH {
        return false;
    }
    match (uri.scheme_str(), uri.authority()) {
        (None, None) => true,
        (Some("http"), Some(authority)) => {
            let host = authority.host().trim_start_matches('[').trim_end_matches(']');
            let ip = if host.eq_ignore_ascii_case("localhost") {
                Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
            } else {
                host.parse::<IpAddr>().ok()
            };
            ip.is_some_and(|ip| resolver.is_self(SocketAddr::new(ip, authority.port_u16().unwrap_or(80))))
        }
        _ => false,
    }
}

/// The envelope an agent sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    /// Must be the authenticated tenant.
    tenant: String,
    /// A route name of the tenant.
    service: String,
    /// `api_bridge.request` (the default).
    #[serde(default)]
    verb: Option<String>,
    /// The HTTP method (upper-cased).
    method: String,
    /// The path, optionally with a query string.
    path: String,
    /// Query parameters appended to the path: string, number or boolean
    /// values, or arrays of them (repeated keys).
    #[serde(default)]
    query: Option<Map<String, Value>>,
    /// Request headers: string values, or arrays of them.
    #[serde(default)]
    headers: Option<Map<String, Value>>,
    /// Null (no body), a string (sent as it is, or decoded when
    /// `body_encoding` is base64), or any other JSON value (sent as JSON).
    #[serde(default)]
    body: Value,
    /// `utf-8` (default) or `base64`, for a string body.
    #[serde(default)]
    body_encoding: Option<String>,
}

/// Headers an envelope may not set: airlock sets or strips them itself
/// (framing, connection management, proxy credentials, the destination).
const RESERVED_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// An envelope turned into a request under a route.
struct Prepared {
    tenant: TenantId,
    route: RouteId,
    method: String,
    path: String,
    request: Request<Full<Bytes>>,
}

/// Serves one request to the action API.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    // No destination yet: a refusal's record names the action API itself.
    let mut ctx = RequestCtx::arrived(&shared, peer, req.method().as_str(), "", 0);
    ctx.path = PATH.to_owned();
    let prepared = match prepare(&mut ctx, req).await {
        Ok(p) => p,
        Err(e) => return ctx.deny(e, Audience::ActionApi, Form::Action),
    };
    let loaded = Arc::clone(&ctx.loaded);
    let policy = &loaded.policy;
    let route = policy.route(prepared.route);
    let host = match &route.host {
        HostPattern::Exact(h) => h.clone(),
        // `build` refuses wildcard routes.
        HostPattern::Wildcard(_) => String::new(),
    };
    let dest = Destination {
        tenant: policy.tenant(prepared.tenant).name.clone(),
        host,
        port: route.port,
        https: true,
        peer,
        guard: None,
    };
    let mut ctx = RequestCtx::on_connection(&shared, &dest, &prepared.method);
    ctx.authenticated(prepared.tenant);
    let ctx = ctx.begin(&prepared.path, prepared.request.uri().query());
    let span = pipeline::request_span(&ctx);
    let cap = usize::try_from(policy.limits.max_action_response).unwrap_or(usize::MAX);
    let tenant = policy.tenant(prepared.tenant);
    let mut keep: Vec<&[u8]> = tenant.routes.iter().map(|r| r.placeholder.as_bytes()).collect();
    keep.push(REDACTED);
    async {
        if let Err(e) = admit::check_head(&prepared.request, &policy.limits) {
            return ctx.deny(e, Audience::ActionApi, Form::Action);
        }
        let resp = match pipeline::forward(&ctx, &dest, prepared.request).await {
            Ok(resp) => resp,
            Err(e) => return ctx.deny(e, Audience::ActionApi, Form::Action),
        };
        match collect(resp, cap, &keep).await {
            Ok(mut answer) => {
                answer["request_id"] = ctx.request_id.clone().into();
                json_response(&answer, &ctx.request_id)
            }
            // The pipeline's record (allow, incomplete) is already written;
            // the agent is told the body did not arrive whole.
            Err(e) => {
                let refusal = respond::refusal(&e, Audience::ActionApi).scrubbed(|t| ctx.scrub(t));
                tracing::info!(code = %refusal.code, "the upstream body failed");
                refusal.response(&ctx.request_id, Form::Action)
            }
        }
    }
    .instrument(span)
    .await
}

/// Authenticates `ctx`'s tenant, reads and checks the envelope, and builds
/// the request it describes.
async fn prepare(ctx: &mut RequestCtx, req: Request<Incoming>) -> Result<Prepared, Error> {
    let policy = Arc::clone(&ctx.loaded.policy);
    if req.method() != Method::POST {
        return Err(EnvelopeError::Method { method: req.method().clone() }.into());
    }
    // Browsers send Origin; no agent does. A web page must never drive
    // the action API, whatever credentials the browser holds.
    if req.headers().contains_key(header::ORIGIN) {
        return Err(EnvelopeError::Origin.into());
    }
    admit::check_head(&req, &policy.limits)?;
    let creds = req.headers().get(header::PROXY_AUTHORIZATION).or_else(|| req.headers().get(header::AUTHORIZATION));
    let tenant = ctx
        .shared
        .auth
        .authenticate(&policy, ctx.peer.ip(), creds.map(HeaderValue::as_bytes))
        .await
        .map_err(Error::Auth)?;
    ctx.authenticated(tenant);
    let bytes = read_body(req, &policy.limits).await?;
    // serde's message may quote part of the envelope; it is scrubbed like
    // anything else airlock sends back.
    let envelope: Envelope =
        serde_json::from_slice(&bytes).map_err(|e| EnvelopeError::Invalid { reason: ctx.scrub(&e.to_string()) })?;
    Ok(build(&policy, tenant, envelope)?)
}

/// The envelope's request under the route it names.
fn build(policy: &Policy, tenant: TenantId, env: Envelope) -> Result<Prepared, EnvelopeError> {
    let t = policy.tenant(tenant);
    if env.tenant != t.name {
        return Err(EnvelopeError::Tenant { named: env.tenant, tenant: t.name.clone() });
    }
    if let Some(verb) = env.verb.as_deref().filter(|v| *v != VERB) {
        return Err(EnvelopeError::Verb { verb: verb.to_owned() });
    }
    let Some(route_id) = policy.route_named(tenant, &env.service) else {
        let services =
            t.routes.iter().filter(|r| matches!(r.host, HostPattern::Exact(_))).map(|r| r.name.clone()).collect();
        return Err(EnvelopeError::NoService { tenant: t.name.clone(), service: env.service, services });
    };
    let route = policy.route(route_id);
    if let HostPattern::Wildcard(_) = route.host {
        return Err(EnvelopeError::WildcardService {
            tenant: t.name.clone(),
            service: route.name.clone(),
            route: route_id,
            authority: route.authority(),
        });
    }

    // Methods are case-sensitive in HTTP, but no API defines a lower-case
    // one: `post` from an agent means POST.
    let method = Method::from_bytes(env.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| EnvelopeError::NotAMethod { method: env.method.clone() })?;
    if method == Method::CONNECT {
        // A tunnel is not an action; the agent would need HTTPS_PROXY.
        return Err(EnvelopeError::Connect);
    }
    if !env.path.starts_with('/') || env.path.contains('#') {
        return Err(EnvelopeError::Path);
    }
    let mut target = env.path.clone();
    let query = encode_query(env.query.as_ref())?;
    if !query.is_empty() {
        target.push(if target.contains('?') { '&' } else { '?' });
        target.push_str(&query);
    }
    let uri: http::Uri = target.parse().map_err(|_| EnvelopeError::Target)?;
    let mut headers = envelope_headers(env.headers.as_ref())?;
    let encoding = env.body_encoding.as_deref().unwrap_or("utf-8");
    if encoding != "utf-8" && encoding != "base64" {
        return Err(EnvelopeError::BodyEncoding { encoding: encoding.to_owned() });
    }
    let body = match (&env.body, encoding) {
        (Value::Null, _) => Bytes::new(),
        (Value::String(s), "base64") => STANDARD.decode(s).map(Bytes::from).map_err(|_| EnvelopeError::Base64)?,
        (Value::String(s), _) => Bytes::from(s.clone().into_bytes()),
        (_, "base64") => return Err(EnvelopeError::Base64NotString),
        (json, _) => {
            if !headers.contains_key(header::CONTENT_TYPE) {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            Bytes::from(json.to_string().into_bytes())
        }
    };
    if !body.is_empty() || matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let path = uri.path().to_owned();
    let method_name = method.to_string();
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(Prepared { tenant, route: route_id, method: method_name, path, request })
}

/// `key=value&…`, percent-encoded.
fn encode_query(query: Option<&Map<String, Value>>) -> Result<String, EnvelopeError> {
    let mut out = String::new();
    let mut add = |k: &str, v: &Value| -> Result<(), EnvelopeError> {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => return Ok(()),
            _ => return Err(EnvelopeError::QueryValue { key: k.to_owned() }),
        };
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&percent_encode(k));
        out.push('=');
        out.push_str(&percent_encode(&text));
        Ok(())
    };
    for (k, v) in query.into_iter().flatten() {
        match v {
            Value::Array(items) => items.iter().try_for_each(|item| add(k, item))?,
            other => add(k, other)?,
        }
    }
    Ok(out)
}

/// The envelope's headers as a map. Messages name headers, never values.
fn envelope_headers(headers: Option<&Map<String, Value>>) -> Result<HeaderMap, EnvelopeError> {
    let mut out = HeaderMap::new();
    for (name, value) in headers.into_iter().flatten() {
        let n =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| EnvelopeError::HeaderName { name: name.clone() })?;
        if RESERVED_HEADERS.contains(&n.as_str()) {
            return Err(EnvelopeError::ReservedHeader { name: n.to_string() });
        }
        let values: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for v in values {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(EnvelopeError::HeaderNotString { name: n.to_string() }),
            };
            let v = HeaderValue::from_str(&text).map_err(|_| EnvelopeError::HeaderChars { name: n.to_string() })?;
            out.append(n.clone(), v);
        }
    }
    Ok(out)
}

/// Reads the envelope, bounded by `[limits] max_request_body` and, as it
/// is one small JSON document, by `header_read_timeout`.
async fn read_body(req: Request<Incoming>, limits: &airlock_policy::Limits) -> Result<Bytes, EnvelopeError> {
    let limit = limits.max_request_body;
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(EnvelopeError::TooLarge { limit });
    }
    let body = Limited::new(req.into_body(), usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout(limits.header_read_timeout, body.collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(EnvelopeError::TooLarge { limit })
        }
        Ok(Err(_)) => Err(EnvelopeError::Unreadable),
        Err(_) => Err(EnvelopeError::Slow { after: limits.header_read_timeout }),
    }
}

/// The scrubbed response as the answer's JSON (without `request_id`). The
/// body is read through the redactor until it ends or the scrubbed bytes
/// pass the cap by more than the longest replacement, then cut at a
/// point that splits no placeholder and no UTF-8 character.
async fn collect(resp: Response<Body>, cap: usize, keep: &[&[u8]]) -> Result<Value, Error> {
    let (parts, mut body) = resp.into_parts();
    let margin = keep.iter().map(|k| k.len()).max().unwrap_or(0);
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    buf.extend_from_slice(data);
                }
            }
            Err(e) => return Err(body_failure(&e)),
        }
        if buf.len() > cap.saturating_add(margin) {
            break;
        }
    }
    // Dropping a body not read to its end tells the pipeline the answer
    // was cut (its audit record says complete: false).
    drop(body);
    let truncated = buf.len() > cap;
    let end = if truncated { cut_point(&buf, cap, keep) } else { buf.len() };
    let kept = &buf[..end];
    let (text, encoding) = match std::str::from_utf8(kept) {
        Ok(s) => (s.to_owned(), "utf-8"),
        Err(e) if truncated && e.error_len().is_none() => {
            // A character cut by the cap: end before it.
            (String::from_utf8_lossy(&kept[..e.valid_up_to()]).into_owned(), "utf-8")
        }
        Err(_) => (STANDARD.encode(kept), "base64"),
    };
    let redactions = parts.extensions.get::<RedactionCount>().map_or(0, RedactionCount::get);
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        if name == REQUEST_ID_HEADER {
            continue;
        }
        let values: Vec<Value> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let value = match <[Value; 1]>::try_from(values) {
            Ok([one]) => one,
            Err(many) => Value::Array(many),
        };
        headers.insert(name.as_str().to_owned(), value);
    }
    Ok(json!({
        "request_id": "",
        "decision": "allow",
        "status": parts.status.as_u16(),
        "headers": headers,
        "body": text,
        "body_encoding": encoding,
        "redactions": redactions,
        "truncated": truncated,
        "secret_exposed": false,
    }))
}

/// Where to cut `buf` near `cap`: at `cap`, moved back before any of
/// `keep` (placeholders, `[REDACTED]`) that the cut would split.
fn cut_point(buf: &[u8], cap: usize, keep: &[&[u8]]) -> usize {
    let mut cut = cap.min(buf.len());
    loop {
        let before = cut;
        for k in keep.iter().filter(|k| !k.is_empty()) {
            let from = cut.saturating_sub(k.len() - 1);
            if let Some(start) = (from..cut).find(|&s| buf[s..].starts_with(k)) {
                cut = cut.min(start);
            }
        }
        if cut == before {
            return cut;
        }
    }
}

/// Why the body failed after the head arrived.
fn body_failure(e: &BoxError) -> Error {
    if e.downcast_ref::<DecodeError>().is_some() {
        return Error::BodyUndecodable;
    }
    if let Some(UpstreamSilent(after)) = e.downcast_ref::<UpstreamSilent>() {
        return Error::BodySilent(*after);
    }
    Error::BodyFailed
}

/// A 200 answer with the action's JSON.
fn json_response(answer: &Value, request_id: &str) -> Response<Body> {
    let mut body = answer.to_string();
    body.push('\n');
    let mut resp = Response::new(respond::full(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        h.insert(REQUEST_ID_HEADER, id);
    }
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_never_splits_a_placeholder() {
        let keep: [&[u8]; 2] = [b"AIRLOCK_KEY", REDACTED];
        let buf = b"0123456789AIRLOCK_KEY tail";
        for cap in 0..buf.len() {
            let cut = cut_point(buf, cap, &keep);
            assert!(cut <= cap);
            let inside = (11..=20).contains(&cap);
            assert_eq!(cut, if inside { 10 } else { cap }, "cap {cap}");
        }
        // Back to back: moving before one lands inside the other.
        let buf = b"ab[REDACTED]AIRLOCK_KEY";
        assert_eq!(cut_point(buf, 14, &keep), 12);
        assert_eq!(cut_point(buf, 5, &keep), 2);
    }

    #[tokio::test]
    async fn a_cut_never_splits_a_utf8_character_and_binary_is_base64() {
        let body = "é".repeat(100);
        for cap in [1usize, 2, 51, 101, 199] {
            let answer = collect(Response::new(respond::full(body.clone())), cap, &[REDACTED]).await.unwrap();
            assert_eq!(answer["truncated"], true);
            assert_eq!(answer["body_encoding"], "utf-8");
            assert_eq!(answer["body"].as_str().unwrap().len(), cap / 2 * 2, "cap {cap}");
        }
        let answer = collect(Response::new(respond::full(body.clone())), 200, &[]).await.unwrap();
        assert_eq!((answer["truncated"].as_bool(), answer["body"].as_str()), (Some(false), Some(body.as_str())));
        let answer = collect(Response::new(respond::full(vec![0xff_u8, 0xfe, 0])), 100, &[]).await.unwrap();
        assert_eq!((answer["body_encoding"].as_str(), answer["body"].as_str()), (Some("base64"), Some("//4A")));
    }

    #[test]
    fn queries_are_percent_encoded_and_repeat_for_arrays() {
        let q: Map<String, Value> =
            serde_json::from_str(r#"{"a b": "c&d", "n": 2, "t": true, "list": ["x", "y"], "skip": null}"#).unwrap();
        assert_eq!(encode_query(Some(&q)).unwrap(), "a%20b=c%26d&list=x&list=y&n=2&t=true");
        let bad: Map<String, Value> = serde_json::from_str(r#"{"o": {"x": 1}}"#).unwrap();
        assert!(matches!(encode_query(Some(&bad)), Err(EnvelopeError::QueryValue { key }) if key == "o"));
    }

    #[test]
    fn reserved_and_invalid_headers_are_refused_by_name() {
        for h in [r#"{"Host": "evil.test"}"#, r#"{"content-length": "5"}"#, r#"{"x": "a\r\nb"}"#, r#"{"x": {}}"#] {
            let m: Map<String, Value> = serde_json::from_str(h).unwrap();
            let e = envelope_headers(Some(&m)).unwrap_err();
            let refused = respond::refusal(&e.into(), Audience::ActionApi);
            assert_eq!(refused.code, respond::Code::BadRequest, "{h}");
            assert!(
                !refused.message.contains("evil.test") && !refused.message.contains("a\r\nb"),
                "{}",
                refused.message
            );
        }
        let m: Map<String, Value> = serde_json::from_str(r#"{"Accept": "a", "x-many": ["1", "2"]}"#).unwrap();
        let h = envelope_headers(Some(&m)).unwrap();
        assert_eq!(h.get_all("x-many").iter().count(), 2);
    }
}
