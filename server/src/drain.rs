//! Draining response streams at shutdown. tonic's graceful shutdown lets
//! requests that have not started answering finish, but a response stream
//! already sending can be cut when the listener stops (seen as a connection
//! reset by the client). So on SIGTERM the server first waits, up to the
//! grace period, until every response stream it opened has ended, and only
//! then stops the listeners.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio_stream::Stream;

/// Response streams currently open.
static OPEN: AtomicUsize = AtomicUsize::new(0);

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
