//! The credential of a WebSocket handshake under a route whose `websocket`
//! lists message kinds: the relay will put the route's secret in the
//! agent's messages of those kinds ([`crate::websocket`]), so the
//! handshake is a request that sends a secret. It is refused in cleartext
//! (`ws://`) like any other, but to a private address under
//! `danger_plaintext_private_upstream`; the secret is fetched now, before
//! anything goes upstream (unavailable: `secret_unavailable`); a secret
//! that is not UTF-8 cannot go in a text message, so the handshake of a
//! route listing `"text"` is refused then too; and the secret is added to
//! what the redactor maps back to the placeholder, as injected header
//! values are.

use http::{Request, Version};

use airlock_policy::RouteId;

use crate::error::Error;
use crate::headers::is_websocket_upgrade;
use crate::upstream::Egress;
use crate::websocket::FrameCredential;

use super::credential::{Applied, route_key};
use super::ctx::{Destination, RequestCtx};

/// The frame credential for `req` under `route_id`: None unless `req` is
/// a WebSocket handshake (HTTP/1.1, as `send` relays them) and the route
/// lists a message kind. Adds to `applied` what sending the secret needs.
pub(crate) async fn prepare<B>(
    ctx: &RequestCtx,
    dest: &Destination,
    route_id: RouteId,
    req: &Request<B>,
    applied: &mut Applied,
) -> Result<Option<FrameCredential>, Error> {
    let route = ctx.loaded.policy.route(route_id);
    let handshake = req.version() <= Version::HTTP_11 && is_websocket_upgrade(req.headers());
    if !handshake || !route.websocket.any() {
        return Ok(None);
    }
    if !dest.https {
        if !route.danger_plaintext_private_upstream {
            return Err(Error::Cleartext { route: route.name.clone(), authority: dest.authority() });
        }
        applied.egress = Egress::Private;
    }
    let secret = route_key(ctx, route).await?;
    if route.websocket.text && std::str::from_utf8(secret.expose()).is_err() {
        let reason = "the secret is not UTF-8 text, so it cannot go in the WebSocket text messages the route's \
                      websocket key lists"
            .to_owned();
        return Err(Error::SecretUnavailable { route: route.name.clone(), reason });
    }
    applied.injected_pairs.push((secret.expose().to_vec(), route.placeholder.as_bytes().to_vec()));
    Ok(Some(FrameCredential::new(&route.placeholder, secret, route.websocket)))
}
