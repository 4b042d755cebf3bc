//! Seeding through the public API: a tenant, a consent purpose and a legitimate-interest
//! purpose, subjects in the consents service's projection (ApplySubjectStates in batches,
//! as the subjects service's outbox delivers them), and consent events for part of them.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::sync::Semaphore;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use vern_proto::common::v1::{DataCategory, LegalBasis};
use vern_proto::consents::v1 as cpb;
use vern_proto::tenants::v1 as tpb;

use crate::env::{Env, bearer};

/// The consent purpose (direct marketing).
pub const CONSENT_PURPOSE: &str = "newsletter";
/// The legitimate-interest purpose.
pub const LI_PURPOSE: &str = "analytics";
/// Subjects per ApplySubjectStates call.
const STATE_BATCH: usize = 1000;

/// What was seeded.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// The tenant.
    pub tenant: String,
    /// The subject ids.
    pub subjects: Arc<Vec<String>>,
    /// Consent events recorded.
    pub consent_events: usize,
    /// Seconds the seeding took.
    pub secs: f64,
}

/// Tokens a benchmark calls with.
#[derive(Clone)]
pub struct Tokens {
    /// platform-admin, no tenant.
    pub admin: MetadataValue<Ascii>,
    /// tenant-admin of the tenant (purposes).
    pub setup: MetadataValue<Ascii>,
    /// service role of the tenant (the consents service's subject projection), for the
    /// suite's internal listener only: the gateway refuses the role.
    pub service: MetadataValue<Ascii>,
    /// integration of the tenant: the CRM calling Check and RecordConsent.
    pub crm: MetadataValue<Ascii>,
    /// The crm token without the "Bearer " prefix.
    pub crm_raw: String,
}

impl Tokens {
    /// Mints the tokens for `tenant`.
    pub fn mint(env: &Env, tenant: &str) -> anyhow::Result<Self> {
        let crm_raw = env.token(&["integration"], Some(tenant))?;
        Ok(Self {
            admin: bearer(&env.token(&["platform-admin"], None)?)?,
            setup: bearer(&env.token(&["tenant-admin"], Some(tenant))?)?,
            service: bearer(&env.token(&["service"], Some(tenant))?)?,
            crm: bearer(&crm_raw)?,
            crm_raw,
        })
    }
}

/// `msg` with `token` as its authorization.
pub fn authed<T>(msg: T, token: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", token.clone());
    r
}

/// A progress bar on stderr (hidden when `show` is false).
pub fn bar(len: u64, what: &str, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{what:<10} {{bar:40}} {{pos}}/{{len}}  {{per_sec}}  eta {{eta}}"
    )) {
        b.set_style(style);
    }
    b
}

/// Creates a fresh tenant with the two purposes; returns its id and tokens.
pub async fn tenant(channel: &Channel, env: &Env) -> anyhow::Result<(String, Tokens)> {
    let tenant = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let tokens = Tokens::mint(env, &tenant)?;
    let mut tenants = tpb::tenant_service_client::TenantServiceClient::new(channel.clone());
    tenants
        .create_tenant(authed(
            tpb::CreateTenantRequest {
                tenant_id: tenant.clone(),
                name: "Benchmark department".into(),
                org_number: "989990748".into(),
                dpo_email: "dpo@example.test".into(),
                ..Default::default()
            },
            &tokens.admin,
        ))
        .await
        .context("CreateTenant")?;
    for (key, basis, interest) in [
        (CONSENT_PURPOSE, LegalBasis::Consent, ""),
        (
            LI_PURPOSE,
            LegalBasis::LegitimateInterests,
            "understanding how members use our services",
        ),
    ] {
        tenants
            .create_purpose(authed(
                tpb::CreatePurposeRequest {
                    key: key.into(),
                    description: format!("{key} (benchmark)"),
                    legal_basis: basis as i32,
                    data_categories: vec![DataCategory::Contact as i32],
                    legitimate_interest: interest.into(),
                    direct_marketing: key == CONSENT_PURPOSE,
                    ..Default::default()
                },
                &tokens.setup,
            ))
            .await
            .with_context(|| format!("CreatePurpose {key}"))?;
    }
    Ok((tenant, tokens))
}

/// Registers `n` subjects in the consents service's projection (ACTIVE; every 100th
/// RESTRICTED), `STATE_BATCH` per call, 4 calls in flight, through the suite's internal
/// listener (ApplySubjectStates is service-only).
pub async fn subjects(
    env: &Env,
    tokens: &Tokens,
    n: usize,
    progress: bool,
) -> anyhow::Result<Arc<Vec<String>>> {
    let internal = env.internal_url.as_deref().context(
        "seeding subjects needs the suite's internal listener: pass --internal with --target",
    )?;
    let channel = &crate::load::connect(internal, 1).await?.remove(0);
    let ids: Arc<Vec<String>> =
        Arc::new((0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect());
    let b = bar(n as u64, "subjects", progress);
    let permits = Arc::new(Semaphore::new(4));
    let mut tasks = tokio::task::JoinSet::new();
    let now = prost_types::Timestamp::from(std::time::SystemTime::now());
    for (chunk_no, start) in (0..n).step_by(STATE_BATCH).enumerate() {
        let permit = permits.clone().acquire_owned().await?;
        let ids = ids.clone();
        let token = tokens.service.clone();
        let mut client = cpb::consent_service_client::ConsentServiceClient::new(channel.clone());
        tasks.spawn(async move {
            let end = (start + STATE_BATCH).min(ids.len());
            let changes = (start..end)
                .map(|i| cpb::SubjectStateChange {
                    subject_id: ids[i].clone(),
                    state: if i % 100 == 99 {
                        cpb::SubjectState::Restricted
                    } else {
                        cpb::SubjectState::Active
                    } as i32,
                    version: 1,
                    change_time: Some(now),
                    restricted_purposes: vec![],
                })
                .collect();
            let r = client
                .apply_subject_states(authed(
                    cpb::ApplySubjectStatesRequest {
                        changes,
                        request_id: format!("bench-seed-{chunk_no}"),
                    },
                    &token,
                ))
                .await;
            drop(permit);
            r.map(|_| (end - start) as u64)
                .map_err(|s| anyhow::anyhow!("ApplySubjectStates: {:?}: {}", s.code(), s.message()))
        });
        while let Some(done) = tasks.try_join_next() {
            b.inc(done??);
        }
    }
    while let Some(done) = tasks.join_next().await {
        b.inc(done??);
    }
    b.finish_and_clear();
    Ok(ids)
}

/// One consent event as RecordConsent takes it.
pub fn consent_request(
    subject: &str,
    purpose: &str,
    action: cpb::ConsentAction,
    request_id: String,
) -> cpb::RecordConsentRequest {
    cpb::RecordConsentRequest {
        subject_id: subject.to_owned(),
        purpose: purpose.to_owned(),
        action: action as i32,
        channel: cpb::ConsentChannel::WebForm as i32,
        notice_version: if action == cpb::ConsentAction::Grant {
            "2026-01".into()
        } else {
            String::new()
        },
        evidence: "signup-form".into(),
        request_id,
        ..Default::default()
    }
}

/// Consent events for part of the subjects: every 10th grants the consent purpose
/// (every 100th of those withdraws again) and every 50th objects to the
/// legitimate-interest purpose. 32 calls in flight.
pub async fn consents(
    channel: &Channel,
    tokens: &Tokens,
    subjects: &[String],
    progress: bool,
) -> anyhow::Result<usize> {
    use cpb::ConsentAction as A;
    let mut plan = vec![];
    for (i, s) in subjects.iter().enumerate() {
        if i % 100 == 99 {
            continue; // restricted subjects get no new events in the seed
        }
        if i % 10 == 0 {
            plan.push((s.clone(), CONSENT_PURPOSE, A::Grant));
            if i % 1000 == 0 {
                plan.push((s.clone(), CONSENT_PURPOSE, A::Withdraw));
            }
        }
        if i % 50 == 7 {
            plan.push((s.clone(), LI_PURPOSE, A::Object));
        }
    }
    let total = plan.len();
    let b = bar(total as u64, "consents", progress);
    let permits = Arc::new(Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    // Withdrawals follow their grant: ordered per subject by running them in a second pass.
    let (first, second): (Vec<_>, Vec<_>) = plan
        .into_iter()
        .enumerate()
        .partition(|(_, (_, _, a))| *a != A::Withdraw);
    for pass in [first, second] {
        for (n, (subject, purpose, action)) in pass {
            let permit = permits.clone().acquire_owned().await?;
            let token = tokens.crm.clone();
            let mut client =
                cpb::consent_service_client::ConsentServiceClient::new(channel.clone());
            tasks.spawn(async move {
                let r = client
                    .record_consent(authed(
                        consent_request(&subject, purpose, action, format!("bench-seed-c{n}")),
                        &token,
                    ))
                    .await;
                drop(permit);
                r.map(|_| ())
                    .map_err(|s| anyhow::anyhow!("RecordConsent: {:?}: {}", s.code(), s.message()))
            });
            while let Some(done) = tasks.try_join_next() {
                done??;
                b.inc(1);
            }
        }
        while let Some(done) = tasks.join_next().await {
            done??;
            b.inc(1);
        }
    }
    b.finish_and_clear();
    Ok(total)
}

/// The whole Check data set: tenant, purposes, `n` subjects and their consents.
pub async fn check_data(
    channel: &Channel,
    env: &Env,
    n: usize,
    progress: bool,
) -> anyhow::Result<(Seeded, Tokens)> {
    let started = Instant::now();
    let (tenant, tokens) = tenant(channel, env).await?;
    let subjects = subjects(env, &tokens, n, progress).await?;
    let consent_events = consents(channel, &tokens, &subjects, progress).await?;
    Ok((
        Seeded {
            tenant,
            subjects,
            consent_events,
            secs: started.elapsed().as_secs_f64(),
        },
        tokens,
    ))
}
