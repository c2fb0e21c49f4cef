//! The tasks that serve an HTTP/2 connection's streams: a worker serves one stream,
//! then waits for the connection's next one; at most [`MAX_IDLE`] wait at once, and
//! a worker finding that many waiting ends instead.
//!
//! A stream's future is large (Sluice's whole request loop, ~9.5 KiB). Spawned as a
//! task of its own per stream, it was built on the stack and copied into the new
//! task's allocation (6 of every 10 bytes an h2c request copied, `bench/callgrind.sh
//! H2=1`), and a task allocated, scheduled and freed. A worker builds each stream's
//! future in place in its own state, as the HTTP/1 loop does for a connection's
//! requests (issue #18). The crew knows nothing of HTTP: a job is whatever the
//! connection hands its workers.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Most workers a connection keeps waiting for its next streams (the streams it
/// served at once, up to this many). Each holds room for a stream's future (~9.5 KiB)
/// and a shell.
pub const MAX_IDLE: usize = 4;

/// A connection's workers that wait for a job.
pub struct Crew<J> {
    idle: Mutex<Idle<J>>,
}

struct Idle<J> {
    posts: Vec<Arc<Post<J>>>,
    /// The connection is gone: no worker waits any more.
    closed: bool,
}

/// Where one worker waits: the job handed to it, and its wake-up.
pub struct Post<J> {
    job: Mutex<Option<J>>,
    ready: Notify,
}

impl<J> Post<J> {
    /// A worker's post (one per worker, for all its waits).
    pub fn new() -> Arc<Self> {
        Arc::new(Post {
            job: Mutex::new(None),
            ready: Notify::new(),
        })
    }
}

impl<J> Default for Crew<J> {
    fn default() -> Self {
        Crew {
            idle: Mutex::new(Idle {
                posts: Vec::new(),
                closed: false,
            }),
        }
    }
}

impl<J> Crew<J> {
    // A poisoned lock only means a thread panicked holding it; the list is still whole
    // (no code that can panic runs under it).
    fn lock(&self) -> MutexGuard<'_, Idle<J>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `job` to a waiting worker; gives it back when none waits (the caller
    /// starts a worker with it).
    pub fn hand(&self, job: J) -> Option<J> {
        let Some(post) = self.lock().posts.pop() else {
            return Some(job);
        };
        *post.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
        // Kept as a permit if the worker is not waiting yet.
        post.ready.notify_one();
        None
    }

    /// A worker's next job, once it has finished one: `None` when the crew already
    /// has [`MAX_IDLE`] workers waiting or is closed (the worker ends).
    pub async fn next(&self, post: &Arc<Post<J>>) -> Option<J> {
        {
            let mut idle = self.lock();
            if idle.closed || idle.posts.len() >= MAX_IDLE {
                return None;
            }
            idle.posts.push(post.clone());
        }
        post.ready.notified().await;
        post.job.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Ends the crew: the waiting workers end now, the busy ones after their job.
    pub fn close(&self) {
        let posts = {
            let mut idle = self.lock();
            idle.closed = true;
            std::mem::take(&mut idle.posts)
        };
        for post in posts {
            // No job: the worker ends.
            post.ready.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A worker that adds each job it gets to `sum`.
    async fn worker(first: usize, crew: Arc<Crew<usize>>, sum: Arc<AtomicUsize>) {
        let post = Post::new();
        let mut next = Some(first);
        while let Some(job) = next {
            sum.fetch_add(job, Ordering::SeqCst);
            tokio::task::yield_now().await;
            next = crew.next(&post).await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn jobs_go_to_waiting_workers_and_close_ends_them() {
        let crew: Arc<Crew<usize>> = Arc::default();
        let sum = Arc::new(AtomicUsize::new(0));
        let mut spawned = Vec::new();
        // Eight jobs at once: no one waits yet, so each starts a worker.
        for job in 1..=8 {
            let job = crew.hand(job).expect("no worker waits yet");
            spawned.push(tokio::spawn(worker(job, crew.clone(), sum.clone())));
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(sum.load(Ordering::SeqCst), 36);
        // Only MAX_IDLE of them wait; the others ended.
        assert_eq!(crew.lock().posts.len(), MAX_IDLE);
        assert_eq!(
            spawned.iter().filter(|h| h.is_finished()).count(),
            8 - MAX_IDLE
        );
        // Jobs handed one after the other all go to a waiting worker.
        for job in [100, 200, 300] {
            assert_eq!(crew.hand(job), None);
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(sum.load(Ordering::SeqCst), 636);
        crew.close();
        for h in spawned {
            h.await.unwrap();
        }
        // Closed: a job is given back, and a worker done with one does not wait.
        assert_eq!(crew.hand(7), Some(7));
        assert_eq!(crew.next(&Post::new()).await, None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiting_worker_gets_the_job_handed_to_it() {
        let crew: Arc<Crew<usize>> = Arc::default();
        let post = Post::new();
        let mut next = Box::pin(crew.next(&post));
        assert!(futures::poll!(next.as_mut()).is_pending());
        assert_eq!(crew.hand(5), None);
        assert_eq!(next.await, Some(5));
    }
}
