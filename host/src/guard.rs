//! The crash-loop guard of one plugin: counts its VM failures and the time spent
//! rebuilding VMs after failures, and pauses rebuilds for a while when either goes past
//! its bound within a sliding window. Counting time matters as much as counting
//! failures: a VM that takes 0.5 s to start (a WAF compiling its rules) can be made to
//! fail only twice a second, far below any failure count, yet each failure costs a core
//! half a second.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bounds of a [`CrashGuard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// The sliding window.
    pub window: Duration,
    /// More VM failures than this within the window trip the guard.
    pub max_failures: usize,
    /// More time than this spent rebuilding VMs after failures, within the window,
    /// trips the guard.
    pub rebuild_budget: Duration,
    /// How long a tripped guard refuses rebuilds.
    pub cooldown: Duration,
}

#[derive(Default)]
struct State {
    failures: VecDeque<Instant>,
    rebuilds: VecDeque<(Instant, Duration)>,
    cooldown_until: Option<Instant>,
}

/// Counts failures and rebuild time; answers whether a VM may be rebuilt now.
pub struct CrashGuard {
    limits: GuardLimits,
    state: Mutex<State>,
}

/// Why the guard refuses a rebuild: it tripped, and for how much longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tripped {
    /// Time left before rebuilds are allowed again.
    pub remaining: Duration,
}

impl CrashGuard {
    /// A guard with these bounds.
    pub fn new(limits: GuardLimits) -> CrashGuard {
        CrashGuard {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Its bounds.
    pub fn limits(&self) -> GuardLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A VM failed. True when this trips the guard.
    pub fn failed(&self) -> bool {
        let now = Instant::now();
        let mut s = self.lock();
        s.failures.push_back(now);
        self.update(&mut s, now)
    }

    /// A VM was rebuilt after a failure, in `took`. True when this trips the guard.
    pub fn rebuilt(&self, took: Duration) -> bool {
        let now = Instant::now();
        let mut s = self.lock();
        s.rebuilds.push_back((now, took));
        self.update(&mut s, now)
    }

    /// May a VM be rebuilt now?
    pub fn check(&self) -> Result<(), Tripped> {
        let now = Instant::now();
        let mut s = self.lock();
        match s.cooldown_until {
            Some(until) if now < until => Err(Tripped {
                remaining: until - now,
            }),
            Some(_) => {
                s.cooldown_until = None;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Time spent rebuilding within the window now.
    pub fn rebuild_time(&self) -> Duration {
        let now = Instant::now();
        let mut s = self.lock();
        self.expire(&mut s, now);
        s.rebuilds.iter().map(|(_, d)| *d).sum()
    }

    fn expire(&self, s: &mut State, now: Instant) {
        let window = self.limits.window;
        while s
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            s.failures.pop_front();
        }
        while s
            .rebuilds
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > window)
        {
            s.rebuilds.pop_front();
        }
    }

    fn update(&self, s: &mut State, now: Instant) -> bool {
        self.expire(s, now);
        if s.cooldown_until.is_some_and(|u| now < u) {
            return false;
        }
        let rebuilding: Duration = s.rebuilds.iter().map(|(_, d)| *d).sum();
        if s.failures.len() > self.limits.max_failures || rebuilding > self.limits.rebuild_budget {
            s.failures.clear();
            s.rebuilds.clear();
            s.cooldown_until = Some(now + self.limits.cooldown);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max_failures: usize, budget_ms: u64) -> CrashGuard {
        CrashGuard::new(GuardLimits {
            window: Duration::from_secs(10),
            max_failures,
            rebuild_budget: Duration::from_millis(budget_ms),
            cooldown: Duration::from_millis(200),
        })
    }

    #[test]
    fn trips_on_failure_count() {
        let g = guard(3, 10_000);
        for _ in 0..3 {
            assert!(!g.failed());
        }
        assert!(g.check().is_ok());
        assert!(g.failed());
        assert!(g.check().is_err());
    }

    #[test]
    fn trips_on_rebuild_time_and_cools_down() {
        let g = guard(50, 1000);
        assert!(!g.rebuilt(Duration::from_millis(600)));
        assert!(g.check().is_ok());
        assert!(g.rebuilt(Duration::from_millis(600)));
        let t = g.check().unwrap_err();
        assert!(t.remaining <= Duration::from_millis(200));
        std::thread::sleep(Duration::from_millis(250));
        assert!(g.check().is_ok());
        assert_eq!(g.rebuild_time(), Duration::ZERO);
    }
}
