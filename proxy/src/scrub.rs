//! Which patterns scrub which response: per tenant, every secret airlock
//! knows (replaced by the tenant's placeholder for it, else `[REDACTED]`),
//! plus the header values injected on the request.
//!
//! Sets are built once per vault version and tenant, and once per distinct
//! set of injected values (cached), never per request.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use airlock_policy::secrets::Vault;
use airlock_policy::{Policy, TenantId};

use crate::redact::{PatternSet, PatternSetBuilder, REDACTED, SecretForms};

/// Cached injected-value sets kept at most; the cache is cleared when full.
const EXTRAS_CAPACITY: usize = 1024;

#[derive(Default)]
struct State {
    version: Option<u64>,
    tenants: HashMap<TenantId, (PatternSetBuilder, Arc<PatternSet>)>,
    extras: HashMap<u64, Arc<PatternSet>>,
}

/// The pattern sets for one loaded policy.
#[derive(Default)]
pub(crate) struct Scrubbers {
    state: Mutex<State>,
}

impl std::fmt::Debug for Scrubbers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubbers").finish_non_exhaustive()
    }
}

impl Scrubbers {
    /// The set for a response to `tenant`, given the `(injected, original)`
    /// header values of its request.
    pub(crate) fn for_request(
        &self,
        policy: &Policy,
        vault: &Vault,
        tenant: TenantId,
        injected: &[(Vec<u8>, Vec<u8>)],
    ) -> Arc<PatternSet> {
        let version = vault.version();
        // A poisoned lock means a build panicked; the maps are still valid.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.version != Some(version) {
            *state = State { version: Some(version), ..State::default() };
        }
        let state = &mut *state;
        // Borrowed, not cloned: the builder holds every form of every
        // secret, and is only needed when an injected set is built.
        let (builder, base) = state.tenants.entry(tenant).or_insert_with(|| {
            let b = tenant_builder(policy, vault, tenant);
            let set = Arc::new(b.build());
            (b, set)
        });
        if injected.is_empty() {
            return Arc::clone(base);
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        tenant.hash(&mut h);
        injected.hash(&mut h);
        let key = h.finish();
        if let Some(set) = state.extras.get(&key) {
            return Arc::clone(set);
        }
        let mut b = PatternSetBuilder::new();
        for (inj, orig) in injected {
            b.injected(inj, orig);
        }
        // The injected values come first so they win over the raw secret
        // inside them (leftmost-longest picks them anyway; this keeps the
        // replacement of an exact duplicate pattern deterministic).
        let mut combined = b;
        combined.extend(builder);
        let set = Arc::new(combined.build());
        if state.extras.len() >= EXTRAS_CAPACITY {
            state.extras.clear();
        }
        state.extras.insert(key, Arc::clone(&set));
        set
    }
}

fn tenant_builder(policy: &Policy, vault: &Vault, tenant: TenantId) -> PatternSetBuilder {
    let t = policy.tenant(tenant);
    let mut known = vault.known();
    known.sort_by(|a, b| a.0.cmp(&b.0));
    let mut b = PatternSetBuilder::new();
    for (name, value) in &known {
        let replacement =
            t.routes.iter().find(|r| &r.secret == name).map(|r| r.placeholder.as_bytes()).unwrap_or(REDACTED);
        b.secret(&SecretForms { value: value.expose(), replacement });
    }
    b
}
