//! The deadline of an upstream connection's reads and writes: one timer for all of
//! them, made at the first that waits and parked with the connection
//! ([`super::Idle`]). One that completes at its first poll (a write into a socket with
//! room, the usual case of a request head) needs no timer and no reading of the clock.
//!
//! A timer of its own for each read (`tokio::time::timeout`) was registered with the
//! runtime when the read waited, usually once a request for the response head, and
//! removed again when it completed: ~500 instructions a request (issue #18). Reset to a
//! later deadline, a registered timer only records it; Tokio moves it in its wheel
//! once the earlier deadline comes. A timer left registered after its read wakes no
//! one until its deadline passes, and then at most the task that last waited on it
//! (whose waker it keeps until then, or until the connection's next wait).

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A connection's timer (none until a read or write first waits). The client's I/O is
/// one operation at a time (`&mut self`), so one timer serves all of it.
#[derive(Default)]
pub struct Deadline(Option<Pin<Box<Sleep>>>);

impl Deadline {
    /// `fut`'s output, or `None` when `limit` passed first, counted from the first poll
    /// that found `fut` pending (as `tokio::time::timeout` counts from its call).
    pub async fn within<F: Future>(&mut self, limit: Duration, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        let mut armed = false;
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if !armed {
                armed = true;
                self.arm(limit);
            }
            match &mut self.0 {
                Some(sleep) => sleep.as_mut().poll(cx).map(|()| None),
                None => Poll::Ready(None),
            }
        })
        .await
    }

    /// Sets the deadline `limit` from now, making the timer on the first wait.
    fn arm(&mut self, limit: Duration) {
        let at = Instant::now() + limit;
        match &mut self.0 {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.0 = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_wait_gets_its_own_limit_from_one_timer() {
        let mut d = Deadline::default();
        assert_eq!(d.within(Duration::ZERO, async { 7 }).await, Some(7));
        assert!(d.0.is_none(), "a ready future needs no timer");
        let never = std::future::pending::<()>();
        assert_eq!(d.within(Duration::from_millis(20), never).await, None);
        // The timer has fired: it is armed again for the next wait, which completes.
        let soon = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            3
        };
        assert_eq!(d.within(Duration::from_secs(5), soon).await, Some(3));
        // A later wait with a shorter limit is not held to the longer one before it.
        let start = std::time::Instant::now();
        let never = std::future::pending::<()>();
        assert_eq!(d.within(Duration::from_millis(30), never).await, None);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        // And a longer one after a shorter one is not cut at the shorter.
        let later = async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            5
        };
        assert_eq!(d.within(Duration::from_secs(5), later).await, Some(5));
        // A future that is itself a long sleep is cut at the limit.
        let too_late = tokio::time::sleep(Duration::from_secs(5));
        assert_eq!(d.within(Duration::from_millis(20), too_late).await, None);
    }
}
