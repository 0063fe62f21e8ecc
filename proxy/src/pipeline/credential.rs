//! The credential phase: applies the decided route's credential to the
//! request: the header placeholder swap (a Bearer token, an API-key
//! header, Basic credentials: the placeholder is replaced where the
//! decision found it), and the route's `add_headers`, each set to a
//! secret's value. A new credential kind (a query or body substitution, a
//! minted token, a signature, a client certificate) is another way of
//! producing [`Applied`].
//!
//! A secret never goes out in cleartext, but to a private address under a
//! route's opt-in (`danger_plaintext_private_upstream`); where the host
//! resolves is checked on the very addresses the connection is made to
//! ([`Egress::Private`]).

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use airlock_policy::inject::inject;
use airlock_policy::secrets::SecretValue;
use airlock_policy::{Injection, Route, RouteId, SecretSpec};

use crate::error::Error;
use crate::state::Shared;
use crate::upstream::Egress;

use super::ctx::{Destination, RequestCtx};

/// The route's credential, applied.
pub(crate) struct Applied {
    /// Header values to put in place of the agent's, by index (the order
    /// the request's headers iterate in).
    pub(crate) swapped: Vec<(usize, HeaderValue)>,
    /// What the redactor maps back: each injected value to what the agent
    /// sent in its place.
    pub(crate) injected_pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Headers set from secrets (`add_headers`), replacing any the agent
    /// sent.
    pub(crate) added: Vec<(HeaderName, HeaderValue)>,
    /// Where the upstream connection may go.
    pub(crate) egress: Egress,
}

/// Applies route `route_id`'s credential at `injections` (indices into
/// `headers`, the request's fields in order).
pub(crate) async fn apply(
    ctx: &RequestCtx,
    dest: &Destination,
    route_id: RouteId,
    injections: &[Injection],
    headers: &[(&str, &[u8])],
) -> Result<Applied, Error> {
    let policy = &ctx.loaded.policy;
    let route = policy.route(route_id);
    let cleartext = (!injections.is_empty() || !route.add_headers.is_empty()) && !dest.https;
    if cleartext && !route.danger_plaintext_private_upstream {
        return Err(Error::Cleartext { route: route.name.clone(), authority: dest.authority() });
    }
    let egress = if cleartext { Egress::Private } else { Egress::Any };
    let mut swapped: Vec<(usize, HeaderValue)> = Vec::new();
    if !injections.is_empty() {
        let fetched = match policy.secret(&route.secret) {
            Some(spec) => fetch_secret(&ctx.shared, spec).await,
            // Policy::load checks every route's secret is declared.
            None => Err(format!("secret '{}' is not declared", route.secret)),
        };
        let secret = fetched.map_err(|reason| Error::SecretUnavailable { route: route.name.clone(), reason })?;
        for inj in injections {
            let Some((_, value)) = headers.get(inj.header) else { continue };
            let Some(bytes) = inject(value, route.placeholder.as_bytes(), secret.expose()) else { continue };
            // Secrets hold no control characters (checked when fetched),
            // so the swapped value is a valid header value.
            if let Ok(mut v) = HeaderValue::from_bytes(&bytes) {
                v.set_sensitive(true);
                swapped.push((inj.header, v));
            }
        }
    }
    let injected_pairs = swapped
        .iter()
        .filter_map(|(i, v)| headers.get(*i).map(|(_, orig)| (v.as_bytes().to_vec(), orig.to_vec())))
        .collect();
    let mut added = Vec::with_capacity(route.add_headers.len());
    for (name, secret_name) in &route.add_headers {
        let fetched = match policy.secret(secret_name) {
            Some(spec) => fetch_secret(&ctx.shared, spec).await,
            // Policy::load checks every add_headers secret is declared.
            None => Err(format!("secret '{secret_name}' is not declared")),
        };
        let secret = fetched.map_err(|reason| Error::SecretUnavailable { route: route.name.clone(), reason })?;
        // Names are checked tokens (Policy::load); secrets hold no control
        // characters (checked when fetched).
        if let (Ok(name), Ok(mut value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(secret.expose()))
        {
            value.set_sensitive(true);
            added.push((name, value));
        }
    }
    ctx.set_injected(!swapped.is_empty() || !added.is_empty());
    Ok(Applied { swapped, injected_pairs, added, egress })
}

/// The refusal of a cleartext secret to a host that resolves to a public
/// address, `ip`.
pub(crate) fn public_cleartext(dest: &Destination, route: &Route, ip: std::net::IpAddr) -> Error {
    Error::PublicCleartext { host: dest.host.clone(), ip, route: route.name.clone(), authority: dest.authority() }
}

/// The secret's value: from the cache, or fetched on a blocking thread (a
/// `command` source runs a process; a `file` one reads the disk), one fetch
/// per secret however many requests miss it at once (see `fetch`). The
/// error is the agent's to read: a failed command's stderr is never in it.
async fn fetch_secret(shared: &Arc<Shared>, spec: &SecretSpec) -> Result<Arc<SecretValue>, String> {
    if let Some(v) = shared.vault.cached(spec) {
        return Ok(v);
    }
    shared.fetches.fetch(&shared.vault, spec).await
}
