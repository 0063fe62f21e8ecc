//! The checks that turn the raw schema into a [`Policy`]: every host,
//! path, duration, secret source and placeholder is parsed or refused here,
//! with a [`BuildError`] that names the table, tenant, route and key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use aho_corasick::{AhoCorasick, MatchKind};

use super::error::{BuildError, RouteError};
use super::schema::{RawClientCert, RawConfig, RawCredential, RawRoute, RawSecret};
use crate::glob::PathGlob;
use crate::host::{self, HostPattern};
use crate::limits::Limits;
use crate::policy::{
    AuditSettings, AwsSigV4, BodyKind, ClientCert, Credential, Egress, GitHubApp, Grant, MINTED_PREFIX, OAuth2, Policy,
    ProxySettings, Route, RouteId, SECRET_SLOT, Tenant,
};
use crate::secrets::{DEFAULT_COMMAND_TIMEOUT, DEFAULT_COMMAND_TTL, SecretSource, SecretSpec, env_vars, valid_name};
use crate::units::parse_duration;
use crate::websocket::WebSocketKinds;

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

pub(super) fn build(raw: RawConfig, base: &Path, home: &Path) -> Result<Policy, BuildError> {
    let absolute = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

    let listen = raw.proxy.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen.parse().map_err(|_| BuildError::Listen(listen.to_owned()))?;
    let mut resolve = HashMap::new();
    for (name, ip) in raw.proxy.resolve {
        let Some(h) = host::normalize(&name) else { return Err(BuildError::ResolveHost(name)) };
        let Ok(ip) = ip.parse::<IpAddr>() else { return Err(BuildError::ResolveIp { host: name, ip }) };
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
    let env_vars: Vec<String> = env_vars(secrets.values()).map(str::to_owned).collect();
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
            return Err(BuildError::TenantName { tenant: name });
        }
        if t.token.len() < 16 || t.token.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(BuildError::WeakToken { tenant: name });
        }
        let mut routes: Vec<Route> = Vec::new();
        let mut names = HashSet::new();
        let mut served: HashMap<(HostPattern, u16), usize> = HashMap::new();
        for (ri, r) in t.routes.into_iter().enumerate() {
            let route_name = r.name.clone();
            let route = build_route(r, &name, &secrets).map_err(|error| BuildError::Route {
                tenant: name.clone(),
                route: route_name,
                error,
            })?;
            if !names.insert(route.name.clone()) {
                return Err(BuildError::DuplicateRoute { tenant: name, route: route.name });
            }
            if let Some(&prev) = served.get(&(route.host.clone(), route.port)) {
                return Err(BuildError::OverlappingRoutes {
                    tenant: name,
                    first: routes[prev].name.clone(),
                    authority: route.authority(),
                    second: route.name,
                });
            }
            served.insert((route.host.clone(), route.port), ri);
            placeholders.push(route.placeholder.clone());
            placeholder_routes.push(RouteId { tenant: ti, route: ri });
            routes.push(route);
        }
        tenants.push(Tenant::new(name, t.token, routes));
    }

    mark_pem_secrets(&tenants, &mut secrets)?;

    // Placeholders are looked up across every tenant (to tell `wrong_tenant`
    // from `placeholder_host_mismatch`), so each must be unique, and none may
    // contain another (else swapping one would corrupt the other).
    let mut seen = HashSet::new();
    if let Some(p) = placeholders.iter().find(|p| !seen.insert(*p)) {
        return Err(BuildError::DuplicatePlaceholder(p.clone()));
    }
    for (i, p) in placeholders.iter().enumerate() {
        if let Some((_, q)) = placeholders.iter().enumerate().find(|(j, q)| *j != i && p.contains(q.as_str())) {
            return Err(BuildError::NestedPlaceholder { outer: p.clone(), inner: q.clone() });
        }
    }
    let automaton = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&placeholders)
        .map_err(BuildError::Matcher)?;
    let placeholder_names = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .ascii_case_insensitive(true)
        .build(&placeholders)
        .map_err(BuildError::Matcher)?;
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

fn valid_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn build_secret(name: &str, s: RawSecret, absolute: &dyn Fn(PathBuf) -> PathBuf) -> Result<SecretSpec, BuildError> {
    if !valid_name(name) {
        return Err(BuildError::SecretName { name: name.to_owned() });
    }
    let duration = |key: &'static str, text: Option<&str>| {
        text.map(|t| {
            parse_duration(t).map_err(|error| BuildError::SecretDuration { name: name.to_owned(), key, error })
        })
        .transpose()
    };
    let timeout = duration("timeout", s.timeout.as_deref())?;
    // Each source takes its own keys; a key meant for another source is a
    // mistake worth naming rather than ignoring.
    let allowed: &[&str] = match s.source.as_str() {
        "store" => &[],
        "env" => &["var"],
        "file" => &["path"],
        "command" => &["command", "timeout"],
        "keychain" => &["service", "account", "timeout"],
        _ => return Err(BuildError::UnknownSource { name: name.to_owned(), kind: s.source }),
    };
    let present = [
        ("var", s.var.is_some()),
        ("path", s.path.is_some()),
        ("command", s.command.is_some()),
        ("service", s.service.is_some()),
        ("account", s.account.is_some()),
        ("timeout", timeout.is_some()),
    ];
    if let Some(&(key, _)) = present.iter().find(|(key, set)| *set && !allowed.contains(key)) {
        return Err(BuildError::KeyNotForSource { name: name.to_owned(), key, kind: s.source });
    }
    let missing = |kind, example| BuildError::MissingKey { name: name.to_owned(), kind, example };
    let source = match s.source.as_str() {
        "store" => SecretSource::Store,
        "env" => {
            let var = s.var.ok_or_else(|| missing("env", "var = \"NAME\""))?;
            SecretSource::Env { var }
        }
        "file" => {
            let path = s.path.ok_or_else(|| missing("file", "path = \"/path\""))?;
            SecretSource::File { path: absolute(path) }
        }
        "command" => {
            let argv = s.command.unwrap_or_default();
            if argv.is_empty() || argv[0].is_empty() {
                return Err(missing("command", "command = [\"program\", \"arg\", …]"));
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
                return Err(BuildError::EmptyKeychainItem { name: name.to_owned() });
            }
            SecretSource::Keychain { service, account, timeout: timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT) }
        }
    };
    let ttl = duration("ttl", s.ttl.as_deref())?;
    // Values from outside processes change behind our back: look again
    // every few minutes unless told otherwise.
    let ttl = match source {
        SecretSource::Command { .. } | SecretSource::Keychain { .. } => Some(ttl.unwrap_or(DEFAULT_COMMAND_TTL)),
        _ => ttl,
    };
    Ok(SecretSpec { name: name.to_owned(), source, ttl, pem: false })
}

fn build_route(r: RawRoute, tenant: &str, secrets: &BTreeMap<String, SecretSpec>) -> Result<Route, RouteError> {
    if r.name.is_empty() || !r.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        return Err(RouteError::Name);
    }
    let (host, port) = HostPattern::parse(&r.host).map_err(RouteError::Host)?;
    let credential = r.credential.map(|c| build_credential(c, secrets)).transpose()?;
    let secret = match (r.secret, &credential) {
        (Some(secret), None) if !secrets.contains_key(&secret) => return Err(RouteError::UndeclaredSecret(secret)),
        (Some(secret), None) => secret,
        (None, None) => return Err(RouteError::MissingSecret),
        (Some(_), Some(_)) => return Err(RouteError::SecretWithCredential),
        // What it mints is known by a name no declared secret can have.
        (None, Some(_)) => format!("{MINTED_PREFIX}{tenant}/{}", r.name),
    };
    if r.placeholder.len() < 8
        || !r.placeholder.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(RouteError::Placeholder(r.placeholder));
    }
    if let Some(env) = &r.env {
        let ok = !env.is_empty()
            && !env.starts_with(|c: char| c.is_ascii_digit())
            && env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(RouteError::EnvName(env.clone()));
        }
        if reserved_env(env) {
            return Err(RouteError::EnvReserved(env.clone()));
        }
    }
    let headers = match r.headers {
        None => DEFAULT_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
        Some(hs) => {
            let mut out = Vec::new();
            for h in hs {
                match header_name(&h) {
                    HeaderName::Usable(lower) => out.push(lower),
                    HeaderName::NotAToken => return Err(RouteError::HeaderName(h)),
                    HeaderName::Managed(lower) => return Err(RouteError::ForbiddenHeader(lower)),
                }
            }
            out
        }
    };
    let mut add_headers = Vec::new();
    for (name, secret) in r.add_headers {
        let lower = match header_name(&name) {
            HeaderName::Usable(lower) => lower,
            HeaderName::NotAToken => return Err(RouteError::AddHeaderName(name)),
            HeaderName::Managed(lower) => return Err(RouteError::AddHeaderForbidden(lower)),
        };
        if headers.contains(&lower) {
            return Err(RouteError::AddHeaderSwapped(lower));
        }
        if !secrets.contains_key(&secret) {
            return Err(RouteError::AddHeaderSecret { header: lower, secret });
        }
        add_headers.push((lower, secret));
    }
    for name in &r.query {
        let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b"&=#%+?".contains(&b));
        if !ok {
            return Err(RouteError::QueryName(name.clone()));
        }
    }
    let body = r.body.map(|b| BodyKind::parse(&b).ok_or(RouteError::BodyKind(b))).transpose()?;
    if let Some(Credential::AwsSigV4(_)) = &credential {
        // A signature covers the whole request: the placeholder is the
        // signing access key id, never swapped anywhere.
        let swaps = [
            ("query", !r.query.is_empty()),
            ("body", body.is_some()),
            ("format", r.format.is_some()),
            ("websocket", r.websocket.is_some()),
        ];
        if let Some((key, _)) = swaps.iter().find(|(_, set)| *set) {
            return Err(RouteError::SignedRouteSwaps(key));
        }
    }
    // An OAuth2 access token goes as a Bearer token (RFC 6750 §2.1).
    let bearer = credential.as_ref().filter(|c| !matches!(c, Credential::AwsSigV4(_)));
    let format = r.format.or_else(|| bearer.map(|_| format!("Bearer {SECRET_SLOT}")));
    if let Some(format) = &format {
        let ok = format.matches(SECRET_SLOT).count() == 1 && !format.chars().any(char::is_control);
        if !ok {
            return Err(RouteError::Format(format.clone()));
        }
    }
    let methods = match r.methods {
        None => DEFAULT_METHODS.iter().map(|m| (*m).to_owned()).collect(),
        Some(ms) => {
            let mut out = Vec::new();
            for m in ms {
                if m.is_empty() || !m.bytes().all(is_tchar) || m.eq_ignore_ascii_case("CONNECT") {
                    return Err(RouteError::Method(m));
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
        .map(|p| PathGlob::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(RouteError::Path)?;
    let max_request_body = r.max_request_body.map(|s| s.bytes()).transpose().map_err(RouteError::MaxRequestBody)?;
    let websocket = websocket_kinds(r.websocket)?;
    let client_cert = r.client_cert.map(|c| client_cert(c, secrets)).transpose()?;
    Ok(Route {
        name: r.name,
        host,
        port,
        secret,
        placeholder: r.placeholder,
        env: r.env,
        headers,
        add_headers,
        query: r.query,
        body,
        format,
        methods,
        max_request_body,
        client_cert,
        credential,
        danger_plaintext_private_upstream: r.danger_plaintext_private_upstream,
        danger_unscrubbed_websocket: r.danger_unscrubbed_websocket,
        websocket,
        paths,
    })
}

/// The message kinds of a route's `websocket` list: `"text"`, `"binary"`,
/// each at most once; absent is none, an empty list a mistake.
fn websocket_kinds(kinds: Option<Vec<String>>) -> Result<WebSocketKinds, RouteError> {
    let Some(kinds) = kinds else { return Ok(WebSocketKinds::default()) };
    if kinds.is_empty() {
        return Err(RouteError::WebSocketEmpty);
    }
    let mut out = WebSocketKinds::default();
    for kind in kinds {
        let listed = match kind.as_str() {
            "text" => &mut out.text,
            "binary" => &mut out.binary,
            _ => return Err(RouteError::WebSocketKind(kind)),
        };
        if std::mem::replace(listed, true) {
            return Err(RouteError::WebSocketDuplicate(kind));
        }
    }
    Ok(out)
}

/// A route's `credential`, its secrets declared and its grant one airlock
/// mints with.
fn build_credential(c: RawCredential, secrets: &BTreeMap<String, SecretSpec>) -> Result<Credential, RouteError> {
    let https = |url: &str| {
        let rest = url.strip_prefix("https://").unwrap_or("");
        // No user information (RFC 3986 §3.2.1) in the authority: it
        // would not be sent, and credentials go in secrets.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        !authority.is_empty()
            && !authority.contains('@')
            && !rest.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    };
    let (grant, token_url, client_id, client_secret, refresh_token, service_account, scope) = match c {
        RawCredential::Oauth2 { grant, token_url, client_id, client_secret, refresh_token, service_account, scope } => {
            (grant, token_url, client_id, client_secret, refresh_token, service_account, scope)
        }
        RawCredential::GithubApp { app_id, installation_id, private_key, api } => {
            let api = api.unwrap_or_else(|| "https://api.github.com".to_owned());
            if !https(&api) {
                return Err(RouteError::TokenUrl(api));
            }
            if !secrets.contains_key(&private_key) {
                return Err(RouteError::UndeclaredSecret(private_key));
            }
            let api = api.trim_end_matches('/').to_owned();
            return Ok(Credential::GitHubApp(GitHubApp { app_id, installation_id, private_key, api }));
        }
        RawCredential::AwsSigV4 { access_key_id, secret_access_key, session_token, region, service } => {
            // A credential scope's parts (region, service) are lowercase
            // letters, digits and '-' in every AWS partition.
            let scope_part = |s: &str| {
                !s.is_empty()
                    && s.len() <= 64
                    && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            };
            for (field, value) in [("region", &region), ("service", &service)] {
                if !scope_part(value) {
                    return Err(RouteError::SigningScope { field, value: value.clone() });
                }
            }
            let aws =
                Credential::AwsSigV4(AwsSigV4 { access_key_id, secret_access_key, session_token, region, service });
            if let Some(secret) = aws.secrets().find(|s| !secrets.contains_key(*s)) {
                return Err(RouteError::UndeclaredSecret(secret.to_owned()));
            }
            return Ok(aws);
        }
    };
    if !https(&token_url) {
        return Err(RouteError::TokenUrl(token_url));
    }
    let needs = |grant: String, field| Err(RouteError::GrantNeeds { grant, field });
    let grant = match (grant.as_str(), refresh_token, service_account) {
        ("jwt_bearer", None, Some(service_account)) if client_id.is_none() && client_secret.is_none() => {
            Grant::JwtBearer { service_account }
        }
        ("jwt_bearer", None, Some(_)) => {
            return needs(grant, "no client_id or client_secret (the key names its account)");
        }
        ("jwt_bearer", ..) => return needs(grant, "service_account, and no refresh_token"),
        (_, _, Some(_)) if grant == "refresh_token" || grant == "client_credentials" => {
            return needs(grant, "no service_account");
        }
        _ if client_id.is_none() && (grant == "refresh_token" || grant == "client_credentials") => {
            return needs(grant, "client_id");
        }
        ("refresh_token", Some(secret), None) => Grant::RefreshToken { secret },
        ("refresh_token", None, None) => return needs(grant, "refresh_token"),
        ("client_credentials", None, None) if client_secret.is_none() => return needs(grant, "client_secret"),
        ("client_credentials", None, None) => Grant::ClientCredentials,
        ("client_credentials", Some(_), None) => return needs(grant, "no refresh_token"),
        _ => return Err(RouteError::Grant(grant)),
    };
    let client_id = client_id.unwrap_or_default();
    let credential = Credential::OAuth2(OAuth2 { grant, token_url, client_id, client_secret, scope });
    if let Some(secret) = credential.secrets().find(|s| !secrets.contains_key(*s)) {
        return Err(RouteError::UndeclaredSecret(secret.to_owned()));
    }
    Ok(credential)
}

/// A route's `client_cert`, its two secrets declared.
fn client_cert(c: RawClientCert, secrets: &BTreeMap<String, SecretSpec>) -> Result<ClientCert, RouteError> {
    for (part, secret) in [("cert", &c.cert), ("key", &c.key)] {
        if !secrets.contains_key(secret) {
            return Err(RouteError::ClientCertSecret { part, secret: secret.clone() });
        }
    }
    Ok(ClientCert { cert: c.cert, key: c.key })
}

/// Marks the secrets `client_cert`s name as PEM text ([`SecretSpec::pem`]:
/// line breaks allowed), and refuses a route that sends one of them in a
/// header, where a line break could inject another.
fn mark_pem_secrets(tenants: &[Tenant], secrets: &mut BTreeMap<String, SecretSpec>) -> Result<(), BuildError> {
    // Client certificates, and service-account keys (JSON, usually on
    // several lines).
    let service_accounts = tenants.iter().flat_map(|t| &t.routes).filter_map(|r| match &r.credential {
        Some(Credential::OAuth2(OAuth2 { grant: Grant::JwtBearer { service_account }, .. })) => {
            Some(service_account.as_str())
        }
        Some(Credential::GitHubApp(app)) => Some(app.private_key.as_str()),
        _ => None,
    });
    let pem: HashSet<&str> = tenants
        .iter()
        .flat_map(|t| t.routes.iter().filter_map(|r| r.client_cert.as_ref()))
        .flat_map(|c| [c.cert.as_str(), c.key.as_str()])
        .chain(service_accounts)
        .collect();
    for t in tenants {
        for r in &t.routes {
            let in_header = std::iter::once(&r.secret).chain(r.add_headers.iter().map(|(_, s)| s));
            if let Some(s) = in_header.into_iter().find(|s| pem.contains(s.as_str())) {
                return Err(BuildError::Route {
                    tenant: t.name.clone(),
                    route: r.name.clone(),
                    error: RouteError::ClientCertSecretInHeader(s.clone()),
                });
            }
        }
    }
    for name in pem {
        if let Some(spec) = secrets.get_mut(name) {
            spec.pem = true;
        }
    }
    Ok(())
}

/// A header name a route config gives, checked.
enum HeaderName {
    /// A token airlock leaves to routes, lower-cased.
    Usable(String),
    /// Not an RFC 9110 token.
    NotAToken,
    /// One airlock consumes or rewrites itself, lower-cased.
    Managed(String),
}

/// Checks a header name a route sends a secret in (`headers`,
/// `add_headers`).
fn header_name(name: &str) -> HeaderName {
    let lower = name.to_ascii_lowercase();
    if lower.is_empty() || !lower.bytes().all(is_tchar) {
        HeaderName::NotAToken
    } else if FORBIDDEN_HEADERS.contains(&lower.as_str()) {
        HeaderName::Managed(lower)
    } else {
        HeaderName::Usable(lower)
    }
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Variables that point at the CA bundle `airlock run`/`env` write
/// (OpenSSL, Python requests, curl, git, pip, grpcio — which reads no
/// other —, and the AWS SDKs and CLI).
pub const BUNDLE_VARS: [&str; 7] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    "AWS_CA_BUNDLE",
];

/// Variables that carry the proxy URL (grpcio reads `grpc_proxy` before
/// the others).
pub const PROXY_VARS: [&str; 5] = ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "grpc_proxy"];

/// Variables that list hosts reached without the proxy (curl, requests,
/// httpx, Go, git and pip read one or the other; grpcio reads
/// `no_grpc_proxy` first).
pub const NO_PROXY_VARS: [&str; 3] = ["NO_PROXY", "no_proxy", "no_grpc_proxy"];

/// Variables a route's `env` may not name beyond those [`reserved_env`]
/// finds by their lists and families: the rest `airlock run`/`env` set
/// (the AWS keys, Node's CA and proxy switch) and those that change how
/// programs are found or run.
pub const RESERVED_ENV: &[&str] = &[
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "NODE_USE_ENV_PROXY",
    "NODE_OPTIONS",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "PATH",
    "HOME",
    "SHELL",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "BASH_ENV",
    "ENV",
    "PERL5OPT",
    "RUBYOPT",
    "JAVA_TOOL_OPTIONS",
    "NODE_PATH",
    "IFS",
    "PROMPT_COMMAND",
    "TMPDIR",
    "DOCKER_HOST",
    "SSH_AUTH_SOCK",
    "EDITOR",
    "VISUAL",
    "PAGER",
];

/// Whether a route's `env` may not name `env` (compared without case:
/// Windows and some tools read variables so): the variables `airlock
/// run`/`env` set ([`BUNDLE_VARS`], [`PROXY_VARS`], [`NO_PROXY_VARS`],
/// [`RESERVED_ENV`]); any `…_PROXY` (npm's, global-agent's, SOCKS: clients
/// read proxies under many names); and the families `AIRLOCK_*`, `DYLD_*`,
/// `LD_*`, `GIT_*` (git runs commands and reads config from them) and
/// `NPM_CONFIG_*`.
pub fn reserved_env(env: &str) -> bool {
    let upper = env.to_ascii_uppercase();
    let set = BUNDLE_VARS.iter().chain(&PROXY_VARS).chain(&NO_PROXY_VARS).chain(RESERVED_ENV);
    set.into_iter().any(|v| v.eq_ignore_ascii_case(&upper))
        || upper.ends_with("_PROXY")
        || ["AIRLOCK_", "DYLD_", "LD_", "GIT_", "NPM_CONFIG_"].iter().any(|p| upper.starts_with(p))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ConfigError;
    use crate::glob::InvalidGlob;
    use crate::host::InvalidPattern;
    use crate::limits::LimitsError;
    use crate::units::InvalidUnit;

    const TOKEN: &str = "0123456789abcdef0123";

    fn load(text: &str) -> Result<Policy, ConfigError> {
        Policy::from_toml(text, "test.toml", Path::new("/etc/airlock"), Path::new("/home/u/.local/share/airlock"))
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
        fn route_error(e: BuildError) -> Option<RouteError> {
            match e {
                BuildError::Route { tenant, route, error } if tenant == "a" && route == "r" => Some(error),
                _ => None,
            }
        }
        type Check = fn(BuildError) -> bool;
        let cases: [(String, Check); 28] = [
            (
                with_routes(&(route("r", "a.test", "AIRLOCK_1") + &route("r", "b.test", "AIRLOCK_2"))),
                |e| matches!(e, BuildError::DuplicateRoute { tenant, route } if tenant == "a" && route == "r"),
            ),
            (with_routes(&(route("r", "a.test", "AIRLOCK_1") + &route("q", "A.test.", "AIRLOCK_2"))), |e| {
                matches!(e, BuildError::OverlappingRoutes { first, second, authority, .. }
                    if first == "r" && second == "q" && authority == "a.test")
            }),
            (
                with_routes(&(route("r", "a.test", "AIRLOCK_1") + &route("q", "b.test", "AIRLOCK_1"))),
                |e| matches!(e, BuildError::DuplicatePlaceholder(p) if p == "AIRLOCK_1"),
            ),
            (
                with_routes(&(route("r", "a.test", "AIRLOCK_1") + &route("q", "b.test", "AIRLOCK_12"))),
                |e| matches!(e, BuildError::NestedPlaceholder { outer, inner } if outer == "AIRLOCK_12" && inner == "AIRLOCK_1"),
            ),
            (
                with_routes(&route("r", "a.test", "short")),
                |e| matches!(route_error(e), Some(RouteError::Placeholder(p)) if p == "short"),
            ),
            (
                with_routes(&route("r", "*.com", "AIRLOCK_1")),
                |e| matches!(route_error(e), Some(RouteError::Host(InvalidPattern::WildcardTooBroad(h))) if h == "*.com"),
            ),
            (
                with_routes(&route("r", "a.test", "AIRLOCK_1").replace("\"s\"", "\"nope\"")),
                |e| matches!(route_error(e), Some(RouteError::UndeclaredSecret(s)) if s == "nope"),
            ),
            (
                with_routes(&(route("r", "a.test", "AIRLOCK_1") + "headers = [\"host\"]\n")),
                |e| matches!(route_error(e), Some(RouteError::ForbiddenHeader(h)) if h == "host"),
            ),
            (
                with_routes(&(route("r", "a.test", "AIRLOCK_1") + "body = \"xml\"\n")),
                |e| matches!(route_error(e), Some(RouteError::BodyKind(b)) if b == "xml"),
            ),
            (with_routes(&(route("r", "a.test", "AIRLOCK_1") + "format = \"Bearer {key}\"\n")), |e| {
                matches!(route_error(e), Some(RouteError::Format(_)))
            }),
            (with_routes(&(route("r", "a.test", "AIRLOCK_1") + "format = \"{secret}:{secret}\"\n")), |e| {
                matches!(route_error(e), Some(RouteError::Format(_)))
            }),
            (with_routes(&(route("r", "a.test", "AIRLOCK_1") + "format = \"Bearer\\n{secret}\"\n")), |e| {
                matches!(route_error(e), Some(RouteError::Format(_)))
            }),
            (
                with_routes(&(route("r", "a.test", "AIRLOCK_1") + "add_headers = { \"x y\" = \"s\" }\n")),
                |e| matches!(route_error(e), Some(RouteError::AddHeaderName(h)) if h == "x y"),
            ),
            (
                with_routes(&(route("r", "a.test", "AIRLOCK_1") + "add_headers = { \"Host\" = \"s\" }\n")),
                |e| matches!(route_error(e), Some(RouteError::AddHeaderForbidden(h)) if h == "host"),
            ),
            (
                with_routes(&(route("r", "a.test", "AIRLOCK_1") + "add_headers = { \"X-Api-Key\" = \"s\" }\n")),
                |e| matches!(route_error(e), Some(RouteError::AddHeaderSwapped(h)) if h == "x-api-key"),
            ),
            (
                with_routes(&(route("r", "a.test", "AIRLOCK_1") + "add_headers = { \"developer-token\" = \"dev\" }\n")),
                |e| {
                    matches!(route_error(e), Some(RouteError::AddHeaderSecret { header, secret })
                        if header == "developer-token" && secret == "dev")
                },
            ),
            (
                with_routes(&(route("r", "a.test", "AIRLOCK_1") + "methods = [\"CONNECT\"]\n")),
                |e| matches!(route_error(e), Some(RouteError::Method(m)) if m == "CONNECT"),
            ),
            (
                with_routes(&(route("r", "a.test", "AIRLOCK_1") + "paths = [\"v1\"]\n")),
                |e| matches!(route_error(e), Some(RouteError::Path(InvalidGlob::NoLeadingSlash(p))) if p == "v1"),
            ),
            (
                "[tenants.a]\ntoken = \"short\"\n".to_owned(),
                |e| matches!(e, BuildError::WeakToken { tenant } if tenant == "a"),
            ),
            ("[proxy]\nlisten = \"nope\"\n".to_owned(), |e| matches!(e, BuildError::Listen(l) if l == "nope")),
            (
                "[secrets.s]\nsource = \"vault\"\n".to_owned(),
                |e| matches!(e, BuildError::UnknownSource { name, kind } if name == "s" && kind == "vault"),
            ),
            (
                "[secrets.s]\nsource = \"env\"\n".to_owned(),
                |e| matches!(e, BuildError::MissingKey { name, kind: "env", .. } if name == "s"),
            ),
            (
                "[secrets.s]\nsource = \"store\"\nvar = \"X\"\n".to_owned(),
                |e| matches!(e, BuildError::KeyNotForSource { key: "var", kind, .. } if kind == "store"),
            ),
            (
                "[secrets.s]\nsource = \"store\"\nttl = \"5 minutes\"\n".to_owned(),
                |e| matches!(e, BuildError::SecretDuration { key: "ttl", error: InvalidUnit::Duration(t), .. } if t == "5 minutes"),
            ),
            (
                "[secrets.s]\nsource = \"env\"\nvar = \"X\"\ntimeout = \"1s\"\n".to_owned(),
                |e| matches!(e, BuildError::KeyNotForSource { key: "timeout", kind, .. } if kind == "env"),
            ),
            (
                "[secrets.s]\nsource = \"keychain\"\ncommand = [\"x\"]\n".to_owned(),
                |e| matches!(e, BuildError::KeyNotForSource { key: "command", kind, .. } if kind == "keychain"),
            ),
            (
                "[secrets.s]\nsource = \"keychain\"\naccount = \"\"\n".to_owned(),
                |e| matches!(e, BuildError::EmptyKeychainItem { name } if name == "s"),
            ),
            ("[limits]\nidle_timeout = \"0s\"\n".to_owned(), |e| {
                matches!(e, BuildError::Limits(LimitsError::Zero { key: "idle_timeout" }))
            }),
        ];
        for (text, want) in cases {
            match load(&text) {
                Ok(_) => panic!("accepted:\n{text}"),
                Err(ConfigError::Invalid { origin, error }) => {
                    assert_eq!(origin, "test.toml");
                    let shown = error.to_string();
                    assert!(want(*error), "got: {shown}\n{text}");
                }
                Err(e) => panic!("not a build error: {e}\n{text}"),
            }
        }
    }

    #[test]
    fn an_oauth2_credential_takes_the_secrets_place() {
        let secrets = "[secrets.cs]\nsource = \"store\"\n[secrets.rt]\nsource = \"store\"\n";
        let config = |credential: &str, secret: bool| {
            let mut r = route("r", "a.test", "AIRLOCK_1");
            if !secret {
                r = r.replace("secret = \"s\"\n", "");
            }
            format!("{secrets}{}", with_routes(&format!("{r}credential = {credential}\n")))
        };
        let refresh = "{ kind = \"oauth2\", grant = \"refresh_token\", token_url = \"https://auth.test/token\", \
                       client_id = \"id\", client_secret = \"cs\", refresh_token = \"rt\", scope = \"ads\" }";
        let p = load(&config(refresh, false)).unwrap();
        let r = &p.tenants[0].routes[0];
        assert_eq!(r.secret, "minted:a/r", "known by a name no declared secret has");
        assert_eq!(r.format.as_deref(), Some("Bearer {secret}"), "sent as a Bearer token");
        assert_eq!(r.secrets().collect::<Vec<_>>(), ["cs", "rt"], "airlock check fetches what it is minted from");
        let client = "{ kind = \"oauth2\", grant = \"client_credentials\", token_url = \"https://auth.test/t\", \
                      client_id = \"id\", client_secret = \"cs\" }";
        assert!(load(&config(client, false)).is_ok());
        let jwt = "{ kind = \"oauth2\", grant = \"jwt_bearer\", token_url = \"https://auth.test/token\", \
                   service_account = \"cs\", scope = \"cloud\" }";
        let app = "{ kind = \"github_app\", app_id = 1, installation_id = 2, private_key = \"cs\" }";
        let p = load(&config(app, false)).unwrap();
        let Some(Credential::GitHubApp(parsed)) = &p.tenants[0].routes[0].credential else { panic!("not an app") };
        assert_eq!(parsed.api, "https://api.github.com", "GitHub's API by default");
        assert!(p.secrets["cs"].pem, "an app key spans lines");
        let plain = app.replace(" }", ", api = \"http://ghe.test/api/v3\" }");
        assert!(matches!(load(&config(&plain, false)), Err(ConfigError::Invalid { .. })), "https only");
        let p = load(&config(jwt, false)).unwrap();
        assert!(p.secrets["cs"].pem, "a service-account key may span lines");
        assert!(matches!(
            load(&config(&jwt.replace("service_account", "refresh_token"), false)),
            Err(ConfigError::Invalid { .. })
        ));
        type Check = fn(&RouteError) -> bool;
        let refused: [(String, Check); 7] = [
            (config(refresh, true), |e| matches!(e, RouteError::SecretWithCredential)),
            (config(&refresh.replace("https://", "http://"), false), |e| matches!(e, RouteError::TokenUrl(_))),
            (config(&refresh.replace("https://", "https://user:pw@"), false), |e| matches!(e, RouteError::TokenUrl(_))),
            (config(&refresh.replace("refresh_token\",", "password\","), false), |e| matches!(e, RouteError::Grant(_))),
            (config(&refresh.replace(", refresh_token = \"rt\"", ""), false), |e| {
                matches!(e, RouteError::GrantNeeds { field: "refresh_token", .. })
            }),
            (config(&client.replace(", client_secret = \"cs\"", ""), false), |e| {
                matches!(e, RouteError::GrantNeeds { field: "client_secret", .. })
            }),
            (
                config(&refresh.replace("\"rt\"", "\"nope\""), false),
                |e| matches!(e, RouteError::UndeclaredSecret(s) if s == "nope"),
            ),
        ];
        for (text, want) in refused {
            match load(&text) {
                Err(ConfigError::Invalid { error, .. }) => match *error {
                    BuildError::Route { error, .. } => assert!(want(&error), "{text}: {error}"),
                    other => panic!("{text}: not a route error: {other}"),
                },
                other => panic!("{text}: {other:?}"),
            }
        }
        let bare = with_routes(&route("r", "a.test", "AIRLOCK_1").replace("secret = \"s\"\n", ""));
        assert!(matches!(load(&bare), Err(ConfigError::Invalid { .. })), "a route needs a secret or a credential");
    }

    #[test]
    fn an_aws_sigv4_credential_signs_with_declared_keys_in_one_scope() {
        let secrets =
            "[secrets.id]\nsource = \"store\"\n[secrets.key]\nsource = \"store\"\n[secrets.tok]\nsource = \"store\"\n";
        let config = |credential: &str, extra: &str| {
            let r = route("r", "s3.eu-west-1.amazonaws.com", "AIRLOCK_AWS").replace("secret = \"s\"\n", "");
            format!("{secrets}{}", with_routes(&format!("{r}{extra}credential = {credential}\n")))
        };
        let aws = "{ kind = \"aws_sigv4\", access_key_id = \"id\", secret_access_key = \"key\", \
                   session_token = \"tok\", region = \"eu-west-1\", service = \"s3\" }";
        let p = load(&config(aws, "")).unwrap();
        let r = &p.tenants[0].routes[0];
        let Some(Credential::AwsSigV4(parsed)) = &r.credential else { panic!("not aws") };
        assert_eq!((parsed.region.as_str(), parsed.service.as_str()), ("eu-west-1", "s3"));
        assert_eq!(r.secrets().collect::<Vec<_>>(), ["id", "key", "tok"], "airlock check fetches all three");
        assert_eq!(r.format, None, "no Bearer format: the request is signed");
        assert!(load(&config(&aws.replace("session_token = \"tok\", ", ""), "")).is_ok(), "the token is optional");
        type Check = fn(&RouteError) -> bool;
        let refused: [(String, Check); 6] = [
            (config(&aws.replace("eu-west-1", "EU West"), ""), |e| {
                matches!(e, RouteError::SigningScope { field: "region", .. })
            }),
            (config(&aws.replace("\"s3\"", "\"\""), ""), |e| {
                matches!(e, RouteError::SigningScope { field: "service", .. })
            }),
            (
                config(&aws.replace("\"tok\"", "\"nope\""), ""),
                |e| matches!(e, RouteError::UndeclaredSecret(s) if s == "nope"),
            ),
            (config(aws, "body = \"json\"\n"), |e| matches!(e, RouteError::SignedRouteSwaps("body"))),
            (config(aws, "query = [\"key\"]\n"), |e| matches!(e, RouteError::SignedRouteSwaps("query"))),
            (config(aws, "format = \"Bearer {secret}\"\n"), |e| matches!(e, RouteError::SignedRouteSwaps("format"))),
        ];
        for (text, want) in refused {
            match load(&text) {
                Err(ConfigError::Invalid { error, .. }) => match *error {
                    BuildError::Route { error, .. } => assert!(want(&error), "{text}: {error}"),
                    other => panic!("{text}: not a route error: {other}"),
                },
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn body_and_format_are_read_when_valid() {
        let p = load(&with_routes(
            &(route("r", "a.test", "AIRLOCK_1") + "body = \"json\"\nformat = \"Bearer {secret}\"\n"),
        ))
        .unwrap();
        let (_, t) = p.tenants().next().unwrap();
        assert_eq!(t.routes[0].body, Some(BodyKind::Json));
        assert_eq!(t.routes[0].format.as_deref(), Some("Bearer {secret}"));
        assert!(BodyKind::Json.accepts("application/vnd.api+json") && !BodyKind::Json.accepts("text/plain"));
        assert!(BodyKind::Text.accepts("") && !BodyKind::Text.accepts("multipart/form-data"));
        assert!(!BodyKind::Text.accepts("application/grpc") && !BodyKind::Text.accepts("application/grpc-web+proto"));
    }

    #[test]
    fn add_headers_name_secrets_sent_beside_the_placeholder() {
        let text =
            with_routes(&(route("r", "a.test", "AIRLOCK_1") + "add_headers = { \"Developer-Token\" = \"s\" }\n"));
        let p = load(&text).unwrap();
        let (_, t) = p.tenants().next().unwrap();
        assert_eq!(t.routes[0].add_headers, vec![("developer-token".to_owned(), "s".to_owned())]);
        assert_eq!(t.routes[0].secrets().collect::<Vec<_>>(), ["s", "s"]);
    }

    #[test]
    fn websocket_lists_message_kinds() {
        let with = |list: &str| with_routes(&(route("r", "a.test", "AIRLOCK_1") + &format!("websocket = {list}\n")));
        let kinds = |text: &str| load(text).unwrap().tenants[0].routes[0].websocket;
        assert_eq!(kinds(&with(r#"["text"]"#)), WebSocketKinds { text: true, binary: false });
        assert_eq!(kinds(&with(r#"["binary", "text"]"#)), WebSocketKinds { text: true, binary: true });
        assert!(!kinds(&with_routes(&route("r", "a.test", "AIRLOCK_1"))).any(), "absent: no kind");
        type Check = fn(&RouteError) -> bool;
        let refused: [(&str, Check); 5] = [
            (r#"[]"#, |e| matches!(e, RouteError::WebSocketEmpty)),
            (r#"["text", "text"]"#, |e| matches!(e, RouteError::WebSocketDuplicate(k) if k == "text")),
            (r#"["binary", "text", "binary"]"#, |e| matches!(e, RouteError::WebSocketDuplicate(k) if k == "binary")),
            (r#"["Text"]"#, |e| matches!(e, RouteError::WebSocketKind(k) if k == "Text")),
            (r#"["text", "ping"]"#, |e| matches!(e, RouteError::WebSocketKind(k) if k == "ping")),
        ];
        for (list, want) in refused {
            match load(&with(list)) {
                Err(ConfigError::Invalid { error, .. }) => match *error {
                    BuildError::Route { error, .. } => assert!(want(&error), "{list}: {error}"),
                    other => panic!("{list}: not a route error: {other}"),
                },
                other => panic!("{list}: {other:?}"),
            }
        }
        let text = with(r#""text""#);
        assert!(matches!(load(&text), Err(ConfigError::Parse { .. })), "a string, not a list");
    }

    #[test]
    fn client_cert_names_two_declared_secrets_that_hold_pem_text() {
        let pem = "[secrets.cert]\nsource = \"store\"\n[secrets.key]\nsource = \"store\"\n";
        let text = format!(
            "{pem}{}",
            with_routes(&(route("r", "a.test", "AIRLOCK_1") + "client_cert = { cert = \"cert\", key = \"key\" }\n"))
        );
        let p = load(&text).unwrap();
        let r = &p.tenants[0].routes[0];
        assert_eq!(r.client_cert, Some(ClientCert { cert: "cert".to_owned(), key: "key".to_owned() }));
        assert_eq!(r.secrets().collect::<Vec<_>>(), ["s", "cert", "key"], "airlock check fetches them");
        assert!(p.secrets["cert"].pem && p.secrets["key"].pem && !p.secrets["s"].pem);
        // Without the key, existing routes are as they were.
        let plain = load(&with_routes(&route("r", "a.test", "AIRLOCK_1"))).unwrap();
        assert_eq!(plain.tenants[0].routes[0].client_cert, None);
        assert!(!plain.secrets["s"].pem);

        let route_error = |text: &str| match load(text).unwrap_err() {
            ConfigError::Invalid { error, .. } => match *error {
                BuildError::Route { tenant, route, error } if tenant == "a" && route == "r" => Some(error),
                _ => None,
            },
            _ => None,
        };
        let undeclared =
            with_routes(&(route("r", "a.test", "AIRLOCK_1") + "client_cert = { cert = \"s\", key = \"k\" }\n"));
        let e = route_error(&undeclared);
        assert!(matches!(&e, Some(RouteError::ClientCertSecret { part: "key", secret }) if secret == "k"), "{e:?}");
        assert_eq!(
            e.unwrap().to_string(),
            "client_cert: secret 'k' (the key) is not declared; add a [secrets.k] table"
        );
        // `s` is the route's header secret: PEM text (line breaks) never
        // goes in a header.
        let in_header =
            with_routes(&(route("r", "a.test", "AIRLOCK_1") + "client_cert = { cert = \"s\", key = \"s\" }\n"));
        let e = route_error(&in_header);
        assert!(matches!(&e, Some(RouteError::ClientCertSecretInHeader(s)) if s == "s"), "{e:?}");
        let unknown =
            with_routes(&(route("r", "a.test", "AIRLOCK_1") + "client_cert = { cert = \"s\", chain = \"s\" }\n"));
        let e = load(&unknown).unwrap_err().to_string();
        assert!(e.contains("chain"), "{e}");
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
}
