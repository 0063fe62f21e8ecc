//! The normaliser: the text as the matcher matches it, with every escape
//! a server may have spelled a secret in undone, and a map back to the raw
//! bytes.
//!
//! The raw bytes are read as a sequence of *units*, left to right, each the
//! longest of:
//!
//! | raw unit | matched as |
//! |---|---|
//! | `%HH` (either case) | that byte |
//! | `\"` `\\` `\/` `\'` `\t` | `"` `\` `/` `'` tab |
//! | `\uXXXX` (either case), a surrogate pair `\uD83D\uDE00` | the character, in UTF-8 |
//! | `&#xH..;` `&#XH..;` `&#D..;` (at most 8 digits) | the character, in UTF-8 |
//! | `&name;` for the HTML names of ASCII characters (`&amp;` `&sol;` `&plus;` ...) | that character |
//! | a *soft* line break: `\n`, `\r\n`, or their JSON escapes, right after a run of exactly 60, 64 or 76 base64 characters that ends a line (after a label or a quote, too) | nothing |
//! | any other byte | itself |
//!
//! An escape that would decode to a control character (other than tab) is
//! not decoded: no secret holds one, and a line break must stay a line
//! break. A `+` stays a `+` (the pattern set spells spaces as `+` instead).
//! A *hard* line break is a raw `\n` that is not soft; the hold-back ends
//! at the last one.
//!
//! The map is sparse: only units whose raw bytes differ from what they
//! match as are listed, so a buffer without any `%`, `\`, `&` or soft line
//! break (most frames) is matched where it lies, without a copy. Which
//! bytes are units, escapes or soft breaks depends on the text alone, never
//! on the secrets.
//!
//! Written by hand: URL, JSON and HTML decoders exist, but none decodes a
//! mix of all three in one pass, keeps a map from each decoded byte back to
//! its raw span, or stops at an incomplete escape and resumes with the next
//! frame, which the streaming scan needs to replace the raw span of a
//! match.

use memchr::{memchr, memchr2, memchr3, memrchr};

/// The longest raw unit, in bytes (`&DiacriticalGrave;`): an incomplete
/// escape held back at the end of a frame is shorter.
pub(super) const MAX_UNIT: usize = 18;

/// Line lengths after which a line break is soft: PEM (64), MIME (76) and
/// Ruby's and GitHub's `pack('m')` (60).
const SOFT_COLS: [usize; 3] = [60, 64, 76];

/// A run of base64 longer than the longest soft line.
const LONG: u8 = 77;

/// The longest HTML name of an ASCII character.
const MAX_NAME: usize = 16;

/// `B64[b]`: `b` is in either base64 alphabet.
const B64: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_');
        b += 1;
    }
    t
};

fn all_b64(s: &[u8]) -> bool {
    s.iter().all(|&b| B64[usize::from(b)])
}

/// Where the current line stands, for soft line breaks: how many base64
/// characters end it (up to [`LONG`]). A wrapped base64 line need not be
/// base64 from its start: its first line often follows a label or a quote
/// (`"content": "` in GitHub's contents API, `cert=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Line {
    run: u8,
}

impl Line {
    /// The start of a line (and of a body).
    pub(super) const START: Line = Line { run: 0 };

    /// A line a break would end softly.
    pub(super) const SOFT: Line = Line { run: 64 };

    /// Whether a line break here is soft.
    fn soft(self) -> bool {
        SOFT_COLS.contains(&usize::from(self.run))
    }

    /// After `bytes` more, none of them a line break.
    pub(super) fn push(self, bytes: &[u8]) -> Line {
        let tail = bytes.iter().rev().take_while(|&&b| B64[usize::from(b)]).count();
        let run = if tail == bytes.len() { usize::from(self.run) + tail } else { tail };
        Line { run: u8::try_from(run.min(usize::from(LONG))).unwrap_or(LONG) }
    }

    /// After raw bytes that hold no escape and no soft line break.
    pub(super) fn advance(self, plain: &[u8]) -> Line {
        match memrchr(b'\n', plain) {
            Some(p) => Line::START.push(&plain[p + 1..]),
            None => self.push(plain),
        }
    }
}

/// What the unit at a position is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// One byte that stands for itself.
    Byte,
    /// A hard line break (a raw `\n`).
    Hard,
    /// A soft line break of `raw` bytes, matched as nothing.
    Soft { raw: u8 },
    /// A JSON `\n` that is not soft: matched as itself, and ends the line.
    Break,
    /// An escape of `raw` bytes, matched as `dec[..len]`.
    Escape { raw: u8, dec: [u8; 4], len: u8 },
    /// The buffer ends where this could still become an escape.
    Incomplete,
}

fn hex(b: u8) -> Option<u32> {
    char::from(b).to_digit(16)
}

/// A character no secret holds: escapes of these are not decoded.
fn control(c: u32) -> bool {
    (c < 0x20 && c != 0x09) || c == 0x7f
}

fn decoded(raw: usize, c: u32) -> Step {
    match (char::from_u32(c), u8::try_from(raw)) {
        (Some(ch), Ok(raw)) if c != 0 && !control(c) => {
            let mut dec = [0u8; 4];
            let len = ch.encode_utf8(&mut dec).len() as u8;
            Step::Escape { raw, dec, len }
        }
        _ => Step::Byte,
    }
}

/// The unit at `buf[i]`, the line standing at `line` before it. With `eof`,
/// nothing more will come, so nothing is incomplete.
pub(super) fn step(buf: &[u8], i: usize, line: Line, eof: bool) -> Step {
    // Out of bytes while the unit could still be an escape.
    let more = if eof { Step::Byte } else { Step::Incomplete };
    let at = |k: usize| buf.get(i + k).copied();
    match at(0) {
        Some(b'\n') if line.soft() => Step::Soft { raw: 1 },
        Some(b'\n') => Step::Hard,
        Some(b'\r') if line.soft() => match at(1) {
            Some(b'\n') => Step::Soft { raw: 2 },
            Some(_) => Step::Byte,
            None => more,
        },
        Some(b'%') => match (at(1).map(hex), at(2).map(hex)) {
            // A byte, not a character: `%C3%A9` is UTF-8 for `é`.
            (Some(Some(h)), Some(Some(l))) if !control(h * 16 + l) => {
                Step::Escape { raw: 3, dec: [(h * 16 + l) as u8, 0, 0, 0], len: 1 }
            }
            (Some(Some(_)), None) | (None, _) => more,
            _ => Step::Byte,
        },
        Some(b'\\') => match at(1) {
            None => more,
            Some(c @ (b'"' | b'\\' | b'/' | b'\'')) => decoded(2, u32::from(c)),
            Some(b't') => decoded(2, 0x09),
            Some(b'n') if line.soft() => Step::Soft { raw: 2 },
            Some(b'n') => Step::Break,
            Some(b'r') if line.soft() => match (at(2), at(3)) {
                (Some(b'\\'), Some(b'n')) => Step::Soft { raw: 4 },
                (None, _) | (Some(b'\\'), None) => more,
                _ => Step::Byte,
            },
            Some(b'u') => unicode(buf, i, eof),
            Some(_) => Step::Byte,
        },
        Some(b'&') => entity(buf, i, eof),
        Some(_) => Step::Byte,
        None => more,
    }
}

/// Four hex digits at `buf[at..]`: `Err` when the buffer ends inside them.
fn hex4(buf: &[u8], at: usize, eof: bool) -> Result<Option<u32>, ()> {
    let digits = buf.get(at..).unwrap_or_default();
    let digits = &digits[..digits.len().min(4)];
    let mut v = 0;
    for &d in digits {
        match hex(d) {
            Some(h) => v = v * 16 + h,
            None => return Ok(None),
        }
    }
    match digits.len() {
        4 => Ok(Some(v)),
        _ if eof => Ok(None),
        _ => Err(()),
    }
}

/// `\uXXXX` at `buf[i]`, or a surrogate pair.
fn unicode(buf: &[u8], i: usize, eof: bool) -> Step {
    let more = if eof { Step::Byte } else { Step::Incomplete };
    let hi = match hex4(buf, i + 2, eof) {
        Ok(Some(c)) => c,
        Ok(None) => return Step::Byte,
        Err(()) => return Step::Incomplete,
    };
    if !(0xd800..0xdc00).contains(&hi) {
        // A lone low surrogate is not a character.
        return if (0xdc00..0xe000).contains(&hi) { Step::Byte } else { decoded(6, hi) };
    }
    match (buf.get(i + 6), buf.get(i + 7)) {
        (Some(b'\\'), Some(b'u')) => {}
        (None, _) | (Some(b'\\'), None) => return more,
        _ => return Step::Byte,
    }
    match hex4(buf, i + 8, eof) {
        Ok(Some(lo)) if (0xdc00..0xe000).contains(&lo) => decoded(12, 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)),
        Ok(_) => Step::Byte,
        Err(()) => Step::Incomplete,
    }
}

/// An HTML character reference at `buf[i]` (`&`).
fn entity(buf: &[u8], i: usize, eof: bool) -> Step {
    let more = if eof { Step::Byte } else { Step::Incomplete };
    let rest = buf.get(i + 1..).unwrap_or_default();
    if rest.first() == Some(&b'#') {
        let (from, radix) = match rest.get(1) {
            Some(b'x' | b'X') => (2, 16),
            Some(_) => (1, 10),
            None => return more,
        };
        let mut v: u32 = 0;
        for n in 0..=8 {
            match rest.get(from + n) {
                None => return more,
                Some(b';') if n > 0 => return decoded(1 + from + n + 1, v),
                Some(&d) if n < 8 => match char::from(d).to_digit(radix) {
                    Some(x) => v = v * radix + x,
                    None => return Step::Byte,
                },
                Some(_) => return Step::Byte,
            }
        }
        return Step::Byte;
    }
    for n in 0..=MAX_NAME {
        match rest.get(n) {
            None => return more,
            Some(b';') if n > 0 => {
                return match named(&rest[..n]) {
                    Some(c) => decoded(n + 2, u32::from(c)),
                    None => Step::Byte,
                };
            }
            Some(c) if c.is_ascii_alphanumeric() && n < MAX_NAME => {}
            Some(_) => return Step::Byte,
        }
    }
    Step::Byte
}

/// The HTML names of ASCII characters (WHATWG's named character
/// references; `&Tab;` and `&NewLine;` aside).
const NAMES: &[(&[u8], u8)] = &[
    (b"excl", b'!'),
    (b"quot", b'"'),
    (b"QUOT", b'"'),
    (b"num", b'#'),
    (b"dollar", b'$'),
    (b"percnt", b'%'),
    (b"amp", b'&'),
    (b"AMP", b'&'),
    (b"apos", b'\''),
    (b"lpar", b'('),
    (b"rpar", b')'),
    (b"ast", b'*'),
    (b"midast", b'*'),
    (b"plus", b'+'),
    (b"comma", b','),
    (b"period", b'.'),
    (b"sol", b'/'),
    (b"colon", b':'),
    (b"semi", b';'),
    (b"lt", b'<'),
    (b"LT", b'<'),
    (b"equals", b'='),
    (b"gt", b'>'),
    (b"GT", b'>'),
    (b"quest", b'?'),
    (b"commat", b'@'),
    (b"lsqb", b'['),
    (b"lbrack", b'['),
    (b"bsol", b'\\'),
    (b"rsqb", b']'),
    (b"rbrack", b']'),
    (b"Hat", b'^'),
    (b"lowbar", b'_'),
    (b"grave", b'`'),
    (b"DiacriticalGrave", b'`'),
    (b"lcub", b'{'),
    (b"lbrace", b'{'),
    (b"verbar", b'|'),
    (b"vert", b'|'),
    (b"VerticalLine", b'|'),
    (b"rcub", b'}'),
    (b"rbrace", b'}'),
    (b"Tab", b'\t'),
];

fn named(name: &[u8]) -> Option<u8> {
    NAMES.iter().find(|(n, _)| *n == name).map(|&(_, c)| c)
}

/// Whether `t` ends one of the HTML names decoded.
pub(super) fn is_name_tail(t: &[u8]) -> bool {
    NAMES.iter().any(|(n, _)| n.ends_with(t))
}

/// A unit of the text whose matched form differs from its raw bytes, as a
/// sparse map entry: units between two entries are single bytes that stand
/// for themselves.
#[derive(Clone, Copy, Debug)]
pub(super) struct Unit {
    /// Where its raw bytes start in the buffer.
    pub(super) raw: usize,
    pub(super) raw_len: u8,
    /// Where its matched bytes start in the matched text.
    pub(super) n: usize,
    pub(super) n_len: u8,
}

/// A buffer as the matcher matches it.
#[derive(Default)]
pub(super) struct Normalised {
    /// The matched text.
    pub(super) text: Vec<u8>,
    /// The units whose raw bytes differ from what they match as, in order.
    pub(super) units: Vec<Unit>,
    /// Where in `text` each line starts, after every kind of line break.
    pub(super) lines: Vec<usize>,
    /// Where in `text` the last hard line break is.
    pub(super) last_hard: Option<usize>,
    /// Raw bytes covered by complete units.
    pub(super) complete: usize,
}

impl std::fmt::Debug for Normalised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Normalised").field("text", &self.text.len()).field("units", &self.units.len()).finish()
    }
}

impl Normalised {
    /// Normalises `buf`, whose first byte starts a unit with the line
    /// standing at `line`. Stops before an escape the end of `buf` leaves
    /// incomplete (unless `eof`).
    pub(super) fn of(&mut self, buf: &[u8], mut line: Line, eof: bool) {
        self.text.clear();
        self.units.clear();
        self.lines.clear();
        self.last_hard = None;
        let mut i = 0;
        // The next `%`, `\` or `&`, and the next `\n` or `\r`, from `i`.
        let mut escape = None;
        let mut newline = None;
        loop {
            let rest = buf.get(i..).unwrap_or_default();
            if escape.is_none_or(|e| e < i) {
                escape = Some(memchr3(b'%', b'\\', b'&', rest).map_or(buf.len(), |p| i + p));
            }
            if newline.is_none_or(|e| e < i) {
                newline = Some(memchr2(b'\n', b'\r', rest).map_or(buf.len(), |p| i + p));
            }
            let next = escape.unwrap_or(buf.len()).min(newline.unwrap_or(buf.len()));
            let run = &buf[i..next];
            self.text.extend_from_slice(run);
            line = line.push(run);
            i = next;
            if i >= buf.len() {
                break;
            }
            let n = self.text.len();
            match step(buf, i, line, eof) {
                Step::Byte => {
                    self.text.push(buf[i]);
                    line = line.push(&buf[i..=i]);
                    i += 1;
                }
                Step::Hard => {
                    self.text.push(b'\n');
                    self.last_hard = Some(n);
                    self.lines.push(n + 1);
                    line = Line::START;
                    i += 1;
                }
                Step::Soft { raw } => {
                    self.units.push(Unit { raw: i, raw_len: raw, n, n_len: 0 });
                    self.lines.push(n);
                    line = Line::START;
                    i += usize::from(raw);
                }
                Step::Break => {
                    self.units.push(Unit { raw: i, raw_len: 2, n, n_len: 2 });
                    self.text.extend_from_slice(b"\\n");
                    self.lines.push(n + 2);
                    line = Line::START;
                    i += 2;
                }
                Step::Escape { raw, dec, len } => {
                    let dec = &dec[..usize::from(len)];
                    self.units.push(Unit { raw: i, raw_len: raw, n, n_len: len });
                    self.text.extend_from_slice(dec);
                    line = line.push(dec);
                    i += usize::from(raw);
                }
                Step::Incomplete => break,
            }
        }
        self.complete = i.min(buf.len());
    }

    /// The line standing at `text[p]`, given the line at the start.
    pub(super) fn line_at(&self, start: Line, p: usize) -> Line {
        let k = self.lines.partition_point(|&l| l <= p);
        match k.checked_sub(1).and_then(|k| self.lines.get(k)) {
            Some(&l) => Line::START.push(&self.text[l..p]),
            None => start.push(&self.text[..p]),
        }
    }
}

/// If `buf` needs no normalising (no `%`, `\` or `&`, no soft line break),
/// how much of it is complete (all but a final `\r` that may yet be half
/// of a soft `\r\n`).
pub(super) fn plain(buf: &[u8], line: Line, eof: bool) -> Option<usize> {
    if memchr3(b'%', b'\\', b'&', buf).is_some() || has_soft_break(buf, line) {
        return None;
    }
    match buf.split_last() {
        Some((b'\r', before)) if !eof && line.advance(before).soft() => Some(before.len()),
        _ => Some(buf.len()),
    }
}

/// Whether a line break in `buf` (which holds no escape) is soft.
///
/// Most text has a line break every few dozen bytes and almost never a
/// run of 60 base64 characters, which every soft break ends. So rather
/// than visit each line break, this hops over the text 60 bytes at a time:
/// a window holding any other character (found by looking from its end)
/// cannot be inside such a run, and the next window starts after that
/// character. Only the line break that ends a run found is checked.
fn has_soft_break(buf: &[u8], line: Line) -> bool {
    let run = SOFT_COLS[0];
    // The first line may have begun before the buffer.
    let Some(first) = memchr(b'\n', buf) else { return false };
    if soft_at(buf, first, line) {
        return true;
    }
    let mut p = first + 1;
    'hop: while let Some(window) = buf.get(p..p + run) {
        // Each window starts right after a character that is not base64,
        // so a run of 60 starts at one, if not before the buffer.
        for (i, &b) in window.iter().enumerate().rev() {
            if !B64[usize::from(b)] {
                p += i + 1;
                continue 'hop;
            }
        }
        let Some(off) = memchr(b'\n', &buf[p + run..]) else { return false };
        let q = p + run + off;
        if soft_at(buf, q, line) {
            return true;
        }
        p = q + 1;
    }
    false
}

/// Whether the `\n` at `buf[q]` is soft (`line` standing at `buf[0]`).
fn soft_at(buf: &[u8], q: usize, line: Line) -> bool {
    let end = if q > 0 && buf[q - 1] == b'\r' { q - 1 } else { q };
    SOFT_COLS.iter().any(|&c| match end.checked_sub(c + 1) {
        // Exactly `c` base64 characters end the line.
        Some(before) => !B64[usize::from(buf[before])] && all_b64(&buf[before + 1..end]),
        None => usize::from(line.run) + end == c && all_b64(&buf[..end]),
    })
}
