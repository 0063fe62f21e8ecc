//! CONNECT handling, once the listener has admitted the CONNECT (its
//! target and proxy credentials): a host a route names — or any host, under
//! `egress = "deny"` — is intercepted ([`crate::intercept`]); a host no
//! route names, under `egress = "tunnel"`, gets a byte tunnel
//! ([`crate::tunnel`]) after the private-egress check, recorded as
//! `decision: "tunnel"`; a tunnel refused on a port whose clients speak TLS
//! is answered inside TLS ([`intercept::serve_refusal`]). Each CONNECT runs in its own `tunnel` span, whose
//! id is the CONNECT's request id.

use http::{Request, Response};
use hyper::body::Incoming;
use tracing::{Instrument, debug, info_span};

use airlock_policy::ConnectAction;

use crate::Body;
use crate::audit::Outcome;
use crate::conn::ConnGuard;
use crate::pipeline::{Destination, RequestCtx};
use crate::respond::{self, Audience, Form};
use crate::{intercept, tunnel};

/// Answers an admitted CONNECT of `ctx`'s tenant to `dest`: `200` and the
/// interception or tunnel spawned on the upgraded connection, or a denial.
pub(crate) async fn handle(
    ctx: RequestCtx,
    dest: Destination,
    req: Request<Incoming>,
    guard: ConnGuard,
) -> Response<Body> {
    let Some(tenant) = ctx.tenant else {
        return ctx.deny(crate::error::Error::Auth(airlock_policy::AuthError::Unknown), Audience::Proxy, Form::Json);
    };
    let span =
        info_span!("tunnel", tunnel_id = %ctx.request_id, tenant = %dest.tenant, host = %dest.host, port = dest.port);
    async {
        let policy = &ctx.loaded.policy;
        match policy.connect_action(tenant, &dest.host, dest.port) {
            ConnectAction::Intercept(route) => {
                debug!(route = route.map(|r| policy.route(r).name.as_str()), "intercepting");
                let on_upgrade = hyper::upgrade::on(req);
                let shared = ctx.shared;
                tokio::spawn(
                    async move {
                        match on_upgrade.await {
                            Ok(upgraded) => intercept::serve(shared, dest, upgraded, guard).await,
                            Err(e) => debug!(error = %e, "CONNECT upgrade failed"),
                        }
                    }
                    .in_current_span(),
                );
                Response::new(respond::empty())
            }
            ConnectAction::Tunnel => match tunnel::open(&ctx.loaded, tenant, &dest.host, dest.port).await {
                Ok(upstream) => {
                    ctx.shared.audit.write(ctx.record(Outcome::Tunnel, 200));
                    let on_upgrade = hyper::upgrade::on(req);
                    let idle = policy.limits.tunnel_idle_timeout;
                    tokio::spawn(tunnel::relay(on_upgrade, upstream, idle, guard).in_current_span());
                    Response::new(respond::empty())
                }
                // A client that will speak TLS is told inside it, where
                // it shows the code and next step; the CONNECT's status
                // line says nothing to most clients.
                Err(e) if intercept::refuse_inside_tls(dest.port) => {
                    let refusal = ctx.refuse(&e, Audience::Proxy, None);
                    let (shared, request_id) = (ctx.shared, ctx.request_id);
                    let on_upgrade = hyper::upgrade::on(req);
                    tokio::spawn(
                        async move {
                            match on_upgrade.await {
                                Ok(upgraded) => {
                                    intercept::serve_refusal(shared, dest, upgraded, guard, refusal, request_id).await
                                }
                                Err(e) => debug!(error = %e, "CONNECT upgrade failed"),
                            }
                        }
                        .in_current_span(),
                    );
                    Response::new(respond::empty())
                }
                Err(e) => ctx.deny(e, Audience::Proxy, Form::Json),
            },
        }
    }
    .instrument(span)
    .await
}
