//! One read of a tenant's feed for all its watchers.
//!
//! Every WatchEvents stream used to read the database itself, once a second and on
//! every commit of any tenant: 1,100 watchers doubled another tenant's GetSubject
//! latency. Now a process has one [`FeedHub`]: while a tenant has watchers, one task
//! reads that tenant's new events (after the last seq it has seen) when this process
//! appended to the tenant's feed, and at least every [`POLL`] for events other
//! replicas appended, and broadcasts them to the tenant's watchers, which filter them
//! themselves ([`crate::store::EventFilter::matches`]). A watcher subscribes before it
//! catches up from the database, and takes only events after the last seq it sent, so
//! nothing falls between the two (seqs of one tenant commit in order, without gaps).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

use crate::model::Event;
use crate::service::{Rights, WATCH_BATCH};
use crate::store::EventFilter;

/// How often the hub reads the watched tenants' feeds when nothing woke it: events
/// committed by another replica reach watchers within this time.
pub const POLL: Duration = Duration::from_secs(1);

/// Batches a slow watcher may fall behind before it catches up from the database.
const BACKLOG: usize = 64;

/// New events of one tenant, in seq order.
pub type Batch = Arc<Vec<Event>>;

struct TenantFeed {
    /// The last seq broadcast.
    last: i64,
    tx: broadcast::Sender<Batch>,
}

#[derive(Default)]
struct State {
    tenants: HashMap<String, TenantFeed>,
    /// Tenants this process appended to since the last read.
    woken: HashSet<String>,
    running: bool,
}

/// The feeds of the watched tenants of this process.
#[derive(Default)]
pub struct FeedHub {
    state: Mutex<State>,
    kick: Notify,
}

impl std::fmt::Debug for FeedHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedHub").finish_non_exhaustive()
    }
}

impl FeedHub {
    /// Says that `tenant`'s feed grew (called after the commit).
    pub fn wake(&self, tenant: &str) {
        if let Ok(mut s) = self.state.lock()
            && s.tenants.contains_key(tenant)
        {
            s.woken.insert(tenant.to_owned());
            self.kick.notify_one();
        }
    }

    /// Watchers of `tenant` in this process.
    pub fn watchers(&self, tenant: &str) -> usize {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.tenants.get(tenant).map(|f| f.tx.receiver_count()))
            .unwrap_or(0)
    }

    /// Tenants with a read task's attention (for tests: 0 once every watcher left and
    /// the task noticed).
    pub fn tenants(&self) -> usize {
        self.state.lock().map(|s| s.tenants.len()).unwrap_or(0)
    }

    /// A receiver of `tenant`'s new events; the events up to now are the caller's to
    /// read from the database (after subscribing). Starts the read task if needed.
    pub async fn subscribe(
        self: &Arc<Self>,
        rights: &Rights,
        tenant: &str,
    ) -> Result<broadcast::Receiver<Batch>, crate::error::RightsError> {
        // Read before the lock: the head only bounds what the task broadcasts first,
        // and a watcher catches up from the database anyway.
        let head = rights.store().feed_head(tenant).await?;
        let Ok(mut s) = self.state.lock() else {
            return Err(crate::error::RightsError::Corrupt("feed hub lock"));
        };
        let rx = match s.tenants.get(tenant) {
            Some(feed) => feed.tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(BACKLOG);
                s.tenants
                    .insert(tenant.to_owned(), TenantFeed { last: head, tx });
                rx
            }
        };
        if !s.running {
            s.running = true;
            tokio::spawn(run(self.clone(), rights.clone()));
        }
        Ok(rx)
    }
}

/// The read task: runs while any tenant has watchers.
async fn run(hub: Arc<FeedHub>, rights: Rights) {
    let mut next_poll = tokio::time::Instant::now() + POLL;
    loop {
        let polled = tokio::select! {
            _ = hub.kick.notified() => false,
            _ = tokio::time::sleep_until(next_poll) => true,
        };
        if polled {
            next_poll = tokio::time::Instant::now() + POLL;
        }
        // What to read: the tenants this process appended to, and on each poll every
        // watched tenant (another replica may have appended). Tenants without
        // watchers are forgotten; with none, the task ends.
        let todo: Vec<(String, i64)> = {
            let Ok(mut s) = hub.state.lock() else { return };
            s.tenants.retain(|_, f| f.tx.receiver_count() > 0);
            if s.tenants.is_empty() {
                s.running = false;
                s.woken.clear();
                return;
            }
            let woken = std::mem::take(&mut s.woken);
            s.tenants
                .iter()
                .filter(|(t, _)| polled || woken.contains(*t))
                .map(|(t, f)| (t.clone(), f.last))
                .collect()
        };
        for (tenant, mut last) in todo {
            loop {
                let page = match rights
                    .list_events(&tenant, &EventFilter::default(), last, WATCH_BATCH)
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the feed for watchers failed; retrying");
                        break;
                    }
                };
                let more = page.more;
                if let Some(end) = page.items.last().map(|e| e.seq) {
                    last = end;
                    let Ok(mut s) = hub.state.lock() else { return };
                    if let Some(feed) = s.tenants.get_mut(&tenant) {
                        feed.last = end;
                        // No receiver left: nothing to tell.
                        let _ = feed.tx.send(Arc::new(page.items));
                    }
                }
                if !more {
                    break;
                }
            }
        }
    }
}
