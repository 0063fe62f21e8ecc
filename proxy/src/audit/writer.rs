//! The one thread that writes the audit log.
//!
//! Tasks hand it encoded records through a bounded channel
//! ([`QUEUE_LINES`]): when the disk falls that far behind, a task's send
//! waits (back-pressure) instead of memory growing. The thread takes
//! whatever has queued, seals each line onto the chain, writes the batch
//! with one `write`; the head follows within [`HEAD_EVERY`]. A batch that fails to write is
//! cut back off the file, so the file only ever ends in a whole line,
//! except after a crash mid-write — which [`open`] finds and repairs.
//!
//! Opening reads the log from its end (the last line only), never whole.
//!
//! Several airlocks of one home may write one log (each `airlock run`
//! without a `serve` has a private proxy of its own): each takes the log's
//! lock (`flock`) only to open it and to write a batch, and before sealing
//! a batch reads where the chain stands — the last line's link, and its
//! epoch's key from the seal when another writer has moved it on — so the
//! chain stays one line after another, whoever wrote them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::chain::{self, EpochKey, Head, Link};
use super::{Begun, Event, EventKind};

/// Records queued for the writer at most; a send beyond waits.
pub(super) const QUEUE_LINES: usize = 8192;

/// A batch is written once it holds this many bytes, even if more wait.
const BATCH_BYTES: usize = 256 * 1024;

/// While lines keep coming, how long the thread sleeps between looks: a
/// line is written at most this long after it is queued.
const BATCH_WAIT: Duration = Duration::from_millis(2);

/// How often in-flight requests are looked at for `begin` lines.
const TICK: Duration = Duration::from_millis(250);

/// The head is replaced at most this often (it is a file rename: at one
/// request at a time, doing it per batch cost a third more proxy CPU per
/// request, measured by `loadbench`); the log may run ahead of it by that
/// much, never behind.
const HEAD_EVERY: Duration = Duration::from_millis(100);

/// A request still running after this long gets a `begin` line.
pub(super) const BEGIN_AFTER: Duration = Duration::from_secs(1);

pub(super) enum Msg {
    /// An encoded entry (a JSON object).
    Line(Vec<u8>),
    /// Answered once everything queued before it is written.
    Sync(std::sync::mpsc::Sender<()>),
    /// Write what is queued, then stop.
    Close,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

pub(super) type Registry = Mutex<Vec<Weak<Begun>>>;

pub(super) struct Writer {
    path: PathBuf,
    file: File,
    /// Whether the lock is held across calls (while opening).
    held: bool,
    /// Entries waiting to be sealed onto the chain at the next batch.
    pending: Vec<Vec<u8>>,
    /// Whether the log is a pipe (nothing to read back).
    fifo: bool,
    /// The file's length after the last batch written whole.
    len: u64,
    link: Link,
    key: EpochKey,
    epoch_started: Instant,
    buf: Vec<u8>,
    /// The link before the first line in `buf`.
    batch_start: Link,
    lines_in_batch: u64,
    registry: Arc<Registry>,
    last_tick: Instant,
    /// When the head was last replaced, and whether the log has moved on.
    head_written: Instant,
    head_stale: bool,
}

/// Opens the log at `path` for writing: locks it while opening (waiting
/// for another writer's batch), repairs a torn tail, checks it still reaches its head and that its
/// last line authenticates, closes the last key epoch (a `close` line under
/// its key), advances the key and writes the `open` line (and any
/// `repaired` or `missing` line).
///
/// # Errors
/// The log is not a regular file or a pipe; the head is not a file; the
/// log has sealed lines but its seal is gone; or any I/O error.
pub(super) fn open(path: &Path, registry: Arc<Registry>) -> io::Result<Writer> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_fifo() {
        tracing::warn!(
            path = %path.display(),
            "the audit log is a pipe: records go to whoever reads it, and `airlock audit --verify` cannot check them"
        );
    } else if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the audit log {} is not a regular file", path.display()),
        ));
    }
    if fs::symlink_metadata(chain::head_path(path)).is_ok_and(|m| !m.is_file()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the audit head {} is not a regular file", chain::head_path(path).display()),
        ));
    }
    // Held until the open and its lines are written; then each batch
    // takes it again.
    let lock = Flock::lock(file.try_clone()?, FlockArg::LockExclusive).map_err(|(_, errno)| io::Error::from(errno))?;
    let mut file = file;
    let tail = if kind.is_fifo() { Tail { end: 0, torn: 0, last: None } } else { read_tail(&mut file)? };
    let mut notes = Vec::new();
    if tail.torn > 0 {
        file.set_len(tail.end)?;
        notes.push((
            EventKind::Repaired,
            format!("the log ended in a partial line ({} bytes, from a crash mid-write); it was removed", tail.torn),
        ));
    }
    // Where the chain stands: the last line's link, and for a sealed line
    // its epoch and whether it closed that epoch.
    let mut last: Option<chain::Sealed> = None;
    let link = match &tail.last {
        None => Link::genesis(),
        Some(line) => match chain::sealed_line(line) {
            Some(found) => {
                let link = found.link.clone();
                last = Some(found);
                link
            }
            // A line written before the chain was keyed: count them once.
            None => match chain::split_hash(line) {
                Some((_, hash)) => Link { seq: count_lines(&mut file, tail.end)?, hash: hash.to_owned() },
                None => {
                    notes.push((EventKind::Missing, "the log's last line is not an audit record".to_owned()));
                    Link::genesis()
                }
            },
        },
    };
    match chain::read_head(path) {
        Ok(Some(head)) if head.seq > link.seq || (head.seq == link.seq && head.hash != link.hash) => {
            notes.push((
                EventKind::Missing,
                format!(
                    "the head anchored record {} but the log ended at record {}: records were removed while airlock \
                     was stopped",
                    head.seq, link.seq
                ),
            ));
        }
        Ok(None) if last.is_some() => {
            notes.push((EventKind::Missing, "the head file was missing".to_owned()));
        }
        Err(e) => notes.push((EventKind::Missing, format!("the head file was unreadable: {e}"))),
        Ok(_) => {}
    }
    let sealed = match chain::read_seal(path)? {
        Some(k) => k,
        None => {
            super::ensure_seal(path)?;
            chain::read_seal(path)?.ok_or_else(|| io::Error::other("the audit seal vanished"))?
        }
    };
    let len = file.metadata()?.len();
    let mut w = Writer {
        path: path.to_owned(),
        file,
        held: true,
        pending: Vec::new(),
        fifo: kind.is_fifo(),
        len,
        batch_start: link.clone(),
        link,
        key: sealed.clone(),
        epoch_started: Instant::now(),
        buf: Vec::new(),
        lines_in_batch: 0,
        registry,
        last_tick: Instant::now(),
        head_written: Instant::now(),
        head_stale: false,
    };
    // The next epoch follows the log's last one by exactly one, after a
    // `close` line under the last one's key (which the seal still holds,
    // unless a crash came after it advanced past a `close`). Anything
    // else means the log or the seal was changed: said in a `missing`
    // line, and the key still moves forward, never back.
    let next = match &last {
        Some(l) if l.closes && (sealed.epoch() == l.epoch || sealed.epoch() == l.epoch + 1) => l.epoch + 1,
        Some(l) if !l.closes && sealed.epoch() == l.epoch => {
            if sealed.mac(&l.covered) != l.link.hash {
                notes.push((
                    EventKind::Missing,
                    "the last record does not authenticate under the current key: the log was changed while \
                     airlock was stopped"
                        .to_owned(),
                ));
            }
            w.seal_event(EventKind::Close, "the key epoch ends".to_owned());
            if !w.flush() {
                return Err(io::Error::other("cannot write the audit log"));
            }
            l.epoch + 1
        }
        Some(l) => {
            notes.push((
                EventKind::Missing,
                format!(
                    "the log's last epoch ({}) does not meet the seal's ({}): the log or the seal was changed",
                    l.epoch,
                    sealed.epoch()
                ),
            ));
            sealed.epoch().max(l.epoch) + 1
        }
        None => {
            if sealed.epoch() > 0 && !kind.is_fifo() {
                notes.push((
                    EventKind::Missing,
                    format!("the log is empty but its key had reached epoch {}: records were removed", sealed.epoch()),
                ));
            }
            sealed.epoch() + 1
        }
    };
    let key = sealed.at(next).ok_or_else(|| io::Error::other("the audit seal is ahead of its log"))?;
    drop(sealed);
    chain::write_seal(path, &key)?;
    w.key = key;
    w.seal_event(EventKind::Open, format!("airlock {} opened the log", env!("CARGO_PKG_VERSION")));
    for (kind, detail) in notes {
        w.seal_event(kind, detail);
    }
    w.flush();
    w.write_head();
    w.held = false;
    drop(lock);
    Ok(w)
}

pub(super) struct Tail {
    /// Where the last whole line ends (after its newline).
    end: u64,
    /// Bytes after it (a line cut short).
    torn: u64,
    /// The last whole line, without its newline.
    pub(super) last: Option<Vec<u8>>,
}

/// Reads the file backwards from its end to its last whole line.
pub(super) fn read_tail(file: &mut File) -> io::Result<Tail> {
    const CHUNK: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    // Newest first: everything read so far from `pos` to the end.
    let mut pos = len;
    let mut data: Vec<u8> = Vec::new();
    let mut end: Option<u64> = None;
    loop {
        // The start of the last whole line is known once a newline is
        // found before `end - 1`, or the file's start is reached.
        if let Some(e) = end {
            let line_end = usize::try_from(e - pos).unwrap_or(usize::MAX) - 1;
            let start = data[..line_end].iter().rposition(|&b| b == b'\n').map(|i| i + 1);
            if start.is_some() || pos == 0 {
                let start = start.unwrap_or(0);
                let last = (line_end > start).then(|| data[start..line_end].to_vec());
                return Ok(Tail { end: e, torn: len - e, last });
            }
        } else if let Some(i) = data.iter().rposition(|&b| b == b'\n') {
            end = Some(pos + i as u64 + 1);
            continue;
        } else if pos == 0 {
            return Ok(Tail { end: 0, torn: len, last: None });
        }
        let step = CHUNK.min(pos);
        pos -= step;
        let mut chunk = vec![0u8; usize::try_from(step).unwrap_or(0)];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&data);
        data = chunk;
    }
}

/// Lines before `end` (once, for a log written before the chain was keyed).
fn count_lines(file: &mut File, end: u64) -> io::Result<u64> {
    file.seek(SeekFrom::Start(0))?;
    let mut n = 0u64;
    let mut reader = io::BufReader::new(file.take(end));
    let mut buf = [0u8; 64 * 1024];
    loop {
        let got = reader.read(&mut buf)?;
        if got == 0 {
            return Ok(n);
        }
        n += memchr::memchr_iter(b'\n', &buf[..got]).count() as u64;
    }
}

impl Writer {
    /// Writes until closed.
    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        // Busy (the last look found lines), the thread sleeps between looks
        // instead of waiting on the queue, so a task queueing a line never
        // has to wake it: waking a thread per record cost a fifth of the
        // proxy's CPU per small request (`loadbench`). Idle, it waits on the
        // queue, and the first line wakes it.
        let mut busy = false;
        loop {
            let mut acks = Vec::new();
            let mut close = false;
            let first = if busy {
                std::thread::sleep(BATCH_WAIT);
                match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.recv_timeout(TICK) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            busy = first.is_some();
            let mut next = first;
            while let Some(m) = next {
                match m {
                    Msg::Line(entry) => self.push(&entry),
                    Msg::Sync(ack) => acks.push(ack),
                    Msg::Close => close = true,
                }
                next = if close || self.buf.len() >= BATCH_BYTES { None } else { rx.try_recv().ok() };
            }
            if self.last_tick.elapsed() >= TICK {
                self.announce_begun();
            }
            self.flush();
            if self.head_stale && (self.head_written.elapsed() >= HEAD_EVERY || !acks.is_empty() || close) {
                self.write_head();
            }
            for ack in acks {
                let _ = ack.send(());
            }
            if close {
                break;
            }
        }
        self.flush();
        self.write_head();
    }

    /// Replaces the head with the last line written.
    fn write_head(&mut self) {
        let head = Head::new(self.link.seq, &self.link.hash, &self.key);
        if let Err(e) = chain::write_head(&self.path, &head) {
            tracing::error!(error = %e, "cannot update the audit head");
        }
        self.head_written = Instant::now();
        self.head_stale = false;
    }

    /// Queues a line for the next batch, which seals it onto the chain
    /// where it then stands.
    fn push(&mut self, entry: &[u8]) {
        self.pending.push(entry.to_vec());
    }

    /// The log's lock, held until the returned guard drops; None when the
    /// writer holds it already (while opening).
    fn lock(&self) -> io::Result<Option<Flock<File>>> {
        if self.held {
            return Ok(None);
        }
        let file = self.file.try_clone()?;
        Flock::lock(file, FlockArg::LockExclusive).map(Some).map_err(|(_, errno)| io::Error::from(errno))
    }

    /// Catches up with lines another writer added since this one last
    /// wrote (called with the lock held): the chain continues from the
    /// file's last line, under its epoch's key, read from the seal when
    /// that writer moved the key on.
    fn resync(&mut self) -> io::Result<()> {
        if self.fifo || self.file.metadata()?.len() == self.len {
            return Ok(());
        }
        let tail = read_tail(&mut self.file)?;
        if tail.torn > 0 {
            // Only a writer that crashed mid-batch leaves this.
            self.file.set_len(tail.end)?;
        }
        self.len = tail.end;
        let Some(last) = tail.last.as_deref().and_then(chain::sealed_line) else { return Ok(()) };
        self.link = last.link;
        let epoch = if last.closes { last.epoch + 1 } else { last.epoch };
        if epoch > self.key.epoch() {
            let seal = chain::read_seal(&self.path)?.ok_or_else(|| io::Error::other("the audit seal is gone"))?;
            self.key = seal
                .at(epoch)
                .ok_or_else(|| io::Error::other("the audit seal is ahead of the log another writer wrote"))?;
            if last.closes {
                // Its writer stopped between the `close` and the next
                // epoch's first line: this writer starts that epoch.
                chain::write_seal(&self.path, &self.key)?;
                self.seal_event(EventKind::Epoch, "the audit key advanced".to_owned());
            }
            self.epoch_started = Instant::now();
        }
        Ok(())
    }

    /// Seals a line onto the chain under the current key.
    fn seal(&mut self, entry: &[u8]) {
        self.link = chain::seal_line(&mut self.buf, entry, &self.link, &self.key);
        self.lines_in_batch += 1;
    }

    /// Seals one of airlock's own lines under the current key.
    fn seal_event(&mut self, kind: EventKind, detail: String) {
        let event = Event { detail: Some(detail), ..Event::new(kind) };
        match serde_json::to_vec(&event) {
            Ok(entry) => self.seal(&entry),
            Err(e) => tracing::error!(error = %e, "cannot encode an audit event"),
        }
    }

    /// Closes this epoch (a `close` line under its key, written before the
    /// key is gone), moves to the next key, erasing this one, and starts
    /// the epoch with an `epoch` line.
    fn advance_epoch(&mut self) {
        self.epoch_started = Instant::now();
        self.seal_event(EventKind::Close, "the key epoch ends".to_owned());
        if !self.write_buf() {
            // Keep the key: the next epoch starts after a `close` that is
            // in the file.
            return;
        }
        // The `close` is in the file: the next line must start the next
        // epoch, or the chain breaks there. A seal that cannot be replaced
        // leaves the old key on disk (the next start says so in a
        // `missing` line), but the chain goes on whole.
        let next = self.key.evolve();
        if let Err(e) = chain::write_seal(&self.path, &next) {
            tracing::error!(error = %e, "cannot store the advanced audit key; the seal still holds the old one");
        }
        self.key = next;
        self.seal_event(EventKind::Epoch, "the audit key advanced".to_owned());
    }

    /// Writes a `begin` line for each request running longer than
    /// [`BEGIN_AFTER`] that has none, and forgets requests that ended.
    fn announce_begun(&mut self) {
        self.last_tick = Instant::now();
        let mut due = Vec::new();
        {
            let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            registry.retain(|weak| {
                let Some(b) = weak.upgrade() else { return false };
                if b.ended.load(Ordering::Acquire) {
                    return false;
                }
                if b.started.elapsed() >= BEGIN_AFTER {
                    due.push(b);
                    return false;
                }
                true
            });
        }
        for b in due {
            // The request may end while this runs; its record then
            // follows this line, as it was queued after the check.
            if b.ended.load(Ordering::Acquire) {
                continue;
            }
            match serde_json::to_vec(&b.line) {
                Ok(entry) => self.push(&entry),
                Err(e) => tracing::error!(error = %e, "cannot encode an audit event"),
            }
        }
    }

    /// Seals what is pending onto the chain where the log stands, under
    /// the log's lock, advancing the key first if its epoch is over, and
    /// writes the batch ([`Writer::write_buf`]).
    fn flush(&mut self) -> bool {
        if self.pending.is_empty() && self.buf.is_empty() {
            return true;
        }
        let _lock = match self.lock() {
            Ok(lock) => lock,
            Err(e) => {
                tracing::error!(error = %e, "cannot lock the audit log; the records wait for the next batch");
                return false;
            }
        };
        if self.buf.is_empty() {
            if let Err(e) = self.resync() {
                tracing::error!(error = %e, "cannot read where the audit chain stands; continuing from this writer's");
            }
            self.batch_start = self.link.clone();
            if self.epoch_started.elapsed() >= chain::EPOCH_LENGTH {
                self.advance_epoch();
            }
        }
        for entry in std::mem::take(&mut self.pending) {
            self.seal(&entry);
        }
        self.write_buf()
    }

    /// Writes the sealed batch with one `write` (the head follows later).
    /// On failure the batch is cut back off and counted as lost in a
    /// `lost` line, written with the next batch.
    fn write_buf(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        match (&self.file).write_all(&self.buf) {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                self.buf.clear();
                self.lines_in_batch = 0;
                self.batch_start = self.link.clone();
                self.head_stale = true;
                true
            }
            Err(e) => {
                let lost = self.lines_in_batch;
                tracing::error!(error = %e, lost, "cannot write the audit log; records were lost");
                self.buf.clear();
                self.lines_in_batch = 0;
                self.link = self.batch_start.clone();
                if let Err(e) = self.file.set_len(self.len) {
                    tracing::error!(error = %e, "cannot cut a failed audit write back off the log");
                    // The file may end in a partial line: continue from
                    // whatever it ends with, as at start.
                    if let Ok(tail) = read_tail(&mut self.file)
                        && self.file.set_len(tail.end).is_ok()
                    {
                        self.len = tail.end;
                        if let Some(sealed) = tail.last.as_deref().and_then(chain::sealed_line) {
                            self.link = sealed.link;
                        }
                    }
                }
                self.batch_start = self.link.clone();
                let event = Event {
                    detail: Some(format!("{lost} records could not be written: {e}")),
                    ..Event::new(EventKind::Lost)
                };
                if let Ok(entry) = serde_json::to_vec(&event) {
                    self.pending.insert(0, entry);
                }
                false
            }
        }
    }
}

/// Starts the writer thread.
/// Starts the writer thread; the returned receiver disconnects when it
/// has finished.
pub(super) fn spawn(writer: Writer) -> io::Result<(SyncSender<Msg>, Receiver<()>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_LINES);
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new().name("airlock-audit".into()).spawn(move || {
        writer.run(rx);
        drop(done_tx);
    })?;
    Ok((tx, done))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tail_of(bytes: &[u8]) -> (u64, u64, Option<Vec<u8>>) {
        let dir = std::env::temp_dir().join(format!("airlock-tail-{}-{}", std::process::id(), bytes.len()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        fs::write(&path, bytes).unwrap();
        let t = read_tail(&mut File::open(&path).unwrap()).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        (t.end, t.torn, t.last)
    }

    #[test]
    fn the_tail_is_found_from_the_end_whatever_the_line_lengths() {
        assert_eq!(tail_of(b""), (0, 0, None));
        assert_eq!(tail_of(b"partial"), (0, 7, None));
        assert_eq!(tail_of(b"a\n"), (2, 0, Some(b"a".to_vec())));
        assert_eq!(tail_of(b"a\nbc\n"), (5, 0, Some(b"bc".to_vec())));
        assert_eq!(tail_of(b"a\nbc\ncut"), (5, 3, Some(b"bc".to_vec())));
        // Lines longer than one read from the end, whole and torn.
        let long = vec![b'x'; 150_000];
        let mut whole = b"a\n".to_vec();
        whole.extend_from_slice(&long);
        whole.push(b'\n');
        assert_eq!(tail_of(&whole), (whole.len() as u64, 0, Some(long.clone())));
        let mut torn = whole.clone();
        torn.extend_from_slice(&long);
        assert_eq!(tail_of(&torn), (whole.len() as u64, long.len() as u64, Some(long.clone())));
        let mut first = long.clone();
        first.push(b'\n');
        assert_eq!(tail_of(&first), (first.len() as u64, 0, Some(long)));
    }

    #[test]
    fn the_chain_stays_whole_when_the_seal_cannot_be_replaced_at_an_epoch_end() {
        let dir = std::env::temp_dir().join(format!("airlock-epoch-{}", std::process::id()));
        let path = dir.join("audit.jsonl");
        let key = super::super::ensure_seal(&path).unwrap().unwrap();
        let mut w = open(&path, Arc::new(Mutex::new(Vec::new()))).unwrap();
        // The seal's temporary file cannot be made: replacing it fails.
        fs::create_dir(dir.join("audit.jsonl.seal.tmp")).unwrap();
        w.epoch_started = Instant::now().checked_sub(chain::EPOCH_LENGTH).unwrap();
        w.push(br#"{"request_id":"after"}"#);
        assert!(w.flush());
        w.write_head();
        let key = EpochKey::from_verification_key(&key).unwrap();
        let verified = chain::verify(&path, Some(&key)).unwrap();
        // open, close, epoch, the record.
        assert_eq!(verified.map(|v| (v.records, v.last_epoch)), Ok((4, 2)));
        drop(w);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    /// Two writers of one log (two `airlock run`s' private proxies):
    /// their batches interleave, each continuing the chain where the other
    /// left it, across the second's open (which ends the first's epoch)
    /// and an epoch the first advances on its own; the whole log verifies
    /// under the seal's first key, every line authenticated.
    fn two_writers_of_one_log_keep_one_chain() {
        let dir = std::env::temp_dir().join(format!("airlock-two-writers-{}", std::process::id()));
        let path = dir.join("audit.jsonl");
        let key = super::super::ensure_seal(&path).unwrap().unwrap();
        let registry = Arc::new(Mutex::new(Vec::new()));
        let mut first = open(&path, Arc::clone(&registry)).unwrap();
        first.push(br#"{"request_id":"a1"}"#);
        assert!(first.flush());
        let mut second = open(&path, registry).unwrap();
        first.push(br#"{"request_id":"a2"}"#);
        assert!(first.flush());
        second.push(br#"{"request_id":"b1"}"#);
        second.push(br#"{"request_id":"b2"}"#);
        assert!(second.flush());
        first.epoch_started = Instant::now().checked_sub(chain::EPOCH_LENGTH).unwrap();
        first.push(br#"{"request_id":"a3"}"#);
        assert!(first.flush());
        second.push(br#"{"request_id":"b3"}"#);
        assert!(second.flush());
        first.write_head();
        second.write_head();
        let key = EpochKey::from_verification_key(&key).unwrap();
        let verified = chain::verify(&path, Some(&key)).unwrap().unwrap();
        // open, a1, close, open (second), a2, b1, b2, close, epoch, a3, b3.
        assert_eq!((verified.records, verified.authenticated, verified.last_epoch), (11, 11, 3));
        let text = fs::read_to_string(&path).unwrap();
        let order: Vec<&str> =
            ["a1", "a2", "b1", "b2", "a3", "b3"].iter().map(|id| &text[text.find(id).unwrap()..][..2]).collect();
        assert_eq!(order, ["a1", "a2", "b1", "b2", "a3", "b3"]);
        drop((first, second));
        fs::remove_dir_all(&dir).unwrap();
    }
}
