//! Why a config could not be loaded: [`ConfigError`] for the file as a
//! whole, [`BuildError`] and [`RouteError`] for a config that parsed but is
//! not a valid policy.

use std::path::PathBuf;

use crate::glob::InvalidGlob;
use crate::host::InvalidPattern;
use crate::limits::LimitsError;
use crate::units::InvalidUnit;

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
    #[error("invalid config {origin}: {error}")]
    Invalid {
        /// Where the text came from.
        origin: String,
        /// What is wrong and where (tenant, route, key). In the message,
        /// so not also a `source`. Boxed: it is large, and errors travel
        /// by value.
        error: Box<BuildError>,
    },
}

/// Why a config that parsed is not a valid policy. Each variant carries
/// what names the place (table, secret, tenant, route, key) and the
/// offending value; the message says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `[proxy] listen` is not a socket address.
    #[error("[proxy] listen = '{0}' is not an address like 127.0.0.1:8080")]
    Listen(String),
    /// A `[proxy] resolve` key is not a host.
    #[error("[proxy] resolve: '{0}' is not a host")]
    ResolveHost(String),
    /// A `[proxy] resolve` value is not an IP address.
    #[error("[proxy] resolve: '{ip}' (for {host}) is not an IP address")]
    ResolveIp {
        /// The key, as written.
        host: String,
        /// The value, as written.
        ip: String,
    },
    /// `[limits]` is not valid.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// A secret's name is not letters, digits, `_`, `-` and `.`.
    #[error("[secrets.{name}]: names are letters, digits, '_', '-' and '.' only")]
    SecretName {
        /// The name, as written.
        name: String,
    },
    /// A secret's `ttl` or `timeout` is not a duration.
    #[error("[secrets.{name}] {key}: {error}")]
    SecretDuration {
        /// The secret.
        name: String,
        /// `ttl` or `timeout`.
        key: &'static str,
        /// What is wrong with the value.
        error: InvalidUnit,
    },
    /// A secret's `source` is none airlock knows.
    #[error("[secrets.{name}]: unknown source \"{kind}\" (expected store, env, file, command or keychain)")]
    UnknownSource {
        /// The secret.
        name: String,
        /// The source, as written.
        kind: String,
    },
    /// A secret sets a key its source does not take.
    #[error("[secrets.{name}]: '{key}' does not apply to source = \"{kind}\"")]
    KeyNotForSource {
        /// The secret.
        name: String,
        /// The key.
        key: &'static str,
        /// The secret's source.
        kind: String,
    },
    /// A secret lacks the key its source needs.
    #[error("[secrets.{name}]: source = \"{kind}\" needs {example}")]
    MissingKey {
        /// The secret.
        name: String,
        /// The secret's source.
        kind: &'static str,
        /// The key needed, with an example value.
        example: &'static str,
    },
    /// A keychain secret names an empty service or account.
    #[error("[secrets.{name}]: keychain service and account must not be empty")]
    EmptyKeychainItem {
        /// The secret.
        name: String,
    },
    /// A tenant's name is not letters, digits, `_`, `-` and `.`.
    #[error("tenant '{tenant}': names are letters, digits, '_', '-' and '.' only")]
    TenantName {
        /// The name, as written.
        tenant: String,
    },
    /// A tenant's token is too short or holds spaces or control
    /// characters. Never carries the token.
    #[error(
        "tenant '{tenant}': token must be at least 16 printable characters without spaces \
         (`airlock init` generates one)"
    )]
    WeakToken {
        /// The tenant.
        tenant: String,
    },
    /// A route is not valid.
    #[error("tenant '{tenant}', route '{route}': {error}")]
    Route {
        /// The tenant.
        tenant: String,
        /// The route's name, as written.
        route: String,
        /// What is wrong with it. In the message, so not also a `source`.
        error: RouteError,
    },
    /// Two routes of a tenant share a name.
    #[error("tenant '{tenant}': two routes are named '{route}'")]
    DuplicateRoute {
        /// The tenant.
        tenant: String,
        /// The name.
        route: String,
    },
    /// Two routes of a tenant serve the same host pattern and port.
    #[error(
        "tenant '{tenant}': routes '{first}' and '{second}' both serve {authority}; a request could match \
         either — merge them into one route"
    )]
    OverlappingRoutes {
        /// The tenant.
        tenant: String,
        /// The route declared first.
        first: String,
        /// The route declared second.
        second: String,
        /// The host pattern and port both serve.
        authority: String,
    },
    /// Two routes (of any tenants) share a placeholder.
    #[error("placeholder '{0}' is used by more than one route; each must be unique")]
    DuplicatePlaceholder(String),
    /// A placeholder contains another, so swapping one would corrupt the
    /// other.
    #[error("placeholder '{outer}' contains placeholder '{inner}'; choose names that do not overlap")]
    NestedPlaceholder {
        /// The longer placeholder.
        outer: String,
        /// The placeholder inside it.
        inner: String,
    },
    /// The placeholder automaton could not be built (too many or too long
    /// placeholders).
    #[error("cannot build the placeholder matcher: {0}")]
    Matcher(aho_corasick::BuildError),
}

/// Why one route is not valid; [`BuildError::Route`] names the tenant and
/// route.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The route's name is not letters, digits, `_`, `-` and `.`.
    #[error("route names are letters, digits, '_', '-' and '.' only")]
    Name,
    /// The host is not `name`, `*.suffix` or either with `:port`.
    #[error("host {0}")]
    Host(InvalidPattern),
    /// The route has neither a `secret` nor a `credential`.
    #[error("the route needs a secret (or a credential airlock mints)")]
    MissingSecret,
    /// The route has both a `secret` and a `credential`.
    #[error("the route has both a secret and a credential; a credential takes the secret's place: remove one")]
    SecretWithCredential,
    /// A credential's `token_url` (or a GitHub App's `api`) is not an
    /// `https://` URL.
    #[error("credential: '{0}' must be an https:// URL")]
    TokenUrl(String),
    /// A grant airlock does not mint with.
    #[error(
        "credential: grant '{0}' is not one airlock mints with; use \"refresh_token\", \"client_credentials\" or \
         \"jwt_bearer\""
    )]
    Grant(String),
    /// A grant lacks what it needs, or has what it must not.
    #[error("credential: grant '{grant}' needs {field}")]
    GrantNeeds {
        /// The grant.
        grant: String,
        /// The key it needs (or "no refresh_token").
        field: &'static str,
    },
    /// An `aws_sigv4` credential's region or service is not a credential
    /// scope part.
    #[error("credential: {field} '{value}' must be lowercase letters, digits and '-' (as in eu-west-1, s3)")]
    SigningScope {
        /// `region` or `service`.
        field: &'static str,
        /// What it was.
        value: String,
    },
    /// A route that signs (`aws_sigv4`) also swaps its placeholder
    /// somewhere.
    #[error(
        "credential: an aws_sigv4 route signs the whole request with its placeholder as the access key id; it takes \
         no '{0}'"
    )]
    SignedRouteSwaps(&'static str),
    /// The route's secret has no `[secrets.*]` table.
    #[error("secret '{0}' is not declared; add a [secrets.{0}] table")]
    UndeclaredSecret(String),
    /// The placeholder is too short or holds other characters than
    /// letters, digits, `_`, `-` and `.`.
    #[error("placeholder '{0}' must be at least 8 characters of letters, digits, '_', '-' or '.'")]
    Placeholder(String),
    /// `env` is not an environment variable name.
    #[error("env '{0}' is not a valid environment variable name")]
    EnvName(String),
    /// `env` names a variable `airlock run`/`env` set themselves (the
    /// proxy, `NO_PROXY`, the CA files) or one that changes how programs
    /// run (`PATH`, `LD_PRELOAD`, …): the placeholder would replace it.
    #[error(
        "env '{0}' is a variable airlock sets for the agent or one that changes how programs run; name the variable \
         the API's SDK reads"
    )]
    EnvReserved(String),
    /// An entry of `headers` is not a header name.
    #[error("'{0}' is not a header name")]
    HeaderName(String),
    /// An entry of `headers` names a header the proxy consumes or rewrites.
    #[error("a secret may not be injected into the '{0}' header")]
    ForbiddenHeader(String),
    /// An `add_headers` name is not a header name.
    #[error("add_headers: '{0}' is not a header name")]
    AddHeaderName(String),
    /// An `add_headers` name is one the proxy consumes or rewrites.
    #[error("add_headers: a secret may not be sent in the '{0}' header")]
    AddHeaderForbidden(String),
    /// An `add_headers` name is also a header the placeholder is swapped in.
    #[error("add_headers: '{0}' is also in headers, where the placeholder is swapped; name it in one of the two")]
    AddHeaderSwapped(String),
    /// An `add_headers` secret has no `[secrets.*]` table.
    #[error("add_headers: secret '{secret}' (for '{header}') is not declared; add a [secrets.{secret}] table")]
    AddHeaderSecret {
        /// The header.
        header: String,
        /// The secret named.
        secret: String,
    },
    /// A `client_cert` secret has no `[secrets.*]` table.
    #[error("client_cert: secret '{secret}' (the {part}) is not declared; add a [secrets.{secret}] table")]
    ClientCertSecret {
        /// `"cert"` or `"key"`.
        part: &'static str,
        /// The secret named.
        secret: String,
    },
    /// A secret a `client_cert` names (PEM text, which spans lines) is
    /// also one a header gets (the route's `secret`, an `add_headers`
    /// one), in this route or another.
    #[error(
        "secret '{0}' is a client_cert's PEM text and cannot also be sent in a header (as a route's secret or in \
         add_headers); declare a separate secret"
    )]
    ClientCertSecretInHeader(String),
    /// A `query` entry is not a query parameter name.
    #[error("query: '{0}' is not a query parameter name (no '&', '=', '#', '%', spaces or control characters)")]
    QueryName(String),
    /// `body` names no body format airlock substitutes in.
    #[error("body: '{0}' is not a body format; use \"form\", \"json\" or \"text\"")]
    BodyKind(String),
    /// `format` does not hold `{{secret}}` exactly once, or holds characters
    /// a header value may not.
    #[error("format: '{0}' must hold {{secret}} exactly once (e.g. \"Bearer {{secret}}\") and no control characters")]
    Format(String),
    /// An entry of `methods` is not a method a route may allow.
    #[error("'{0}' is not an allowed HTTP method")]
    Method(String),
    /// An entry of `paths` is not a path glob.
    #[error("{0}")]
    Path(InvalidGlob),
    /// `max_request_body` is not a size.
    #[error("max_request_body: {0}")]
    MaxRequestBody(InvalidUnit),
    /// A `websocket` entry is not a message kind.
    #[error("websocket: '{0}' is not a message kind; use \"text\", \"binary\" or both")]
    WebSocketKind(String),
    /// `websocket` is an empty list.
    #[error("websocket: the list is empty; name \"text\", \"binary\" or both, or leave the key out")]
    WebSocketEmpty,
    /// A `websocket` entry is listed twice.
    #[error("websocket: '{0}' is listed twice")]
    WebSocketDuplicate(String),
}
