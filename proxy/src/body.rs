//! Body wrappers on the way through: an upstream body that fails when the
//! upstream goes silent, and a request body whose trailer fields are
//! checked for placeholders before they go upstream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use airlock_policy::{Policy, RouteId, TenantId};

use crate::Body;
use crate::error::Error;

/// A request decided under a route of a tenant: what a trailer check
/// needs.
#[derive(Clone)]
pub(crate) struct DecidedRoute {
    pub(crate) policy: Arc<Policy>,
    pub(crate) tenant: TenantId,
    pub(crate) route: RouteId,
}

/// An upstream body that fails when the upstream goes silent for longer
/// than `timeout` (a slow drip), so the stream is aborted rather than held
/// open forever.
pub(crate) struct ReadTimeout {
    inner: Body,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl ReadTimeout {
    pub(crate) fn wrap(inner: Body, timeout: Duration) -> Body {
        use http_body_util::BodyExt;
        ReadTimeout { inner, timeout, sleep: Box::pin(tokio::time::sleep(timeout)) }.boxed_unsync()
    }
}

/// The error a silent upstream body ends with (the time it was silent).
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?} while sending the body")]
pub(crate) struct UpstreamSilent(pub(crate) Duration);

impl HttpBody for ReadTimeout {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + this.timeout;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(UpstreamSilent(this.timeout))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body whose trailer fields are checked for placeholders before
/// they go upstream (RFC 9110 §6.5: trailers are fields like headers, and
/// airlock injects only into headers). A refused trailer fails the body,
/// so the request is never completed upstream, and leaves its denial for
/// the caller.
pub(crate) struct TrailerCheck {
    inner: Body,
    route: DecidedRoute,
    refused: Arc<std::sync::Mutex<Option<Error>>>,
}

impl TrailerCheck {
    pub(crate) fn wrap(inner: Body, route: DecidedRoute, refused: Arc<std::sync::Mutex<Option<Error>>>) -> Body {
        TrailerCheck { inner, route, refused }.boxed_unsync()
    }
}

impl http_body::Body for TrailerCheck {
    type Data = bytes::Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
        {
            let fields: Vec<(&str, &[u8])> = trailers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
            let r = &self.route;
            if let Err(denial) = r.policy.check_trailers(r.tenant, r.route, &fields) {
                if let Ok(mut slot) = self.refused.lock() {
                    *slot = Some(Error::Policy(denial));
                }
                return std::task::Poll::Ready(Some(Err("the request's trailer carries a placeholder".into())));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
