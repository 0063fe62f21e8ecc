//! The response-side redactor: every known secret value, in every form it
//! may be echoed in, is replaced before a byte reaches the agent.
//!
//! [`PatternSet`] holds the forms of each secret and what each is replaced
//! by; [`Stream`] applies it to a body arriving in frames, with exactly the
//! output a one-shot replacement over the whole body
//! ([`PatternSet::replace_all`]) would give.
//!
//! A set may be layers ([`PatternSet::chain`]): a request's injected
//! header values, compiled on their own, over the tenant's set of every
//! secret, compiled once and shared. The scan searches each layer and
//! takes the match that starts first, the longest there, which is exactly
//! the match one set of all their patterns gives; everything below holds
//! of a chained set as of one.
//!
//! A gRPC body is scanned message by message ([`GrpcMessages`], in
//! `grpc.rs`), with [`Stream::same_length`]: each replacement is padded
//! to the length of what it replaces, so the messages' length prefixes
//! (and the lengths inside a protobuf message) stay true.
//!
//! ## What is matched
//!
//! The matcher does not run on the raw bytes but on the text as the
//! normaliser reads it (`normalise.rs`): percent-escapes in either case,
//! JSON escapes (`\"`, `\/`, `\uXXXX`, surrogate pairs), HTML references
//! (`&#x2F;`, `&#47;`, `&sol;`) and soft line breaks (after a run of exactly 60,
//! 64 or 76 base64 characters that ends a line: wrapped PEM, MIME, and
//! GitHub's contents API, whose first line follows `"content": "`) are undone, so one
//! pattern catches every mix of encoded and raw characters. A match
//! replaces the raw bytes of the units it covers. A frame without `%`, `\`,
//! `&` or a soft line break (most frames) is matched where it lies, with no
//! copy. Matching text that equals a secret modulo these spellings is
//! redacted too; that is intended.
//!
//! Forms and their replacements (the placeholder is the tenant's
//! placeholder for that secret when one of its routes uses it, else
//! `[REDACTED]`):
//!
//! | form | replaced by |
//! |---|---|
//! | the value, as written and as the normaliser reads it (so URL-encoded, JSON-escaped and HTML-escaped) | placeholder |
//! | the value with each space as `+` (form encoding) | placeholder |
//! | the value cut short where an escape the agent put around it takes in its first or last characters, swallowing that escape | placeholder |
//! | base64 of the value, at each of the three byte alignments (standard and URL-safe alphabets), with the character at either edge that also encodes a few of its bits | `[REDACTED]` |
//! | the exact header value airlock injected on this request (`Bearer <key>`, `Basic <base64>`), in the same spellings | the value the agent sent |
//! | base64 of that injected header value, edges likewise | `[REDACTED]` |
//!
//! ## The hold-back
//!
//! The invariant that makes streaming safe, prompt and silent: **after each
//! frame, the bytes held back are exactly those after the last hard line
//! break, capped at the units that make up the last `H` matched bytes, plus
//! an escape (or a `\r` that may begin a soft `\r\n`) the frame's end
//! leaves incomplete, at most 18 bytes; `H` depends only on the pattern
//! set.** Which bytes are held, and so when
//! each byte reaches the agent (and which bytes vanish when the stream is
//! aborted), depends on the length and structure of the text (its line
//! breaks and escapes), never on whether the bytes could be part of a
//! secret: an agent that makes an upstream echo its guesses learns nothing
//! from the timing. The one exception is a match that is already final: it
//! is replaced at once, and the hold starts after it. `H` is the longest
//! pattern plus [`patterns::SWALLOW`], rounded up to a power of two (at
//! least 64), so it does not give away the exact length of the longest
//! secret. Secrets hold no line breaks, so an SSE event or an NDJSON line
//! is never delayed; a soft line break does not end the hold, as a base64
//! fragment may run across it.
//!
//! Why this equals the one-shot oracle: a match starting more than
//! `H - 4` matched bytes before the end, or before the last hard line
//! break, can no longer grow (no pattern is that long, none holds a hard
//! line break) nor be preceded by one that starts earlier, so it is final
//! and replaced at once. Every match that is not yet final starts within
//! the held bytes, and its swallowed neighbour (at most 4 matched bytes
//! before it) too; the next frame's scan restarts at the held bytes, where
//! the one-shot scan would find the same leftmost-longest match, and reads
//! them into the same units (the text before them decides nothing after
//! them but the line length, which is carried over).
//!
//! The matching itself is aho-corasick's (its SIMD Teddy searcher for up
//! to 64 patterns, an automaton past that); the normaliser, the scan around
//! it and the hold are written here, as no crate decodes mixed escapes in a
//! stream while keeping a map back to the raw bytes to replace. Nothing
//! here prints a byte of a body: `Debug` shows lengths and counts only.

mod body;
mod decode;
mod grpc;
mod normalise;
mod patterns;
mod scan;

pub use body::{Ended, RedactBody, RedactionCount, scrub_headers};
pub use decode::{DecodeError, Decoder};
pub use grpc::{
    GrpcError, GrpcKind, GrpcMessages, MessageCoding, grpc_content_type, grpc_kind, is_grpc_web_text,
    scrub_binary_metadata,
};
pub use patterns::{MatcherKind, PatternSet, PatternSetBuilder};
pub use scan::Stream;

/// What a base64 fragment of a secret is replaced with.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// One secret to scrub, and what its plain forms become.
#[derive(Clone)]
pub struct SecretForms<'a> {
    /// The secret value.
    pub value: &'a [u8],
    /// What the value becomes, in every spelling.
    pub replacement: &'a [u8],
}

impl std::fmt::Debug for SecretForms<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretForms([secret])")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
