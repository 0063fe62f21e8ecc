//! Every realistic spelling of a secret is scrubbed: in one piece, split
//! across two frames at every position, and gzipped through [`RedactBody`].

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use http_body_util::BodyExt;

use super::*;

/// A secret with every character an encoder treats specially.
const SECRET: &str = "sk_live/Ab+Cd=Ef\"g'h<i>&j k\\l~\u{e9}\u{1f600}mn:?#$,;@";
const PLACEHOLDER: &[u8] = b"AIRLOCK_K";

fn secret_set() -> Arc<PatternSet> {
    set(&[(SECRET.as_bytes(), PLACEHOLDER)])
}

/// Percent-encodes every byte but ASCII letters, digits, `-._~` and `keep`;
/// `plus` writes a space as `+` (form encoding, which then encodes `+`).
fn percent(s: &[u8], keep: &[u8], upper: bool, plus: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in s {
        if plus && b == b' ' {
            out.push(b'+');
        } else if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep.contains(&b) && !(plus && b == b'+')) {
            out.push(b);
        } else if upper {
            out.extend(format!("%{b:02X}").bytes());
        } else {
            out.extend(format!("%{b:02x}").bytes());
        }
    }
    out
}

/// Every other byte percent-encoded, in alternating case.
fn percent_mixed(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &b) in s.iter().enumerate() {
        match i % 4 {
            0 => out.extend(format!("%{b:02X}").bytes()),
            2 => out.extend(format!("%{b:02x}").bytes()),
            _ => out.push(b),
        }
    }
    out
}

#[derive(Clone, Copy, Default)]
struct Json {
    /// Non-ASCII as `\uXXXX` (Python's `ensure_ascii`).
    ascii: bool,
    /// `/` as `\/`.
    slash: bool,
    /// `<`, `>`, `&` as `\u003c`... (Go's HTML-safe encoding).
    html: bool,
    /// Upper-case hex digits.
    upper: bool,
}

fn json(s: &str, how: Json) -> Vec<u8> {
    let mut out = String::new();
    let u = |out: &mut String, c: u16| {
        if how.upper {
            out.push_str(&format!("\\u{c:04X}"));
        } else {
            out.push_str(&format!("\\u{c:04x}"));
        }
    };
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if how.slash => out.push_str("\\/"),
            '<' | '>' | '&' if how.html => u(&mut out, ch as u16),
            c if !c.is_ascii() && how.ascii => {
                let mut units = [0u16; 2];
                for &unit in c.encode_utf16(&mut units).iter() {
                    u(&mut out, unit);
                }
            }
            c => out.push(c),
        }
    }
    out.into_bytes()
}

#[derive(Clone, Copy)]
enum Html {
    /// Named references where HTML has one, decimal for the rest.
    Named,
    /// `&#x2F;`
    Hex,
    /// `&#X2f;`
    HexMixed,
    /// `&#47;`
    Decimal,
}

fn html(s: &str, how: Html) -> Vec<u8> {
    let named: &[(char, &str)] = &[
        ('&', "amp"),
        ('<', "lt"),
        ('>', "gt"),
        ('"', "quot"),
        ('\'', "apos"),
        ('/', "sol"),
        ('+', "plus"),
        ('=', "equals"),
        ('\\', "bsol"),
        (':', "colon"),
        ('?', "quest"),
        ('#', "num"),
        ('$', "dollar"),
        (',', "comma"),
        (';', "semi"),
        ('@', "commat"),
        ('_', "lowbar"),
    ];
    let mut out = String::new();
    for ch in s.chars() {
        if ch.is_ascii_alphanumeric() || ch == ' ' {
            out.push(ch);
            continue;
        }
        let c = ch as u32;
        match how {
            Html::Named => match named.iter().find(|(n, _)| *n == ch) {
                Some((_, name)) => out.push_str(&format!("&{name};")),
                None => out.push_str(&format!("&#{c};")),
            },
            Html::Hex => out.push_str(&format!("&#x{c:X};")),
            Html::HexMixed => out.push_str(&format!("&#X{c:x};")),
            Html::Decimal => out.push_str(&format!("&#{c};")),
        }
    }
    out.into_bytes()
}

fn spellings() -> Vec<(&'static str, Vec<u8>)> {
    let s = SECRET.as_bytes();
    vec![
        ("raw", s.to_vec()),
        ("percent, upper case", percent(s, b"", true, false)),
        ("percent, lower case", percent(s, b"", false, false)),
        ("percent, mixed with raw", percent_mixed(s)),
        ("encodeURI", percent(s, b";,/?:@&=+$#!*'()", true, false)),
        ("encodeURIComponent", percent(s, b"!*'()", true, false)),
        ("Python quote", percent(s, b"/", true, false)),
        ("Python quote_plus (form)", percent(s, b"", true, true)),
        ("JSON (serde_json)", serde_json::to_string(SECRET).unwrap().trim_matches('"').as_bytes().to_vec()),
        ("JSON, escaped slashes", json(SECRET, Json { slash: true, ..Json::default() })),
        ("JSON, ensure_ascii", json(SECRET, Json { ascii: true, ..Json::default() })),
        ("JSON, ensure_ascii, upper-case hex", json(SECRET, Json { ascii: true, upper: true, ..Json::default() })),
        ("JSON, Go HTML-safe", json(SECRET, Json { html: true, slash: true, ascii: true, ..Json::default() })),
        ("HTML, named", html(SECRET, Html::Named)),
        ("HTML, hex", html(SECRET, Html::Hex)),
        ("HTML, hex mixed case", html(SECRET, Html::HexMixed)),
        ("HTML, decimal", html(SECRET, Html::Decimal)),
        // A key written raw in a form body (`body = "text"`), which the
        // upstream form-decodes: each `+` read as a space.
        ("form-decoded raw (+ as a space)", SECRET.replace('+', " ").into_bytes()),
        // Its bytes read as Latin-1 (WSGI headers, PEP 3333) and written
        // out again: as UTF-8, and as Python's ensure_ascii escapes.
        ("Latin-1 misread, as UTF-8", latin1_misread(SECRET).into_bytes()),
        ("Latin-1 misread, ensure_ascii", json(&latin1_misread(SECRET), Json { ascii: true, ..Json::default() })),
    ]
}

/// `s`'s UTF-8 bytes each read as the Latin-1 character of that number.
fn latin1_misread(s: &str) -> String {
    s.bytes().map(char::from).collect()
}

/// `body` gzipped and fed through [`RedactBody`] with a gzip [`Decoder`] in
/// frames of `frame` compressed bytes.
async fn through_gzip(set: &Arc<PatternSet>, body: &[u8], frame: usize) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(body).unwrap();
    let gz = e.finish().unwrap();
    let inner = Frames::new(gz.chunks(frame), false).boxed_unsync();
    let decoder = Decoder::for_encodings(std::iter::once("gzip"), 1000).unwrap();
    let body = RedactBody::new(inner, decoder, None, Arc::clone(set), RedactionCount::default(), |_| {});
    body.collect().await.unwrap().to_bytes().to_vec()
}

#[tokio::test]
async fn every_spelling_is_replaced_whole() {
    let set = secret_set();
    for (name, spelled) in spellings() {
        let body = [&b"<p>"[..], &spelled, b"</p>"].concat();
        let want = [&b"<p>"[..], PLACEHOLDER, b"</p>"].concat();
        let (got, n) = (oneshot(&set, &body), set.replace_all(&body, &mut Vec::new()));
        assert!(got == want, "{name}: one-shot output differs at byte {}", first_difference(&got, &want));
        assert_eq!(n, 1, "{name}");
        assert!(set.is_match(&body), "{name}");
        for cut in 0..=body.len() {
            let (got, _) = streamed(&set, &[&body[..cut], &body[cut..]]);
            assert!(got == want, "{name}, cut at {cut}: output differs at byte {}", first_difference(&got, &want));
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert!(streamed(&set, &bytes).0 == want, "{name}, a byte per frame");
        for frame in [1, 7, 4096] {
            let got = through_gzip(&set, &body, frame).await;
            assert!(
                got == want,
                "{name}, gzip frames of {frame}: output differs at byte {}",
                first_difference(&got, &want)
            );
        }
    }
}

#[test]
fn a_secret_in_a_location_header_is_caught_in_any_spelling() {
    let set = set(&[(b"sk_live_0123456789", b"AIRLOCK_K")]);
    for location in [
        &b"https://x.test/?k=sk%5flive_0123456789&y=1"[..],
        b"https://x.test/?k=sk%5Flive%5F0123456789",
        b"https://x.test/?k=%73%6b_live_0123456789",
        b"https://x.test/?k=sk&#95;live_0123456789",
    ] {
        assert!(set.is_match(location), "location of {} bytes", location.len());
        let mut headers = http::HeaderMap::new();
        headers.insert("location", http::HeaderValue::from_bytes(location).unwrap());
        let (headers, n) = scrub_headers(&set, headers);
        assert_eq!(n, 1);
        let v = headers["location"].as_bytes();
        assert!(contains(v, b"AIRLOCK_K") && !contains(v, b"0123456789"), "location of {} bytes", location.len());
    }
}

#[test]
fn an_escape_around_a_secret_cannot_hide_it() {
    // An agent chooses the bytes around the placeholder in its headers.
    // Written before a secret that starts with hex digits, `%` or `\u`
    // would read as one escape with its first characters, so the secret
    // as written would never appear in the matched text.
    let hex = b"4f3a9c2b8e7d4a1f6b0c9e8d7a6f5b4c";
    let set = set(&[(hex, PLACEHOLDER)]);
    for before in [&b"%"[..], b"%4", b"\\u", b"\\u0", b"\\u00", b"\\u004", b"\\", b"&#", b"&#x", b"\\uD83D\\"] {
        let body = [&b"<<"[..], before, hex, b">>"].concat();
        let got = oneshot(&set, &body);
        let whole = [&b"<<"[..], PLACEHOLDER, b">>"].concat();
        let kept = [&b"<<"[..], before, PLACEHOLDER, b">>"].concat();
        assert!(got == whole || got == kept, "{} bytes before: output differs", before.len());
        for cut in 0..=body.len() {
            assert!(streamed(&set, &[&body[..cut], &body[cut..]]).0 == got, "{} bytes before, cut {cut}", before.len());
        }
    }
    // The same after a secret that ends in the start of an escape.
    for (secret, after) in [
        (&b"sk_live_0123456%"[..], &b"41"[..]),
        (b"sk_live_0123456%4", b"1"),
        (b"sk_live_0123456&", b"amp;"),
        (b"sk_live_0123456&#", b"x41;"),
        (b"sk_live_0123456\\", b"\""),
        (b"sk_live_0123456\\u00", b"41"),
    ] {
        let set = self::set(&[(secret, PLACEHOLDER)]);
        let body = [&b"<<"[..], secret, after, b">>"].concat();
        let got = oneshot(&set, &body);
        let whole = [&b"<<"[..], PLACEHOLDER, b">>"].concat();
        let kept = [&b"<<"[..], PLACEHOLDER, after, b">>"].concat();
        assert!(got == whole || got == kept, "secret of {} bytes: output differs", secret.len());
        assert!(!contains(&got, b"0123456"), "secret of {} bytes: its body survived", secret.len());
    }
}

#[test]
fn a_secret_holding_an_escape_is_caught_as_written_and_decoded() {
    // A secret that itself holds `%41` or `&amp;`: caught raw, decoded by a
    // server, and encoded again.
    let secret = b"pa%41ss&amp;word_0123";
    let set = set(&[(secret, PLACEHOLDER)]);
    for spelled in [&secret[..], b"paAss&word_0123", b"pa%2541ss%26amp%3Bword_0123", b"pa%41ss&amp;amp;word_0123"] {
        let got = oneshot(&set, &[&b"<"[..], spelled, b">"].concat());
        assert!(got == [&b"<"[..], PLACEHOLDER, b">"].concat(), "spelling of {} bytes", spelled.len());
    }
}

/// base64 of `prefix` filler bytes, the secret and `suffix` filler bytes,
/// and for each character whether it depends on the secret wholly (`2`),
/// partly (`1`) or not at all (`0`).
fn blob(prefix: usize, secret: &[u8], suffix: usize, url: bool) -> (Vec<u8>, Vec<u8>) {
    let filler = |n: usize, seed: usize| (0..n).map(|i| ((i * 37 + seed * 11 + 5) % 251) as u8).collect::<Vec<u8>>();
    let plain = [filler(prefix, 1), secret.to_vec(), filler(suffix, 2)].concat();
    let enc = if url { URL_SAFE.encode(&plain) } else { STANDARD.encode(&plain) }.into_bytes();
    let (lo, hi) = (8 * prefix, 8 * (prefix + secret.len()));
    let deps = (0..enc.len())
        .map(|c| {
            let (a, b) = (6 * c, 6 * c + 6);
            if enc[c] == b'=' || b <= lo || a >= hi {
                0
            } else if a >= lo && b <= hi {
                2
            } else {
                1
            }
        })
        .collect();
    (enc, deps)
}

/// `text` with `brk` after every `width` characters, and where each
/// character went.
fn wrap(text: &[u8], width: usize, brk: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut at = Vec::new();
    for (i, &c) in text.iter().enumerate() {
        if i > 0 && i % width == 0 {
            out.extend_from_slice(brk);
        }
        at.push(out.len());
        out.push(c);
    }
    (out, at)
}

/// Checks that every character of `deps` at least `level` is inside the one
/// `[REDACTED]` of `got`, the scrubbed form of `wrapped`.
fn covered(got: &[u8], wrapped: &[u8], at: &[usize], deps: &[u8], level: u8) -> Result<(), String> {
    let r = got.windows(REDACTED.len()).position(|w| w == REDACTED).ok_or("no [REDACTED]")?;
    if got[r + REDACTED.len()..].windows(REDACTED.len()).any(|w| w == REDACTED) {
        return Err("more than one [REDACTED]".into());
    }
    // got = wrapped[..r] + [REDACTED] + wrapped[end..]
    let end = wrapped.len() - (got.len() - r - REDACTED.len());
    for (c, &d) in deps.iter().enumerate() {
        if d >= level && !(r..end).contains(&at[c]) {
            return Err(format!("character {c} (dependence {d}) survived; replaced {r}..{end}"));
        }
    }
    Ok(())
}

#[test]
fn wrapped_base64_is_caught_whichever_line_the_break_falls_in() {
    let secret = b"sk_live_0123456789abcdef";
    let set = set(&[(secret, PLACEHOLDER)]);
    // The first line may follow other text on its line: a PEM header line,
    // a JSON string's opening (GitHub's contents API wraps at 60 with `\n`
    // escapes), a label.
    for (opening, closing) in
        [(&b"-----BEGIN X-----\n"[..], &b"\n-----END X-----\n"[..]), (b"{\"content\": \"", b"\"}"), (b"cert=", b"\n")]
    {
        for (width, brk) in [(64, &b"\n"[..]), (76, b"\r\n"), (64, b"\\n"), (76, b"\\r\\n"), (60, b"\n"), (60, b"\\n")]
        {
            for prefix in 0..(width * 3 / 4 + 3) {
                for url in [false, true] {
                    let (enc, deps) = blob(prefix, secret, 7, url);
                    let (wrapped, at) = wrap(&enc, width, brk);
                    let body = [opening, &wrapped, closing].concat();
                    let shift = opening.len();
                    let got = oneshot(&set, &body);
                    let at: Vec<usize> = at.iter().map(|a| a + shift).collect();
                    if let Err(e) = covered(&got, &body, &at, &deps, 1) {
                        panic!(
                            "opening of {} bytes, width {width}, break of {} bytes, prefix {prefix}, url {url}: {e}",
                            opening.len(),
                            brk.len()
                        );
                    }
                    for cut in (0..=body.len()).step_by(7) {
                        assert!(
                            streamed(&set, &[&body[..cut], &body[cut..]]).0 == got,
                            "width {width}, prefix {prefix}, cut {cut}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn no_base64_character_that_depends_on_the_secret_survives() {
    // A character at a fragment's edge encodes bits of the secret's first
    // or last byte along with its neighbour's: it goes with the fragment.
    let secret = b"sk_live_0123456789abcdef";
    let set = set(&[(secret, PLACEHOLDER)]);
    for prefix in 0..7 {
        for suffix in 0..7 {
            for url in [false, true] {
                let (enc, deps) = blob(prefix, secret, suffix, url);
                let body = [&b"data="[..], &enc, b"&next=1"].concat();
                let at: Vec<usize> = (0..enc.len()).map(|c| c + 5).collect();
                let got = oneshot(&set, &body);
                if let Err(e) = covered(&got, &body, &at, &deps, 1) {
                    panic!("prefix {prefix}, suffix {suffix}, url {url}: {e}");
                }
                // Nothing but the characters that depend on it: the filler's
                // own characters and the padding stay.
                let first = deps.iter().position(|&d| d > 0).unwrap();
                let last = deps.iter().rposition(|&d| d > 0).unwrap();
                let want = [&body[..5 + first], REDACTED, &body[5 + last + 1..]].concat();
                assert!(
                    got == want,
                    "prefix {prefix}, suffix {suffix}, url {url}: more than the secret's characters went"
                );
                for cut in 0..=body.len() {
                    assert!(streamed(&set, &[&body[..cut], &body[cut..]]).0 == got, "prefix {prefix}, cut {cut}");
                }
            }
        }
    }
}

#[test]
fn a_swallow_never_takes_a_character_of_the_next_or_previous_match() {
    let (a, b) = (&b"sk_live_aaaaaaaaaaaaaaaaaaa"[..], &b"Zk_live_bbbbbbbbbbbbbbbbbbb"[..]);
    let set = set(&[(a, b"<A>"), (b, b"<B>")]);
    for f in patterns::base64_fragments(a).into_iter().filter(|f| f.before != 0 && f.after != 0) {
        // A fragment that would swallow its neighbours, right between two
        // raw secrets.
        let body = [&b"("[..], b, &f.bytes, b, b")"].concat();
        let got = oneshot(&set, &body);
        assert!(got == [&b"(<B>"[..], REDACTED, b"<B>)"].concat(), "fragment of {} bytes", f.bytes.len());
        for cut in 0..=body.len() {
            assert!(streamed(&set, &[&body[..cut], &body[cut..]]).0 == got, "cut {cut}");
        }
    }
}
