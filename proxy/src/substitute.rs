//! The request body on its way upstream, for a decided request: the
//! route's placeholder swapped for the secret where the route opted in
//! (`body = "form" | "json" | "text"`), a body holding it refused where it
//! cannot be swapped, and every placeholder left in as data counted.
//!
//! - **Swap.** Each occurrence of the placeholder becomes the secret,
//!   written in the body's format (see [`BodyKind`]). The body streams: at
//!   most one placeholder's length less one byte is held back between
//!   pieces (a placeholder split across HTTP/1.1 chunks or HTTP/2 DATA
//!   frames is still found whole). The first [`READ_AHEAD`] bytes — the
//!   whole body when it declares a length of at most [`WHOLE_LIMIT`] —
//!   are read before anything is sent, so a body that ends within them
//!   goes with its `Content-Length` recomputed; a longer one is re-framed
//!   chunked.
//! - **Refuse.** On a route that opted in, a body airlock cannot swap in —
//!   compressed (scanned through its decoder), multipart, of another media
//!   type, or bound for a cleartext upstream — is refused once the
//!   placeholder is found in it: before anything is sent when it is found
//!   within the read-ahead, else by ending the upstream request unfinished.
//!   The placeholder itself never goes upstream unswapped.
//! - **Count.** Everywhere else a placeholder in a body is data, not a
//!   credential (agents quote placeholders in conversations they send to
//!   LLM APIs): it passes unchanged and the audit record counts it
//!   (`body_placeholders`).
//!
//! Written here rather than taken from a crate: the find-and-replace of
//! one literal across a stream of body frames with a bounded hold-back is
//! a few lines over `memchr::memmem`, and no maintained crate does it over
//! `http_body` frames.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use zeroize::Zeroizing;

use airlock_policy::{BodyKind, Policy};

use crate::Body;
use crate::error::{Error, Unsubstitutable};
use crate::redact::Decoder;

/// How much of a body airlock reads before sending the request, when the
/// route swaps in bodies: a body that ends within it is sent with an exact
/// `Content-Length`, and refused before anything goes upstream.
pub(crate) const READ_AHEAD: usize = 64 * 1024;

/// A body that declares a `Content-Length` of at most this is read whole
/// before it is sent (so it keeps an exact length, as upstreams that
/// refuse chunked uploads need).
pub(crate) const WHOLE_LIMIT: u64 = 256 << 10;

/// What is done to a request body.
pub(crate) enum Plan {
    /// Placeholders in it are data: passed, and counted.
    Data,
    /// The placeholder becomes `replacement` wherever it appears.
    Swap { placeholder: Vec<u8>, replacement: Zeroizing<Vec<u8>> },
    /// A body holding the placeholder is refused (`refusal`): it could not
    /// be swapped in. A compressed body is scanned through `decoder`.
    Refuse { placeholder: Vec<u8>, decoder: Option<Box<Decoder>>, refusal: Refusal },
}

impl Plan {
    /// Whether the body is read ahead before the request is sent.
    pub(crate) fn reads_ahead(&self) -> bool {
        !matches!(self, Plan::Data)
    }

    /// Whether the body may change length (so its `Content-Length` cannot
    /// be passed on as the agent sent it).
    pub(crate) fn reframes(&self) -> bool {
        matches!(self, Plan::Swap { .. })
    }
}

/// Why a body holding the placeholder is refused.
#[derive(Clone, Debug)]
pub(crate) enum Refusal {
    /// It would carry the secret to a plain-HTTP upstream.
    Cleartext { route: String, authority: String },
    /// The route swaps in bodies, but not in this one.
    Unsubstitutable { route: String, why: Unsubstitutable },
}

impl Refusal {
    fn error(&self) -> Error {
        match self.clone() {
            Refusal::Cleartext { route, authority } => Error::Cleartext { route, authority },
            Refusal::Unsubstitutable { route, why } => Error::Unsubstitutable { route, why },
        }
    }
}

/// What a body held, for the audit record.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Placeholders (of any route) found in the body as the agent sent it.
    found: AtomicU64,
    /// Of those, the ones swapped for the secret.
    swapped: AtomicU64,
}

impl Tally {
    /// Placeholders passed upstream as data.
    pub(crate) fn data(&self) -> u64 {
        self.found.load(Ordering::Relaxed).saturating_sub(self.swapped.load(Ordering::Relaxed))
    }

    /// Whether the secret was swapped in at least once.
    pub(crate) fn swapped(&self) -> bool {
        self.swapped.load(Ordering::Relaxed) > 0
    }
}

/// The secret as a body of `kind` writes it: percent-encoded for a form
/// (RFC 3986 unreserved characters kept, so `/`, `+`, `=` and `&` arrive
/// as data), escaped as inside a JSON string (RFC 8259 §7; None when the
/// secret is not UTF-8, which a JSON text cannot hold), as it is for text.
pub(crate) fn encode(kind: BodyKind, secret: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let encoded = match kind {
        BodyKind::Form => crate::encoding::percent_encode_bytes(secret).into_bytes(),
        BodyKind::Json => {
            let text = std::str::from_utf8(secret).ok()?;
            let mut out = String::with_capacity(text.len() + 8);
            for c in text.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                    c => out.push(c),
                }
            }
            out.into_bytes()
        }
        BodyKind::Text => secret.to_vec(),
    };
    Some(Zeroizing::new(encoded))
}

/// The media type of a request's body, lower-case `type/subtype` without
/// parameters; empty when it names none, None when it names more than one
/// (a body two parsers could read two ways).
pub(crate) fn essence(headers: &[(&str, &[u8])]) -> Option<String> {
    let mut types = headers.iter().filter(|(n, _)| *n == "content-type");
    let Some((_, value)) = types.next() else { return Some(String::new()) };
    if types.next().is_some() {
        return None;
    }
    let text = String::from_utf8_lossy(value);
    Some(text.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// A streaming find-and-replace of one literal.
struct Swapper {
    finder: memchr::memmem::Finder<'static>,
    replacement: Zeroizing<Vec<u8>>,
    /// The end of the stream so far that may begin a placeholder.
    held: Vec<u8>,
    swapped: u64,
}

impl Swapper {
    fn new(placeholder: &[u8], replacement: Zeroizing<Vec<u8>>) -> Swapper {
        let finder = memchr::memmem::Finder::new(placeholder).into_owned();
        Swapper { finder, replacement, held: Vec::new(), swapped: 0 }
    }

    /// The next piece of the body, swapped: all but a tail that may be the
    /// start of a placeholder, held for the next piece.
    fn push(&mut self, piece: &[u8]) -> Vec<u8> {
        let mut text = std::mem::take(&mut self.held);
        text.extend_from_slice(piece);
        let mut out = Vec::with_capacity(text.len());
        let mut at = 0;
        while let Some(i) = self.finder.find(&text[at..]) {
            out.extend_from_slice(&text[at..at + i]);
            out.extend_from_slice(&self.replacement);
            at += i + self.finder.needle().len();
            self.swapped += 1;
        }
        let rest = &text[at..];
        let keep = partial_match(rest, self.finder.needle());
        out.extend_from_slice(&rest[..rest.len() - keep]);
        self.held = rest[rest.len() - keep..].to_vec();
        out
    }

    /// The end of the body: what was held back.
    fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

/// The length of the longest end of `text` that is a proper start of
/// `needle`.
fn partial_match(text: &[u8], needle: &[u8]) -> usize {
    let most = needle.len().saturating_sub(1).min(text.len());
    (1..=most).rev().find(|&n| text[text.len() - n..] == needle[..n]).unwrap_or(0)
}

/// Finds a literal in a stream, across pieces.
struct Seeker {
    finder: memchr::memmem::Finder<'static>,
    tail: Vec<u8>,
}

impl Seeker {
    fn new(needle: &[u8]) -> Seeker {
        Seeker { finder: memchr::memmem::Finder::new(needle).into_owned(), tail: Vec::new() }
    }

    fn found_in(&mut self, piece: &[u8]) -> bool {
        let mut text = std::mem::take(&mut self.tail);
        text.extend_from_slice(piece);
        let found = self.finder.find(&text).is_some();
        let keep = self.finder.needle().len().saturating_sub(1).min(text.len());
        self.tail = text[text.len() - keep..].to_vec();
        found
    }
}

/// Counts every route's placeholders in a stream, across pieces.
struct Counter {
    policy: Arc<Policy>,
    tail: Vec<u8>,
}

impl Counter {
    fn count(&mut self, piece: &[u8]) -> u64 {
        let mut text = std::mem::take(&mut self.tail);
        let old = text.len();
        text.extend_from_slice(piece);
        // A match ending in the old tail was counted with the last piece.
        let found = self.policy.placeholder_ends(&text).filter(|&end| end > old).count() as u64;
        let keep = self.policy.longest_placeholder().saturating_sub(1).min(text.len());
        self.tail = text[text.len() - keep..].to_vec();
        found
    }
}

enum Work {
    Data,
    Swap(Swapper),
    Refuse { seeker: Seeker, decoder: Option<Box<Decoder>>, refusal: Refusal },
}

/// A request body going upstream under a [`Plan`].
pub(crate) struct Upward {
    inner: Body,
    work: Work,
    counter: Counter,
    tally: Arc<Tally>,
    /// Where a refusal found while streaming is left for the sender.
    refused: Arc<Mutex<Option<Error>>>,
    /// Frames ready to go (read ahead, or a held tail before trailers).
    ready: VecDeque<Frame<Bytes>>,
    /// The agent's body has ended (and `ready` holds all that is left).
    ended: bool,
}

impl Upward {
    pub(crate) fn new(
        inner: Body,
        plan: Plan,
        policy: Arc<Policy>,
        tally: Arc<Tally>,
        refused: Arc<Mutex<Option<Error>>>,
    ) -> Upward {
        let work = match plan {
            Plan::Data => Work::Data,
            Plan::Swap { placeholder, replacement } => Work::Swap(Swapper::new(&placeholder, replacement)),
            Plan::Refuse { placeholder, decoder, refusal } => {
                Work::Refuse { seeker: Seeker::new(&placeholder), decoder, refusal }
            }
        };
        let counter = Counter { policy, tail: Vec::new() };
        Upward { inner, work, counter, tally, refused, ready: VecDeque::new(), ended: false }
    }

    /// Reads up to [`READ_AHEAD`] bytes of the body before anything is
    /// sent: a refusal found there is returned (nothing has gone upstream).
    /// `Err(None)`: the agent's body failed.
    pub(crate) async fn read_ahead(&mut self, declared: Option<u64>) -> Result<(), Option<Error>> {
        let limit = match declared {
            Some(n) if n <= WHOLE_LIMIT => usize::try_from(n).unwrap_or(READ_AHEAD).max(READ_AHEAD),
            _ => READ_AHEAD,
        };
        let mut read = 0;
        while !self.ended {
            // A body that has all arrived ends here, however long, so its
            // length is known.
            if self.inner.is_end_stream() {
                self.end().map_err(Some)?;
                break;
            }
            if read >= limit {
                break;
            }
            match self.inner.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        read += data.len();
                    }
                    self.take(frame).map_err(Some)?;
                }
                Some(Err(_)) => return Err(None),
                None => self.end().map_err(Some)?,
            }
        }
        Ok(())
    }

    /// The body's exact length, when it has ended within the read-ahead.
    pub(crate) fn exact_len(&self) -> Option<u64> {
        self.ended.then(|| self.ready.iter().filter_map(|f| f.data_ref()).map(|d| d.len() as u64).sum())
    }

    /// Works one frame of the agent's body into `ready`.
    fn take(&mut self, frame: Frame<Bytes>) -> Result<(), Error> {
        let frame = match frame.into_data() {
            Ok(data) => {
                let found = self.counter.count(&data);
                self.tally.found.fetch_add(found, Ordering::Relaxed);
                let out = match &mut self.work {
                    Work::Data => data,
                    Work::Swap(swapper) => {
                        let before = swapper.swapped;
                        let out = Bytes::from(swapper.push(&data));
                        self.tally.swapped.fetch_add(swapper.swapped - before, Ordering::Relaxed);
                        out
                    }
                    Work::Refuse { seeker, decoder, refusal } => {
                        let found = match decoder {
                            Some(d) => {
                                let decoded = d.decode(&data).map_err(|_| undecodable(refusal))?;
                                seeker.found_in(&decoded)
                            }
                            None => seeker.found_in(&data),
                        };
                        if found {
                            return Err(refusal.error());
                        }
                        data
                    }
                };
                if !out.is_empty() {
                    self.ready.push_back(Frame::data(out));
                }
                return Ok(());
            }
            Err(frame) => frame,
        };
        // Trailers end the body: what was held goes before them.
        self.flush()?;
        self.ready.push_back(frame);
        Ok(())
    }

    /// The agent's body has ended.
    fn end(&mut self) -> Result<(), Error> {
        self.flush()?;
        self.ended = true;
        Ok(())
    }

    /// Sends what was held back, and checks a decoder's end.
    fn flush(&mut self) -> Result<(), Error> {
        match &mut self.work {
            Work::Data => {}
            Work::Swap(swapper) => {
                let held = swapper.finish();
                if !held.is_empty() {
                    self.ready.push_back(Frame::data(Bytes::from(held)));
                }
            }
            Work::Refuse { seeker, decoder, refusal } => {
                if let Some(d) = decoder {
                    let decoded = d.finish().map_err(|_| undecodable(refusal))?;
                    if seeker.found_in(&decoded) {
                        return Err(refusal.error());
                    }
                }
            }
        }
        Ok(())
    }

    /// Leaves a refusal for the sender and fails the body, so the upstream
    /// request is never completed.
    fn fail(&mut self, e: Error) -> crate::BoxError {
        let said = e.to_string();
        if let Ok(mut slot) = self.refused.lock() {
            *slot = Some(e);
        }
        said.into()
    }

    pub(crate) fn boxed(self) -> Body {
        self.boxed_unsync()
    }
}

/// A compressed body that did not decode cannot be scanned: refused as
/// one airlock cannot swap in.
fn undecodable(refusal: &Refusal) -> Error {
    let route = match refusal {
        Refusal::Cleartext { route, .. } | Refusal::Unsubstitutable { route, .. } => route.clone(),
    };
    Error::Unsubstitutable { route, why: Unsubstitutable::Undecodable }
}

impl HttpBody for Upward {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let step = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => this.take(frame),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.end(),
            };
            if let Err(e) = step {
                this.ended = true;
                this.ready.clear();
                return Poll::Ready(Some(Err(this.fail(e))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let holds = match &self.work {
            Work::Swap(swapper) => !swapper.held.is_empty(),
            // A decoder's end may still give out bytes to search.
            Work::Refuse { decoder, .. } => decoder.is_some(),
            Work::Data => false,
        };
        self.ready.is_empty() && (self.ended || (!holds && self.inner.is_end_stream()))
    }

    fn size_hint(&self) -> SizeHint {
        match (self.exact_len(), &self.work) {
            (Some(n), _) => SizeHint::with_exact(n),
            (None, Work::Swap(_)) => SizeHint::default(),
            (None, _) => self.inner.size_hint(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Swapper, partial_match};
    use zeroize::Zeroizing;

    fn swap_in_pieces(pieces: &[&str]) -> (String, u64) {
        let mut s = Swapper::new(b"AIRLOCK_KEY", Zeroizing::new(b"s/e+c=".to_vec()));
        let mut out = Vec::new();
        for p in pieces {
            out.extend(s.push(p.as_bytes()));
        }
        out.extend(s.finish());
        (String::from_utf8(out).unwrap(), s.swapped)
    }

    #[test]
    fn a_placeholder_split_across_pieces_is_swapped_whole() {
        let whole = "token=AIRLOCK_KEY&x=AIRLOCK_KEYAIRLOCK_KEY&AIRLOCK_KE";
        let want = ("token=s/e+c=&x=s/e+c=s/e+c=&AIRLOCK_KE".to_owned(), 3);
        assert_eq!(swap_in_pieces(&[whole]), want);
        for cut in 0..=whole.len() {
            assert_eq!(swap_in_pieces(&[&whole[..cut], &whole[cut..]]), want, "cut at {cut}");
        }
        let bytes: Vec<String> = whole.chars().map(String::from).collect();
        let refs: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(swap_in_pieces(&refs), want, "one byte at a time");
        assert_eq!(swap_in_pieces(&["AIRLOCK_AIRLOCK_KEY"]), ("AIRLOCK_s/e+c=".to_owned(), 1));
        assert_eq!(swap_in_pieces(&["AIRLOCK_", "AIRLOCK_KEY"]), ("AIRLOCK_s/e+c=".to_owned(), 1));
    }

    #[test]
    fn at_most_a_placeholder_less_one_byte_is_held() {
        assert_eq!(partial_match(b"abcAIRLOCK_KE", b"AIRLOCK_KEY"), 10);
        assert_eq!(partial_match(b"abc", b"AIRLOCK_KEY"), 0);
        assert_eq!(partial_match(b"A", b"AIRLOCK_KEY"), 1);
        let mut s = Swapper::new(b"AIRLOCK_KEY", Zeroizing::new(b"x".to_vec()));
        assert_eq!(s.push(b"hello AIRLOCK_KE"), b"hello ");
        assert_eq!(s.push(b"x"), b"AIRLOCK_KEx");
    }
}
