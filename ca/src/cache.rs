//! The per-host cache of TLS server configurations.
//!
//! Bounded (least recently used entries go first) and with a TTL well below
//! the leaf validity, so a long-running proxy never serves an expired leaf.
//! Concurrent first requests for one host wait on a single mint.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use crate::authority::LEAF_VALIDITY;
use crate::{CaError, CertificateAuthority, normalize_host};

type Entry = (Arc<rustls::ServerConfig>, Instant);

/// Server configs per normalised host.
pub struct LeafCache {
    ca: Arc<CertificateAuthority>,
    alpn: Vec<Vec<u8>>,
    ttl: Duration,
    cache: Cache<String, Entry>,
    mints: AtomicU64,
}

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache")
            .field("entries", &self.cache.len())
            .field("ttl", &self.ttl)
            .field("mints", &self.mints())
            .finish_non_exhaustive()
    }
}

impl LeafCache {
    /// A cache of at most `capacity` hosts whose entries live for `ttl`
    /// (capped at half the leaf validity). `alpn` is offered to clients.
    pub fn new(ca: Arc<CertificateAuthority>, alpn: Vec<Vec<u8>>, capacity: usize, ttl: Duration) -> Self {
        let ttl = ttl.min(LEAF_VALIDITY / 2);
        LeafCache { ca, alpn, ttl, cache: Cache::new(capacity.max(1)), mints: AtomicU64::new(0) }
    }

    /// The server config for `host`, minting a leaf on a miss.
    pub async fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let host = normalize_host(host)?;
        // An expired entry is dropped first; a concurrent caller may have
        // refreshed it meanwhile, which remove_if leaves alone.
        self.cache.remove_if(&host, |(_, minted)| minted.elapsed() >= self.ttl);
        let (config, _) =
            self.cache.get_or_insert_async(&host, async { self.build(&host).map(|c| (c, Instant::now())) }).await?;
        Ok(config)
    }

    fn build(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let leaf = self.ca.mint(host)?;
        self.mints.fetch_add(1, Ordering::Relaxed);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| CaError::Generate(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(leaf.chain, leaf.key)
            .map_err(|e| CaError::Generate(e.to_string()))?;
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }

    /// Leaves minted so far (cache misses).
    pub fn mints(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ca() -> (Arc<CertificateAuthority>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("airlock-ca-cache-{}", crate::authority::tests::unique()));
        (Arc::new(CertificateAuthority::load_or_create(&dir).unwrap()), dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_requests_mint_once() {
        let (ca, dir) = ca();
        let cache = Arc::new(LeafCache::new(ca, vec![b"h2".to_vec()], 16, Duration::from_secs(3600)));
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let cache = Arc::clone(&cache);
                let host = if i % 2 == 0 { "API.example.test." } else { "api.example.test" };
                tokio::spawn(async move { cache.server_config(host).await.unwrap() })
            })
            .collect();
        let configs: Vec<_> = futures_join(tasks).await;
        assert_eq!(cache.mints(), 1);
        assert!(configs.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
        assert_eq!(configs[0].alpn_protocols, vec![b"h2".to_vec()]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn entries_expire_and_the_cache_is_bounded() {
        let (ca, dir) = ca();
        let cache = LeafCache::new(Arc::clone(&ca), Vec::new(), 16, Duration::from_millis(50));
        cache.server_config("a.test").await.unwrap();
        cache.server_config("a.test").await.unwrap();
        assert_eq!(cache.mints(), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        cache.server_config("a.test").await.unwrap();
        assert_eq!(cache.mints(), 2, "an expired entry is minted again");

        let small = LeafCache::new(ca, Vec::new(), 2, Duration::from_secs(3600));
        for i in 0..10 {
            small.server_config(&format!("h{i}.test")).await.unwrap();
        }
        assert!(small.cache.len() <= 2, "{} entries", small.cache.len());
        assert!(small.server_config("bad host").await.is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
