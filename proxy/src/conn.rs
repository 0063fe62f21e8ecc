//! Agent connections' life: the HTTP/1.1 server settings (head limits and
//! the header read timeout), activity for the idle timeout, and the phases
//! of a graceful shutdown each connection task watches.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{mpsc, watch};
use tracing::debug;

use airlock_policy::Limits;

use crate::Body;

/// Signals a connection task watches, and the guard that keeps shutdown
/// waiting for it.
#[derive(Clone, Debug)]
pub(crate) struct ConnGuard {
    pub(crate) shutdown: watch::Receiver<Phase>,
    _alive: mpsc::Sender<()>,
    /// The connection's slot under `max_connections`, held until the
    /// connection (and any tunnel or interception it became) ends.
    _slot: Arc<tokio::sync::OwnedSemaphorePermit>,
}

impl ConnGuard {
    /// A guard watching `shutdown`, keeping `alive` (shutdown waits until
    /// every sender is gone) and the connection's `slot`.
    pub(crate) fn new(
        shutdown: watch::Receiver<Phase>,
        alive: mpsc::Sender<()>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Self {
        ConnGuard { shutdown, _alive: alive, _slot: Arc::new(slot) }
    }
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
