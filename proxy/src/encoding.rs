//! Percent-encoding, over the `percent-encoding` crate: which bytes each
//! place keeps as they are. Everything else becomes `%XX` (upper-case hex),
//! and every byte outside ASCII always does.

use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

/// Kept: RFC 3986's unreserved characters (§2.3), letters, digits and
/// `-._~`. Everything else, `%` and every delimiter included, is encoded, so
/// the text is safe in any URI component: a query name or value, userinfo.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Kept: printable ASCII except `%` (gRPC over HTTP/2, "Responses": the
/// `grpc-message` value is percent-encoded UTF-8).
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// `text` with every byte outside RFC 3986's unreserved characters
/// percent-encoded.
pub(crate) fn percent_encode(text: &str) -> String {
    percent_encode_bytes(text.as_bytes())
}

/// `bytes` (a secret, which need not be UTF-8) with every byte outside RFC
/// 3986's unreserved characters percent-encoded: safe as a query value.
pub(crate) fn percent_encode_bytes(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, UNRESERVED).to_string()
}

/// `text` as a `grpc-message` value: every byte outside printable ASCII, and
/// `%` itself, percent-encoded.
pub(crate) fn grpc_percent_encode(text: &str) -> String {
    utf8_percent_encode(text, GRPC_MESSAGE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written encoders these replaced, kept as the reference.
    fn by_hand(bytes: &[u8], keep: fn(u8) -> bool) -> String {
        bytes.iter().map(|&b| if keep(b) { char::from(b).to_string() } else { format!("%{b:02X}") }).collect()
    }
    fn unreserved(b: u8) -> bool {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
    }
    fn grpc(b: u8) -> bool {
        (0x20..=0x7e).contains(&b) && b != b'%'
    }

    #[test]
    fn every_byte_is_encoded_as_by_the_hand_written_encoders() {
        for b in 0..=u8::MAX {
            let crate_says = |set| percent_encoding::percent_encode(&[b], set).to_string();
            assert_eq!(crate_says(UNRESERVED), by_hand(&[b], unreserved), "byte {b:#04x}");
            assert_eq!(crate_says(GRPC_MESSAGE), by_hand(&[b], grpc), "byte {b:#04x}");
        }
    }

    #[test]
    fn text_is_encoded_as_by_the_hand_written_encoders() {
        let every_char: String = (0..=u32::from(char::MAX)).filter_map(char::from_u32).collect();
        for text in ["", "a b&c=d/e?f#g%h+i", "é\n", "100% sure ~_-.", every_char.as_str()] {
            assert_eq!(percent_encode(text), by_hand(text.as_bytes(), unreserved));
            assert_eq!(grpc_percent_encode(text), by_hand(text.as_bytes(), grpc));
        }
        assert_eq!(percent_encode("a b/é~"), "a%20b%2F%C3%A9~");
        assert_eq!(grpc_percent_encode("100% é\n"), "100%25 %C3%A9%0A");
    }
}
