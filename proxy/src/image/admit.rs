//! The bound on image requests holding a source (`[images] max_in_flight`),
//! process-wide: one over it is refused at once instead of queued, so memory held
//! for sources stays within `max_in_flight x max_source_bytes` whatever clients do.

use std::sync::atomic::{AtomicUsize, Ordering};

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// A place among the image requests in flight; freed on drop.
#[derive(Debug)]
pub struct Admitted(());

impl Drop for Admitted {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A place when fewer than `limit` image requests are in flight. The limit is read at
/// each call, so a policy swap changes it for the next request.
pub fn try_admit(limit: usize) -> Option<Admitted> {
    IN_FLIGHT
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .ok()
        .map(|_| Admitted(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_on_drop() {
        // One test touches the process-wide counter, so it cannot race another.
        let a = try_admit(2).expect("first");
        let b = try_admit(2).expect("second");
        assert!(try_admit(2).is_none());
        drop(a);
        let c = try_admit(2).expect("freed");
        assert!(try_admit(2).is_none());
        drop((b, c));
        assert!(try_admit(0).is_none());
    }
}
