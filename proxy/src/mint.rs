//! Credentials airlock mints: OAuth2 access tokens (RFC 6749) from a
//! refresh token (§6) or the client's own credentials (§4.4), asked for at
//! the route's `token_url` with the same verified TLS, `resolve` and
//! `upstream_ca` as upstreams.
//!
//! - A token is kept until shortly before it expires (`expires_in` less a
//!   tenth of it, at most a minute), and never used after: a request that
//!   finds it due mints a new one, and every request that comes meanwhile
//!   waits for that one mint (one per route: single-flight).
//! - A failed mint refuses the request (`503 secret_unavailable`, with the
//!   provider's error code); a stale token is never sent instead.
//! - Every minted token is known to the redactor from the moment it is
//!   minted (under the route's [`MINTED_PREFIX`](airlock_policy::MINTED_PREFIX) name, so an echo maps
//!   back to the route's placeholder).
//! - A provider that rotates refresh tokens (returns a new one) has it
//!   stored back when the refresh token's source is `store`, so a restart
//!   uses the new one.
//!
//! The token request is a form POST and its answer a small JSON object:
//! a few lines over the upstream client airlock already has. The OAuth2
//! client crates bring their own HTTP clients, which would not go through
//! airlock's resolver, trust roots and egress rules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::BodyExt;
use tracing::{info, warn};

use airlock_policy::secrets::{SecretValue, Store};
use airlock_policy::{Credential, GitHubApp, Grant, OAuth2, SecretSource};

use crate::error::Error;
use crate::upstream::Egress;

/// The largest token response read.
const MAX_RESPONSE: usize = 64 << 10;
/// How long a token is kept when the provider does not say (`expires_in`
/// is only RECOMMENDED, RFC 6749 §5.1).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// The longest a token endpoint may take to answer.
const MINT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a minted token is kept, whatever the provider says.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A token is renewed this long before it expires, at most.
const MAX_MARGIN: Duration = Duration::from_secs(60);

/// The tokens of every route with a `credential`, by the name its route
/// knows them by.
#[derive(Default)]
pub(crate) struct Minter {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Minter")
    }
}

/// One route's token.
#[derive(Default)]
struct Slot {
    /// The credential it was minted under (a reload that changes it mints
    /// anew).
    credential: Option<Credential>,
    token: Option<(Arc<SecretValue>, Instant)>,
}

impl Minter {
    /// The token kept for `key` (a route's minted-secret name) while it is
    /// good and was minted under `credential`; else the one `mint_now`
    /// mints, kept until `lifetime` (held to a day) less a margin. Every
    /// other caller for `key` waits on that one mint (single-flight).
    ///
    /// # Errors
    /// `mint_now`'s, as it is; the kept token is dropped either way.
    pub(crate) async fn token<F, Fut>(
        &self,
        key: &str,
        credential: &Credential,
        mint_now: F,
    ) -> Result<Arc<SecretValue>, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Arc<SecretValue>, Duration), Error>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(slots.entry(key.to_owned()).or_default())
        };
        let mut slot = slot.lock().await;
        if slot.credential.as_ref() == Some(credential)
            && let Some((token, renew_at)) = &slot.token
            && Instant::now() < *renew_at
        {
            return Ok(Arc::clone(token));
        }
        // Whatever happens now, the kept token is not used again.
        slot.token = None;
        let (token, lifetime) = mint_now().await?;
        let margin = renew_margin(lifetime);
        *slot = Slot {
            credential: Some(credential.clone()),
            token: Some((Arc::clone(&token), Instant::now() + lifetime.min(MAX_LIFETIME) - margin)),
        };
        Ok(token)
    }
}

/// How long a token of `lifetime` is kept known to the redactor after it is
/// replaced: while it could still be echoed (its own life, held to a day),
/// and a minute.
pub(crate) fn echo_grace(lifetime: Duration) -> Duration {
    lifetime.min(MAX_LIFETIME) + Duration::from_secs(60)
}

/// How long before it expires a token is renewed: a tenth of its life
/// (held to a day; a provider's huge `expires_in` must neither overflow a
/// clock nor keep a token forever), at most a minute.
fn renew_margin(lifetime: Duration) -> Duration {
    (lifetime.min(MAX_LIFETIME) / 10).min(MAX_MARGIN)
}

/// Why a mint failed: in words that name the endpoint and its status or
/// error code (never a value), and whether trying again later may work
/// (the endpoint unreachable, slow, or answering 5xx or 429) or not until
/// the operator acts (a refused grant, an unusable answer or key).
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct MintError {
    pub(crate) reason: String,
    pub(crate) transient: bool,
}

impl From<String> for MintError {
    /// A failure that will not pass by itself.
    fn from(reason: String) -> Self {
        MintError { reason, transient: false }
    }
}

/// What a token endpoint answered.
pub(crate) struct Minted {
    /// The access token.
    pub(crate) token: Arc<SecretValue>,
    /// How long it lasts.
    pub(crate) lifetime: Duration,
    /// A new refresh token, when the provider rotated it, and the secret
    /// it belongs in.
    pub(crate) rotated: Option<(String, SecretValue)>,
}

/// Mints `credential`'s token, the secrets it is minted from given by
/// `secret` (None: unavailable). The caller stores a rotated refresh token
/// ([`keep_rotated`]).
pub(crate) async fn mint(
    upstream: &crate::upstream::Upstream,
    limits: &airlock_policy::Limits,
    credential: &Credential,
    secret: impl Fn(&str) -> Option<Arc<SecretValue>>,
) -> Result<Minted, MintError> {
    match credential {
        Credential::OAuth2(oauth) => {
            let client_secret = oauth.client_secret.as_deref().and_then(&secret);
            let grant_secret = match &oauth.grant {
                Grant::RefreshToken { secret: name } | Grant::JwtBearer { service_account: name } => secret(name),
                Grant::ClientCredentials => None,
            };
            request_token(upstream, limits, oauth, client_secret.as_deref(), grant_secret.as_deref()).await
        }
        Credential::GitHubApp(app) => match secret(&app.private_key) {
            Some(key) => request_installation_token(upstream, limits, app, &key).await,
            None => Err(format!("secret '{}' is unavailable", app.private_key).into()),
        },
        Credential::AwsSigV4(_) => Err("an aws_sigv4 credential signs requests; it mints no token".to_owned().into()),
    }
}

/// Asks `oauth.token_url` for an access token, through `upstream`'s
/// client (verified TLS, `resolve`, `upstream_ca`), within `[limits]
/// upstream_response_timeout`. The error is the operator's and the
/// agent's to read: it names the endpoint, its status and its error code
/// (RFC 6749 §5.2), never a value.
async fn request_token(
    upstream: &crate::upstream::Upstream,
    limits: &airlock_policy::Limits,
    oauth: &OAuth2,
    client_secret: Option<&SecretValue>,
    grant_secret: Option<&SecretValue>,
) -> Result<Minted, MintError> {
    let assertion = match (&oauth.grant, grant_secret) {
        (Grant::JwtBearer { service_account }, Some(key)) => Some(
            service_account_assertion(key.expose(), &oauth.token_url, oauth.scope.as_deref())
                .map_err(|why| format!("secret '{service_account}' {why}"))?,
        ),
        _ => None,
    };
    let mut form: Vec<(&str, &[u8])> = Vec::new();
    match (&oauth.grant, grant_secret, &assertion) {
        (Grant::RefreshToken { .. }, Some(value), _) => {
            form.push(("grant_type", b"refresh_token"));
            form.push(("refresh_token", value.expose()));
        }
        (Grant::JwtBearer { .. }, _, Some(assertion)) => {
            form.push(("grant_type", JWT_BEARER.as_bytes()));
            form.push(("assertion", assertion));
        }
        (Grant::RefreshToken { secret } | Grant::JwtBearer { service_account: secret }, ..) => {
            return Err(format!("secret '{secret}' is unavailable").into());
        }
        (Grant::ClientCredentials, ..) => form.push(("grant_type", b"client_credentials")),
    }
    // A service account's scope is in its assertion (Google's token
    // endpoint reads it there).
    if let Some(scope) = oauth.scope.as_ref().filter(|_| assertion.is_none()) {
        form.push(("scope", scope.as_bytes()));
    }
    let auth = match client_secret {
        // RFC 6749 §2.3.1: each part form-encoded, then Basic.
        Some(secret) => {
            let pair = zeroize::Zeroizing::new(format!(
                "{}:{}",
                crate::encoding::percent_encode(&oauth.client_id),
                crate::encoding::percent_encode_bytes(secret.expose())
            ));
            Some(zeroize::Zeroizing::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
            )))
        }
        None if oauth.client_id.is_empty() => None,
        None => {
            form.push(("client_id", oauth.client_id.as_bytes()));
            None
        }
    };
    let body = zeroize::Zeroizing::new(
        form.iter()
            .map(|(k, v)| format!("{k}={}", crate::encoding::percent_encode_bytes(v)))
            .collect::<Vec<_>>()
            .join("&"),
    );
    let endpoint = endpoint(&oauth.token_url);
    let uri: Uri = oauth.token_url.parse().map_err(|_| format!("token_url {endpoint} is not a URL"))?;
    let mut req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(crate::respond::full(Bytes::copy_from_slice(body.as_bytes())))
        .map_err(|_| format!("token_url {endpoint} is not a URL"))?;
    if let Some(auth) = &auth
        && let Ok(mut value) = header::HeaderValue::from_str(auth)
    {
        value.set_sensitive(true);
        req.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let (status, answer) = exchange(upstream, limits, req, &format!("the token endpoint {endpoint}")).await?;
    if !status.is_success() {
        // The provider's error code (RFC 6749 §5.2), when it is one: a
        // short registered-style word, never its free text.
        let code = answer["error"].as_str().filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
        });
        let said = code.map_or(String::new(), |c| format!(" {c}"));
        let reason = format!("the token endpoint {endpoint} refused the request: {}{said}", status.as_u16());
        return Err(MintError { reason, transient: passes(status) });
    }
    if answer.is_null() {
        return Err(format!("the token endpoint {endpoint} answered something that is not JSON").into());
    }
    let Some(token) = answer["access_token"].as_str().filter(|t| !t.is_empty()) else {
        return Err(format!("the token endpoint {endpoint} answered without an access_token").into());
    };
    // RFC 6749 §7.1: a token of a type the client does not understand is
    // not used.
    if answer["token_type"].as_str().is_some_and(|t| !t.eq_ignore_ascii_case("bearer")) {
        return Err(format!("the token endpoint {endpoint} answered a token_type other than Bearer").into());
    }
    let token = minted_value(token.as_bytes(), [client_secret, grant_secret])
        .map_err(|why| format!("the token endpoint {endpoint} answered an access_token {why}"))?;
    // A token that has already expired is never used (a number at or
    // below zero); one with no usable lifetime is kept the default.
    if answer["expires_in"].as_f64().is_some_and(|n| n <= 0.0) {
        return Err(format!("the token endpoint {endpoint} answered a token that has already expired").into());
    }
    let lifetime = answer["expires_in"].as_u64().map_or(DEFAULT_LIFETIME, Duration::from_secs);
    let rotated = match (&oauth.grant, grant_secret, answer["refresh_token"].as_str()) {
        (Grant::RefreshToken { secret }, Some(old), Some(new)) if new.as_bytes() != old.expose() => {
            SecretValue::new(new.as_bytes().to_vec()).ok().map(|new| (secret.clone(), new))
        }
        _ => None,
    };
    Ok(Minted { token: Arc::new(token), lifetime, rotated })
}

/// How long an app JWT is good for: GitHub accepts at most ten minutes,
/// and its clock may be behind (so it is also dated a minute back).
const APP_JWT_LIFETIME: u64 = 540;

/// Asks GitHub for an installation token: an app JWT (RS256 with the
/// app's private key: `iss` the app id, `iat` a minute back, `exp` nine
/// minutes on) to `POST {api}/app/installations/{id}/access_tokens`,
/// answered `201 {"token", "expires_at"}` (docs.github.com, "Generating an
/// installation access token for a GitHub App"). The token is kept until
/// `expires_at` (an hour), renewed a minute before.
async fn request_installation_token(
    upstream: &crate::upstream::Upstream,
    limits: &airlock_policy::Limits,
    app: &GitHubApp,
    key: &SecretValue,
) -> Result<Minted, MintError> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({"iss": app.app_id.to_string(), "iat": now.saturating_sub(60), "exp": now + APP_JWT_LIFETIME});
    let jwt = sign_rs256(key.expose(), None, &claims).map_err(|why| format!("secret '{}' {why}", app.private_key))?;
    let url = app.token_url();
    let bearer = zeroize::Zeroizing::new(format!("Bearer {}", String::from_utf8_lossy(&jwt)));
    let uri: Uri = url.parse().map_err(|_| format!("{url} is not a URL"))?;
    let mut req = Request::post(uri)
        .header(header::ACCEPT, "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
        .header(header::USER_AGENT, "airlock")
        .body(crate::respond::empty())
        .map_err(|_| format!("{url} is not a URL"))?;
    if let Ok(mut value) = header::HeaderValue::from_str(&bearer) {
        value.set_sensitive(true);
        req.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let (status, answer) = exchange(upstream, limits, req, &url).await?;
    if !status.is_success() {
        return Err(MintError {
            reason: format!("{url} refused the request: {}", status.as_u16()),
            transient: passes(status),
        });
    }
    let Some(token) = answer["token"].as_str().filter(|t| !t.is_empty()) else {
        return Err(format!("{url} answered without a token").into());
    };
    let token =
        minted_value(token.as_bytes(), [Some(key), None]).map_err(|why| format!("{url} answered a token {why}"))?;
    let left = answer["expires_at"]
        .as_str()
        .and_then(|at| time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok())
        .map(|at| at - time::OffsetDateTime::now_utc());
    // A token that has already expired is never used.
    if left.is_some_and(|left| !left.is_positive()) {
        return Err(format!("{url} answered a token that has already expired").into());
    }
    let lifetime = left.and_then(|left| Duration::try_from(left).ok()).unwrap_or(DEFAULT_LIFETIME);
    Ok(Minted { token: Arc::new(token), lifetime, rotated: None })
}

/// Whether a token endpoint's refusal may pass by itself: a server error
/// or too many requests.
fn passes(status: http::StatusCode) -> bool {
    status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS
}

/// The shortest minted value airlock uses: every minted value is scrubbed
/// from every tenant's responses, and a short one would match ordinary
/// text (and show where it matched).
const MIN_MINTED: usize = 16;

/// A minted value, checked: long enough to scrub, a valid secret (no
/// control characters), and neither holding nor held in a secret it was
/// minted from (a token endpoint must not have airlock send the refresh
/// token or client secret on to the API). The error completes "answered
/// an access_token …".
fn minted_value(token: &[u8], sources: [Option<&SecretValue>; 2]) -> Result<SecretValue, String> {
    if token.len() < MIN_MINTED {
        return Err(format!("shorter than {MIN_MINTED} bytes, too short to scrub from responses"));
    }
    let overlaps = |s: &SecretValue| {
        let s = s.expose();
        memchr::memmem::find(token, s).is_some() || memchr::memmem::find(s, token).is_some()
    };
    if sources.into_iter().flatten().any(overlaps) {
        return Err("that holds a secret it was minted from".to_owned());
    }
    SecretValue::new(token.to_vec()).map_err(|e| format!("that is unusable: {e}"))
}

/// Sends a request to a token endpoint within `[limits]
/// upstream_response_timeout`: its status and its JSON answer (`null` when
/// it is not JSON), read up to [`MAX_RESPONSE`].
async fn exchange(
    upstream: &crate::upstream::Upstream,
    limits: &airlock_policy::Limits,
    req: Request<crate::Body>,
    endpoint: &str,
) -> Result<(http::StatusCode, serde_json::Value), MintError> {
    let client = upstream.client(Egress::Any, false);
    // A mint holds every request of its route: it gets at most half a
    // minute, however long upstreams may take.
    let timeout = limits.upstream_response_timeout.min(MINT_TIMEOUT);
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| MintError {
            reason: format!("{endpoint} could not be reached: {}", crate::upstream::classify(&e, limits).reason),
            transient: true,
        })?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|_| MintError::from(format!("{endpoint} sent an answer airlock could not read")))?
            .to_bytes();
        Ok::<_, MintError>((status, serde_json::from_slice(&body).unwrap_or_default()))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(MintError { reason: format!("{endpoint} did not answer within {timeout:?}"), transient: true }),
    }
}

/// A JWT (RFC 7519) with `claims`, signed RS256 (RFC 7518 §3.3) with the
/// RSA key in `pem` (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`, as
/// GitHub issues app keys), `kid` in its header when given. The error
/// completes "secret 'NAME' …" and never quotes the key.
fn sign_rs256(
    pem: &[u8],
    kid: Option<&str>,
    claims: &serde_json::Value,
) -> Result<zeroize::Zeroizing<Vec<u8>>, &'static str> {
    use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| "holds no PEM private key")?;
    let pair = match &der {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => return Err("holds a private key that is not RSA"),
    }
    .map_err(|_| "holds a private key that is not a usable RSA key")?;
    let mut head = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = kid {
        head["kid"] = kid.into();
    }
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let signing_input = format!("{}.{}", b64(head.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signing_input.as_bytes(), &mut signature)
        .map_err(|_| "holds a private key that could not sign")?;
    Ok(zeroize::Zeroizing::new(format!("{signing_input}.{}", b64(&signature)).into_bytes()))
}

/// RFC 7523 §2.1's grant type.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How long a service account's assertion is good for (Google accepts at
/// most an hour).
const ASSERTION_LIFETIME: u64 = 3600;

/// The JWT (RFC 7519) a service account signs to ask for a token (RFC 7523
/// §3): `iss` its `client_email`, `aud` the token endpoint, `scope`, `iat`
/// and `exp`, RS256 with its `private_key` (PKCS#8 PEM), `kid` its
/// `private_key_id` — what Google's service-account JSON keys hold
/// (developers.google.com/identity/protocols/oauth2/service-account). The
/// error completes "secret 'NAME' …" and never quotes the key.
fn service_account_assertion(
    json: &[u8],
    audience: &str,
    scope: Option<&str>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, &'static str> {
    let key: serde_json::Value = serde_json::from_slice(json).map_err(|_| "is not a service-account JSON key")?;
    let email = key["client_email"].as_str().ok_or("is a JSON key without client_email")?;
    let pem = key["private_key"].as_str().ok_or("is a JSON key without private_key")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut claims = serde_json::json!({"iss": email, "aud": audience, "iat": now, "exp": now + ASSERTION_LIFETIME});
    if let Some(scope) = scope {
        claims["scope"] = scope.into();
    }
    sign_rs256(pem.as_bytes(), key["private_key_id"].as_str(), &claims)
}

/// Stores a refresh token the provider rotated, when its secret's source
/// is the store (the old one may no longer work after a restart).
pub(crate) fn keep_rotated(policy: &airlock_policy::Policy, home: &std::path::Path, name: &str, new: &SecretValue) {
    let Some(spec) = policy.secret(name) else { return };
    if !matches!(spec.source, SecretSource::Store) {
        warn!(secret = %name, "the token endpoint rotated the refresh token, but its source is not `store`: airlock cannot keep the new one, and the old one may stop working");
        return;
    }
    match Store::new(home).set(name, new) {
        Ok(()) => info!(secret = %name, "stored the refresh token the token endpoint rotated"),
        Err(e) => warn!(secret = %name, error = %e, "could not store the rotated refresh token"),
    }
}

/// The token endpoint's scheme, host and path, for messages (its query,
/// if any, is left out).
fn endpoint(token_url: &str) -> &str {
    token_url.split(['?', '#']).next().unwrap_or(token_url)
}
