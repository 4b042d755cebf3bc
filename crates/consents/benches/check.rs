//! Check evaluation without I/O: the decision for a stored state, per legal basis, and
//! the purpose cache hit that precedes it.
//!
//! `cargo bench -p vern-consents --bench check`

use std::hint::black_box;
use std::sync::Arc;

use chrono::{Duration, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use vern_consents::domain::{
    ConsentAction, ConsentState, LatestEvent, LegalBasis, PurposeRule, SubjectStatus,
};
use vern_consents::error::ConsentError;
use vern_consents::purposes::{PurposeCache, PurposeSource};

struct Fixed;

#[async_trait::async_trait]
impl PurposeSource for Fixed {
    async fn fetch(&self, _tenant: &str, _key: &str) -> Result<Option<PurposeRule>, ConsentError> {
        Ok(Some(PurposeRule {
            legal_basis: LegalBasis::Consent,
            direct_marketing: true,
        }))
    }
}

fn bench(c: &mut Criterion) {
    let now = Utc::now();
    let grant = LatestEvent {
        event_id: "0192f0c1-7a2b-7c3d-8e4f-000000000001".into(),
        action: ConsentAction::Grant,
        occur_time: now - Duration::days(30),
        expires_at: Some(now + Duration::days(300)),
    };
    let mut granted = ConsentState::default();
    granted.apply(&grant);
    let consent = PurposeRule {
        legal_basis: LegalBasis::Consent,
        direct_marketing: true,
    };
    let li = PurposeRule {
        legal_basis: LegalBasis::LegitimateInterests,
        direct_marketing: false,
    };
    c.bench_function("check consent granted", |b| {
        b.iter(|| black_box(&granted).check(Some(black_box(&consent)), SubjectStatus::Active, now))
    });
    let none = ConsentState::default();
    c.bench_function("check legitimate interest, no objection", |b| {
        b.iter(|| black_box(&none).check(Some(black_box(&li)), SubjectStatus::Active, now))
    });
    c.bench_function("check restricted subject", |b| {
        b.iter(|| black_box(&granted).check(Some(&consent), SubjectStatus::Restricted, now))
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let cache = PurposeCache::new(Arc::new(Fixed));
    rt.block_on(cache.get("kultur-oslo", "newsletter"))
        .expect("fill");
    c.bench_function("purpose cache hit", |b| {
        b.iter(|| {
            rt.block_on(cache.get(black_box("kultur-oslo"), black_box("newsletter")))
                .expect("hit")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
