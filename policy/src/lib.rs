//! airlock's policy: the config schema, tenants, routes, the pure decision
//! function and the secret sources (the vault side).
//!
//! This crate knows nothing of hyper, TLS or sockets. [`Policy::decide`] is a
//! pure function of the request's tenant, method, host, port, path and
//! headers, so it can be tested exhaustively on its own. The [`secrets`]
//! module is the only place that reads the environment, files or runs vault
//! commands; nothing else here performs I/O beyond reading the config file.
//!
//! Invariants this crate keeps:
//! - after [`Policy::load`] returns, the policy is valid: hosts are parsed,
//!   placeholders are unique across every tenant, routes are unambiguous and
//!   every route's secret is declared;
//! - a secret value never appears in an error, a `Debug` output or a log line
//!   ([`secrets::SecretValue`] prints `[secret]`).
//!
//! Modules, each importing only those before it (no module cycles): `units`
//! (durations and sizes), `websocket` (message kinds), `glob`, [`host`], [`inject`], [`limits`],
//! [`secrets`] (specs, values and the vault), `policy` (the checked types),
//! `config` (schema, build and starter: text into a `Policy`) and `decide`.
#![deny(missing_docs)]

mod config;
mod decide;
mod glob;
pub mod host;
pub mod inject;
pub mod limits;
mod policy;
pub mod secrets;
pub mod sigv4;
mod units;
mod websocket;

pub use config::{
    BUNDLE_VARS, BuildError, ConfigError, NO_PROXY_VARS, PROXY_VARS, RESERVED_ENV, RouteError, reserved_env,
    starter_config,
};
pub use decide::{AuthError, ConnectAction, Decision, Denial, DenialCode, Injection, RequestInfo};
pub use glob::InvalidGlob;
pub use limits::Limits;
pub use policy::{
    AuditSettings, AwsSigV4, BodyKind, ClientCert, Credential, Egress, GitHubApp, Grant, MINTED_PREFIX, OAuth2, Policy,
    ProxySettings, Route, RouteId, SECRET_SLOT, Tenant, TenantId,
};
pub use secrets::{DEFAULT_COMMAND_TIMEOUT, DEFAULT_COMMAND_TTL, SecretSource, SecretSpec};
pub use units::InvalidUnit;
pub use websocket::WebSocketKinds;
