//! The respond phase: the upstream's answer made into the agent's. The
//! head is built from an allow-list — the status (its canonical reason
//! phrase only), the scrubbed headers (gRPC binary metadata scrubbed in the
//! bytes it carries) and airlock's own extensions — never from the
//! upstream's parts, which carry a non-canonical reason phrase (and
//! anything else hyper keeps) unscanned. The body goes through its
//! decoder (content and transfer codings, or gRPC message codings) and the
//! redactor; when it ends, the exchange's record is written. A WebSocket
//! handshake's answer hands both upgraded connections to
//! [`crate::websocket`], which writes the record when they close.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::BodyExt;
use tracing::{Instrument, debug};

use airlock_policy::{Limits, RouteId};

use crate::Body;
use crate::audit::Outcome;
use crate::error::Error;
use crate::redact::{
    Decoder, Ended, GrpcMessages, MessageCoding, PatternSet, RedactBody, RedactionCount, grpc_kind, is_grpc_web_text,
    scrub_binary_metadata, scrub_headers,
};
use crate::respond::{self, REQUEST_ID_HEADER};
use crate::websocket;

use super::ctx::{Destination, RequestCtx};
use super::send::{Sent, Upgrades};

/// The agent's answer to a request sent under route `route_id`, whose
/// responses `set` scrubs. `head_request`: the request was a HEAD (its
/// answer has no content). The response's extensions hold its
/// [`RedactionCount`] (headers included). `frames`: the secret a
/// WebSocket's relay puts in the agent's messages ([`super::frames`]).
pub(crate) fn respond(
    ctx: &RequestCtx,
    dest: &Destination,
    route_id: RouteId,
    set: Arc<PatternSet>,
    sent: Sent,
    head_request: bool,
    frames: Option<websocket::FrameCredential>,
) -> Result<Response<Body>, Error> {
    let policy = &ctx.loaded.policy;
    let route = policy.route(route_id);
    let tenant = route_id.tenant();
    let Sent { status, mut headers, transfer_codings, body, upgrade, reason } = sent;

    // Headers are scrubbed before anything is sent. The reason phrase is
    // dropped (the agent gets the canonical one); one that held a secret
    // counts as a redaction.
    let grpc = grpc_kind(&headers);
    // gRPC's binary metadata is scrubbed in the bytes it carries.
    let binary_redactions = if grpc.is_some() { scrub_binary_metadata(&set, &mut headers) } else { 0 };
    let (mut headers, mut header_redactions) = scrub_headers(&set, headers);
    header_redactions += binary_redactions;
    header_redactions += u64::from(reason.is_some_and(|r| set.is_match(&r)));
    if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    let mut record = ctx.record(Outcome::Allow, status.as_u16());
    if let Some(Upgrades { agent, upstream }) = upgrade {
        // A WebSocket: its frames are relayed by `websocket::relay`, which
        // writes the record when the connection closes.
        record.redactions = header_redactions;
        let session = websocket::Session {
            set,
            policy: Arc::clone(policy),
            tenant,
            route: route_id,
            unscrubbed: route.danger_unscrubbed_websocket,
            credential: frames,
            record,
            audit: ctx.shared.audit.clone(),
            started: ctx.started,
            idle: policy.limits.tunnel_idle_timeout,
            max_message: usize::try_from(policy.limits.max_websocket_message).unwrap_or(usize::MAX),
            guard: dest.guard.clone(),
        };
        tokio::spawn(websocket::relay(agent, upstream, session).in_current_span());
        return Ok(response_head(status, headers, respond::empty()));
    }
    // A response that cannot have content — to a HEAD, or 1xx, 204, 304
    // (RFC 9110 §6.4.1, as hyper frames them) — keeps its Content-Length
    // and Content-Encoding: they describe the representation it stands
    // for (§9.3.2, §15.4.5), and there is nothing to decode or to change
    // the length of.
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // A body already known to be empty (`Content-Length: 0`, or HTTP/2
    // `END_STREAM` on the head, as for a `205`) is answered as one,
    // undecoded, so the agent's server frames it as the upstream's did
    // (`Content-Length: 0` on HTTP/1.1, not an empty chunked body).
    let empty = http_body::Body::is_end_stream(&body) || http_body::Body::size_hint(&body).exact() == Some(0);
    // The count starts with the header replacements; the body adds its own.
    let count = RedactionCount::default();
    count.add(header_redactions);
    let writer = ctx.shared.audit.clone();
    let started = ctx.started;
    let bytes_up = Arc::clone(&ctx.bytes_up);
    let injected = ctx.injected();
    let on_end = move |ended: Ended| {
        record.redactions = ended.redactions;
        record.bytes_down = ended.bytes_down;
        record.bytes_up = bytes_up.load(Ordering::Relaxed);
        record.duration_ms = started.elapsed().as_millis() as u64;
        record.complete = ended.complete;
        tracing::debug!(
            request_id = %record.request_id,
            redactions = record.redactions,
            bytes_down = record.bytes_down,
            complete = record.complete,
            "response ended"
        );
        writer.write(record);
    };
    if bodiless || empty {
        // Passed on as the upstream framed it: nothing to decode or scan,
        // and nothing will be read or sent (an HTTP/1.1 server never polls
        // the body of an answer to HEAD), so the record is written now,
        // whole.
        content_length_as_framed(&mut headers, status);
        debug!(status = status.as_u16(), injected, "forwarded");
        drop(body);
        on_end(Ended { redactions: count.get(), bytes_down: 0, complete: true });
        let mut resp = response_head(status, headers, respond::empty());
        resp.extensions_mut().insert(count);
        return Ok(resp);
    }
    // Content codings, then any transfer coding but chunked, were applied
    // in that order; all are decoded.
    let encodings: Vec<String> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .chain(transfer_codings)
        .collect();
    let decoder = match Decoder::for_encodings(encodings.iter().map(String::as_str), policy.limits.max_decoded_ratio) {
        Ok(d) => d,
        Err(source) => return Err(Error::UnscannableEncoding { status: status.as_u16(), source }),
    };
    if headers.get(header::CONTENT_TYPE).is_some_and(|v| is_grpc_web_text(v.as_bytes())) {
        return Err(Error::GrpcWebText { status: status.as_u16() });
    }
    // gRPC messages are read one by one.
    let grpc = match grpc {
        Some(kind) => {
            let limits = &policy.limits;
            let coding = grpc_coding(&mut headers, status, limits)?;
            Some(GrpcMessages::new(Arc::clone(&set), kind, coding))
        }
        None => None,
    };
    // The body may change length (and is sent decoded).
    headers.remove(header::CONTENT_LENGTH);
    if decoder.is_some() {
        headers.remove(header::CONTENT_ENCODING);
    }
    debug!(status = status.as_u16(), injected, "forwarded");
    let body = RedactBody::new(body, decoder, grpc, set, count.clone(), on_end);
    let mut resp = response_head(status, headers, body.boxed_unsync());
    resp.extensions_mut().insert(count);
    Ok(resp)
}

/// The coding of a gRPC answer's compressed messages (`grpc-encoding`),
/// which airlock decodes: the agent gets them uncompressed, so the header
/// is removed. One airlock cannot decode is refused, as a compressed
/// message cannot be scanned. airlock asks for `grpc-accept-encoding:
/// identity`, but a server configured to compress (grpcio's
/// `compression=`) compresses anyway.
fn grpc_coding(headers: &mut HeaderMap, status: StatusCode, limits: &Limits) -> Result<Option<MessageCoding>, Error> {
    let values: Vec<String> =
        headers.get_all(GRPC_ENCODING).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
    let max_message = usize::try_from(limits.max_grpc_message).unwrap_or(usize::MAX);
    let status = status.as_u16();
    let coding = match values.as_slice() {
        [] => None,
        // Never quoting the coding: it is upstream text.
        [one] => MessageCoding::for_header(one, max_message).map_err(|source| Error::GrpcCoding { status, source })?,
        _ => return Err(Error::GrpcCodings { status }),
    };
    if coding.is_some() {
        headers.remove(GRPC_ENCODING);
    }
    Ok(coding)
}

/// gRPC's message coding header (per stream; each message says whether
/// it used it).
const GRPC_ENCODING: &str = "grpc-encoding";

/// Makes the `Content-Length` of an answer passed on as the upstream
/// framed it (no body, or one declared empty) one the agent's client
/// accepts: none on a `1xx` or `204` (RFC 9110 §8.6: a server must not
/// send one there), else the one value the upstream's fields agree on
/// (`42, 42` is 42, §8.6), and none when they disagree or do not parse.
/// An HTTP/2 client refuses a response that breaks these (RFC 9113
/// §8.1.1), where an HTTP/1.1 one may let them pass.
fn content_length_as_framed(headers: &mut HeaderMap, status: StatusCode) {
    let mut values = headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("x").split(','))
        .map(|v| v.trim().parse::<u64>().ok());
    let first = values.next();
    let agreed = match first {
        Some(Some(n)) if values.all(|v| v == Some(n)) => Some(n),
        _ => None,
    };
    headers.remove(header::CONTENT_LENGTH);
    if let Some(n) = agreed.filter(|_| !(status.is_informational() || status == StatusCode::NO_CONTENT)) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
}

/// The agent's response: the status (whose reason phrase is then the
/// canonical one), the given headers, and no extension but airlock's own.
pub(crate) fn response_head(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    if status.canonical_reason().is_none() {
        // A status with no registered reason gets an empty one (RFC 9112
        // §4 allows it), not hyper's "<none>".
        resp.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(b""));
    }
    resp
}
