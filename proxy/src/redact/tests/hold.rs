//! The hold-back: what it keeps depends on the text's structure only.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;

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

/// Secrets of the shape API keys have.
fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_".to_vec()),
        8..32,
    )
}

/// Text no pattern can touch: none of its characters, nor any its escapes
/// stand for, is in a secret or in the base64 alphabet.
fn filler_strategy() -> impl Strategy<Value = Vec<u8>> {
    let pieces: Vec<&[u8]> = vec![
        b" ", b",", b":", b"{", b"}", b"\"", b"!", b"\n", b"%20", b"%21", b"\\\"", b"&amp;", b"&#33;", b"\\u0021",
        b"\\n",
    ];
    prop::collection::vec(prop::sample::select(pieces), 0..120).prop_map(|p| p.concat())
}

/// How a character of a probe is written.
#[derive(Clone, Copy, Debug)]
enum Spelling {
    Raw,
    Percent,
    Unicode,
    Decimal,
}

fn spell(c: u8, how: Spelling) -> Vec<u8> {
    match how {
        Spelling::Raw => vec![c],
        Spelling::Percent => format!("%{c:02X}").into_bytes(),
        Spelling::Unicode => format!("\\u{:04x}", c).into_bytes(),
        Spelling::Decimal => format!("&#{c:03};").into_bytes(),
    }
}

/// A probe and a stand-in of the same length and structure: a proper
/// prefix of a secret, and letters and digits that (almost always) are
/// not, each character written the same way in both.
fn probes(secret: &[u8], k: prop::sample::Index, noise: &[u8], how: &[Spelling]) -> (Vec<u8>, Vec<u8>) {
    let k = 1 + k.index(secret.len() - 1);
    let alnum = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let (mut prefix, mut stand_in) = (Vec::new(), Vec::new());
    for (i, &c) in secret[..k].iter().enumerate() {
        let n = noise.get(i).copied().unwrap_or(7);
        let other = if c.is_ascii_alphanumeric() { alnum[usize::from(n) % alnum.len()] } else { c };
        let how = how.get(i).copied().unwrap_or(Spelling::Raw);
        // Every `%HH` here decodes to one byte, every `\u00HH` too: the
        // same structure.
        prefix.extend(spell(c, how));
        stand_in.extend(spell(other, how));
    }
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
        how in prop::collection::vec(
            prop::sample::select(vec![Spelling::Raw, Spelling::Raw, Spelling::Percent, Spelling::Unicode, Spelling::Decimal]),
            32,
        ),
        before in filler_strategy(),
        after in filler_strategy(),
        cuts in prop::collection::vec(0usize..500, 0..16),
    ) {
        let pairs: Vec<(&[u8], &[u8])> = secrets.iter().map(|s| (s.as_slice(), &b"P"[..])).collect();
        let set = set(&pairs);
        let (prefix, stand_in) = probes(which.get(&secrets).as_slice(), k, &noise, &how);
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

/// The body wrapper: what the client has received when the stream aborts.
mod body {
    use std::sync::Arc;

    use http_body_util::BodyExt;

    use super::super::Frames;
    use crate::redact::{PatternSet, PatternSetBuilder, RedactBody, RedactionCount, SecretForms};

    /// What a client receives before the error.
    async fn received(set: &Arc<PatternSet>, frames: &[&[u8]]) -> Vec<u8> {
        let inner = Frames::new(frames.iter().copied(), true).boxed_unsync();
        let mut body = RedactBody::new(inner, None, None, Arc::clone(set), RedactionCount::default(), |_| {});
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

#[test]
fn debug_shows_how_much_is_held_never_what() {
    let set = set(&[(b"sk_live_SECRET", b"P")]);
    let mut s = Stream::new(Arc::clone(&set));
    s.push(b"sk_li", &mut Vec::new());
    assert_eq!(format!("{s:?}"), "Stream { held: 5, count: 0 }");
}
