//! The streaming redactor against the one-shot oracle, the oracle against
//! a naive reference, what the hold-back reveals, every spelling, and
//! gRPC bodies message by message.
//! Assertion messages give lengths and positions, never the bytes of a
//! secret.

mod chain;
mod grpc;
mod headers;
mod hold;
mod spellings;

use std::sync::Arc;

use proptest::prelude::*;

use super::normalise::{self, Line, Step, step};
use super::*;

fn set(secrets: &[(&[u8], &[u8])]) -> Arc<PatternSet> {
    let mut b = PatternSetBuilder::new();
    for (value, replacement) in secrets {
        b.secret(&SecretForms { value, replacement });
    }
    Arc::new(b.build())
}

fn oneshot(set: &PatternSet, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    set.replace_all(input, &mut out);
    out
}

fn streamed(set: &Arc<PatternSet>, frames: &[&[u8]]) -> (Vec<u8>, u64) {
    let mut s = Stream::new(Arc::clone(set));
    let mut out = Vec::new();
    for f in frames {
        s.push(f, &mut out);
    }
    s.finish(&mut out);
    (out, s.count())
}

/// `body` cut at `cuts` (sorted, clamped).
fn frames<'a>(body: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(body.len())).collect();
    cuts.sort();
    let mut out = Vec::new();
    let mut last = 0;
    for c in cuts {
        out.push(&body[last..c]);
        last = c;
    }
    out.push(&body[last..]);
    out
}

/// Where two byte strings first differ (for messages that must not quote
/// either).
fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A body that yields its frames, then ends or fails.
struct Frames {
    frames: std::collections::VecDeque<bytes::Bytes>,
    fail: bool,
}

impl Frames {
    fn new<'a>(frames: impl Iterator<Item = &'a [u8]>, fail: bool) -> Self {
        Frames { frames: frames.map(bytes::Bytes::copy_from_slice).collect(), fail }
    }
}

impl http_body::Body for Frames {
    type Data = bytes::Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, crate::BoxError>>> {
        std::task::Poll::Ready(match self.frames.pop_front() {
            Some(b) => Some(Ok(http_body::Frame::data(b))),
            None if self.fail => Some(Err("upstream reset".into())),
            None => None,
        })
    }
}

#[test]
fn secret_split_across_every_boundary_is_replaced() {
    let set = set(&[(b"sk_live_SECRET", b"AIRLOCK_K")]);
    let body = b"{\"error\": \"bad key sk_live_SECRET here\"}";
    for cut in 0..=body.len() {
        let (out, n) = streamed(&set, &[&body[..cut], &body[cut..]]);
        assert!(out == b"{\"error\": \"bad key AIRLOCK_K here\"}", "cut at {cut}");
        assert_eq!(n, 1);
    }
    let frames: Vec<&[u8]> = body.chunks(1).collect();
    assert!(streamed(&set, &frames).0 == oneshot(&set, body));
}

#[test]
fn prefix_secrets_take_the_longest_match() {
    // One secret a prefix of another: the longer one must win, never leak
    // its tail.
    let set = set(&[(b"abcdef", b"<1>"), (b"abcdefghij", b"<2>")]);
    for input in [&b"xxabcdefghijyy"[..], b"xxabcdefgyy", b"abcdef", b"abcdefghi"] {
        let oracle = oneshot(&set, input);
        for cut in 0..=input.len() {
            assert!(streamed(&set, &[&input[..cut], &input[cut..]]).0 == oracle, "input len {} cut {cut}", input.len());
        }
    }
    assert_eq!(oneshot(&set, b"xxabcdefghijyy"), b"xx<2>yy");
}

#[test]
fn injected_header_values_map_back_to_what_the_agent_sent() {
    let mut b = PatternSetBuilder::new();
    b.injected(b"Bearer sk_1234567890", b"Bearer AIRLOCK_K");
    b.secret(&SecretForms { value: b"sk_1234567890", replacement: b"AIRLOCK_K" });
    let set = b.build();
    assert_eq!(oneshot(&set, b"auth was: Bearer sk_1234567890."), b"auth was: Bearer AIRLOCK_K.");
}

fn secret_strategy() -> impl Strategy<Value = Vec<u8>> {
    // A small alphabet makes overlaps, shared prefixes and secrets that are
    // prefixes of each other common.
    prop::collection::vec(prop::sample::select(b"abAB=/+_".to_vec()), 1..12)
}

/// Secrets with the characters escapes are made of.
fn spelled_secret_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"ab4f/+ %&;#u0\\".to_vec()), 1..14)
}

/// Text dense in escapes, partial escapes and line breaks.
fn spelled_body_strategy() -> impl Strategy<Value = Vec<u8>> {
    let pieces: Vec<&[u8]> = vec![
        b"a",
        b"b",
        b"4",
        b"f",
        b"F",
        b"/",
        b"+",
        b" ",
        b"%",
        b"%2F",
        b"%2f",
        b"%4",
        b"%41",
        b"%61",
        b"%20",
        b"\\",
        b"\\\\",
        b"\\/",
        b"\\u",
        b"\\u00",
        b"\\u0061",
        b"\\u002F",
        b"\\uD83D\\uDE00",
        b"\\uD83D",
        b"\\n",
        b"&",
        b"&amp;",
        b"&#x2F;",
        b"&#47;",
        b"&sol;",
        b"&#",
        b"&#x",
        b";",
        b"#",
        b"u",
        b"0",
        b"\n",
        b"\r\n",
    ];
    prop::collection::vec(prop::sample::select(pieces), 0..120).prop_map(|p| p.concat())
}

/// Base64 lines wrapped at soft and other widths.
fn wrapped_body_strategy() -> impl Strategy<Value = Vec<u8>> {
    let line = (prop::sample::select(vec![59usize, 60, 63, 64, 65, 76]), any::<u64>());
    let brk = prop::sample::select(vec![&b"\n"[..], b"\r\n", b"\\n", b"\\r\\n", b" "]);
    prop::collection::vec((line, brk), 0..6).prop_map(|lines| {
        let mut out = Vec::new();
        for ((width, seed), brk) in lines {
            let mut x = seed;
            for _ in 0..width {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                out.push(b"abAB4f/+"[(x >> 60) as usize % 8]);
            }
            out.extend_from_slice(brk);
        }
        out
    })
}

/// A naive reference for [`PatternSet::replace_all`]: the text read unit by
/// unit with the same grammar, every pattern tried at every position, the
/// same swallow rules; none of the sparse map, the no-copy path or the
/// automaton.
fn reference(set: &PatternSet, input: &[u8]) -> Vec<u8> {
    // (raw start, raw end, matched bytes)
    let mut units: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut line = Line::START;
    let mut i = 0;
    while i < input.len() {
        let (len, dec, breaks) = match step(input, i, line, true) {
            Step::Byte => (1, vec![input[i]], false),
            Step::Hard => (1, vec![b'\n'], true),
            Step::Soft { raw } => (usize::from(raw), vec![], true),
            Step::Break => (2, b"\\n".to_vec(), true),
            Step::Escape { raw, dec, len } => (usize::from(raw), dec[..usize::from(len)].to_vec(), false),
            Step::Incomplete => unreachable!("nothing is incomplete at the end"),
        };
        line = if breaks { Line::START } else { line.push(&dec) };
        units.push((i, i + len, dec));
        i += len;
    }
    let mut text = Vec::new();
    let mut owner = Vec::new();
    let mut starts = Vec::new();
    for (k, (_, _, dec)) in units.iter().enumerate() {
        starts.push(text.len());
        text.extend_from_slice(dec);
        owner.extend(std::iter::repeat_n(k, dec.len()));
    }
    let n_end = |u: usize| starts[u] + units[u].2.len();
    let swallows = |u: usize, flags: u8| {
        let (raw, dec) = (units[u].1 - units[u].0, &units[u].2);
        (flags & patterns::ESC != 0 && raw > 1)
            || (dec.len() == 1
                && ((flags & patterns::STD != 0 && (dec[0].is_ascii_alphanumeric() || b"+/".contains(&dec[0])))
                    || (flags & patterns::URL != 0 && (dec[0].is_ascii_alphanumeric() || b"-_".contains(&dec[0])))))
    };
    let patterns = set.union();
    let longest_at = |s: usize| {
        (0..patterns.len())
            .filter(|&id| text[s..].starts_with(patterns[id].0))
            .max_by_key(|&id| patterns[id].0.len())
            .map(|id| (s, s + patterns[id].0.len(), id))
    };
    let mut out = Vec::new();
    let (mut cursor, mut restart) = (0, 0);
    let mut after: Option<(usize, u8)> = None;
    loop {
        let m = (restart..text.len()).find_map(longest_at);
        if let Some((at, flags)) = after.take()
            && at < text.len()
            && m.is_none_or(|(s, _, _)| owner[s] != owner[at])
            && swallows(owner[at], flags)
        {
            cursor = units[owner[at]].1;
        }
        let Some((s, e, id)) = m else { break };
        let meta = &patterns[id].1;
        let (first, last) = (owner[s], owner[e - 1]);
        let mut start = units[first].0;
        if meta.before != 0 && starts[first] > 0 {
            let prev = owner[starts[first] - 1];
            if units[prev].0 >= cursor && swallows(prev, meta.before) {
                start = units[prev].0;
            }
        }
        out.extend_from_slice(&input[cursor..start]);
        out.extend_from_slice(&meta.replacement);
        cursor = units[last].1;
        restart = n_end(last);
        if meta.after != 0 {
            after = Some((restart, meta.after));
        }
    }
    out.extend_from_slice(&input[cursor..]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn streaming_equals_oneshot(
        secrets in prop::collection::vec(secret_strategy(), 1..6),
        body in prop::collection::vec(prop::sample::select(b"abAB=/+_xy\n".to_vec()), 0..400),
        cuts in prop::collection::vec(0usize..400, 0..12),
    ) {
        let pairs: Vec<(&[u8], &[u8])> = secrets.iter().map(|s| (s.as_slice(), &b"#"[..])).collect();
        let set = set(&pairs);
        let oracle = oneshot(&set, &body);
        let (out, _) = streamed(&set, &frames(&body, &cuts));
        prop_assert!(out == oracle, "streamed output differs from one-shot at byte {}", first_difference(&out, &oracle));
        // And no secret survives.
        for s in &secrets {
            if s.len() >= 3 && !s.contains(&b'#') {
                prop_assert!(!contains(&out, s), "a secret of {} bytes survived", s.len());
            }
        }
    }

    #[test]
    fn streaming_equals_oneshot_through_escapes(
        secrets in prop::collection::vec(spelled_secret_strategy(), 1..5),
        body in spelled_body_strategy(),
        cuts in prop::collection::vec(0usize..600, 0..16),
    ) {
        let pairs: Vec<(&[u8], &[u8])> = secrets.iter().map(|s| (s.as_slice(), &b"#"[..])).collect();
        let set = set(&pairs);
        let oracle = oneshot(&set, &body);
        let (out, _) = streamed(&set, &frames(&body, &cuts));
        prop_assert!(out == oracle, "streamed output differs from one-shot at byte {}", first_difference(&out, &oracle));
    }

    #[test]
    fn streaming_equals_oneshot_across_soft_breaks(
        secrets in prop::collection::vec(prop::collection::vec(prop::sample::select(b"abAB4f/+".to_vec()), 3..40), 1..4),
        body in wrapped_body_strategy(),
        cuts in prop::collection::vec(0usize..500, 0..16),
    ) {
        let pairs: Vec<(&[u8], &[u8])> = secrets.iter().map(|s| (s.as_slice(), &b"#"[..])).collect();
        let set = set(&pairs);
        let oracle = oneshot(&set, &body);
        let (out, _) = streamed(&set, &frames(&body, &cuts));
        prop_assert!(out == oracle, "streamed output differs from one-shot at byte {}", first_difference(&out, &oracle));
    }

    /// The no-copy path is taken exactly when normalising would change
    /// nothing.
    #[test]
    fn the_plain_path_agrees_with_the_normaliser(
        lines in prop::collection::vec(
            (prop::sample::select(vec![1usize, 5, 59, 60, 61, 63, 64, 65, 75, 76, 77, 80]), any::<u64>(), 0u8..4),
            0..8,
        ),
        before in 0usize..80,
        eof in any::<bool>(),
    ) {
        let mut body = Vec::new();
        for (width, seed, brk) in lines {
            let mut x = seed;
            for _ in 0..width {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                // Mostly base64, now and then a space.
                body.push(b"abAB09+/-_ "[(x >> 60) as usize % 11]);
            }
            body.extend_from_slice([&b"\n"[..], b"\r\n", b"\r", b""][usize::from(brk)]);
        }
        let line = Line::START.push(&vec![b'a'; before]);
        let mut norm = normalise::Normalised::default();
        norm.of(&body, line, eof);
        let plain = normalise::plain(&body, line, eof);
        prop_assert_eq!(plain.is_some(), norm.units.is_empty());
        if let Some(complete) = plain {
            prop_assert_eq!(complete, norm.complete);
        }
    }

    #[test]
    fn oneshot_equals_the_naive_reference(
        secrets in prop::collection::vec(spelled_secret_strategy(), 1..5),
        body in spelled_body_strategy(),
        wrapped in wrapped_body_strategy(),
    ) {
        let pairs: Vec<(&[u8], &[u8])> = secrets.iter().map(|s| (s.as_slice(), &b"#"[..])).collect();
        let set = set(&pairs);
        for input in [&body[..], &wrapped, &[&wrapped[..], &body].concat()] {
            let (got, want) = (oneshot(&set, input), reference(&set, input));
            prop_assert!(got == want, "one-shot differs from the reference at byte {}", first_difference(&got, &want));
        }
    }
}

mod decoding {
    use std::io::Write;

    use crate::redact::{DecodeError, Decoder};

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode_all(encodings: &str, body: &[u8], frame: usize, ratio: u64) -> Result<Vec<u8>, DecodeError> {
        let mut d = Decoder::for_encodings(std::iter::once(encodings), ratio).unwrap().unwrap();
        let mut out = Vec::new();
        for chunk in body.chunks(frame) {
            out.extend(d.decode(chunk)?);
        }
        out.extend(d.finish()?);
        Ok(out)
    }

    #[test]
    fn stacked_encodings_round_trip() {
        let text: Vec<u8> = (0..200_000u32).flat_map(|i| format!("row {i},").into_bytes()).collect();
        let twice = gzip(&gzip(&text));
        for frame in [1, 7, 4096, twice.len()] {
            assert_eq!(decode_all("gzip, gzip", &twice, frame, 100).unwrap(), text, "frame {frame}");
        }
    }

    #[test]
    fn every_gzip_member_and_either_deflate_form_decode_in_any_framing() {
        let text: Vec<u8> = (0..5_000u32).flat_map(|i| format!("row {i},").into_bytes()).collect();
        let (a, b) = text.split_at(text.len() / 3);
        let members = [gzip(a), gzip(b)].concat();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&text).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&text).unwrap();
        let raw = raw.finish().unwrap();
        for frame in [1, 2, 3, 4096, members.len()] {
            assert_eq!(decode_all("gzip", &members, frame, 100).unwrap(), text, "gzip members, frame {frame}");
            assert_eq!(decode_all("deflate", &zlib, frame, 100).unwrap(), text, "zlib, frame {frame}");
            assert_eq!(decode_all("deflate", &raw, frame, 100).unwrap(), text, "raw deflate, frame {frame}");
        }
        // Truncated still fails, in either form.
        assert!(decode_all("deflate", &raw[..raw.len() / 2], 7, 100).is_err());
        assert!(decode_all("gzip", &members[..members.len() - 3], 7, 100).is_err());
    }

    #[test]
    fn a_coded_body_with_no_bytes_is_empty() {
        for coding in ["gzip", "deflate", "br", "zstd", "gzip, br"] {
            assert_eq!(decode_all(coding, b"", 1, 100).unwrap(), b"", "{coding}");
        }
    }

    #[test]
    fn a_bomb_fails_while_it_expands() {
        // 256 MiB of zeros gzip to about 250 KiB: a ratio near 1000.
        let bomb = gzip(&vec![0u8; 256 << 20]);
        assert!(bomb.len() < 1 << 20);
        for frame in [16 * 1024, bomb.len()] {
            // Fed in one piece, the decoder still stops at its budget rather
            // than inflating all 256 MiB first.
            match decode_all("gzip", &bomb, frame, 100) {
                Err(DecodeError::TooLarge { limit: 100 }) => {}
                other => panic!("frame {frame}: {:?}", other.map(|v| v.len())),
            }
        }
        // The same bytes under a ratio that allows them decode whole.
        assert_eq!(decode_all("gzip", &bomb, 64 * 1024, 2000).unwrap().len(), 256 << 20);
    }
}
