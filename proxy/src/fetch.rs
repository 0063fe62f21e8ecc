//! Secret fetches off the async workers, one per secret at a time.
//!
//! A fetch may block (a `command` runs a process, a `keychain` read waits
//! for the OS keychain), so it runs on a blocking thread. Requests that miss
//! the cache for the same secret at once share that one fetch and its
//! outcome, rather than each taking a blocking thread to wait in the
//! vault: a secret whose source hangs costs one thread however many
//! requests need it. The fetch finishes on its own even when every request
//! waiting for it has gone, and is forgotten when it does, so a later miss
//! never gets an old outcome.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use airlock_policy::SecretSpec;
use airlock_policy::secrets::{SecretValue, Vault};

/// What a fetch ends with: the value, or the error the agent may read.
type Outcome = Result<Arc<SecretValue>, String>;

/// Fetches under way: by secret name, an id and where the outcome will be.
type UnderWay = Arc<Mutex<HashMap<String, (u64, watch::Receiver<Option<Outcome>>)>>>;

/// Fetches under way, by secret name.
#[derive(Debug, Default)]
pub(crate) struct Fetches {
    under_way: UnderWay,
    next_id: AtomicU64,
}

impl Fetches {
    /// The secret's value from its source, sharing a fetch under way. The
    /// error is the agent's to read: a failed command's stderr is never in
    /// it, only in the vault's log line, which carries the span of the
    /// request that started the fetch.
    pub(crate) async fn fetch(&self, vault: &Arc<Vault>, spec: &SecretSpec) -> Outcome {
        let (mut outcome, start) = {
            let mut under_way = self.under_way.lock().unwrap_or_else(|p| p.into_inner());
            match under_way.get(&spec.name) {
                Some((_, rx)) => (rx.clone(), None),
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = watch::channel(None);
                    under_way.insert(spec.name.clone(), (id, rx.clone()));
                    (rx, Some((id, tx)))
                }
            }
        };
        // Started outside the lock, which the fetch takes when it ends.
        if let Some((id, tx)) = start {
            self.start(vault, spec, id, tx);
        }
        match outcome.wait_for(Option::is_some).await {
            Ok(done) => done.clone().unwrap_or_else(|| Err(FAILED.to_owned())),
            // The fetch panicked.
            Err(_) => Err(FAILED.to_owned()),
        }
    }

    /// Starts fetch `id` on a blocking thread, to tell its outcome on `tx`.
    fn start(&self, vault: &Arc<Vault>, spec: &SecretSpec, id: u64, tx: watch::Sender<Option<Outcome>>) {
        let done = Done { under_way: Arc::clone(&self.under_way), name: spec.name.clone(), id };
        let (vault, spec, span) = (Arc::clone(vault), spec.clone(), tracing::Span::current());
        drop(tokio::task::spawn_blocking(move || {
            let outcome = span.in_scope(|| vault.get(&spec)).map_err(|e| e.to_string());
            // Forgotten before it is told, so a miss after this starts afresh.
            drop(done);
            tx.send_replace(Some(outcome));
        }));
    }
}

const FAILED: &str = "the secret fetch failed unexpectedly";

/// Forgets a fetch when it ends, however it ends (a panic included).
struct Done {
    under_way: UnderWay,
    name: String,
    id: u64,
}

impl Drop for Done {
    fn drop(&mut self) {
        let mut under_way = self.under_way.lock().unwrap_or_else(|p| p.into_inner());
        if under_way.get(&self.name).is_some_and(|(id, _)| *id == self.id) {
            under_way.remove(&self.name);
        }
    }
}
