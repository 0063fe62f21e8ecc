//! The request pipeline for intercepted (and plain-HTTP) requests:
//! check the authority, decide, fetch the secret, inject, forward, and
//! answer — with one audit record per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::{Instrument, debug, info, info_span};

use airlock_policy::inject::inject;
use airlock_policy::{AuthError, Decision, Denial, DenialCode, Limits, RequestInfo, Route, RouteId, TenantId};

use crate::audit::{self, Outcome, Record};
use crate::redact::{
    DecodeError, Decoder, Ended, GrpcMessages, MessageCoding, RedactBody, RedactionCount, grpc_kind, is_grpc_web_text,
    scrub_binary_metadata, scrub_headers,
};
use crate::respond::{self, REQUEST_ID_HEADER, denial_response, grpc_denial_response, request_id};
use crate::send::{DecidedRoute, Outgoing, Sent, Upgrades, send};
use crate::server::{ConnGuard, Loaded, Shared, parse_destination};
use crate::upstream::Egress;
use crate::{Body, limits, websocket};

/// Where the agent's connection goes: fixed by the CONNECT (or the
/// absolute-form URI), never by a request's `Host`.
#[derive(Clone, Debug)]
pub struct Destination {
    /// The authenticated tenant's name (looked up in the config current for
    /// each request, which a reload may have replaced).
    pub tenant: String,
    /// Normalised host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Whether the upstream speaks TLS (CONNECT) or plain HTTP.
    pub https: bool,
    /// The agent's address.
    pub peer: SocketAddr,
    /// The agent connection's guard, for what outlives a request on it (a
    /// WebSocket relay): its `max_connections` slot and the shutdown signal.
    /// None for approved actions, which never upgrade.
    pub(crate) guard: Option<ConnGuard>,
}

impl Destination {
    fn default_port(&self) -> u16 {
        if self.https { 443 } else { 80 }
    }

    /// `host[:port]`, the port left out when it is the scheme's default and
    /// an IPv6 literal in brackets.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == self.default_port() { host } else { format!("{host}:{}", self.port) }
    }

    /// `scheme://host[:port]` for the upstream URI.
    pub(crate) fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }
}

/// Per-request facts gathered for the audit record: one per request, for
/// intercepted requests and approved actions alike.
pub(crate) struct Audit<'a> {
    shared: &'a Shared,
    loaded: &'a Loaded,
    tenant: TenantId,
    dest: &'a Destination,
    pub(crate) request_id: String,
    ts: String,
    started: Instant,
    method: String,
    /// Scrubbed with the secrets the vault knew at `path_version`.
    path: String,
    path_version: u64,
    /// Set once a secret is in the request: a refusal after that point (of
    /// the upstream's answer) is recorded as injected, as the key may have
    /// left.
    injected: std::sync::atomic::AtomicBool,
    /// Watched by the audit writer until the record is written.
    in_flight: audit::InFlight,
}

impl<'a> Audit<'a> {
    /// Starts the record of a request of `tenant` to `dest` (now, with a
    /// fresh request id).
    pub(crate) fn begin(
        shared: &'a Shared,
        loaded: &'a Loaded,
        tenant: TenantId,
        dest: &'a Destination,
        method: String,
        path: String,
    ) -> Self {
        // The version is read first: a change while scrubbing shows as a
        // newer version at record time, and the record scrubs again.
        let path_version = shared.vault.version();
        let path = scrub_path(shared, loaded, tenant, &path);
        let (request_id, ts) = (request_id(), audit::now_rfc3339());
        let in_flight = shared.audit.begin(audit::Event {
            ts: ts.clone(),
            event: audit::EventKind::Begin,
            request_id: Some(request_id.clone()),
            tenant: Some(dest.tenant.clone()),
            method: Some(method.clone()),
            host: Some(dest.host.clone()),
            port: Some(dest.port),
            path: Some(audit::clip_path(path.clone())),
            detail: None,
        });
        Audit {
            shared,
            loaded,
            tenant,
            dest,
            request_id,
            ts,
            started: Instant::now(),
            method,
            path,
            path_version,
            injected: std::sync::atomic::AtomicBool::new(false),
            in_flight,
        }
    }

    /// The request's path with any secret in it replaced: what the audit
    /// record and every log line show.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    fn write(&self, route: Option<RouteId>, outcome: Outcome, code: Option<DenialCode>, status: u16, injected: bool) {
        self.shared.audit.write(self.record(route, outcome, code, status, injected));
    }

    fn record(
        &self,
        route: Option<RouteId>,
        outcome: Outcome,
        code: Option<DenialCode>,
        status: u16,
        injected: bool,
    ) -> Record {
        Record {
            tenant: Some(self.dest.tenant.clone()),
            route: route.map(|r| self.loaded.policy.route(r).name.clone()),
            path: self.record_path(),
            code: code.map(|c| c.as_str().to_owned()),
            injected,
            duration_ms: self.started.elapsed().as_millis() as u64,
            in_flight: Some(self.in_flight.clone()),
            ..Record::new(
                self.ts.clone(),
                self.request_id.clone(),
                self.method.clone(),
                self.dest.host.clone(),
                self.dest.port,
                outcome,
                status,
            )
        }
    }

    /// The path for the record: as scrubbed at the start, unless the vault
    /// has learnt a value since (a secret fetched for the first time during
    /// this request), in which case it is scrubbed again.
    fn record_path(&self) -> String {
        // Cut after scrubbing, never before: a cut secret would no longer
        // match.
        audit::clip_path(if self.shared.vault.version() == self.path_version {
            self.path.clone()
        } else {
            scrub_path(self.shared, self.loaded, self.tenant, &self.path)
        })
    }

    /// Logs and audits a denial; the caller answers it.
    pub(crate) fn refuse(&self, denial: &Denial) {
        info!(code = %denial.code, "denied");
        let injected = self.injected.load(Ordering::Relaxed);
        self.write(denial.route, Outcome::Deny, Some(denial.code), denial.status(), injected);
    }

    /// Audits a denial and answers it: as a gRPC status for a gRPC call
    /// (`grpc`), else as JSON.
    fn deny(&self, denial: &Denial, grpc: bool) -> Response<Body> {
        self.refuse(denial);
        let scrubbed = self.scrubbed(denial);
        if grpc {
            grpc_denial_response(&scrubbed, &self.request_id)
        } else {
            denial_response(&scrubbed, &self.request_id)
        }
    }

    /// The denial with every known secret replaced in its text: a message
    /// may quote an upstream's words (an error, a certificate's names), and
    /// nothing the agent reads may hold a secret.
    pub(crate) fn scrubbed(&self, denial: &Denial) -> Denial {
        let set = self.loaded.scrubbers.tenant_set(&self.loaded.policy, &self.shared.vault, self.tenant);
        Denial {
            message: set.scrub_text(&denial.message),
            next_step: set.scrub_text(&denial.next_step),
            ..denial.clone()
        }
    }
}

/// `path` with any secret in it replaced, as no audit record or log line may
/// hold one.
fn scrub_path(shared: &Shared, loaded: &Loaded, tenant: TenantId, path: &str) -> String {
    loaded.scrubbers.tenant_set(&loaded.policy, &shared.vault, tenant).scrub_text(path)
}

/// Decides and forwards one request to a routed (or egress-denied) host.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    loaded: Arc<Loaded>,
    dest: Arc<Destination>,
    req: Request<Incoming>,
) -> Response<Body> {
    let policy = &loaded.policy;
    let Some((tenant, _)) = policy.tenant_by_name(&dest.tenant) else {
        // The tenant was removed by a reload while this connection was
        // open: refused, and recorded under the name it connected as (no
        // path: with the tenant gone, there is no set to scrub it with).
        let denial = AuthError::Unknown.denial();
        let id = request_id();
        let resp = denial_response(&denial, &id);
        shared.audit.write(Record {
            tenant: Some(dest.tenant.clone()),
            code: Some(denial.code.as_str().to_owned()),
            ..Record::new(
                audit::now_rfc3339(),
                id,
                req.method().to_string(),
                dest.host.clone(),
                dest.port,
                Outcome::Deny,
                resp.status().as_u16(),
            )
        });
        return resp;
    };
    let audit = Audit::begin(&shared, &loaded, tenant, &dest, req.method().to_string(), req.uri().path().to_owned());
    let span = info_span!("request", request_id = %audit.request_id, method = %req.method(), path = %audit.path());
    let grpc = grpc_kind(req.headers()).is_some();
    async {
        #[cfg(debug_assertions)]
        crate::fault::check(req.headers());
        if let Err(denial) = check_authority(&req, &dest).and_then(|()| limits::check_head(&req, &policy.limits)) {
            return audit.deny(&denial, grpc);
        }
        match forward(&shared, &audit, req).await {
            Ok(resp) => resp,
            Err(denial) => audit.deny(&denial, grpc),
        }
    }
    .instrument(span)
    .await
}

/// The pipeline every request under a route goes through, intercepted or
/// sent as an approved action: decide, fetch the secret, inject, send, and
/// answer with scrubbed headers and a scrubbing body that writes the audit
/// record when it ends. A denial is returned for the caller to audit
/// ([`Audit::refuse`]) and answer in its own form. The response's
/// extensions hold its [`RedactionCount`] (headers included).
///
/// The agent's response head is built from an allow-list — the status (its
/// canonical reason phrase only), the scrubbed headers and airlock's own
/// extensions — never from the upstream's parts, which carry a
/// non-canonical reason phrase (and anything else hyper keeps) unscanned.
pub(crate) async fn forward<B>(
    shared: &Arc<Shared>,
    audit: &Audit<'_>,
    req: Request<B>,
) -> Result<Response<Body>, Denial>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::BoxError>,
{
    let loaded = audit.loaded;
    let dest = audit.dest;
    let tenant = audit.tenant;
    let policy = &loaded.policy;
    let target = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let names: Vec<(&str, &[u8])> = req.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
    let info =
        RequestInfo { method: req.method().as_str(), host: &dest.host, port: dest.port, target, headers: &names };
    let (route_id, injections) = match policy.decide(tenant, &info) {
        Decision::Allow { route, injections } => (route, injections),
        Decision::Deny(denial) => return Err(denial),
    };
    let route = policy.route(route_id);
    tracing::Span::current().record("route", route.name.as_str());

    // A secret never goes out in cleartext, but to a private address
    // under a route's opt-in; where the host resolves is checked on the
    // very addresses the connection is made to.
    let cleartext = !injections.is_empty() && !dest.https;
    if cleartext {
        check_plaintext(dest, route).map_err(|d| Denial { route: Some(route_id), ..d })?;
    }
    let egress = if cleartext { Egress::Private } else { Egress::Any };

    // Swap the placeholder for the secret in the headers the decision named.
    let mut swapped: Vec<(usize, HeaderValue)> = Vec::new();
    if !injections.is_empty() {
        let fetched = match policy.secret(&route.secret) {
            Some(spec) => fetch_secret(shared, spec).await,
            // Policy::load checks every route's secret is declared.
            None => Err(format!("secret '{}' is not declared", route.secret)),
        };
        let secret = match fetched {
            Ok(v) => v,
            Err(reason) => {
                return Err(Denial {
                    route: Some(route_id),
                    ..Denial::new(
                        DenialCode::SecretUnavailable,
                        format!("the credential for route '{}' is unavailable: {reason}", route.name),
                        "ask the operator to run `airlock check` and fix the secret; retrying will not help until then",
                    )
                });
            }
        };
        for inj in &injections {
            let Some((_, value)) = names.get(inj.header) else { continue };
            let Some(bytes) = inject(value, route.placeholder.as_bytes(), secret.expose()) else { continue };
            // Secrets hold no control characters (checked when fetched),
            // so the swapped value is a valid header value.
            if let Ok(mut v) = HeaderValue::from_bytes(&bytes) {
                v.set_sensitive(true);
                swapped.push((inj.header, v));
            }
        }
    }
    // What the redactor maps back: each injected value to what the agent
    // sent.
    let injected_pairs: Vec<(Vec<u8>, Vec<u8>)> = swapped
        .iter()
        .filter_map(|(i, v)| names.get(*i).map(|(_, orig)| (v.as_bytes().to_vec(), orig.to_vec())))
        .collect();
    drop(names);
    let injected = !swapped.is_empty();
    audit.injected.store(injected, Ordering::Relaxed);
    let set = loaded.scrubbers.for_request(policy, &shared.vault, tenant, injected_pairs).await;
    let bytes_up = Arc::new(AtomicU64::new(0));
    let body_limit = route.max_request_body.unwrap_or(policy.limits.max_request_body);
    let decided = DecidedRoute { policy: Arc::clone(policy), tenant, route: route_id };
    let out = Outgoing { tenant, egress, swapped, route: Some(decided), body_limit, bytes_up: Arc::clone(&bytes_up) };
    let head_request = req.method() == http::Method::HEAD;
    let sent = match send(loaded, dest, req, out).await {
        Ok(r) => r,
        Err(denial) => return Err(Denial { route: Some(route_id), ..denial }),
    };
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
    if let Ok(id) = HeaderValue::from_str(&audit.request_id) {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    let mut record = audit.record(Some(route_id), Outcome::Allow, None, status.as_u16(), injected);
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
            record,
            audit: shared.audit.clone(),
            started: audit.started,
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
    let writer = shared.audit.clone();
    let started = audit.started;
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
        Err(e) => {
            return Err(Denial {
                route: Some(route_id),
                ..Denial::new(
                    DenialCode::UnredactableBody,
                    format!("the upstream answered {} with a body airlock cannot scan: {e}", status.as_u16()),
                    "retry without asking for that encoding (airlock asks upstreams for identity); if it persists, ask the operator to check the API",
                )
            });
        }
    };
    if headers.get(header::CONTENT_TYPE).is_some_and(|v| is_grpc_web_text(v.as_bytes())) {
        return Err(Denial {
            route: Some(route_id),
            ..Denial::new(
                DenialCode::UnredactableBody,
                format!(
                    "the upstream answered {} with application/grpc-web-text: base64 that servers pad piece by \
                     piece, which airlock cannot scan",
                    status.as_u16()
                ),
                "call with application/grpc-web or application/grpc (binary), which airlock scans message by message",
            )
        });
    }
    // gRPC messages are read one by one.
    let grpc = match grpc {
        Some(kind) => {
            let limits = &policy.limits;
            let coding =
                grpc_coding(&mut headers, status, limits).map_err(|d| Denial { route: Some(route_id), ..d })?;
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
fn grpc_coding(headers: &mut HeaderMap, status: StatusCode, limits: &Limits) -> Result<Option<MessageCoding>, Denial> {
    let values: Vec<String> =
        headers.get_all(GRPC_ENCODING).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
    let max_message = usize::try_from(limits.max_grpc_message).unwrap_or(usize::MAX);
    let coding = match values.as_slice() {
        [] => None,
        [one] => MessageCoding::for_header(one, max_message).map_err(|e| {
            // Never quoting the coding: it is upstream text.
            let why = match e {
                DecodeError::Unsupported => {
                    "their grpc-encoding is one airlock does not decode (it decodes gzip, deflate, br and zstd)"
                        .to_owned()
                }
                other => other.to_string(),
            };
            Denial::new(
                DenialCode::UnredactableBody,
                format!("the upstream answered {} with gRPC messages airlock cannot scan: {why}", status.as_u16()),
                "call without compression (airlock asks upstreams for grpc-accept-encoding: identity); if it \
                 persists, ask the operator to check the API",
            )
        })?,
        _ => {
            return Err(Denial::new(
                DenialCode::UnredactableBody,
                format!("the upstream answered {} with more than one grpc-encoding", status.as_u16()),
                "ask the operator to check the API",
            ));
        }
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
fn response_head(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
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

/// Refuses to send a request carrying an injected secret to a plain-HTTP
/// upstream, unless its route opts in with
/// `danger_plaintext_private_upstream`; one that does is then connected
/// only to loopback or private addresses ([`Egress::Private`]), refused
/// with [`public_cleartext_denial`] otherwise.
fn check_plaintext(dest: &Destination, route: &Route) -> Result<(), Denial> {
    if route.danger_plaintext_private_upstream {
        return Ok(());
    }
    let authority = dest.authority();
    Err(Denial::new(
        DenialCode::InsecureUpstream,
        format!(
            "this request would carry route '{}''s credential to http://{authority} in cleartext; airlock sends \
             secrets only over verified TLS",
            route.name
        ),
        format!(
            "use https://{authority}/… (with HTTPS_PROXY set); if the API only speaks plain HTTP, ask the operator"
        ),
    ))
}

/// The refusal of a cleartext secret to a host that resolves to a public
/// address, `ip`.
pub(crate) fn public_cleartext_denial(dest: &Destination, route: &Route, ip: std::net::IpAddr) -> Denial {
    Denial::new(
        DenialCode::InsecureUpstream,
        format!(
            "{} resolves to {ip}, a public address; route '{}' allows cleartext only to loopback or private addresses",
            dest.host, route.name
        ),
        format!("use https://{}/…", dest.authority()),
    )
}

/// The secret's value: from the cache, or fetched on a blocking thread (a
/// `command` source runs a process; a `file` one reads the disk), one fetch
/// per secret however many requests miss it at once (see `fetch`). The
/// error is the agent's to read: a failed command's stderr is never in it.
async fn fetch_secret(
    shared: &Arc<Shared>,
    spec: &airlock_policy::SecretSpec,
) -> Result<Arc<airlock_policy::secrets::SecretValue>, String> {
    if let Some(v) = shared.vault.cached(spec) {
        return Ok(v);
    }
    shared.fetches.fetch(&shared.vault, spec).await
}

/// Forwards a plain-HTTP request to a host no route names (egress =
/// "tunnel"): untouched but for hop-by-hop headers, like a tunnel's bytes,
/// and audited as one (`decision: "tunnel"`). A WebSocket to such a host is
/// relayed as a tunnel is; no other upgrade is.
pub(crate) async fn pass_through(
    shared: &Shared,
    loaded: &Loaded,
    tenant: TenantId,
    dest: Arc<Destination>,
    req: Request<Incoming>,
) -> Response<Body> {
    let audit = Audit::begin(shared, loaded, tenant, &dest, req.method().to_string(), req.uri().path().to_owned());
    let limit = loaded.policy.limits.max_request_body;
    let bytes_up = Arc::new(AtomicU64::new(0));
    let out = Outgoing {
        tenant,
        egress: Egress::unrouted(loaded.policy.proxy.deny_private_egress),
        swapped: Vec::new(),
        route: None,
        body_limit: limit,
        bytes_up: Arc::clone(&bytes_up),
    };
    let sent = send(loaded, &dest, req, out).await;
    let (status, resp) = match sent {
        Ok(Sent { status, mut headers, body, upgrade, .. }) => {
            if let Ok(id) = HeaderValue::from_str(&audit.request_id) {
                headers.insert(REQUEST_ID_HEADER, id);
            }
            if let Some(Upgrades { agent, upstream }) = upgrade {
                let (idle, guard) = (loaded.policy.limits.tunnel_idle_timeout, dest.guard.clone());
                tokio::spawn(
                    async move {
                        let Ok((agent, upstream)) = tokio::try_join!(agent, upstream) else { return };
                        crate::tunnel::pipe(TokioIo::new(agent), TokioIo::new(upstream), idle, guard.as_ref()).await;
                    }
                    .in_current_span(),
                );
                (status, response_head(status, headers, respond::empty()))
            } else {
                (status, response_head(status, headers, body))
            }
        }
        Err(denial) => {
            audit.refuse(&denial);
            return denial_response(&denial, &audit.request_id);
        }
    };
    let mut record = audit.record(None, Outcome::Tunnel, None, status.as_u16(), false);
    record.bytes_up = bytes_up.load(Ordering::Relaxed);
    shared.audit.write(record);
    resp
}

/// Checks that the request names the connection's destination: the `Host`
/// header (exactly one) and, in HTTP/2 or absolute form, the URI authority.
fn check_authority(req: &Request<Incoming>, dest: &Destination) -> Result<(), Denial> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(Denial::new(
            DenialCode::BadRequest,
            "the request has more than one Host header",
            "send exactly one Host header",
        ));
    }
    let named = first
        .map(|h| h.to_str().ok().map(str::to_owned))
        .into_iter()
        .chain(req.uri().authority().map(|a| Some(a.as_str().to_owned())));
    for authority in named {
        let ok = authority
            .and_then(|a| parse_destination(&a, dest.default_port()))
            .is_some_and(|(h, p)| h == dest.host && p == dest.port);
        if !ok {
            let connected = dest.authority();
            return Err(Denial::new(
                DenialCode::MisdirectedRequest,
                format!("this connection is to {connected}, but the request names another host"),
                format!(
                    "open a separate connection (CONNECT) for the other host; requests on this one may only go to {connected}"
                ),
            ));
        }
    }
    Ok(())
}
