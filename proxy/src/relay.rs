//! Byte relays: a tunnel's, or an upgraded plain-HTTP connection's, bytes
//! passed both ways until a side closes, nothing moves for the idle
//! timeout, or the shutdown grace period ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use crate::conn::{Activity, ConnGuard};

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

/// A tunnel's relay between two connected streams, logged when it ends; `guard` (the
/// agent connection's) ends it at the end of the shutdown grace period.
pub(crate) async fn pipe<A, B>(agent: A, upstream: B, idle: Duration, guard: Option<&ConnGuard>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let closing = crate::conn::closing(guard.map(|g| g.shutdown.clone()));
    if let Some((up, down)) = relay(agent, upstream, idle, closing).await {
        debug!(bytes_up = up, bytes_down = down, "tunnel closed");
    }
}
