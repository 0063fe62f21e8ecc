//! The checked policy: what a config becomes once [`Policy::load`] has
//! accepted it. Every value here is valid by construction (hosts parsed,
//! globs compiled, placeholders unique); the config loader (`config`) is
//! the only place that builds one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use aho_corasick::AhoCorasick;
use serde::Deserialize;

use crate::glob::PathGlob;
use crate::host::{self, HostPattern};
use crate::limits::Limits;
use crate::secrets::{SecretSpec, env_vars};
use crate::websocket::WebSocketKinds;

/// What to do with hosts no route names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    /// Pass the bytes through untouched (subject to `deny_private_egress`).
    Tunnel,
    /// Intercept and refuse with `host_not_allowed`.
    Deny,
}

/// `[proxy]`.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Address the proxy listens on.
    pub listen: SocketAddr,
    /// Policy for hosts no route names.
    pub egress: Egress,
    /// Refuse tunnels to loopback/private/link-local addresses.
    pub deny_private_egress: bool,
    /// Extra PEM root files trusted for upstreams (absolute paths).
    pub upstream_ca: Vec<PathBuf>,
    /// Host → IP overrides, keys normalised.
    pub resolve: HashMap<String, IpAddr>,
}

/// `[audit]`.
#[derive(Clone, Debug)]
pub struct AuditSettings {
    /// The audit log (absolute path).
    pub path: PathBuf,
}

/// A tenant: one client workspace.
pub struct Tenant {
    /// The tenant's name (the proxy user name).
    pub name: String,
    token: zeroize::Zeroizing<String>,
    /// Its routes, in config order.
    pub routes: Vec<Route>,
    /// Routes with an exact host, by host: their ports and indexes (at
    /// most one route per host and port).
    exact: HashMap<String, Vec<(u16, usize)>>,
    /// Routes with a wildcard host, most specific first.
    wildcards: Vec<usize>,
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant").field("name", &self.name).field("routes", &self.routes).finish_non_exhaustive()
    }
}

impl Tenant {
    pub(crate) fn new(name: String, token: String, routes: Vec<Route>) -> Tenant {
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            match &r.host {
                HostPattern::Exact(h) => exact.entry(h.clone()).or_insert_with(Vec::new).push((r.port, i)),
                HostPattern::Wildcard(_) => wildcards.push(i),
            }
        }
        wildcards.sort_by_key(|&i| std::cmp::Reverse(routes[i].host.specificity()));
        Tenant { name, token: zeroize::Zeroizing::new(token), routes, exact, wildcards }
    }

    /// The index of the most specific route serving a normalised host and
    /// port: the exact host's, else the longest matching wildcard. A lookup
    /// and a scan of the wildcards only, however many routes there are.
    pub(crate) fn route_index(&self, host: &str, port: u16) -> Option<usize> {
        let exact = self.exact.get(host).and_then(|ports| ports.iter().find(|&&(p, _)| p == port));
        if let Some(&(_, i)) = exact {
            return Some(i);
        }
        self.wildcards.iter().copied().find(|&i| self.routes[i].matches_host(host, port))
    }

    /// The tenant's proxy token (what `airlock run`/`env` put in the proxy
    /// URL).
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// A route: which host a tenant may reach with which secret.
#[derive(Clone, Debug)]
pub struct Route {
    /// The route's name, unique within its tenant.
    pub name: String,
    /// Host pattern.
    pub host: HostPattern,
    /// Port (443 unless given).
    pub port: u16,
    /// Name of the secret injected; for a route with a `credential`, the
    /// name its minted value is known by ([`MINTED_PREFIX`]).
    pub secret: String,
    /// What the agent holds instead of the secret.
    pub placeholder: String,
    /// Env var `airlock run`/`env` set to the placeholder.
    pub env: Option<String>,
    /// Lower-case header names the placeholder may be swapped in.
    pub headers: Vec<String>,
    /// Headers airlock sets on every request under the route, each to a
    /// secret's value (lower-case name, secret name): a second credential
    /// an API wants beside the token (DESIGN.md, "Credentials beyond a
    /// header placeholder"). They replace any the agent sent.
    pub add_headers: Vec<(String, String)>,
    /// Query parameters whose value the placeholder may be swapped in, as
    /// written (`?key=PLACEHOLDER`); anywhere else in the URL it stays
    /// refused.
    pub query: Vec<String>,
    /// The request bodies the placeholder is swapped in (`body`), each in
    /// its format's encoding; None: a placeholder in a body is data.
    pub body: Option<BodyKind>,
    /// How a header value that is the placeholder alone is written
    /// (`format = "Bearer {secret}"`): the format with [`SECRET_SLOT`]
    /// replaced by the secret. A value that holds more than the
    /// placeholder (`Bearer PLACEHOLDER`) has only the placeholder swapped.
    pub format: Option<String>,
    /// Upper-case methods allowed.
    pub methods: Vec<String>,
    /// This route's request body limit, when it overrides
    /// `[limits] max_request_body`.
    pub max_request_body: Option<u64>,
    /// The client certificate airlock presents to the upstream (mutual
    /// TLS) on every request under the route; None: none.
    pub client_cert: Option<ClientCert>,
    /// A credential airlock mints (an OAuth2 access token), whose value
    /// takes the place of a secret's; None: the route sends `secret`.
    pub credential: Option<Credential>,
    /// Allows the secret to be injected into a plain `http://` request,
    /// sent in cleartext, when the host resolves only to loopback or
    /// private addresses. Off by default: a request that would carry an
    /// injected secret in cleartext is refused with `insecure_upstream`.
    pub danger_plaintext_private_upstream: bool,
    /// Relays WebSocket frames from the upstream without rewriting them (for
    /// binary protocols a rewrite would corrupt). Frames are still scanned:
    /// one holding a known secret is audited `secret_exposed: true`. Off by
    /// default: frames are scrubbed like bodies.
    pub danger_unscrubbed_websocket: bool,
    /// The WebSocket message kinds in which the agent's own placeholder is
    /// replaced by the secret (`websocket = ["text"]`); none by default.
    pub websocket: WebSocketKinds,
    pub(crate) paths: Vec<PathGlob>,
}

/// A route's `client_cert`: the names of the two `[secrets.*]` entries
/// holding, as PEM text, the certificate chain (leaf first) and its
/// private key (PKCS#8, PKCS#1 or SEC1). They may be one secret holding
/// both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// The secret holding the certificate chain.
    pub cert: String,
    /// The secret holding the private key.
    pub key: String,
}

/// The prefix of the name a minted credential is known by (in
/// [`Route::secret`] and to the redactor): never a declared secret's name,
/// which cannot hold `:`.
pub const MINTED_PREFIX: &str = "minted:";

/// A credential airlock mints (DESIGN.md, "Credentials beyond a header
/// placeholder").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// An OAuth2 access token from `token_url` (RFC 6749).
    OAuth2(OAuth2),
    /// A GitHub App installation token.
    GitHubApp(GitHubApp),
    /// AWS Signature Version 4: the agent's request, signed with the
    /// placeholder as its access key id, re-signed with the real keys.
    AwsSigV4(AwsSigV4),
}

/// An `aws_sigv4` credential: the secrets a request is signed with, and
/// the one credential scope it may be signed for (AWS General Reference,
/// "Signature Version 4": `date/region/service/aws4_request`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsSigV4 {
    /// The secret holding the access key id (`AKIA…`, `ASIA…`).
    pub access_key_id: String,
    /// The secret holding the secret access key.
    pub secret_access_key: String,
    /// The secret holding a session token (temporary credentials), sent as
    /// `X-Amz-Security-Token`.
    pub session_token: Option<String>,
    /// The region requests are signed for (`eu-west-1`).
    pub region: String,
    /// The service requests are signed for (`s3`, `sqs`, `execute-api`).
    pub service: String,
}

/// A GitHub App installation token, minted with an app JWT (RS256) at
/// `POST {api}/app/installations/{installation_id}/access_tokens`
/// (docs.github.com, "Authenticating as a GitHub App installation").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitHubApp {
    /// The app's id (the JWT's `iss`).
    pub app_id: u64,
    /// The installation the token is for.
    pub installation_id: u64,
    /// The secret holding the app's private key (PEM, as GitHub issues it).
    pub private_key: String,
    /// The API's base URL (`https://api.github.com`, or an Enterprise
    /// Server's `https://HOST/api/v3`), no trailing `/`.
    pub api: String,
}

/// An OAuth2 access token minted host-side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuth2 {
    /// How it is minted.
    pub grant: Grant,
    /// The token endpoint (`https://` only).
    pub token_url: String,
    /// The client identifier (not a secret; empty for `jwt_bearer`, whose
    /// service account names itself).
    pub client_id: String,
    /// The secret holding the client secret; None for a public client.
    pub client_secret: Option<String>,
    /// The scope asked for, as the provider writes it.
    pub scope: Option<String>,
}

/// An OAuth2 grant airlock mints with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// RFC 6749 §6: a refresh token (the secret named here) exchanged for
    /// an access token.
    RefreshToken {
        /// The secret holding the refresh token.
        secret: String,
    },
    /// RFC 6749 §4.4: the client's own credentials.
    ClientCredentials,
    /// RFC 7523 §2.1: a JWT signed (RS256) with a service account's key
    /// (a Google service-account JSON key, in the secret named here).
    JwtBearer {
        /// The secret holding the service-account JSON key.
        service_account: String,
    },
}

impl Credential {
    /// The secrets it is minted (or, for `aws_sigv4`, signed) from.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        let names: [Option<&str>; 3] = match self {
            Credential::OAuth2(o) => {
                let grant = match &o.grant {
                    Grant::RefreshToken { secret } => Some(secret.as_str()),
                    Grant::JwtBearer { service_account } => Some(service_account.as_str()),
                    Grant::ClientCredentials => None,
                };
                [o.client_secret.as_deref(), grant, None]
            }
            Credential::GitHubApp(app) => [Some(app.private_key.as_str()), None, None],
            Credential::AwsSigV4(aws) => {
                [Some(aws.access_key_id.as_str()), Some(aws.secret_access_key.as_str()), aws.session_token.as_deref()]
            }
        };
        names.into_iter().flatten()
    }

    /// Where it is minted: the OAuth2 `token_url`, or the GitHub App's
    /// installation-token URL; None for a credential that signs.
    pub fn token_url(&self) -> Option<String> {
        match self {
            Credential::OAuth2(o) => Some(o.token_url.clone()),
            Credential::GitHubApp(app) => Some(app.token_url()),
            Credential::AwsSigV4(_) => None,
        }
    }

    /// Whether it mints a token the route sends (OAuth2, GitHub App), as
    /// opposed to signing the request (`aws_sigv4`).
    pub fn mints(&self) -> bool {
        self.token_url().is_some()
    }
}

impl GitHubApp {
    /// `{api}/app/installations/{installation_id}/access_tokens`, where an
    /// installation token is asked for.
    pub fn token_url(&self) -> String {
        format!("{}/app/installations/{}/access_tokens", self.api, self.installation_id)
    }
}

impl Route {
    /// Every secret the route uses: its own (or those its credential is
    /// minted from), then its `add_headers` ones, then its `client_cert`
    /// ones.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        let own = self.credential.is_none().then_some(self.secret.as_str());
        own.into_iter()
            .chain(self.credential.iter().flat_map(Credential::secrets))
            .chain(self.add_headers.iter().map(|(_, s)| s.as_str()))
            .chain(self.client_cert.iter().flat_map(|c| [c.cert.as_str(), c.key.as_str()]))
    }

    /// The path globs (empty: every path).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(PathGlob::as_str)
    }

    /// Whether this route serves a normalised host and port.
    pub fn matches_host(&self, host: &str, port: u16) -> bool {
        self.port == port && self.host.matches(host)
    }

    /// `host` or `host:port` as written for people.
    pub fn authority(&self) -> String {
        if self.port == host::DEFAULT_PORT { self.host.to_string() } else { format!("{}:{}", self.host, self.port) }
    }
}

/// A tenant, by index into the loaded policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TenantId(pub(crate) usize);

/// A route, by tenant and index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteId {
    pub(crate) tenant: usize,
    pub(crate) route: usize,
}

impl RouteId {
    /// The tenant owning the route.
    pub fn tenant(self) -> TenantId {
        TenantId(self.tenant)
    }
}

/// Where a route's `format` puts the secret.
pub const SECRET_SLOT: &str = "{secret}";

/// The request bodies a route's placeholder is swapped in (`body`), and
/// how the secret is written there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/x-www-form-urlencoded` (the secret percent-encoded:
    /// every byte but RFC 3986's unreserved ones).
    Form,
    /// `application/json` and `+json` media types (the secret escaped as
    /// inside a JSON string, RFC 8259 §7).
    Json,
    /// Any body that is neither compressed, multipart nor gRPC (the
    /// secret as it is; a gRPC message's length prefix would no longer
    /// match).
    Text,
}

impl BodyKind {
    /// The kind a config names: `form`, `json` or `text`.
    pub fn parse(name: &str) -> Option<BodyKind> {
        match name {
            "form" => Some(BodyKind::Form),
            "json" => Some(BodyKind::Json),
            "text" => Some(BodyKind::Text),
            _ => None,
        }
    }

    /// The name a config gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyKind::Form => "form",
            BodyKind::Json => "json",
            BodyKind::Text => "text",
        }
    }

    /// Whether a body of media type `essence` (lower-case `type/subtype`,
    /// no parameters; empty when the request names none) is one this kind
    /// swaps in.
    pub fn accepts(self, essence: &str) -> bool {
        match self {
            BodyKind::Form => essence == "application/x-www-form-urlencoded",
            BodyKind::Json => {
                essence == "application/json" || essence.split_once('/').is_some_and(|(_, sub)| sub.ends_with("+json"))
            }
            BodyKind::Text => !essence.starts_with("multipart/") && !essence.starts_with("application/grpc"),
        }
    }
}

/// The whole checked configuration.
pub struct Policy {
    /// `[proxy]`.
    pub proxy: ProxySettings,
    /// `[audit]`.
    pub audit: AuditSettings,
    /// `[limits]`.
    pub limits: Limits,
    pub(crate) secrets: BTreeMap<String, SecretSpec>,
    pub(crate) tenants: Vec<Tenant>,
    /// One automaton over every placeholder of every tenant, built at load.
    pub(crate) placeholders: AhoCorasick,
    /// Pattern index of `placeholders` → the route owning it.
    pub(crate) placeholder_routes: Vec<RouteId>,
    /// The same placeholders, matched ignoring ASCII case, for header names
    /// (which HTTP lower-cases); same pattern indices.
    pub(crate) placeholder_names: AhoCorasick,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("proxy", &self.proxy)
            .field("audit", &self.audit)
            .field("secrets", &self.secrets)
            .field("tenants", &self.tenants)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Where each placeholder (of any tenant) found in `bytes` ends, in
    /// order, matches not overlapping.
    pub fn placeholder_ends<'a>(&'a self, bytes: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
        self.placeholders.find_iter(bytes).map(|m| m.end())
    }

    /// The length in bytes of the longest placeholder (0 with none): how
    /// much of a stream must be kept to find one split across pieces.
    pub fn longest_placeholder(&self) -> usize {
        self.placeholders.max_pattern_len()
    }

    /// Every tenant.
    pub fn tenants(&self) -> impl Iterator<Item = (TenantId, &Tenant)> {
        self.tenants.iter().enumerate().map(|(i, t)| (TenantId(i), t))
    }

    /// A tenant by id.
    pub fn tenant(&self, id: TenantId) -> &Tenant {
        &self.tenants[id.0]
    }

    /// A tenant by name.
    pub fn tenant_by_name(&self, name: &str) -> Option<(TenantId, &Tenant)> {
        self.tenants().find(|(_, t)| t.name == name)
    }

    /// Replaces `tenant`'s token (for a proxy private to one agent, which
    /// accepts a token of its own instead of the config's); false when
    /// there is no such tenant.
    pub fn set_token(&mut self, tenant: &str, token: &str) -> bool {
        match self.tenants.iter_mut().find(|t| t.name == tenant) {
            Some(t) => {
                t.token = zeroize::Zeroizing::new(token.to_owned());
                true
            }
            None => false,
        }
    }

    /// A tenant's route by its name (an approved action's `service`).
    pub fn route_named(&self, tenant: TenantId, name: &str) -> Option<RouteId> {
        let routes = &self.tenants[tenant.0].routes;
        routes.iter().position(|r| r.name == name).map(|i| RouteId { tenant: tenant.0, route: i })
    }

    /// A route by id.
    pub fn route(&self, id: RouteId) -> &Route {
        &self.tenants[id.tenant].routes[id.route]
    }

    /// A secret's spec.
    pub fn secret(&self, name: &str) -> Option<&SecretSpec> {
        self.secrets.get(name)
    }

    /// Every declared secret.
    pub fn secrets(&self) -> impl Iterator<Item = &SecretSpec> {
        self.secrets.values()
    }

    /// The variables of airlock's own environment that hold secrets: those
    /// every `env` secret names, whichever tenant uses it. No child airlock
    /// starts (the `airlock run` agent, a vault command) inherits them;
    /// airlock itself keeps them, as each config load reads them again.
    pub fn secret_env_vars(&self) -> impl Iterator<Item = &str> {
        env_vars(self.secrets.values())
    }

    pub(crate) fn tenant_token(&self, id: usize) -> &[u8] {
        self.tenants[id].token.as_bytes()
    }
}
