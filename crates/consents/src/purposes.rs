//! Purposes as Check needs them (legal basis, direct-marketing flag), cached in memory.
//!
//! The tenants service owns purposes. On a miss the cache asks it once (with a service
//! token); the tenants service pushes every change through its outbox to
//! ApplyPurposes, which updates the cache at once; a TTL bounds staleness should a
//! notification be delayed. The hot path never calls another service on a hit.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::domain::PurposeRule;
use crate::error::ConsentError;

/// Where purposes come from on a cache miss.
#[async_trait::async_trait]
pub trait PurposeSource: Send + Sync + 'static {
    /// The rule of purpose `key` of `tenant`; `None` when it does not exist.
    async fn fetch(&self, tenant: &str, key: &str) -> Result<Option<PurposeRule>, ConsentError>;
}

/// How long a fetched purpose is trusted without a notification.
pub const TTL: Duration = Duration::from_secs(60);
/// How long "no such purpose" is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// Most entries kept; beyond it the cache starts over.
const MAX_ENTRIES: usize = 100_000;

/// tenant → key → what is known and since when. Nested so that a hit looks up by
/// `&str` without allocating (Check passes here on every call).
type Entries = HashMap<String, HashMap<String, (Option<PurposeRule>, Instant)>>;

/// The cache.
pub struct PurposeCache {
    entries: RwLock<Entries>,
    source: Arc<dyn PurposeSource>,
}

impl std::fmt::Debug for PurposeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurposeCache").finish_non_exhaustive()
    }
}

impl PurposeCache {
    /// An empty cache over `source`.
    pub fn new(source: Arc<dyn PurposeSource>) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            source,
        }
    }

    /// The rule of `key` in `tenant`, from the cache or the source.
    pub async fn get(&self, tenant: &str, key: &str) -> Result<Option<PurposeRule>, ConsentError> {
        if let Ok(entries) = self.entries.read()
            && let Some((rule, at)) = entries.get(tenant).and_then(|t| t.get(key))
        {
            let ttl = if rule.is_some() { TTL } else { NEGATIVE_TTL };
            if at.elapsed() < ttl {
                return Ok(*rule);
            }
        }
        let rule = self.source.fetch(tenant, key).await?;
        self.put(tenant, key, rule);
        Ok(rule)
    }

    /// Stores what is known about a purpose (`None`: it does not exist).
    pub fn put(&self, tenant: &str, key: &str, rule: Option<PurposeRule>) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.values().map(HashMap::len).sum::<usize>() >= MAX_ENTRIES {
                entries.clear();
            }
            entries
                .entry(tenant.to_owned())
                .or_default()
                .insert(key.to_owned(), (rule, Instant::now()));
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
        cache.put("t", "newsletter", Some(changed));
        assert_eq!(
            cache.get("t", "newsletter").await.expect("get"),
            Some(changed)
        );
        assert_eq!(source.0.load(Ordering::SeqCst), 2);
    }
}
