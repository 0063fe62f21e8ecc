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
#![deny(missing_docs)]

mod config;
mod decide;
mod glob;
pub mod host;
pub mod inject;
pub mod limits;
pub mod secrets;

pub use config::{
    AuditSettings, ConfigError, DEFAULT_COMMAND_TIMEOUT, DEFAULT_COMMAND_TTL, Egress, Policy, ProxySettings, Route,
    RouteId, SecretSource, SecretSpec, Tenant, TenantId, starter_config,
};
pub use decide::{AuthError, ConnectAction, Decision, Denial, DenialCode, Injection, RequestInfo};
pub use limits::Limits;
