//! Whether the tenant a call acts for exists and is active.
//!
//! A token's signature proves who issued it, not that the tenant it names is one of
//! vern's: an identity provider may name a department that was never created, one
//! that is suspended, or one spelled differently. [`TenantGate`] asks a
//! [`TenantDirectory`] (the tenants service, through a client the assembly provides)
//! and remembers the answer for a short time, so the hot path (Check) pays a map
//! lookup, and a suspension takes effect everywhere within that time.

use std::collections::HashMap;

use crate::auth::{Permission, Role};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

/// What the directory knows of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantStatus {
    /// Exists and operates normally.
    Active,
    /// Exists; suspended by the platform team (its calls are refused).
    Suspended,
    /// No such tenant.
    Unknown,
}

/// Where tenant statuses come from.
#[async_trait::async_trait]
pub trait TenantDirectory: Send + Sync + 'static {
    /// The status of `tenant`; an error when the directory cannot be asked now.
    async fn status(&self, tenant: &str) -> Result<TenantStatus, String>;

    /// A number that moves whenever any tenant's status changes (`None`: this
    /// directory cannot tell, and only the gate's time bound applies).
    async fn generation(&self) -> Result<Option<i64>, String> {
        Ok(None)
    }
}

/// How often a gate asks its directory whether statuses changed: a suspension is in
/// force in every process within this (plus one answer).
pub const STATUS_WATCH_EVERY: Duration = Duration::from_millis(250);

type Entries = Mutex<HashMap<String, Entry>>;
type Cache = Arc<Entries>;

/// The gates of this process, told at once when this process changes a status.
static GATES: LazyLock<Mutex<Vec<Weak<Entries>>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// Tells every gate of this process that `tenant`'s status changed (`None`: some
/// tenant's): they forget what they hold, so the next call asks the directory. Called
/// by the component that changed it, once the change is committed and before it
/// answers: the change is in force in this process from its acknowledgement.
pub fn status_changed(tenant: Option<&str>) {
    let Ok(mut gates) = GATES.lock() else { return };
    gates.retain(|weak| {
        let Some(cache) = weak.upgrade() else {
            return false;
        };
        if let Ok(mut cache) = cache.lock() {
            match tenant {
                Some(t) => {
                    cache.remove(t);
                }
                None => cache.clear(),
            }
        }
        true
    });
}

/// Why a call's tenant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TenantRefusal {
    /// The tenant does not exist.
    #[error("the token's tenant is not a tenant of this deployment")]
    Unknown,
    /// The tenant is suspended.
    #[error("the tenant is suspended: its calls are refused")]
    Suspended,
    /// The directory could not be asked and nothing recent is known.
    #[error("the tenant's status cannot be checked now, retry later")]
    Unavailable,
}

/// Whether a call of a suspended tenant still goes through: what a department must
/// keep doing while the platform has suspended it.
///
/// - its tenant admin, privacy officer and auditor may **read** (the profile, purposes
///   and the Art. 30 record, subjects, consents, retention, rights requests and
///   reports, the audit trail) — a controller stays accountable (Art. 5(2)) and the
///   platform team never reads personal data for it;
/// - its tenant admin and privacy officer may **submit and handle rights requests**
///   (verify, extend, reject, fulfil): the one-month deadline of Art. 12(3) keeps
///   running whatever the department's standing with the platform;
/// - everything else is refused: integrations (CRM, accounting) for every call, Check
///   included; every other change (subjects, consents, purposes, retention policies
///   and holds, sweeps started by hand, settings). Calls of other vern services
///   (fulfilment's erasures, scheduled sweeps, outbox deliveries) are not gated.
pub fn allowed_while_suspended(roles: &[Role], permission: Permission) -> bool {
    use Permission::*;
    let read = matches!(
        permission,
        TenantsRead
            | PurposesRead
            | SubjectsRead
            | ConsentsRead
            | RetentionRead
            | RightsRead
            | AuditRead
    );
    let rights = matches!(permission, RightsSubmit | RightsHandle);
    roles.iter().any(|&role| {
        role.grants(permission)
            && match role {
                Role::TenantAdmin | Role::PrivacyOfficer => read || rights,
                Role::Auditor => read,
                Role::PlatformAdmin | Role::Integration | Role::Service => false,
            }
    })
}

/// How long an answer is kept when the directory cannot be asked: a short outage of
/// the tenants service does not stop a department that was active a moment ago.
const STALE_GRACE: Duration = Duration::from_secs(300);
/// Most tenants remembered.
const MAX_ENTRIES: usize = 100_000;

struct Entry {
    status: TenantStatus,
    at: Instant,
}

/// Checks tenants against a directory, caching answers for `ttl`.
#[derive(Clone)]
pub struct TenantGate {
    directory: Arc<dyn TenantDirectory>,
    ttl: Duration,
    cache: Cache,
    /// One question to the directory per tenant at a time: a burst of calls (a
    /// thousand streams opening, or re-checking when an answer ages out) waits for
    /// the first one's answer instead of asking a thousand times.
    /// Per tenant, when the directory last failed to answer: calls that were waiting
    /// for that question take its failure instead of asking again one after another
    /// (during an outage each question waits out the directory's own timeout, so a
    /// burst of N calls would otherwise take N of them).
    asking: Arc<Mutex<HashMap<String, Turn>>>,
}

/// One tenant's turn to ask the directory, with when its last question failed.
type Turn = Arc<tokio::sync::Mutex<Option<Instant>>>;

impl std::fmt::Debug for TenantGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantGate")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TenantGate {
    /// A gate asking `directory`, trusting an answer for `ttl`.
    pub fn new(directory: Arc<dyn TenantDirectory>, ttl: Duration) -> Self {
        let cache: Cache = Arc::new(Mutex::new(HashMap::new()));
        if let Ok(mut gates) = GATES.lock() {
            gates.push(Arc::downgrade(&cache));
        }
        Self {
            directory,
            ttl,
            cache,
            asking: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Also asks the directory every [`STATUS_WATCH_EVERY`] whether any status changed
    /// (a suspension made by another process) and forgets everything when it did.
    /// Runs until the gate's last clone is dropped. Needs a Tokio runtime.
    pub fn watching(self) -> Self {
        let cache = Arc::downgrade(&self.cache);
        let directory = self.directory.clone();
        tokio::spawn(async move {
            let mut seen: Option<i64> = None;
            let mut failing = false;
            let mut first = true;
            loop {
                if !std::mem::take(&mut first) {
                    tokio::time::sleep(STATUS_WATCH_EVERY).await;
                }
                let Some(cache) = cache.upgrade() else { return };
                match directory.generation().await {
                    Ok(Some(now)) => {
                        failing = false;
                        if seen.is_some_and(|s| s != now)
                            && let Ok(mut cache) = cache.lock()
                        {
                            cache.clear();
                        }
                        seen = Some(now);
                    }
                    // The directory cannot tell: the time bound is all there is.
                    Ok(None) => return,
                    Err(e) if !failing => {
                        failing = true;
                        // Cached answers age out as usual (ttl); nothing to forget.
                        tracing::warn!(error = %e, "tenant status generation not available: suspensions made elsewhere take up to the status cache time");
                    }
                    Err(_) => {}
                }
            }
        });
        self
    }

    fn cached(&self, tenant: &str, now: Instant, within: Duration) -> Option<TenantStatus> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(tenant)
            .filter(|e| now.duration_since(e.at) <= within)
            .map(|e| e.status)
    }

    /// A fresh answer from the cache, if there is one (no I/O).
    pub fn check_cached(&self, tenant: &str) -> Option<Result<(), TenantRefusal>> {
        if crate::audit::is_platform_chain(tenant) {
            return Some(Ok(()));
        }
        self.cached(tenant, Instant::now(), self.ttl).map(verdict)
    }

    /// Whether calls for `tenant` may proceed. The platform chain is always open (the
    /// auth layer lets only audit reads act in it); no department can be named so.
    pub async fn check(&self, tenant: &str) -> Result<(), TenantRefusal> {
        if crate::audit::is_platform_chain(tenant) {
            return Ok(());
        }
        let now = Instant::now();
        if let Some(status) = self.cached(tenant, now, self.ttl) {
            return verdict(status);
        }
        let turn = self.asking.lock().ok().map(|mut asking| {
            if asking.len() >= MAX_ENTRIES {
                asking.retain(|_, m| Arc::strong_count(m) > 1);
            }
            asking.entry(tenant.to_owned()).or_default().clone()
        });
        let mut turn = match &turn {
            Some(m) => Some(m.lock().await),
            None => None,
        };
        // Whoever asked before this call's turn may have the answer already.
        if let Some(status) = self.cached(tenant, now, self.ttl) {
            return verdict(status);
        }
        // ...or have found the directory unable to answer since this call began: that
        // is this call's answer too.
        if turn
            .as_deref()
            .copied()
            .flatten()
            .is_some_and(|failed| failed >= now)
        {
            return match self.cached(tenant, now, STALE_GRACE) {
                Some(status) => verdict(status),
                None => Err(TenantRefusal::Unavailable),
            };
        }
        let answer = self.directory.status(tenant).await;
        if let Some(failed) = turn.as_deref_mut() {
            *failed = answer.is_err().then(Instant::now);
        }
        match answer {
            Ok(status) => {
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= MAX_ENTRIES {
                        cache.clear();
                    }
                    cache.insert(
                        tenant.to_owned(),
                        Entry {
                            status,
                            at: Instant::now(),
                        },
                    );
                }
                verdict(status)
            }
            Err(e) => {
                tracing::warn!(error = %e, "tenant status not available");
                match self.cached(tenant, now, STALE_GRACE) {
                    Some(status) => verdict(status),
                    None => Err(TenantRefusal::Unavailable),
                }
            }
        }
    }

    /// Forgets what is known of `tenant` (after this process changed its status).
    pub fn forget(&self, tenant: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(tenant);
        }
    }
}

fn verdict(status: TenantStatus) -> Result<(), TenantRefusal> {
    match status {
        TenantStatus::Active => Ok(()),
        TenantStatus::Suspended => Err(TenantRefusal::Suspended),
        TenantStatus::Unknown => Err(TenantRefusal::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Fixed {
        calls: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl TenantDirectory for Fixed {
        async fn status(&self, tenant: &str) -> Result<TenantStatus, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err("down".into());
            }
            Ok(match tenant {
                "acme" => TenantStatus::Active,
                "frozen" => TenantStatus::Suspended,
                _ => TenantStatus::Unknown,
            })
        }
    }

    #[test]
    fn a_suspended_department_still_reads_and_answers_its_subjects() {
        use Permission::*;
        let admin = [Role::TenantAdmin];
        let officer = [Role::PrivacyOfficer];
        let crm = [Role::Integration];
        assert!(allowed_while_suspended(&admin, SubjectsRead));
        assert!(allowed_while_suspended(&admin, RightsHandle));
        assert!(allowed_while_suspended(&officer, RightsSubmit));
        assert!(allowed_while_suspended(&officer, AuditRead));
        assert!(allowed_while_suspended(&[Role::Auditor], AuditRead));
        for p in [
            SubjectsRead,
            SubjectsWrite,
            ConsentsCheck,
            RightsSubmit,
            RightsEvents,
        ] {
            assert!(!allowed_while_suspended(&crm, p), "{p:?}");
        }
        for p in [
            SubjectsWrite,
            ConsentsWrite,
            PurposesManage,
            RetentionManage,
            RetentionSweep,
        ] {
            assert!(!allowed_while_suspended(&officer, p), "{p:?}");
            assert!(!allowed_while_suspended(&admin, p), "{p:?}");
        }
        assert!(!allowed_while_suspended(&officer, ConsentsCheck));
        // A permission the role lacks is not granted by the exemption.
        assert!(!allowed_while_suspended(&[Role::Auditor], SubjectsRead));
        // Several roles: any exempt one that grants the permission.
        assert!(allowed_while_suspended(
            &[Role::Integration, Role::PrivacyOfficer],
            SubjectsRead
        ));
    }

    #[tokio::test]
    async fn the_platform_chain_is_open_without_asking_the_directory() {
        let dir = Arc::new(Fixed {
            calls: AtomicUsize::new(0),
            fail: true.into(),
        });
        let gate = TenantGate::new(dir.clone(), Duration::from_millis(50));
        let platform = crate::audit::PLATFORM_CHAIN;
        assert_eq!(gate.check_cached(platform), Some(Ok(())));
        assert_eq!(gate.check(platform).await, Ok(()));
        assert_eq!(dir.calls.load(Ordering::SeqCst), 0, "never asked");
        assert_eq!(
            gate.check("ghost").await,
            Err(TenantRefusal::Unavailable),
            "departments still are"
        );
    }

    #[tokio::test]
    async fn answers_are_cached_and_survive_a_short_outage() {
        let dir = Arc::new(Fixed {
            calls: AtomicUsize::new(0),
            fail: false.into(),
        });
        let gate = TenantGate::new(dir.clone(), Duration::from_millis(50));
        assert_eq!(gate.check("acme").await, Ok(()));
        assert_eq!(gate.check("acme").await, Ok(()));
        assert_eq!(dir.calls.load(Ordering::SeqCst), 1, "cached");
        assert_eq!(gate.check("frozen").await, Err(TenantRefusal::Suspended));
        assert_eq!(gate.check("ghost").await, Err(TenantRefusal::Unknown));
        tokio::time::sleep(Duration::from_millis(60)).await;
        dir.fail.store(true, Ordering::SeqCst);
        assert_eq!(
            gate.check("acme").await,
            Ok(()),
            "stale answer during outage"
        );
        assert_eq!(
            gate.check("never-seen").await,
            Err(TenantRefusal::Unavailable)
        );
        gate.forget("acme");
        assert_eq!(gate.check("acme").await, Err(TenantRefusal::Unavailable));
    }
}

#[cfg(test)]
mod single_flight {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory that takes its time, counting questions.
    struct Slow(AtomicUsize);

    #[async_trait::async_trait]
    impl TenantDirectory for Slow {
        async fn status(&self, _tenant: &str) -> Result<TenantStatus, String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(TenantStatus::Active)
        }
    }

    #[tokio::test]
    async fn a_burst_of_calls_asks_the_directory_once_per_tenant() {
        let dir = Arc::new(Slow(AtomicUsize::new(0)));
        let gate = TenantGate::new(dir.clone(), Duration::from_secs(5));
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..500 {
            let gate = gate.clone();
            let tenant = if i % 2 == 0 { "dept-a" } else { "dept-b" };
            calls.spawn(async move { gate.check(tenant).await });
        }
        while let Some(r) = calls.join_next().await {
            assert_eq!(r.expect("task"), Ok(()));
        }
        assert_eq!(dir.0.load(Ordering::SeqCst), 2, "one question per tenant");
    }

    /// A directory that is down: each question fails after `delay`.
    struct Down(AtomicUsize, Duration);

    #[async_trait::async_trait]
    impl TenantDirectory for Down {
        async fn status(&self, _tenant: &str) -> Result<TenantStatus, String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.1).await;
            Err("the database is down".into())
        }
    }

    #[tokio::test]
    async fn a_burst_during_an_outage_waits_for_one_failed_question_not_one_each() {
        let delay = Duration::from_millis(200);
        let dir = Arc::new(Down(AtomicUsize::new(0), delay));
        let gate = TenantGate::new(dir.clone(), Duration::from_secs(5));
        let started = Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let gate = gate.clone();
            calls.spawn(async move { gate.check("dept-a").await });
        }
        while let Some(r) = calls.join_next().await {
            assert_eq!(r.expect("task"), Err(TenantRefusal::Unavailable));
        }
        // Serially, twelve questions would take 12 × 200 ms.
        assert_eq!(
            dir.0.load(Ordering::SeqCst),
            1,
            "one question for the burst"
        );
        assert!(
            started.elapsed() < delay * 4,
            "took {:?}",
            started.elapsed()
        );
        // A call after the failure asks again: the directory may be back.
        let _ = gate.check("dept-a").await;
        assert_eq!(dir.0.load(Ordering::SeqCst), 2);
    }
}
