//! The request pipeline. Every request — intercepted HTTP/1.1 or HTTP/2,
//! plain HTTP, an approved action — runs the same phases with one
//! [`RequestCtx`], each in its own module:
//!
//! 1. **admit** ([`admit`]): the destination (the CONNECT target or the
//!    absolute-form authority), proxy authentication (by the listener,
//!    through `throttle`), the request's `Host` against its connection,
//!    and the head's size;
//! 2. **decide** ([`decide`]): the policy's pure decision — the route, and
//!    where its placeholder sits — or its denial;
//! 3. **credential** ([`credential`]): the route's credential applied to
//!    the request (the header placeholder swap, `add_headers`, the query,
//!    the body), for a WebSocket handshake the secret its frames carry
//!    ([`frames`]), and its client certificate chosen ([`client_cert`]);
//! 4. **send** ([`send`]): the upstream request, its body bounded and its
//!    trailers checked, on a connection under the request's egress rule,
//!    resent once when that is safe;
//! 5. **respond** ([`response`]): the agent's answer from an allow-list,
//!    headers scrubbed, the body decoded and redacted;
//! 6. **record** ([`record`]): the one audit record, written when the
//!    exchange ends, and the one way a refusal is answered
//!    ([`RequestCtx::deny`], through `respond::refusal`).
//!
//! Hosts no route names, under `egress = "tunnel"`, skip decide and
//! credential: [`pass_through`] forwards them untouched and records them
//! as tunnels.

use std::sync::Arc;

use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::{Instrument, info_span};

use airlock_policy::TenantId;

use crate::Body;
use crate::audit::Outcome;
use crate::error::Error;
use crate::redact::grpc_kind;
use crate::respond::{Audience, Form, REQUEST_ID_HEADER};
use crate::state::Shared;
use crate::upstream::Egress;

pub(crate) mod admit;
pub(crate) mod client_cert;
pub(crate) mod credential;
pub(crate) mod ctx;
pub(crate) mod decide;
pub(crate) mod frames;
pub(crate) mod record;
pub(crate) mod response;
pub(crate) mod send;

pub use ctx::Destination;
pub(crate) use ctx::RequestCtx;

use send::{Outgoing, Sent, Upgrades};

/// The span of one request: the id the agent and the audit record see,
/// and the tenant, destination and (once decided) route.
pub(crate) fn request_span(ctx: &RequestCtx) -> tracing::Span {
    info_span!(
        "request",
        request_id = %ctx.request_id,
        tenant = %ctx.tenant_name.as_deref().unwrap_or(""),
        host = %ctx.host,
        port = ctx.port,
        method = %ctx.method,
        path = %ctx.path,
        query = %ctx.query.as_deref().unwrap_or(""),
        route = tracing::field::Empty,
    )
}

/// Runs one request on an intercepted (or plain-HTTP) connection to
/// `dest` through the phases, and answers it.
pub(crate) async fn handle(shared: Arc<Shared>, dest: Arc<Destination>, req: Request<Incoming>) -> Response<Body> {
    let ctx = RequestCtx::on_connection(&shared, &dest, req.method().as_str());
    let form = refusal_form(&req);
    if ctx.tenant.is_none() {
        // The tenant was removed by a reload while this connection was
        // open: refused, and recorded under the name it connected as (no
        // path: with the tenant gone, there is no set to scrub it with).
        let detail = Some("the tenant was removed by a reload while its connection was open".to_owned());
        return ctx.deny_with(Error::Auth(airlock_policy::AuthError::Unknown), Audience::Proxy, form, detail);
    }
    let ctx = ctx.begin(req.uri().path(), req.uri().query());
    let span = request_span(&ctx);
    async {
        #[cfg(debug_assertions)]
        crate::fault::check(req.headers());
        let admitted =
            admit::check_authority(&req, &dest).and_then(|()| admit::check_head(&req, &ctx.loaded.policy.limits));
        if let Err(e) = admitted {
            return ctx.deny(e, Audience::Proxy, form);
        }
        match forward(&ctx, &dest, req).await {
            Ok(resp) => resp,
            Err(e) => ctx.deny(e, Audience::Proxy, form),
        }
    }
    .instrument(span)
    .await
}

/// The form a refusal of `req` is written in, so that its client shows the
/// code and next step: gRPC's trailers for a gRPC call, an AWS error
/// document for a request an AWS SDK signed, plain text for git, else JSON.
pub(crate) fn refusal_form<B>(req: &Request<B>) -> Form {
    if grpc_kind(req.headers()).is_some() {
        Form::Grpc
    } else if signed_by_aws_sdk(req) {
        Form::Aws
    } else if sent_by_git(req) {
        Form::Text
    } else {
        Form::Json
    }
}

/// Whether `req` comes from git's HTTP transport (`User-Agent: git/2.…`).
fn sent_by_git<B>(req: &Request<B>) -> bool {
    req.headers().get(http::header::USER_AGENT).is_some_and(|ua| ua.as_bytes().starts_with(b"git/"))
}

/// Whether `req` is signed with AWS SigV4 (in its `Authorization`, or a
/// presigned URL's query): an AWS SDK's, which shows a denial's code and
/// message only from an AWS error document ([`Form::Aws`]).
fn signed_by_aws_sdk<B>(req: &Request<B>) -> bool {
    let header = req
        .headers()
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .any(|v| v.as_bytes().starts_with(airlock_policy::sigv4::ALGORITHM.as_bytes()));
    header || req.uri().path_and_query().is_some_and(|t| airlock_policy::sigv4::is_presigned(t.as_str()))
}

/// The phases from decide on, for a request whose head was admitted:
/// decide, apply the credential, send, and answer with scrubbed headers
/// and a scrubbing body that writes the audit record when it ends. An
/// error is returned for the caller to answer in its own form
/// ([`RequestCtx::deny`]).
pub(crate) async fn forward<B>(ctx: &RequestCtx, dest: &Destination, req: Request<B>) -> Result<Response<Body>, Error>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::BoxError>,
{
    let policy = &ctx.loaded.policy;
    let headers: Vec<(&str, &[u8])> = req.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
    let decided = decide::decide(ctx, dest, &req, &headers)?;
    let route_id = decided.route;
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let has_body = !http_body::Body::is_end_stream(req.body());
    let mut applied = credential::apply(ctx, dest, route_id, &decided, target, &headers, has_body).await?;
    // A WebSocket handshake under a route that sends its secret in frames.
    let frames = frames::prepare(ctx, dest, route_id, &req, &mut applied).await?;
    let client_cert = client_cert::clients(ctx, dest, route_id, applied.egress).await?;
    drop(headers);
    let tenant = route_id.tenant();
    let route = policy.route(route_id);
    let set = ctx.loaded.scrubbers.for_request(policy, &ctx.shared.vault, tenant, applied.injected_pairs).await;
    let out = Outgoing {
        tenant,
        egress: applied.egress,
        swapped: applied.swapped,
        added: applied.added,
        target: applied.target,
        route: Some(crate::body::DecidedRoute { policy: Arc::clone(policy), tenant, route: route_id }),
        body: applied.body,
        tally: Arc::clone(&ctx.body),
        body_limit: route.max_request_body.unwrap_or(policy.limits.max_request_body),
        bytes_up: Arc::clone(&ctx.bytes_up),
        client_cert,
        signer: applied.signer,
    };
    let head_request = req.method() == http::Method::HEAD;
    let sent = send::send(&ctx.loaded, dest, req, out).await?;
    response::respond(ctx, dest, route_id, set, sent, head_request, frames)
}

/// Forwards a plain-HTTP request to a host no route names (egress =
/// "tunnel"): untouched but for hop-by-hop headers, like a tunnel's bytes,
/// and audited as one (`decision: "tunnel"`). A WebSocket to such a host is
/// relayed as a tunnel is; no other upgrade is.
pub(crate) async fn pass_through(
    shared: Arc<Shared>,
    tenant: TenantId,
    dest: Arc<Destination>,
    req: Request<Incoming>,
) -> Response<Body> {
    let mut ctx = RequestCtx::on_connection(&shared, &dest, req.method().as_str());
    ctx.authenticated(tenant);
    let ctx = ctx.begin(req.uri().path(), req.uri().query());
    let span = request_span(&ctx);
    async {
        let loaded = &ctx.loaded;
        let out = Outgoing {
            tenant,
            egress: Egress::unrouted(loaded.policy.proxy.deny_private_egress),
            swapped: Vec::new(),
            added: Vec::new(),
            target: None,
            route: None,
            body: crate::substitute::Plan::Data,
            tally: Arc::clone(&ctx.body),
            body_limit: loaded.policy.limits.max_request_body,
            bytes_up: Arc::clone(&ctx.bytes_up),
            client_cert: None,
            signer: None,
        };
        let Sent { status, mut headers, body, upgrade, .. } = match send::send(loaded, &dest, req, out).await {
            Ok(sent) => sent,
            Err(e) => return ctx.deny(e, Audience::Proxy, Form::Json),
        };
        if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
            headers.insert(REQUEST_ID_HEADER, id);
        }
        let resp = if let Some(Upgrades { agent, upstream }) = upgrade {
            let (idle, guard) = (loaded.policy.limits.tunnel_idle_timeout, dest.guard.clone());
            tokio::spawn(
                async move {
                    let Ok((agent, upstream)) = tokio::try_join!(agent, upstream) else { return };
                    crate::relay::pipe(TokioIo::new(agent), TokioIo::new(upstream), idle, guard.as_ref()).await;
                }
                .in_current_span(),
            );
            response::response_head(status, headers, crate::respond::empty())
        } else {
            response::response_head(status, headers, body)
        };
        ctx.shared.audit.write(ctx.record(Outcome::Tunnel, status.as_u16()));
        resp
    }
    .instrument(span)
    .await
}
