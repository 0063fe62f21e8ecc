//! The response-side redactor: every known secret value, in every form it
//! may be echoed in, is replaced before a byte reaches the agent.
//!
//! [`PatternSet`] holds the forms of each secret and what each is replaced
//! by; [`Stream`] applies it to a body arriving in frames, with exactly the
//! output a one-shot leftmost-longest replacement over the whole body
//! ([`PatternSet::replace_all`]) would give.
//!
//! The invariant that makes streaming safe, prompt and silent: **after each
//! frame, the bytes held back are exactly those after the last hard line
//! break, capped at the last `H` bytes; `H` depends only on the pattern
//! set.** Which bytes are held, and so when each byte reaches the agent
//! (and which bytes vanish when the stream is aborted), depends on the
//! length and line structure of the text only, never on whether the
//! bytes could be the start of a secret: an agent that makes an upstream
//! echo its guesses learns nothing from the timing. The one exception is a
//! match that is already final: it is replaced at once, and the hold
//! starts after it. `H` is the longest pattern plus [`patterns::SWALLOW`]
//! rounded up to a power of two (at least 64), so it does not give away
//! the exact length of the longest secret. Secrets hold no line breaks, so
//! an SSE event or an NDJSON line is never delayed.
//!
//! Why this equals the one-shot oracle: a match starting more than `H - 4`
//! bytes before the end, or before the last hard line break, can no longer
//! grow (no pattern is that long, none holds a line break) nor be preceded
//! by a match that starts earlier, so it is final and replaced at once;
//! every match that is not yet final starts within the held bytes, and the
//! next frame's scan restarts at their start, where the one-shot scan would
//! find the same leftmost-longest match.
//!
//! Forms and their replacements (the placeholder is the tenant's
//! placeholder for that secret when one of its routes uses it, else
//! `[REDACTED]`):
//!
//! | form | replaced by |
//! |---|---|
//! | raw value | placeholder |
//! | URL-encoded value | placeholder |
//! | JSON-escaped value | placeholder |
//! | base64 of the value, at each of the three byte alignments (standard and URL-safe alphabets) | `[REDACTED]` |
//! | the exact header value airlock injected on this request (`Bearer <key>`, `Basic <base64>`) | the value the agent sent |
//! | base64 of that injected header value | `[REDACTED]` |

mod body;
mod decode;
mod patterns;
mod scan;

pub use body::{Ended, RedactBody, RedactionCount, scrub_headers};
pub use decode::{DecodeError, Decoder};
pub use patterns::{PatternSet, PatternSetBuilder};
pub use scan::Stream;

/// What a base64 fragment of a secret is replaced with.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// One secret to scrub, and what its plain forms become.
#[derive(Clone)]
pub struct SecretForms<'a> {
    /// The secret value.
    pub value: &'a [u8],
    /// What the raw, URL-encoded and JSON-escaped forms become.
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
