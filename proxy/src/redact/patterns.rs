//! The pattern set: every form of every secret, what each is replaced by,
//! and the hold-back length `H` the streaming scan derives from them.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, Match, MatchKind, Span, packed};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use zeroize::Zeroize;

use super::normalise::{self, Line, MAX_UNIT, Normalised, Step};
use super::{REDACTED, SecretForms};

/// Swallow flag: the neighbouring unit goes too if it is a character of the
/// standard base64 alphabet.
pub(super) const STD: u8 = 1;
/// Swallow flag: ... of the URL-safe base64 alphabet.
pub(super) const URL: u8 = 2;
/// Swallow flag: the neighbouring unit goes too if it is an escape (it may
/// hold the first or last characters of the value, see [`plain_forms`]).
pub(super) const ESC: u8 = 4;

/// The shortest variant of a value cut short by an escape around it that
/// is still matched (shorter ones would match ordinary text).
const MIN_VARIANT: usize = 8;

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

/// Patterns compiled into one leftmost-longest matcher, with each
/// pattern's replacement and swallow flags.
pub(super) struct Layer {
    /// None when there are no patterns.
    pub(super) matcher: Option<Matcher>,
    /// Per pattern id.
    pub(super) meta: Vec<Meta>,
    /// Per pattern id, the pattern.
    pub(super) patterns: Vec<Box<[u8]>>,
    /// The patterns lower-cased, for header names (which arrive
    /// lower-cased); built when first needed.
    pub(super) names: OnceLock<Option<Matcher>>,
    /// The shortest pattern's length (0 when there is none): text shorter
    /// than this cannot hold a match.
    pub(super) shortest: usize,
    longest: usize,
    /// The builder's [`MatcherKind`], for the header-name matcher.
    pub(super) kind: MatcherKind,
}

impl Drop for Layer {
    fn drop(&mut self) {
        // The patterns are forms of secrets. (The matchers hold them too,
        // as copies or in tables; aho-corasick offers no way to wipe
        // those.)
        for p in &mut self.patterns {
            p.zeroize();
        }
    }
}

/// Patterns and what each is replaced by, matched leftmost-longest.
///
/// A set is one or more layers, each compiled on its own, searched
/// together exactly as one matcher over all their patterns would be
/// (see [`PatternSet::chain`]): a request's injected header values are a
/// small layer over the tenant's set of every secret, which is compiled
/// once and shared.
pub struct PatternSet {
    /// In order of precedence: a pattern in two layers takes its
    /// replacement from the first.
    pub(super) layers: Vec<Arc<Layer>>,
    /// `H`: how many scanned bytes after the last hard line break may be
    /// held back.
    pub(super) hold: usize,
}

impl std::fmt::Debug for PatternSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternSet")
            .field("patterns", &self.len())
            .field("layers", &self.layers.len())
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

impl Drop for Entry {
    fn drop(&mut self) {
        // A form of a secret.
        self.bytes.zeroize();
    }
}

/// Collects patterns and their replacements; the first replacement given
/// for a pattern wins (its swallow flags are merged).
#[derive(Clone, Default)]
pub struct PatternSetBuilder {
    entries: Vec<Entry>,
    kind: MatcherKind,
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

    /// Which matcher [`PatternSetBuilder::build`] compiles; the default is
    /// the one measured best, the others are for benches to compare.
    pub fn matcher(&mut self, kind: MatcherKind) -> &mut Self {
        self.kind = kind;
        self
    }

    fn push(&mut self, bytes: Vec<u8>, replacement: &Arc<[u8]>, before: u8, after: u8) {
        if !bytes.is_empty() {
            self.entries.push(Entry { bytes, replacement: Arc::clone(replacement), before, after });
        }
    }

    /// Adds a literal value in every spelling (see [`plain_forms`]), all
    /// replaced by `replacement`.
    pub fn literal(&mut self, value: &[u8], replacement: &[u8]) -> &mut Self {
        self.spellings(value, replacement, false)
    }

    /// [`literal`](Self::literal), and with `form_decoded`, also with each
    /// `+` read as a space (see [`plain_forms`]).
    fn spellings(&mut self, value: &[u8], replacement: &[u8], form_decoded: bool) -> &mut Self {
        let replacement: Arc<[u8]> = Arc::from(replacement);
        for (form, before, after) in plain_forms(value, form_decoded) {
            self.push(form, &replacement, before, after);
        }
        self
    }

    /// Adds every form of a secret: the value in every spelling (replaced
    /// by `replacement`), and base64 at each byte alignment in both
    /// alphabets (replaced by `[REDACTED]`).
    /// A value with spaces or tabs around it is also added without them.
    pub fn secret(&mut self, s: &SecretForms<'_>) -> &mut Self {
        for value in std::iter::once(s.value).chain(trimmed(s.value)) {
            self.spellings(value, s.replacement, true);
            self.base64(value);
        }
        self
    }

    /// Adds a header value airlock injected (replaced by what the agent sent)
    /// and its base64 forms (replaced by `[REDACTED]`), also without the
    /// spaces or tabs around it.
    pub fn injected(&mut self, injected: &[u8], original: &[u8]) -> &mut Self {
        self.literal(injected, original);
        self.base64(injected);
        if let Some(value) = trimmed(injected) {
            self.literal(value, original.trim_ascii());
            self.base64(value);
        }
        self
    }

    fn base64(&mut self, value: &[u8]) {
        let redacted: Arc<[u8]> = Arc::from(REDACTED);
        for f in base64_fragments(value) {
            self.push(f.bytes, &redacted, f.before, f.after);
        }
    }

    /// Appends every pattern of another builder.
    pub fn extend(&mut self, other: &PatternSetBuilder) -> &mut Self {
        self.entries.extend(other.entries.iter().cloned());
        self
    }

    /// Compiles the matcher.
    pub fn build(&self) -> PatternSet {
        let layer = self.layer();
        PatternSet { hold: hold_for(layer.longest), layers: vec![Arc::new(layer)] }
    }

    fn layer(&self) -> Layer {
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
        // Teddy (alone, or as an automaton's prefilter) buckets patterns in
        // order: sorted,
        // patterns sharing a prefix share a bucket, and the search runs up
        // to ten times faster (measured by the redactor bench).
        unique.sort_by(|a, b| a.bytes.cmp(&b.bytes));
        let matcher = compile(unique.iter().map(|e| &e.bytes[..]), self.kind);
        let longest = unique.iter().map(|e| e.bytes.len()).max().unwrap_or(0);
        let shortest = unique.iter().map(|e| e.bytes.len()).min().unwrap_or(0);
        let (patterns, meta) = unique
            .iter_mut()
            .map(|e| {
                let bytes = std::mem::take(&mut e.bytes).into_boxed_slice();
                (bytes, Meta { replacement: Arc::clone(&e.replacement), before: e.before, after: e.after })
            })
            .unzip();
        Layer { matcher, meta, patterns, names: OnceLock::new(), shortest, longest, kind: self.kind }
    }
}

/// How a layer's patterns are found; every kind finds the same
/// leftmost-longest matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MatcherKind {
    /// Teddy for up to 64 patterns (when the CPU has the SIMD it needs),
    /// else a DFA while the patterns total at most 2 KiB, else a
    /// contiguous NFA: what the `pattern_sets` bench measured best.
    #[default]
    Auto,
    /// An aho-corasick automaton of this kind, or of aho-corasick's own
    /// choice (a DFA for up to 100 patterns, whatever their length:
    /// airlock's choice before issue 16).
    Automaton(Option<AhoCorasickKind>),
}

/// Sets of at most this many patterns (the most Teddy takes) are found
/// with Teddy alone: it finds candidates by their first bytes with SIMD
/// and checks each whole, holds little more than the patterns, and builds
/// in microseconds whatever their length. An automaton holds 13-500 bytes
/// per pattern byte and takes milliseconds for a few KiB of patterns; and
/// over a few patterns its own prefilter may pick bytes that are common in
/// the text (the base64 letters of a base64 body: measured 60-90 MiB/s,
/// against over 1 GiB/s for Teddy), where Teddy's fingerprints of each
/// pattern's first bytes are not fooled. The `pattern_sets` bench.
pub(super) const PACKED_MAX: usize = 64;

/// Pattern bytes up to which an automaton is a DFA; past it, a contiguous
/// NFA. Measured (the `pattern_sets` bench, a 2-core VM): a DFA holds
/// 275-513 bytes per pattern byte and builds 3-15 times slower than the
/// NFA's 7-38 bytes per byte; it scans no faster through the redactor
/// (within noise for ten keys' forms), and up to twice as fast in a bare
/// search only where the prefilter fails. This bound keeps a DFA under
/// about 1 MiB and a millisecond to build.
pub(super) const DFA_MAX_BYTES: usize = 2 << 10;

/// What finds a layer's patterns.
pub(super) enum Matcher {
    /// Teddy.
    Packed(packed::Searcher),
    /// An aho-corasick automaton.
    Automaton(AhoCorasick),
}

impl Matcher {
    /// The leftmost-longest match in `haystack[span]`.
    pub(super) fn find(&self, haystack: &[u8], span: Range<usize>) -> Option<Match> {
        match self {
            Matcher::Packed(p) => p.find_in(haystack, Span::from(span)),
            Matcher::Automaton(ac) => ac.find(Input::new(haystack).span(span)),
        }
    }

    pub(super) fn is_match(&self, haystack: &[u8]) -> bool {
        match self {
            Matcher::Packed(p) => p.find(haystack).is_some(),
            Matcher::Automaton(ac) => ac.is_match(haystack),
        }
    }

    fn memory_usage(&self) -> usize {
        match self {
            Matcher::Packed(p) => p.memory_usage(),
            Matcher::Automaton(ac) => ac.memory_usage(),
        }
    }
}

/// The leftmost-longest matcher for `patterns` (distinct, none empty),
/// of `kind`; none when there are no patterns.
pub(super) fn compile<'p>(patterns: impl Iterator<Item = &'p [u8]> + Clone, kind: MatcherKind) -> Option<Matcher> {
    let (count, bytes) = patterns.clone().fold((0, 0), |(n, b), p| (n + 1, b + p.len()));
    if count == 0 {
        return None;
    }
    let kind = match kind {
        MatcherKind::Auto => {
            if count <= PACKED_MAX {
                let mut b = packed::Config::new().match_kind(packed::MatchKind::LeftmostLongest).builder();
                if let Some(searcher) = b.extend(patterns.clone()).build() {
                    return Some(Matcher::Packed(searcher));
                }
            }
            (bytes > DFA_MAX_BYTES).then_some(AhoCorasickKind::ContiguousNFA)
        }
        MatcherKind::Automaton(kind) => kind,
    };
    // Building only fails past the automaton's size limits, far beyond any
    // realistic number of secrets (the header limits bound an injected
    // value); a redactor that matched nothing would be unsafe, so this is
    // fatal.
    Some(Matcher::Automaton(
        AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(kind)
            .build(patterns)
            .expect("secret patterns fit the automaton's limits"),
    ))
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

    /// This set's patterns over `base`'s: a set that matches exactly as
    /// one built from this set's builder extended with `base`'s would, yet
    /// shares `base`'s compiled matchers instead of compiling them again.
    ///
    /// Both are searched and the match that starts first wins, the longer
    /// one at the same start; a pattern in both (the same bytes at the same
    /// place) takes this set's replacement and both sets' swallow flags, as
    /// [`PatternSetBuilder::build`] merges duplicates. `H` is the larger of
    /// the two.
    pub fn chain(&self, base: &PatternSet) -> PatternSet {
        let layers: Vec<Arc<Layer>> = self.layers.iter().chain(&base.layers).map(Arc::clone).collect();
        PatternSet { hold: hold_for(layers.iter().map(|l| l.longest).max().unwrap_or(0)), layers }
    }

    /// Number of patterns (a pattern in two chained sets counts twice).
    pub fn len(&self) -> usize {
        self.layers.iter().map(|l| l.meta.len()).sum()
    }

    /// Whether the set has no pattern.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `H`: at most this many bytes after the last hard line break are held
    /// back while streaming (more only while an escape is incomplete).
    pub fn hold(&self) -> usize {
        self.hold
    }

    /// Heap bytes the set holds now: its matchers (the header-name one
    /// once built), patterns and replacements. A layer shared by chained
    /// sets counts in each.
    pub fn heap_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.heap_bytes()).sum()
    }
}

#[cfg(test)]
impl PatternSet {
    /// Every distinct pattern and what it does, as one set built from all
    /// the layers' patterns would hold them (for tests' naive references).
    pub(super) fn union(&self) -> Vec<(&[u8], Meta)> {
        let mut out: Vec<(&[u8], Meta)> = Vec::new();
        for layer in &self.layers {
            for (p, m) in layer.patterns.iter().zip(&layer.meta) {
                match out.iter_mut().find(|(q, _)| q == &&p[..]) {
                    Some((_, seen)) => {
                        seen.before |= m.before;
                        seen.after |= m.after;
                    }
                    None => out.push((p, m.clone())),
                }
            }
        }
        out
    }
}

impl Layer {
    fn heap_bytes(&self) -> usize {
        let matchers = self.matcher.iter().chain(self.names.get().into_iter().flatten());
        matchers.map(Matcher::memory_usage).sum::<usize>()
            + self.patterns.iter().map(|p| p.len() + size_of::<Box<[u8]>>()).sum::<usize>()
            + self.meta.iter().map(|m| m.replacement.len() + size_of::<Meta>()).sum::<usize>()
    }
}

/// `value` as the normaliser matches it, read on its own.
fn normalised(value: &[u8]) -> Vec<u8> {
    let mut n = Normalised::default();
    n.of(value, Line::START, true);
    n.text
}

/// `value` with only the escapes that start with `intro` undone.
fn normalised_only(value: &[u8], intro: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while let Some(&c) = value.get(i) {
        let raw = match normalise::step(value, i, Line::START, true) {
            Step::Escape { raw, dec, len } if c == intro => {
                out.extend_from_slice(&dec[..usize::from(len)]);
                i += usize::from(raw);
                continue;
            }
            Step::Escape { raw, .. } | Step::Soft { raw } => usize::from(raw),
            Step::Break => 2,
            _ => 1,
        };
        out.extend_from_slice(&value[i..i + raw]);
        i += raw;
    }
    out
}

/// `value` without the spaces and tabs around it, when it has some and
/// what remains is long enough to match on its own. HTTP drops them from a
/// field value (RFC 9110 §5.5), so a value stored with a stray space
/// reaches, and comes back from, the upstream without it.
fn trimmed(value: &[u8]) -> Option<&[u8]> {
    let t = value.trim_ascii();
    (t.len() != value.len() && t.len() >= MIN_VARIANT).then_some(t)
}

/// The patterns that catch `value` in every spelling the normaliser undoes
/// (each with its swallow flags):
///
/// - the value itself (matched as written inside an encoding, e.g. a value
///   holding `%41` that is URL-encoded as `%2541`), as the normaliser reads
///   it (matched when a server decoded it, or wrote it raw), and with only
///   its `%`, only its `\` or only its `&` escapes undone (a value holding
///   `%41` written in HTML, where the normaliser undoes both);
/// - its bytes misread as Latin-1 and written as UTF-8 (or `\u00XX`);
/// - with each space as `+` (form encoding), and, with `form_decoded`,
///   each `+` as a space (a value written raw in a form, form-decoded);
/// - cut short where an escape around it could take in its first or last
///   characters: `%` before a value starting `4f3a`, or `41` after one
///   ending in `%`, is read as one escape, so the value as written never
///   appears in the matched text. An agent chooses the bytes around the
///   placeholder in its headers, so it could choose such an escape and have
///   the upstream echo the rest. These variants (at least [`MIN_VARIANT`]
///   long) swallow the escape next to them.
fn plain_forms(value: &[u8], form_decoded: bool) -> Vec<(Vec<u8>, u8, u8)> {
    let n = value.len();
    let mut out = vec![(value.to_vec(), 0, 0)];
    for intro in [b'%', b'\\', b'&'] {
        out.push((normalised_only(value, intro), 0, 0));
    }
    let heads = std::iter::once(0).chain((1..n.min(12)).filter(|&k| could_end_unit(&value[..k])));
    let tails: Vec<usize> =
        std::iter::once(0).chain((1..n.min(MAX_UNIT)).filter(|&j| could_start_unit(&value[n - j..]))).collect();
    for k in heads {
        for &j in &tails {
            if k + j >= n {
                continue;
            }
            let form = normalised(&value[k..n - j]);
            if (k, j) == (0, 0) || form.len() >= MIN_VARIANT {
                out.push((form, if k > 0 { ESC } else { 0 }, if j > 0 { ESC } else { 0 }));
            }
        }
    }
    // Its bytes read as Latin-1 (WSGI header values, PEP 3333) and written
    // out as UTF-8, or as `\u00XX` escapes, which the normaliser reads as
    // the same characters.
    if !value.is_ascii() {
        let misread: String = value.iter().copied().map(char::from).collect();
        out.push((misread.into_bytes(), 0, 0));
    }
    // Written raw in a form body and form-decoded: each `+` read as a
    // space. (Secrets only: a long injected header value holding `+`
    // would double its patterns for a path only a key takes.)
    let spaced: Vec<_> = out
        .iter()
        .filter(|(form, ..)| form_decoded && form.contains(&b'+'))
        .map(|(form, before, after)| {
            (form.iter().map(|&c| if c == b'+' { b' ' } else { c }).collect(), *before, *after)
        })
        .collect();
    let plus: Vec<_> = out
        .iter()
        .filter(|(form, ..)| form.contains(&b' '))
        .map(|(form, before, after)| {
            (form.iter().map(|&c| if c == b' ' { b'+' } else { c }).collect(), *before, *after)
        })
        .collect();
    out.extend(plus);
    out.extend(spaced);
    out
}

/// Whether `t` could be how a unit that starts before it ends: the last
/// characters of `%HH`, `\uXXXX`, a surrogate pair, `\"` and the like, a
/// JSON line break, or an HTML reference. Generous: a variant too many only
/// costs a pattern.
fn could_end_unit(t: &[u8]) -> bool {
    let hex = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_hexdigit);
    // The tail of `\uXXXX` after its backslash: 1-4 hex digits, or `u` and 4.
    let u_tail = |s: &[u8]| (s.len() <= 4 && hex(s)) || (s.len() == 5 && s[0] == b'u' && hex(&s[1..]));
    if u_tail(t) || matches!(t, [b'"' | b'\\' | b'/' | b'\'' | b't' | b'n'] | b"\\n" | b"r\\n") {
        return true;
    }
    // A surrogate pair: the tail of its first half, then `\uXXXX`.
    if (6..=11).contains(&t.len()) {
        let (first, second) = t.split_at(t.len() - 6);
        if second.starts_with(b"\\u") && hex(&second[2..]) && (first.is_empty() || u_tail(first)) {
            return true;
        }
    }
    match t.split_last() {
        Some((b';', name)) => {
            let digits = name.strip_prefix(b"#").unwrap_or(name);
            let digits = digits.strip_prefix(b"x").or_else(|| digits.strip_prefix(b"X")).unwrap_or(digits);
            name.is_empty()
                || (digits.len() <= 8 && digits.iter().all(u8::is_ascii_hexdigit))
                || normalise::is_name_tail(name)
        }
        _ => false,
    }
}

/// Whether `t` is the start of a unit that the bytes after it could
/// complete.
fn could_start_unit(t: &[u8]) -> bool {
    normalise::step(t, 0, Line::SOFT, false) == Step::Incomplete
}

/// A base64 fragment of a value, and its swallow flags.
pub(super) struct Fragment {
    pub(super) bytes: Vec<u8>,
    /// The alphabet's flag when the character before the fragment also
    /// encodes bits of the value's first byte, else 0.
    pub(super) before: u8,
    /// The same for the character after it and the value's last byte.
    pub(super) after: u8,
}

/// The base64 characters that encode `value` wherever it sits in a larger
/// base64 blob: for each of the three byte offsets, the encoding of
/// `value` after that many filler bytes, minus the characters that also
/// depend on neighbouring bytes. Standard and URL-safe alphabets.
///
/// Those edge characters carry a few bits of the value's first or last
/// byte: at offset 1 the one before holds its top 4 bits, at offset 2 its
/// top 2; after, the one holding its last 2, 4 or 6 bits. A fragment that
/// matches swallows them (a `=` that pads the blob tells nothing).
pub(super) fn base64_fragments(value: &[u8]) -> Vec<Fragment> {
    let mut out = Vec::new();
    for offset in 0..3usize {
        let mut buf = vec![0u8; offset];
        buf.extend_from_slice(value);
        // Characters fully determined by `value`: skip those touching the
        // filler, and drop a trailing partial group.
        let start = (offset * 8).div_ceil(6);
        let end = buf.len() * 8 / 6;
        for (engine, alphabet) in [(&STANDARD_NO_PAD, STD), (&URL_SAFE_NO_PAD, URL)] {
            let enc = engine.encode(&buf);
            if end > start + 3 {
                out.push(Fragment {
                    bytes: enc.as_bytes()[start..end].to_vec(),
                    before: if offset == 0 { 0 } else { alphabet },
                    after: if buf.len() % 3 == 0 { 0 } else { alphabet },
                });
            }
        }
    }
    out
}
