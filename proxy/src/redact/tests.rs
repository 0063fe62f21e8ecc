//! The streaming redactor against the one-shot oracle, and what its
//! hold-back reveals. Assertion messages give lengths and positions, never
//! the bytes of a secret.

use std::sync::Arc;

use proptest::prelude::*;

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
fn holds_back_the_tail_after_the_last_line_break() {
    let set = set(&[(b"sk_live_SECRET", b"P")]);
    let mut s = Stream::new(Arc::clone(&set));
    let mut out = Vec::new();
    // A frame ending in a line break goes out whole: SSE events and NDJSON
    // lines are never delayed.
    s.push(b"data: {\"token\": 1}\n\n", &mut out);
    assert_eq!(out, b"data: {\"token\": 1}\n\n");
    assert_eq!(s.held(), 0);
    out.clear();
    // What follows the last line break is held, whatever it is...
    s.push(b"data: x", &mut out);
    assert_eq!((out.len(), s.held()), (0, 7));
    s.push(b"\nmore", &mut out);
    assert_eq!((out.len(), s.held()), (8, 4));
    // ...but never more than H bytes of it.
    let h = set.hold();
    let long = vec![b'x'; 3 * h];
    s.push(&long, &mut out);
    assert_eq!(s.held(), h);
    assert_eq!(out.len(), 8 + 4 + 3 * h - h);
}

#[test]
fn a_possible_secret_start_is_held_like_any_other_tail() {
    // The old hold-back held `sk_li` (a prefix of the secret) but let
    // `xx_xx` through: an agent that could make an upstream echo its
    // guesses learnt the secret a character at a time.
    let set = set(&[(b"sk_live_SECRET", b"P")]);
    let text = vec![b'.'; 300];
    let emitted = |tail: &[u8]| {
        let mut s = Stream::new(Arc::clone(&set));
        let mut out = Vec::new();
        let mut frame = text.clone();
        frame.extend_from_slice(tail);
        s.push(&frame, &mut out);
        let first = out.len();
        s.push(b"\n", &mut out);
        (first, out.len())
    };
    assert_eq!(emitted(b"...sk_li"), emitted(b"...xx_xx"));
    assert_eq!(emitted(b"sk_li"), emitted(b"xx_xx"));
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
}

/// Secrets of the shape API keys have.
fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_".to_vec()),
        8..32,
    )
}

/// Text no pattern can touch: none of its characters is in a secret or in
/// the base64 alphabet.
fn filler_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b" ,:{}[]\"!()\n".to_vec()), 0..200)
}

/// A probe and a stand-in of the same length and structure: a proper
/// prefix of a secret, and letters and digits that (almost always) are not.
fn probes(secret: &[u8], k: prop::sample::Index, noise: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let k = 1 + k.index(secret.len() - 1);
    let alnum = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let prefix = secret[..k].to_vec();
    let stand_in = prefix
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let n = noise.get(i).copied().unwrap_or(7);
            if c.is_ascii_alphanumeric() { alnum[usize::from(n) % alnum.len()] } else { c }
        })
        .collect();
    (prefix, stand_in)
}

/// Output length after each frame, and what an abort after each would
/// have dropped.
fn pauses(set: &Arc<PatternSet>, frames: &[&[u8]]) -> Vec<(usize, usize)> {
    let mut s = Stream::new(Arc::clone(set));
    let mut out = Vec::new();
    frames
        .iter()
        .map(|f| {
            s.push(f, &mut out);
            (out.len(), s.held())
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The hold-back is no oracle: at every pause (and so at every abort),
    /// a stream holding a proper prefix of a secret has emitted exactly as
    /// much as one holding other bytes of the same length and structure.
    #[test]
    fn the_hold_reveals_nothing(
        secrets in prop::collection::vec(key_strategy(), 1..4),
        which in any::<prop::sample::Index>(),
        k in any::<prop::sample::Index>(),
        noise in prop::collection::vec(any::<u8>(), 32),
        before in filler_strategy(),
        after in filler_strategy(),
        cuts in prop::collection::vec(0usize..500, 0..16),
    ) {
        let pairs: Vec<(&[u8], &[u8])> = secrets.iter().map(|s| (s.as_slice(), &b"P"[..])).collect();
        let set = set(&pairs);
        let (prefix, stand_in) = probes(which.get(&secrets).as_slice(), k, &noise);
        let body = |probe: &[u8]| [before.as_slice(), probe, after.as_slice()].concat();
        let (a, b) = (body(&prefix), body(&stand_in));
        // Only streams in which nothing is replaced are comparable.
        prop_assume!(!set.is_match(&a) && !set.is_match(&b));
        // The same cuts, and a pause after every frame.
        let (fa, fb) = (frames(&a, &cuts), frames(&b, &cuts));
        let (pa, pb) = (pauses(&set, &fa), pauses(&set, &fb));
        prop_assert!(pa == pb, "emitted/held differ at pause {}", pa.iter().zip(&pb).position(|(x, y)| x != y).unwrap_or(0));
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

/// The body wrapper: what the client has received when the stream aborts.
mod body {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::BodyExt;

    use crate::BoxError;
    use crate::redact::{PatternSet, PatternSetBuilder, RedactBody, RedactionCount, SecretForms};

    /// A body that yields its frames, then fails.
    struct Failing(VecDeque<Bytes>);

    impl http_body::Body for Failing {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(Some(match self.0.pop_front() {
                Some(b) => Ok(Frame::data(b)),
                None => Err("upstream reset".into()),
            }))
        }
    }

    /// What a client receives before the error.
    async fn received(set: &Arc<PatternSet>, frames: &[&[u8]]) -> Vec<u8> {
        let inner = Failing(frames.iter().map(|f| Bytes::copy_from_slice(f)).collect()).boxed_unsync();
        let mut body = RedactBody::new(inner, None, Arc::clone(set), RedactionCount::default(), |_| {});
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => got.extend_from_slice(f.data_ref().map(|d| &d[..]).unwrap_or_default()),
                Err(_) => break,
            }
        }
        got
    }

    #[tokio::test]
    async fn an_abort_drops_the_same_tail_whatever_it_holds() {
        let mut b = PatternSetBuilder::new();
        b.secret(&SecretForms { value: b"sk_live_0123456789", replacement: b"P" });
        let set = Arc::new(b.build());
        let lead = vec![b'.'; 200];
        for (probe, other) in [(&b"sk_live_01"[..], &b"zz_zzzz_zz"[..]), (b"sk", b"zz"), (b"s", b"z")] {
            let a = received(&set, &[&lead, probe]).await;
            let b = received(&set, &[&lead, other]).await;
            assert_eq!(a.len(), b.len(), "probe of {} bytes", probe.len());
            // What was dropped is the structural tail, not the probe alone.
            let sent = lead.len() + probe.len();
            assert_eq!(sent - a.len(), set.hold().min(sent));
        }
        // After a line break, only what follows it is dropped.
        let a = received(&set, &[&lead, b"\nsk_li"]).await;
        assert_eq!(a.len(), lead.len() + 1);
    }
}
