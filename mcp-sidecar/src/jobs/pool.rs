//! The render threads: one long-lived OS thread per render worker, on which every job's CPU
//! stages run.
//!
//! Tokio's blocking pool, which ran them before, hands each task to whichever of its threads
//! is idle, and the artifact writes made it keep several more than the renders need, so a
//! job's stages landed on a different thread each time, with buffers from a thread-local heap
//! last used on the other core. Here the same few threads take every job, as the bare
//! renderer's threads do, and they are named (`render-N`) in `top` and in profiles. In paired
//! runs of `bench render-baseline` the sidecar's CPU per job moved from 1.16× to 1.13× the
//! bare renderer's (standard chart) and from 2.00× to 1.84× (small chart): a small gain.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, PoisonError, mpsc},
};

type Task = Box<dyn FnOnce() + Send>;

/// A fixed set of render threads sharing one queue.
pub struct RenderPool {
    tasks: mpsc::Sender<Task>,
}

/// Why work sent to the pool gave no result.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the render threads have stopped")]
    Stopped,
    #[error("the render thread panicked: {0}")]
    Panicked(String),
}

impl RenderPool {
    /// Starts `threads` threads (at least one) named `render-N`, each with `stack_bytes` of
    /// stack. They end when the pool is dropped and the queue is empty.
    pub fn new(threads: usize, stack_bytes: usize) -> std::io::Result<Self> {
        let (tasks, queue) = mpsc::channel::<Task>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("render-{index}"))
                .stack_size(stack_bytes)
                .spawn(move || {
                    loop {
                        // The guard goes at the end of this statement: one thread waits on
                        // the queue, the others on the lock, and none holds it while working.
                        let task = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        match task {
                            Ok(task) => task(),
                            Err(mpsc::RecvError) => return,
                        }
                    }
                })?;
        }
        Ok(Self { tasks })
    }

    /// Runs `work` on a render thread and waits for its result. If the caller stops waiting,
    /// `work` still runs to its end (anything it owns, such as a permit, goes only then).
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (result, answer) = tokio::sync::oneshot::channel();
        let task: Task = Box::new(move || {
            // A panic ends this task, not the thread: the job fails with its message.
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
                panic
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned())
            });
            let _ = result.send(outcome);
        });
        self.tasks.send(task).map_err(|_| PoolError::Stopped)?;
        answer
            .await
            .map_err(|_| PoolError::Stopped)?
            .map_err(PoolError::Panicked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_same_few_named_threads_and_a_panic_fails_only_its_task() {
        let pool = RenderPool::new(2, 1024 * 1024).unwrap();
        let mut names = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let name = pool
                .run(|| std::thread::current().name().map(str::to_owned))
                .await
                .unwrap();
            names.insert(name.unwrap());
        }
        assert!(
            names.iter().all(|name| name.starts_with("render-")) && names.len() <= 2,
            "{names:?}"
        );

        let panicked = pool.run(|| -> u8 { panic!("drawing went wrong") }).await;
        assert!(
            matches!(&panicked, Err(PoolError::Panicked(message)) if message == "drawing went wrong"),
            "{panicked:?}"
        );
        assert_eq!(
            pool.run(|| 7).await.unwrap(),
            7,
            "the threads survive a panic"
        );
    }
}
