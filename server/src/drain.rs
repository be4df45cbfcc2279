//! Draining response streams at shutdown. tonic's graceful shutdown lets
//! requests that have not started answering finish, but a response stream
//! already sending can be cut when the listener stops (seen as a connection
//! reset by the client). So on SIGTERM the server first waits, up to the
//! grace period, until every response stream it opened has ended, and only
//! then stops the listeners.
//!
//! It also counts every call in flight (gRPC from request to trailers, HTTP
//! from request to response), so that after the listeners stop the server
//! can close once no call is left, instead of waiting on hyper to see every
//! idle connection close: a connection that never sent a request can hold
//! hyper's graceful shutdown open indefinitely (hyperium/hyper#4170).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::Stream;

/// Response streams currently open.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Calls (gRPC or HTTP) currently being answered.
static CALLS: AtomicUsize = AtomicUsize::new(0);

/// One call in flight, counted while it lives.
#[derive(Debug)]
pub(crate) struct Call(());

impl Call {
    pub(crate) fn begin() -> Self {
        CALLS.fetch_add(1, Ordering::AcqRel);
        Call(())
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        CALLS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// True when no call is being answered and no response stream is open.
pub(crate) fn idle() -> bool {
    CALLS.load(Ordering::Acquire) == 0 && OPEN.load(Ordering::Acquire) == 0
}

/// Set when shutdown begins: endless streams (Watch) end themselves.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// True once shutdown has begun.
pub(crate) fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::Acquire)
}

/// A response stream counted while it lives.
pub(crate) struct Tracked<S> {
    inner: Pin<Box<S>>,
}

impl<S> std::fmt::Debug for Tracked<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracked")
    }
}

impl<S> Tracked<S> {
    pub(crate) fn new(inner: S) -> Self {
        OPEN.fetch_add(1, Ordering::AcqRel);
        Tracked {
            inner: Box::pin(inner),
        }
    }
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S: Stream> Stream for Tracked<S> {
    type Item = S::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Waits until no response stream is open, or `limit` has passed; answers
/// how many are still open.
pub(crate) async fn wait(limit: Duration) -> usize {
    SHUTTING_DOWN.store(true, Ordering::Release);
    let deadline = Instant::now() + limit;
    loop {
        let open = OPEN.load(Ordering::Acquire);
        if open == 0 || Instant::now() >= deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The switch that cuts every [`Cut`] connection made with it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cutoff {
    /// Read on every I/O operation: one atomic load.
    cut: Arc<AtomicBool>,
    /// Wakes the operations waiting for bytes when the switch is thrown.
    token: tokio_util::sync::CancellationToken,
}

impl Cutoff {
    pub(crate) fn new() -> Self {
        Cutoff::default()
    }

    /// Cuts every connection made with this switch.
    pub(crate) fn cancel(&self) {
        self.cut.store(true, Ordering::Release);
        self.token.cancel();
    }
}

/// A connection the server can cut: once its [`Cutoff`] is thrown every read
/// and write fails (`ConnectionAborted`), so the task serving the connection
/// ends and lets go of the services it holds. Used after the grace period, or
/// once no call is left, for connections that would otherwise stay open. An
/// operation that completes costs one atomic load; only one that would wait
/// registers for the cutoff's wake-up.
pub(crate) struct Cut<T> {
    inner: T,
    cut: Arc<AtomicBool>,
    woken: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl<T> std::fmt::Debug for Cut<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cut")
    }
}

impl<T> Cut<T> {
    pub(crate) fn new(inner: T, cutoff: &Cutoff) -> Self {
        Cut {
            inner,
            cut: Arc::clone(&cutoff.cut),
            woken: Box::pin(cutoff.token.clone().cancelled_owned()),
        }
    }

    /// The error of an operation on a cut connection, if it is cut.
    fn cut_error(&self) -> Option<std::io::Error> {
        self.cut.load(Ordering::Acquire).then(aborted)
    }

    /// Runs one I/O operation on the inner connection, unless it is cut;
    /// if the operation would wait, it waits for the cutoff too (registering
    /// `cx` for its wake-up) and fails if the cutoff came.
    fn guard<R>(
        &mut self,
        cx: &mut Context<'_>,
        operation: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>>
    where
        T: Unpin,
    {
        if let Some(error) = self.cut_error() {
            return Poll::Ready(Err(error));
        }
        let polled = operation(Pin::new(&mut self.inner), cx);
        if polled.is_pending() && self.woken.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(aborted()));
        }
        polled
    }
}

/// What every operation on a cut connection answers.
fn aborted() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the server is shutting down",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for Cut<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.get_mut()
            .guard(cx, |inner, cx| inner.poll_read(cx, buf))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Cut<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut()
            .guard(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut()
            .guard(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().guard(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Cut<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// An axum listener whose connections are [`Cut`] by `cutoff`.
pub(crate) struct CutListener<L> {
    inner: L,
    cutoff: Cutoff,
}

impl<L> CutListener<L> {
    pub(crate) fn new(inner: L, cutoff: &Cutoff) -> Self {
        CutListener {
            inner,
            cutoff: cutoff.clone(),
        }
    }
}

impl<L: axum::serve::Listener> axum::serve::Listener for CutListener<L> {
    type Io = Cut<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, address) = self.inner.accept().await;
        (Cut::new(io, &self.cutoff), address)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_cut_connection_fails_a_pending_read_and_every_write() {
        let cutoff = Cutoff::new();
        let (near, mut far) = tokio::io::duplex(64);
        let mut cut = Cut::new(near, &cutoff);
        // Passes bytes both ways until cut.
        far.write_all(b"ping").await.unwrap();
        let mut buffer = [0u8; 4];
        cut.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"ping");
        cut.write_all(b"pong").await.unwrap();
        far.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"pong");
        // A read waiting for bytes that never come ends when the token is cancelled.
        let pending = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            let result = cut.read(&mut byte).await;
            (result, cut)
        });
        tokio::task::yield_now().await;
        cutoff.cancel();
        let (result, mut cut) = tokio::time::timeout(std::time::Duration::from_secs(5), pending)
            .await
            .expect("the pending read did not end when the connection was cut")
            .unwrap();
        assert_eq!(
            result.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionAborted
        );
        assert_eq!(
            cut.write_all(b"late").await.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionAborted
        );
        drop(far);
    }
}
