//! The streaming redactor against the one-shot oracle.

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

#[test]
fn secret_split_across_every_boundary_is_replaced() {
    let set = set(&[(b"sk_live_SECRET", b"AIRLOCK_K")]);
    let body = b"{\"error\": \"bad key sk_live_SECRET here\"}";
    for cut in 0..=body.len() {
        let (out, n) = streamed(&set, &[&body[..cut], &body[cut..]]);
        assert_eq!(out, b"{\"error\": \"bad key AIRLOCK_K here\"}", "cut at {cut}");
        assert_eq!(n, 1);
    }
    let frames: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(streamed(&set, &frames).0, oneshot(&set, body));
}

#[test]
fn holds_back_only_a_possible_secret_start() {
    let set = set(&[(b"sk_live_SECRET", b"P")]);
    let mut s = Stream::new(Arc::clone(&set));
    let mut out = Vec::new();
    s.push(b"data: {\"token\": 1}\n\n", &mut out);
    assert_eq!(out, b"data: {\"token\": 1}\n\n", "a frame whose tail cannot start a secret goes out whole");
    assert_eq!(s.held(), 0);
    out.clear();
    s.push(b"data: sk_li", &mut out);
    assert_eq!(out, b"data: ");
    assert_eq!(s.held(), 5);
}

#[test]
fn prefix_secrets_take_the_longest_match() {
    // One secret a prefix of another: the longer one must win, never leak
    // its tail.
    let set = set(&[(b"abcdef", b"<1>"), (b"abcdefghij", b"<2>")]);
    for input in [&b"xxabcdefghijyy"[..], b"xxabcdefgyy", b"abcdef", b"abcdefghi"] {
        let oracle = oneshot(&set, input);
        for cut in 0..=input.len() {
            assert_eq!(streamed(&set, &[&input[..cut], &input[cut..]]).0, oracle, "{input:?} cut {cut}");
        }
    }
    assert_eq!(oneshot(&set, b"xxabcdefghijyy"), b"xx<2>yy");
}

#[test]
fn forms_are_covered() {
    let secret = b"sk/live+key=\"q\"";
    let set = set(&[(secret, b"AIRLOCK_K")]);
    let url = url_encode(secret);
    let json = json_escape(secret);
    let b64 = STANDARD_NO_PAD.encode(format!("user:{}", String::from_utf8_lossy(secret)));
    for form in [&secret[..], &url, &json] {
        assert_eq!(oneshot(&set, form), b"AIRLOCK_K", "{}", String::from_utf8_lossy(form));
    }
    let out = oneshot(&set, b64.as_bytes());
    assert!(String::from_utf8_lossy(&out).contains("[REDACTED]"), "{}", String::from_utf8_lossy(&out));
    // No three-byte window of the secret survives in what remains of the blob.
    let leftover = String::from_utf8_lossy(&out).replace("[REDACTED]", "");
    assert!(leftover.len() <= 8 + 4, "{leftover}");
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
        body in prop::collection::vec(prop::sample::select(b"abAB=/+_xy".to_vec()), 0..200),
        cuts in prop::collection::vec(0usize..200, 0..12),
    ) {
        let pairs: Vec<(&[u8], &[u8])> = secrets.iter().map(|s| (s.as_slice(), &b"#"[..])).collect();
        let set = set(&pairs);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
        cuts.sort();
        let mut frames = Vec::new();
        let mut last = 0;
        for c in cuts {
            frames.push(&body[last..c]);
            last = c;
        }
        frames.push(&body[last..]);
        let oracle = oneshot(&set, &body);
        let (out, _) = streamed(&set, &frames);
        prop_assert_eq!(&out, &oracle);
        // And no secret survives.
        for s in &secrets {
            if s.len() >= 3 && !s.contains(&b'#') {
                prop_assert!(!out.windows(s.len()).any(|w| w == s.as_slice()), "secret {:?} survived", s);
            }
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
