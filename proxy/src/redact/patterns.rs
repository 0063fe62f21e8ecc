//! The pattern set: every form of every secret, what each is replaced by,
//! and the hold-back length `H` the streaming scan derives from them.

use std::collections::HashMap;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

use super::{REDACTED, SecretForms};

/// Swallow flag: the neighbouring unit goes too if it is a character of the
/// standard base64 alphabet.
pub(super) const STD: u8 = 1;
/// Swallow flag: ... of the URL-safe base64 alphabet.
pub(super) const URL: u8 = 2;

/// The least hold-back, so that a set of short secrets does not give away
/// how short they are.
const MIN_HOLD: usize = 64;
/// How far before a match its swallowed neighbour may start, in matched
/// bytes (a unit decodes to at most four).
pub(super) const SWALLOW: usize = 4;

/// What a pattern does when it matches.
#[derive(Clone, Debug)]
pub(super) struct Meta {
    pub(super) replacement: Arc<[u8]>,
    /// Swallow flags for the unit just before the match.
    pub(super) before: u8,
    /// Swallow flags for the unit just after the match.
    pub(super) after: u8,
}

/// Patterns compiled into one leftmost-longest automaton, with each
/// pattern's replacement and swallow flags.
pub struct PatternSet {
    pub(super) automaton: Option<AhoCorasick>,
    /// Per pattern id.
    pub(super) meta: Vec<Meta>,
    /// `H`: how many scanned bytes after the last hard line break may be
    /// held back.
    pub(super) hold: usize,
}

impl std::fmt::Debug for PatternSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternSet")
            .field("patterns", &self.meta.len())
            .field("hold", &self.hold)
            .finish_non_exhaustive()
    }
}

/// One pattern before compiling.
#[derive(Clone)]
struct Entry {
    bytes: Vec<u8>,
    replacement: Arc<[u8]>,
    before: u8,
    after: u8,
}

/// Collects patterns and their replacements; the first replacement given
/// for a pattern wins (its swallow flags are merged).
#[derive(Clone, Default)]
pub struct PatternSetBuilder {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for PatternSetBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternSetBuilder").field("patterns", &self.entries.len()).finish()
    }
}

impl PatternSetBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, bytes: Vec<u8>, replacement: &Arc<[u8]>, before: u8, after: u8) {
        if !bytes.is_empty() {
            self.entries.push(Entry { bytes, replacement: Arc::clone(replacement), before, after });
        }
    }

    /// Adds one literal pattern.
    pub fn literal(&mut self, pattern: &[u8], replacement: &[u8]) -> &mut Self {
        self.push(pattern.to_vec(), &Arc::from(replacement), 0, 0);
        self
    }

    /// Adds every form of a secret: raw, URL-encoded, JSON-escaped (all
    /// replaced by `replacement`), and base64 at each byte alignment in both
    /// alphabets (replaced by `[REDACTED]`).
    pub fn secret(&mut self, s: &SecretForms<'_>) -> &mut Self {
        let replacement: Arc<[u8]> = Arc::from(s.replacement);
        self.push(s.value.to_vec(), &replacement, 0, 0);
        self.push(url_encode(s.value), &replacement, 0, 0);
        self.push(json_escape(s.value), &replacement, 0, 0);
        self.base64(s.value);
        self
    }

    /// Adds a header value airlock injected (replaced by what the agent sent)
    /// and its base64 forms (replaced by `[REDACTED]`).
    pub fn injected(&mut self, injected: &[u8], original: &[u8]) -> &mut Self {
        self.push(injected.to_vec(), &Arc::from(original), 0, 0);
        self.base64(injected);
        self
    }

    fn base64(&mut self, value: &[u8]) {
        let redacted: Arc<[u8]> = Arc::from(REDACTED);
        for f in base64_fragments(value) {
            self.push(f.bytes, &redacted, 0, 0);
        }
    }

    /// Appends every pattern of another builder.
    pub fn extend(&mut self, other: &PatternSetBuilder) -> &mut Self {
        self.entries.extend(other.entries.iter().cloned());
        self
    }

    /// Compiles the automaton.
    pub fn build(&self) -> PatternSet {
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        let mut unique: Vec<Entry> = Vec::new();
        for e in &self.entries {
            match index.get(e.bytes.as_slice()) {
                Some(&i) => {
                    unique[i].before |= e.before;
                    unique[i].after |= e.after;
                }
                None => {
                    index.insert(&e.bytes, unique.len());
                    unique.push(e.clone());
                }
            }
        }
        // Leftmost-longest matching does not depend on pattern order, but
        // the automaton's SIMD prefilter buckets patterns in order: sorted,
        // patterns sharing a prefix share a bucket, and the search runs up
        // to ten times faster (measured by the redactor bench).
        unique.sort_by(|a, b| a.bytes.cmp(&b.bytes));
        let automaton = if unique.is_empty() {
            None
        } else {
            // Building only fails past the automaton's size limits, far
            // beyond any realistic number of secrets; a redactor that
            // matched nothing would be unsafe, so this is fatal.
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(unique.iter().map(|e| &e.bytes))
                    .expect("secret patterns fit the automaton's limits"),
            )
        };
        let longest = unique.iter().map(|e| e.bytes.len()).max().unwrap_or(0);
        let meta =
            unique.into_iter().map(|e| Meta { replacement: e.replacement, before: e.before, after: e.after }).collect();
        PatternSet { automaton, meta, hold: hold_for(longest) }
    }
}

/// `H` for a set whose longest pattern is `longest` bytes: room for that
/// pattern and a swallowed neighbour, rounded up to a power of two (at
/// least [`MIN_HOLD`]) so the hold does not tell the exact length.
fn hold_for(longest: usize) -> usize {
    (longest + SWALLOW).next_power_of_two().max(MIN_HOLD)
}

impl PatternSet {
    /// A set that matches nothing.
    pub fn empty() -> Self {
        PatternSetBuilder::new().build()
    }

    /// Number of distinct patterns.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// Whether the set has no pattern.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// `H`: at most this many bytes after the last hard line break are held
    /// back while streaming (more only while an escape is incomplete).
    pub fn hold(&self) -> usize {
        self.hold
    }
}

/// Percent-encodes every byte outside RFC 3986 unreserved characters.
fn url_encode(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// The value as it appears inside a JSON string.
fn json_escape(value: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(value);
    let quoted = serde_json::to_string(&s).unwrap_or_default();
    let inner = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')).unwrap_or("");
    let mut out = inner.as_bytes().to_vec();
    // Also `/` escaped as `\/`, which some encoders emit.
    if value.contains(&b'/') {
        out = String::from_utf8_lossy(&out).replace('/', "\\/").into_bytes();
    }
    out
}

/// A base64 fragment of a value.
pub(super) struct Fragment {
    pub(super) bytes: Vec<u8>,
}

/// The base64 characters that encode `value` wherever it sits in a larger
/// base64 blob: for each of the three byte offsets, the encoding of
/// `value` after that many filler bytes, minus the characters that also
/// depend on neighbouring bytes. Standard and URL-safe alphabets.
pub(super) fn base64_fragments(value: &[u8]) -> Vec<Fragment> {
    let mut out = Vec::new();
    for offset in 0..3usize {
        let mut buf = vec![0u8; offset];
        buf.extend_from_slice(value);
        // Characters fully determined by `value`: skip those touching the
        // filler, and drop a trailing partial group.
        let start = (offset * 8).div_ceil(6);
        let end = buf.len() * 8 / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let enc = engine.encode(&buf);
            if end > start + 3 {
                out.push(Fragment { bytes: enc.as_bytes()[start..end].to_vec() });
            }
        }
    }
    out
}
