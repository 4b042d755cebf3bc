//! Use cases of the audit service: append with a per-tenant lock and retries,
//! verification of the stored chain against the signed checkpoints, checkpointing,
//! queries and exports. No tonic types here.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use vern_kit::ApiError;
use vern_kit::context::TenantId;

use crate::chain::{Checkpoint, Failure, FailureKind, KeySet, Start, Verifier, ZERO_HASH};
use crate::domain::{
    self, AppendOutcome, EventFilter, EventInput, ExportItem, StoredEvent, Verification,
};
use crate::error::AuditError;
use crate::keys::{AuditSigner, CheckpointPolicy};
use crate::store::{AuditStore, Page};

/// Attempts of an append before giving up (another replica kept moving the head).
const MAX_ATTEMPTS: u32 = 8;
/// Events read per query while verifying.
const VERIFY_PAGE: u64 = 5000;
/// Events read per query while exporting.
const EXPORT_PAGE: u64 = 500;
/// How often the heads of followed tenants are read for events appended by other
/// replicas (one query per followed tenant, not per following export).
const FOLLOW_POLL: Duration = Duration::from_secs(1);

/// The audit service's use cases.
#[derive(Clone, Debug)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: AuditStore,
    /// Replaced when the key file changes ([`AuditLog::spawn_key_watch`]).
    signer: std::sync::RwLock<AuditSigner>,
    /// The keys checkpoints are verified with: the signer's, retired ones, and every
    /// key this process signed with before a change.
    keys: std::sync::RwLock<KeySet>,
    policy: CheckpointPolicy,
    /// One lock per tenant: appends of a tenant in this process run one at a time.
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The tenants followed by exports in this process: each wakes only its own
    /// exports, after an append here or when another replica moved its head.
    followed: std::sync::Mutex<Followed>,
    /// Reads of the key file by [`AuditLog::spawn_key_watch`] that failed (the current
    /// key was kept).
    key_reload_failures: std::sync::atomic::AtomicU64,
}

/// The followed tenants: a sender per tenant (its last known head seq), and whether
/// the task reading their heads runs.
#[derive(Debug, Default)]
struct Followed {
    heads: HashMap<String, watch::Sender<i64>>,
    polling: bool,
}

impl AuditLog {
    /// Use cases over `store`, signing checkpoints with `signer` as `policy` says and
    /// verifying them with the signer's key alone.
    pub fn new(store: AuditStore, signer: AuditSigner, policy: CheckpointPolicy) -> Self {
        let keys = KeySet::from(signer.verifying_key());
        Self::with_keys(store, signer, keys, policy)
    }

    /// Like [`AuditLog::new`], verifying checkpoints with `keys` (each by its key id;
    /// the signer's key is added).
    pub fn with_keys(
        store: AuditStore,
        signer: AuditSigner,
        mut keys: KeySet,
        policy: CheckpointPolicy,
    ) -> Self {
        keys.insert(signer.verifying_key());
        Self {
            inner: Arc::new(Inner {
                store,
                signer: std::sync::RwLock::new(signer),
                keys: std::sync::RwLock::new(keys),
                policy,
                locks: std::sync::Mutex::new(HashMap::new()),
                followed: std::sync::Mutex::new(Followed::default()),
                key_reload_failures: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &AuditStore {
        &self.inner.store
    }

    /// The current checkpoint signer.
    pub fn signer(&self) -> AuditSigner {
        match self.inner.signer.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The keys checkpoints are verified with.
    pub fn verify_keys(&self) -> KeySet {
        match self.inner.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Signs checkpoints with `signer` from now on; the previous key keeps verifying
    /// what it signed (it stays in the key set). Returns whether the key changed.
    pub fn replace_signer(&self, signer: AuditSigner) -> bool {
        let previous = self.signer();
        if previous.key_id() == signer.key_id() {
            return false;
        }
        match self.inner.keys.write() {
            Ok(mut k) => k.insert(signer.verifying_key()),
            Err(poisoned) => poisoned.into_inner().insert(signer.verifying_key()),
        }
        tracing::info!(
            previous_key_id = previous.key_id(),
            key_id = signer.key_id(),
            "audit checkpoint signing key changed; checkpoints signed before still verify (add its public key to audit.retired_public_keys before the next restart)"
        );
        match self.inner.signer.write() {
            Ok(mut s) => *s = signer,
            Err(poisoned) => *poisoned.into_inner() = signer,
        }
        true
    }

    /// How many reads of the signing key file by [`AuditLog::spawn_key_watch`] have
    /// failed (unreadable or malformed file; each kept the current key).
    pub fn key_reload_failures(&self) -> u64 {
        self.inner
            .key_reload_failures
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Re-reads the signing key file every `every` and signs with the new key when it
    /// changes (a Secret rotated in place); an unreadable or malformed file keeps the
    /// current key, is logged (once until a read succeeds again) and counted
    /// ([`AuditLog::key_reload_failures`]).
    pub fn spawn_key_watch(
        &self,
        path: std::path::PathBuf,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut complained = false;
            loop {
                tokio::time::sleep(every).await;
                match AuditSigner::from_file(&path) {
                    Ok(signer) => {
                        complained = false;
                        this.replace_signer(signer);
                    }
                    Err(e) => {
                        if !complained {
                            complained = true;
                            tracing::warn!(error = %e, "audit signing key file unreadable; keeping the current key");
                        }
                        // Counted after the current key was kept (nothing replaced it).
                        this.inner
                            .key_reload_failures
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        })
    }

    fn tenant_lock(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.inner.locks.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        locks.entry(tenant.to_owned()).or_default().clone()
    }

    /// AppendEvents: validates the whole batch (nothing is written if any event is
    /// bad), then chains the events not yet in `tenant`'s chain in one transaction.
    pub async fn append(
        &self,
        tenant: &TenantId,
        events: Vec<EventInput>,
    ) -> Result<AppendOutcome, AuditError> {
        let events = domain::validate_batch(tenant, events)?;
        if events.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let lock = self.tenant_lock(tenant.as_str());
        let _held = lock.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .inner
                .store
                .append(
                    tenant.as_str(),
                    &events,
                    &self.signer(),
                    self.inner.policy.every_events,
                )
                .await;
            match result {
                Ok(out) => {
                    vern_kit::metrics::add_audit_duplicates(out.duplicates as u64);
                    if out.appended > 0
                        && let Ok(f) = self.inner.followed.lock()
                        && let Some(head) = f.heads.get(tenant.as_str())
                    {
                        // Wakes this tenant's following exports only.
                        head.send_modify(|_| {});
                    }
                    tracing::debug!(
                        tenant = tenant.as_str(),
                        appended = out.appended,
                        duplicates = out.duplicates,
                        checkpoint = out.checkpoint.as_ref().map(|c| c.seq),
                        "audit events chained"
                    );
                    return Ok(out);
                }
                Err(e) if attempt < MAX_ATTEMPTS && retryable(&e) => {
                    tracing::debug!(
                        tenant = tenant.as_str(),
                        attempt,
                        "chain head moved; retrying"
                    );
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// GetEvent.
    pub async fn get_event(
        &self,
        tenant: &TenantId,
        event_id: &str,
    ) -> Result<StoredEvent, AuditError> {
        let id = uuid::Uuid::parse_str(event_id)
            .map_err(|_| ApiError::invalid("event_id", "must be a UUID"))?
            .hyphenated()
            .to_string();
        self.inner
            .store
            .get_event(tenant.as_str(), &id)
            .await?
            .ok_or(AuditError::EventNotFound)
    }

    /// QueryEvents: a page of `tenant`'s events matching `filter`, after `after_seq`.
    pub async fn query(
        &self,
        tenant: &TenantId,
        filter: &EventFilter,
        after_seq: i64,
        limit: u64,
    ) -> Result<Page<StoredEvent>, AuditError> {
        if let (Some(f), Some(t)) = (filter.from_micros, filter.to_micros)
            && f > t
        {
            return Err(ApiError::invalid("to", "must not be before from").into());
        }
        self.inner
            .store
            .query(tenant.as_str(), filter, after_seq, limit)
            .await
    }

    /// GetCheckpoint: the checkpoint at `seq`, or the latest when `seq` is 0.
    pub async fn checkpoint(&self, tenant: &TenantId, seq: i64) -> Result<Checkpoint, AuditError> {
        if seq < 0 {
            return Err(ApiError::invalid("seq", "must not be negative").into());
        }
        self.inner
            .store
            .checkpoint(tenant.as_str(), seq)
            .await?
            .ok_or(AuditError::CheckpointNotFound)
    }

    /// ListCheckpoints: newest first, before `before_seq`.
    pub async fn list_checkpoints(
        &self,
        tenant: &TenantId,
        before_seq: Option<i64>,
        limit: u64,
    ) -> Result<Page<Checkpoint>, AuditError> {
        self.inner
            .store
            .list_checkpoints(tenant.as_str(), before_seq, limit)
            .await
    }

    /// Signs a checkpoint of `tenant`'s head now, if events follow the latest one.
    pub async fn checkpoint_now(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<Checkpoint>, AuditError> {
        let lock = self.tenant_lock(tenant.as_str());
        let _held = lock.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .inner
                .store
                .checkpoint_head(tenant.as_str(), &self.signer())
                .await
            {
                Err(e) if attempt < MAX_ATTEMPTS && retryable(&e) => continue,
                other => return other,
            }
        }
    }

    /// Checkpoints every tenant with events after its latest checkpoint; returns how
    /// many checkpoints were made.
    pub async fn checkpoint_idle(&self) -> Result<usize, AuditError> {
        let mut made = 0;
        for tenant in self.inner.store.tenants_needing_checkpoint().await? {
            if self.checkpoint_now(&TenantId::new(tenant)).await?.is_some() {
                made += 1;
            }
        }
        Ok(made)
    }

    /// Runs [`AuditLog::checkpoint_idle`] every `policy.every` until the service is
    /// dropped.
    pub fn spawn_checkpointer(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = self.inner.policy.every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let log = AuditLog { inner };
                match log.checkpoint_idle().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(checkpoints = n, "periodic audit checkpoints"),
                    Err(e) => {
                        let e = ApiError::from(e);
                        tracing::warn!(code = ?e.code(), "periodic audit checkpoint failed");
                    }
                }
            }
        })
    }

    /// VerifyChain: recomputes `tenant`'s chain over `from_seq..=to_seq` (0: from the
    /// start / to the recorded head) from the stored events, compares every stored link
    /// and hash, every signed checkpoint in the range (and, for the whole chain, every
    /// checkpoint beyond its end: a truncated tail), and the recorded head.
    pub async fn verify(
        &self,
        tenant: &TenantId,
        from_seq: i64,
        to_seq: i64,
    ) -> Result<Verification, AuditError> {
        if from_seq < 0 {
            return Err(ApiError::invalid("from_seq", "must not be negative").into());
        }
        if to_seq < 0 || (to_seq != 0 && to_seq < from_seq) {
            return Err(ApiError::invalid("to_seq", "must be 0 or at least from_seq").into());
        }
        let t = tenant.as_str();
        let store = &self.inner.store;
        let head = store.head(t).await?;
        let from = from_seq.max(1);
        let end = if to_seq == 0 {
            head.seq
        } else {
            to_seq.min(head.seq)
        };
        if from > end && from > 1 {
            return Err(ApiError::invalid("from_seq", "is after the chain's head").into());
        }
        let anchor = if from == 1 {
            ZERO_HASH
        } else {
            match store.hash_at(t, from - 1).await? {
                Some(h) => h,
                None => {
                    return Ok(Verification {
                        failure: Some(Failure {
                            seq: from - 1,
                            kind: FailureKind::SeqGap,
                            reason: format!(
                                "seq {}, just before the range, is missing or unreadable",
                                from - 1
                            ),
                        }),
                        head_hash: ZERO_HASH,
                        checked: 0,
                        to_seq: from - 2,
                        checkpoint: None,
                    });
                }
            }
        };
        let cps_to = if to_seq == 0 { i64::MAX } else { end };
        // Read order matters while appends go on: head (above), then checkpoints, then
        // the stored maximum. A checkpoint between the verified end and that maximum
        // was made by a concurrent append; only one beyond every stored event shows a
        // cut tail.
        let checkpoints = store.checkpoints_range(t, from, cps_to).await?;
        let stored_max = store.max_seq(t).await?;
        let mut cps = checkpoints
            .into_iter()
            .filter(|c| c.seq <= end || c.seq > stored_max)
            .peekable();
        let mut v = Verifier::new(
            self.verify_keys(),
            Some(t),
            Start::At {
                seq: from,
                prev: anchor,
            },
        );
        let mut cursor = from;
        'pages: while cursor <= end {
            let rows = store.events_range(t, cursor, end, VERIFY_PAGE).await?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                match row {
                    Ok(e) => {
                        let seq = e.chained.event.seq;
                        cursor = seq + 1;
                        if !v.event(&e.chained) {
                            break 'pages;
                        }
                        while let Some(cp) = cps.next_if(|c| c.seq <= seq) {
                            if !v.checkpoint(cp) {
                                break 'pages;
                            }
                        }
                    }
                    Err(seq) => {
                        if v.next_seq() == seq {
                            v.unreadable(&format!("the event at seq {seq}"));
                        } else {
                            v.unreadable(&format!("seq {} (missing)", v.next_seq()));
                        }
                        break 'pages;
                    }
                }
            }
        }
        for cp in cps {
            if !v.checkpoint(cp) {
                break;
            }
        }
        let mut s = v.finish();
        if s.ok() {
            let max = stored_max;
            // Appends during the verification move the head: compare with it now, so
            // only rows beyond the recorded head count as inserted.
            let head_now = store.head(t).await?;
            let fail = |seq, kind, reason| Some(Failure { seq, kind, reason });
            if s.last_seq < end {
                s.failure = fail(
                    s.last_seq + 1,
                    FailureKind::SeqGap,
                    format!(
                        "seq {} is missing: the stored chain ends at seq {} but its recorded head is seq {}",
                        s.last_seq + 1,
                        s.last_seq,
                        head.seq
                    ),
                );
            } else if to_seq == 0 && max > head_now.seq {
                s.failure = fail(
                    head_now.seq + 1,
                    FailureKind::LinkMismatch,
                    format!(
                        "seq {}..={max} lie beyond the recorded head (seq {}): they were inserted",
                        head_now.seq + 1,
                        head_now.seq
                    ),
                );
            } else if to_seq == 0 && s.head_hash != head.hash {
                s.failure = fail(
                    head.seq,
                    FailureKind::LinkMismatch,
                    format!(
                        "the hash of seq {} differs from the recorded head: the head or the event was rewritten",
                        head.seq
                    ),
                );
            }
        }
        if let Some(f) = &s.failure {
            tracing::warn!(
                tenant = t,
                seq = f.seq,
                kind = f.kind.as_str(),
                "audit chain verification failed"
            );
        }
        Ok(Verification {
            head_hash: s.head_hash,
            checked: s.checked,
            to_seq: s.last_seq,
            checkpoint: s.checkpoint,
            failure: s.failure,
        })
    }

    /// ExportEvents: `tenant`'s events from `from_seq` (to `to_seq`, 0: the head at the
    /// start, or forever with `follow`), each checkpoint right after the event at its
    /// seq. The stream ends when the receiver is dropped.
    pub fn export(
        &self,
        tenant: TenantId,
        from_seq: i64,
        to_seq: i64,
        follow: bool,
    ) -> Result<mpsc::Receiver<Result<ExportItem, AuditError>>, AuditError> {
        if from_seq < 0 {
            return Err(ApiError::invalid("from_seq", "must not be negative").into());
        }
        if to_seq < 0 || (to_seq != 0 && to_seq < from_seq) {
            return Err(ApiError::invalid("to_seq", "must be 0 or at least from_seq").into());
        }
        if follow && to_seq != 0 {
            return Err(ApiError::invalid("to_seq", "must be 0 with follow").into());
        }
        let (tx, rx) = mpsc::channel(EXPORT_PAGE as usize);
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this
                .run_export(&tenant, from_seq, to_seq, follow, &tx)
                .await
            {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(rx)
    }

    async fn run_export(
        &self,
        tenant: &TenantId,
        from_seq: i64,
        to_seq: i64,
        follow: bool,
        tx: &mpsc::Sender<Result<ExportItem, AuditError>>,
    ) -> Result<(), AuditError> {
        let t = tenant.as_str();
        let store = &self.inner.store;
        let mut changes = if follow { Some(self.follow(t)?) } else { None };
        let mut cursor = from_seq.max(1);
        // Seq of the last checkpoint handled: checkpoints are made at the head, so a
        // new one always has a higher seq than every earlier one.
        let mut cp_done = cursor - 1;
        let end = match (to_seq, follow) {
            (0, true) => i64::MAX,
            (0, false) => store.head(t).await?.seq,
            (n, _) => n,
        };
        let send = |item| async { tx.send(Ok(item)).await.is_ok() };
        loop {
            if let Some(c) = changes.as_mut() {
                c.borrow_and_update();
            }
            let rows = store.events_range(t, cursor, end, EXPORT_PAGE).await?;
            let full = rows.len() as u64 == EXPORT_PAGE;
            let last = match rows.last() {
                Some(Ok(e)) => e.chained.event.seq,
                Some(Err(seq)) => *seq,
                None => cursor - 1,
            };
            let mut cps = store
                .checkpoints_range(t, cp_done + 1, last)
                .await?
                .into_iter()
                .peekable();
            // Checkpoints made after their event was sent (following exports only).
            while let Some(cp) = cps.next_if(|c| c.seq < cursor) {
                cp_done = cp.seq;
                if !send(ExportItem::Checkpoint(cp)).await {
                    return Ok(());
                }
            }
            for row in rows {
                let e = row.map_err(|_| AuditError::Corrupt("audit_events"))?;
                let seq = e.chained.event.seq;
                cursor = seq + 1;
                if !send(ExportItem::Event(Box::new(e))).await {
                    return Ok(());
                }
                while let Some(cp) = cps.next_if(|c| c.seq <= seq) {
                    cp_done = cp.seq;
                    if !send(ExportItem::Checkpoint(cp)).await {
                        return Ok(());
                    }
                }
            }
            if full {
                continue;
            }
            let Some(changes) = changes.as_mut() else {
                return Ok(());
            };
            if cursor > end {
                return Ok(());
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    // The reader forgot the tenant (it never does while this export
                    // holds its receiver): read again after a poll's time.
                    tokio::time::sleep(FOLLOW_POLL).await;
                },
                _ = tx.closed() => return Ok(()),
            }
        }
    }

    /// A receiver woken when `tenant`'s chain grows (here or on another replica);
    /// starts the task reading the followed tenants' heads if needed.
    fn follow(&self, tenant: &str) -> Result<watch::Receiver<i64>, AuditError> {
        let mut f = self
            .inner
            .followed
            .lock()
            .map_err(|_| AuditError::Corrupt("followed tenants lock"))?;
        let rx = f
            .heads
            .entry(tenant.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        if !f.polling {
            f.polling = true;
            tokio::spawn(poll_heads(self.inner.clone()));
        }
        Ok(rx)
    }
}

/// Reads the followed tenants' heads every [`FOLLOW_POLL`] and wakes their exports when
/// one moved (another replica appended); ends when nothing is followed.
async fn poll_heads(inner: Arc<Inner>) {
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        let tenants: Vec<String> = {
            let Ok(mut f) = inner.followed.lock() else {
                return;
            };
            f.heads.retain(|_, tx| tx.receiver_count() > 0);
            if f.heads.is_empty() {
                f.polling = false;
                return;
            }
            f.heads.keys().cloned().collect()
        };
        for t in tenants {
            let Ok(head) = inner.store.head(&t).await else {
                continue;
            };
            if let Ok(f) = inner.followed.lock()
                && let Some(tx) = f.heads.get(&t)
            {
                tx.send_if_modified(|seen| {
                    let moved = *seen != head.seq;
                    *seen = head.seq;
                    moved
                });
            }
        }
    }
}

/// Only a lost compare-and-set is retried here; an unavailable database is the
/// caller's to retry (the outbox relay backs off).
fn retryable(e: &AuditError) -> bool {
    matches!(e, AuditError::Conflict)
}
