//! Enforcing `[limits]`: request head size, idle agent connections and
//! tunnels, the upstream's silence while it sends a body, and the phases
//! of a graceful shutdown. (Body size, timeouts on connect and on the
//! response head, connection count and decoded size are enforced where
//! those happen.)

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tracing::debug;

use airlock_policy::{Denial, DenialCode, Limits};

use crate::Body;

/// Refuses a request whose head is over `max_header_bytes` or
/// `max_headers` with `431 request_too_large`. (hyper enforces twice these
/// as a hard cap and answers a bare 431 above it.)
pub(crate) fn check_head<B>(req: &Request<B>, limits: &Limits) -> Result<(), Denial> {
    let count = req.headers().len();
    let uri = req.uri();
    let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let bytes = req.method().as_str().len()
        + target
        + req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>();
    if count > limits.max_headers {
        return Err(Denial::new(
            DenialCode::RequestTooLarge,
            format!("the request has {count} header fields; airlock accepts at most {}", limits.max_headers),
            "send fewer header fields",
        ));
    }
    if bytes > limits.max_header_bytes {
        return Err(Denial::new(
            DenialCode::RequestTooLarge,
            format!("the request head is {bytes} bytes; airlock accepts at most {}", limits.max_header_bytes),
            "send smaller headers (a cookie or token may have grown too large)",
        ));
    }
    Ok(())
}

/// An HTTP/1.1 server builder with the head limits and the header read
/// timeout (slowloris) applied. hyper's own caps are twice airlock's, so
/// heads between the two get airlock's JSON denial and only absurd ones a
/// bare 431.
pub(crate) fn h1_builder(limits: &Limits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size((limits.max_header_bytes * 2).max(8192))
        .max_headers(limits.max_headers * 2);
    b
}

/// The `413 request_too_large` denial for a body over `limit` bytes.
pub(crate) fn body_too_large(limit: u64) -> Denial {
    Denial {
        status: Some(413),
        ..Denial::new(
            DenialCode::RequestTooLarge,
            format!("the request body is larger than this route's limit of {limit} bytes"),
            "send a smaller body, or ask the operator to raise max_request_body for this route",
        )
    }
}

/// What an agent connection is doing, for its idle timeout: requests in
/// flight (a response body still streaming counts) and when the last one
/// ended.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` at the last request's start or end.
    last: AtomicU64,
    epoch: Instant,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity { in_flight: AtomicUsize::new(0), last: AtomicU64::new(0), epoch: Instant::now() })
    }

    /// Marks the connection (or relay) active now.
    pub(crate) fn touch(&self) {
        self.last.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Marks a request in flight until the guard drops.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(Arc::clone(self))
    }

    /// Wraps one request's handler for a `service_fn`: the request is in
    /// flight from now until its response body is done.
    pub(crate) fn track<F: Future<Output = Response<Body>>>(
        self: &Arc<Self>,
        handler: F,
    ) -> impl Future<Output = Result<Response<Body>, Infallible>> + use<F> {
        let in_flight = self.begin();
        async move { Ok(handler.await.map(|body| Tracked::wrap(body, in_flight))) }
    }

    /// Resolves once the connection has had no request in flight for
    /// `timeout`.
    pub(crate) async fn idle(&self, timeout: Duration) {
        loop {
            let since = self.epoch.elapsed().saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)));
            if self.in_flight.load(Ordering::Acquire) == 0 && since >= timeout {
                return;
            }
            // Look again when the timeout could next be reached.
            tokio::time::sleep(timeout.saturating_sub(since).max(Duration::from_millis(100))).await;
        }
    }
}

/// Where the proxy is in its life, as each connection task sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Serving,
    /// Shutting down: finish what is in flight, take nothing new.
    Draining,
    /// The grace period is over: drop whatever is still open, so its audit
    /// record (`complete: false`) is written before the log is flushed.
    Closing,
}

/// Resolves once the proxy has reached `phase` (or is gone).
pub(crate) async fn reached(phase: &mut watch::Receiver<Phase>, want: Phase) {
    let _ = phase.wait_for(|p| *p >= want).await;
}

/// Resolves once the proxy reaches [`Phase::Closing`] (the end of the
/// shutdown grace period); never, without a shutdown signal to watch.
pub(crate) async fn closing(phase: Option<watch::Receiver<Phase>>) {
    match phase {
        Some(mut phase) => reached(&mut phase, Phase::Closing).await,
        None => std::future::pending().await,
    }
}

/// Drives a server connection until it ends, the proxy shuts down, or it
/// has had no request in flight for `idle`. In the last two cases it is
/// asked to finish in-flight requests and take no new ones; when the proxy
/// then reaches [`Phase::Closing`] it is dropped (`None`).
pub(crate) async fn until_done<C: Future>(
    conn: C,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    mut phase: watch::Receiver<Phase>,
    activity: &Activity,
    idle: Duration,
) -> Option<C::Output> {
    tokio::pin!(conn);
    let idled = tokio::select! {
        r = conn.as_mut() => return Some(r),
        () = reached(&mut phase, Phase::Draining) => false,
        () = activity.idle(idle) => {
            debug!("idle connection closed");
            true
        }
    };
    graceful_shutdown(conn.as_mut());
    // An idle connection whose client ignores the close (an HTTP/2 client
    // that never answers GOAWAY keeps its connection, and its slot under
    // `max_connections`, for ever) is dropped once it has stayed idle a
    // little longer.
    let give_up = async {
        if idled {
            activity.idle(IDLE_CLOSE_WAIT).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = conn => Some(r),
        () = reached(&mut phase, Phase::Closing) => {
            debug!("connection cut off at the end of the shutdown grace period");
            None
        }
        () = give_up => {
            debug!("idle connection did not close when asked; dropped");
            None
        }
    }
}

/// How long an idle connection asked to close may take to do so.
const IDLE_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Relays bytes both ways between `a` and `b` until either side closes,
/// no byte has moved for `idle`, or `until` resolves. Returns the bytes
/// moved each way when the relay ended by a close.
pub(crate) async fn relay<A, B>(a: A, b: B, idle: Duration, until: impl Future<Output = ()>) -> Option<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut a = Touching { inner: a, activity: Arc::clone(&activity) };
    let mut b = Touching { inner: b, activity: Arc::clone(&activity) };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut a, &mut b) => r.ok(),
        () = activity.idle(idle) => {
            debug!(?idle, "tunnel closed: nothing moved either way");
            None
        }
        () = until => None,
    }
}

/// A stream that marks its relay active whenever bytes arrive.
struct Touching<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Touching<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Touching<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request in flight; see [`Activity::begin`].
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it is done.
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl Tracked {
    fn wrap(inner: Body, guard: InFlight) -> Body {
        use http_body_util::BodyExt;
        Tracked { inner, _guard: guard }.boxed_unsync()
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
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

/// The error a silent upstream body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?} while sending the body")]
pub(crate) struct UpstreamSilent(Duration);

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
