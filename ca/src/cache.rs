//! The per-host cache of TLS server configurations.
//!
//! Invariants: at most `capacity` hosts are held (the least useful go
//! first); an entry older than the TTL is never served, and the TTL is at
//! most half a leaf's validity, so a long-running proxy never hands out a
//! leaf that is expired or about to be; concurrent first requests for one
//! host wait on a single mint rather than each minting their own.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quick_cache::OptionsBuilder;
use quick_cache::sync::Cache;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;

use crate::leaf::LEAF_VALIDITY;
use crate::{CaError, CertificateAuthority, normalize_host};

/// Server configs per normalised host, each with a leaf minted for it.
pub struct LeafCache {
    ca: Arc<CertificateAuthority>,
    provider: Arc<CryptoProvider>,
    alpn: Vec<Vec<u8>>,
    ttl: Duration,
    cache: Cache<String, Entry>,
    mints: AtomicU64,
}

#[derive(Clone)]
struct Entry {
    config: Arc<ServerConfig>,
    minted: Instant,
}

// === impl LeafCache ===

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache")
            .field("entries", &self.cache.len())
            .field("capacity", &self.cache.capacity())
            .field("ttl", &self.ttl)
            .field("mints", &self.mints())
            .finish_non_exhaustive()
    }
}

impl LeafCache {
    /// A sensible TTL: a day.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
    /// The longest TTL [`LeafCache::new`] accepts: half a leaf's validity,
    /// so a leaf served at the end of its TTL still has weeks left for long
    /// connections and clients whose clock runs fast.
    pub const MAX_TTL: Duration = Duration::from_secs(LEAF_VALIDITY.as_secs() / 2);

    /// A cache of at most `capacity` hosts (at least one) whose entries are
    /// re-minted after `ttl`. Every server config offers `alpn`, in order,
    /// and uses rustls's *ring* provider without client authentication.
    ///
    /// # Panics
    ///
    /// If `ttl` exceeds [`LeafCache::MAX_TTL`]: that would serve leaves
    /// close to or past their expiry, and the TTL is the caller's constant,
    /// not input.
    pub fn new(ca: Arc<CertificateAuthority>, alpn: Vec<Vec<u8>>, capacity: usize, ttl: Duration) -> Self {
        assert!(ttl <= Self::MAX_TTL, "leaf cache TTL {ttl:?} exceeds {:?}", Self::MAX_TTL);
        LeafCache {
            ca,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            alpn,
            ttl,
            cache: bounded_cache(capacity.max(1)),
            mints: AtomicU64::new(0),
        }
    }

    /// The server config for `host` (normalised first), minting a leaf when
    /// there is none or it is older than the TTL.
    pub async fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let host = normalize_host(host)?;
        if let Some(entry) = self.cache.get(&host) {
            if entry.minted.elapsed() < self.ttl {
                return Ok(entry.config);
            }
            // Only an expired entry goes: one a concurrent caller has just
            // refreshed stays.
            self.cache.remove_if(&host, |e| e.minted.elapsed() >= self.ttl);
        }
        // Single flight: the first caller mints, the others wait for it
        // (and retry the mint themselves only if it failed or was dropped).
        let entry = self.cache.get_or_insert_async(&host, async { self.build(&host) }).await?;
        Ok(entry.config)
    }

    /// Leaves minted so far, i.e. cache misses that succeeded.
    pub fn mints(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    fn build(&self, host: &str) -> Result<Entry, CaError> {
        let leaf = self.ca.mint(host)?;
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(CaError::Tls)?
            .with_no_client_auth()
            .with_single_cert(leaf.chain, leaf.key)
            .map_err(CaError::Tls)?;
        config.alpn_protocols = self.alpn.clone();
        self.mints.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(host, "minted a leaf certificate");
        Ok(Entry { config: Arc::new(config), minted: Instant::now() })
    }
}

/// A cache that holds at most `capacity` entries.
///
/// quick_cache splits its capacity over shards and rounds each shard's share
/// up, which could exceed `capacity` by up to one per shard. So pick the
/// shard count here (a power of two, with at least 32 entries per shard as
/// quick_cache itself prefers) and round the capacity down to a multiple of
/// it: the shares then add up to at most `capacity`.
fn bounded_cache(capacity: usize) -> Cache<String, Entry> {
    let mut shards = 16;
    while shards > 1 && capacity / shards < 32 {
        shards /= 2;
    }
    let capacity = capacity - capacity % shards;
    let options = OptionsBuilder::new()
        .shards(shards)
        .estimated_items_capacity(capacity)
        .weight_capacity(capacity as u64)
        .build()
        .expect("both capacities are set, which is all build checks");
    Cache::with_options(options, Default::default(), Default::default(), Default::default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_support::new_ca;

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_second_request_in_any_spelling_is_a_hit() {
        let (ca, _dir) = new_ca();
        let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let cache = LeafCache::new(ca, alpn.clone(), 16, LeafCache::DEFAULT_TTL);
        let first = cache.server_config("api.example.test").await.unwrap();
        assert_eq!(cache.mints(), 1);
        for spelling in ["api.example.test", "API.Example.Test", "api.example.test."] {
            let again = cache.server_config(spelling).await.unwrap();
            assert!(Arc::ptr_eq(&first, &again), "{spelling}");
        }
        assert_eq!(cache.mints(), 1);
        assert_eq!(first.alpn_protocols, alpn);

        cache.server_config("[::1]").await.unwrap();
        cache.server_config("::1").await.unwrap();
        cache.server_config("other.example.test").await.unwrap();
        assert_eq!(cache.mints(), 3, "other hosts get their own leaf");
        assert!(matches!(cache.server_config("bad host").await, Err(CaError::InvalidHost(_))));
        assert_eq!(cache.mints(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_first_requests_mint_once() {
        let (ca, _dir) = new_ca();
        let cache = Arc::new(LeafCache::new(ca, Vec::new(), 16, HOUR));
        // All tasks start together, so they really do race for the first mint.
        let start = Arc::new(tokio::sync::Barrier::new(32));
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let (cache, start) = (Arc::clone(&cache), Arc::clone(&start));
                let host = if i % 2 == 0 { "API.example.test." } else { "api.example.test" };
                tokio::spawn(async move {
                    start.wait().await;
                    cache.server_config(host).await.unwrap()
                })
            })
            .collect();
        let mut configs = Vec::new();
        for t in tasks {
            configs.push(t.await.unwrap());
        }
        assert_eq!(cache.mints(), 1);
        assert!(configs.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
    }

    #[tokio::test]
    async fn entries_are_reminted_after_the_ttl() {
        let (ca, _dir) = new_ca();
        let ttl = Duration::from_millis(30);
        let cache = LeafCache::new(ca, Vec::new(), 16, ttl);
        let first = cache.server_config("a.test").await.unwrap();
        let hit = cache.server_config("a.test").await.unwrap();
        assert!(Arc::ptr_eq(&first, &hit));
        assert_eq!(cache.mints(), 1);
        // Not synchronisation: time must pass for an entry to age.
        std::thread::sleep(ttl + Duration::from_millis(10));
        let fresh = cache.server_config("A.test").await.unwrap();
        assert_eq!(cache.mints(), 2, "an expired entry is minted again");
        assert!(!Arc::ptr_eq(&first, &fresh));
        let again = cache.server_config("a.test").await.unwrap();
        assert!(Arc::ptr_eq(&fresh, &again), "and the fresh one is cached");
        assert_eq!(cache.mints(), 2);
    }

    #[tokio::test]
    async fn the_capacity_is_a_bound() {
        let (ca, _dir) = new_ca();
        for capacity in [1, 2, 5, 40, 100] {
            let cache = LeafCache::new(Arc::clone(&ca), Vec::new(), capacity, HOUR);
            for i in 0..capacity * 3 {
                let host = format!("h{i}.test");
                let config = cache.server_config(&host).await.unwrap();
                assert!(cache.cache.len() <= capacity, "capacity {capacity}: {} entries", cache.cache.len());
                if capacity > 1 {
                    // The entry just made is there to be hit.
                    let again = cache.server_config(&host).await.unwrap();
                    assert!(Arc::ptr_eq(&config, &again), "capacity {capacity}, {host}");
                }
            }
            assert!(cache.cache.len() <= capacity);
            let expected_mints = (capacity * 3) as u64;
            assert_eq!(cache.mints(), expected_mints, "capacity {capacity}");
        }
    }

    #[test]
    fn a_shard_layout_never_exceeds_the_capacity() {
        for capacity in [1, 2, 31, 32, 63, 64, 65, 100, 1000, 1023, 10_000, 10_001] {
            let cache = bounded_cache(capacity);
            assert!(cache.capacity() <= capacity as u64, "{capacity}: {}", cache.capacity());
            assert!(cache.capacity() * 100 >= capacity as u64 * 95, "{capacity}: {}", cache.capacity());
            assert!(cache.shard_capacity() * cache.num_shards() as u64 <= capacity as u64, "{capacity}");
        }
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn a_ttl_near_the_leaf_validity_is_refused() {
        let (ca, _dir) = new_ca();
        let _ = LeafCache::new(ca, Vec::new(), 16, LEAF_VALIDITY);
    }
}
