//! The response-side redactor: every known secret value, in every form it
//! may be echoed in, is replaced before a byte reaches the agent.
//!
//! [`PatternSet`] holds the forms of each secret and what each is replaced
//! by; [`Stream`] applies it to a body arriving in frames, with exactly the
//! output a one-shot leftmost-longest replacement over the whole body would
//! give. The invariant that makes streaming both safe and prompt: **the
//! bytes held back are exactly the longest suffix of what has been scanned
//! that is a proper prefix of some pattern.** Everything before that suffix
//! can no longer become part of a match, so it is forwarded at once; a frame
//! whose tail cannot start a secret is forwarded whole.
//!
//! Forms and their replacements (the placeholder is the tenant's
//! placeholder for that secret when one of its routes uses it, else
//! `[REDACTED]`):
//!
//! | form | replaced by |
//! |---|---|
//! | raw value | placeholder |
//! | URL-encoded value | placeholder |
//! | JSON-escaped value | placeholder |
//! | base64 of the value, at each of the three byte alignments (standard and URL-safe alphabets) | `[REDACTED]` |
//! | the exact header value airlock injected on this request (`Bearer <key>`, `Basic <base64>`) | the value the agent sent |
//! | base64 of that injected header value | `[REDACTED]` |

mod body;
mod decode;

pub use body::{Ended, RedactBody, RedactionCount, scrub_headers};
pub use decode::{DecodeError, Decoder};

use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// What a base64 fragment of a secret is replaced with.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// One secret to scrub, and what its plain forms become.
#[derive(Clone)]
pub struct SecretForms<'a> {
    /// The secret value.
    pub value: &'a [u8],
    /// What the raw, URL-encoded and JSON-escaped forms become.
    pub replacement: &'a [u8],
}

impl std::fmt::Debug for SecretForms<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretForms([secret])")
    }
}

/// Patterns compiled into one leftmost-longest automaton, with each
/// pattern's replacement, and the sorted patterns for the hold-back check.
pub struct PatternSet {
    automaton: Option<AhoCorasick>,
    replacements: Vec<Arc<[u8]>>,
    /// Every pattern, sorted, for "is this suffix a proper prefix of a
    /// pattern?" by binary search.
    sorted: Vec<Arc<[u8]>>,
    /// `first_byte[b]`: some pattern starts with byte `b`.
    first_byte: [bool; 256],
    max_len: usize,
}

impl std::fmt::Debug for PatternSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternSet").field("patterns", &self.sorted.len()).finish_non_exhaustive()
    }
}

/// Collects (pattern, replacement) pairs; the first replacement given for a
/// pattern wins.
#[derive(Clone, Default)]
pub struct PatternSetBuilder {
    pairs: Vec<(Vec<u8>, Arc<[u8]>)>,
}

impl std::fmt::Debug for PatternSetBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternSetBuilder").field("patterns", &self.pairs.len()).finish()
    }
}

impl PatternSetBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one literal pattern.
    pub fn literal(&mut self, pattern: &[u8], replacement: &[u8]) -> &mut Self {
        if !pattern.is_empty() {
            self.pairs.push((pattern.to_vec(), Arc::from(replacement)));
        }
        self
    }

    /// Adds every form of a secret: raw, URL-encoded, JSON-escaped (all
    /// replaced by `replacement`), and base64 at each byte alignment in both
    /// alphabets (replaced by `[REDACTED]`).
    pub fn secret(&mut self, s: &SecretForms<'_>) -> &mut Self {
        self.literal(s.value, s.replacement);
        self.literal(&url_encode(s.value), s.replacement);
        self.literal(&json_escape(s.value), s.replacement);
        for fragment in base64_fragments(s.value) {
            self.literal(&fragment, REDACTED);
        }
        self
    }

    /// Adds a header value airlock injected (replaced by what the agent sent)
    /// and its base64 forms (replaced by `[REDACTED]`).
    pub fn injected(&mut self, injected: &[u8], original: &[u8]) -> &mut Self {
        self.literal(injected, original);
        for fragment in base64_fragments(injected) {
            self.literal(&fragment, REDACTED);
        }
        self
    }

    /// Appends every pair of another builder.
    pub fn extend(&mut self, other: &PatternSetBuilder) -> &mut Self {
        self.pairs.extend(other.pairs.iter().cloned());
        self
    }

    /// Compiles the automaton.
    pub fn build(&self) -> PatternSet {
        let mut seen = std::collections::HashSet::new();
        let mut unique: Vec<(&[u8], &Arc<[u8]>)> = Vec::new();
        for (p, r) in &self.pairs {
            if seen.insert(p.as_slice()) {
                unique.push((p, r));
            }
        }
        // Leftmost-longest matching does not depend on pattern order, but
        // the automaton's SIMD prefilter buckets patterns in order: sorted,
        // patterns sharing a prefix share a bucket, and the search runs up
        // to ten times faster (measured by the redactor bench).
        unique.sort_by(|a, b| a.0.cmp(b.0));
        let patterns: Vec<&[u8]> = unique.iter().map(|(p, _)| *p).collect();
        let replacements: Vec<Arc<[u8]>> = unique.iter().map(|(_, r)| Arc::clone(r)).collect();
        let automaton = if patterns.is_empty() {
            None
        } else {
            // Building only fails past the automaton's size limits, far
            // beyond any realistic number of secrets; a redactor that
            // matched nothing would be unsafe, so this is fatal.
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .expect("secret patterns fit the automaton's limits"),
            )
        };
        let sorted: Vec<Arc<[u8]>> = patterns.iter().map(|p| Arc::from(*p)).collect();
        let mut first_byte = [false; 256];
        for p in &sorted {
            first_byte[usize::from(p[0])] = true;
        }
        let max_len = sorted.iter().map(|p| p.len()).max().unwrap_or(0);
        PatternSet { automaton, replacements, sorted, first_byte, max_len }
    }
}

impl PatternSet {
    /// A set that matches nothing.
    pub fn empty() -> Self {
        PatternSetBuilder::new().build()
    }

    /// Number of distinct patterns.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether the set has no pattern.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// Whether `s` is a proper prefix of some pattern.
    fn is_proper_prefix(&self, s: &[u8]) -> bool {
        let i = self.sorted.partition_point(|p| p.as_ref() < s);
        // Patterns starting with `s` sort right from `i`; one equal to `s`
        // (not a proper prefix) comes first among them.
        self.sorted[i..].iter().take(2).any(|p| p.len() > s.len() && p.starts_with(s))
    }

    /// Where the held-back suffix of `buf` starts: the earliest position
    /// whose suffix is a proper prefix of some pattern (`buf.len()` if none).
    fn hold_from(&self, buf: &[u8]) -> usize {
        let from = buf.len().saturating_sub(self.max_len.saturating_sub(1));
        (from..buf.len())
            .find(|&p| self.first_byte[usize::from(buf[p])] && self.is_proper_prefix(&buf[p..]))
            .unwrap_or(buf.len())
    }

    /// Whether `input` holds any pattern.
    pub fn is_match(&self, input: &[u8]) -> bool {
        self.automaton.as_ref().is_some_and(|ac| ac.is_match(input))
    }

    /// Replaces every match in `input` at once (the oracle the streaming
    /// path must equal; also used for headers). Returns the count.
    pub fn replace_all(&self, input: &[u8], out: &mut Vec<u8>) -> u64 {
        let Some(ac) = &self.automaton else {
            out.extend_from_slice(input);
            return 0;
        };
        let mut last = 0;
        let mut count = 0;
        for m in ac.find_iter(input) {
            out.extend_from_slice(&input[last..m.start()]);
            out.extend_from_slice(&self.replacements[m.pattern().as_usize()]);
            last = m.end();
            count += 1;
        }
        out.extend_from_slice(&input[last..]);
        count
    }
}

/// Streaming replacement over a body that arrives in frames.
#[derive(Debug)]
pub struct Stream {
    set: Arc<PatternSet>,
    held: Vec<u8>,
    count: u64,
}

impl Stream {
    /// A stream over a pattern set.
    pub fn new(set: Arc<PatternSet>) -> Self {
        Stream { set, held: Vec::new(), count: 0 }
    }

    /// Replacements made so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes currently held back.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Scans one more frame; appends to `out` everything that can no longer
    /// be part of a match.
    pub fn push(&mut self, frame: &[u8], out: &mut Vec<u8>) {
        let Some(ac) = &self.set.automaton else {
            out.extend_from_slice(frame);
            return;
        };
        let joined;
        let buf: &[u8] = if self.held.is_empty() {
            frame
        } else {
            let mut b = std::mem::take(&mut self.held);
            b.extend_from_slice(frame);
            joined = b;
            &joined
        };
        let mut hold = self.set.hold_from(buf);
        let mut last = 0;
        for m in ac.find_iter(buf) {
            // A match starting inside the held suffix may still grow into a
            // longer one (or be preceded by one), so it waits for more data.
            if m.start() >= hold {
                break;
            }
            out.extend_from_slice(&buf[last..m.start()]);
            out.extend_from_slice(&self.set.replacements[m.pattern().as_usize()]);
            self.count += 1;
            last = m.end();
            if last > hold {
                // The match consumed part of the suffix: what remains held
                // is the longest prefix-suffix of what follows it.
                hold = last + self.set.hold_from(&buf[last..]);
            }
        }
        out.extend_from_slice(&buf[last..hold.max(last)]);
        self.held = buf[hold.max(last)..].to_vec();
    }

    /// Ends the stream: the held bytes can no longer grow, so they are
    /// replaced as they are and flushed.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.held);
        self.count += self.set.replace_all(&held, out);
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

/// The base64 characters that encode `value` wherever it sits in a larger
/// base64 blob: for each of the three byte offsets, the encoding of
/// `value` after that many filler bytes, minus the characters that also
/// depend on neighbouring bytes. Standard and URL-safe alphabets.
fn base64_fragments(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for offset in 0..3usize {
        let mut buf = vec![0u8; offset];
        buf.extend_from_slice(value);
        // Characters fully determined by `value`: skip those touching the
        // filler, and drop a trailing partial group.
        let start = (offset * 8).div_ceil(6);
        let end_bits = buf.len() * 8;
        let end = end_bits / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let enc = engine.encode(&buf);
            if end > start + 3 {
                out.push(enc.as_bytes()[start..end].to_vec());
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
