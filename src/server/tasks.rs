//! The server's background tasks: started in one place
//! ([`crate::server::startup`]), each named in the logs, tracked, and
//! stopped together on shutdown.

use std::future::Future;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The background tasks of one server instance. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct BackgroundTasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl BackgroundTasks {
    /// Runs `task` until it ends or [`Self::stop`] is called; `name` is
    /// the `task` field of its log lines. A task stopped this way is
    /// dropped at its next `.await` (a database transaction it held rolls
    /// back, so durable work is picked up again later).
    pub fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tracing::debug!(task = name, "background task started");
            tokio::select! {
                () = task => tracing::debug!(task = name, "background task ended"),
                () = stop.cancelled() => tracing::debug!(task = name, "background task stopped"),
            }
        });
    }

    /// Stops every task and waits until all have ended.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// Counts its drops: a stopped task's future is dropped.
    struct Dropped(Arc<AtomicUsize>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn stop_ends_every_task_including_those_that_never_end_by_themselves() {
        let tasks = BackgroundTasks::default();
        let dropped = Arc::new(AtomicUsize::new(0));
        for name in ["forever", "also forever"] {
            let guard = Dropped(dropped.clone());
            tasks.spawn(name, async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            });
        }
        tasks.spawn("short", async {});
        tokio::time::timeout(std::time::Duration::from_secs(5), tasks.stop())
            .await
            .expect("stop returns once every task has ended");
        assert_eq!(dropped.load(Ordering::SeqCst), 2);
    }
}
