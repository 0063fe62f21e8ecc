//! The scan: leftmost-longest matching over a buffer's text, replacing
//! what is final and telling the caller how much to hold back; and
//! [`Stream`], which feeds it a body frame by frame.

use std::sync::Arc;

use aho_corasick::Match;
use memchr::memrchr;

use super::PatternSet;
use super::normalise::{self, Line, Normalised, Unit};
use super::patterns::{self, ESC, Layer, Matcher, STD, SWALLOW, URL};
use zeroize::Zeroize;

/// One unit holding a matched byte, in both coordinates.
#[derive(Clone, Copy, Debug)]
struct Span {
    n_start: usize,
    n_end: usize,
    raw_start: usize,
    raw_end: usize,
}

/// A buffer as the matcher sees it: the matched text, and where each of
/// its bytes came from.
struct View<'a> {
    /// The matched text.
    n: &'a [u8],
    /// Sparse map, in order; empty when `n` is `raw[..complete]`.
    units: &'a [Unit],
    /// Raw bytes covered by complete units; the rest is held as it is.
    complete: usize,
    /// Where in `n` the last hard line break is.
    last_hard: Option<usize>,
}

impl View<'_> {
    /// The unit holding matched byte `p` (`p < n.len()`).
    fn unit(&self, p: usize) -> Span {
        if self.units.is_empty() {
            return Span { n_start: p, n_end: p + 1, raw_start: p, raw_end: p + 1 };
        }
        // Units that end at or before `p` (an empty one at `p` included).
        let k = self.units.partition_point(|u| u.n + usize::from(u.n_len) <= p);
        if let Some(u) = self.units.get(k).filter(|u| u.n <= p) {
            return Span {
                n_start: u.n,
                n_end: u.n + usize::from(u.n_len),
                raw_start: u.raw,
                raw_end: u.raw + usize::from(u.raw_len),
            };
        }
        let raw = match k.checked_sub(1).and_then(|i| self.units.get(i)) {
            // Raw text is never shorter than what it decodes to.
            Some(u) => p - (u.n + usize::from(u.n_len)) + u.raw + usize::from(u.raw_len),
            None => p,
        };
        Span { n_start: p, n_end: p + 1, raw_start: raw, raw_end: raw + 1 }
    }

    /// Where the unit holding matched byte `p` starts in the raw buffer
    /// (past any empty unit at `p`); `complete` at the end.
    fn raw_at(&self, p: usize) -> usize {
        if p >= self.n.len() { self.complete } else { self.unit(p).raw_start }
    }

    /// Whether `flags` let a match swallow unit `u`.
    fn swallows(&self, flags: u8, u: &Span) -> bool {
        if flags & ESC != 0 && u.raw_end - u.raw_start > 1 {
            return true;
        }
        if u.n_end - u.n_start != 1 {
            return false;
        }
        let b = self.n[u.n_start];
        (flags & STD != 0 && (b.is_ascii_alphanumeric() || b == b'+' || b == b'/'))
            || (flags & URL != 0 && (b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    }
}

/// What a scan carries from one buffer to the next.
#[derive(Debug)]
struct Carry {
    /// The line standing at the first held byte (for soft line breaks).
    line: Line,
    /// Swallow flags for the first held unit, left by a match that ended
    /// just before it while it was not yet known whether another match
    /// starts there.
    pending: u8,
    count: u64,
    /// Whether each replacement takes exactly the length of what it
    /// replaces (see [`Stream::same_length`]).
    fit: bool,
}

impl Default for Carry {
    fn default() -> Self {
        Carry { line: Line::START, pending: 0, count: 0, fit: false }
    }
}

/// What fills a replacement that must take exactly `len` bytes: the
/// replacement padded with `*`, or only `*` when it does not fit. Of what
/// it hides, the fill tells only its length.
fn fitted(replacement: &[u8], len: usize, out: &mut Vec<u8>) {
    let head = if replacement.len() <= len { replacement } else { &[][..] };
    out.extend_from_slice(head);
    out.resize(out.len() + (len - head.len()), FILL);
}

/// The padding of a same-length replacement.
const FILL: u8 = b'*';

/// Scans `buf` (what was held, then new bytes), writes to `out` everything
/// that is final, and returns where the bytes to hold back start. With
/// `eof`, nothing is held.
fn scan(set: &PatternSet, buf: &[u8], carry: &mut Carry, norm: &mut Normalised, eof: bool, out: &mut Vec<u8>) -> usize {
    if set.layers.iter().all(|l| l.matcher.is_none()) {
        out.extend_from_slice(buf);
        return buf.len();
    }
    let mut finder = Finder::new(set);
    let hold = set.hold;
    let plain = normalise::plain(buf, carry.line, eof);
    let view = match plain {
        Some(complete) => {
            let from = complete.saturating_sub(hold);
            let last_hard = memrchr(b'\n', &buf[from..complete]).map(|p| from + p);
            View { n: &buf[..complete], units: &[], complete, last_hard }
        }
        None => {
            norm.of(buf, carry.line, eof);
            View { n: &norm.text, units: &norm.units, complete: norm.complete, last_hard: norm.last_hard }
        }
    };
    let n = view.n;
    let end = n.len();
    // Matches starting before `fin` are final: a longer one would need more
    // than `hold - SWALLOW` further bytes, or to cross a hard line break.
    // Bytes from `keep` on are held: past it, a match still to come may
    // start, or swallow the unit before it.
    let after_hard = view.last_hard.map_or(0, |p| p + 1);
    let (fin, keep) = if eof {
        (usize::MAX, end)
    } else {
        let keep = end.saturating_sub(hold).max(after_hard);
        let keep = if keep < end { view.unit(keep).n_start } else { end };
        (end.saturating_sub(hold - SWALLOW).max(after_hard), keep)
    };
    let mut restart = 0;
    let mut cursor = 0;
    // A match's pending swallow of the unit at this matched position.
    let mut after: Option<(usize, u8)> = (carry.pending != 0).then_some((0, carry.pending));
    carry.pending = 0;
    let mut held_at = None;
    loop {
        let m = finder.find(n, restart, end);
        if let Some((at, flags)) = after.take() {
            if at < end {
                let u = view.unit(at);
                if m.is_some_and(|m| m.start < u.n_end) {
                    // The next match takes that unit as its own.
                } else if at < fin {
                    if view.swallows(flags, &u) {
                        if carry.fit {
                            // The swallowed unit is part of what the
                            // replacement stands for.
                            out.resize(out.len() + u.raw_end.saturating_sub(cursor), FILL);
                        }
                        cursor = u.raw_end;
                        restart = restart.max(u.n_end);
                    }
                } else {
                    // Not yet known whether a match starts there.
                    carry.pending = flags;
                    held_at = Some(at);
                    break;
                }
            } else if !eof {
                carry.pending = flags;
                held_at = Some(at);
                break;
            }
        }
        let Some(m) = m else { break };
        if m.start >= fin {
            break;
        }
        let first = view.unit(m.start);
        let last = view.unit(m.end - 1);
        let mut start = first.raw_start;
        if m.before != 0 && first.n_start > 0 {
            let prev = view.unit(first.n_start - 1);
            if prev.raw_start >= cursor && view.swallows(m.before, &prev) {
                start = prev.raw_start;
            }
        }
        out.extend_from_slice(&buf[cursor..start]);
        if carry.fit {
            fitted(m.replacement, last.raw_end - start, out);
        } else {
            out.extend_from_slice(m.replacement);
        }
        carry.count += 1;
        cursor = last.raw_end;
        restart = last.n_end;
        if m.after != 0 {
            after = Some((restart, m.after));
        }
    }
    // Everything before the held unit goes out (a soft line break right
    // before it included).
    let at = held_at.unwrap_or(keep.max(restart));
    let held = view.raw_at(at).max(cursor);
    out.extend_from_slice(&buf[cursor..held]);
    carry.line = match plain {
        Some(_) => carry.line.advance(&buf[..held]),
        None => norm.line_at(carry.line, at),
    };
    held
}

/// A match, and what it does: the replacement of the first layer that
/// holds its pattern, the swallow flags of every layer that does.
#[derive(Clone, Copy)]
struct Found<'s> {
    start: usize,
    end: usize,
    replacement: &'s [u8],
    before: u8,
    after: u8,
}

/// The leftmost-longest match over all of a set's layers, exactly as one
/// matcher over all their patterns finds it: the match that starts
/// first, the longest at that start (each layer's own search already gives
/// the longest of its patterns there).
///
/// Each layer's last answer is kept for the next call: a search from `p`
/// finds the leftmost match starting at or after `p`, so an answer that
/// starts at or after a later `from` (or that there is none) is also what
/// a search from `from` would give. A layer is searched again only once
/// the scan has passed its answer; a layer that rarely matches (a
/// request's injected values) is searched about once per buffer.
struct Finder<'s> {
    set: &'s PatternSet,
    /// Per layer: `None` until searched, then its last answer.
    last: Vec<Option<Option<Match>>>,
}

impl<'s> Finder<'s> {
    fn new(set: &'s PatternSet) -> Self {
        Finder { set, last: vec![None; set.layers.len()] }
    }

    /// The match in `n[from..end]`.
    fn find(&mut self, n: &[u8], from: usize, end: usize) -> Option<Found<'s>> {
        if from >= end {
            return None;
        }
        let mut best: Option<Found<'s>> = None;
        for (layer, last) in self.set.layers.iter().zip(&mut self.last) {
            let Some(matcher) = &layer.matcher else { continue };
            let m = match *last {
                Some(m) if m.is_none_or(|m| m.start() >= from) => m,
                _ => *last.insert(matcher.find(n, from..end)),
            };
            let Some(m) = m else { continue };
            let meta = &layer.meta[m.pattern().as_usize()];
            match &mut best {
                Some(b) if (b.start, b.end) == (m.start(), m.end()) => {
                    // The same pattern in a later layer.
                    b.before |= meta.before;
                    b.after |= meta.after;
                }
                Some(b) if b.start < m.start() || (b.start == m.start() && b.end > m.end()) => {}
                _ => {
                    best = Some(Found {
                        start: m.start(),
                        end: m.end(),
                        replacement: &meta.replacement,
                        before: meta.before,
                        after: meta.after,
                    });
                }
            }
        }
        best
    }
}

impl PatternSet {
    /// Whether `input` holds any pattern, in any spelling the normaliser
    /// undoes.
    pub fn is_match(&self, input: &[u8]) -> bool {
        // Normalising never lengthens text, so a layer whose patterns are
        // all longer than `input` cannot match it.
        let layers = || self.layers.iter().filter(|l| l.shortest <= input.len()).filter_map(|l| l.matcher.as_ref());
        if layers().next().is_none() {
            return false;
        }
        let mut norm = Normalised::default();
        let text = if normalise::plain(input, Line::START, true).is_some() {
            input
        } else {
            norm.of(input, Line::START, true);
            &norm.text[..]
        };
        layers().any(|m| m.is_match(text))
    }

    /// Whether a header name holds any pattern, in any spelling the
    /// normaliser undoes and in any case (names arrive lower-cased).
    pub(super) fn is_match_name(&self, name: &[u8]) -> bool {
        // As in `is_match`; and so a request's layer (injected values are
        // long) never builds its name matcher for an ordinary name.
        let layers = || self.layers.iter().filter(|l| l.matcher.is_some() && l.shortest <= name.len());
        if layers().next().is_none() {
            return false;
        }
        let mut text = if normalise::plain(name, Line::START, true).is_some() {
            name.to_vec()
        } else {
            let mut norm = Normalised::default();
            norm.of(name, Line::START, true);
            norm.text
        };
        text.make_ascii_lowercase();
        layers().any(|l| l.names.get_or_init(|| names_matcher(l)).as_ref().is_some_and(|m| m.is_match(&text)))
    }

    /// Replaces every match in `input` at once (the oracle the streaming
    /// path must equal; also used for headers, paths and messages).
    /// Returns the count.
    pub fn replace_all(&self, input: &[u8], out: &mut Vec<u8>) -> u64 {
        let mut carry = Carry::default();
        scan(self, input, &mut carry, &mut Normalised::default(), true, out);
        carry.count
    }

    /// `text` with every match replaced, as text: for what airlock writes
    /// down or shows (a path in the audit record and logs, a denial's
    /// message).
    pub fn scrub_text(&self, text: &str) -> String {
        let mut out = Vec::with_capacity(text.len());
        self.replace_all(text.as_bytes(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A layer's patterns lower-cased, for header names.
fn names_matcher(layer: &Layer) -> Option<Matcher> {
    let mut lower: Vec<Vec<u8>> = layer.patterns.iter().map(|p| p.to_ascii_lowercase()).collect();
    lower.sort();
    lower.dedup();
    let matcher = patterns::compile(lower.iter().map(Vec::as_slice), layer.kind);
    lower.iter_mut().for_each(Zeroize::zeroize);
    matcher
}

/// Streaming replacement over a body that arrives in frames.
pub struct Stream {
    set: Arc<PatternSet>,
    held: Vec<u8>,
    carry: Carry,
    /// Scratch space for frames that need normalising.
    norm: Normalised,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the held bytes: they may be the start of a secret.
        f.debug_struct("Stream").field("held", &self.held.len()).field("count", &self.carry.count).finish()
    }
}

impl Stream {
    /// A stream over a pattern set.
    pub fn new(set: Arc<PatternSet>) -> Self {
        Stream { set, held: Vec::new(), carry: Carry::default(), norm: Normalised::default() }
    }

    /// A stream whose output is exactly as long as its input: each match
    /// is replaced by its replacement padded with `*` to the match's raw
    /// length (only `*` when the replacement is longer). For framed
    /// binary data (a gRPC message, and the protobuf inside it) whose
    /// length prefixes would be wrong after any change of length.
    pub fn same_length(set: Arc<PatternSet>) -> Self {
        Stream { carry: Carry { fit: true, ..Carry::default() }, ..Stream::new(set) }
    }

    /// Replacements made so far.
    pub fn count(&self) -> u64 {
        self.carry.count
    }

    /// Bytes currently held back.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Scans one more frame; appends to `out` everything that is final.
    pub fn push(&mut self, frame: &[u8], out: &mut Vec<u8>) {
        let set = Arc::clone(&self.set);
        if self.held.is_empty() {
            let keep = scan(&set, frame, &mut self.carry, &mut self.norm, false, out);
            self.held.extend_from_slice(&frame[keep..]);
            return;
        }
        let old = self.held.len();
        let mut buf = std::mem::take(&mut self.held);
        // The held bytes are joined with only the start of a long frame:
        // once scanning that junction holds nothing from before the frame,
        // the rest of the frame is scanned where it lies, uncopied. This
        // is exactly pushing the frame as two (the scan does not depend on
        // how the body is cut).
        let junction = 2 * set.hold;
        if frame.len() > junction {
            buf.extend_from_slice(&frame[..junction]);
            let keep = scan(&set, &buf, &mut self.carry, &mut self.norm, false, out);
            if let Some(x) = keep.checked_sub(old) {
                let rest = &frame[x..];
                let keep = scan(&set, rest, &mut self.carry, &mut self.norm, false, out);
                buf.clear();
                buf.extend_from_slice(&rest[keep..]);
                self.held = buf;
                return;
            }
            buf.drain(..keep);
            buf.extend_from_slice(&frame[junction..]);
        } else {
            buf.extend_from_slice(frame);
        }
        let keep = scan(&set, &buf, &mut self.carry, &mut self.norm, false, out);
        buf.drain(..keep);
        self.held = buf;
    }

    /// Ends the stream: the held bytes can no longer grow, so they are
    /// replaced as they are and flushed.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.held);
        scan(&self.set, &held, &mut self.carry, &mut self.norm, true, out);
    }
}
