//! Which patterns scrub which response: per tenant, every secret airlock
//! knows (replaced by the tenant's placeholder for it, else `[REDACTED]`),
//! plus the header values injected on the request (replaced by what the
//! agent sent).
//!
//! A response's set is two layers searched as one ([`PatternSet::chain`],
//! which matches exactly as a single set built from both would):
//!
//! - **the tenant's set**, every form of every known secret: compiled once
//!   per vault version and tenant, by the first request that needs it, in
//!   a once-cell of its own. The lock over the map of cells is held only to
//!   find or insert a cell, never while compiling: a request of another
//!   tenant never waits for the build, one of the same tenant waits for
//!   that one build instead of starting its own.
//! - **the request's layer**, the injected values and their forms only
//!   (about a dozen patterns per value), compiled outside any lock: matched
//!   with Teddy, which holds little more than the patterns and builds in
//!   microseconds, or past 64 patterns with a contiguous NFA (see
//!   `redact::patterns`). A layer of more than a few hundred bytes of
//!   values is built on the blocking pool, one at a time per two cores, so
//!   a burst of them neither stalls the async workers nor adds up the
//!   memory builds take while they run.
//!
//! Why two layers: the agent chooses the text around the placeholder, so
//! there may be as many distinct injected values as requests. Compiling the
//! tenant's whole set again with each value, as was done, cost time and
//! memory in proportion to the tenant's set and the value for every new
//! value (a DFA of about 500 bytes per pattern byte: some 100 MB for a
//! 16 KiB header, most of a second to build), under one lock every
//! request took. A request's own layer costs in proportion to its values
//! alone. The price is a second search over each body (see the
//! `pattern_sets` bench).
//!
//! Request layers are cached, since an agent sends the same few values
//! again and again and a lookup costs far less than a build (the
//! `pattern_sets` bench): keyed by the values themselves, so two requests
//! share a layer only when they injected the same bytes; bounded by bytes,
//! not entries; only layers of ordinary size are kept (a large one would
//! evict many ordinary ones, and is rarely sent twice). The key holds the
//! secret, and is wiped when evicted; so are the layer's patterns when its
//! last user drops it. A new vault version empties both caches, so a
//! rotated secret is not kept there.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use airlock_policy::secrets::Vault;
use airlock_policy::{Credential, Policy, TenantId};
use quick_cache::Weighter;
use zeroize::Zeroize;

use crate::redact::{PatternSet, PatternSetBuilder, REDACTED, SecretForms};

/// Bytes the cache of request layers may hold: some hundreds of ordinary
/// layers (a `Bearer` key's weighs about 11 KiB).
const LAYERS_BYTES: u64 = 8 << 20;
/// The heaviest layer kept, in bytes: one of a value of about 2 KiB (a
/// long JWT).
const LAYER_MAX_BYTES: u64 = 128 << 10;
/// Injected bytes up to which a request's layer is built on the async
/// worker, where it takes some microseconds. Larger ones go to the
/// blocking pool: with Teddy they take a millisecond at most, but a layer
/// of over 64 patterns is an automaton, tens of milliseconds for the
/// largest header allowed.
const INLINE_MAX_BYTES: usize = 256;

/// The tenants' sets for one vault version.
#[derive(Default)]
struct Tenants {
    version: Option<u64>,
    cells: HashMap<TenantId, Arc<OnceLock<Arc<PatternSet>>>>,
}

/// The pattern sets for one loaded policy.
pub(crate) struct Scrubbers {
    tenants: Mutex<Tenants>,
    layers: quick_cache::sync::Cache<InjectedKey, Cached, ByBytes>,
    /// Large layers built at once: one per two cores, so the rest of the
    /// proxy keeps CPU, and the memory a build takes while it runs (some
    /// tens of MiB for the largest header allowed) stays bounded however
    /// many such requests arrive together.
    builds: tokio::sync::Semaphore,
}

impl Default for Scrubbers {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Scrubbers {
            tenants: Mutex::default(),
            layers: quick_cache::sync::Cache::with_weighter(1024, LAYERS_BYTES, ByBytes),
            builds: tokio::sync::Semaphore::new(cores.div_ceil(2)),
        }
    }
}

impl std::fmt::Debug for Scrubbers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubbers").field("layers", &self.layers.len()).finish_non_exhaustive()
    }
}

impl Scrubbers {
    /// The set for a response to `tenant`, given the `(injected, original)`
    /// header values of its request (wiped once the layer is built).
    pub(crate) async fn for_request(
        &self,
        policy: &Policy,
        vault: &Vault,
        tenant: TenantId,
        injected: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Arc<PatternSet> {
        let base = self.tenant_set(policy, vault, tenant);
        if injected.is_empty() {
            return base;
        }
        Arc::new(self.layer(injected).await.chain(&base))
    }

    /// The set for `tenant` with no injected value: for what airlock
    /// writes itself (denials, paths in the audit record).
    pub(crate) fn tenant_set(&self, policy: &Policy, vault: &Vault, tenant: TenantId) -> Arc<PatternSet> {
        // Read before the values are: a set built from newer values than
        // its version says is only rebuilt sooner.
        let version = vault.version();
        let cell = {
            // A poisoned lock means a panic while it was held; the map is
            // still valid.
            let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
            // Versions only grow; a request that read an older one uses
            // the newer sets.
            if tenants.version.is_none_or(|v| v < version) {
                *tenants = Tenants { version: Some(version), cells: HashMap::new() };
                self.layers.clear();
            }
            Arc::clone(tenants.cells.entry(tenant).or_default())
        };
        Arc::clone(cell.get_or_init(|| Arc::new(tenant_builder(policy, vault, tenant).build())))
    }

    /// The layer of a request's injected values, from the cache or built.
    async fn layer(&self, injected: Vec<(Vec<u8>, Vec<u8>)>) -> Arc<PatternSet> {
        let key = InjectedKey::new(&injected);
        if let Some(hit) = self.layers.get(&key) {
            wipe(injected);
            return hit.set;
        }
        let set = if injected.iter().map(|(i, _)| i.len()).sum::<usize>() <= INLINE_MAX_BYTES {
            build_layer(injected)
        } else {
            // The semaphore is never closed.
            let _permit = self.builds.acquire().await;
            let build = tokio::task::spawn_blocking(move || build_layer(injected));
            match build.await {
                Ok(set) => set,
                // A build that panicked panics this request's task too (as
                // one on the worker would); the pool cancels a task only
                // when the runtime shuts down, and `into_panic` then ends
                // this task as well.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        };
        // Doubled for the header-name matcher it may build later (of the
        // same patterns, lower-cased).
        let weight = (key.0.len() + 2 * set.heap_bytes()) as u64;
        if weight <= LAYER_MAX_BYTES {
            self.layers.insert(key, Cached { set: Arc::clone(&set), weight });
        }
        set
    }
}

/// Compiles a request's layer, then wipes the values.
fn build_layer(injected: Vec<(Vec<u8>, Vec<u8>)>) -> Arc<PatternSet> {
    let mut b = PatternSetBuilder::new();
    for (inj, orig) in &injected {
        b.injected(inj, orig);
    }
    wipe(injected);
    Arc::new(b.build())
}

fn wipe(mut injected: Vec<(Vec<u8>, Vec<u8>)>) {
    for (inj, orig) in &mut injected {
        inj.zeroize();
        orig.zeroize();
    }
}

/// A request's `(injected, original)` values, length-prefixed into one
/// byte string. It holds the secret: wiped when dropped.
#[derive(PartialEq, Eq, Hash)]
struct InjectedKey(Vec<u8>);

impl InjectedKey {
    fn new(injected: &[(Vec<u8>, Vec<u8>)]) -> Self {
        let len = injected.iter().map(|(i, o)| i.len() + o.len() + 16).sum();
        let mut key = Vec::with_capacity(len);
        for part in injected.iter().flat_map(|(i, o)| [i, o]) {
            key.extend_from_slice(&(part.len() as u64).to_le_bytes());
            key.extend_from_slice(part);
        }
        InjectedKey(key)
    }
}

impl Drop for InjectedKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A cached layer and its weight, fixed when it was cached (the layer's
/// own estimate does not change, but the cache must never see a weight
/// change).
#[derive(Clone)]
struct Cached {
    set: Arc<PatternSet>,
    weight: u64,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<InjectedKey, Cached> for ByBytes {
    fn weight(&self, _: &InjectedKey, cached: &Cached) -> u64 {
        cached.weight
    }
}

fn tenant_builder(policy: &Policy, vault: &Vault, tenant: TenantId) -> PatternSetBuilder {
    let t = policy.tenant(tenant);
    let mut known = vault.known();
    known.sort_by(|a, b| a.0.cmp(&b.0));
    // The secrets a SigV4 signature carries in its canonical request: the
    // access key id (in the scope) and the session token (a signed header).
    let signed: HashSet<&str> = policy
        .tenants()
        .flat_map(|(_, t)| &t.routes)
        .filter_map(|r| match &r.credential {
            Some(Credential::AwsSigV4(aws)) => Some(aws),
            _ => None,
        })
        .flat_map(|aws| std::iter::once(aws.access_key_id.as_str()).chain(aws.session_token.as_deref()))
        .collect();
    let mut b = PatternSetBuilder::new();
    for (name, value) in &known {
        let replacement =
            t.routes.iter().find(|r| &r.secret == name).map(|r| r.placeholder.as_bytes()).unwrap_or(REDACTED);
        b.secret(&SecretForms { value: value.expose(), replacement });
        if signed.contains(name.as_str()) {
            // S3's SignatureDoesNotMatch error quotes the canonical request
            // also as its bytes in hex, separated by spaces
            // (`<CanonicalRequestBytes>50 55 54 …`).
            for upper in [false, true] {
                b.literal(&spaced_hex(value.expose(), upper), REDACTED);
            }
        }
        if policy.secret(name).is_some_and(|spec| spec.pem) {
            for line in private_key_lines(value.expose()) {
                b.secret(&SecretForms { value: line, replacement: REDACTED });
            }
        }
    }
    b
}

/// `value`'s bytes as two hex digits each, separated by single spaces.
fn spaced_hex(value: &[u8], upper: bool) -> Vec<u8> {
    let digits: &[u8; 16] = if upper { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
    let mut out = Vec::with_capacity(value.len() * 3);
    for (i, b) in value.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(&[digits[usize::from(b >> 4)], digits[usize::from(b & 15)]]);
    }
    out
}

/// The shortest line of a private key's PEM body scrubbed on its own.
const MIN_KEY_LINE: usize = 16;

/// The base64 lines of the private key blocks in PEM text (a `client_cert`
/// key: `-----BEGIN … PRIVATE KEY-----` to its `END`), each at least
/// [`MIN_KEY_LINE`] bytes. Each is scrubbed on its own besides the whole
/// value: an upstream that echoes a key (an error page quoting what it
/// got, a key re-wrapped at another width or with other line ends) would
/// otherwise pass it line by line. A shorter line — a block's last — is
/// too likely to occur by chance, and too little of the key to matter.
/// The certificate blocks are public and left to the whole value.
fn private_key_lines(pem: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut in_key = false;
    pem.split(|&b| b == b'\n').map(<[u8]>::trim_ascii).filter(move |line| {
        if line.starts_with(b"-----BEGIN ") {
            in_key = line.ends_with(b"PRIVATE KEY-----");
            return false;
        }
        if line.starts_with(b"-----END ") {
            in_key = false;
            return false;
        }
        // Encrypted-key headers (`Proc-Type: …`) are not key material.
        in_key && line.len() >= MIN_KEY_LINE && !line.contains(&b':')
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::*;

    const CONFIG: &str = r#"
[secrets.key]
source = "store"

[tenants.acme]
token = "acme-token-0123456789abcdef"

[[tenants.acme.routes]]
name = "api"
host = "api.example.test"
secret = "key"
placeholder = "AIRLOCK_K"
"#;

    fn setup() -> (Policy, Vault, TenantId) {
        let policy = Policy::from_toml(CONFIG, "test", Path::new("/"), Path::new("/")).unwrap();
        let (tenant, _) = policy.tenant_by_name("acme").unwrap();
        (policy, Vault::new(Path::new("/nonexistent-airlock-home")), tenant)
    }

    /// `Bearer <key>`, then a space and `tail` bytes of `fill`.
    fn pair(tail: usize, fill: u8) -> Vec<(Vec<u8>, Vec<u8>)> {
        let tail = vec![fill; tail];
        vec![([&b"Bearer sk_live_0123456789 "[..], &tail].concat(), [&b"Bearer AIRLOCK_K "[..], &tail].concat())]
    }

    fn scrubbed(set: &PatternSet, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        set.replace_all(text, &mut out);
        out
    }

    #[test]
    fn a_private_keys_body_lines_are_picked_and_nothing_else() {
        let pem = b"-----BEGIN CERTIFICATE-----\nCERTLINE0123456789abcdef\n-----END CERTIFICATE-----\n\
                    -----BEGIN EC PRIVATE KEY-----\r\nKEYLINE1_0123456789abcdef\r\nKEYLINE2_0123456789abcdef\r\nshort==\r\n\
                    -----END EC PRIVATE KEY-----\r\n";
        let lines: Vec<&[u8]> = private_key_lines(pem).collect();
        assert_eq!(lines, [&b"KEYLINE1_0123456789abcdef"[..], b"KEYLINE2_0123456789abcdef"]);
    }

    #[tokio::test]
    async fn each_injected_value_maps_back_to_its_own_original() {
        let (policy, vault, tenant) = setup();
        let s = Scrubbers::default();
        let (a, b) = (pair(8, b'a'), pair(8, b'b'));
        let set_a = s.for_request(&policy, &vault, tenant, a.clone()).await;
        let set_b = s.for_request(&policy, &vault, tenant, b.clone()).await;
        // Compared, never printed: the values hold a (test) key.
        assert!(scrubbed(&set_a, &a[0].0) == a[0].1);
        assert!(scrubbed(&set_b, &b[0].0) == b[0].1);
        assert!(scrubbed(&set_a, &b[0].0) == b[0].0, "a value's layer knows no other value");
        // Asked again, each comes from the cache.
        assert_eq!(s.layers.len(), 2);
        let again = s.for_request(&policy, &vault, tenant, a.clone()).await;
        assert!(scrubbed(&again, &a[0].0) == a[0].1);
        assert_eq!(s.layers.len(), 2);
    }

    #[tokio::test]
    async fn the_layer_cache_is_bounded_by_bytes_and_keeps_no_large_layer() {
        let (policy, vault, tenant) = setup();
        let s = Scrubbers::default();
        // A layer of a value of some KiB is not kept: an agent's stream of
        // them would only evict the ordinary ones.
        let large = pair(16 << 10, b'x');
        let set = s.for_request(&policy, &vault, tenant, large.clone()).await;
        assert!(scrubbed(&set, &large[0].0) == large[0].1);
        assert_eq!(s.layers.len(), 0);
        // Many distinct ordinary ones: the cache stays within its bytes.
        for i in 0..200u8 {
            let mut p = pair(800, b'a' + i % 26);
            p[0].0.push(i);
            p[0].1.push(i);
            s.for_request(&policy, &vault, tenant, p).await;
        }
        assert!(s.layers.weight() <= LAYERS_BYTES, "{} bytes cached", s.layers.weight());
        assert!(s.layers.len() > 10, "only {} layers kept", s.layers.len());
    }
}
