//! The request context every phase reads and the record phase turns into
//! the audit record: who (tenant), where (destination), under which route,
//! which request (id, start), what (method, scrubbed path), and what
//! happened so far (a secret injected, bytes sent).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use airlock_policy::{RouteId, TenantId};

use crate::audit;
use crate::conn::ConnGuard;
use crate::respond::request_id;
use crate::state::{Loaded, Shared};

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
    pub(crate) fn default_port(&self) -> u16 {
        if self.https { 443 } else { 80 }
    }

    /// `host[:port]`, the port left out when it is the scheme's default and
    /// an IPv6 literal in brackets.
    pub(crate) fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == self.default_port() { host } else { format!("{host}:{}", self.port) }
    }

    /// `scheme://host[:port]` for the upstream URI.
    pub(crate) fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }
}

/// One request (or refused connection) as every phase sees it. Made when
/// the request arrives; the record phase ([`super::record`]) builds its
/// one audit record from it.
pub(crate) struct RequestCtx {
    pub(crate) shared: Arc<Shared>,
    /// The config snapshot the request runs under.
    pub(crate) loaded: Arc<Loaded>,
    /// The id the agent (`x-airlock-request-id`), the logs and the audit
    /// record see.
    pub(crate) request_id: String,
    /// When it arrived, RFC 3339.
    pub(crate) ts: String,
    pub(crate) started: Instant,
    /// The agent's address.
    pub(crate) peer: SocketAddr,
    /// The method, scrubbed like the path once the tenant is known.
    pub(crate) method: String,
    /// The authenticated tenant; None before authentication.
    pub(crate) tenant: Option<TenantId>,
    /// Its name (also known for a tenant a reload removed).
    pub(crate) tenant_name: Option<String>,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The path, scrubbed with the secrets the vault knew at
    /// `path_version` (unscrubbed only before authentication, where it is
    /// never a request's: empty, or the action API's own).
    pub(crate) path: String,
    /// The query string, scrubbed like the path; None without one.
    pub(crate) query: Option<String>,
    pub(crate) path_version: u64,
    /// The route decided, once decided.
    pub(crate) route: OnceLock<RouteId>,
    /// Set once a secret is in the request: a refusal after that point (of
    /// the upstream's answer) is recorded as injected, as the key may have
    /// left.
    pub(crate) injected: AtomicBool,
    /// Request body bytes sent upstream.
    pub(crate) bytes_up: Arc<AtomicU64>,
    /// What the request body held: placeholders swapped and passed.
    pub(crate) body: Arc<crate::substitute::Tally>,
    /// Watched by the audit writer until the record is written (requests
    /// of a tenant only).
    pub(crate) in_flight: Option<audit::InFlight>,
}

impl RequestCtx {
    /// A request (or connection) not yet authenticated: a CONNECT or
    /// absolute-form request on the listener, an action API call, a head
    /// hyper refused. `host` is empty and `port` 0 where there is no
    /// destination yet.
    pub(crate) fn arrived(shared: &Arc<Shared>, peer: SocketAddr, method: &str, host: &str, port: u16) -> Self {
        RequestCtx {
            shared: Arc::clone(shared),
            loaded: shared.loaded(),
            request_id: request_id(),
            ts: audit::now_rfc3339(),
            started: Instant::now(),
            peer,
            method: method.to_owned(),
            tenant: None,
            tenant_name: None,
            host: host.to_owned(),
            port,
            path: String::new(),
            query: None,
            path_version: 0,
            route: OnceLock::new(),
            injected: AtomicBool::new(false),
            bytes_up: Arc::new(AtomicU64::new(0)),
            body: Arc::default(),
            in_flight: None,
        }
    }

    /// The same, on a connection of tenant `dest.tenant` (an intercepted
    /// connection refused before its first request, or a request on one).
    pub(crate) fn on_connection(shared: &Arc<Shared>, dest: &Destination, method: &str) -> Self {
        let mut ctx = RequestCtx::arrived(shared, dest.peer, method, &dest.host, dest.port);
        ctx.tenant = ctx.loaded.policy.tenant_by_name(&dest.tenant).map(|(t, _)| t);
        ctx.tenant_name = Some(dest.tenant.clone());
        ctx
    }

    /// Sets the authenticated tenant.
    pub(crate) fn authenticated(&mut self, tenant: TenantId) {
        self.tenant = Some(tenant);
        self.tenant_name = Some(self.loaded.policy.tenant(tenant).name.clone());
    }

    /// Starts a request of an authenticated tenant: its path and query
    /// scrubbed, and a `begin` line written if it runs long (see
    /// [`audit::AuditLog::begin`]).
    pub(crate) fn begin(mut self, path: &str, query: Option<&str>) -> Self {
        // The version is read first: a change while scrubbing shows as a
        // newer version at record time, and the record scrubs again.
        self.path_version = self.shared.vault.version();
        self.path = self.scrub(path);
        self.query = query.map(|q| self.scrub(q));
        // A method is any token the agent chose: one could be a secret.
        self.method = self.scrub(&self.method);
        self.in_flight = Some(self.shared.audit.begin(audit::Event {
            ts: self.ts.clone(),
            event: audit::EventKind::Begin,
            request_id: Some(self.request_id.clone()),
            tenant: self.tenant_name.clone(),
            method: Some(self.method.clone()),
            host: Some(self.host.clone()),
            port: Some(self.port),
            path: Some(audit::clip_path(self.path.clone())),
            detail: None,
        }));
        self
    }

    /// `text` with every secret of the tenant's routes (and any the vault
    /// knows) replaced; unchanged before authentication, where there is no
    /// set to scrub with.
    pub(crate) fn scrub(&self, text: &str) -> String {
        match self.tenant {
            Some(t) => self.loaded.scrubbers.tenant_set(&self.loaded.policy, &self.shared.vault, t).scrub_text(text),
            None => text.to_owned(),
        }
    }

    /// The decided route.
    pub(crate) fn route(&self) -> Option<RouteId> {
        self.route.get().copied()
    }

    /// Notes that a secret is in the request.
    pub(crate) fn set_injected(&self, injected: bool) {
        self.injected.store(injected, Ordering::Relaxed);
    }

    /// Whether a secret is in the request.
    pub(crate) fn injected(&self) -> bool {
        self.injected.load(Ordering::Relaxed) || self.body.swapped()
    }
}
