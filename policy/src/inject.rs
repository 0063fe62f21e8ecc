//! Swapping a placeholder for its secret inside one header value, including
//! inside `Basic` credentials (decoded, swapped, re-encoded).
//!
//! Pure functions over bytes; the proxy calls [`inject`] for each header the
//! decision names.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// Decodes the credentials of a `Basic` header value (`Basic <base64>`,
/// scheme case-insensitive). `None` when the value is not Basic or does not
/// decode.
pub fn basic_credentials(value: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (scheme, rest) = split_scheme(value)?;
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    STANDARD.decode(rest.trim_ascii()).ok().map(Zeroizing::new)
}

fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let value = value.trim_ascii_start();
    let space = value.iter().position(|&b| b == b' ')?;
    Some((&value[..space], &value[space + 1..]))
}

/// Replaces every occurrence of `needle` in `haystack` with `with`.
fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if needle.is_empty() {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(haystack.len() + with.len()));
    let mut rest = haystack;
    let mut found = false;
    while let Some(i) = find(rest, needle) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(with);
        rest = &rest[i + needle.len()..];
        found = true;
    }
    if !found {
        return None;
    }
    out.extend_from_slice(rest);
    Some(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Returns `value` with `placeholder` swapped for `secret`: in the raw value
/// when it appears there, else inside decoded `Basic` credentials (then
/// re-encoded as `Basic <base64>`). `None` when the placeholder is in
/// neither.
pub fn inject(value: &[u8], placeholder: &[u8], secret: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if let Some(swapped) = replace_all(value, placeholder, secret) {
        return Some(swapped);
    }
    let (scheme, _) = split_scheme(value)?;
    let decoded = basic_credentials(value)?;
    let swapped = replace_all(&decoded, placeholder, secret)?;
    let mut out = Zeroizing::new(Vec::with_capacity(scheme.len() + 1 + swapped.len() * 4 / 3 + 4));
    out.extend_from_slice(scheme);
    out.push(b' ');
    let mut encoded = Zeroizing::new(String::new());
    STANDARD.encode_string(&*swapped, &mut encoded);
    out.extend_from_slice(encoded.as_bytes());
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn injects_raw_and_bearer() {
        assert_eq!(&*inject(b"Bearer AIRLOCK_K", b"AIRLOCK_K", b"sk_1").unwrap(), b"Bearer sk_1");
        assert_eq!(&*inject(b"AIRLOCK_K", b"AIRLOCK_K", b"sk_1").unwrap(), b"sk_1");
        assert_eq!(&*inject(b"a AIRLOCK_K b AIRLOCK_K", b"AIRLOCK_K", b"s").unwrap(), b"a s b s");
        assert!(inject(b"Bearer other", b"AIRLOCK_K", b"sk_1").is_none());
    }

    #[test]
    fn injects_inside_basic() {
        let value = format!("Basic {}", STANDARD.encode("AIRLOCK_K:"));
        let out = inject(value.as_bytes(), b"AIRLOCK_K", b"sk_1").unwrap();
        assert_eq!(&*out, format!("Basic {}", STANDARD.encode("sk_1:")).as_bytes());
        let value = format!("basic {}", STANDARD.encode("user:AIRLOCK_K"));
        let out = inject(value.as_bytes(), b"AIRLOCK_K", b"p@ss").unwrap();
        assert_eq!(&*out, format!("basic {}", STANDARD.encode("user:p@ss")).as_bytes());
        assert!(inject(b"Basic !!notbase64", b"AIRLOCK_K", b"s").is_none());
        assert!(inject(format!("Basic {}", STANDARD.encode("u:p")).as_bytes(), b"AIRLOCK_K", b"s").is_none());
    }
}
