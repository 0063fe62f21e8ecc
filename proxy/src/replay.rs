//! A request body that can be sent again. The frames taken from the
//! agent's body are kept, up to [`REPLAY_LIMIT`] bytes, so that a request
//! whose pooled connection was closed before any response can be resent on
//! a new connection with the same body (see `send`). A body larger than
//! that is streamed as usual and cannot be resent.
//!
//! Invariant: only the newest attempt reads the agent's body; an attempt
//! replays the kept frames in order, then takes further frames from the
//! agent's body (keeping them while under the limit). An older attempt
//! that is polled again fails, so two attempts never split one body.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::{Body, BoxError};

/// The most request body bytes kept for a resend.
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

/// The agent's body, shared by the attempts to send it.
#[derive(Clone)]
pub(crate) struct Replayable {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Replayable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayable").finish_non_exhaustive()
    }
}

struct State {
    inner: Body,
    /// Every frame taken from `inner` so far, while `keeping`.
    kept: Vec<Kept>,
    kept_bytes: usize,
    /// False once a frame was taken and not kept (over the limit), or the
    /// response has begun: no further attempt can be made.
    keeping: bool,
    /// The newest attempt's number.
    attempt: u64,
}

/// A kept frame (no `Debug`: it holds body bytes).
enum Kept {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Kept {
    fn frame(&self) -> Frame<Bytes> {
        match self {
            Kept::Data(d) => Frame::data(d.clone()),
            Kept::Trailers(t) => Frame::trailers(t.clone()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Kept::Data(d) => d.len(),
            Kept::Trailers(_) => 0,
        }
    }
}

impl Replayable {
    pub(crate) fn new(inner: Body) -> Self {
        let state = State { inner, kept: Vec::new(), kept_bytes: 0, keeping: true, attempt: 0 };
        Replayable { state: Arc::new(Mutex::new(state)) }
    }

    /// A body for a new attempt: the kept frames, then the rest of the
    /// agent's body. `None` when a frame was not kept (the body was over
    /// [`REPLAY_LIMIT`]) or [`Replayable::settle`] was called.
    pub(crate) fn attempt(&self) -> Option<Body> {
        let mut state = self.state.lock().ok()?;
        if !state.keeping {
            return None;
        }
        state.attempt += 1;
        Some(Attempt { state: Arc::clone(&self.state), attempt: state.attempt, pos: 0 }.boxed_unsync())
    }

    /// Whether a further attempt can be made (the body was kept whole so
    /// far).
    pub(crate) fn resendable(&self) -> bool {
        self.state.lock().is_ok_and(|state| state.keeping)
    }

    /// Stops keeping frames: a response has begun, so there will be no
    /// further attempt. The frames kept so far stay for the current
    /// attempt, which may still be replaying them.
    pub(crate) fn settle(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.keeping = false;
        }
    }
}

/// One attempt's body.
struct Attempt {
    state: Arc<Mutex<State>>,
    attempt: u64,
    /// Kept frames this attempt has sent.
    pos: usize,
}

/// The error an attempt's body ends with when a newer attempt has replaced
/// it (its connection failed; it is never read again in practice).
#[derive(Debug, thiserror::Error)]
#[error("the request body went to a newer attempt")]
struct Superseded;

impl HttpBody for Attempt {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Ok(mut state) = this.state.lock() else { return Poll::Ready(Some(Err(Box::new(Superseded)))) };
        if state.attempt != this.attempt {
            return Poll::Ready(Some(Err(Box::new(Superseded))));
        }
        if let Some(kept) = state.kept.get(this.pos) {
            this.pos += 1;
            return Poll::Ready(Some(Ok(kept.frame())));
        }
        let polled = Pin::new(&mut state.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && state.keeping
        {
            let kept = match (frame.data_ref(), frame.trailers_ref()) {
                (Some(d), _) => Some(Kept::Data(d.clone())),
                (None, Some(t)) => Some(Kept::Trailers(t.clone())),
                _ => None,
            };
            match kept {
                Some(k) if state.kept_bytes + k.len() <= REPLAY_LIMIT => {
                    state.kept_bytes += k.len();
                    state.kept.push(k);
                    this.pos += 1;
                }
                _ => {
                    // Over the limit: this body cannot be sent again, and
                    // nothing kept is needed (this attempt has sent it all).
                    state.keeping = false;
                    state.kept = Vec::new();
                    state.kept_bytes = 0;
                    this.pos = 0;
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match self.state.lock() {
            Ok(state) if state.attempt == self.attempt => self.pos >= state.kept.len() && state.inner.is_end_stream(),
            _ => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        let Ok(state) = self.state.lock() else { return SizeHint::default() };
        let pending: u64 = state.kept.iter().skip(self.pos).map(|k| k.len() as u64).sum();
        let inner = state.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(pending));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(pending));
        }
        hint
    }
}
