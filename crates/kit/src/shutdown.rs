//! Background work told of shutdown. A service's loops (the retention scheduler)
//! subscribe; the server says when shutdown begins (with the drain of in-flight calls)
//! and, before it returns, waits for the tracked tasks to record where they stopped, so
//! a rollout leaves nothing half-recorded.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The shutdown of one server: a signal and the tasks it waits for.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    begun: Arc<OnceLock<Instant>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
            tasks: Arc::default(),
            begun: Arc::default(),
        }
    }
}

impl Shutdown {
    /// A shutdown not yet begun.
    pub fn new() -> Self {
        Self::default()
    }

    /// Turns true when shutdown begins. Its sender closes, without turning true, when
    /// every clone of this is dropped.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Has [`Shutdown::finish`] wait for `task`.
    pub fn track(&self, task: JoinHandle<()>) {
        match self.tasks.lock() {
            Ok(mut t) => t.push(task),
            Err(poisoned) => poisoned.into_inner().push(task),
        }
    }

    /// Tells every subscriber that shutdown began.
    pub fn begin(&self) {
        self.begun.get_or_init(Instant::now);
        self.tx.send_replace(true);
    }

    /// Begins (if not yet) and waits for the tracked tasks until `grace` after the
    /// beginning (they run while calls drain, within the same grace).
    pub async fn finish(&self, grace: Duration) {
        self.begin();
        let grace = self
            .begun
            .get()
            .map_or(grace, |t| grace.saturating_sub(t.elapsed()));
        let tasks = match self.tasks.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let all = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                grace_seconds = grace.as_secs(),
                "shutdown grace elapsed; background work cut off"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finish_signals_and_waits_for_tracked_tasks() {
        let s = Shutdown::new();
        let mut rx = s.subscribe();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        s.track(tokio::spawn(async move {
            let _ = rx.wait_for(|v| *v).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }));
        s.finish(Duration::from_secs(5)).await;
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
        // A task that never ends is cut off at the grace, counted from the beginning.
        s.track(tokio::spawn(std::future::pending::<()>()));
        let t = Instant::now();
        s.finish(Duration::from_millis(50)).await;
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
