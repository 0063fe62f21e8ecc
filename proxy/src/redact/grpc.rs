//! [`GrpcMessages`]: scrubbing a gRPC body message by message.
//!
//! A gRPC body (`application/grpc`, `application/grpc+proto`, …, and
//! `application/grpc-web` with its trailer frames) is a series of
//! length-prefixed messages: one flags byte (bit 0: compressed; bit 7, in
//! gRPC-Web only: a trailer frame), a four-byte big-endian length, then the
//! message. A byte redactor that changed a message's length would leave
//! the prefix — and every length inside a protobuf message around the
//! secret — wrong, and the client with a broken stream. So:
//!
//! - each message is scanned on its own, with a [`Stream::same_length`]
//!   stream: a secret becomes the placeholder padded with `*` to its
//!   length, so every length prefix stays true; the five-byte prefix is
//!   never scanned, so no match can change it;
//! - a message is flushed whole as soon as its last byte is in: nothing of
//!   it waits for the next one (which, on a bidirectional stream, may only
//!   come once the client has read this one);
//! - a compressed message is decoded (with the stream's `grpc-encoding`:
//!   gzip, deflate, zstd; held whole, at most `[limits] max_grpc_message`
//!   decoded and `max_decoded_ratio` times its size), scanned and sent on
//!   uncompressed with its new length: airlock asks upstreams for
//!   `grpc-accept-encoding: identity`, but a server configured to compress
//!   (grpcio's `compression=`) compresses anyway. A message flagged
//!   compressed in a stream without a `grpc-encoding`, or one that does
//!   not decode, fails the body (the stream is aborted).
//!
//! A secret split across two messages is not seen (as across two
//! WebSocket messages), and the length of a replaced value shows.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{DecodeError, Decoder, PatternSet, Stream};

/// The length prefix: flags, then a big-endian `u32`.
const PREFIX: usize = 5;
/// Flags bit: the message is compressed with the stream's `grpc-encoding`.
const COMPRESSED: u8 = 0x01;
/// Flags bit, gRPC-Web only: the frame holds the trailers, as text.
const TRAILERS: u8 = 0x80;

/// Why a gRPC body cannot be passed on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrpcError {
    /// A message is compressed in a stream that declared no coding.
    #[error("the upstream sent a compressed gRPC message without naming its grpc-encoding, so airlock cannot scan it")]
    Compressed,
    /// A flags byte gRPC does not define.
    #[error("the upstream sent a gRPC message with undefined flags")]
    Flags,
    /// A compressed message over `max_grpc_message`.
    #[error("the upstream sent a compressed gRPC message larger than max_grpc_message ({limit} bytes)")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// A compressed message that does not decode.
    #[error("a compressed gRPC message failed to decode: {0}")]
    Decode(#[from] DecodeError),
}

/// The coding of a gRPC stream's compressed messages (its `grpc-encoding`)
/// and the most a message may decode to.
#[derive(Clone, Debug)]
pub struct MessageCoding {
    name: String,
    max_message: usize,
}

impl MessageCoding {
    /// The coding a `grpc-encoding` value names: `None` for `identity`, an
    /// error for one airlock does not decode. A message may decode to at
    /// most `max_message` bytes (which bounds the memory a decompression
    /// bomb can take; no ratio applies, as gRPC messages such as repeated
    /// records compress far better than HTTP bodies).
    pub fn for_header(value: &str, max_message: usize) -> Result<Option<Self>, DecodeError> {
        let name = value.trim().to_ascii_lowercase();
        // One coding per stream: a list is no gRPC coding.
        if name.contains(',') {
            return Err(DecodeError::Unsupported);
        }
        Ok(Self::decoder(&name)?.map(|_| MessageCoding { name, max_message }))
    }

    fn decoder(name: &str) -> Result<Option<Decoder>, DecodeError> {
        Decoder::for_encodings(std::iter::once(name), u64::MAX)
    }

    fn decode(&self, compressed: &[u8]) -> Result<Vec<u8>, GrpcError> {
        let Some(decoder) = Self::decoder(&self.name)? else { return Ok(compressed.to_vec()) };
        let mut decoder = decoder.limited(self.max_message as u64);
        let too_large = |e| match e {
            DecodeError::TooLarge { .. } => GrpcError::TooLarge { limit: self.max_message },
            other => GrpcError::Decode(other),
        };
        let mut out = decoder.decode(compressed).map_err(too_large)?;
        out.extend_from_slice(&decoder.finish().map_err(too_large)?);
        Ok(out)
    }
}

/// The scrubber of a gRPC body; see the module docs.
pub struct GrpcMessages {
    set: Arc<PatternSet>,
    /// The current message's scan.
    message: Stream,
    prefix: [u8; PREFIX],
    /// Prefix bytes read so far; `PREFIX` while inside a message.
    have: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
    /// Whether trailer frames (gRPC-Web) are allowed.
    web: bool,
    /// The stream's `grpc-encoding`, when it is not identity.
    coding: Option<MessageCoding>,
    /// The compressed message being collected, if the current one is.
    compressed: Option<Vec<u8>>,
    /// Replacements in finished messages.
    count: u64,
}

impl std::fmt::Debug for GrpcMessages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcMessages").field("remaining", &self.remaining).field("count", &self.count()).finish()
    }
}

impl GrpcMessages {
    /// A scrubber for an `application/grpc` body (`kind`), or an
    /// `application/grpc-web` one, whose compressed messages are in
    /// `coding`.
    pub fn new(set: Arc<PatternSet>, kind: GrpcKind, coding: Option<MessageCoding>) -> Self {
        GrpcMessages {
            message: Stream::same_length(Arc::clone(&set)),
            set,
            prefix: [0; PREFIX],
            have: 0,
            remaining: 0,
            web: kind == GrpcKind::Web,
            coding,
            compressed: None,
            count: 0,
        }
    }

    /// Replacements so far.
    pub fn count(&self) -> u64 {
        self.count + self.message.count()
    }

    /// Scans the next piece of the body; appends to `out` every prefix
    /// read whole and every message byte that is final.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), GrpcError> {
        while !data.is_empty() {
            if self.have < PREFIX {
                let n = (PREFIX - self.have).min(data.len());
                self.prefix[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have == PREFIX {
                    self.start_message(out)?;
                }
                continue;
            }
            let n = self.remaining.min(data.len());
            match &mut self.compressed {
                Some(buf) => buf.extend_from_slice(&data[..n]),
                None => self.message.push(&data[..n], out),
            }
            self.remaining -= n;
            data = &data[n..];
            if self.remaining == 0 {
                self.end_message(out)?;
            }
        }
        Ok(())
    }

    /// The body ended: a message cut short is flushed as it arrived
    /// (scanned), as the client would have seen it without airlock; a
    /// compressed one cut short cannot be decoded, and fails.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), GrpcError> {
        if self.have < PREFIX {
            let partial = self.prefix;
            self.message.push(&partial[..self.have], out);
        }
        self.end_message(out)
    }

    fn start_message(&mut self, out: &mut Vec<u8>) -> Result<(), GrpcError> {
        let flags = self.prefix[0];
        let allowed = COMPRESSED | if self.web { TRAILERS } else { 0 };
        if flags & !allowed != 0 {
            return Err(GrpcError::Flags);
        }
        let [_, a, b, c, d] = self.prefix;
        self.remaining = usize::try_from(u32::from_be_bytes([a, b, c, d])).unwrap_or(usize::MAX);
        if flags & COMPRESSED != 0 {
            let Some(coding) = &self.coding else { return Err(GrpcError::Compressed) };
            if self.remaining > coding.max_message {
                return Err(GrpcError::TooLarge { limit: coding.max_message });
            }
            // Its prefix goes out once its decoded length is known.
            self.compressed = Some(Vec::with_capacity(self.remaining));
        } else {
            out.extend_from_slice(&self.prefix);
        }
        if self.remaining == 0 {
            self.end_message(out)?;
        }
        Ok(())
    }

    fn end_message(&mut self, out: &mut Vec<u8>) -> Result<(), GrpcError> {
        if let Some(compressed) = self.compressed.take() {
            let decoded = match &self.coding {
                Some(coding) => coding.decode(&compressed)?,
                None => return Err(GrpcError::Compressed),
            };
            let mut scanned = Vec::with_capacity(decoded.len());
            self.message.push(&decoded, &mut scanned);
            self.message.finish(&mut scanned);
            let len = u32::try_from(scanned.len()).map_err(|_| GrpcError::TooLarge { limit: decoded.len() })?;
            out.push(self.prefix[0] & !COMPRESSED);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&scanned);
        } else {
            self.message.finish(out);
        }
        self.count += self.message.count();
        self.message = Stream::same_length(Arc::clone(&self.set));
        self.have = 0;
        Ok(())
    }
}

/// Whether a `content-type` is gRPC's (`application/grpc`, with any
/// `+format` or parameters), and whether it is gRPC-Web's binary form.
/// `application/grpc-web-text` (base64) is neither: it is refused (see
/// [`is_grpc_web_text`]).
pub fn grpc_content_type(value: &[u8]) -> Option<GrpcKind> {
    let value = std::str::from_utf8(value).ok()?;
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    let (base, _format) = essence.split_once('+').unwrap_or((&essence, ""));
    match base {
        "application/grpc" => Some(GrpcKind::Grpc),
        "application/grpc-web" => Some(GrpcKind::Web),
        _ => None,
    }
}

/// What a lenient base64 decoder makes of a value that is not strict
/// base64 — grpc-js decodes `-bin` metadata with Node's
/// `Buffer.from(v, "base64")`, Python's `b64decode` is lenient by default:
/// characters outside both alphabets skipped, each `=`-padded piece
/// decoded on its own, their bytes joined. A superset of what each such
/// decoder returns (some stop after the first piece), so a secret any of
/// them would show is in it.
fn lenient_base64(text: &[u8]) -> Vec<u8> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let mut out = Vec::new();
    for piece in text.split(|&b| b == b'=') {
        let mut chars: Vec<u8> = piece
            .iter()
            .filter_map(|&b| match b {
                b'-' => Some(b'+'),
                b'_' => Some(b'/'),
                b if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' => Some(b),
                _ => None,
            })
            .collect();
        // A lone last character carries no whole byte.
        if chars.len() % 4 == 1 {
            chars.pop();
        }
        if let Ok(bytes) = LENIENT.decode(&chars) {
            out.extend_from_slice(&bytes);
        }
    }
    out
}

/// Whether a `content-type` is gRPC-Web's text form
/// (`application/grpc-web-text`, with any `+format`): base64 that servers
/// encode and pad piece by piece (Envoy's grpc_web filter does, per data
/// frame), so a secret cut between two pieces is in no alignment the
/// redactor knows. airlock refuses such answers.
///
/// Matched as grpc-web's own client reads it: any type whose lower-cased
/// form starts with `application/grpc-web-text` (so `…-textual` and
/// `…-text,application/json` too), leading whitespace ignored.
pub fn is_grpc_web_text(value: &[u8]) -> bool {
    const TEXT: &[u8] = b"application/grpc-web-text";
    let value = value.trim_ascii_start();
    value.len() >= TEXT.len() && value[..TEXT.len()].eq_ignore_ascii_case(TEXT)
}

/// The gRPC framing of a message whose fields are `headers`, by its
/// `content-type` (see [`grpc_content_type`]).
pub fn grpc_kind(headers: &HeaderMap) -> Option<GrpcKind> {
    headers.get(http::header::CONTENT_TYPE).and_then(|v| grpc_content_type(v.as_bytes()))
}

/// Which gRPC framing a body has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcKind {
    /// `application/grpc`: messages, then HTTP/2 trailers.
    Grpc,
    /// `application/grpc-web`: messages, then a trailer frame.
    Web,
}

/// Scrubs the binary metadata (fields named `*-bin`) of a gRPC head or
/// trailers in the bytes they carry: the value is base64 of what the
/// application sent, so a secret in it is replaced in the decoded bytes and
/// the value encoded again. (Replacing a base64 fragment with `[REDACTED]`
/// would leave metadata the client cannot decode, and grpcio fails the
/// whole call on it.) The replacement keeps the secret's length, as in a
/// message: binary metadata is usually a protobuf (`grpc-status-details-bin`
/// always is, `google.rpc.Status`), whose length prefixes must stay true. A
/// value that is not base64 is left as it is, for [`super::scrub_headers`]
/// to scrub as text. Returns the replacements.
pub fn scrub_binary_metadata(set: &Arc<PatternSet>, headers: &mut HeaderMap) -> u64 {
    let binary: Vec<HeaderName> = headers.keys().filter(|n| n.as_str().ends_with("-bin")).cloned().collect();
    let mut total = 0;
    for name in binary {
        let mut values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        let mut changed = false;
        for value in &mut values {
            // gRPC senders may pad or not; either decodes. A value that is
            // not strict base64 is read as lenient decoders read it.
            let text = value.as_bytes().trim_ascii();
            let unpadded = text.strip_suffix(b"==").or_else(|| text.strip_suffix(b"=")).unwrap_or(text);
            let decoded = STANDARD_NO_PAD.decode(unpadded).unwrap_or_else(|_| lenient_base64(text));
            let mut scrubbed = Vec::new();
            let mut stream = Stream::same_length(Arc::clone(set));
            stream.push(&decoded, &mut scrubbed);
            stream.finish(&mut scrubbed);
            let count = stream.count();
            if count == 0 {
                continue;
            }
            // Base64 is always a valid header value.
            if let Ok(v) = HeaderValue::from_str(&STANDARD_NO_PAD.encode(&scrubbed)) {
                *value = v;
                total += count;
                changed = true;
            }
        }
        if changed {
            headers.remove(&name);
            for value in values {
                headers.append(name.clone(), value);
            }
        }
    }
    total
}
