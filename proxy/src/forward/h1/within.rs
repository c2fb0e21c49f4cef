//! A timeout that costs nothing when it is not needed: the future is polled once
//! first, and only if it cannot finish then is the timer made (and the clock read:
//! ~40-125 ns on a VM whose `rdtsc` traps). A write into a socket with room, the usual
//! case of a request head, completes at its first poll.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

/// `fut`'s output, or `None` when `limit` passed first, counted from the first poll
/// that found `fut` pending (as `tokio::time::timeout` counts from its call).
pub async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let first = poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    match first {
        Some(out) => Some(out),
        None => tokio::time::timeout(limit, fut).await.ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ready_future_needs_no_timer_and_a_pending_one_is_bounded() {
        assert_eq!(within(Duration::ZERO, async { 7 }).await, Some(7));
        let never = std::future::pending::<()>();
        assert_eq!(within(Duration::from_millis(20), never).await, None);
        let soon = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            3
        };
        assert_eq!(within(Duration::from_secs(5), soon).await, Some(3));
        let too_late = tokio::time::sleep(Duration::from_secs(5));
        assert_eq!(within(Duration::from_millis(20), too_late).await, None);
    }
}
