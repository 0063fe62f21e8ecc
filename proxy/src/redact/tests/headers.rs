//! Response headers: values are scrubbed, and a header whose name holds a
//! secret is dropped (a replaced name would not be a valid token).

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn a_header_whose_name_holds_a_secret_is_dropped_and_counted() {
    // Header names reach airlock lower-cased; the secret has capitals.
    let set = set(&[(b"sk_live_ABCdef0123456789", b"AIRLOCK_K")]);
    for name in [
        "x-sk_live_ABCdef0123456789",
        "sk_live_abcdef0123456789",
        "x-debug-sk%5flive_abcdef0123456789-end",
        "x-c2tfbGl2ZV9BQkNkZWYwMTIzNDU2Nzg5",
    ] {
        let h = headers(&[("content-type", "text/plain"), (name, "1"), (name, "2"), ("x-other", "ok")]);
        let (h, n) = scrub_headers(&set, h);
        assert_eq!(n, 2, "a name of {} bytes: both its values count", name.len());
        assert_eq!(h.len(), 2, "a name of {} bytes", name.len());
        assert!(h.keys().all(|k| k == "content-type" || k == "x-other"));
    }
    // A name that only looks like part of it is kept.
    let (h, n) = scrub_headers(&set, headers(&[("x-sk_live", "1")]));
    assert_eq!((n, h.len()), (0, 1));
}

#[test]
fn values_are_still_scrubbed_and_a_clean_map_is_kept_as_it_is() {
    let set = set(&[(b"sk_live_ABCdef0123456789", b"AIRLOCK_K")]);
    let (h, n) = scrub_headers(&set, headers(&[("x-echo", "Bearer sk_live_ABCdef0123456789"), ("x-a", "b")]));
    assert_eq!(n, 1);
    assert_eq!(h["x-echo"], "Bearer AIRLOCK_K");
    assert_eq!(h["x-a"], "b");
    let clean = headers(&[("x-a", "b"), ("x-a", "c"), ("x-d", "e")]);
    let (h, n) = scrub_headers(&set, clean.clone());
    assert_eq!(n, 0);
    assert_eq!(h, clean);
}
