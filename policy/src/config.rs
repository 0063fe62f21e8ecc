//! `airlock.toml`: the raw serde schema and its conversion into a checked
//! [`Policy`]. Parsing happens once; after [`Policy::load`] the policy cannot
//! be invalid.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aho_corasick::{AhoCorasick, MatchKind};
use serde::Deserialize;

use crate::glob::PathGlob;
use crate::host::HostPattern;
use crate::limits::{Limits, RawLimits, Size};
use crate::secrets::valid_name;

/// Why a config could not be loaded. The message names the file, and for
/// syntax and schema errors the key and line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}", path = path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// TOML syntax or schema error (unknown key, wrong type); the message
    /// carries the line, column and key.
    #[error("invalid config {origin}: {message}")]
    Parse {
        /// Where the text came from.
        origin: String,
        /// toml's message, with line and column.
        message: String,
    },
    /// The config parsed but is not a valid policy.
    #[error("invalid config {origin}: {message}")]
    Invalid {
        /// Where the text came from.
        origin: String,
        /// What is wrong and where (tenant, route, key).
        message: String,
    },
}

// === raw schema ===

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    proxy: RawProxy,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    secrets: BTreeMap<String, RawSecret>,
    #[serde(default)]
    tenants: BTreeMap<String, RawTenant>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    listen: Option<String>,
    egress: Option<Egress>,
    deny_private_egress: Option<bool>,
    #[serde(default)]
    upstream_ca: Vec<PathBuf>,
    #[serde(default)]
    resolve: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    source: String,
    var: Option<String>,
    path: Option<PathBuf>,
    command: Option<Vec<String>>,
    service: Option<String>,
    account: Option<String>,
    ttl: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    token: String,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    host: String,
    secret: String,
    placeholder: String,
    env: Option<String>,
    headers: Option<Vec<String>>,
    methods: Option<Vec<String>>,
    paths: Option<Vec<String>>,
    max_request_body: Option<Size>,
    #[serde(default)]
    danger_plaintext_private_upstream: bool,
    #[serde(default)]
    danger_unscrubbed_websocket: bool,
}

// === checked types ===

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

/// Where a secret's value lives.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretSource {
    /// The embedded store, `AIRLOCK_HOME/secrets/<name>`.
    Store,
    /// The proxy's own environment.
    Env {
        /// The variable name.
        var: String,
    },
    /// A file readable only by its owner.
    File {
        /// Absolute path.
        path: PathBuf,
    },
    /// A command's stdout (argv, no shell): `op read …`, `infisical`,
    /// `doppler`, `vault kv get`, `pass`.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// How long the command may run.
        timeout: Duration,
        /// Variables removed from the command's environment: every one an
        /// `env` secret of the same config names (see
        /// [`Policy::secret_env_vars`]). Filled in at load, so a spec is
        /// all it takes to run the command safely.
        withheld_env: Vec<String>,
    },
    /// The OS keychain (the Secret Service on Linux, Keychain Services on
    /// macOS): the item with this service and account.
    Keychain {
        /// The item's service (Secret Service attribute `service`).
        service: String,
        /// The item's account (Secret Service attribute `username`).
        account: String,
        /// How long the keychain may take to answer (a locked keychain may
        /// wait for a prompt nobody sees).
        timeout: Duration,
    },
}

/// How long a `command` source may run unless `timeout` says otherwise.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `command` and `keychain` values are cached unless `ttl` says
/// otherwise.
pub const DEFAULT_COMMAND_TTL: Duration = Duration::from_secs(300);

/// One `[secrets.NAME]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSpec {
    /// The secret's name.
    pub name: String,
    /// Where its value comes from.
    pub source: SecretSource,
    /// How long a fetched value is cached (`None`: until the config is
    /// reloaded or, for `store` and `file`, the file changes). `command`
    /// and `keychain` default to [`DEFAULT_COMMAND_TTL`].
    pub ttl: Option<Duration>,
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
    fn new(name: String, token: String, routes: Vec<Route>) -> Tenant {
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
    /// Name of the secret injected.
    pub secret: String,
    /// What the agent holds instead of the secret.
    pub placeholder: String,
    /// Env var `airlock run`/`env` set to the placeholder.
    pub env: Option<String>,
    /// Lower-case header names the placeholder may be swapped in.
    pub headers: Vec<String>,
    /// Upper-case methods allowed.
    pub methods: Vec<String>,
    /// This route's request body limit, when it overrides
    /// `[limits] max_request_body`.
    pub max_request_body: Option<u64>,
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
    pub(crate) paths: Vec<PathGlob>,
}

impl Route {
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
        if self.port == crate::host::DEFAULT_PORT {
            self.host.to_string()
        } else {
            format!("{}:{}", self.host, self.port)
        }
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

/// The whole checked configuration.
pub struct Policy {
    /// `[proxy]`.
    pub proxy: ProxySettings,
    /// `[audit]`.
    pub audit: AuditSettings,
    /// `[limits]`.
    pub limits: Limits,
    secrets: BTreeMap<String, SecretSpec>,
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

/// Methods a route allows when it lists none: reads only.
pub const DEFAULT_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];
/// Headers a placeholder may be swapped in when a route lists none.
pub const DEFAULT_HEADERS: [&str; 2] = ["authorization", "x-api-key"];
/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Headers that may never carry an injected secret: the proxy consumes or
/// rewrites them.
const FORBIDDEN_HEADERS: [&str; 11] = [
    "host",
    "proxy-authorization",
    "proxy-connection",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "cookie",
];

/// A parse error's line, column and message, without the quoted source
/// line toml's own message carries: that line may hold a tenant's token,
/// and the message goes to logs and terminals.
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            // The key (or table header) on that line names the setting;
            // what follows `=` is never shown.
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            let key =
                if source.starts_with('[') { Some(source) } else { source.split_once('=').map(|(k, _)| k.trim()) };
            let key_like = |k: &&str| {
                !k.is_empty()
                    && k.len() <= 80
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.\"' []".contains(&b))
            };
            match key.filter(key_like) {
                Some(key) => format!("line {line}, column {column} ({key}): {message}"),
                None => format!("line {line}, column {column}: {message}"),
            }
        }
        None => message.to_owned(),
    }
}

impl Policy {
    /// Reads and checks a config file. Relative paths in `[proxy]` and
    /// `[secrets]` are relative to the file's directory; the audit path is
    /// relative to `home`.
    pub fn load(path: &Path, home: &Path) -> Result<Policy, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Policy::from_toml(&text, &path.display().to_string(), base, home)
    }

    /// Parses and checks config text. `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str, base: &Path, home: &Path) -> Result<Policy, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { origin: origin.to_owned(), message: parse_message(text, &e) })?;
        build(raw, base, home).map_err(|message| ConfigError::Invalid { origin: origin.to_owned(), message })
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
        env_vars(&self.secrets)
    }

    pub(crate) fn tenant_token(&self, id: usize) -> &[u8] {
        self.tenants[id].token.as_bytes()
    }
}

fn build(raw: RawConfig, base: &Path, home: &Path) -> Result<Policy, String> {
    let absolute = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

    let listen = raw.proxy.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr =
        listen.parse().map_err(|_| format!("[proxy] listen = '{listen}' is not an address like 127.0.0.1:8080"))?;
    let mut resolve = HashMap::new();
    for (host, ip) in raw.proxy.resolve {
        let h = crate::host::normalize(&host).ok_or_else(|| format!("[proxy] resolve: '{host}' is not a host"))?;
        let ip: IpAddr =
            ip.parse().map_err(|_| format!("[proxy] resolve: '{ip}' (for {host}) is not an IP address"))?;
        resolve.insert(h, ip);
    }
    let proxy = ProxySettings {
        listen,
        egress: raw.proxy.egress.unwrap_or(Egress::Tunnel),
        deny_private_egress: raw.proxy.deny_private_egress.unwrap_or(true),
        upstream_ca: raw.proxy.upstream_ca.into_iter().map(absolute).collect(),
        resolve,
    };
    let audit_path = raw.audit.path.unwrap_or_else(|| PathBuf::from("audit.jsonl"));
    let audit = AuditSettings { path: if audit_path.is_absolute() { audit_path } else { home.join(audit_path) } };
    let limits = Limits::build(raw.limits)?;

    let mut secrets = BTreeMap::new();
    for (name, s) in raw.secrets {
        let spec = build_secret(&name, s, &absolute)?;
        secrets.insert(name, spec);
    }
    // A vault command is the operator's own program and needs its CLI's
    // tokens from the environment, but never another secret's value.
    let env_vars: Vec<String> = env_vars(&secrets).map(str::to_owned).collect();
    for spec in secrets.values_mut() {
        if let SecretSource::Command { withheld_env, .. } = &mut spec.source {
            withheld_env.clone_from(&env_vars);
        }
    }

    let mut tenants = Vec::new();
    let mut placeholders: Vec<String> = Vec::new();
    let mut placeholder_routes = Vec::new();
    for (ti, (name, t)) in raw.tenants.into_iter().enumerate() {
        if !valid_tenant_name(&name) {
            return Err(format!("tenant '{name}': names are letters, digits, '_', '-' and '.' only"));
        }
        if t.token.len() < 16 || t.token.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!(
                "tenant '{name}': token must be at least 16 printable characters without spaces \
                 (`airlock init` generates one)"
            ));
        }
        let mut routes: Vec<Route> = Vec::new();
        let mut names = HashSet::new();
        let mut served: HashMap<(HostPattern, u16), usize> = HashMap::new();
        for (ri, r) in t.routes.into_iter().enumerate() {
            let route = build_route(&name, r, &secrets)?;
            if !names.insert(route.name.clone()) {
                return Err(format!("tenant '{name}': two routes are named '{}'", route.name));
            }
            if let Some(&prev) = served.get(&(route.host.clone(), route.port)) {
                return Err(format!(
                    "tenant '{name}': routes '{}' and '{}' both serve {}; a request could match \
                     either — merge them into one route",
                    routes[prev].name,
                    route.name,
                    route.authority()
                ));
            }
            served.insert((route.host.clone(), route.port), ri);
            placeholders.push(route.placeholder.clone());
            placeholder_routes.push(RouteId { tenant: ti, route: ri });
            routes.push(route);
        }
        tenants.push(Tenant::new(name, t.token, routes));
    }

    // Placeholders are looked up across every tenant (to tell `wrong_tenant`
    // from `placeholder_host_mismatch`), so each must be unique, and none may
    // contain another (else swapping one would corrupt the other).
    let mut seen = HashSet::new();
    if let Some(p) = placeholders.iter().find(|p| !seen.insert(*p)) {
        return Err(format!("placeholder '{p}' is used by more than one route; each must be unique"));
    }
    for (i, p) in placeholders.iter().enumerate() {
        if let Some(q) = placeholders.iter().enumerate().find(|(j, q)| *j != i && p.contains(q.as_str())) {
            return Err(format!("placeholder '{p}' contains placeholder '{}'; choose names that do not overlap", q.1));
        }
    }
    let automaton = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&placeholders)
        .map_err(|e| format!("cannot build the placeholder matcher: {e}"))?;
    let placeholder_names = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .ascii_case_insensitive(true)
        .build(&placeholders)
        .map_err(|e| format!("cannot build the placeholder matcher: {e}"))?;
    Ok(Policy {
        proxy,
        audit,
        limits,
        secrets,
        tenants,
        placeholders: automaton,
        placeholder_routes,
        placeholder_names,
    })
}

/// The variables the `env` secrets among `secrets` read, each once.
fn env_vars(secrets: &BTreeMap<String, SecretSpec>) -> impl Iterator<Item = &str> {
    let mut seen = HashSet::new();
    secrets
        .values()
        .filter_map(|s| match &s.source {
            SecretSource::Env { var } => Some(var.as_str()),
            _ => None,
        })
        .filter(move |v| seen.insert(*v))
}

fn valid_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn build_secret(name: &str, s: RawSecret, absolute: &dyn Fn(PathBuf) -> PathBuf) -> Result<SecretSpec, String> {
    if !valid_name(name) {
        return Err(format!("[secrets.{name}]: names are letters, digits, '_', '-' and '.' only"));
    }
    let timeout = s
        .timeout
        .as_deref()
        .map(|t| parse_duration(t).map_err(|e| format!("[secrets.{name}] timeout: {e}")))
        .transpose()?;
    // Each source takes its own keys; a key meant for another source is a
    // mistake worth naming rather than ignoring.
    let allowed: &[&str] = match s.source.as_str() {
        "store" => &[],
        "env" => &["var"],
        "file" => &["path"],
        "command" => &["command", "timeout"],
        "keychain" => &["service", "account", "timeout"],
        other => {
            return Err(format!(
                "[secrets.{name}]: unknown source \"{other}\" (expected store, env, file, command or keychain)"
            ));
        }
    };
    let present = [
        ("var", s.var.is_some()),
        ("path", s.path.is_some()),
        ("command", s.command.is_some()),
        ("service", s.service.is_some()),
        ("account", s.account.is_some()),
        ("timeout", timeout.is_some()),
    ];
    if let Some((key, _)) = present.iter().find(|(key, set)| *set && !allowed.contains(key)) {
        return Err(format!("[secrets.{name}]: '{key}' does not apply to source = \"{}\"", s.source));
    }
    let source = match s.source.as_str() {
        "store" => SecretSource::Store,
        "env" => {
            let var = s.var.ok_or_else(|| format!("[secrets.{name}]: source = \"env\" needs var = \"NAME\""))?;
            SecretSource::Env { var }
        }
        "file" => {
            let path = s.path.ok_or_else(|| format!("[secrets.{name}]: source = \"file\" needs path = \"/path\""))?;
            SecretSource::File { path: absolute(path) }
        }
        "command" => {
            let argv = s.command.unwrap_or_default();
            if argv.is_empty() || argv[0].is_empty() {
                return Err(format!(
                    "[secrets.{name}]: source = \"command\" needs command = [\"program\", \"arg\", …]"
                ));
            }
            // `withheld_env` is filled in by `build` once every secret is known.
            SecretSource::Command {
                argv,
                timeout: timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT),
                withheld_env: Vec::new(),
            }
        }
        _ => {
            let service = s.service.unwrap_or_else(|| "airlock".to_owned());
            let account = s.account.unwrap_or_else(|| name.to_owned());
            if service.is_empty() || account.is_empty() {
                return Err(format!("[secrets.{name}]: keychain service and account must not be empty"));
            }
            SecretSource::Keychain { service, account, timeout: timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT) }
        }
    };
    let ttl =
        s.ttl.as_deref().map(|t| parse_duration(t).map_err(|e| format!("[secrets.{name}] ttl: {e}"))).transpose()?;
    // Values from outside processes change behind our back: look again
    // every few minutes unless told otherwise.
    let ttl = match source {
        SecretSource::Command { .. } | SecretSource::Keychain { .. } => Some(ttl.unwrap_or(DEFAULT_COMMAND_TTL)),
        _ => ttl,
    };
    Ok(SecretSpec { name: name.to_owned(), source, ttl })
}

/// Parses durations like `30s`, `5m`, `2h`, `1d`, `250ms`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("'{text}' is not a duration like 30s, 5m or 2h"))?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("'{text}' is not a duration like 30s, 5m or 2h"))
}

fn build_route(tenant: &str, r: RawRoute, secrets: &BTreeMap<String, SecretSpec>) -> Result<Route, String> {
    let at = format!("tenant '{tenant}', route '{}'", r.name);
    if r.name.is_empty() || !r.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        return Err(format!("{at}: route names are letters, digits, '_', '-' and '.' only"));
    }
    let (host, port) = HostPattern::parse(&r.host).map_err(|e| format!("{at}: host {e}"))?;
    if !secrets.contains_key(&r.secret) {
        return Err(format!("{at}: secret '{}' is not declared; add a [secrets.{}] table", r.secret, r.secret));
    }
    if r.placeholder.len() < 8
        || !r.placeholder.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "{at}: placeholder '{}' must be at least 8 characters of letters, digits, '_', '-' or '.'",
            r.placeholder
        ));
    }
    if let Some(env) = &r.env {
        let ok = !env.is_empty()
            && !env.starts_with(|c: char| c.is_ascii_digit())
            && env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(format!("{at}: env '{env}' is not a valid environment variable name"));
        }
    }
    let headers = match r.headers {
        None => DEFAULT_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
        Some(hs) => {
            let mut out = Vec::new();
            for h in hs {
                let lower = h.to_ascii_lowercase();
                let token = !lower.is_empty() && lower.bytes().all(is_tchar);
                if !token {
                    return Err(format!("{at}: '{h}' is not a header name"));
                }
                if FORBIDDEN_HEADERS.contains(&lower.as_str()) {
                    return Err(format!("{at}: a secret may not be injected into the '{lower}' header"));
                }
                out.push(lower);
            }
            out
        }
    };
    let methods = match r.methods {
        None => DEFAULT_METHODS.iter().map(|m| (*m).to_owned()).collect(),
        Some(ms) => {
            let mut out = Vec::new();
            for m in ms {
                if m.is_empty() || !m.bytes().all(is_tchar) || m.eq_ignore_ascii_case("CONNECT") {
                    return Err(format!("{at}: '{m}' is not an allowed HTTP method"));
                }
                out.push(m.to_ascii_uppercase());
            }
            out
        }
    };
    let paths = r
        .paths
        .unwrap_or_default()
        .iter()
        .map(|p| PathGlob::parse(p).map_err(|e| format!("{at}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let max_request_body = r.max_request_body.map(|s| s.bytes(&format!("{at}: max_request_body"))).transpose()?;
    Ok(Route {
        name: r.name,
        host,
        port,
        secret: r.secret,
        placeholder: r.placeholder,
        env: r.env,
        headers,
        methods,
        max_request_body,
        danger_plaintext_private_upstream: r.danger_plaintext_private_upstream,
        danger_unscrubbed_websocket: r.danger_unscrubbed_websocket,
        paths,
    })
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The starter config written by `airlock init` (and by `airlock serve` on
/// a fresh AIRLOCK_HOME), with one tenant holding `token`.
pub fn starter_config(token: &str) -> String {
    format!(
        r#"# airlock configuration. Reference: see README.md ("Config reference").

[proxy]
listen = "{DEFAULT_LISTEN}"
egress = "tunnel"            # hosts no route names: "tunnel" (bytes pass untouched) or "deny"
deny_private_egress = true   # tunnels to loopback/private/link-local IPs refused unless a route names the host
upstream_ca = []             # extra PEM root files trusted for upstreams
resolve = {{}}                 # host -> IP overrides, like curl --resolve

[audit]
path = "audit.jsonl"         # relative to AIRLOCK_HOME

# One vaulted credential. Give it a value with:  airlock secret set example
[secrets.example]
source = "store"

[tenants.demo]
token = "{token}"

[[tenants.demo.routes]]
name = "example"
host = "api.example.com"
secret = "example"
placeholder = "AIRLOCK_EXAMPLE_KEY"
env = "EXAMPLE_API_KEY"
headers = ["authorization", "x-api-key"]
methods = ["GET", "HEAD", "OPTIONS"]
"#
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Policy, ConfigError> {
        Policy::from_toml(text, "test.toml", Path::new("/etc/airlock"), Path::new("/home/u/.local/share/airlock"))
    }

    const TOKEN: &str = "0123456789abcdef0123";

    #[test]
    fn parse_errors_give_the_place_but_never_quote_the_line() {
        // A token with a stray quote: toml's own message would print the
        // line, token and all.
        let text = format!("[tenants.acme]\ntoken = \"{TOKEN}\"x\"\n");
        let e = load(&text).unwrap_err().to_string();
        assert!(e.contains("test.toml") && e.contains("line 2, column"), "{e}");
        assert!(!e.contains(TOKEN), "{e}");
    }

    #[test]
    fn starter_config_loads() {
        let p = load(&starter_config(TOKEN)).unwrap();
        let (_, t) = p.tenant_by_name("demo").unwrap();
        assert_eq!(t.token(), TOKEN);
        assert_eq!(t.routes[0].host, HostPattern::Exact("api.example.com".into()));
        assert_eq!(p.audit.path, Path::new("/home/u/.local/share/airlock/audit.jsonl"));
        assert_eq!(p.proxy.listen.to_string(), DEFAULT_LISTEN);
        assert!(!format!("{p:?}").contains(TOKEN), "Debug must not print tokens");
    }

    #[test]
    fn unknown_keys_name_key_and_line() {
        let err = load("[proxy]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err().to_string();
        assert!(err.contains("lisen") && err.contains("line 3"), "{err}");
        let text = format!(
            "[secrets.s]\nsource = \"store\"\n[tenants.a]\ntoken = \"{TOKEN}\"\n[[tenants.a.routes]]\nname = \"r\"\n\
             host = \"a.test\"\nsecret = \"s\"\nplaceholder = \"AIRLOCK_A1\"\nheader = [\"x\"]\n"
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("header") && err.contains("line 10"), "{err}");
    }

    fn with_routes(routes: &str) -> String {
        format!("[secrets.s]\nsource = \"env\"\nvar = \"S\"\n[tenants.a]\ntoken = \"{TOKEN}\"\n{routes}")
    }

    fn route(name: &str, host: &str, placeholder: &str) -> String {
        format!(
            "[[tenants.a.routes]]\nname = \"{name}\"\nhost = \"{host}\"\nsecret = \"s\"\nplaceholder = \"{placeholder}\"\n"
        )
    }

    #[test]
    fn rejects_invalid_policies() {
        let cases = [
            (with_routes(&(route("r", "a.test", "AIRLOCK_1") + &route("r", "b.test", "AIRLOCK_2"))), "two routes"),
            (with_routes(&(route("r", "a.test", "AIRLOCK_1") + &route("q", "A.test.", "AIRLOCK_2"))), "both serve"),
            (with_routes(&(route("r", "a.test", "AIRLOCK_1") + &route("q", "b.test", "AIRLOCK_1"))), "more than one"),
            (with_routes(&(route("r", "a.test", "AIRLOCK_1") + &route("q", "b.test", "AIRLOCK_12"))), "contains"),
            (with_routes(&route("r", "a.test", "short")), "at least 8"),
            (with_routes(&route("r", "*.com", "AIRLOCK_1")), "two labels"),
            (with_routes(&route("r", "a.test", "AIRLOCK_1").replace("\"s\"", "\"nope\"")), "not declared"),
            (with_routes(&(route("r", "a.test", "AIRLOCK_1") + "headers = [\"host\"]\n")), "may not be injected"),
            (with_routes(&(route("r", "a.test", "AIRLOCK_1") + "methods = [\"CONNECT\"]\n")), "not an allowed"),
            (with_routes(&(route("r", "a.test", "AIRLOCK_1") + "paths = [\"v1\"]\n")), "must start with"),
            ("[tenants.a]\ntoken = \"short\"\n".to_owned(), "at least 16"),
            ("[proxy]\nlisten = \"nope\"\n".to_owned(), "is not an address"),
            ("[proxy]\negress = \"open\"\n".to_owned(), "egress"),
            ("[secrets.s]\nsource = \"vault\"\n".to_owned(), "unknown source"),
            ("[secrets.s]\nsource = \"env\"\n".to_owned(), "needs var"),
            ("[secrets.s]\nsource = \"store\"\nvar = \"X\"\n".to_owned(), "does not apply"),
            ("[secrets.s]\nsource = \"store\"\nttl = \"5 minutes\"\n".to_owned(), "duration"),
            ("[secrets.s]\nsource = \"env\"\nvar = \"X\"\ntimeout = \"1s\"\n".to_owned(), "'timeout' does not apply"),
            ("[secrets.s]\nsource = \"keychain\"\ncommand = [\"x\"]\n".to_owned(), "'command' does not apply"),
            ("[secrets.s]\nsource = \"keychain\"\naccount = \"\"\n".to_owned(), "must not be empty"),
        ];
        for (text, want) in cases {
            match load(&text) {
                Ok(_) => panic!("accepted:\n{text}"),
                Err(e) => assert!(e.to_string().contains(want), "want {want:?}, got: {e}\n{text}"),
            }
        }
    }

    #[test]
    fn route_defaults() {
        let p = load(&with_routes(&route("r", "*.a.test:8443", "AIRLOCK_1"))).unwrap();
        let r = &p.tenants[0].routes[0];
        assert_eq!(r.methods, DEFAULT_METHODS);
        assert_eq!(r.headers, DEFAULT_HEADERS);
        assert_eq!(r.port, 8443);
        assert_eq!(r.authority(), "*.a.test:8443");
        assert_eq!(r.paths().count(), 0);
    }

    #[test]
    fn secret_source_defaults() {
        let text = "[secrets.k]\nsource = \"keychain\"\n[secrets.c]\nsource = \"command\"\ncommand = [\"op\"]\n\
                    [secrets.k2]\nsource = \"keychain\"\nservice = \"vault\"\naccount = \"acme\"\nttl = \"1h\"\n\
                    [secrets.s]\nsource = \"store\"\n";
        let p = load(text).unwrap();
        let five = Some(DEFAULT_COMMAND_TTL);
        assert_eq!(
            p.secrets["k"].source,
            SecretSource::Keychain { service: "airlock".into(), account: "k".into(), timeout: DEFAULT_COMMAND_TIMEOUT }
        );
        assert_eq!(p.secrets["k"].ttl, five);
        assert_eq!(p.secrets["c"].ttl, five, "command values are looked up again after the default ttl");
        assert!(
            matches!(&p.secrets["k2"].source, SecretSource::Keychain { service, account, .. } if service == "vault" && account == "acme")
        );
        assert_eq!(p.secrets["k2"].ttl, Some(Duration::from_secs(3600)));
        assert_eq!(p.secrets["s"].ttl, None);
    }

    #[test]
    fn vault_commands_withhold_every_env_secret_variable() {
        let text = format!(
            "[secrets.a]\nsource = \"env\"\nvar = \"A_KEY\"\n[secrets.a2]\nsource = \"env\"\nvar = \"A_KEY\"\n\
             [secrets.b]\nsource = \"env\"\nvar = \"B_KEY\"\n[secrets.c]\nsource = \"command\"\ncommand = [\"op\"]\n\
             [secrets.s]\nsource = \"store\"\n[tenants.a]\ntoken = \"{TOKEN}\"\n{}",
            route("r", "a.test", "AIRLOCK_1").replace("\"s\"", "\"a\"")
        );
        let p = load(&text).unwrap();
        // Every tenant's, even a secret no route uses; each variable once.
        assert_eq!(p.secret_env_vars().collect::<Vec<_>>(), ["A_KEY", "B_KEY"]);
        let SecretSource::Command { withheld_env, .. } = &p.secrets["c"].source else { panic!("not a command") };
        assert_eq!(withheld_env, &["A_KEY", "B_KEY"]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
