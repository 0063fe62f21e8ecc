//! A request's injected values as a layer chained over the tenant's set
//! ([`PatternSet::chain`]) scrub exactly as one set built from both: the
//! same output, the same count, one-shot and streamed, in any framing, in
//! `same_length` mode, for headers and names.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use proptest::prelude::*;

use super::*;

/// The tenant's set of `secrets`, and the set for a request that injected
/// `injected` (each `(value, what the agent sent)`): chained, and built in
/// one piece as before (the injected values first).
fn both(secrets: &[(&[u8], &[u8])], injected: &[(&[u8], &[u8])]) -> (Arc<PatternSet>, Arc<PatternSet>) {
    let mut base = PatternSetBuilder::new();
    for (value, replacement) in secrets {
        base.secret(&SecretForms { value, replacement });
    }
    let mut request = PatternSetBuilder::new();
    for (value, original) in injected {
        request.injected(value, original);
    }
    let chained = Arc::new(request.build().chain(&base.build()));
    let mut union = request;
    union.extend(&base);
    (chained, Arc::new(union.build()))
}

fn same_length(set: &Arc<PatternSet>, frames: &[&[u8]]) -> (Vec<u8>, u64) {
    let mut s = Stream::same_length(Arc::clone(set));
    let mut out = Vec::new();
    for f in frames {
        s.push(f, &mut out);
    }
    s.finish(&mut out);
    (out, s.count())
}

/// Asserts the chained set scrubs `body` as the union does, cut at `cuts`
/// and at every single position; returns the count.
fn assert_same(chained: &Arc<PatternSet>, union: &Arc<PatternSet>, body: &[u8], cuts: &[usize]) -> u64 {
    assert_eq!(chained.hold(), union.hold());
    let (mut want, mut got) = (Vec::new(), Vec::new());
    let count = union.replace_all(body, &mut want);
    assert_eq!(chained.replace_all(body, &mut got), count, "one-shot count, body of {} bytes", body.len());
    assert!(got == want, "one-shot output differs at byte {}", first_difference(&got, &want));
    assert_eq!(chained.is_match(body), union.is_match(body));
    assert_eq!(chained.is_match_name(body), union.is_match_name(body));
    let mut framings = vec![frames(body, cuts)];
    framings.extend((0..=body.len()).map(|c| vec![&body[..c], &body[c..]]));
    for f in &framings {
        let (got, n) = streamed(chained, f);
        assert!(got == want, "streamed output differs at byte {} ({} frames)", first_difference(&got, &want), f.len());
        assert_eq!(n, count, "streamed count ({} frames)", f.len());
        let (got, n) = same_length(chained, f);
        let (fit, m) = same_length(union, f);
        assert!(got == fit, "same-length output differs at byte {}", first_difference(&got, &fit));
        assert_eq!((n, got.len()), (m, body.len()));
    }
    count
}

const SECRET: &[u8] = b"sk_live_0123456789abcdef";

fn b64(engine: &impl Engine, bytes: &[u8]) -> Vec<u8> {
    engine.encode(bytes).into_bytes()
}

#[test]
fn an_injected_value_holding_the_secret_maps_back_in_every_form() {
    let injected = [&b"Bearer "[..], SECRET, b" trailing-text"].concat();
    let original = b"Bearer AIRLOCK_K trailing-text";
    let (chained, union) = both(&[(SECRET, b"AIRLOCK_K")], &[(&injected, original)]);
    let percent: Vec<u8> = injected.iter().flat_map(|&b| format!("%{b:02X}").into_bytes()).collect();
    let json: Vec<u8> = injected.iter().flat_map(|&b| format!("\\u{b:04x}").into_bytes()).collect();
    let plus: Vec<u8> = injected.iter().map(|&b| if b == b' ' { b'+' } else { b }).collect();
    let bodies: Vec<Vec<u8>> = vec![
        [&b"echo: "[..], &injected, b".\n"].concat(),
        [&b"{\"q\": \""[..], &percent, b"\"}"].concat(),
        [&b"{\"h\": \""[..], &json, b"\"}"].concat(),
        [&b"form="[..], &plus, b"&x=1"].concat(),
        // Base64 of the whole value at each alignment, in both alphabets.
        [&b"a "[..], &b64(&STANDARD, &injected), b" b"].concat(),
        [&b"a "[..], &b64(&URL_SAFE, &[&b"x"[..], &injected].concat()), b" b"].concat(),
        [&b"a "[..], &b64(&STANDARD, &[&b"xy"[..], &injected].concat()), b" b"].concat(),
        // The secret alone and the value cut short, next to the whole.
        [&b"key "[..], SECRET, b" then ", &injected, b" and Bearer ", SECRET].concat(),
    ];
    let mut total = 0;
    for body in &bodies {
        total += assert_same(&chained, &union, body, &[3, 17, 40]);
    }
    // The whole value is replaced, by what the agent sent: nothing of the
    // secret remains, and the plain echo reads as the agent wrote it.
    assert!(oneshot(&chained, &bodies[0]) == b"echo: Bearer AIRLOCK_K trailing-text.\n");
    assert!(total >= bodies.len() as u64);
}

#[test]
fn an_injected_value_equal_to_the_secret_takes_the_request_replacement_and_both_flags() {
    // `x-api-key: AIRLOCK_K`: every form is in both layers. The agent's
    // original is not the route's placeholder here, so which layer's
    // replacement wins shows.
    let (chained, union) = both(&[(SECRET, b"AIRLOCK_K")], &[(SECRET, b"AS_SENT")]);
    let body = [&b"k="[..], SECRET, b" b64=", &b64(&STANDARD, &[&b"x"[..], SECRET].concat()), b"=="].concat();
    assert_eq!(assert_same(&chained, &union, &body, &[5]), 2);
    assert!(oneshot(&chained, &body).starts_with(b"k=AS_SENT b64="));
    // A pattern in both with different flags: the value cut short where an
    // escape before it could take in its first character (flagged to
    // swallow that escape) is, here, the injected value.
    let (chained, union) = both(&[(b"4bcdefghijklmn", b"P")], &[(b"bcdefghijklmn", b"X")]);
    for body in [&b"..%41bcdefghijklmn.."[..], b"..%34bcdefghijklmn..", b"..&#65;bcdefghijklmn%.."] {
        assert_same(&chained, &union, body, &[4]);
    }
    assert!(oneshot(&chained, b"..%41bcdefghijklmn..") == b"..X..");
}

#[test]
fn the_hold_is_that_of_the_longest_pattern_in_either() {
    // A long secret in the tenant's set (a PEM key, a service-account
    // JSON), a short injected value.
    let long: Vec<u8> = (0..300u32).map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 % 36) as usize]).collect();
    let (chained, union) = both(&[(&long, b"<LONG>"), (SECRET, b"AIRLOCK_K")], &[(SECRET, b"AIRLOCK_K")]);
    let body = [&b"x: "[..], &long, b" y: ", SECRET, b"\n z: ", &b64(&STANDARD, &long)].concat();
    assert_same(&chained, &union, &body, &[100, 200, 300]);
}

#[test]
fn overlapping_matches_resolve_as_in_one_set() {
    // The secret ends where the injected value begins, and one injected
    // value is a prefix of another: the leftmost, then the longest, wins
    // across the layers as within one.
    let secret = b"xyzzy_0123Bear";
    let (chained, union) = both(
        &[(secret, b"<S>")],
        &[(b"Bearer xyzzy_0123Bear", b"Bearer <A>"), (b"Bearer xyzzy_0123Bear tail", b"Bearer <A> tail")],
    );
    for body in [
        &b"xyzzy_0123Bearer xyzzy_0123Bear tail"[..],
        b"..xyzzy_0123Bearer xyzzy_0123Bear.",
        b"Bearer xyzzy_0123Bear tail and Bearer xyzzy_0123Bear",
        b"Bearer xyzzy_0123Bearer xyzzy_0123Bear tai",
    ] {
        assert_same(&chained, &union, body, &[10, 20, 30]);
    }
    // At the same start, the longer match wins whichever layer it is in.
    let longer = [SECRET, b"_more"].concat();
    let (chained, union) = both(&[(&longer, b"<L>"), (SECRET, b"<S>")], &[(SECRET, b"X")]);
    let body = [SECRET, b" ", &longer, b" ", SECRET, b"_mor"].concat();
    assert_same(&chained, &union, &body, &[30]);
    assert!(oneshot(&chained, &body) == b"X <L> X_mor");
}

#[test]
fn a_match_straddling_frames_in_a_long_body() {
    // Many base matches before and after the injected value, in frames
    // shorter than it: each layer's search resumes across frames.
    let injected = [&b"Basic "[..], &b64(&STANDARD, &[&b"user:"[..], SECRET].concat())].concat();
    let (chained, union) =
        both(&[(SECRET, b"AIRLOCK_K"), (b"other_secret_42", b"P2")], &[(&injected, b"Basic dXNlcjpQ")]);
    let mut body = Vec::new();
    for i in 0..40 {
        body.extend_from_slice(if i % 3 == 0 { SECRET } else { b"other_secret_42" });
        body.extend_from_slice(b" filler ");
        if i % 7 == 0 {
            body.extend_from_slice(&injected);
        }
    }
    let cuts: Vec<usize> = (1..body.len()).step_by(13).collect();
    assert_eq!(assert_same(&chained, &union, &body, &cuts), 46);
}

/// Injected values around a secret, the way an agent's header carries the
/// placeholder: `prefix + secret + suffix`.
fn injected_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let piece = || prop::collection::vec(prop::sample::select(b"ab4f/+ %&;#u0\\B=".to_vec()), 0..6);
    (piece(), piece())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn chained_equals_the_union(
        secrets in prop::collection::vec(spelled_secret_strategy(), 1..4),
        around in prop::collection::vec(injected_strategy(), 1..3),
        body in spelled_body_strategy(),
        spots in prop::collection::vec((0usize..600, 0usize..3, 0usize..4), 0..4),
        cuts in prop::collection::vec(0usize..800, 0..12),
    ) {
        let secrets: Vec<(&[u8], &[u8])> = secrets.iter().map(|s| (s.as_slice(), &b"#"[..])).collect();
        let injected: Vec<(Vec<u8>, Vec<u8>)> = around
            .iter()
            .enumerate()
            .map(|(i, (pre, post))| {
                let secret = secrets[i % secrets.len()].0;
                ([pre, secret, post].concat(), [pre, &b"P"[..], post].concat())
            })
            .collect();
        let pairs: Vec<(&[u8], &[u8])> = injected.iter().map(|(v, o)| (v.as_slice(), o.as_slice())).collect();
        let (chained, union) = both(&secrets, &pairs);
        // The body, with injected values and secrets spliced in, raw or
        // base64.
        let mut body = body;
        for &(at, which, how) in &spots {
            let value = match which {
                0 => injected[0].0.clone(),
                1 => injected[injected.len() - 1].0.clone(),
                _ => secrets[0].0.to_vec(),
            };
            let value = match how {
                0 | 1 => value,
                2 => b64(&STANDARD, &value),
                _ => b64(&URL_SAFE, &[&b"x"[..], &value].concat()),
            };
            let at = at.min(body.len());
            body.splice(at..at, value);
        }
        let (mut want, mut got) = (Vec::new(), Vec::new());
        let count = union.replace_all(&body, &mut want);
        prop_assert_eq!(chained.replace_all(&body, &mut got), count);
        prop_assert!(got == want, "one-shot output differs at byte {}", first_difference(&got, &want));
        prop_assert_eq!(chained.is_match(&body), union.is_match(&body));
        let f = frames(&body, &cuts);
        let (out, n) = streamed(&chained, &f);
        prop_assert!(out == want, "streamed output differs at byte {}", first_difference(&out, &want));
        prop_assert_eq!(n, count);
        let (fit, m) = same_length(&chained, &f);
        let (fit_union, m_union) = same_length(&union, &f);
        prop_assert!(fit == fit_union, "same-length output differs at byte {}", first_difference(&fit, &fit_union));
        prop_assert_eq!(m, m_union);
    }
}
