//! What Check reads, kept in memory: per (tenant, subject) the subject's state and all of
//! its consent states, filled from the database on a miss (one read per subject, not per
//! subject and purpose) and, at start, for the first subjects of the store.
//!
//! Correctness rests on two rules, both kept by [`super::ConsentStore`]:
//! - every write to `subject_states` or `consent_states` calls [`CheckCache::invalidate`]
//!   for its subject **after** the write finished. The write runs in a task of its own
//!   (`vern_kit::audit::in_own_task`, which carries the call's audit scope in and out),
//!   so a cancelled call still completes its write and then invalidates: no commit can
//!   land after its invalidation;
//! - a fill carries the epoch read **before** its database read, and is dropped when any
//!   invalidation happened since. Fill and invalidation take the same lock, so a read
//!   that started before a commit can never put the pre-commit state back.
//!
//! On PostgreSQL, shared by replicas, a third rule: every such write also announces the
//! subject in its transaction (`vern_kit::notify::publish`); each replica's listener
//! invalidates on delivery (in commit order), and the cache is read and filled only
//! while the listener is known to be at most `CACHE_MAX_AGE` behind (its heartbeat). A
//! lost listener connection clears the cache, and so does every (re)established LISTEN,
//! which voids any fill whose read began while notifications could be missed.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::{ConsentState, SubjectStatus, status_for};

use super::CheckRow;

/// Subjects kept before the cache starts over (about 150 bytes each).
pub const MAX_SUBJECTS: usize = 1_000_000;

#[derive(Debug, Clone)]
struct Entry {
    /// `None`: the subject was never notified (Check answers SUBJECT_UNKNOWN).
    subject: Option<SubjectRows>,
}

/// What the database holds about one subject: its state, the purposes its processing
/// is restricted for, and every consent state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRows {
    /// The subject's state.
    pub status: SubjectStatus,
    /// While ACTIVE: the purposes restricted (Art. 18).
    pub restricted_purposes: Vec<String>,
    /// Every consent state of the subject; a purpose absent has nothing recorded.
    pub consents: Vec<(String, ConsentState)>,
}

impl SubjectRows {
    /// What Check needs for `purpose`.
    pub fn for_purpose(&self, purpose: &str) -> CheckRow {
        let consent = self
            .consents
            .iter()
            .find(|(p, _)| p == purpose)
            .map(|(_, state)| state.clone())
            .unwrap_or_default();
        CheckRow {
            subject: status_for(self.status, &self.restricted_purposes, purpose),
            consent,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    epoch: u64,
    len: usize,
    tenants: HashMap<String, HashMap<String, Entry>>,
}

/// The cache; see the module docs.
#[derive(Debug)]
pub struct CheckCache {
    inner: RwLock<Inner>,
    max_subjects: usize,
}

/// What the cache knows about one (subject, purpose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// Not in the cache: read the database.
    Miss,
    /// The subject was never notified.
    Unknown,
    /// The subject's state and its consent state for the purpose.
    Row(CheckRow),
}

/// How a store's Checks were answered, per subject asked (BatchCheck counts each
/// distinct id), since the store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Answered from the cache (a subject cached as never notified included).
    pub hits: u64,
    /// Read from the database: not cached, or the cache unusable now or off.
    pub misses: u64,
}

/// The running counts behind [`CacheStats`], shared by a store's clones. Relaxed: a
/// statistic, ordering nothing.
#[derive(Debug, Default)]
pub struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Counters {
    /// Records `hits` subjects answered from the cache and `misses` read from the
    /// database.
    pub fn record(&self, hits: usize, misses: usize) {
        // Every Check passes here: no contended add when there is nothing to add.
        if hits > 0 {
            self.hits
                .fetch_add(u64::try_from(hits).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        if misses > 0 {
            self.misses
                .fetch_add(u64::try_from(misses).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    /// The counts now.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

impl CheckCache {
    /// An empty cache of at most `max_subjects` subjects.
    pub fn new(max_subjects: usize) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            max_subjects: max_subjects.max(1),
        }
    }

    /// The epoch to pass to [`CheckCache::fill`]; read it before the database read.
    pub fn epoch(&self) -> u64 {
        self.inner.read().map_or(u64::MAX, |i| i.epoch)
    }

    /// What is cached about (`subject`, `purpose`) of `tenant`.
    pub fn get(&self, tenant: &str, subject: &str, purpose: &str) -> Cached {
        let Ok(inner) = self.inner.read() else {
            return Cached::Miss;
        };
        let Some(e) = inner.tenants.get(tenant).and_then(|t| t.get(subject)) else {
            return Cached::Miss;
        };
        match &e.subject {
            None => Cached::Unknown,
            Some(rows) => Cached::Row(rows.for_purpose(purpose)),
        }
    }

    /// Subjects held now.
    pub fn len(&self) -> usize {
        self.inner.read().map_or(0, |i| i.len)
    }

    /// Whether the cache holds no subject.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the cache is full (a start-up fill stops there).
    pub fn is_full(&self) -> bool {
        self.len() >= self.max_subjects
    }

    /// Remembers what a database read that began at `epoch` found for `subjects` (a
    /// subject absent from `rows` was never notified). Ignored when an invalidation
    /// happened since `epoch`.
    pub fn fill(
        &self,
        epoch: u64,
        tenant: &str,
        subjects: &[String],
        rows: &HashMap<String, SubjectRows>,
    ) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        if inner.epoch != epoch {
            return;
        }
        if inner.len + subjects.len() > self.max_subjects {
            inner.tenants.clear();
            inner.len = 0;
        }
        let mut added = 0;
        let map = inner.tenants.entry(tenant.to_owned()).or_default();
        for s in subjects {
            // The same epoch means nothing changed since: the rows are current.
            let entry = Entry {
                subject: rows.get(s).cloned(),
            };
            if map.insert(s.clone(), entry).is_none() {
                added += 1;
            }
        }
        inner.len += added;
    }

    /// Forgets everything (another replica's writes may have been missed).
    pub fn clear(&self) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        inner.epoch = inner.epoch.wrapping_add(1);
        inner.tenants.clear();
        inner.len = 0;
    }

    /// Forgets `subject` of `tenant`; call after a committed change of its state or of
    /// any of its consent states.
    pub fn invalidate(&self, tenant: &str, subject: &str) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        inner.epoch = inner.epoch.wrapping_add(1);
        let removed = inner
            .tenants
            .get_mut(tenant)
            .and_then(|t| t.remove(subject))
            .is_some();
        if removed {
            inner.len -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: SubjectStatus) -> CheckRow {
        CheckRow {
            subject: status,
            consent: ConsentState::default(),
        }
    }

    fn rows(status: SubjectStatus, purposes: &[&str]) -> SubjectRows {
        let granted = ConsentState {
            last_grant_time: Some(chrono::Utc::now()),
            ..ConsentState::default()
        };
        SubjectRows {
            status,
            restricted_purposes: vec![],
            consents: purposes
                .iter()
                .map(|p| ((*p).to_owned(), granted.clone()))
                .collect(),
        }
    }

    #[test]
    fn fills_hits_and_invalidates() {
        let c = CheckCache::new(10);
        let subjects = vec!["s1".to_owned(), "s2".to_owned()];
        let data = HashMap::from([("s1".to_owned(), rows(SubjectStatus::Active, &["p"]))]);
        assert_eq!(c.get("t", "s1", "p"), Cached::Miss);
        c.fill(c.epoch(), "t", &subjects, &data);
        let Cached::Row(hit) = c.get("t", "s1", "p") else {
            panic!("filled")
        };
        assert!(hit.consent.last_grant_time.is_some());
        assert_eq!(
            c.get("t", "s1", "other"),
            Cached::Row(row(SubjectStatus::Active)),
            "a purpose without a state has nothing recorded"
        );
        assert_eq!(c.get("t", "s2", "p"), Cached::Unknown, "never notified");
        assert_eq!(c.get("u", "s1", "p"), Cached::Miss, "per tenant");
        c.invalidate("t", "s1");
        assert_eq!(c.get("t", "s1", "p"), Cached::Miss);
        assert_eq!(c.get("t", "s2", "p"), Cached::Unknown, "others stay");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_restricted_purpose_reads_restricted_and_the_others_do_not() {
        let c = CheckCache::new(10);
        let mut r = rows(SubjectStatus::Active, &["news", "crm"]);
        r.restricted_purposes = vec!["news".to_owned()];
        let data = HashMap::from([("s1".to_owned(), r)]);
        c.fill(c.epoch(), "t", &["s1".to_owned()], &data);
        let subject = |p| match c.get("t", "s1", p) {
            Cached::Row(row) => row.subject,
            other => panic!("filled: {other:?}"),
        };
        assert_eq!(subject("news"), SubjectStatus::Restricted);
        assert_eq!(subject("crm"), SubjectStatus::Active);
    }

    #[test]
    fn a_fill_that_raced_an_invalidation_is_dropped() {
        let c = CheckCache::new(10);
        let subjects = vec!["s1".to_owned()];
        let before = c.epoch();
        // A write commits and invalidates while the read is in flight …
        c.invalidate("t", "s1");
        // … so the read's (possibly pre-commit) answer must not be kept.
        let stale = HashMap::from([("s1".to_owned(), rows(SubjectStatus::Active, &[]))]);
        c.fill(before, "t", &subjects, &stale);
        assert_eq!(c.get("t", "s1", "p"), Cached::Miss);
    }

    #[test]
    fn counters_add_up() {
        let c = Counters::default();
        assert_eq!(c.stats(), CacheStats::default());
        c.record(3, 0);
        c.record(0, 2);
        c.record(1, 1);
        assert_eq!(c.stats(), CacheStats { hits: 4, misses: 3 });
    }

    #[test]
    fn bounded() {
        let c = CheckCache::new(2);
        let data = HashMap::new();
        for s in ["a", "b", "c"] {
            c.fill(c.epoch(), "t", &[s.to_owned()], &data);
        }
        let known = ["a", "b", "c"]
            .iter()
            .filter(|s| c.get("t", s, "p") != Cached::Miss)
            .count();
        assert!(known <= 2 && c.get("t", "c", "p") == Cached::Unknown);
        assert!(c.len() <= 2);
    }
}
