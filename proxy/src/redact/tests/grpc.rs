//! gRPC bodies: prefixes intact and lengths kept whatever the cuts, each
//! message out as soon as its last byte is in, compressed messages decoded
//! (or refused), binary metadata scrubbed in its bytes.

use std::io::Write as _;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use proptest::prelude::*;

use super::*;

const SECRET: &[u8] = b"sk_live_grpc_0123456789abcdef";
const PLACEHOLDER: &[u8] = b"AIRLOCK_GRPC";

fn message(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// `body` through a gRPC scrubber in `frames`; the output, or the error.
fn through(messages: &mut GrpcMessages, frames: &[&[u8]]) -> Result<Vec<u8>, GrpcError> {
    let mut out = Vec::new();
    for f in frames {
        messages.push(f, &mut out)?;
    }
    messages.finish(&mut out)?;
    Ok(out)
}

/// `SECRET` where it stood, as the placeholder padded to its length.
fn fitted() -> Vec<u8> {
    let mut v = PLACEHOLDER.to_vec();
    v.resize(SECRET.len(), b'*');
    v
}

fn grpc(coding: Option<&str>) -> GrpcMessages {
    let coding = coding.map(|c| MessageCoding::for_header(c, 1 << 20).unwrap().unwrap());
    GrpcMessages::new(set(&[(SECRET, PLACEHOLDER)]), GrpcKind::Grpc, coding)
}

/// `body` through a same-length stream cut at `cuts`; the output and count.
fn same_length(set: &Arc<PatternSet>, body: &[u8], cuts: &[usize]) -> (Vec<u8>, u64) {
    let mut s = Stream::same_length(Arc::clone(set));
    let mut out = Vec::new();
    for f in frames(body, cuts) {
        s.push(f, &mut out);
    }
    s.finish(&mut out);
    (out, s.count())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn same_length_streams_match_as_the_others_and_keep_the_length(
        secrets in prop::collection::vec(spelled_secret_strategy(), 1..5),
        body in prop_oneof![spelled_body_strategy(), wrapped_body_strategy()],
        cuts in prop::collection::vec(0usize..600, 0..16),
    ) {
        let pairs: Vec<(&[u8], &[u8])> = secrets.iter().map(|s| (s.as_slice(), &b"#"[..])).collect();
        let set = set(&pairs);
        let (whole, count) = same_length(&set, &body, &[]);
        let (cut, cut_count) = same_length(&set, &body, &cuts);
        prop_assert_eq!(whole.len(), body.len());
        prop_assert!(cut == whole, "cut output differs at byte {}", first_difference(&cut, &whole));
        let mut oracle = Vec::new();
        prop_assert_eq!((count, cut_count), (set.replace_all(&body, &mut oracle), count));
    }

    #[test]
    fn messages_keep_their_prefix_and_length_whatever_the_cuts(
        cuts in proptest::collection::vec(0usize..200, 0..6),
        pad in 0usize..40,
    ) {
        // A protobuf-like field around the secret, in the second of three
        // messages.
        let mut field = vec![0x0a, u8::try_from(SECRET.len()).unwrap()];
        field.extend_from_slice(SECRET);
        field.extend(std::iter::repeat_n(b'x', pad));
        let body = [message(0, b"first"), message(0, &field), message(0, b"")].concat();
        let out = through(&mut grpc(None), &frames(&body, &cuts)).unwrap();
        let mut expected_field = vec![0x0a, u8::try_from(SECRET.len()).unwrap()];
        expected_field.extend_from_slice(&fitted());
        expected_field.extend(std::iter::repeat_n(b'x', pad));
        let expected = [message(0, b"first"), message(0, &expected_field), message(0, b"")].concat();
        prop_assert!(out == expected, "differs at {}", first_difference(&out, &expected));
    }
}

#[test]
fn a_message_goes_out_as_soon_as_its_last_byte_is_in() {
    // No line break anywhere, so a text stream would hold the tail back.
    let mut g = grpc(None);
    let mut out = Vec::new();
    let one = message(0, b"echo:ping 0");
    g.push(&one, &mut out).unwrap();
    assert_eq!(out, one);
    // A message split across pieces: whole once its last byte arrives.
    let two = message(0, &[b'a'; 300]);
    out.clear();
    g.push(&two[..100], &mut out).unwrap();
    g.push(&two[100..], &mut out).unwrap();
    assert_eq!(out, two);
    assert_eq!(g.count(), 0);
}

#[test]
fn a_secret_is_never_matched_across_a_prefix() {
    // The prefix's last length byte is 's' (115): with the message
    // starting with the rest of the secret, the bytes run together as the
    // secret, but a prefix is never scanned, so the framing stays true.
    let mut payload = SECRET[1..].to_vec();
    payload.resize(115, b'.');
    let body = message(0, &payload);
    assert_eq!(body[4], b's');
    assert_eq!(through(&mut grpc(None), &[&body]).unwrap(), body);
}

#[test]
fn compressed_messages_are_decoded_scanned_and_sent_uncompressed() {
    let plain = [b"id=".as_slice(), SECRET, b";"].concat();
    let body = [message(1, &gzip(&plain)), message(0, b"as is")].concat();
    let mut g = grpc(Some("gzip"));
    let out = through(&mut g, &frames(&body, &[3, 9, 20])).unwrap();
    let expected = [message(0, &[b"id=".as_slice(), &fitted(), b";"].concat()), message(0, b"as is")].concat();
    assert_eq!(out, expected);
    assert_eq!(g.count(), 1);
    // Without a coding, a compressed message cannot be read.
    assert!(matches!(through(&mut grpc(None), &[&body]), Err(GrpcError::Compressed)));
    // Corrupt, or past the limit: refused.
    let corrupt = message(1, b"not gzip at all");
    assert!(matches!(through(&mut grpc(Some("gzip")), &[&corrupt]), Err(GrpcError::Decode(_))));
    let bomb = message(1, &gzip(&vec![0u8; 2 << 20]));
    assert!(matches!(through(&mut grpc(Some("gzip")), &[&bomb]), Err(GrpcError::TooLarge { .. })));
    // Cut short: cannot be decoded.
    let whole = message(1, &gzip(b"abc"));
    assert!(through(&mut grpc(Some("gzip")), &[&whole[..whole.len() - 2]]).is_err());
}

#[test]
fn codings_and_flags() {
    assert!(MessageCoding::for_header("identity", 1024).unwrap().is_none());
    for ok in ["gzip", "deflate", "zstd", " GZIP "] {
        assert!(MessageCoding::for_header(ok, 1024).unwrap().is_some(), "{ok}");
    }
    for bad in ["snappy", "gzip, deflate", "x"] {
        assert!(MessageCoding::for_header(bad, 1024).is_err(), "{bad}");
    }
    // Flags gRPC does not define; a gRPC-Web trailer frame only in gRPC-Web.
    assert!(matches!(through(&mut grpc(None), &[&message(0x02, b"x")]), Err(GrpcError::Flags)));
    assert!(matches!(through(&mut grpc(None), &[&message(0x80, b"x")]), Err(GrpcError::Flags)));
    let mut web = GrpcMessages::new(set(&[(SECRET, PLACEHOLDER)]), GrpcKind::Web, None);
    let trailers = message(0x80, &[b"grpc-status:0\r\nx-echo:".as_slice(), SECRET, b"\r\n"].concat());
    let out = through(&mut web, &[&trailers]).unwrap();
    assert_eq!(out.len(), trailers.len());
    assert!(!out.windows(SECRET.len()).any(|w| w == SECRET));
}

#[test]
fn content_types() {
    for (value, kind) in [
        (&b"application/grpc"[..], Some(GrpcKind::Grpc)),
        (b"application/grpc+proto", Some(GrpcKind::Grpc)),
        (b"Application/GRPC+json; charset=utf-8", Some(GrpcKind::Grpc)),
        (b"application/grpc-web", Some(GrpcKind::Web)),
        (b"application/grpc-web+proto", Some(GrpcKind::Web)),
        (b"application/grpc-web-text", None),
        (b"application/grpcx", None),
        (b"application/json", None),
        (b"\xff", None),
    ] {
        assert_eq!(grpc_content_type(value), kind, "{}", String::from_utf8_lossy(value));
    }
}

#[test]
fn binary_metadata_is_scrubbed_in_its_bytes() {
    let set = set(&[(SECRET, PLACEHOLDER)]);
    let mut headers = http::HeaderMap::new();
    let raw = [b"\x00token=".as_slice(), SECRET].concat();
    headers.insert("x-echo-bin", STANDARD.encode(&raw).parse().unwrap());
    headers.append("x-echo-bin", STANDARD_NO_PAD.encode(b"\x01\x02").parse().unwrap());
    headers.insert("x-not-base64-bin", "[[".parse().unwrap());
    headers.insert("x-text", "untouched".parse().unwrap());
    assert_eq!(scrub_binary_metadata(&set, &mut headers), 1);
    let values: Vec<Vec<u8>> =
        headers.get_all("x-echo-bin").iter().map(|v| STANDARD_NO_PAD.decode(v.as_bytes()).unwrap()).collect();
    // Binary metadata is usually a protobuf (`grpc-status-details-bin` is
    // always one): the replacement keeps the secret's length, so the
    // lengths inside stay true.
    let padded = [PLACEHOLDER, &vec![b'*'; SECRET.len() - PLACEHOLDER.len()]].concat();
    assert_eq!(values, [[b"\x00token=".as_slice(), &padded].concat(), b"\x01\x02".to_vec()]);
    assert_eq!(headers["x-not-base64-bin"], "[[");
    assert_eq!(headers["x-text"], "untouched");
}

/// A `-bin` value that is not strict base64 — a space inside, pieces
/// padded on their own — still decodes to the secret in lenient decoders
/// (grpc-js's `Buffer.from(v, "base64")`, Python's `b64decode`), so it is
/// scrubbed as they would read it.
#[test]
fn binary_metadata_that_is_not_strict_base64_is_scrubbed_as_lenient_decoders_read_it() {
    let set = set(&[(SECRET, PLACEHOLDER)]);
    let encoded = STANDARD.encode(SECRET);
    let (a, b) = SECRET.split_at(9);
    for value in [
        format!("{} {}", &encoded[..12], &encoded[12..]),
        format!("{}\t{}", &encoded[..8], &encoded[8..]),
        format!("{}{}", STANDARD.encode(a), STANDARD.encode(b)),
    ] {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-leak-bin", value.parse().unwrap());
        assert_eq!(scrub_binary_metadata(&set, &mut headers), 1, "{value}");
        let out = headers["x-leak-bin"].as_bytes().to_vec();
        let decoded = STANDARD_NO_PAD.decode(&out).unwrap();
        assert!(!decoded.windows(SECRET.len()).any(|w| w == SECRET), "{value}");
        assert!(decoded.starts_with(PLACEHOLDER), "{value}");
    }
}

#[test]
fn same_length_streams_keep_every_length() {
    // Every spelling the redactor matches, replaced at its own length.
    let set = set(&[(SECRET, PLACEHOLDER), (b"short-secret-1", b"AIRLOCK_A_MUCH_LONGER_PLACEHOLDER")]);
    let encoded = STANDARD.encode(SECRET);
    let body = [
        b"a ".as_slice(),
        SECRET,
        b" b sk%5Flive%5Fgrpc%5F0123456789abcdef c ",
        encoded.as_bytes(),
        b" d short-secret-1 e",
    ]
    .concat();
    for cut in [1, 7, 30, 60] {
        let mut s = Stream::same_length(Arc::clone(&set));
        let mut out = Vec::new();
        s.push(&body[..cut], &mut out);
        s.push(&body[cut..], &mut out);
        s.finish(&mut out);
        assert_eq!(out.len(), body.len(), "cut at {cut}");
        assert_eq!(s.count(), 4, "cut at {cut}");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!("a {}", String::from_utf8_lossy(&fitted()))), "cut at {cut}");
        assert!(text.contains(" d ************** e"), "cut at {cut}");
        assert!(text.contains("[REDACTED]***"), "cut at {cut}");
    }
}
