//! Sending a decided request upstream: the request head the upstream
//! gets (the agent's, with the swapped values, without hop-by-hop headers
//! and every upgrade but WebSocket), its body (bounded, counted, trailer
//! fields checked) and what comes back (hop-by-hop headers removed,
//! transfer codings and a non-canonical reason phrase set aside, a `101`
//! accepted only for a WebSocket handshake).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use tracing::debug;

use airlock_policy::{RouteId, TenantId};

use crate::body::{DecidedRoute, ReadTimeout, TrailerCheck};
use crate::error::{Error, NotResentWhy, UpgradeRefusal};
use crate::headers::{
    accepts_trailers, is_websocket_upgrade, strip_hop_by_hop, transfer_codings, upgrades_to_websocket,
};
use crate::redact::grpc_kind;
use crate::replay::Replayable;
use crate::state::Loaded;
use crate::substitute::{Plan, Tally, Upward};
use crate::upstream::{ConnectError, Egress, Failure, Resend};
use crate::{Body, upstream};

use super::ctx::Destination;

/// The message codings a gRPC client accepts in the answer.
const GRPC_ACCEPT_ENCODING: &str = "grpc-accept-encoding";

/// What `send` sends besides the agent's request.
pub(crate) struct Outgoing {
    /// The tenant sending it.
    pub(crate) tenant: TenantId,
    /// Where its connection may go: the connection is made (or a pooled
    /// one taken) under this rule only.
    pub(crate) egress: Egress,
    /// Header values to put in place of the agent's, by index.
    pub(crate) swapped: Vec<(usize, HeaderValue)>,
    /// Headers to set, replacing any the agent sent (`add_headers`).
    pub(crate) added: Vec<(header::HeaderName, HeaderValue)>,
    /// The request target to send in place of the agent's (the credential
    /// swapped into its query).
    pub(crate) target: Option<String>,
    /// The route the request was decided under (intercepted requests): asks
    /// the upstream for an unencoded whole body, checks the request's
    /// trailer fields, and works its body as `body` says. None: passed
    /// through untouched.
    pub(crate) route: Option<DecidedRoute>,
    /// What is done to the request body (intercepted requests).
    pub(crate) body: Plan,
    /// What the body held, for the record.
    pub(crate) tally: Arc<Tally>,
    pub(crate) body_limit: u64,
    /// Counts the request body bytes sent.
    pub(crate) bytes_up: Arc<AtomicU64>,
    /// The route's client certificate clients (mutual TLS), used in place
    /// of the shared ones: their connections presented its certificate and
    /// serve no other route.
    pub(crate) client_cert: Option<Arc<upstream::IdentityClients>>,
    /// Signs the request as it goes (a route that signs).
    pub(crate) signer: Option<crate::sigv4::Signer>,
}

/// What the upstream answered, hop-by-hop headers removed.
pub(crate) struct Sent {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// `Transfer-Encoding` codings other than `chunked`, in the order
    /// applied.
    pub(crate) transfer_codings: Vec<String>,
    pub(crate) body: Body,
    /// Both sides' upgrades, for a `101` answering a WebSocket handshake.
    pub(crate) upgrade: Option<Upgrades>,
    /// The upstream's reason phrase when it was not the canonical one:
    /// never passed on, only checked (a secret in it counts as scrubbed).
    pub(crate) reason: Option<bytes::Bytes>,
}

/// The two halves of an upgraded connection, once each side has switched.
pub(crate) struct Upgrades {
    pub(crate) agent: OnUpgrade,
    pub(crate) upstream: OnUpgrade,
}

/// Sends the request upstream with the swapped header values; returns the
/// upstream's response with hop-by-hop headers removed. For intercepted
/// requests, asks for an unencoded, whole body: `Accept-Encoding: identity`
/// and no `Range` (a partial body could cut a secret at its edge, where the
/// redactor cannot see it whole), and for a gRPC call `grpc-accept-encoding:
/// identity`. airlock's upstream timeouts hold for every request: a gRPC
/// call's `grpc-timeout` is the agent's to set, so it never stretches them.
///
/// Only a WebSocket handshake keeps its `Upgrade` (without any
/// `Sec-WebSocket-Extensions` offer, so frames are never compressed out of
/// the redactor's sight); every other upgrade is stripped. A `101` is
/// accepted only as the answer to a WebSocket handshake, naming
/// `websocket` and no extension; any other is refused
/// (`unredactable_body`), never relayed as a pipe.
///
/// A request whose pooled connection the upstream closed before any
/// response head (a server's keep-alive timeout racing the request) is
/// sent once more, on a new connection, when its method is idempotent
/// (GET, HEAD, OPTIONS, TRACE, PUT, DELETE: RFC 9110 §9.2.2; RFC 9112
/// §9.3.1 lets a proxy retry those, and forbids retrying others) and its
/// body is at most [`REPLAY_LIMIT`](crate::replay::REPLAY_LIMIT) bytes, kept for the purpose. A POST or
/// PATCH is never resent: it may have been acted on. (A request hyper had
/// not begun to write is retried by hyper itself, whatever its method.)
pub(crate) async fn send<B>(
    loaded: &Loaded,
    dest: &Destination,
    mut req: Request<B>,
    out: Outgoing,
) -> Result<Sent, Error>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::BoxError>,
{
    let Outgoing {
        tenant,
        egress,
        swapped,
        added,
        target,
        route,
        body: plan,
        tally,
        body_limit,
        bytes_up,
        client_cert,
        signer,
    } = out;
    let route_id = route.as_ref().map(|r| r.route);
    let intercepted = route.is_some();
    let limits = &loaded.policy.limits;
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > body_limit) {
        return Err(Error::BodyTooLarge { limit: body_limit });
    }
    let websocket = req.version() <= Version::HTTP_11 && is_websocket_upgrade(req.headers());
    let agent_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();

    // The swapped values go into the agent's own map, in place: `iter_mut`
    // visits values in the order `iter` gave the decision its indices.
    let mut headers = std::mem::take(&mut parts.headers);
    let trailers = accepts_trailers(&headers);
    let grpc = grpc_kind(&headers).is_some();
    let mut swapped = swapped.into_iter().peekable();
    for (i, (_, value)) in headers.iter_mut().enumerate() {
        if let Some((_, v)) = swapped.next_if(|(j, _)| *j == i) {
            *value = v;
        }
    }
    strip_hop_by_hop(&mut headers, websocket);
    // After the hop-by-hop fields are gone, so a `Connection` naming one
    // cannot take it out.
    for (name, value) in added {
        // Servers that read headers as CGI variables fold `_` into `-`:
        // an agent's `developer_token` must not stand beside airlock's
        // `developer-token`.
        let folded = name.as_str().replace('-', "_");
        if folded != name.as_str() {
            headers.remove(folded.as_str());
        }
        headers.insert(name, value);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    headers.remove(header::HOST);
    if websocket {
        // permessage-deflate (RFC 7692) and any other extension stay off.
        headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    }
    if intercepted {
        headers.remove(header::RANGE);
        headers.remove(header::IF_RANGE);
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        // gRPC compresses messages by its own header: the upstream may
        // use only what the client accepts, and airlock scans only
        // uncompressed messages.
        if headers.contains_key(GRPC_ACCEPT_ENCODING) || grpc {
            headers.insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        }
    }

    let path = target.as_deref().unwrap_or_else(|| parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    let uri: Uri = format!("{}{path}", dest.origin()).parse().map_err(|_| Error::InvalidTarget)?;
    let sent = Arc::clone(&bytes_up);
    let counted = body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            bytes_up.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        frame
    });
    let limited = http_body_util::Limited::new(counted, usize::try_from(body_limit).unwrap_or(usize::MAX));
    let refused: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
    let body = match route {
        Some(route) => {
            let policy = Arc::clone(&route.policy);
            let checked = TrailerCheck::wrap(limited.boxed_unsync(), route, Arc::clone(&refused));
            let reframes = plan.reframes();
            let reads_ahead = plan.reads_ahead();
            let mut upward = Upward::new(checked, plan, policy, tally, Arc::clone(&refused));
            if reads_ahead {
                match tokio::time::timeout(limits.upstream_response_timeout, upward.read_ahead(declared)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(Some(e))) => return Err(e),
                    Ok(Err(None)) if sent.load(Ordering::Relaxed) > body_limit => {
                        return Err(Error::BodyTooLarge { limit: body_limit });
                    }
                    Ok(Err(None)) => return Err(take(&refused).unwrap_or(Error::AgentBody)),
                    Err(_) => return Err(Error::AgentBody),
                }
            }
            if reframes {
                // The body changes length: sent with its new exact length
                // when it has all been read, else chunked.
                headers.remove(header::CONTENT_LENGTH);
                if let Some(n) = upward.exact_len() {
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                }
            }
            upward.boxed()
        }
        None => limited.boxed_unsync(),
    };
    let method = parts.method;
    // Signed last, over the head and body exactly as they go.
    let body = match signer {
        Some(signer) => {
            let timeout = limits.upstream_response_timeout;
            signer.sign(&method, &uri, &mut headers, body, timeout, Arc::clone(&refused)).await?
        }
        None => body,
    };
    let body = Replayable::new(body);
    let request = |body: Body| {
        let mut up = Request::new(body);
        *up.method_mut() = method.clone();
        *up.uri_mut() = uri.clone();
        *up.version_mut() = Version::HTTP_11;
        *up.headers_mut() = headers.clone();
        up
    };

    let client = match &client_cert {
        Some(identity) => identity.client(websocket),
        None => loaded.upstream.client(egress, websocket),
    };
    let response_timeout = limits.upstream_response_timeout;
    let attempts = async {
        let mut resent = false;
        loop {
            // Every attempt has a body: the first always, a second only
            // when it was kept whole (checked before it is made).
            let Some(attempt) = body.attempt() else { return Err((None, resent)) };
            match client.request(request(attempt)).await {
                Ok(resp) => return Ok(resp),
                Err(e) => match Resend::of(&e) {
                    Some(rule) if !resent && rule.allows(&method) && body.resendable() => {
                        debug!(cause = rule.cause(), "resending the request once");
                        resent = true;
                    }
                    _ => return Err((Some(e), resent)),
                },
            }
        }
    };
    let mut resp = match tokio::time::timeout(response_timeout, attempts).await {
        Ok(Ok(resp)) => resp,
        // The body outgrew its limit while streaming (`Limited` failed it;
        // over HTTP/2 the error that surfaces is only the stream reset).
        Ok(Err(_)) if sent.load(Ordering::Relaxed) > body_limit => {
            return Err(Error::BodyTooLarge { limit: body_limit });
        }
        Ok(Err((e, resent))) => {
            // The request's trailer or body was refused while it streamed:
            // the request was not completed.
            if let Some(refusal) = take(&refused) {
                return Err(refusal);
            }
            let Some(e) = e else { return Err(Error::ResendImpossible) };
            let failure = match upstream::find_connect_error(&e) {
                Some(c) => match egress_refusal(loaded, dest, tenant, route_id, c) {
                    Some(refused) => return Err(refused),
                    None => Failure::from(c),
                },
                None => upstream::classify(&e, limits),
            };
            debug!(kind = ?failure.kind, "upstream request failed");
            let mut err = Error::Upstream(failure);
            if let Some(rule) = Resend::of(&e).filter(|_| !resent) {
                let why = if rule.allows(&method) {
                    NotResentWhy::BodyNotKept
                } else {
                    NotResentWhy::NotIdempotent(method.clone())
                };
                err = Error::NotResent { source: Box::new(err), cause: rule.cause(), why };
            }
            return Err(err);
        }
        Err(_) => return Err(Error::Timeout { host: dest.host.clone(), after: response_timeout }),
    };
    // A response has begun: the body will not be sent again, and the
    // connection has answered (a later failure on it is a reused one's).
    body.settle();
    if let Some(state) = resp.extensions().get::<upstream::ConnState>() {
        state.mark_answered();
    }

    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upgrade = match agent_upgrade {
        Some(agent) if switching => {
            check_websocket_accepted(resp.headers())?;
            Some(Upgrades { agent, upstream: hyper::upgrade::on(&mut resp) })
        }
        _ if switching => return Err(Error::Upgrade(UpgradeRefusal::Unasked)),
        _ => None,
    };
    let (mut parts, body) = resp.into_parts();
    let transfer_codings = transfer_codings(&parts.headers);
    strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
    let reason =
        parts.extensions.get::<hyper::ext::ReasonPhrase>().map(|r| bytes::Bytes::copy_from_slice(r.as_bytes()));
    let body = ReadTimeout::wrap(body.map_err(Into::into).boxed_unsync(), limits.upstream_read_timeout);
    Ok(Sent { status: parts.status, headers: parts.headers, transfer_codings, body, upgrade, reason })
}

/// The refusal a body left while it streamed, if any.
fn take(refused: &Mutex<Option<Error>>) -> Option<Error> {
    refused.lock().ok().and_then(|mut r| r.take())
}

/// The refusal of a connection its egress rule refused, in the words of
/// the policy that set the rule; None for any other failure.
fn egress_refusal(
    loaded: &Loaded,
    dest: &Destination,
    tenant: TenantId,
    route: Option<RouteId>,
    e: &ConnectError,
) -> Option<Error> {
    let policy = &loaded.policy;
    match e {
        ConnectError::PrivateAddress { .. } => crate::tunnel::unrouted_denial(policy, tenant, e),
        ConnectError::PublicAddress { ip, .. } => {
            route.map(|r| super::credential::public_cleartext(dest, policy.route(r), *ip))
        }
        _ => None,
    }
}

/// Checks an upstream's `101` to a WebSocket handshake: it must switch to
/// `websocket` and accept no extension (none was offered).
fn check_websocket_accepted(headers: &HeaderMap) -> Result<(), Error> {
    if !upgrades_to_websocket(headers) {
        return Err(Error::Upgrade(UpgradeRefusal::OtherProtocol));
    }
    if headers.contains_key(header::SEC_WEBSOCKET_EXTENSIONS) {
        return Err(Error::Upgrade(UpgradeRefusal::Extension));
    }
    Ok(())
}
