//! Feedback on long start-up work (`sluice check`, `sluice run` until it serves): one
//! line per module compiled (or read from the module cache) and per filter started
//! (its `proxy_on_configure`, where the WAF loads the CRS), with how long it took, on
//! stdout for `check` (its errors stay alone on stderr) and on stderr for `run` (its
//! stdout may be the access log). When stderr is a terminal, a spinner with the running
//! time shows there while each step runs. Off unless [`enable`]d: reloads report
//! through the log instead.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// 0: off, 1: stdout, 2: stderr.
static TO: AtomicU8 = AtomicU8::new(0);

/// Where the lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Standard output (`sluice check`).
    Stdout,
    /// Standard error (`sluice run`).
    Stderr,
}

/// Turns the feedback on (to `to`) or off (`None`).
pub fn enable(to: Option<Output>) {
    TO.store(
        match to {
            None => 0,
            Some(Output::Stdout) => 1,
            Some(Output::Stderr) => 2,
        },
        Relaxed,
    );
}

/// One step under way; [`Step::finish`] prints its line.
pub struct Step {
    what: String,
    started: Instant,
    spinner: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

/// Seconds with two decimals, or milliseconds under one second.
pub fn took(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// Starts a step (`None` while feedback is off).
pub fn step(what: impl Into<String>) -> Option<Step> {
    if TO.load(Relaxed) == 0 {
        return None;
    }
    let what = what.into();
    let started = Instant::now();
    let spinner = std::io::stderr().is_terminal().then(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, label) = (stop.clone(), what.clone());
        let handle = std::thread::spawn(move || {
            const FRAMES: &[char] = &['|', '/', '-', '\\'];
            let mut i = 0;
            while !flag.load(Relaxed) {
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r\x1b[2K{} {label} {:.1} s",
                    FRAMES[i % FRAMES.len()],
                    started.elapsed().as_secs_f64()
                );
                let _ = err.flush();
                drop(err);
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        (stop, handle)
    });
    Some(Step {
        what,
        started,
        spinner,
    })
}

impl Step {
    /// Ends the step: `what: note (took)`.
    pub fn finish(mut self, note: &str) {
        let elapsed = self.started.elapsed();
        if let Some((stop, handle)) = self.spinner.take() {
            stop.store(true, Relaxed);
            let _ = handle.join();
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
        let line = format!("{}: {note} ({})", self.what, took(elapsed));
        let _ = match TO.load(Relaxed) {
            1 => writeln!(std::io::stdout(), "{line}"),
            _ => writeln!(std::io::stderr(), "{line}"),
        };
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.spinner.take() {
            stop.store(true, Relaxed);
            let _ = handle.join();
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(took(Duration::from_millis(42)), "42 ms");
        assert_eq!(took(Duration::from_millis(1234)), "1.23 s");
        enable(None);
        assert!(step("nothing").is_none());
    }
}
