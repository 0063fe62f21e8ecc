//! The credential phase's client certificate (mutual TLS): a route with
//! `client_cert` has its requests sent on connections that presented its
//! certificate chain and key, from the vault, parsed in memory
//! ([`crate::upstream::Upstream::identity`], which keeps each route's
//! connections apart from every other's).
//!
//! Like every other credential, a certificate is never used in cleartext:
//! a plain `http://` request under such a route is refused
//! (`insecure_upstream`), `danger_plaintext_private_upstream` or not —
//! without TLS there is no certificate to present, and sending the request
//! unauthenticated would not be what the route says.

use std::sync::Arc;

use airlock_policy::RouteId;

use crate::error::Error;
use crate::upstream::{Egress, IdentityClients};

use super::credential::route_secret;
use super::ctx::{Destination, RequestCtx};

/// The clients presenting route `route_id`'s client certificate, for a
/// request whose connection is under `egress`; None when the route has
/// none. A secret that cannot be fetched or is not a usable PEM chain and
/// key refuses the request (`secret_unavailable`, with the reason naming
/// the secret, never its value).
pub(crate) async fn clients(
    ctx: &RequestCtx,
    dest: &Destination,
    route_id: RouteId,
    egress: Egress,
) -> Result<Option<Arc<IdentityClients>>, Error> {
    let route = ctx.loaded.policy.route(route_id);
    let Some(names) = &route.client_cert else { return Ok(None) };
    if !dest.https {
        return Err(Error::Cleartext { route: route.name.clone(), authority: dest.authority() });
    }
    let cert = route_secret(ctx, route, &names.cert).await?;
    let key = route_secret(ctx, route, &names.key).await?;
    let clients = ctx
        .loaded
        .upstream
        .identity(route_id, egress, (&names.cert, &cert), (&names.key, &key))
        .map_err(|e| Error::SecretUnavailable { route: route.name.clone(), reason: e.to_string() })?;
    ctx.set_injected(true);
    Ok(Some(clients))
}
