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
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use tracing::info;
use zeroize::Zeroizing;

use airlock_policy::inject::inject;
use airlock_policy::secrets::SecretValue;
use airlock_policy::sigv4::SigV4Authorization;
use airlock_policy::{AwsSigV4, BodyKind, Credential, Route, RouteId, SECRET_SLOT, SecretSpec};

use crate::error::{Error, Unsubstitutable};
use crate::mint::{self, MintError, Minted};
use crate::redact::Decoder;
use crate::sigv4::{CONTENT_SHA256, Signer};
use crate::state::Shared;
use crate::substitute::{self, Plan, Refusal};
use crate::upstream::Egress;

use super::ctx::{Destination, RequestCtx};
use super::decide::Decided;

/// How many times its compressed size a request body may decode to while
/// it is searched for a placeholder.
const DECODE_RATIO: u64 = 100;

/// An injected value and what the agent sent in its place: the redactor
/// maps the first back to the second.
pub(crate) type Mapped = (Vec<u8>, Vec<u8>);

/// The route's credential, applied.
pub(crate) struct Applied {
    /// Header values to put in place of the agent's, by index (the order
    /// the request's headers iterate in).
    pub(crate) swapped: Vec<(usize, HeaderValue)>,
    /// What the redactor maps back: each injected value to what the agent
    /// sent in its place.
    pub(crate) injected_pairs: Vec<Mapped>,
    /// Headers set from secrets (`add_headers`), replacing any the agent
    /// sent.
    pub(crate) added: Vec<(HeaderName, HeaderValue)>,
    /// The request target with the placeholder swapped in the query
    /// parameters the decision named (the secret percent-encoded); None
    /// when there were none.
    pub(crate) target: Option<String>,
    /// What is done to the request body.
    pub(crate) body: Plan,
    /// Where the upstream connection may go.
    pub(crate) egress: Egress,
    /// How the request is signed (an `aws_sigv4` route's request that
    /// carried its placeholder).
    pub(crate) signer: Option<Signer>,
}

/// Applies route `route_id`'s credential where the decision found its
/// placeholder: in `injections` (indices into `headers`, the request's
/// fields in order), in the `query` pairs of `target`, and, when the
/// route swaps in bodies and the request `has_body`, in the body (as the
/// returned [`Plan`] says).
pub(crate) async fn apply(
    ctx: &RequestCtx,
    dest: &Destination,
    route_id: RouteId,
    decided: &Decided,
    target: &str,
    headers: &[(&str, &[u8])],
    has_body: bool,
) -> Result<Applied, Error> {
    let policy = &ctx.loaded.policy;
    let route = policy.route(route_id);
    if let Some(Credential::AwsSigV4(aws)) = &route.credential {
        return signed(ctx, dest, route, aws, decided, headers).await;
    }
    let injections = &decided.injections;
    let body_kind = route.body.filter(|_| has_body);
    let (why, decoder) = match body_kind.and_then(|kind| unsubstitutable(kind, headers)) {
        Some(Unswappable { why, decoder }) => (Some(why), decoder),
        None => (None, None),
    };
    let body_swaps = body_kind.is_some() && why.is_none();
    let sends_secret = !injections.is_empty() || !decided.query.is_empty() || !route.add_headers.is_empty();
    let cleartext = !dest.https && (sends_secret || body_swaps);
    let refused_cleartext = cleartext && !route.danger_plaintext_private_upstream;
    if refused_cleartext && sends_secret {
        return Err(Error::Cleartext { route: route.name.clone(), authority: dest.authority() });
    }
    // In cleartext, only to a private address, and only when the secret
    // may go at all (a body refused if it holds the placeholder is not).
    let egress = if cleartext && !refused_cleartext { Egress::Private } else { Egress::Any };
    let mut swapped: Vec<(usize, HeaderValue)> = Vec::new();
    let mut swapped_query = None;
    let mut query_pairs = Vec::new();
    let refusal = if refused_cleartext {
        Some(Refusal::Cleartext { route: route.name.clone(), authority: dest.authority() })
    } else {
        why.map(|why| Refusal::Unsubstitutable { route: route.name.clone(), why })
    };
    // The route's key, fetched (or minted) once for every place it goes.
    let key_in_body = body_kind.is_some() && refusal.is_none();
    let key = if key_in_body || !injections.is_empty() || !decided.query.is_empty() {
        Some(route_key(ctx, route).await?)
    } else {
        None
    };
    let mut body = Plan::Data;
    if let Some(kind) = body_kind {
        let placeholder = route.placeholder.as_bytes().to_vec();
        body = match (refusal, &key) {
            (Some(refusal), _) => Plan::Refuse { placeholder, decoder, refusal },
            // Not reached: a body the key goes in had it fetched above.
            (None, None) => Plan::Data,
            (None, Some(secret)) => {
                let Some(replacement) = substitute::encode(kind, secret.expose()) else {
                    return Err(Error::SecretUnavailable {
                        route: route.name.clone(),
                        reason: format!(
                            "secret '{}' is not UTF-8 text, which a JSON body cannot hold (body = \"json\")",
                            route.secret
                        ),
                    });
                };
                query_pairs.push((replacement.to_vec(), placeholder.clone()));
                Plan::Swap { placeholder, replacement }
            }
        };
    }
    if let Some(secret) = key.as_ref().filter(|_| !injections.is_empty() || !decided.query.is_empty()) {
        if !decided.query.is_empty() {
            let (new, pairs) = swap_in_query(target, &decided.query, &route.placeholder, secret.expose());
            swapped_query = Some(new);
            query_pairs.extend(pairs);
        }
        for inj in injections {
            let Some((_, value)) = headers.get(inj.header) else { continue };
            let formatted = route.format.as_deref().filter(|_| *value == route.placeholder.as_bytes());
            let bytes = match formatted {
                Some(format) => Some(formatted_value(format, secret.expose())),
                None => inject(value, route.placeholder.as_bytes(), secret.expose()),
            };
            let Some(bytes) = bytes else { continue };
            // Secrets hold no control characters (checked when fetched),
            // so the swapped value is a valid header value.
            if let Ok(mut v) = HeaderValue::from_bytes(&bytes) {
                v.set_sensitive(true);
                swapped.push((inj.header, v));
            }
        }
    }
    let mut injected_pairs: Vec<Mapped> = swapped
        .iter()
        .filter_map(|(i, v)| headers.get(*i).map(|(_, orig)| (v.as_bytes().to_vec(), orig.to_vec())))
        .collect();
    injected_pairs.extend(query_pairs);
    let added = added_headers(ctx, route).await?;
    ctx.set_injected(!swapped.is_empty() || swapped_query.is_some() || !added.is_empty());
    Ok(Applied { swapped, injected_pairs, added, target: swapped_query, body, egress, signer: None })
}

/// The credential of a route that signs (`aws_sigv4`): a request that
/// carries its placeholder (as the access key id of a SigV4
/// `Authorization` the decision checked) is signed anew as it goes
/// ([`Signer`]); one without it goes unsigned, as the agent sent it. The
/// route's `add_headers` are set either way.
async fn signed(
    ctx: &RequestCtx,
    dest: &Destination,
    route: &Route,
    aws: &AwsSigV4,
    decided: &Decided,
    headers: &[(&str, &[u8])],
) -> Result<Applied, Error> {
    let authorization = decided.injections.iter().find_map(|inj| {
        let (name, value) = headers.get(inj.header)?;
        name.eq_ignore_ascii_case("authorization").then(|| SigV4Authorization::parse(value)).flatten()
    });
    let sends_secret = authorization.is_some() || !route.add_headers.is_empty();
    let cleartext = !dest.https && sends_secret;
    if cleartext && !route.danger_plaintext_private_upstream {
        return Err(Error::Cleartext { route: route.name.clone(), authority: dest.authority() });
    }
    let egress = if cleartext { Egress::Private } else { Egress::Any };
    let mut injected_pairs = Vec::new();
    let signer = match authorization {
        None => None,
        Some(auth) => {
            let mut keys = [None, None, None];
            for (slot, name) in keys.iter_mut().zip([
                Some(&aws.access_key_id),
                Some(&aws.secret_access_key),
                aws.session_token.as_ref(),
            ]) {
                if let Some(name) = name {
                    *slot = Some(route_secret(ctx, route, name).await?);
                }
            }
            // An echo of the real access key id reads as the placeholder.
            if let Some(id) = &keys[0] {
                injected_pairs.push((id.expose().to_vec(), route.placeholder.as_bytes().to_vec()));
            }
            let declared: Vec<&[u8]> =
                headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(CONTENT_SHA256)).map(|(_, v)| *v).collect();
            if declared.len() > 1 {
                return Err(Error::Unsignable {
                    route: route.name.clone(),
                    why: format!("it sends {CONTENT_SHA256} twice"),
                });
            }
            let budget = ctx.shared.signing_budget.for_tenant(ctx.tenant_name.as_deref().unwrap_or(""));
            Some(Signer::new(route, aws, keys, &auth.signed_headers, declared.first().copied(), budget)?)
        }
    };
    let added = added_headers(ctx, route).await?;
    ctx.set_injected(signer.is_some() || !added.is_empty());
    Ok(Applied { swapped: Vec::new(), injected_pairs, added, target: None, body: Plan::Data, egress, signer })
}

/// The route's `add_headers`, each set to its secret's value (sensitive).
async fn added_headers(ctx: &RequestCtx, route: &Route) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    let mut added = Vec::with_capacity(route.add_headers.len());
    for (name, secret_name) in &route.add_headers {
        let secret = route_secret(ctx, route, secret_name).await?;
        // Names are checked tokens (Policy::load); secrets hold no control
        // characters (checked when fetched).
        if let (Ok(name), Ok(mut value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(secret.expose()))
        {
            value.set_sensitive(true);
            added.push((name, value));
        }
    }
    Ok(added)
}

/// `format` with its [`SECRET_SLOT`] replaced by `secret` (a header value
/// that was the placeholder alone).
fn formatted_value(format: &str, secret: &[u8]) -> Zeroizing<Vec<u8>> {
    let (before, after) = format.split_once(SECRET_SLOT).unwrap_or((format, ""));
    Zeroizing::new([before.as_bytes(), secret, after.as_bytes()].concat())
}

/// Why a body of a route that swaps in bodies of `kind` cannot have the
/// placeholder swapped in (with the decoder to search a compressed one
/// through); None when it can. An encoding airlock cannot decode is
/// refused outright: what it holds cannot be known.
fn unsubstitutable(kind: BodyKind, headers: &[(&str, &[u8])]) -> Option<Unswappable> {
    let codings = headers.iter().filter(|(n, _)| *n == "content-encoding").map(|(_, v)| std::str::from_utf8(v));
    let codings: Vec<&str> = match codings.collect::<Result<_, _>>() {
        Ok(codings) => codings,
        Err(_) => return Some(Unswappable { why: Unsubstitutable::Undecodable, decoder: None }),
    };
    // The ratio bounds what one piece decodes to; what is decoded is
    // searched and dropped.
    match Decoder::for_encodings(codings.into_iter(), DECODE_RATIO) {
        Ok(Some(decoder)) => {
            return Some(Unswappable { why: Unsubstitutable::Compressed, decoder: Some(Box::new(decoder)) });
        }
        Ok(None) => {}
        Err(_) => return Some(Unswappable { why: Unsubstitutable::Undecodable, decoder: None }),
    }
    let wanted = match kind {
        BodyKind::Form => "a form (application/x-www-form-urlencoded)",
        BodyKind::Json => "JSON (application/json)",
        BodyKind::Text => "a body that is neither multipart nor gRPC",
    };
    let why = match substitute::essence(headers) {
        Some(essence) if essence.starts_with("multipart/") => Unsubstitutable::Multipart,
        Some(essence) if kind.accepts(&essence) => return None,
        Some(essence) if essence.is_empty() => Unsubstitutable::MediaType { wanted, found: "of no stated type".into() },
        Some(essence) => Unsubstitutable::MediaType { wanted, found: clip(&essence) },
        None => Unsubstitutable::MediaType { wanted, found: "of two stated types".into() },
    };
    Some(Unswappable { why, decoder: None })
}

/// A body the placeholder cannot be swapped in: why, and the decoder to
/// search a compressed one through.
struct Unswappable {
    why: Unsubstitutable,
    decoder: Option<Box<Decoder>>,
}

/// A media type as the agent wrote it, cut to a length fit for a message.
fn clip(essence: &str) -> String {
    let printable: String = essence.chars().filter(|c| c.is_ascii_graphic()).take(80).collect();
    printable
}

/// `target` with `placeholder` replaced by `secret`, percent-encoded (RFC
/// 3986: every byte but the unreserved ones, so `/`, `+` and `=` arrive as
/// data), in the values of the `&`-separated query pairs at `pairs`; and
/// each swapped value with the value the agent sent, for the redactor to
/// map back. The rest of the target is left as it was written.
fn swap_in_query(target: &str, pairs: &[usize], placeholder: &str, secret: &[u8]) -> (String, Vec<Mapped>) {
    let encoded = crate::encoding::percent_encode_bytes(secret);
    let (url, fragment) = match target.split_once('#') {
        Some((url, fragment)) => (url, Some(fragment)),
        None => (target, None),
    };
    let Some((path, query)) = url.split_once('?') else { return (target.to_owned(), Vec::new()) };
    let mut mapped = Vec::new();
    let mut out = String::with_capacity(target.len() + encoded.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=').filter(|_| pairs.contains(&i)) {
            Some((name, value)) => {
                let swapped = value.replace(placeholder, &encoded);
                mapped.push((swapped.as_bytes().to_vec(), value.as_bytes().to_vec()));
                out.push_str(name);
                out.push('=');
                out.push_str(&swapped);
            }
            None => out.push_str(pair),
        }
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    (out, mapped)
}

/// The refusal of a cleartext secret to a host that resolves to a public
/// address, `ip`.
pub(crate) fn public_cleartext(dest: &Destination, route: &Route, ip: std::net::IpAddr) -> Error {
    Error::PublicCleartext { host: dest.host.clone(), ip, route: route.name.clone(), authority: dest.authority() }
}

/// The value the route sends for its placeholder: the access token it
/// mints (a `credential`), or its secret.
pub(crate) async fn route_key(ctx: &RequestCtx, route: &Route) -> Result<Arc<SecretValue>, Error> {
    match &route.credential {
        Some(Credential::AwsSigV4(_)) => Err(Error::SecretUnavailable {
            route: route.name.clone(),
            reason: "the route signs requests (aws_sigv4); it has no key to send".to_owned(),
        }),
        Some(credential) => {
            let mint_now = || minted_token(ctx, route, credential);
            ctx.shared.minter.token(&route.secret, credential, mint_now).await
        }
        None => route_secret(ctx, route, &route.secret).await,
    }
}

/// A token minted now for `route` under `credential` (the secrets it is
/// minted from fetched like any route's), and how long it lasts. The mint
/// is audited under the request that needed it; a rotated refresh token is
/// stored back; the token is known to the redactor from here on.
async fn minted_token(
    ctx: &RequestCtx,
    route: &Route,
    credential: &Credential,
) -> Result<(Arc<SecretValue>, Duration), Error> {
    let loaded = &ctx.loaded;
    let started = Instant::now();
    let mut fetched = Vec::new();
    for name in credential.secrets() {
        fetched.push((name, route_secret(ctx, route, name).await?));
    }
    let secret = |name: &str| fetched.iter().find(|(n, _)| *n == name).map(|(_, v)| Arc::clone(v));
    let minted = mint::mint(&loaded.upstream, &loaded.policy.limits, credential, secret).await;
    if let Ok(Minted { rotated: Some((name, new)), .. }) = &minted {
        mint::keep_rotated(&loaded.policy, ctx.shared.home(), name, new);
    }
    record_mint(ctx, route, credential, started, minted.as_ref().err());
    let Minted { token, lifetime, .. } = minted.map_err(|e| Error::MintFailed {
        route: route.name.clone(),
        reason: e.reason,
        transient: e.transient,
    })?;
    // The one it replaces stays known while it could still be echoed.
    ctx.shared.vault.remember_minted(&route.secret, Arc::clone(&token), mint::echo_grace(lifetime));
    info!(route = %route.name, expires_in = lifetime.as_secs(), "minted an access token");
    Ok((token, lifetime))
}

/// Writes the audit record of a mint: the token endpoint as its
/// destination (`POST`, its host, port and path), `decision: "mint"`,
/// `injected: true` (the secrets it is minted from went there), under the
/// request that needed it; a failure with its code and reason. Never a
/// value.
fn record_mint(ctx: &RequestCtx, route: &Route, credential: &Credential, started: Instant, failed: Option<&MintError>) {
    let uri: http::Uri = credential.token_url().unwrap_or_default().parse().unwrap_or_default();
    let status = if failed.is_some() { 503 } else { 200 };
    let mut record = crate::audit::Record::new(
        crate::audit::now_rfc3339(),
        ctx.request_id.clone(),
        "POST".to_owned(),
        uri.host().unwrap_or("").to_owned(),
        uri.port_u16().unwrap_or(443),
        crate::audit::Outcome::Mint,
        status,
    );
    record.tenant = ctx.tenant_name.clone();
    record.route = Some(route.name.clone());
    record.path = uri.path().to_owned();
    record.injected = true;
    record.complete = failed.is_none();
    record.duration_ms = started.elapsed().as_millis() as u64;
    if let Some(reason) = failed {
        record.code = Some("secret_unavailable".to_owned());
        record.detail = Some(reason.reason.clone());
    }
    ctx.shared.audit.write(record);
}

/// The value of `name`, a secret `route` sends (its own or an
/// `add_headers` one), or the refusal of the request when it is
/// unavailable.
pub(crate) async fn route_secret(ctx: &RequestCtx, route: &Route, name: &str) -> Result<Arc<SecretValue>, Error> {
    let fetched = match ctx.loaded.policy.secret(name) {
        Some(spec) => fetch_secret(&ctx.shared, spec).await,
        // Policy::load checks every secret a route names is declared.
        None => Err(format!("secret '{name}' is not declared")),
    };
    fetched.map_err(|reason| Error::SecretUnavailable { route: route.name.clone(), reason })
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

#[cfg(test)]
mod tests {
    use super::swap_in_query;

    #[test]
    fn the_secret_is_swapped_percent_encoded_in_the_named_pairs_only() {
        let (target, mapped) =
            swap_in_query("/v1/x?key=AIRLOCK_K&q=AIRLOCK_K&t=a+b%20c", &[0], "AIRLOCK_K", b"s/e+c=r et");
        assert_eq!(target, "/v1/x?key=s%2Fe%2Bc%3Dr%20et&q=AIRLOCK_K&t=a+b%20c");
        assert_eq!(mapped, vec![(b"s%2Fe%2Bc%3Dr%20et".to_vec(), b"AIRLOCK_K".to_vec())]);
        let (target, _) = swap_in_query("/?a=1&key=pre-AIRLOCK_K-post#frag", &[1], "AIRLOCK_K", b"v");
        assert_eq!(target, "/?a=1&key=pre-v-post#frag");
    }
}
