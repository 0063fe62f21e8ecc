//! Re-signing AWS Signature Version 4 requests (an `aws_sigv4` route's
//! credential). The agent's SDK signs with the route's placeholder as its
//! access key id and any secret key; the decision has checked the
//! signature's scope (`credential_scope_mismatch`) and refused presigned
//! URLs. Here the agent's signature is dropped and the request signed
//! anew, with airlock's clock and the real keys (and session token), over
//! the request exactly as it goes upstream:
//!
//! - **Signed headers**: those the agent's SDK signed (its
//!   `SignedHeaders`) as airlock sends them, and `host`, `x-amz-date` and
//!   `x-amz-security-token`.
//! - **Payload**: the agent's `x-amz-content-sha256` when it sent one (a
//!   hash, `UNSIGNED-PAYLOAD`, or `STREAMING-UNSIGNED-PAYLOAD-TRAILER`:
//!   the body goes as it is; the service checks a hash against the body),
//!   else the hash of the body, read whole up to [`MAX_HASHED_BODY`].
//! - **Signed chunks** (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, with or
//!   without `-TRAILER`; Amazon S3 API Reference, "Signature calculations
//!   for the Authorization header: Transferring payload in multiple
//!   chunks"): every chunk, and the trailer, signed again as it streams,
//!   each chain starting from the new seed signature. A chunk is held
//!   whole before it goes (its signature precedes it), so one is at most
//!   [`MAX_CHUNK`]; the body keeps its length byte for byte.
//!
//! The canonical request, signing key and chunk signatures are AWS's own
//! `aws-sigv4` crate's; this module only chooses what goes in and
//! re-frames the `aws-chunked` body, which that crate does not parse.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use airlock_policy::secrets::SecretValue;
use airlock_policy::{AwsSigV4, Route};

use crate::Body;
use crate::error::Error;

/// The largest body airlock reads whole to hash, for a request that names
/// no `x-amz-content-sha256` (services other than S3 take the hash only in
/// the signature).
pub(crate) const MAX_HASHED_BODY: usize = 16 << 20;
/// The largest chunk of a signed-chunk upload (SDKs write 64 to 128 KiB;
/// S3 asks for at least 8 KiB).
pub(crate) const MAX_CHUNK: u64 = 1 << 20;
/// The most request-body bytes held to be signed at once, over every
/// request (a chunk held whole, a body read whole to be hashed): each
/// alone is bounded, and this bounds their sum however many streams and
/// connections hold one. A request that finds no room is refused `503`,
/// to be retried.
pub(crate) const SIGNING_BUDGET: usize = 256 << 20;
/// The most of [`SIGNING_BUDGET`] one tenant's requests hold at once, so
/// one tenant cannot starve the others.
pub(crate) const TENANT_SHARE: usize = 64 << 20;
/// The longest chunk-size line: a size in hex, `;chunk-signature=`, 64 hex
/// digits and CRLF, with room for chunk extensions' absence to be sure.
const MAX_CHUNK_LINE: usize = 128;
/// The most trailer bytes after a signed-chunk upload's last chunk.
const MAX_TRAILER: usize = 16 << 10;

const SECURITY_TOKEN: &str = "x-amz-security-token";
pub(crate) const CONTENT_SHA256: &str = "x-amz-content-sha256";
const SIGNED_CHUNKS: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
const SIGNED_CHUNKS_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
/// Payload hashes that leave the body as it is (`x-amz-content-sha256`).
const AS_IS: [&str; 2] = ["UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"];

/// What the request's payload contributes to its signature.
#[derive(Debug)]
enum Payload {
    /// The agent's `x-amz-content-sha256`: the body goes as it is.
    Declared(String),
    /// Signed chunks, re-signed as they stream.
    Chunks { declared: String, trailer: bool },
    /// No `x-amz-content-sha256`: the body's own hash.
    Hash,
}

/// How one request is signed: its route's keys and scope, the headers the
/// agent signed, and its payload.
pub(crate) struct Signer {
    route: String,
    identity: Identity,
    region: String,
    service: String,
    has_token: bool,
    signed_headers: Vec<String>,
    payload: Payload,
    /// Its tenant's share of the signing budget.
    budget: Budget,
}

/// The request bodies held to be signed: [`SIGNING_BUDGET`] over every
/// request, [`TENANT_SHARE`] for each tenant's, in permits of a KiB.
#[derive(Debug)]
pub(crate) struct SigningBudget {
    all: Arc<Semaphore>,
    tenants: Mutex<std::collections::HashMap<String, Arc<Semaphore>>>,
}

impl Default for SigningBudget {
    fn default() -> Self {
        SigningBudget { all: Arc::new(Semaphore::new(SIGNING_BUDGET >> 10)), tenants: Mutex::default() }
    }
}

impl SigningBudget {
    /// The budget `tenant`'s requests take from.
    pub(crate) fn for_tenant(&self, tenant: &str) -> Budget {
        let mut tenants = self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let share = tenants.entry(tenant.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(TENANT_SHARE >> 10)));
        Budget { all: Arc::clone(&self.all), tenant: Arc::clone(share) }
    }
}

/// One tenant's share of the signing budget, and the whole.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    all: Arc<Semaphore>,
    tenant: Arc<Semaphore>,
}

/// What a request holds of the budget: as many KiB of its tenant's share
/// and of the whole, given back when dropped.
#[derive(Debug)]
struct Permits {
    tenant: OwnedSemaphorePermit,
    all: OwnedSemaphorePermit,
}

impl Budget {
    /// `kib` more permits on top of `held`, or None when the tenant's
    /// share or the whole has no room (`held` is kept either way).
    fn take(&self, kib: usize, held: &mut Option<Permits>) -> Option<()> {
        let kib = u32::try_from(kib).ok()?;
        if kib == 0 {
            return Some(());
        }
        let tenant = Arc::clone(&self.tenant).try_acquire_many_owned(kib).ok()?;
        let all = Arc::clone(&self.all).try_acquire_many_owned(kib).ok()?;
        match held {
            Some(p) => {
                p.tenant.merge(tenant);
                p.all.merge(all);
            }
            None => *held = Some(Permits { tenant, all }),
        }
        Some(())
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("route", &self.route).finish_non_exhaustive()
    }
}

/// Why the keys of an `aws_sigv4` credential cannot sign, in words that
/// name the secret, never quote it.
pub(crate) fn keys_problem(
    aws: &AwsSigV4,
    access_key_id: &SecretValue,
    secret_access_key: &SecretValue,
    session_token: Option<&SecretValue>,
) -> Option<String> {
    // An access key id goes in the credential scope, before its first `/`.
    let id = access_key_id.expose();
    if id.is_empty() || id.len() > 128 || !id.iter().all(u8::is_ascii_alphanumeric) {
        return Some(format!(
            "secret '{}' is not an AWS access key id (letters and digits, like AKIA…)",
            aws.access_key_id
        ));
    }
    if secret_access_key.expose().is_empty() || std::str::from_utf8(secret_access_key.expose()).is_err() {
        return Some(format!("secret '{}' is not an AWS secret access key (text)", aws.secret_access_key));
    }
    if let (Some(name), Some(token)) = (&aws.session_token, session_token)
        && !token.expose().iter().all(|b| b.is_ascii_graphic())
    {
        return Some(format!("secret '{name}' is not an AWS session token (printable text, no spaces)"));
    }
    None
}

impl Signer {
    /// The signer of a request to `route` (credential `aws`) whose
    /// `Authorization` signed `signed_headers` and whose
    /// `x-amz-content-sha256` was `declared` (None: absent).
    ///
    /// # Errors
    /// `secret_unavailable` when the keys cannot sign ([`keys_problem`]);
    /// `unsignable_request` for a payload kind airlock does not re-sign
    /// (event streams, SigV4a chunks).
    pub(crate) fn new(
        route: &Route,
        aws: &AwsSigV4,
        keys: [Option<Arc<SecretValue>>; 3],
        signed_headers: &[&str],
        declared: Option<&[u8]>,
        budget: Budget,
    ) -> Result<Signer, Error> {
        let [Some(id), Some(secret), token] = keys else {
            return Err(unavailable(route, "its keys are unavailable".to_owned()));
        };
        if let Some(problem) = keys_problem(aws, &id, &secret, token.as_deref()) {
            return Err(unavailable(route, problem));
        }
        let payload = match declared.map(std::str::from_utf8) {
            // Only S3 takes the payload's hash from x-amz-content-sha256;
            // every other service hashes the body itself.
            _ if !aws.service.starts_with("s3") => Payload::Hash,
            None => Payload::Hash,
            Some(Ok(v)) if v == SIGNED_CHUNKS => Payload::Chunks { declared: v.to_owned(), trailer: false },
            Some(Ok(v)) if v == SIGNED_CHUNKS_TRAILER => Payload::Chunks { declared: v.to_owned(), trailer: true },
            Some(Ok(v)) if AS_IS.contains(&v) || (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())) => {
                Payload::Declared(v.to_owned())
            }
            Some(_) => {
                return Err(Error::Unsignable {
                    route: route.name.clone(),
                    why: "its x-amz-content-sha256 is neither a SHA-256 hash, UNSIGNED-PAYLOAD, nor a chunked \
                          payload airlock re-signs (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER], \
                          STREAMING-UNSIGNED-PAYLOAD-TRAILER); event streams are not re-signed"
                        .to_owned(),
                });
            }
        };
        let text = |v: &SecretValue| String::from_utf8_lossy(v.expose()).into_owned();
        let credentials = Credentials::new(text(&id), text(&secret), token.as_deref().map(text), None, "airlock vault");
        // Computed anew from what goes upstream.
        let fixed = ["authorization", "host", "x-amz-date", SECURITY_TOKEN];
        let signed_headers =
            signed_headers.iter().filter(|h| !fixed.contains(h)).map(|h| (*h).to_owned()).collect::<Vec<_>>();
        Ok(Signer {
            route: route.name.clone(),
            identity: credentials.into(),
            region: aws.region.clone(),
            service: aws.service.clone(),
            has_token: token.is_some(),
            signed_headers,
            payload,
            budget,
        })
    }

    /// Signs the request that goes upstream (`method`, `uri`, `headers`
    /// as sent), its body `body`: sets `Authorization`, `X-Amz-Date` and
    /// `X-Amz-Security-Token` (removing the agent's), and returns the body
    /// to send (read whole to be hashed, or re-signing its chunks).
    /// `refused` receives a chunked body's refusal while it streams.
    ///
    /// # Errors
    /// `unsignable_request`: a body over [`MAX_HASHED_BODY`] to hash, a
    /// signed header that is not visible ASCII, or a canonical request the
    /// signer refuses; the agent's body failing while it is read.
    pub(crate) async fn sign(
        self,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
        body: Body,
        read_timeout: Duration,
        refused: Arc<Mutex<Option<Error>>>,
    ) -> Result<Body, Error> {
        let (body, whole) = match self.payload {
            Payload::Hash if body.is_end_stream() => (body, Some(Bytes::new())),
            Payload::Hash => {
                let reading = read_whole(body, MAX_HASHED_BODY, &self.budget);
                let (read, held) = match tokio::time::timeout(read_timeout, reading).await {
                    Ok(Ok(Ok(read))) => read,
                    Ok(Ok(Err(Stop::Malformed(why)))) => return Err(self.unsignable(why)),
                    Ok(Ok(Err(Stop::Busy))) => return Err(Error::SigningBusy { route: self.route.clone() }),
                    Ok(Err(_)) => return Err(Error::AgentBody),
                    Err(_) => {
                        return Err(self.unsignable(format!(
                            "its body did not arrive whole within {} s, while airlock read it to hash it for the \
                             signature",
                            read_timeout.as_secs()
                        )));
                    }
                };
                // The budget is held as long as the body is.
                let full = http_body_util::Full::new(read.clone())
                    .map_err(|never| match never {})
                    .map_frame(move |frame| {
                        let _held = &held;
                        frame
                    })
                    .boxed_unsync();
                (full, Some(read))
            }
            _ => (body, None),
        };
        // Every request, whatever its body (none, empty, read whole, or
        // streaming, whose query and headers are all that is read).
        if let Some(action) = credential_action(&self.service, uri, headers, whole.as_deref().unwrap_or_default()) {
            return Err(credential_action_denial(&self.route, &action));
        }
        headers.remove(SECURITY_TOKEN);
        let mut signable: Vec<(&str, &str)> = Vec::new();
        for name in &self.signed_headers {
            for value in headers.get_all(name.as_str()) {
                let Ok(value) = value.to_str() else {
                    return Err(self.unsignable(format!("its signed header '{name}' is not visible ASCII")));
                };
                signable.push((name.as_str(), value));
            }
        }
        let signable_body = match (&self.payload, &whole) {
            (_, Some(whole)) => SignableBody::Bytes(whole),
            (Payload::Declared(v) | Payload::Chunks { declared: v, .. }, None) => SignableBody::Precomputed(v.clone()),
            (Payload::Hash, None) => SignableBody::UnsignedPayload,
        };
        let time = SystemTime::now();
        let request = SignableRequest::new(method.as_str(), uri.to_string(), signable.into_iter(), signable_body)
            .map_err(|e| self.unsignable(format!("the signer refused it ({e})")))?;
        let mut settings = self.settings();
        if matches!(self.payload, Payload::Hash) && self.service.starts_with("s3") {
            // S3 wants the payload's hash in x-amz-content-sha256 as well
            // (it refuses a SigV4 request without it); other services do
            // not take it.
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(&self.service)
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| self.unsignable(format!("the signer refused it ({e})")))?
            .into();
        let (instructions, seed) = aws_sigv4::http_request::sign(request, &params)
            .map_err(|e| self.unsignable(format!("the signer refused it ({e})")))?
            .into_parts();
        let (set, _) = instructions.into_parts();
        for h in set {
            let Ok(mut value) = HeaderValue::from_str(h.value()) else { continue };
            value.set_sensitive(h.sensitive() || h.name() == header::AUTHORIZATION.as_str());
            headers.insert(HeaderName::from_static(h.name()), value);
        }
        debug_assert!(!self.has_token || headers.contains_key(SECURITY_TOKEN));
        Ok(match self.payload {
            Payload::Chunks { trailer, .. } => SignedChunks {
                inner: body,
                buf: BytesMut::new(),
                state: State::SizeLine,
                digits: Bytes::new(),
                trailer,
                previous: seed,
                identity: self.identity,
                region: self.region,
                service: self.service,
                time,
                route: self.route,
                ready: VecDeque::new(),
                refused,
                crlf_held: false,
                held: None,
                budget: self.budget,
            }
            .boxed_unsync(),
            _ => body,
        })
    }

    /// S3 signs the path as sent (single-encoded, not normalised); every
    /// other service its normalised, doubly encoded form (AWS General
    /// Reference, "Create a canonical request").
    fn settings(&self) -> SigningSettings {
        let s3 = self.service.starts_with("s3");
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
        settings.session_token_mode = SessionTokenMode::Include;
        settings.percent_encoding_mode = if s3 { PercentEncodingMode::Single } else { PercentEncodingMode::Double };
        settings.uri_path_normalization_mode =
            if s3 { UriPathNormalizationMode::Disabled } else { UriPathNormalizationMode::Enabled };
        settings
    }

    fn unsignable(&self, why: String) -> Error {
        Error::Unsignable { route: self.route.clone(), why }
    }
}

/// `body` read whole within `budget`, and what it holds of it; or why it
/// cannot be: over `limit` bytes, with HTTP trailer fields (a body sent
/// as one piece has none), or no room in the budget.
async fn read_whole(
    mut body: Body,
    limit: usize,
    budget: &Budget,
) -> Result<Result<(Bytes, Option<Permits>), Stop>, crate::BoxError> {
    let mut read = BytesMut::new();
    let mut held: Option<Permits> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            let why = "its body has trailer fields, which a body read whole to be hashed cannot keep";
            return Ok(Err(Stop::Malformed(why.to_owned())));
        };
        if read.len() + data.len() > limit {
            return Ok(Err(Stop::Malformed(format!(
                "its body is over {} MiB, the most airlock reads whole to hash it for the signature (the request \
                 sends no x-amz-content-sha256)",
                limit >> 20
            ))));
        }
        read.extend_from_slice(&data);
        // Permits for every KiB begun so far.
        let has = held.as_ref().map_or(0, |p| p.all.num_permits());
        if budget.take(read.len().div_ceil(1024).saturating_sub(has), &mut held).is_none() {
            return Ok(Err(Stop::Busy));
        }
    }
    Ok(Ok((read.freeze(), held)))
}

/// Why a request to `service` (`uri`, `headers`, `body`) is not signed
/// for fear it answers with new credentials, if it is not:
///
/// - on STS, every call but those of [`STS_SIGNED`]: the actions it names
///   (the query protocol's `Action` in the query or body, pairs split at
///   `&` or `;`; a JSON protocol's `X-Amz-Target`; an RPC v2 path's
///   `/operation/NAME`) must all be among them, at least one must be
///   named, and no [`CREDENTIAL_ACTIONS`] name may appear anywhere, read
///   leniently (NUL bytes dropped, percent-decoded, `+` as a space, any
///   case). A compressed body, which could hide one, is not signed. STS
///   keeps adding actions that hand out keys; an allow-list holds
///   against the next one.
/// - on S3, `CreateSession` (the `session` subresource of S3 Express One
///   Zone, or an `x-id=CreateSession`), which answers with session keys.
fn credential_action(service: &str, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let query = uri.query().unwrap_or("").as_bytes();
    if service.starts_with("s3") {
        let session = pairs(query)
            .any(|(name, value)| name.eq_ignore_ascii_case("session") || value.eq_ignore_ascii_case("CreateSession"));
        return session.then(|| "CreateSession".to_owned());
    }
    if service != "sts" {
        return None;
    }
    let coded = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
    if coded && !body.is_empty() {
        return Some("an STS call with a compressed body, which airlock cannot read the action of".to_owned());
    }
    let target = headers.get("x-amz-target").map_or(&b""[..], |v| v.as_bytes());
    // Every name it could be calling, leniently read.
    let text: Vec<u8> = [uri.path().as_bytes(), query, target, body]
        .join(&b'\n')
        .into_iter()
        .filter(|b| *b != 0)
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    let text: Vec<u8> = percent_encoding::percent_decode(&text).filter(|b| *b != 0).collect();
    if let Some(a) =
        CREDENTIAL_ACTIONS.iter().find(|a| text.windows(a.len()).any(|w| w.eq_ignore_ascii_case(a.as_bytes())))
    {
        return Some(format!("STS {a}"));
    }
    // The actions it names, each of which must be one airlock signs.
    let mut named: Vec<String> = pairs(query)
        .chain(pairs(body))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("action"))
        .map(|(_, value)| value)
        .collect();
    if let Some(operation) = std::str::from_utf8(target).ok().filter(|t| !t.is_empty()) {
        named.push(operation.rsplit('.').next().unwrap_or(operation).to_owned());
    }
    let path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy();
    if let Some((_, operation)) = path.split_once("/operation/") {
        named.push(operation.trim_matches('/').to_owned());
    }
    let unsigned = named.iter().find(|a| !STS_SIGNED.iter().any(|s| s.eq_ignore_ascii_case(a.trim())));
    match (named.is_empty(), unsigned) {
        (true, _) => Some("an STS call that names no action airlock can read".to_owned()),
        (false, Some(a)) => Some(format!("STS {a}")),
        (false, None) => None,
    }
}

/// `name=value` pairs of a query or form body, split at `&` and `;`,
/// percent-decoded with `+` as a space and NUL bytes dropped.
fn pairs(text: &[u8]) -> impl Iterator<Item = (String, String)> + '_ {
    let decode = |part: &[u8]| {
        let spaced: Vec<u8> = part.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
        let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).filter(|b| *b != 0).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    text.split(|b| *b == b'&' || *b == b';').filter(|p| !p.is_empty()).map(move |pair| {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        (decode(name), decode(value))
    })
}

/// The STS actions airlock signs: those that answer with no credentials
/// (AWS STS API Reference).
const STS_SIGNED: [&str; 3] = ["GetCallerIdentity", "GetAccessKeyInfo", "DecodeAuthorizationMessage"];

/// STS actions known to answer with new credentials or tokens, refused
/// wherever they are named (`AssumeRole` covers `AssumeRoleWithSAML` and
/// `AssumeRoleWithWebIdentity`). `GetSessionToken` needs no IAM
/// permission at all.
const CREDENTIAL_ACTIONS: [&str; 7] = [
    "AssumeRole",
    "AssumeRoot",
    "GetDelegatedAccessToken",
    "GetFederationToken",
    "GetScopedCredentials",
    "GetSessionToken",
    "GetWebIdentityToken",
];

/// The refusal of an STS `action` that answers with new credentials.
fn credential_action_denial(route: &str, action: &str) -> Error {
    let action: String = action.chars().filter(|c| c.is_ascii_alphanumeric() || " (),".contains(*c)).take(96).collect();
    Error::Policy(airlock_policy::Denial::new(
        airlock_policy::DenialCode::MethodNotAllowed,
        format!(
            "route '{route}' does not sign {action}: airlock signs only calls that answer with no new credentials \
             (on STS: {}), as new credentials would reach the agent, usable without airlock",
            STS_SIGNED.join(", ")
        ),
        "call the API those credentials are for through its own route; if the agent needs another role, ask the \
         operator for a route whose keys are that role's"
            .to_owned(),
    ))
}

fn unavailable(route: &Route, reason: String) -> Error {
    Error::SecretUnavailable { route: route.name.clone(), reason }
}

/// Why a signed-chunk body stops being re-signed.
#[derive(Debug)]
enum Stop {
    /// Its framing is not what SigV4 chunks are.
    Malformed(String),
    /// The signing budget has no room for its next chunk.
    Busy,
}

impl From<String> for Stop {
    fn from(why: String) -> Stop {
        Stop::Malformed(why)
    }
}

/// Where a signed-chunk body is in its `aws-chunked` framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a chunk's `size;chunk-signature=…` line.
    SizeLine,
    /// In a chunk of `size` bytes.
    Data {
        size: usize,
    },
    /// After the last (empty) chunk's line: the final CRLF.
    End,
    /// After the last chunk's line: trailer lines, then
    /// `x-amz-trailer-signature`, then an empty line.
    Trailer,
    Done,
}

/// A signed-chunk body, each chunk's and the trailer's signature replaced
/// by airlock's as it streams. The framing is kept byte for byte (a chunk's
/// size as the agent wrote it, every signature 64 hex digits), so the
/// body's length does not change.
struct SignedChunks {
    inner: Body,
    buf: BytesMut,
    state: State,
    /// The size of the chunk being read, as the agent wrote it.
    digits: Bytes,
    trailer: bool,
    /// The previous signature in the chain (the seed: the request's).
    previous: String,
    identity: Identity,
    region: String,
    service: String,
    time: SystemTime,
    route: String,
    ready: VecDeque<Bytes>,
    refused: Arc<Mutex<Option<Error>>>,
    /// The CRLF after the last chunk's data, sent once the next chunk's
    /// line has come.
    crlf_held: bool,
    /// What the chunk being read holds of the budget.
    held: Option<Permits>,
    budget: Budget,
}

impl SignedChunks {
    fn params(&self) -> Result<v4::SigningParams<'_, ()>, String> {
        v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(&self.service)
            .time(self.time)
            .settings(())
            .build()
            .map_err(|e| format!("the signer refused it ({e})"))
    }

    /// Moves what `buf` holds into `ready`, re-signed, as far as it goes.
    fn advance(&mut self) -> Result<(), Stop> {
        loop {
            match self.state {
                State::SizeLine => {
                    let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                        if self.buf.len() > MAX_CHUNK_LINE {
                            return Err("a chunk-size line is too long".to_owned().into());
                        }
                        return Ok(());
                    };
                    let line = self.buf.split_to(end + 2);
                    let (size, digits) = chunk_size(&line[..end])?;
                    // The CRLF that ends the chunk before: the body goes on.
                    if std::mem::take(&mut self.crlf_held) {
                        self.ready.push_back(Bytes::from_static(b"\r\n"));
                    }
                    if size == 0 {
                        self.sign_chunk(&line[..digits], Bytes::new())?;
                        self.state = if self.trailer { State::Trailer } else { State::End };
                    } else {
                        // The line is written again once the chunk is
                        // whole, which is held within the budget.
                        self.held = None;
                        if self.budget.take(size.div_ceil(1024), &mut self.held).is_none() {
                            return Err(Stop::Busy);
                        }
                        self.state = State::Data { size };
                        self.digits = line.freeze().slice(..digits);
                    }
                }
                State::Data { size } => {
                    if self.buf.len() < size + 2 {
                        return Ok(());
                    }
                    let data = self.buf.split_to(size).freeze();
                    if &self.buf[..2] != b"\r\n" {
                        return Err("a chunk is longer than its size".to_owned().into());
                    }
                    self.buf.advance(2);
                    let digits = std::mem::take(&mut self.digits);
                    self.sign_chunk(&digits, data)?;
                    self.state = State::SizeLine;
                }
                State::End => {
                    if self.buf.len() < 2 {
                        return Ok(());
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err("the last chunk is not followed by an empty line".to_owned().into());
                    }
                    self.buf.advance(2);
                    self.ready.push_back(Bytes::from_static(b"\r\n"));
                    self.state = State::Done;
                }
                State::Trailer => {
                    let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        if self.buf.len() > MAX_TRAILER {
                            return Err("the trailer is too long".to_owned().into());
                        }
                        return Ok(());
                    };
                    let block = self.buf.split_to(end + 4);
                    let signed = self.sign_trailer(&block[..end + 2])?;
                    self.ready.push_back(signed);
                    self.state = State::Done;
                }
                State::Done => {
                    if !self.buf.is_empty() {
                        return Err("the body goes on after its last chunk".to_owned().into());
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Queues a chunk's line (`digits` as the agent wrote its size, and
    /// airlock's signature) and its data.
    fn sign_chunk(&mut self, digits: &[u8], data: Bytes) -> Result<(), String> {
        let signature = v4::sign_chunk(&data, &self.previous, &self.params()?)
            .map_err(|e| format!("a chunk could not be signed ({e})"))?
            .into_parts()
            .1;
        let mut line = Vec::with_capacity(digits.len() + 83);
        line.extend_from_slice(digits);
        line.extend_from_slice(b";chunk-signature=");
        line.extend_from_slice(signature.as_bytes());
        line.extend_from_slice(b"\r\n");
        self.ready.push_back(Bytes::from(line));
        if !data.is_empty() {
            self.ready.push_back(data);
            // Held until the next chunk's line: a body that ends here,
            // without its last chunk, must not have sent all it declared
            // (an upstream told its length would take it as whole).
            self.crlf_held = true;
        }
        self.held = None;
        self.previous = signature;
        Ok(())
    }

    /// The trailer `block` (its lines, each ending in CRLF, the last
    /// `x-amz-trailer-signature:…`) with airlock's trailer signature, and
    /// the empty line that ends the body.
    fn sign_trailer(&mut self, block: &[u8]) -> Result<Bytes, String> {
        let text = std::str::from_utf8(block).map_err(|_| "the trailer is not text".to_owned())?;
        let mut fields = aws_smithy_runtime_api::http::Headers::new();
        let mut kept = String::new();
        let mut signed = false;
        for line in text.split_terminator("\r\n") {
            let (name, value) = line.split_once(':').ok_or_else(|| "a trailer line is not a field".to_owned())?;
            if name.eq_ignore_ascii_case("x-amz-trailer-signature") {
                if signed {
                    return Err("the trailer has two signatures".to_owned());
                }
                signed = true;
                continue;
            }
            if signed {
                return Err("a trailer field follows the trailer signature".to_owned());
            }
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| "a trailer name is invalid")?;
            let value = HeaderValue::from_str(value.trim()).map_err(|_| "a trailer value is invalid")?;
            fields.append(name.as_str().to_owned(), value.to_str().unwrap_or_default().to_owned());
            kept.push_str(line);
            kept.push_str("\r\n");
        }
        if !signed {
            return Err("the trailer has no x-amz-trailer-signature".to_owned());
        }
        let signature = v4::sign_trailer(&fields, &self.previous, &self.params()?)
            .map_err(|e| format!("the trailer could not be signed ({e})"))?
            .into_parts()
            .1;
        kept.push_str("x-amz-trailer-signature:");
        kept.push_str(&signature);
        kept.push_str("\r\n\r\n");
        Ok(Bytes::from(kept))
    }

    fn fail(&mut self, stop: Stop) -> crate::BoxError {
        let route = self.route.clone();
        let e = match stop {
            Stop::Malformed(why) => {
                Error::Unsignable { route, why: format!("its aws-chunked body is malformed: {why}") }
            }
            Stop::Busy => Error::SigningBusy { route },
        };
        let said = e.to_string();
        if let Ok(mut slot) = self.refused.lock() {
            *slot = Some(e);
        }
        self.state = State::Done;
        self.ready.clear();
        self.held = None;
        said.into()
    }
}

/// A chunk-size line's size and how many bytes its hex digits take:
/// `hex;chunk-signature=<64 hex>`, the size at most [`MAX_CHUNK`].
fn chunk_size(line: &[u8]) -> Result<(usize, usize), String> {
    let bad = || "a chunk-size line is not `size;chunk-signature=signature`".to_owned();
    let digits = line.iter().position(|b| *b == b';').ok_or_else(bad)?;
    let signature = line[digits..].strip_prefix(b";chunk-signature=").ok_or_else(bad)?;
    if digits == 0 || digits > 16 || signature.len() != 64 || !signature.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad());
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| bad())?;
    let size = u64::from_str_radix(hex, 16).map_err(|_| bad())?;
    if size > MAX_CHUNK {
        return Err(format!("a chunk is over {} MiB, the most airlock re-signs", MAX_CHUNK >> 20));
    }
    Ok((usize::try_from(size).map_err(|_| bad())?, digits))
}

impl HttpBody for SignedChunks {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(data) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if this.state == State::Done && this.buf.is_empty() && this.inner.is_end_stream() {
                return Poll::Ready(None);
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.buf.extend_from_slice(&data);
                        if let Err(why) = this.advance() {
                            return Poll::Ready(Some(Err(this.fail(why))));
                        }
                    }
                    // HTTP trailer fields were checked on the way in.
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None if this.state == State::Done => return Poll::Ready(None),
                None => {
                    let why = "it ended before its last chunk".to_owned();
                    return Poll::Ready(Some(Err(this.fail(Stop::Malformed(why)))));
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        // Byte for byte as long as the agent's.
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime};

    use aws_credential_types::Credentials;
    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::{BodyExt, StreamBody};

    use super::{MAX_CHUNK, SignedChunks, State, credential_action};
    use crate::error::Error;

    /// The S3 API Reference's example of a signed-chunk upload ("Example:
    /// PUT Object", under "Signature calculations for the Authorization
    /// header: Transferring payload in multiple chunks"): 66,560 bytes of
    /// `a` in chunks of 64 KiB and 1 KiB, signed on 2013-05-24 for
    /// us-east-1/s3 with the documentation's example keys.
    const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
    const DOC_SIGNATURES: [&str; 3] = [
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ];

    fn resigner(inner: crate::Body, refused: Arc<Mutex<Option<Error>>>, trailer: bool) -> SignedChunks {
        resigner_within(inner, refused, trailer, super::SigningBudget::default().for_tenant("t"))
    }

    fn resigner_within(
        inner: crate::Body,
        refused: Arc<Mutex<Option<Error>>>,
        trailer: bool,
        budget: super::Budget,
    ) -> SignedChunks {
        let credentials =
            Credentials::new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None, None, "test");
        SignedChunks {
            inner,
            buf: bytes::BytesMut::new(),
            state: State::SizeLine,
            digits: Bytes::new(),
            trailer,
            previous: SEED.to_owned(),
            identity: credentials.into(),
            region: "us-east-1".to_owned(),
            service: "s3".to_owned(),
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600),
            route: "s3".to_owned(),
            ready: Default::default(),
            refused,
            crlf_held: false,
            held: None,
            budget,
        }
    }

    /// An agent's aws-chunked body of `sizes` chunks of `a` (and the last,
    /// empty one), every signature `0…0`.
    fn agent_body(sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for size in sizes.iter().copied().chain([0]) {
            out.extend_from_slice(format!("{size:x};chunk-signature={}\r\n", "0".repeat(64)).as_bytes());
            if size > 0 {
                out.extend(std::iter::repeat_n(b'a', size));
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// An aws-chunked body with its chunk signatures left out.
    fn unsigned(body: &str) -> String {
        let mut out = body.to_owned();
        while let Some(i) = out.find(";chunk-signature=") {
            out.replace_range(i..i + 17 + 64, "");
        }
        out
    }

    /// `body` fed in pieces of `step` bytes through the re-signer: what
    /// comes out, or the refusal.
    async fn resign(body: &[u8], step: usize, trailer: bool) -> Result<Vec<u8>, String> {
        let pieces: Vec<Result<Frame<Bytes>, crate::BoxError>> =
            body.chunks(step).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
        let inner = StreamBody::new(futures_util::stream::iter(pieces)).boxed_unsync();
        let refused = Arc::new(Mutex::new(None));
        match resigner(inner, Arc::clone(&refused), trailer).collect().await {
            Ok(collected) => Ok(collected.to_bytes().to_vec()),
            Err(_) => Err(refused.lock().unwrap().take().map(|e| e.to_string()).unwrap_or_default()),
        }
    }

    #[tokio::test]
    async fn chunks_are_signed_as_the_s3_documentation_signs_them_however_they_arrive() {
        let body = agent_body(&[65536, 1024]);
        let whole = resign(&body, body.len(), false).await.unwrap();
        let text = String::from_utf8_lossy(&whole);
        let found: Vec<&str> = text.match_indices("chunk-signature=").map(|(i, _)| &text[i + 16..i + 80]).collect();
        assert_eq!(found, DOC_SIGNATURES);
        // Byte for byte as long as the agent's, the data untouched.
        assert_eq!(whole.len(), body.len());
        assert_eq!(unsigned(&text), unsigned(&String::from_utf8(body.clone()).unwrap()));
        for step in [1, 2, 63, 64, 65, 4096, 65536 + 90] {
            assert_eq!(resign(&body, step, false).await.unwrap(), whole, "in pieces of {step}");
        }
    }

    /// A body cut right after a whole chunk, without its last (empty)
    /// chunk, never gives out every byte it declared: an upstream told its
    /// length stops reading at that length and would take it as whole.
    #[tokio::test]
    async fn a_body_without_its_last_chunk_never_sends_all_it_declared() {
        let body = agent_body(&[100, 50]);
        let cut = body.len() - (1 + 17 + 64 + 2 + 2);
        let frame = Frame::data(Bytes::copy_from_slice(&body[..cut]));
        let inner = StreamBody::new(futures_util::stream::iter(vec![Ok::<_, crate::BoxError>(frame)])).boxed_unsync();
        let refused = Arc::new(Mutex::new(None));
        let mut out = resigner(inner, Arc::clone(&refused), false);
        let mut given = 0;
        while let Some(frame) = out.frame().await {
            match frame {
                Ok(frame) => given += frame.into_data().map_or(0, |d| d.len()),
                Err(_) => break,
            }
        }
        assert!(given < cut, "{given} of the {cut} bytes the agent sent were given out before the refusal");
        assert!(refused.lock().unwrap().take().unwrap().to_string().contains("ended before its last chunk"));
    }

    /// A chunk the signing budget has no room for is refused (`503`), and
    /// what a chunk held is given back once it is signed.
    #[tokio::test]
    async fn chunks_are_held_within_the_signing_budget() {
        let all = Arc::new(tokio::sync::Semaphore::new(128));
        let share = || super::Budget { all: Arc::clone(&all), tenant: Arc::new(tokio::sync::Semaphore::new(64)) };
        let budget = share();
        let body = agent_body(&[64 * 1024, 64 * 1024]);
        let feed = |body: &[u8]| {
            let frame = Frame::data(Bytes::copy_from_slice(body));
            StreamBody::new(futures_util::stream::iter(vec![Ok::<_, crate::BoxError>(frame)])).boxed_unsync()
        };
        let refused = Arc::new(Mutex::new(None));
        let out = resigner_within(feed(&body), Arc::clone(&refused), false, budget.clone());
        assert!(out.collect().await.is_ok(), "two 64 KiB chunks, one after the other, fit a 64 KiB share");
        assert_eq!((budget.tenant.available_permits(), all.available_permits()), (64, 128), "all given back");
        let big = agent_body(&[64 * 1024 + 1]);
        let out = resigner_within(feed(&big), Arc::clone(&refused), false, budget.clone());
        assert!(out.collect().await.is_err(), "over the tenant's share");
        assert!(matches!(refused.lock().unwrap().take(), Some(Error::SigningBusy { .. })));
        // One tenant holding its whole share leaves room for another.
        let _hog = Arc::clone(&budget.tenant).try_acquire_many_owned(64).unwrap();
        let other = share();
        assert!(resigner_within(feed(&body), Arc::clone(&refused), false, other).collect().await.is_ok());
    }

    #[test]
    fn actions_that_hand_out_credentials_are_found_however_they_are_spelled() {
        use http::{HeaderMap, HeaderValue, Uri};
        let none = HeaderMap::new();
        let target = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("x-amz-target", HeaderValue::from_static(v));
            h
        };
        let gzip = {
            let mut h = HeaderMap::new();
            h.insert("content-encoding", HeaderValue::from_static("gzip"));
            h
        };
        let uri = |u: &'static str| u.parse::<Uri>().unwrap();
        let json = target("AWSSecurityTokenServiceV20110615.GetSessionToken");
        let caller = target("AWSSecurityTokenServiceV20110615.GetCallerIdentity");
        let utf16: Vec<u8> = "Action=GetSessionToken".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let found: Vec<(&str, Uri, &HeaderMap, &[u8])> = vec![
            ("sts", uri("/?Action=GetSessionToken&Version=2011-06-15"), &none, b""),
            ("sts", uri("/?Action=Assume%52ole&RoleArn=x"), &none, b""),
            ("sts", uri("/"), &none, b"Version=2011-06-15&Action=GetFederationToken&Name=x"),
            ("sts", uri("/"), &none, b"action=getsessiontoken"),
            ("sts", uri("/"), &none, b"Version=1;Action=GetSessionToken"),
            ("sts", uri("/"), &none, b"Action=GetSessionToken%00"),
            ("sts", uri("/"), &none, b"Action=AssumeRoleWithWebIdentity"),
            ("sts", uri("/"), &none, &utf16),
            ("sts", uri("/"), &json, b""),
            ("sts", uri("/service/AWSSecurityTokenServiceV20110615/operation/AssumeRoot"), &none, b""),
            ("sts", uri("/"), &gzip, b"\x1f\x8b..."),
            ("s3", uri("/?session"), &none, b""),
            ("s3express", uri("/?Session="), &none, b""),
            ("s3express", uri("/?x-id=CreateSession"), &none, b""),
            ("s3", uri("/?;session"), &none, b""),
            ("sts", uri("/"), &none, b"Action=GetScopedCredentials&Version=2011-06-15"),
            ("sts", uri("/service/AWSSecurityTokenServiceV20110615/operation/GetDelegatedAccessToken"), &none, b""),
            // Not on the allow-list: a name no one has thought of, a
            // look-alike, none at all, or a safe one beside another.
            ("sts", uri("/"), &none, b"Action=GetBrandNewCredentials"),
            ("sts", uri("/"), &none, "Action=GetSessionTo\u{212A}en".as_bytes()),
            ("sts", uri("/?Version=2011-06-15"), &none, b""),
            ("sts", uri("/?Action=GetCallerIdentity"), &none, b"Action=GetBrandNewCredentials"),
            ("sts", uri("/"), &none, &utf16),
        ];
        for (service, uri, headers, body) in &found {
            assert!(credential_action(service, uri, headers, body).is_some(), "{service} {uri} {body:?}");
        }
        let passed: Vec<(&str, Uri, &HeaderMap, &[u8])> = vec![
            ("sts", uri("/?Action=GetCallerIdentity&Version=2011-06-15"), &none, b""),
            ("sts", uri("/"), &none, b"Action=DecodeAuthorizationMessage&EncodedMessage=x"),
            ("sts", uri("/service/AWSSecurityTokenServiceV20110615/operation/GetCallerIdentity"), &none, b""),
            ("sts", uri("/?Action=GetCallerIdentity"), &gzip, b""),
            ("sts", uri("/"), &none, b"Action=GetAccessKeyInfo&AccessKeyId=AKIAEXAMPLE"),
            ("sts", uri("/"), &caller, b"{}"),
            ("s3", uri("/b/session"), &none, b""),
            ("s3", uri("/b/k?x=session"), &none, b""),
            ("sqs", uri("/?Action=GetSessionToken"), &none, b""),
        ];
        for (service, uri, headers, body) in &passed {
            assert_eq!(credential_action(service, uri, headers, body), None, "{service} {uri} {body:?}");
        }
    }

    #[tokio::test]
    async fn a_trailer_is_signed_in_the_chain_and_kept() {
        let mut body = agent_body(&[1000]);
        body.truncate(body.len() - 2);
        body.extend_from_slice(
            format!("x-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature:{}\r\n\r\n", "1".repeat(64)).as_bytes(),
        );
        let out = resign(&body, 7, true).await.unwrap();
        assert_eq!(out.len(), body.len());
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("\r\nx-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature:"), "{text}");
        assert!(!text.contains(&"1".repeat(64)), "the agent's trailer signature is replaced");
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[tokio::test]
    async fn a_malformed_or_oversized_body_is_refused_not_passed() {
        let good = agent_body(&[100]);
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        let over = format!("{:x};chunk-signature={}\r\n", MAX_CHUNK + 1, "0".repeat(64));
        let cases: Vec<(Vec<u8>, bool, &str)> = vec![
            (good[..good.len() - 2].to_vec(), false, "ended before its last chunk"),
            ([&good[..], b"extra"].concat(), false, "goes on after its last chunk"),
            (b"64;chunk-signature=00\r\n".to_vec(), false, "not `size;chunk-signature=signature`"),
            (b"zz;chunk-signature=0\r\n".to_vec(), false, "not `size;chunk-signature=signature`"),
            (over.into_bytes(), false, "over 1 MiB"),
            (vec![b'1'; 4096], false, "chunk-size line is too long"),
            (text(&good).replacen("aaaa\r\n", "aaaaX", 1).into_bytes(), false, "longer than its size"),
            (
                text(&good).replace("\r\n\r\n", "\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n").into_bytes(),
                true,
                "no x-amz-trailer-signature",
            ),
        ];
        for (body, trailer, why) in cases {
            let refused = resign(&body, 5, trailer).await.unwrap_err();
            assert!(refused.contains(why), "{why}: {refused}");
            assert!(refused.contains("unsignable") || refused.contains("re-signs"), "{refused}");
        }
    }
}
