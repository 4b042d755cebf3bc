//! The tenant's purposes as records need them: which keys exist and which data
//! categories each declares. A record may only be processed for purposes its
//! controller declared (Art. 5(1)(b), Art. 30(1)(b)), and a record of a special or
//! possibly special category only for a purpose that declares that category — which
//! the tenants service accepts only with an Art. 9(2) condition.
//!
//! Asked of the tenants service once per tenant (one ListPurposes, every page) and
//! kept for [`TTL`]; a key the cached catalogue lacks is asked again at most once per
//! [`REFRESH_AT_MOST_EVERY`], so a purpose created a moment ago is accepted at once and
//! a run of bad rows does not become a call per record. Purposes are never deleted, so
//! the cache errs only by missing new ones; a category removed from a purpose shows
//! within [`TTL`]. While the tenants service cannot be asked, a cached catalogue of any
//! age is used; with none the call is UNAVAILABLE.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vern_kit::auth::ServiceTokens;
use vern_kit::client::{TracedChannel, request};
use vern_proto::common::v1 as common;
use vern_proto::tenants::v1 as tpb;

use crate::domain::DataCategory;
use crate::error::SubjectError;

/// Each purpose key of a tenant with the data categories it declares.
pub type Catalogue = HashMap<String, Vec<DataCategory>>;

/// How long a tenant's catalogue is trusted.
pub const TTL: Duration = Duration::from_secs(30);
/// How often a catalogue lacking a named key is fetched again.
pub const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// Most tenants kept; beyond it the cache starts over.
const MAX_TENANTS: usize = 10_000;
/// Most pages of ListPurposes read (1,000 purposes each).
const MAX_PAGES: usize = 100;

/// Where catalogues come from.
#[async_trait::async_trait]
pub trait PurposeSource: Send + Sync + 'static {
    /// Every purpose of `tenant` with its data categories.
    async fn catalogue(&self, tenant: &str) -> Result<Catalogue, SubjectError>;
}

/// A fixed catalogue, the same for every tenant (tests, tools).
#[derive(Debug, Clone, Default)]
pub struct FixedPurposes(pub Catalogue);

#[async_trait::async_trait]
impl PurposeSource for FixedPurposes {
    async fn catalogue(&self, _tenant: &str) -> Result<Catalogue, SubjectError> {
        Ok(self.0.clone())
    }
}

struct Entry {
    catalogue: Arc<Catalogue>,
    at: Instant,
}

/// The cached catalogues.
pub struct PurposeDirectory {
    source: Arc<dyn PurposeSource>,
    cache: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for PurposeDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurposeDirectory").finish_non_exhaustive()
    }
}

impl PurposeDirectory {
    /// A directory asking `source`.
    pub fn new(source: Arc<dyn PurposeSource>) -> Self {
        Self {
            source,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, tenant: &str) -> Option<(Arc<Catalogue>, Duration)> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(tenant)
            .map(|e| (e.catalogue.clone(), e.at.elapsed()))
    }

    /// The catalogue of `tenant`, fresh enough to judge `keys`.
    pub async fn catalogue<'k>(
        &self,
        tenant: &str,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<Arc<Catalogue>, SubjectError> {
        let cached = self.cached(tenant);
        if let Some((catalogue, age)) = &cached {
            let complete = keys.into_iter().all(|k| catalogue.contains_key(k));
            if age < &TTL && (complete || age < &REFRESH_AT_MOST_EVERY) {
                return Ok(catalogue.clone());
            }
        }
        match self.source.catalogue(tenant).await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= MAX_TENANTS {
                        cache.clear();
                    }
                    cache.insert(
                        tenant.to_owned(),
                        Entry {
                            catalogue: fresh.clone(),
                            at: Instant::now(),
                        },
                    );
                }
                Ok(fresh)
            }
            Err(e) => match cached {
                Some((catalogue, _)) => {
                    tracing::warn!(error = %e, "purposes not available; using the cached ones");
                    Ok(catalogue)
                }
                None => Err(e),
            },
        }
    }
}

/// Catalogues from the tenants service, with service tokens.
pub struct TenantsPurposes {
    channel: TracedChannel,
    tokens: ServiceTokens,
}

impl TenantsPurposes {
    /// Asks the tenants service on `channel`.
    pub fn new(channel: TracedChannel, tokens: ServiceTokens) -> Self {
        Self { channel, tokens }
    }
}

#[async_trait::async_trait]
impl PurposeSource for TenantsPurposes {
    async fn catalogue(&self, tenant: &str) -> Result<Catalogue, SubjectError> {
        let token = self
            .tokens
            .for_tenant(tenant)
            .map_err(|_| unavailable("service token"))?;
        let mut client = tpb::tenant_service_client::TenantServiceClient::new(self.channel.clone());
        let (mut out, mut page_token) = (Catalogue::new(), String::new());
        for _ in 0..MAX_PAGES {
            let mut req = request(
                tpb::ListPurposesRequest {
                    page_size: 1000,
                    page_token,
                },
                &token,
            )
            .map_err(|_| unavailable("request"))?;
            req.set_timeout(Duration::from_secs(3));
            let page = client
                .list_purposes(req)
                .await
                .map_err(|_| unavailable("ListPurposes"))?
                .into_inner();
            for p in page.purposes {
                let categories = p
                    .data_categories
                    .iter()
                    .filter_map(|c| common::DataCategory::try_from(*c).ok())
                    .filter_map(crate::api::category_of)
                    .collect();
                out.insert(p.key, categories);
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        Ok(out)
    }
}

fn unavailable(what: &'static str) -> SubjectError {
    tracing::warn!(dependency = "tenants", what, "dependency unavailable");
    SubjectError::Api(vern_kit::ApiError::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        calls: AtomicUsize,
        keys: Mutex<Vec<&'static str>>,
    }

    #[async_trait::async_trait]
    impl PurposeSource for Counting {
        async fn catalogue(&self, _tenant: &str) -> Result<Catalogue, SubjectError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let keys = self.keys.lock().map(|k| k.clone()).unwrap_or_default();
            Ok(keys
                .into_iter()
                .map(|k| (k.to_owned(), vec![DataCategory::Contact]))
                .collect())
        }
    }

    #[tokio::test]
    async fn one_fetch_serves_many_records_and_a_new_purpose_is_seen_at_once() {
        let source = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            keys: Mutex::new(vec!["invoicing"]),
        });
        let dir = PurposeDirectory::new(source.clone());
        for _ in 0..100 {
            let c = dir.catalogue("t", ["invoicing"]).await.expect("catalogue");
            assert!(c.contains_key("invoicing"));
        }
        assert_eq!(source.calls.load(Ordering::SeqCst), 1, "cached");
        // An unknown key within the refresh interval: no new call per record.
        for _ in 0..100 {
            let c = dir.catalogue("t", ["payroll"]).await.expect("catalogue");
            assert!(!c.contains_key("payroll"));
        }
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
        source.keys.lock().expect("lock").push("payroll");
        tokio::time::sleep(REFRESH_AT_MOST_EVERY + Duration::from_millis(50)).await;
        let c = dir.catalogue("t", ["payroll"]).await.expect("catalogue");
        assert!(c.contains_key("payroll"), "created since: fetched again");
        assert_eq!(source.calls.load(Ordering::SeqCst), 2);
    }
}
