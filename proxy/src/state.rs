//! The proxy's shared state: the config snapshot every request takes
//! (policy, scrubbers, upstream clients), the vault, the leaf cache, the
//! audit log and the authentication throttle, and the reload that swaps in
//! a new snapshot. Everything above it — the listener, CONNECT handling,
//! interception, tunnels and the pipeline — reads it; it imports none of
//! them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use airlock_ca::LeafCache;
use airlock_policy::Policy;
use airlock_policy::secrets::Vault;

use crate::audit::AuditLog;
use crate::throttle::AuthThrottle;
use crate::upstream::{TrustError, Upstream};

/// One loaded config and what is built from it. Requests take a snapshot;
/// a reload swaps in a new one, so in-flight requests finish on the old.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) policy: Arc<Policy>,
    pub(crate) scrubbers: crate::scrub::Scrubbers,
    pub(crate) upstream: Upstream,
}

impl Loaded {
    pub(crate) fn new(policy: Policy, listen: SocketAddr) -> Result<Self, TrustError> {
        for (_, tenant) in policy.tenants() {
            for route in &tenant.routes {
                if route.danger_plaintext_private_upstream {
                    warn!(tenant = %tenant.name, route = %route.name, "danger_plaintext_private_upstream: this route's secret may be sent in cleartext to a private address");
                }
                if route.danger_unscrubbed_websocket {
                    warn!(tenant = %tenant.name, route = %route.name, "danger_unscrubbed_websocket: this route's WebSocket frames reach the agent unscrubbed");
                }
            }
        }
        // Two routes minting from one refresh token: a provider that
        // rotates it revokes the one the other holds.
        let mut refreshed_by: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        for (_, tenant) in policy.tenants() {
            for route in &tenant.routes {
                if let Some(airlock_policy::Credential::OAuth2(airlock_policy::OAuth2 {
                    grant: airlock_policy::Grant::RefreshToken { secret },
                    ..
                })) = &route.credential
                    && let Some(other) = refreshed_by.insert(secret, &route.name)
                {
                    warn!(secret = %secret, first = %other, second = %route.name, "two routes mint from one refresh token: a provider that rotates refresh tokens will revoke the one the other holds");
                }
            }
        }
        let mut settings = policy.proxy.clone();
        settings.listen = listen;
        let upstream = Upstream::new(&settings, &policy.limits)?;
        Ok(Loaded { policy: Arc::new(policy), scrubbers: crate::scrub::Scrubbers::default(), upstream })
    }
}

/// Why a reload was refused (the old config keeps serving).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new config is invalid.
    #[error(transparent)]
    Config(#[from] airlock_policy::ConfigError),
    /// Its upstream trust store could not be built.
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// Everything a connection needs, shared by all of them.
#[derive(Debug)]
pub(crate) struct Shared {
    loaded: std::sync::RwLock<Arc<Loaded>>,
    /// Held by the one reload running.
    reloading: std::sync::Mutex<()>,
    pub(crate) vault: Arc<Vault>,
    /// Secret fetches under way, one per secret.
    pub(crate) fetches: crate::fetch::Fetches,
    pub(crate) certs: LeafCache,
    /// The tokens airlock minted, kept across reloads.
    pub(crate) minter: crate::mint::Minter,
    /// The request bodies held to be signed, over every request.
    pub(crate) signing_budget: crate::sigv4::SigningBudget,
    pub(crate) audit: AuditLog,
    /// Wrong proxy credentials, per peer address: backoff and coalesced
    /// audit records.
    pub(crate) auth: AuthThrottle,
    pub(crate) listen: SocketAddr,
    /// Which home this proxy serves, and the key proving it.
    pub(crate) instance: crate::instance::Instance,
    /// Tokens that replace the config's at every load (tenant, token): a
    /// proxy private to one agent accepts only tokens of its own.
    pub(crate) tokens: Vec<(String, zeroize::Zeroizing<String>)>,
    home: PathBuf,
    pub(crate) config: PathBuf,
}

impl Shared {
    /// The state of a proxy serving `policy` (loaded from `config`) on
    /// `listen`. Every secret is fetched now: the redactor must know all
    /// values before the first response, whichever route it comes from.
    pub(crate) fn new(
        home: &Path,
        config: &Path,
        policy: Policy,
        listen: SocketAddr,
        certs: LeafCache,
        audit: AuditLog,
        instance: crate::instance::Instance,
    ) -> Result<Self, TrustError> {
        let vault = Arc::new(Vault::new(home));
        for e in vault.prefetch(policy.secrets()) {
            warn!(error = %e, "secret unavailable; requests that need it will be refused until it is fixed");
        }
        Ok(Shared {
            loaded: std::sync::RwLock::new(Arc::new(Loaded::new(policy, listen)?)),
            reloading: std::sync::Mutex::new(()),
            vault,
            fetches: crate::fetch::Fetches::default(),
            certs,
            minter: crate::mint::Minter::default(),
            signing_budget: crate::sigv4::SigningBudget::default(),
            auth: AuthThrottle::new(audit.clone()),
            audit,
            listen,
            instance,
            tokens: Vec::new(),
            home: home.to_owned(),
            config: config.to_owned(),
        })
    }

    /// `AIRLOCK_HOME`.
    pub(crate) fn home(&self) -> &Path {
        &self.home
    }

    /// The current config snapshot.
    pub(crate) fn loaded(&self) -> Arc<Loaded> {
        Arc::clone(&self.loaded.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Loads the config file again and swaps it in atomically. An invalid
    /// config is refused and the old one keeps serving. One reload runs at
    /// a time, and each reads the file once it runs, so the newest file
    /// wins however reloads overlap (a file edit and a SIGHUP). It blocks
    /// (vault commands, the trust store): call it off the async workers.
    pub(crate) fn reload(&self) -> Result<(), ReloadError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let mut policy = Policy::load(&self.config, &self.home)?;
        replace_tokens(&mut policy, &self.tokens);
        if policy.proxy.listen != self.loaded().policy.proxy.listen {
            warn!("[proxy] listen changed; it takes effect at the next restart");
        }
        let loaded = Loaded::new(policy, self.listen)?;
        // Values the new config changes are forgotten (and stay known to the
        // redactor for a grace period); unchanged ones are not fetched again.
        self.vault.retire_changed(loaded.policy.secrets());
        for e in self.vault.prefetch(loaded.policy.secrets()) {
            warn!(error = %e, "secret unavailable after reload");
        }
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        info!(config = %self.config.display(), "config reloaded");
        Ok(())
    }
}

/// Gives each tenant of `tokens` its token in place of the config's (a
/// proxy private to one agent, at its first load and every reload).
pub(crate) fn replace_tokens(policy: &mut Policy, tokens: &[(String, zeroize::Zeroizing<String>)]) {
    for (tenant, token) in tokens {
        policy.set_token(tenant, token);
    }
}
