//! Purposes as Check needs them (legal basis, direct-marketing flag), cached in memory.
//!
//! The tenants service owns purposes and pushes every change through its outbox to
//! ApplyPurposes, which reaches *one* consents replica. So with a [`PurposeBook`] (the
//! store's `purposes` table, shared by the replicas) that replica writes the change
//! there — only if newer than what is stored, so a late redelivery never reinstalls an
//! older rule — and bumps the tenant's change generation; every replica's watcher
//! sees the generation move within `vern_kit::changes::WATCH_EVERY` and drops the
//! tenant's cached purposes, which are then read again from the table. A purpose the
//! table lacks is asked of the tenants service once and stored. The hot path never
//! calls another service or the database on a hit.
//!
//! Without a book (unit tests) the cache alone keeps what ApplyPurposes tells it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use vern_kit::changes::Watcher;

use crate::domain::PurposeRule;
use crate::error::ConsentError;

/// Where purposes come from when neither the cache nor the book has them.
#[async_trait::async_trait]
pub trait PurposeSource: Send + Sync + 'static {
    /// The rule of purpose `key` of `tenant`; `None` when it does not exist.
    async fn fetch(&self, tenant: &str, key: &str) -> Result<Option<PurposeRule>, ConsentError>;

    /// [`PurposeSource::fetch`] with the definition's version (its `update_time`, µs).
    async fn fetch_versioned(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<Versioned>, ConsentError> {
        Ok(self.fetch(tenant, key).await?.map(|rule| Versioned {
            rule: Some(rule),
            version: 0,
        }))
    }
}

/// A purpose definition and its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioned {
    /// The rule; `None` when the purpose was deleted.
    pub rule: Option<PurposeRule>,
    /// When the definition last changed in the tenants service, µs since the epoch.
    pub version: i64,
}

/// The purposes every replica shares (the store).
#[async_trait::async_trait]
pub trait PurposeBook: Send + Sync + 'static {
    /// The stored definition of `key`; `None` when none was ever stored.
    async fn load(&self, tenant: &str, key: &str) -> Result<Option<Versioned>, ConsentError>;
    /// Stores the definitions newer than the stored ones, in one transaction that
    /// bumps the tenant's generation; says which were applied.
    async fn save(
        &self,
        tenant: &str,
        definitions: &[(String, Versioned)],
    ) -> Result<Vec<bool>, ConsentError>;
}

/// The change-generation scope of a tenant's purposes.
pub fn scope(tenant: &str) -> String {
    format!("purposes/{tenant}")
}

/// How long a cached purpose is trusted before the book is read again (a belt: the
/// generations already bring every change within a second).
pub const TTL: Duration = Duration::from_secs(60);
/// How long "no such purpose" is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// Most entries kept; beyond it the cache starts over.
const MAX_ENTRIES: usize = 100_000;

/// One cached purpose: what is known, its version, since when.
type Entry = (Option<PurposeRule>, i64, Instant);
/// tenant → key → entry. Nested so that a hit looks up by `&str` without allocating
/// (Check passes here on every call).
type Entries = HashMap<String, HashMap<String, Entry>>;

/// The cache.
pub struct PurposeCache {
    entries: RwLock<Entries>,
    source: Arc<dyn PurposeSource>,
    book: Option<Arc<dyn PurposeBook>>,
    watcher: RwLock<Option<Arc<Watcher>>>,
}

impl std::fmt::Debug for PurposeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurposeCache").finish_non_exhaustive()
    }
}

impl PurposeCache {
    /// An empty cache over `source`, in memory only.
    pub fn new(source: Arc<dyn PurposeSource>) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            source,
            book: None,
            watcher: RwLock::new(None),
        }
    }

    /// An empty cache over `book` (shared by the replicas) and `source`.
    pub fn with_book(source: Arc<dyn PurposeSource>, book: Arc<dyn PurposeBook>) -> Self {
        Self {
            book: Some(book),
            ..Self::new(source)
        }
    }

    /// Follows the change generations in `db` (the book's database): a tenant's
    /// cached purposes are dropped when another replica changes them.
    pub fn watch(self: &Arc<Self>, db: vern_kit::db::Db) {
        let cache = Arc::downgrade(self);
        let watcher = Watcher::spawn(
            db,
            Arc::new(move |scope: &str| {
                if let (Some(cache), Some(tenant)) =
                    (cache.upgrade(), scope.strip_prefix("purposes/"))
                {
                    cache.forget_tenant(tenant);
                }
            }),
        );
        if let Ok(mut w) = self.watcher.write() {
            *w = Some(watcher);
        }
    }

    fn generation(&self, tenant: &str) -> i64 {
        self.watcher
            .read()
            .ok()
            .and_then(|w| w.as_ref().map(|w| w.of(&scope(tenant))))
            .unwrap_or(0)
    }

    /// The rule of `key` in `tenant`, from the cache, the book or the source.
    pub async fn get(&self, tenant: &str, key: &str) -> Result<Option<PurposeRule>, ConsentError> {
        if let Ok(entries) = self.entries.read()
            && let Some((rule, _, at)) = entries.get(tenant).and_then(|t| t.get(key))
        {
            let ttl = if rule.is_some() { TTL } else { NEGATIVE_TTL };
            if at.elapsed() < ttl {
                return Ok(*rule);
            }
        }
        // A change noticed while reading must not be overwritten by what was read.
        let before = self.generation(tenant);
        let found = match &self.book {
            Some(book) => match book.load(tenant, key).await? {
                Some(stored) => Some(stored),
                None => self.fetch_and_store(book.as_ref(), tenant, key).await?,
            },
            None => self.source.fetch_versioned(tenant, key).await?,
        };
        let found = found.unwrap_or(Versioned {
            rule: None,
            version: 0,
        });
        if self.generation(tenant) == before {
            self.put(tenant, key, found);
        }
        Ok(found.rule)
    }

    async fn fetch_and_store(
        &self,
        book: &dyn PurposeBook,
        tenant: &str,
        key: &str,
    ) -> Result<Option<Versioned>, ConsentError> {
        let Some(fetched) = self.source.fetch_versioned(tenant, key).await? else {
            // Not stored: it may still be created (and announced) later.
            return Ok(None);
        };
        let applied = book.save(tenant, &[(key.to_owned(), fetched)]).await?;
        if applied.first() == Some(&true) {
            Ok(Some(fetched))
        } else {
            // A newer definition arrived meanwhile.
            book.load(tenant, key).await
        }
    }

    /// ApplyPurposes: stores the definitions newer than the known ones (in the book
    /// when there is one) and caches them; returns how many were applied.
    pub async fn apply(
        &self,
        tenant: &str,
        definitions: Vec<(String, Versioned)>,
    ) -> Result<usize, ConsentError> {
        let applied = match &self.book {
            Some(book) => book.save(tenant, &definitions).await?,
            None => vec![true; definitions.len()],
        };
        let mut n = 0;
        for ((key, def), applied) in definitions.into_iter().zip(applied) {
            if applied && self.put(tenant, &key, def) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Caches what is known about a purpose unless a newer version is cached; says
    /// whether it was.
    pub fn put(&self, tenant: &str, key: &str, def: Versioned) -> bool {
        let Ok(mut entries) = self.entries.write() else {
            return false;
        };
        if entries.values().map(HashMap::len).sum::<usize>() >= MAX_ENTRIES {
            entries.clear();
        }
        let slot = entries.entry(tenant.to_owned()).or_default();
        if slot.get(key).is_some_and(|(_, v, _)| *v > def.version) {
            return false;
        }
        slot.insert(key.to_owned(), (def.rule, def.version, Instant::now()));
        true
    }

    /// Drops every cached purpose of `tenant` (another replica changed one).
    pub fn forget_tenant(&self, tenant: &str) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LegalBasis;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize);

    #[async_trait::async_trait]
    impl PurposeSource for Counting {
        async fn fetch(
            &self,
            _tenant: &str,
            key: &str,
        ) -> Result<Option<PurposeRule>, ConsentError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok((key == "newsletter").then_some(PurposeRule {
                legal_basis: LegalBasis::Consent,
                direct_marketing: true,
            }))
        }
    }

    #[tokio::test]
    async fn hits_do_not_call_the_source_and_notifications_update() {
        let source = Arc::new(Counting(AtomicUsize::new(0)));
        let cache = PurposeCache::new(source.clone());
        assert!(cache.get("t", "newsletter").await.expect("get").is_some());
        assert!(cache.get("t", "newsletter").await.expect("get").is_some());
        assert_eq!(source.0.load(Ordering::SeqCst), 1, "second call is a hit");
        assert!(
            cache
                .get("other-tenant", "newsletter")
                .await
                .expect("get")
                .is_some()
        );
        assert_eq!(source.0.load(Ordering::SeqCst), 2, "keyed by tenant");
        let changed = PurposeRule {
            legal_basis: LegalBasis::LegitimateInterests,
            direct_marketing: true,
        };
        assert!(cache.put(
            "t",
            "newsletter",
            Versioned {
                rule: Some(changed),
                version: 10
            }
        ));
        // An older announcement is ignored.
        assert!(!cache.put(
            "t",
            "newsletter",
            Versioned {
                rule: None,
                version: 9
            }
        ));
        assert_eq!(
            cache.get("t", "newsletter").await.expect("get"),
            Some(changed)
        );
        assert_eq!(source.0.load(Ordering::SeqCst), 2);
    }
}
