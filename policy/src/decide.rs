//! The decision: authenticate a tenant, choose what to do with a CONNECT,
//! and decide each request before any upstream connection is opened.
//!
//! Everything here is pure: the same inputs always give the same answer,
//! with no I/O. Denial messages never contain header values (they may hold
//! credentials); they name hosts, routes, headers and placeholders only.

use std::fmt;

use subtle::ConstantTimeEq;

use crate::host;
use crate::inject::basic_credentials;
use crate::policy::{AwsSigV4, Credential, Egress, Policy, Route, RouteId, TenantId};
use crate::sigv4::{self, SigV4Authorization};

/// What `decide` (and proxy authentication) can refuse with: the policy's
/// codes of DESIGN.md ("Denials"). The proxy's own codes — the vault's, the
/// upstream's, bodies', sizes' — are the proxy's (`airlock::respond::Code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenialCode {
    /// No proxy credentials.
    ProxyAuthRequired,
    /// Wrong token or unknown tenant name.
    UnknownTenant,
    /// The tenant has no route for the host.
    HostNotAllowed,
    /// The route does not allow the method.
    MethodNotAllowed,
    /// The route does not allow the path.
    PathNotAllowed,
    /// A placeholder sent to a host, header or URL its route does not cover.
    PlaceholderHostMismatch,
    /// A placeholder of another tenant. Wins over every other code.
    WrongTenant,
    /// A connection to a loopback/private/link-local address no route names.
    PrivateEgressDenied,
    /// A request the decision cannot read (a host that is not one).
    BadRequest,
    /// A SigV4 request signed for another region or service than its
    /// route's `aws_sigv4` credential signs for.
    CredentialScopeMismatch,
    /// A presigned URL (SigV4 query authentication) on a route that signs:
    /// airlock signs headers only, never a URL that outlives the request.
    PresignedUrlRefused,
}

impl DenialCode {
    /// The code as written in responses and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            DenialCode::ProxyAuthRequired => "proxy_auth_required",
            DenialCode::UnknownTenant => "unknown_tenant",
            DenialCode::HostNotAllowed => "host_not_allowed",
            DenialCode::MethodNotAllowed => "method_not_allowed",
            DenialCode::PathNotAllowed => "path_not_allowed",
            DenialCode::PlaceholderHostMismatch => "placeholder_host_mismatch",
            DenialCode::WrongTenant => "wrong_tenant",
            DenialCode::PrivateEgressDenied => "private_egress_denied",
            DenialCode::BadRequest => "bad_request",
            DenialCode::CredentialScopeMismatch => "credential_scope_mismatch",
            DenialCode::PresignedUrlRefused => "presigned_url_refused",
        }
    }
}

impl fmt::Display for DenialCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy refusal the agent can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The code.
    pub code: DenialCode,
    /// What happened, for people and agents.
    pub message: String,
    /// What to do next, without asking for a key.
    pub next_step: String,
    /// The route involved, when one was.
    pub route: Option<RouteId>,
}

impl Denial {
    /// A denial with no route.
    pub fn new(code: DenialCode, message: impl Into<String>, next_step: impl Into<String>) -> Self {
        Denial { code, message: message.into(), next_step: next_step.into(), route: None }
    }
}

/// Why proxy authentication failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No `Proxy-Authorization` (or not Basic).
    Missing,
    /// Unknown tenant or wrong token.
    Unknown,
}

impl AuthError {
    /// The denial the proxy answers with.
    pub fn denial(self) -> Denial {
        match self {
            AuthError::Missing => Denial::new(
                DenialCode::ProxyAuthRequired,
                "airlock needs proxy credentials naming a tenant",
                "set HTTPS_PROXY=http://<tenant>:<token>@<proxy address> \
                 (`airlock env --tenant <tenant>` prints it), or run the agent with `airlock run`",
            ),
            AuthError::Unknown => Denial::new(
                DenialCode::UnknownTenant,
                "the proxy credentials do not match any tenant",
                "check the tenant name and token in HTTPS_PROXY against `airlock env --tenant <tenant>`",
            ),
        }
    }
}

/// What to do with a `CONNECT` (or an absolute-form request's host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectAction {
    /// Terminate TLS and decide each request; the route when one names the
    /// host (none when egress is "deny").
    Intercept(Option<RouteId>),
    /// Pass bytes through untouched (after the private-egress check).
    Tunnel,
}

/// One request as the decision sees it.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The destination host (normalised here if it is not already).
    pub host: &'a str,
    /// The destination port.
    pub port: u16,
    /// The request target: path and query.
    pub target: &'a str,
    /// Every request header, lower-case names.
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// A header in which the placeholder is to be swapped for the secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// Index into [`RequestInfo::headers`].
    pub header: usize,
}

/// The outcome of [`Policy::decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forward, swapping the route's placeholder in these headers and
    /// query parameters.
    Allow {
        /// The route that matched.
        route: RouteId,
        /// Headers carrying the route's placeholder (possibly none).
        injections: Vec<Injection>,
        /// The query's `&`-separated pairs (by index) whose value carries
        /// the route's placeholder, in a parameter the route lists.
        query: Vec<usize>,
    },
    /// Refuse; nothing leaves the machine.
    Deny(Denial),
}

/// Where a placeholder was found.
#[derive(Clone, Copy, Debug)]
enum Spot {
    Header(usize),
    /// In a header's name, where nothing is ever injected.
    HeaderName,
    Target,
}

impl Policy {
    /// Resolves the tenant named by a `Proxy-Authorization` (or
    /// `Authorization`) header value: `Basic base64(tenant:token)`. Tokens
    /// are compared in constant time.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<TenantId, AuthError> {
        let creds = header.and_then(basic_credentials).ok_or(AuthError::Missing)?;
        let (user, token) = match creds.iter().position(|&b| b == b':') {
            Some(i) => (&creds[..i], &creds[i + 1..]),
            None => return Err(AuthError::Unknown),
        };
        // Compare against every tenant so the time taken does not depend on
        // which tenant (if any) matched.
        let mut found = None;
        for (i, t) in self.tenants.iter().enumerate() {
            let ok = t.name.as_bytes().ct_eq(user) & self.tenant_token(i).ct_eq(token);
            if bool::from(ok) {
                found = Some(TenantId(i));
            }
        }
        found.ok_or(AuthError::Unknown)
    }

    /// The most specific route of `tenant` serving a host and port.
    pub fn route_for(&self, tenant: TenantId, host: &str, port: u16) -> Option<RouteId> {
        let host = host::normalize(host)?;
        let route = self.tenants[tenant.0].route_index(&host, port)?;
        Some(RouteId { tenant: tenant.0, route })
    }

    /// Whether to intercept or tunnel a connection to `host:port`.
    pub fn connect_action(&self, tenant: TenantId, host: &str, port: u16) -> ConnectAction {
        match self.route_for(tenant, host, port) {
            Some(route) => ConnectAction::Intercept(Some(route)),
            None if self.proxy.egress == Egress::Deny => ConnectAction::Intercept(None),
            None => ConnectAction::Tunnel,
        }
    }

    /// The denial for a tunnel refused by `deny_private_egress`.
    pub fn private_egress_denial(&self, tenant: TenantId, host: &str, ip: std::net::IpAddr) -> Denial {
        let t = &self.tenants[tenant.0].name;
        Denial::new(
            DenialCode::PrivateEgressDenied,
            format!(
                "{host} resolves to {ip}, a loopback, private or link-local address, and no route of tenant '{t}' names it"
            ),
            format!("if {host} is meant to be reachable, ask the operator to add a route for it to tenant '{t}'"),
        )
    }

    /// Decides one request, before any upstream connection.
    pub fn decide(&self, tenant: TenantId, req: &RequestInfo<'_>) -> Decision {
        let t = &self.tenants[tenant.0];
        let host = match host::normalize(req.host) {
            Some(h) => h,
            None => {
                return Decision::Deny(Denial::new(
                    DenialCode::BadRequest,
                    "the request's host is not a valid host name",
                    "send the request to a valid host name or IP address",
                ));
            }
        };

        // 1. Placeholders, anywhere in the request. Another tenant's wins.
        let found = self.find_placeholders(req);
        if found.iter().any(|(_, r)| r.tenant != tenant.0) {
            return Decision::Deny(Denial::new(
                DenialCode::WrongTenant,
                format!("the request carries a placeholder that does not belong to tenant '{}'", t.name),
                format!(
                    "use tenant '{}''s own placeholders (`airlock env --tenant {}` lists them); \
                     a placeholder works only for the tenant it was issued to",
                    t.name, t.name
                ),
            ));
        }

        // 2. The route for this host.
        let route_id = self.route_for(tenant, &host, req.port);
        let mut injections = Vec::new();
        let mut query: Option<Vec<usize>> = None;
        for &(spot, owner) in &found {
            let owned = self.route(owner);
            if Some(owner) != route_id {
                return Decision::Deny(Denial {
                    route: Some(owner),
                    ..Denial::new(
                        DenialCode::PlaceholderHostMismatch,
                        format!(
                            "placeholder {} is for {} (route '{}'), not {}",
                            owned.placeholder,
                            owned.authority(),
                            owned.name,
                            display_authority(&host, req.port)
                        ),
                        format!("send {} only to {}", owned.placeholder, owned.authority()),
                    )
                });
            }
            // A route that signs takes its placeholder in one place only.
            let misplaced = match spot {
                Spot::HeaderName => Some("a header's name"),
                Spot::Target if !sigv4::is_presigned(req.target) => Some("the request URL"),
                Spot::Header(i) if !req.headers[i].0.eq_ignore_ascii_case("authorization") => Some("another header"),
                _ => None,
            };
            if let Some(where_) = misplaced.filter(|_| signs(owned)) {
                return Decision::Deny(Denial { route: Some(owner), ..misplaced_signing_key(owned, where_) });
            }
            match spot {
                Spot::HeaderName => {
                    return Decision::Deny(Denial {
                        route: Some(owner),
                        ..Denial::new(
                            DenialCode::PlaceholderHostMismatch,
                            format!(
                                "placeholder {} is a header's name; airlock injects only into header values",
                                owned.placeholder
                            ),
                            format!(
                                "send {} as the value of one of these headers: {}",
                                owned.placeholder,
                                owned.headers.join(", ")
                            ),
                        )
                    });
                }
                Spot::Target if signs(owned) && sigv4::is_presigned(req.target) => {
                    return Decision::Deny(Denial { route: Some(owner), ..presigned_denial(owned) });
                }
                Spot::Target => {
                    // A listed query parameter's value is the route's to
                    // swap; the target is looked at once.
                    if query.is_some() {
                        continue;
                    }
                    if let Some(pairs) = query_injections(req.target, owned) {
                        query = Some(pairs);
                        continue;
                    }
                    if !owned.query.is_empty() {
                        return Decision::Deny(Denial {
                            route: Some(owner),
                            ..Denial::new(
                                DenialCode::PlaceholderHostMismatch,
                                format!(
                                    "placeholder {} is in the request URL outside the query parameters route '{}' \
                                     swaps it in ({})",
                                    owned.placeholder,
                                    owned.name,
                                    owned.query.join(", ")
                                ),
                                format!(
                                    "send {} as it is (not percent-encoded) as the value of one of these query \
                                     parameters: {}; or in one of these headers: {}",
                                    owned.placeholder,
                                    owned.query.join(", "),
                                    owned.headers.join(", ")
                                ),
                            )
                        });
                    }
                    return Decision::Deny(Denial {
                        route: Some(owner),
                        ..Denial::new(
                            DenialCode::PlaceholderHostMismatch,
                            format!(
                                "placeholder {} is in the request URL; airlock injects only into headers",
                                owned.placeholder
                            ),
                            format!(
                                "send {} in one of these headers instead: {}",
                                owned.placeholder,
                                owned.headers.join(", ")
                            ),
                        )
                    });
                }
                Spot::Header(i) => {
                    let name = req.headers[i].0;
                    if !owned.headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                        return Decision::Deny(Denial {
                            route: Some(owner),
                            ..Denial::new(
                                DenialCode::PlaceholderHostMismatch,
                                format!(
                                    "placeholder {} is in the '{name}' header, which route '{}' does not inject into",
                                    owned.placeholder, owned.name
                                ),
                                format!(
                                    "send {} in one of these headers instead: {}",
                                    owned.placeholder,
                                    owned.headers.join(", ")
                                ),
                            )
                        });
                    }
                    if !injections.contains(&Injection { header: i }) {
                        injections.push(Injection { header: i });
                    }
                }
            }
        }

        let Some(route_id) = route_id else {
            let authority = display_authority(&host, req.port);
            return Decision::Deny(Denial::new(
                DenialCode::HostNotAllowed,
                format!("tenant '{}' has no route for {authority}", t.name),
                format!("ask the operator to add a route for {authority} to tenant '{}'", t.name),
            ));
        };
        let route = self.route(route_id);

        // 3. Method and path.
        let method = req.method;
        if !route.methods.iter().any(|m| m == method) {
            return Decision::Deny(Denial { route: Some(route_id), ..method_denial(&t.name, route, method) });
        }
        let path = req.target.split(['?', '#']).next().unwrap_or("");
        if has_dot_segment(path) {
            return Decision::Deny(Denial {
                route: Some(route_id),
                ..Denial::new(
                    DenialCode::PathNotAllowed,
                    "the path contains '.' or '..' segments, which airlock does not forward",
                    "send the request with a normalised path",
                )
            });
        }
        if !route.paths.is_empty() && !route.paths.iter().any(|g| g.matches(path)) {
            let allowed: Vec<&str> = route.paths().collect();
            return Decision::Deny(Denial {
                route: Some(route_id),
                ..Denial::new(
                    DenialCode::PathNotAllowed,
                    format!("route '{}' of tenant '{}' does not allow the path {path}", route.name, t.name),
                    format!(
                        "use a path matching {}, or ask the operator to allow {path} on route '{}' of tenant '{}'",
                        allowed.join(" or "),
                        route.name,
                        t.name
                    ),
                )
            });
        }
        if let Some(Credential::AwsSigV4(aws)) = &route.credential
            && let Err(denial) = check_signed(route, aws, req, &injections)
        {
            return Decision::Deny(Denial { route: Some(route_id), ..denial });
        }
        Decision::Allow { route: route_id, injections, query: query.unwrap_or_default() }
    }

    /// Checks one message an agent sends inside an allowed WebSocket of
    /// `route` (a frame's payload, reassembled): a placeholder of another
    /// tenant is `wrong_tenant`, one of another of this tenant's routes is
    /// `placeholder_host_mismatch`. The route's own placeholder is data and
    /// passes (airlock injects into the handshake's headers only).
    pub fn check_message(&self, tenant: TenantId, route: RouteId, payload: &[u8]) -> Result<(), Denial> {
        let t = &self.tenants[tenant.0];
        let owners = self.owners_in_text(payload);
        if owners.iter().any(|r| r.tenant != tenant.0) {
            return Err(Denial {
                route: Some(route),
                ..Denial::new(
                    DenialCode::WrongTenant,
                    format!("a WebSocket message carries a placeholder that does not belong to tenant '{}'", t.name),
                    format!(
                        "use tenant '{}''s own placeholders; a placeholder works only for the tenant it was issued to",
                        t.name
                    ),
                )
            });
        }
        if let Some(&owner) = owners.iter().find(|&&r| r != route) {
            let owned = self.route(owner);
            let here = self.route(route);
            return Err(Denial {
                route: Some(owner),
                ..Denial::new(
                    DenialCode::PlaceholderHostMismatch,
                    format!(
                        "a WebSocket message to {} carries placeholder {}, which is for {} (route '{}')",
                        here.authority(),
                        owned.placeholder,
                        owned.authority(),
                        owned.name
                    ),
                    format!("send {} only to {}", owned.placeholder, owned.authority()),
                )
            });
        }
        Ok(())
    }

    /// Checks the trailer fields of a request under `route` (names and
    /// values): airlock injects only into headers, so any placeholder there
    /// is refused — another tenant's as `wrong_tenant`, any other as
    /// `placeholder_host_mismatch` — and the request is not completed.
    pub fn check_trailers(&self, tenant: TenantId, route: RouteId, fields: &[(&str, &[u8])]) -> Result<(), Denial> {
        let t = &self.tenants[tenant.0];
        let mut owners = Vec::new();
        for (name, value) in fields {
            owners.extend(self.owners_in_name(name));
            owners.extend(self.owners_in_value(value));
        }
        if owners.iter().any(|r| r.tenant != tenant.0) {
            return Err(Denial {
                route: Some(route),
                ..Denial::new(
                    DenialCode::WrongTenant,
                    format!("the request's trailer carries a placeholder that does not belong to tenant '{}'", t.name),
                    format!("use tenant '{}''s own placeholders, in headers", t.name),
                )
            });
        }
        if let Some(&owner) = owners.first() {
            let owned = self.route(owner);
            return Err(Denial {
                route: Some(owner),
                ..Denial::new(
                    DenialCode::PlaceholderHostMismatch,
                    format!(
                        "placeholder {} is in the request's trailer; airlock injects only into headers",
                        owned.placeholder
                    ),
                    format!("send {} in one of these headers instead: {}", owned.placeholder, owned.headers.join(", ")),
                )
            });
        }
        Ok(())
    }

    /// Every placeholder in the headers (names; values raw and inside Basic
    /// credentials) and the request target, with the route owning it.
    fn find_placeholders(&self, req: &RequestInfo<'_>) -> Vec<(Spot, RouteId)> {
        let mut found = Vec::new();
        for (name, _) in req.headers {
            found.extend(self.owners_in_name(name).map(|r| (Spot::HeaderName, r)));
        }
        for (i, (_, value)) in req.headers.iter().enumerate() {
            found.extend(self.owners_in_value(value).into_iter().map(|r| (Spot::Header(i), r)));
        }
        found.extend(self.owners_in_text(req.target.as_bytes()).into_iter().map(|r| (Spot::Target, r)));
        found
    }

    /// The route owning each placeholder in `bytes`, as written.
    fn owners<'a>(&'a self, bytes: &'a [u8]) -> impl Iterator<Item = RouteId> + 'a {
        self.placeholders.find_iter(bytes).map(|m| self.placeholder_routes[m.pattern().as_usize()])
    }

    /// The owners of the placeholders in a header name, whatever their case
    /// (HTTP lower-cases names).
    fn owners_in_name<'a>(&'a self, name: &'a str) -> impl Iterator<Item = RouteId> + 'a {
        self.placeholder_names.find_iter(name.as_bytes()).map(|m| self.placeholder_routes[m.pattern().as_usize()])
    }

    /// The owners of the placeholders in a field value: as written, and
    /// inside `Basic` credentials.
    fn owners_in_value(&self, value: &[u8]) -> Vec<RouteId> {
        let mut owners: Vec<RouteId> = self.owners(value).collect();
        if let Some(decoded) = basic_credentials(value) {
            owners.extend(self.owners(&decoded));
        }
        owners
    }

    /// The owners of the placeholders in text such as a URL or a message:
    /// as written, and percent-decoded.
    fn owners_in_text(&self, text: &[u8]) -> Vec<RouteId> {
        let mut owners: Vec<RouteId> = self.owners(text).collect();
        if text.contains(&b'%') {
            owners.extend(self.owners(&percent_decode(text)));
        }
        owners
    }
}

/// The query pairs (indices of the `&`-separated pairs) in which `route`'s
/// placeholder may be swapped: Some only when every occurrence of it in
/// `target` — as written or percent-decoded — is written as it is in the
/// value of a parameter the route lists (`route.query`), among unreserved
/// characters only; None when it is anywhere else (the path, a name,
/// another parameter, the fragment, percent-encoded, or beside a `;`, `%`
/// or other delimiter some upstream might split on), or the route lists
/// none.
fn query_injections(target: &str, route: &Route) -> Option<Vec<usize>> {
    if route.query.is_empty() {
        return None;
    }
    let placeholder = route.placeholder.as_bytes();
    let count = |text: &[u8]| text.windows(placeholder.len()).filter(|w| *w == placeholder).count();
    // Occurrences as written, and once percent-decoded (a `%` before one
    // can hide it from the second).
    let counts = |text: &str| (count(text.as_bytes()), count(&percent_decode(text.as_bytes())));
    let anywhere = |text: &str| counts(text) != (0, 0);
    let (url, fragment) = target.split_once('#').unwrap_or((target, ""));
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    if anywhere(path) || anywhere(fragment) {
        return None;
    }
    let mut pairs = Vec::new();
    for (i, pair) in query.split('&').enumerate() {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if anywhere(name) {
            return None;
        }
        let (raw, decoded) = counts(value);
        if (raw, decoded) == (0, 0) {
            continue;
        }
        let decoded_name = percent_decode(name.as_bytes());
        let listed = route.query.iter().any(|q| q.as_bytes() == decoded_name.as_slice());
        // Every occurrence as written: one percent-encoded would not be
        // swapped.
        if !listed || raw != decoded {
            return None;
        }
        // Around the placeholder, unreserved characters only (RFC 3986
        // §2.3): an upstream that also splits on `;`, or decodes twice,
        // could read `key=x;other=PLACEHOLDER` as another parameter.
        let rest = value.replace(route.placeholder.as_str(), "");
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
            return None;
        }
        pairs.push(i);
    }
    Some(pairs)
}

fn method_denial(tenant: &str, route: &Route, method: &str) -> Denial {
    if method.eq_ignore_ascii_case("CONNECT") {
        return Denial::new(
            DenialCode::MethodNotAllowed,
            "CONNECT is not served inside an intercepted connection",
            "open a separate connection to the proxy (CONNECT from there) for another destination",
        );
    }
    let read_only = route.methods.iter().all(|m| matches!(m.as_str(), "GET" | "HEAD" | "OPTIONS"));
    let step = if read_only {
        format!(
            "this route is read-only; ask the operator to enable {method} for route '{}' of tenant '{tenant}'",
            route.name
        )
    } else {
        format!(
            "route '{}' allows {}; ask the operator to enable {method} for route '{}' of tenant '{tenant}'",
            route.name,
            route.methods.join(", "),
            route.name
        )
    };
    Denial::new(
        DenialCode::MethodNotAllowed,
        format!("route '{}' of tenant '{tenant}' does not allow {method}", route.name),
        step,
    )
}

fn display_authority(host: &str, port: u16) -> String {
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
    if port == host::DEFAULT_PORT { host } else { format!("{host}:{port}") }
}

/// Whether a path has a `.` or `..` segment: literally, percent-encoded
/// (also twice over, `%252e`), or followed by `;` parameters (`..;/`, which
/// Tomcat, Jetty and Spring read as `../`). A path still changing after
/// three rounds of percent-decoding is treated as one.
fn has_dot_segment(path: &str) -> bool {
    let is_dot = |text: &[u8]| {
        text.split(|&b| b == b'/' || b == b'\\').any(|seg| {
            let seg = seg.split(|&b| b == b';').next().unwrap_or(seg);
            seg == b"." || seg == b".."
        })
    };
    let mut text = path.as_bytes().to_vec();
    for _ in 0..3 {
        if is_dot(&text) {
            return true;
        }
        let decoded = percent_decode(&text);
        if decoded == text {
            return false;
        }
        text = decoded;
    }
    true
}

/// Whether `route` signs requests (`aws_sigv4`) rather than swapping its
/// placeholder.
fn signs(route: &Route) -> bool {
    matches!(route.credential, Some(Credential::AwsSigV4(_)))
}

/// The refusal of a presigned URL on `route`, a route that signs.
fn presigned_denial(route: &Route) -> Denial {
    Denial::new(
        DenialCode::PresignedUrlRefused,
        format!(
            "the request is a presigned URL (X-Amz-Signature, X-Amz-Credential or X-Amz-Algorithm in the query); \
             route '{}' signs requests in their Authorization header only",
            route.name
        ),
        format!(
            "call the API directly with the SDK (access key id {}), so the request is signed in its headers; \
             airlock does not sign URLs that could be used without it",
            route.placeholder
        ),
    )
}

/// The headers in which S3 names an object a request reads besides its
/// own: `x-amz-copy-source` (CopyObject, UploadPartCopy) and
/// `x-amz-rename-source` (RenameObject, directory buckets).
const S3_SOURCE_HEADERS: [&str; 2] = ["x-amz-copy-source", "x-amz-rename-source"];

/// How an S3 host names the bucket a request's path is in.
#[derive(Debug, PartialEq, Eq)]
enum S3Host<'a> {
    /// Path-style (`s3.eu-west-1.amazonaws.com`, a custom endpoint): the
    /// path begins with the bucket.
    PathStyle,
    /// Virtual-hosted (`reports.s3.eu-west-1.amazonaws.com`,
    /// `b--euw1-az1--x-s3.s3express-euw1-az1.eu-west-1.amazonaws.com`): the
    /// host names the bucket.
    Virtual(&'a str),
    /// An access point, Object Lambda, Outposts or PrivateLink host, whose
    /// sources name resources in forms not read here.
    Other,
}

fn s3_host(host: &str) -> S3Host<'_> {
    let other = [".s3-accesspoint", ".s3-object-lambda", ".s3-outposts", ".vpce."];
    if other.iter().any(|o| host.contains(o)) {
        return S3Host::Other;
    }
    if let Some(i) = host.find(".s3express-").filter(|i| *i > 0) {
        return S3Host::Virtual(&host[..i]);
    }
    if host.starts_with("s3.") || host.starts_with("s3-") || host.starts_with("s3express") {
        return S3Host::PathStyle;
    }
    match host.find(".s3.").or_else(|| host.find(".s3-")) {
        Some(i) if i > 0 => S3Host::Virtual(&host[..i]),
        _ => S3Host::PathStyle,
    }
}

/// Checks the objects an S3 request to `route` reads besides its own
/// ([`S3_SOURCE_HEADERS`]: `bucket/key`, percent-encoded, maybe with
/// `?versionId=`) as its own path is checked: on a virtual-hosted route,
/// from the host's bucket only; on a route held to `paths`, from one of
/// them (as a path of the route's host); never with dot segments.
fn check_s3_sources(route: &Route, req: &RequestInfo<'_>) -> Result<(), Denial> {
    let host = req.host.trim_end_matches('.').to_ascii_lowercase();
    let kind = s3_host(&host);
    for (name, value) in req.headers {
        let Some(header) = S3_SOURCE_HEADERS.iter().find(|h| name.eq_ignore_ascii_case(h)) else { continue };
        let decoded = percent_decode(value.split(|b| *b == b'?').next().unwrap_or(value));
        let text = String::from_utf8_lossy(&decoded);
        let source = text.strip_prefix('/').unwrap_or(&text);
        // As a path of this route's host.
        let path = match kind {
            S3Host::PathStyle => Some(format!("/{source}")),
            S3Host::Virtual(b) => {
                source.strip_prefix(b).and_then(|rest| rest.strip_prefix('/')).map(|key| format!("/{key}"))
            }
            S3Host::Other => None,
        };
        let allowed = path
            .as_deref()
            .filter(|p| !has_dot_segment(p) && (route.paths.is_empty() || route.paths.iter().any(|g| g.matches(p))));
        if allowed.is_none() {
            let within = match (&kind, route.paths.is_empty()) {
                (S3Host::Virtual(b), true) => format!("bucket {b}"),
                (S3Host::Virtual(b), false) => {
                    format!("bucket {b}, under {}", route.paths().collect::<Vec<_>>().join(" or "))
                }
                (S3Host::PathStyle, _) => route.paths().collect::<Vec<_>>().join(" or "),
                (S3Host::Other, _) => "nothing: sources through this host are not read by airlock".to_owned(),
            };
            return Err(Denial::new(
                DenialCode::PathNotAllowed,
                format!("the request reads /{source} ({header}), outside what route '{}' allows: {within}", route.name),
                format!("name a source object within {within}, without '.' or '..' segments"),
            ));
        }
    }
    Ok(())
}

/// The refusal of `route`'s placeholder (a route that signs) found
/// `where_` it is not a SigV4 access key id.
fn misplaced_signing_key(route: &Route, where_: &str) -> Denial {
    Denial::new(
        DenialCode::PlaceholderHostMismatch,
        format!(
            "route '{}' signs requests with AWS SigV4; placeholder {} goes only as the access key id of a SigV4 \
             Authorization header, not in {where_}",
            route.name, route.placeholder
        ),
        format!(
            "sign the request with an AWS SDK using access key id {} and any secret access key (`airlock run` \
             sets AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
            route.placeholder
        ),
    )
}

/// Checks a request to `route`, whose credential `aws` signs: not a
/// presigned URL, and its placeholder only as the access key id of a SigV4
/// `Authorization` header scoped to the credential's region and service.
/// A request without the placeholder is not signed by airlock and passes.
fn check_signed(route: &Route, aws: &AwsSigV4, req: &RequestInfo<'_>, injections: &[Injection]) -> Result<(), Denial> {
    if sigv4::is_presigned(req.target) {
        return Err(presigned_denial(route));
    }
    if aws.service.starts_with("s3") {
        check_s3_sources(route, req)?;
    }
    for inj in injections {
        let (name, value) = req.headers[inj.header];
        let parsed = name.eq_ignore_ascii_case("authorization").then(|| SigV4Authorization::parse(value)).flatten();
        let Some(auth) = parsed.filter(|a| a.access_key_id == route.placeholder) else {
            return Err(misplaced_signing_key(route, &format!("the '{name}' header as sent")));
        };
        if auth.region != aws.region || auth.service != aws.service {
            // The agent's words, echoed only when they are a scope's.
            let shown = |part: &'_ str| {
                let plain =
                    part.len() <= 64 && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if plain { part.to_owned() } else { "(not a region or service name)".to_owned() }
            };
            let (region, service) = (shown(auth.region), shown(auth.service));
            return Err(Denial::new(
                DenialCode::CredentialScopeMismatch,
                format!(
                    "the request is signed for region '{}' and service '{}'; route '{}' signs for region '{}' and \
                     service '{}' only",
                    region, service, route.name, aws.region, aws.service
                ),
                format!(
                    "sign for region {} (set AWS_REGION={}) and service {}, or ask the operator for a route that \
                     signs for {}/{}",
                    aws.region, aws.region, aws.service, region, service
                ),
            ));
        }
    }
    Ok(())
}

/// `input` percent-decoded once; a `%` not followed by two hex digits stays
/// as written.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    percent_encoding::percent_decode(input).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    const CONFIG: &str = r#"
[secrets.callrail]
source = "env"
var = "CALLRAIL"
[secrets.wild]
source = "env"
var = "WILD"
[secrets.b]
source = "env"
var = "B"

[tenants.acme]
token = "acme-token-0123456789"
[[tenants.acme.routes]]
name = "callrail"
host = "api.callrail.com"
secret = "callrail"
placeholder = "AIRLOCK_CALLRAIL"
headers = ["authorization"]
paths = ["/v3/a/*"]
[[tenants.acme.routes]]
name = "wild"
host = "*.example.com"
secret = "wild"
placeholder = "AIRLOCK_WILD"
methods = ["GET", "POST"]
[[tenants.acme.routes]]
name = "local"
host = "127.0.0.1:8443"
secret = "wild"
placeholder = "AIRLOCK_LOCAL"
[[tenants.acme.routes]]
name = "v6"
host = "[::1]"
secret = "wild"
placeholder = "AIRLOCK_V6"
[[tenants.acme.routes]]
name = "idn"
host = "xn--bcher-kva.example"
secret = "wild"
placeholder = "AIRLOCK_IDN"
[[tenants.acme.routes]]
name = "maps"
host = "maps.test"
secret = "wild"
placeholder = "AIRLOCK_MAPS"
query = ["key", "access_token"]

[tenants.beta]
token = "beta-token-0123456789"
[[tenants.beta.routes]]
name = "b"
host = "api.beta.test"
secret = "b"
placeholder = "AIRLOCK_BETA"
"#;

    fn policy() -> Policy {
        Policy::from_toml(CONFIG, "test", Path::new("/"), Path::new("/")).unwrap()
    }

    #[test]
    fn s3_hosts_are_read_as_s3_reads_them() {
        for (host, want) in [
            ("s3.eu-west-1.amazonaws.com", S3Host::PathStyle),
            ("s3-eu-west-1.amazonaws.com", S3Host::PathStyle),
            ("s3.dualstack.eu-west-1.amazonaws.com", S3Host::PathStyle),
            ("minio.internal", S3Host::PathStyle),
            ("bkt.s3.eu-west-1.amazonaws.com", S3Host::Virtual("bkt")),
            ("my.bkt.s3.dualstack.eu-west-1.amazonaws.com", S3Host::Virtual("my.bkt")),
            ("bkt.s3-accelerate.amazonaws.com", S3Host::Virtual("bkt")),
            ("bkt.s3-eu-west-1.amazonaws.com", S3Host::Virtual("bkt")),
            ("b--euw1-az1--x-s3.s3express-euw1-az1.eu-west-1.amazonaws.com", S3Host::Virtual("b--euw1-az1--x-s3")),
            ("s3express-control.eu-west-1.amazonaws.com", S3Host::PathStyle),
            ("ap-123456789012.s3-accesspoint.eu-west-1.amazonaws.com", S3Host::Other),
            ("bkt.bucket.vpce-1.s3.eu-west-1.vpce.amazonaws.com", S3Host::Other),
        ] {
            assert_eq!(s3_host(host), want, "{host}");
        }
    }

    #[test]
    fn a_signing_route_takes_its_placeholder_only_as_the_key_id_of_a_sigv4_header_in_its_scope() {
        let config = format!(
            "{CONFIG}\n[secrets.aws_id]\nsource = \"env\"\nvar = \"AWS_ID\"\n[secrets.aws_key]\nsource = \"env\"\n\
             var = \"AWS_KEY\"\n[[tenants.acme.routes]]\nname = \"s3\"\nhost = \"s3.eu-west-1.amazonaws.com\"\n\
             placeholder = \"AIRLOCK_AWS\"\nmethods = [\"GET\", \"PUT\"]\npaths = [\"/b/*\"]\ncredential = {{ kind = \"aws_sigv4\", \
             access_key_id = \"aws_id\", secret_access_key = \"aws_key\", region = \"eu-west-1\", service = \"s3\" }}\n\
             [[tenants.acme.routes]]\nname = \"vh\"\nhost = \"bkt.s3.eu-west-1.amazonaws.com\"\n\
             placeholder = \"AIRLOCK_VHOST\"\nmethods = [\"PUT\"]\npaths = [\"/public/*\"]\ncredential = {{ kind = \
             \"aws_sigv4\", access_key_id = \"aws_id\", secret_access_key = \"aws_key\", region = \"eu-west-1\", \
             service = \"s3\" }}\n"
        );
        let p = Policy::from_toml(&config, "test", Path::new("/"), Path::new("/")).unwrap();
        let (acme, _) = p.tenant_by_name("acme").unwrap();
        let (beta, _) = p.tenant_by_name("beta").unwrap();
        let sigv4 = |key: &str, scope: &str| {
            format!(
                "AWS4-HMAC-SHA256 Credential={key}/20261130/{scope}/aws4_request, \
                 SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}",
                "0".repeat(64)
            )
        };
        let host = "s3.eu-west-1.amazonaws.com";
        /// (method, target, headers) → Ok(injected header indices) or Err(code).
        type SignedCase<'a> = (&'a str, &'a str, Vec<(&'a str, String)>, Result<Vec<usize>, DenialCode>);
        let cases: Vec<SignedCase<'_>> = vec![
            ("GET", "/b/k", vec![("authorization", sigv4("AIRLOCK_AWS", "eu-west-1/s3"))], Ok(vec![0])),
            ("PUT", "/b/k?x=1", vec![("authorization", sigv4("AIRLOCK_AWS", "eu-west-1/s3"))], Ok(vec![0])),
            // Unsigned (anonymous) requests are the agent's own.
            ("GET", "/b/k", vec![], Ok(vec![])),
            (
                "GET",
                "/b/k",
                vec![("authorization", sigv4("AIRLOCK_AWS", "us-east-1/s3"))],
                Err(DenialCode::CredentialScopeMismatch),
            ),
            (
                "GET",
                "/b/k",
                vec![("authorization", sigv4("AIRLOCK_AWS", "eu-west-1/sqs"))],
                Err(DenialCode::CredentialScopeMismatch),
            ),
            // Presigned: with the placeholder in the query, or with none.
            (
                "GET",
                "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AIRLOCK_AWS%2F20261130%2Feu-west-1%2Fs3",
                vec![],
                Err(DenialCode::PresignedUrlRefused),
            ),
            ("GET", "/b/k?X-Amz-Signature=00", vec![], Err(DenialCode::PresignedUrlRefused)),
            // Anywhere but a SigV4 key id.
            (
                "GET",
                "/b/k",
                vec![("authorization", "Bearer AIRLOCK_AWS".into())],
                Err(DenialCode::PlaceholderHostMismatch),
            ),
            ("GET", "/b/k", vec![("x-api-key", "AIRLOCK_AWS".into())], Err(DenialCode::PlaceholderHostMismatch)),
            (
                "GET",
                "/b/k",
                vec![("authorization", sigv4("xAIRLOCK_AWS", "eu-west-1/s3"))],
                Err(DenialCode::PlaceholderHostMismatch),
            ),
            ("GET", "/b/AIRLOCK_AWS", vec![], Err(DenialCode::PlaceholderHostMismatch)),
            (
                "GET",
                "/b/k",
                vec![("authorization", sigv4("AIRLOCK_AWS", "eu-west-1/s3")), ("x-api-key", "AIRLOCK_BETA".into())],
                Err(DenialCode::WrongTenant),
            ),
            (
                "POST",
                "/b/k",
                vec![("authorization", sigv4("AIRLOCK_AWS", "eu-west-1/s3"))],
                Err(DenialCode::MethodNotAllowed),
            ),
        ];
        for (method, target, headers, want) in cases {
            let fields: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
            let info = RequestInfo { method, host, port: 443, target, headers: &fields };
            let got = match p.decide(acme, &info) {
                Decision::Allow { route, injections, .. } => {
                    assert_eq!(p.route(route).name, "s3");
                    Ok(injections.iter().map(|i| i.header).collect())
                }
                Decision::Deny(d) => {
                    assert!(!d.message.is_empty() && !d.next_step.is_empty());
                    if d.code == DenialCode::PlaceholderHostMismatch && !headers.iter().any(|(_, v)| v.contains("BETA"))
                    {
                        // Never the advice of a route that swaps (which
                        // headers to put it in).
                        assert!(d.next_step.contains("AWS SDK"), "{target} {headers:?}: {}", d.next_step);
                    }
                    Err(d.code)
                }
            };
            assert_eq!(got, want, "{method} {target} {headers:?}");
        }
        // A virtual-hosted route: a copy or rename reads from its bucket,
        // under its paths, only.
        for (source, allowed) in [
            ("bkt/public/report.csv", true),
            ("/bkt/public/a%20b.csv?versionId=3", true),
            ("public/payroll.csv", false),
            ("other/public/x", false),
            ("bkt/private/x", false),
            ("bkt/public/../private/x", false),
            ("bkt/public/%2e%2e/private/x", false),
            ("bkt%2Fpublic%2F..%2Fprivate%2Fx", false),
        ] {
            for header in ["x-amz-copy-source", "X-Amz-Rename-Source"] {
                let fields = [
                    ("authorization".to_owned(), sigv4("AIRLOCK_VHOST", "eu-west-1/s3")),
                    (header.to_owned(), source.to_owned()),
                ];
                let fields: Vec<(&str, &[u8])> = fields.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
                let info = RequestInfo {
                    method: "PUT",
                    host: "bkt.s3.eu-west-1.amazonaws.com",
                    port: 443,
                    target: "/public/copy.csv",
                    headers: &fields,
                };
                let got = match p.decide(acme, &info) {
                    Decision::Allow { .. } => true,
                    Decision::Deny(d) => {
                        assert_eq!(d.code, DenialCode::PathNotAllowed, "{source}: {}", d.message);
                        false
                    }
                };
                assert_eq!(got, allowed, "{header}: {source}");
            }
        }
        // Another tenant using the placeholder.
        let fields = [("authorization", sigv4("AIRLOCK_AWS", "eu-west-1/s3"))];
        let fields: Vec<(&str, &[u8])> = fields.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        let info = RequestInfo { method: "GET", host, port: 443, target: "/", headers: &fields };
        assert!(matches!(p.decide(beta, &info), Decision::Deny(d) if d.code == DenialCode::WrongTenant));
    }

    fn basic(user: &str, pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")))
    }

    /// (method, host, port, target, headers) → Ok(route name, injected
    /// header indices) or Err(code).
    type Case<'a> = (&'a str, &'a str, u16, &'a str, Vec<(&'a str, String)>, Result<(&'a str, Vec<usize>), DenialCode>);

    #[test]
    fn decide_table() {
        use DenialCode::*;
        let p = policy();
        let (acme, _) = p.tenant_by_name("acme").unwrap();
        let auth = |v: &str| vec![("authorization", v.to_owned())];
        let cases: Vec<Case<'_>> = vec![
            // allow paths
            (
                "GET",
                "api.callrail.com",
                443,
                "/v3/a/1/calls.json",
                auth("Bearer AIRLOCK_CALLRAIL"),
                Ok(("callrail", vec![0])),
            ),
            ("GET", "API.CallRail.com.", 443, "/v3/a/1?x=1", auth("Token AIRLOCK_CALLRAIL"), Ok(("callrail", vec![0]))),
            ("HEAD", "api.callrail.com", 443, "/v3/a/", vec![], Ok(("callrail", vec![]))),
            (
                "GET",
                "api.callrail.com",
                443,
                "/v3/a/x",
                auth(&basic("AIRLOCK_CALLRAIL", "")),
                Ok(("callrail", vec![0])),
            ),
            ("GET", "a.example.com", 443, "/", vec![("x-api-key", "AIRLOCK_WILD".into())], Ok(("wild", vec![0]))),
            ("POST", "a.b.example.com", 443, "/", auth("AIRLOCK_WILD"), Ok(("wild", vec![0]))),
            ("GET", "127.0.0.1", 8443, "/", auth("AIRLOCK_LOCAL"), Ok(("local", vec![0]))),
            ("GET", "[::1]", 443, "/", auth("AIRLOCK_V6"), Ok(("v6", vec![0]))),
            ("GET", "xn--bcher-kva.example", 443, "/", vec![], Ok(("idn", vec![]))),
            // host
            ("GET", "example.com", 443, "/", vec![], Err(HostNotAllowed)),
            ("GET", "evil-example.com", 443, "/", vec![], Err(HostNotAllowed)),
            ("GET", "api.callrail.com", 8443, "/v3/a/1", vec![], Err(HostNotAllowed)),
            ("GET", "127.0.0.1", 443, "/", vec![], Err(HostNotAllowed)),
            ("GET", "bücher.example", 443, "/", vec![], Err(BadRequest)),
            // method and path
            ("POST", "api.callrail.com", 443, "/v3/a/1", vec![], Err(MethodNotAllowed)),
            ("DELETE", "a.example.com", 443, "/", vec![], Err(MethodNotAllowed)),
            ("GET", "api.callrail.com", 443, "/v2/a/1", vec![], Err(PathNotAllowed)),
            ("GET", "api.callrail.com", 443, "/v3/a/../../admin", vec![], Err(PathNotAllowed)),
            ("GET", "api.callrail.com", 443, "/v3/a/%2e%2E/admin", vec![], Err(PathNotAllowed)),
            ("GET", "api.callrail.com", 443, "/v3/a/..;/admin", vec![], Err(PathNotAllowed)),
            ("GET", "api.callrail.com", 443, "/v3/a/..;jsessionid=1/admin", vec![], Err(PathNotAllowed)),
            ("GET", "api.callrail.com", 443, "/v3/a/%252e%252e/admin", vec![], Err(PathNotAllowed)),
            ("GET", "api.callrail.com", 443, "/v3/a/%25252e%25252e%25252f/admin", vec![], Err(PathNotAllowed)),
            ("GET", "api.callrail.com", 443, "/v3/a/x;y=1/calls", vec![], Ok(("callrail", vec![]))),
            // placeholders
            ("GET", "a.example.com", 443, "/", auth("Bearer AIRLOCK_CALLRAIL"), Err(PlaceholderHostMismatch)),
            ("GET", "api.stripe.com", 443, "/", auth("Bearer AIRLOCK_CALLRAIL"), Err(PlaceholderHostMismatch)),
            (
                "GET",
                "api.callrail.com",
                443,
                "/v3/a/1",
                vec![("x-api-key", "AIRLOCK_CALLRAIL".into())],
                Err(PlaceholderHostMismatch),
            ),
            (
                "GET",
                "api.callrail.com",
                443,
                "/v3/a/1",
                vec![("cookie", "k=AIRLOCK_CALLRAIL".into())],
                Err(PlaceholderHostMismatch),
            ),
            ("GET", "api.callrail.com", 443, "/v3/a/1?key=AIRLOCK_CALLRAIL", vec![], Err(PlaceholderHostMismatch)),
            ("GET", "api.callrail.com", 443, "/v3/a/1?key=AIRLOCK%5FCALLRAIL", vec![], Err(PlaceholderHostMismatch)),
            ("GET", "api.callrail.com", 443, "/v3/a/1", auth("Bearer AIRLOCK_BETA"), Err(WrongTenant)),
            ("GET", "api.beta.test", 443, "/", auth("Bearer AIRLOCK_BETA"), Err(WrongTenant)),
            ("GET", "unrouted.test", 443, "/", auth(&basic("x", "AIRLOCK_BETA")), Err(WrongTenant)),
            // wrong_tenant wins over every other code
            (
                "DELETE",
                "nowhere.test",
                1,
                "/../x",
                vec![("x-other", "AIRLOCK_CALLRAIL AIRLOCK_BETA".into())],
                Err(WrongTenant),
            ),
        ];
        for (method, host, port, target, headers, want) in cases {
            let hs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
            let req = RequestInfo { method, host, port, target, headers: &hs };
            let got = match p.decide(acme, &req) {
                Decision::Allow { route, injections, .. } => {
                    Ok((p.route(route).name.as_str(), injections.iter().map(|i| i.header).collect()))
                }
                Decision::Deny(d) => {
                    assert!(!d.message.is_empty() && !d.next_step.is_empty());
                    Err(d.code)
                }
            };
            assert_eq!(got, want, "{method} {host}:{port}{target} {headers:?}");
        }
    }

    #[test]
    fn denials_tell_the_agent_what_to_do() {
        let p = policy();
        let (acme, _) = p.tenant_by_name("acme").unwrap();
        let req = RequestInfo { method: "POST", host: "api.callrail.com", port: 443, target: "/v3/a/1", headers: &[] };
        let Decision::Deny(d) = p.decide(acme, &req) else { panic!("allowed") };
        assert_eq!(
            d.next_step,
            "this route is read-only; ask the operator to enable POST for route 'callrail' of tenant 'acme'"
        );
        let req = RequestInfo { method: "GET", host: "api.stripe.com", port: 443, target: "/", headers: &[] };
        let Decision::Deny(d) = p.decide(acme, &req) else { panic!("allowed") };
        assert_eq!(d.message, "tenant 'acme' has no route for api.stripe.com");
        assert_eq!(d.next_step, "ask the operator to add a route for api.stripe.com to tenant 'acme'");
    }

    #[test]
    fn authenticates_tenants() {
        let p = policy();
        let ok = basic("acme", "acme-token-0123456789");
        assert_eq!(p.authenticate(Some(ok.as_bytes())).map(|t| p.tenant(t).name.as_str()), Ok("acme"));
        assert_eq!(p.authenticate(None), Err(AuthError::Missing));
        assert_eq!(p.authenticate(Some(b"Bearer x")), Err(AuthError::Missing));
        for (u, t) in [
            ("acme", "beta-token-0123456789"),
            ("nobody", "acme-token-0123456789"),
            ("acme", ""),
            ("acme", "acme-token-012345678"),
        ] {
            assert_eq!(p.authenticate(Some(basic(u, t).as_bytes())), Err(AuthError::Unknown), "{u}:{t}");
        }
        assert_eq!(
            p.authenticate(Some(format!("Basic {}", STANDARD.encode("acme")).as_bytes())),
            Err(AuthError::Unknown)
        );
    }

    #[test]
    fn connect_actions() {
        let p = policy();
        let (acme, _) = p.tenant_by_name("acme").unwrap();
        assert!(matches!(p.connect_action(acme, "api.callrail.com", 443), ConnectAction::Intercept(Some(_))));
        assert_eq!(p.connect_action(acme, "api.beta.test", 443), ConnectAction::Tunnel);
        let deny = CONFIG.replace("[secrets.callrail]", "[proxy]\negress = \"deny\"\n[secrets.callrail]");
        let p = Policy::from_toml(&deny, "test", Path::new("/"), Path::new("/")).unwrap();
        assert_eq!(p.connect_action(acme, "api.beta.test", 443), ConnectAction::Intercept(None));
    }

    #[test]
    fn the_most_specific_route_serves_a_host() {
        let mut config = String::from(
            "[secrets.k]\nsource = \"env\"\nvar = \"K\"\n[tenants.acme]\ntoken = \"acme-token-0123456789\"\n",
        );
        for (name, host) in [
            ("short", "*.example.com"),
            ("long", "*.api.example.com"),
            ("exact", "v1.api.example.com"),
            ("other-port", "v1.api.example.com:8443"),
            ("elsewhere", "other.test"),
        ] {
            config.push_str(&format!(
                "[[tenants.acme.routes]]\nname = \"{name}\"\nhost = \"{host}\"\nsecret = \"k\"\nplaceholder = \"AIRLOCK_{}\"\n",
                name.to_uppercase().replace('-', "_")
            ));
        }
        let p = Policy::from_toml(&config, "test", Path::new("/"), Path::new("/")).unwrap();
        let (acme, _) = p.tenant_by_name("acme").unwrap();
        let route = |host: &str, port: u16| p.route_for(acme, host, port).map(|r| p.route(r).name.as_str());
        assert_eq!(route("v1.api.example.com", 443), Some("exact"));
        assert_eq!(route("V1.API.example.com.", 443), Some("exact"));
        assert_eq!(route("v1.api.example.com", 8443), Some("other-port"));
        assert_eq!(route("v2.api.example.com", 443), Some("long"));
        assert_eq!(route("www.example.com", 443), Some("short"));
        assert_eq!(route("example.com", 443), None);
        assert_eq!(route("www.example.com", 8443), None);
        assert_eq!(route("other.test", 443), Some("elsewhere"));
        assert_eq!(route("nowhere.test", 443), None);
    }

    #[test]
    fn placeholders_in_header_names_and_trailers_are_refused() {
        let p = policy();
        let acme = p.tenant_by_name("acme").unwrap().0;
        let headers: Vec<(&str, &[u8])> = vec![("airlock_wild", b"1")];
        let req = RequestInfo { method: "GET", host: "x.example.com", port: 443, target: "/", headers: &headers };
        let Decision::Deny(d) = p.decide(acme, &req) else { panic!("allowed") };
        assert_eq!(d.code, DenialCode::PlaceholderHostMismatch);
        let callrail = p.route_for(acme, "api.callrail.com", 443).unwrap();
        let check = |fields: &[(&str, &[u8])]| p.check_trailers(acme, callrail, fields).map_err(|d| d.code);
        assert_eq!(check(&[("x-ok", b"fine")]), Ok(()));
        assert_eq!(check(&[("x-t", b"Bearer AIRLOCK_CALLRAIL")]), Err(DenialCode::PlaceholderHostMismatch));
        assert_eq!(check(&[("x-t", b"AIRLOCK_BETA")]), Err(DenialCode::WrongTenant));
        assert_eq!(check(&[("airlock_beta", b"1")]), Err(DenialCode::WrongTenant), "a name, lower-cased");
    }

    #[test]
    fn percent_decoding_leaves_every_invalid_escape_as_written() {
        let cases: [(&[u8], &[u8]); 18] = [
            (b"", b""),
            (b"%", b"%"),
            (b"%4", b"%4"),
            (b"a%2", b"a%2"),
            (b"%zz", b"%zz"),
            (b"%g1", b"%g1"),
            (b"%1g", b"%1g"),
            (b"%%41", b"%A"),
            (b"%4%41", b"%4A"),
            (b"%%%", b"%%%"),
            (b"%41%", b"A%"),
            (b"%4a%4A", b"JJ"),
            (b"%2e%2E", b".."),
            (b"%252e", b"%2e"),
            (b"%00%ff", b"\x00\xff"),
            (b"%\xc3\xa9", b"%\xc3\xa9"),
            (b"%+1", b"%+1"),
            (b"a%20b%2", b"a b%2"),
        ];
        for (input, want) in cases {
            assert_eq!(percent_decode(input), want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn websocket_messages_keep_placeholders_inside_their_route() {
        let p = policy();
        let acme = p.tenant_by_name("acme").unwrap().0;
        let callrail = p.route_for(acme, "api.callrail.com", 443).unwrap();
        let check = |payload: &str| p.check_message(acme, callrail, payload.as_bytes()).map_err(|d| d.code);
        assert_eq!(check("{\"key\": \"AIRLOCK_CALLRAIL\"}"), Ok(()), "the route's own placeholder is data");
        assert_eq!(check("plain text"), Ok(()));
        assert_eq!(check("send AIRLOCK_WILD along"), Err(DenialCode::PlaceholderHostMismatch));
        assert_eq!(check("AIRLOCK%5FWILD"), Err(DenialCode::PlaceholderHostMismatch), "percent-encoded");
        assert_eq!(check("AIRLOCK_WILD and AIRLOCK_BETA"), Err(DenialCode::WrongTenant), "wrong tenant wins");
    }

    #[test]
    fn the_placeholder_is_swapped_only_in_the_query_parameters_a_route_lists() {
        let p = policy();
        let (acme, _) = p.tenant_by_name("acme").unwrap();
        let decide = |target: &str| {
            let req = RequestInfo { method: "GET", host: "maps.test", port: 443, target, headers: &[] };
            match p.decide(acme, &req) {
                Decision::Allow { route, injections, query } => {
                    assert!(injections.is_empty());
                    assert_eq!(p.route(route).name, "maps");
                    Ok(query)
                }
                Decision::Deny(d) => Err(d.code),
            }
        };
        use DenialCode::{PlaceholderHostMismatch as Mismatch, WrongTenant};
        let cases: [(&str, Result<Vec<usize>, DenialCode>); 23] = [
            ("/geo?key=AIRLOCK_MAPS", Ok(vec![0])),
            ("/geo?q=x&key=AIRLOCK_MAPS&access_token=AIRLOCK_MAPS", Ok(vec![1, 2])),
            ("/geo?key=pre.AIRLOCK_MAPS.post", Ok(vec![0])),
            ("/geo?%6Bey=AIRLOCK_MAPS", Ok(vec![0])),
            ("/geo?q=x", Ok(vec![])),
            ("/geo", Ok(vec![])),
            // Anywhere else in the URL: refused.
            ("/geo/AIRLOCK_MAPS?key=AIRLOCK_MAPS", Err(Mismatch)),
            ("/geo?other=AIRLOCK_MAPS", Err(Mismatch)),
            ("/geo?AIRLOCK_MAPS=1", Err(Mismatch)),
            ("/geo?key=AIRLOCK_MAPS#AIRLOCK_MAPS", Err(Mismatch)),
            ("/geo?KEY=AIRLOCK_MAPS", Err(Mismatch)),
            ("/geo?key", Ok(vec![])),
            // Percent-encoded, it would not be swapped: refused.
            ("/geo?key=AIRLOCK%5FMAPS", Err(Mismatch)),
            ("/geo?key=AIRLOCK_MAPS%41IRLOCK_MAPS", Err(Mismatch)),
            ("/geo?key=AIRLOCK_MAPS,%41IRLOCK_MAPS", Err(Mismatch)),
            // Beside a delimiter an upstream might split on, or decode.
            ("/geo?key=x;other=AIRLOCK_MAPS", Err(Mismatch)),
            ("/geo?key=%4AIRLOCK_MAPS", Err(Mismatch)),
            ("/geo%4AIRLOCK_MAPS", Err(Mismatch)),
            ("/geo?key=x%26other%3DAIRLOCK_MAPS", Err(Mismatch)),
            ("/geo?key=AIRLOCK_MAPS/x", Err(Mismatch)),
            ("/geo?key=v1~AIRLOCK_MAPS-x_y", Ok(vec![0])),
            // Another route's or tenant's placeholder in a listed parameter.
            ("/geo?key=AIRLOCK_WILD", Err(Mismatch)),
            ("/geo?key=AIRLOCK_BETA", Err(WrongTenant)),
        ];
        for (target, want) in cases {
            assert_eq!(decide(target), want, "{target}");
        }
        // A route that lists no parameter keeps refusing the URL.
        let req = RequestInfo {
            method: "GET",
            host: "api.callrail.com",
            port: 443,
            target: "/v3/a/1?key=AIRLOCK_CALLRAIL",
            headers: &[],
        };
        assert!(matches!(p.decide(acme, &req), Decision::Deny(d) if d.code == Mismatch));
    }
}
