//! Keychain reads on one dedicated thread per vault.
//!
//! A keychain call cannot be interrupted: a locked keychain may wait for a
//! prompt nobody sees, and a Secret Service that does not answer holds the
//! call until D-Bus gives up (25 s) or for ever. Each read used to run on a
//! thread of its own and was abandoned at its timeout, so every request
//! that missed the cache while the keychain hung left one more thread
//! blocked. Now:
//!
//! - every read goes through one worker thread (started on the first
//!   read), fed by a queue of at most [`QUEUE`] distinct reads;
//! - concurrent reads of the same item share one read: a caller arriving
//!   while it is queued or under way waits for its outcome;
//! - each caller waits only until its own timeout, then gets an error; a
//!   read that cannot be queued (the worker is stuck and the queue full)
//!   fails at once;
//! - a queued read whose callers have all given up is skipped, so a
//!   keychain that comes back is not first made to answer stale reads.
//!
//! So a hanging keychain costs one thread, not one per miss, and every
//! request an answer within its timeout.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// Distinct reads that may wait for the worker.
pub(crate) const QUEUE: usize = 16;

/// The name of the worker thread (shown as `airlock-keychai`: Linux keeps
/// 15 characters of a thread's name).
pub(crate) const THREAD_NAME: &str = "airlock-keychain";

/// What the keychain said.
#[derive(Clone)]
pub(crate) enum Answer {
    /// The item's value.
    Value(Zeroizing<Vec<u8>>),
    /// No item for this service and account.
    Missing,
    /// The keychain failed; why (never the value).
    Failed(String),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Value(_) => f.write_str("Value([secret])"),
            Answer::Missing => f.write_str("Missing"),
            Answer::Failed(why) => f.debug_tuple("Failed").field(why).finish(),
        }
    }
}

/// Why a read gave no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Unanswered {
    /// The keychain said nothing within the caller's timeout.
    Timeout,
    /// The worker is stuck and [`QUEUE`] reads already wait for it.
    Busy,
    /// The worker thread could not be started.
    NoThread(String),
}

/// Reads one item: `(service, account)` to what the keychain said. Blocks
/// as long as the keychain does.
pub(crate) type ReadFn = dyn Fn(&str, &str) -> Answer + Send + Sync;

type Key = (String, String);

/// A read queued or under way, and the callers waiting for it.
#[derive(Debug)]
struct Pending {
    slot: Mutex<Slot>,
    done: Condvar,
}

#[derive(Debug)]
struct Slot {
    answer: Option<Answer>,
    /// The latest deadline of the callers waiting; past it, nobody is.
    deadline: Instant,
}

impl Pending {
    fn new(deadline: Instant) -> Arc<Self> {
        Arc::new(Pending { slot: Mutex::new(Slot { answer: None, deadline }), done: Condvar::new() })
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        // A poisoned lock means a panic mid-update; the slot is still
        // consistent (one field set at a time).
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the answer until `deadline`.
    fn wait(&self, deadline: Instant) -> Option<Answer> {
        let mut slot = self.slot();
        slot.deadline = slot.deadline.max(deadline);
        loop {
            if let Some(answer) = &slot.answer {
                return Some(answer.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            slot = self.done.wait_timeout(slot, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn answer(&self, answer: Answer) {
        self.slot().answer = Some(answer);
        self.done.notify_all();
    }
}

#[derive(Debug)]
struct Job {
    key: Key,
    pending: Arc<Pending>,
}

#[derive(Debug, Default)]
struct State {
    /// Reads queued or under way, by item.
    in_flight: HashMap<Key, Arc<Pending>>,
    /// The worker's queue, once it is started.
    queue: Option<SyncSender<Job>>,
}

/// The one reader of a vault's keychain items.
pub(crate) struct Keychain {
    read: Arc<ReadFn>,
    state: Arc<Mutex<State>>,
    /// Worker threads started so far (one, unless one panicked).
    started: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Keychain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keychain").finish_non_exhaustive()
    }
}

impl Keychain {
    /// A reader calling `read` on its worker thread.
    pub(crate) fn new(read: Arc<ReadFn>) -> Self {
        Keychain { read, state: Arc::default(), started: std::sync::atomic::AtomicUsize::new(0) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads an item, waiting at most `timeout` for it.
    pub(crate) fn read(&self, service: &str, account: &str, timeout: Duration) -> Result<Answer, Unanswered> {
        let deadline = Instant::now() + timeout;
        let key = (service.to_owned(), account.to_owned());
        let pending = {
            let mut state = self.state();
            match state.in_flight.get(&key) {
                Some(pending) => {
                    // Joining under the state lock: the worker checks for
                    // callers under it too, so a read is never skipped
                    // while one waits.
                    let mut slot = pending.slot();
                    slot.deadline = slot.deadline.max(deadline);
                    drop(slot);
                    Arc::clone(pending)
                }
                None => {
                    let pending = Pending::new(deadline);
                    self.enqueue(&mut state, Job { key: key.clone(), pending: Arc::clone(&pending) })?;
                    state.in_flight.insert(key, Arc::clone(&pending));
                    pending
                }
            }
        };
        pending.wait(deadline).ok_or(Unanswered::Timeout)
    }

    /// Queues a read, starting the worker when there is none (or it died).
    fn enqueue(&self, state: &mut State, job: Job) -> Result<(), Unanswered> {
        let job = match &state.queue {
            Some(queue) => match queue.try_send(job) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(_)) => return Err(Unanswered::Busy),
                // The worker panicked: start another.
                Err(TrySendError::Disconnected(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (read, weak) = (Arc::clone(&self.read), Arc::downgrade(&self.state));
        std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || work(&rx, &weak, &*read))
            .map_err(|e| Unanswered::NoThread(e.to_string()))?;
        self.started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A fresh queue has room.
        tx.try_send(job).map_err(|_| Unanswered::Busy)?;
        state.queue = Some(tx);
        Ok(())
    }

    /// Worker threads started so far.
    #[cfg(test)]
    pub(crate) fn threads_started(&self) -> usize {
        self.started.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The worker: answers queued reads one at a time, until the vault is
/// dropped.
fn work(queue: &Receiver<Job>, state: &Weak<Mutex<State>>, read: &ReadFn) {
    while let Ok(Job { key, pending }) = queue.recv() {
        let Some(state) = state.upgrade() else { return };
        let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
        let forget = |state: &mut State| {
            if state.in_flight.get(&key).is_some_and(|p| Arc::ptr_eq(p, &pending)) {
                state.in_flight.remove(&key);
            }
        };
        {
            let mut state = lock();
            if pending.slot().deadline <= Instant::now() {
                // Every caller has given up: skip it.
                forget(&mut state);
                continue;
            }
        }
        // A panic in the keychain library answers this read and keeps the
        // worker (and the vault's keychain) alive.
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&key.0, &key.1)))
            .unwrap_or_else(|_| Answer::Failed("the keychain library failed unexpectedly".to_owned()));
        // Forgotten before it is answered, so a caller arriving afterwards
        // reads afresh rather than taking an answer that may be old.
        forget(&mut lock());
        pending.answer(answer);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A keychain that hangs until `release` is sent to, counting reads.
    fn hanging() -> (Keychain, Arc<AtomicUsize>, SyncSender<()>) {
        let reads = Arc::new(AtomicUsize::new(0));
        let (release, released) = mpsc::sync_channel::<()>(0);
        let released = Mutex::new(released);
        let counted = Arc::clone(&reads);
        let read = move |_: &str, account: &str| {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = released.lock().unwrap().recv();
            Answer::Value(Zeroizing::new(account.as_bytes().to_vec()))
        };
        (Keychain::new(Arc::new(read)), reads, release)
    }

    fn value(answer: Result<Answer, Unanswered>) -> Vec<u8> {
        match answer {
            Ok(Answer::Value(v)) => v.to_vec(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn concurrent_misses_share_one_read_on_one_thread_and_each_gets_its_timeout() {
        const CALLERS: usize = 24;
        let (keychain, reads, release) = hanging();
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let answers: Vec<_> = std::thread::scope(|s| {
            let callers: Vec<_> = (0..CALLERS)
                .map(|_| {
                    s.spawn(|| {
                        let asked = Instant::now();
                        (keychain.read("svc", "acct", timeout), asked.elapsed())
                    })
                })
                .collect();
            callers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        for (answer, took) in &answers {
            assert_eq!(answer.as_ref().unwrap_err(), &Unanswered::Timeout);
            assert!(*took >= timeout && *took < timeout * 10, "{took:?}");
        }
        assert!(started.elapsed() < timeout * 10, "the callers waited one after another");
        assert_eq!(reads.load(Ordering::SeqCst), 1, "one read for every concurrent miss");
        assert_eq!(keychain.threads_started(), 1);

        // A caller that joins the read still under way gets its answer.
        let answer = std::thread::scope(|s| {
            let caller = s.spawn(|| keychain.read("svc", "acct", Duration::from_secs(30)));
            while keychain.state().in_flight.get(&("svc".into(), "acct".into())).unwrap().slot().deadline
                < Instant::now() + Duration::from_secs(20)
            {
                std::thread::yield_now();
            }
            release.send(()).unwrap();
            caller.join().unwrap()
        });
        assert_eq!(value(answer), b"acct");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert_eq!(keychain.threads_started(), 1, "the worker is reused");
    }

    #[test]
    fn a_stuck_worker_bounds_the_queue_and_skips_reads_nobody_waits_for() {
        let (keychain, reads, release) = hanging();
        let short = Duration::from_millis(20);
        // The first read takes the worker; QUEUE more fill its queue.
        assert_eq!(keychain.read("svc", "first", short).unwrap_err(), Unanswered::Timeout);
        while reads.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        for n in 0..QUEUE {
            assert_eq!(keychain.read("svc", &format!("queued-{n}"), short).unwrap_err(), Unanswered::Timeout);
        }
        // One more distinct item cannot be queued: refused at once.
        let asked = Instant::now();
        assert_eq!(keychain.read("svc", "one-too-many", Duration::from_secs(30)).unwrap_err(), Unanswered::Busy);
        assert!(asked.elapsed() < Duration::from_secs(5));
        assert_eq!(keychain.threads_started(), 1);
        // The keychain answers again: the abandoned reads are skipped, and
        // the next read is a fresh one.
        release.send(()).unwrap();
        while !keychain.state().in_flight.is_empty() {
            std::thread::yield_now();
        }
        let answer = std::thread::scope(|s| {
            let caller = s.spawn(|| keychain.read("svc", "later", Duration::from_secs(30)));
            release.send(()).unwrap();
            caller.join().unwrap()
        });
        assert_eq!(value(answer), b"later");
        assert_eq!(reads.load(Ordering::SeqCst), 2, "only the first and the last item were read");
    }

    #[test]
    fn a_panicking_keychain_library_fails_one_read_not_the_worker() {
        let read = |_: &str, account: &str| {
            assert!(account != "boom", "the keychain library panicked");
            Answer::Missing
        };
        let keychain = Keychain::new(Arc::new(read));
        let long = Duration::from_secs(30);
        assert!(matches!(keychain.read("svc", "boom", long), Ok(Answer::Failed(_))));
        assert!(matches!(keychain.read("svc", "fine", long), Ok(Answer::Missing)));
        assert_eq!(keychain.threads_started(), 1);
    }

    #[test]
    fn an_answer_never_prints_its_value() {
        let answer = Answer::Value(Zeroizing::new(b"sk_live_abc".to_vec()));
        assert_eq!(format!("{answer:?}"), "Value([secret])");
    }
}
