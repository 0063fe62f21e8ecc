//! The route's own placeholder replaced by its secret in the agent's
//! WebSocket messages, for the message kinds the route lists (`websocket =
//! ["text"]` or `["text", "binary"]`).
//!
//! Runs on each whole message (a fragmented one is reassembled first, so a
//! placeholder split across fragments is found), after
//! [`Policy::check_message`](airlock_policy::Policy::check_message) has
//! refused any placeholder that is not the route's own. Control frames
//! (ping, pong, close) and the kinds not listed pass unchanged.
//!
//! The result is held to `max_websocket_message` like any message: one the
//! secret would make larger is refused (the relay closes `1009`), never
//! sent cut. A text message stays UTF-8: the placeholder is ASCII, so it
//! always sits between characters, and the handshake is refused when the
//! secret of a route listing `"text"` is not UTF-8
//! ([`crate::pipeline::frames`]); should one reach here all the same, the
//! message is refused rather than sent as broken text.

use std::sync::Arc;

use bytes::Bytes;
use memchr::memmem::Finder;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use airlock_policy::WebSocketKinds;
use airlock_policy::secrets::SecretValue;

/// A route's secret and placeholder, for the message kinds it lists.
pub(crate) struct FrameCredential {
    placeholder: Finder<'static>,
    secret: Arc<SecretValue>,
    kinds: WebSocketKinds,
}

/// Why a message cannot be sent with the secret in it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SwapError {
    /// It would be larger than `max_websocket_message`.
    TooLarge,
    /// A text message, and the secret is not UTF-8.
    NotText,
}

impl FrameCredential {
    pub(crate) fn new(placeholder: &str, secret: Arc<SecretValue>, kinds: WebSocketKinds) -> Self {
        FrameCredential { placeholder: Finder::new(placeholder.as_bytes()).into_owned(), secret, kinds }
    }

    /// `msg` with every occurrence of the placeholder replaced by the
    /// secret when its kind is listed, and how many there were; at most
    /// `max` bytes.
    pub(crate) fn swap(&self, msg: Message, max: usize) -> Result<(Message, u64), SwapError> {
        let data: &[u8] = match &msg {
            Message::Text(t) if self.kinds.text => t.as_bytes(),
            Message::Binary(b) if self.kinds.binary => b,
            _ => return Ok((msg, 0)),
        };
        let found = self.placeholder.find_iter(data).count();
        if found == 0 {
            return Ok((msg, 0));
        }
        let secret = self.secret.expose();
        if matches!(msg, Message::Text(_)) && std::str::from_utf8(secret).is_err() {
            return Err(SwapError::NotText);
        }
        let needle = self.placeholder.needle().len();
        let len =
            (data.len() - found * needle).checked_add(found.checked_mul(secret.len()).ok_or(SwapError::TooLarge)?);
        let len = len.filter(|&n| n <= max).ok_or(SwapError::TooLarge)?;
        let mut out = Vec::with_capacity(len);
        let mut rest = 0;
        for at in self.placeholder.find_iter(data) {
            out.extend_from_slice(&data[rest..at]);
            out.extend_from_slice(secret);
            rest = at + needle;
        }
        out.extend_from_slice(&data[rest..]);
        let swapped = match msg {
            // Valid UTF-8 with an ASCII run replaced by UTF-8 is UTF-8.
            Message::Text(_) => Message::Text(Utf8Bytes::try_from(out).map_err(|_| SwapError::NotText)?),
            _ => Message::Binary(Bytes::from(out)),
        };
        Ok((swapped, found as u64))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PLACEHOLDER: &str = "AIRLOCK_K";

    fn credential(secret: &[u8], text: bool, binary: bool) -> FrameCredential {
        let secret = Arc::new(SecretValue::new(secret.to_vec()).unwrap());
        FrameCredential::new(PLACEHOLDER, secret, WebSocketKinds { text, binary })
    }

    #[test]
    fn every_placeholder_in_a_listed_kind_becomes_the_secret() {
        let c = credential(b"s3cr\xc3\xa9t", true, false);
        let (m, n) = c.swap(Message::text("a AIRLOCK_K b AIRLOCK_KAIRLOCK_K é"), 1 << 20).unwrap();
        assert_eq!(n, 3);
        assert!(m == Message::text("a s3crét b s3créts3crét é"), "swapped in place, the rest kept");
        let (m, n) = c.swap(Message::text("AIRLOCK_ no placeholder"), 1 << 20).unwrap();
        assert_eq!((m, n), (Message::text("AIRLOCK_ no placeholder"), 0));
    }

    #[test]
    fn kinds_not_listed_and_control_frames_pass_unchanged() {
        let text_only = credential(b"sec", true, false);
        let bin = Message::binary(&b"\x00AIRLOCK_K\xff"[..]);
        assert_eq!(text_only.swap(bin.clone(), 1 << 20).unwrap(), (bin.clone(), 0));
        let both = credential(b"sec", true, true);
        assert!(both.swap(bin, 1 << 20).unwrap() == (Message::binary(&b"\x00sec\xff"[..]), 1));
        for control in [
            Message::Ping(Bytes::from_static(b"AIRLOCK_K")),
            Message::Pong(Bytes::from_static(b"AIRLOCK_K")),
            Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: Utf8Bytes::from_static("AIRLOCK_K"),
            })),
        ] {
            assert_eq!(both.swap(control.clone(), 1 << 20).unwrap(), (control, 0));
        }
    }

    #[test]
    fn a_message_the_secret_would_make_too_large_is_refused() {
        let c = credential(b"0123456789abcdef", true, true);
        // 9 bytes become 16: 2 placeholders and 2 bytes are 34 bytes after.
        let msg = Message::text("AIRLOCK_K.AIRLOCK_K.");
        assert_eq!(c.swap(msg.clone(), 33).unwrap_err(), SwapError::TooLarge);
        assert_eq!(c.swap(msg, 34).unwrap().1, 2);
    }

    #[test]
    fn a_secret_that_is_not_utf8_never_goes_in_a_text_message() {
        let c = credential(b"\xffsecret", true, true);
        assert_eq!(c.swap(Message::text("AIRLOCK_K"), 1 << 20).unwrap_err(), SwapError::NotText);
        assert_eq!(c.swap(Message::text("no placeholder"), 1 << 20).unwrap().1, 0);
        assert!(
            c.swap(Message::binary(&b"AIRLOCK_K"[..]), 1 << 20).unwrap() == (Message::binary(&b"\xffsecret"[..]), 1)
        );
    }
}
