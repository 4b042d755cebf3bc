//! The scenarios beside Check: BatchCheck, RecordConsent, CSV import, audit, the access
//! report and `vern dev` start-up. Each reports absolute figures with the target of
//! docs/design.md's "Quality bars" where there is one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use vern_kit::config::Config;
use vern_proto::consents::v1 as cpb;

use crate::env::{Backend, Env, Host, TargetArgs};
use crate::load::{self, CallFn, percentiles, xorshift};
use crate::seed::{self, CONSENT_PURPOSE, LI_PURPOSE, authed};

/// The PostgreSQL URL variable the tests use too.
const PG_URL_VAR: &str = "VERN_TEST_DATABASE_URL";

/// Which database a write benchmark runs on.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbChoice {
    /// SQLite (WAL), as `vern dev`.
    Sqlite,
    /// PostgreSQL from --database-url or $VERN_TEST_DATABASE_URL.
    Postgres,
}

pub(crate) fn backend(choice: DbChoice, url: &Option<String>) -> anyhow::Result<Backend> {
    Ok(match choice {
        DbChoice::Sqlite => Backend::Sqlite,
        DbChoice::Postgres => Backend::Postgres(
            url.clone()
                .or_else(|| std::env::var(PG_URL_VAR).ok())
                .context("--backend postgres needs --database-url or $VERN_TEST_DATABASE_URL")?,
        ),
    })
}

fn verdict(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}

// ---------------------------------------------------------------------------------------
// BatchCheck

/// Options of `vern bench batch-check`.
#[derive(clap::Args, Debug, Clone)]
pub struct BatchCheckArgs {
    /// Subjects to seed.
    #[arg(long, default_value_t = 100_000)]
    pub subjects: usize,
    /// Subject ids per BatchCheck (at most 10,000).
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
    /// Measured calls (one at a time), after 3 unmeasured ones.
    #[arg(long, default_value_t = 20)]
    pub calls: usize,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Result of `vern bench batch-check`.
#[derive(Debug, Clone, Serialize)]
pub struct BatchCheckReport {
    /// "batch-check".
    pub scenario: &'static str,
    /// Where it ran.
    pub target: String,
    /// Subjects seeded.
    pub subjects: usize,
    /// Ids per call.
    pub batch: usize,
    /// Measured calls.
    pub calls: usize,
    /// Milliseconds per call.
    pub p50_ms: f64,
    /// See p50_ms.
    pub mean_ms: f64,
    /// See p50_ms.
    pub max_ms: f64,
    /// Subject decisions per second at the median.
    pub decisions_per_s: f64,
    /// The target (ms per call of 10,000).
    pub target_ms: f64,
}

impl BatchCheckReport {
    /// As text.
    pub fn text(&self) -> String {
        format!(
            "BatchCheck of {} ids through the gateway ({}), {} subjects, {} calls one at a time\n\
             per call: p50 {:.1} ms, mean {:.1} ms, max {:.1} ms  ({:.0} decisions/s)\n\
             target ≤ {:.0} ms per 10,000: {}\n",
            self.batch,
            self.target,
            self.subjects,
            self.calls,
            self.p50_ms,
            self.mean_ms,
            self.max_ms,
            self.decisions_per_s,
            self.target_ms,
            verdict(self.batch < 10_000 || self.p50_ms <= self.target_ms)
        )
    }
}

/// `batch` distinct random indexes below `n` (partial Fisher–Yates).
fn sample(n: usize, batch: usize, rng: &mut u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let k = batch.min(n);
    for i in 0..k {
        *rng = xorshift(*rng);
        let j = i + (*rng % (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}

/// Runs `vern bench batch-check`.
pub async fn batch_check(
    host: &dyn Host,
    config: &Config,
    args: &BatchCheckArgs,
    progress: bool,
) -> anyhow::Result<BatchCheckReport> {
    anyhow::ensure!(
        (1..=10_000).contains(&args.batch),
        "--batch must be 1..=10000"
    );
    let env = Env::start(host, config, &args.target, Backend::Sqlite).await?;
    let result = async {
        let ch = load::connect(&env.url, 1).await?.remove(0);
        let (seeded, tokens) = seed::check_data(&ch, &env, args.subjects.max(1), progress).await?;
        let mut client = cpb::consent_service_client::ConsentServiceClient::new(ch)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        let mut rng = 0x5DEE_CE66_D1CE_4E5B_u64;
        let mut samples = vec![];
        let b = seed::bar((args.calls + 3) as u64, "batches", progress);
        for i in 0..args.calls + 3 {
            let ids: Vec<String> = sample(seeded.subjects.len(), args.batch, &mut rng)
                .into_iter()
                .map(|i| seeded.subjects[i].clone())
                .collect();
            let purpose = if i % 2 == 0 {
                CONSENT_PURPOSE
            } else {
                LI_PURPOSE
            };
            let req = authed(
                cpb::BatchCheckRequest {
                    purpose: purpose.into(),
                    subject_ids: ids,
                },
                &tokens.crm,
            );
            let t0 = Instant::now();
            let r = client
                .batch_check(req)
                .await
                .map_err(|s| anyhow::anyhow!("BatchCheck: {:?}: {}", s.code(), s.message()))?;
            let dt = t0.elapsed();
            anyhow::ensure!(
                r.get_ref().results.len() == args.batch.min(seeded.subjects.len()),
                "BatchCheck answered {} results",
                r.get_ref().results.len()
            );
            if i >= 3 {
                samples.push(dt.as_nanos() as u64);
            }
            b.inc(1);
        }
        b.finish_and_clear();
        let p = percentiles(&mut samples);
        Ok(BatchCheckReport {
            scenario: "batch-check",
            target: env.label.clone(),
            subjects: seeded.subjects.len(),
            batch: args.batch.min(seeded.subjects.len()),
            calls: args.calls,
            p50_ms: p.p50_ms,
            mean_ms: p.mean_ms,
            max_ms: p.max_ms,
            decisions_per_s: if p.p50_ms > 0.0 {
                args.batch as f64 / (p.p50_ms / 1000.0)
            } else {
                0.0
            },
            target_ms: 100.0,
        })
    }
    .await;
    env.stop().await;
    result
}

// ---------------------------------------------------------------------------------------
// RecordConsent

/// Options of `vern bench record-consent`.
#[derive(clap::Args, Debug, Clone)]
pub struct RecordConsentArgs {
    /// Measured time.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// Calls in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Subjects to seed (consents are recorded for random ones).
    #[arg(long, default_value_t = 10_000)]
    pub subjects: usize,
    /// Database of the in-process suite.
    #[arg(long, value_enum, default_value_t = DbChoice::Sqlite)]
    pub backend: DbChoice,
    /// PostgreSQL URL for --backend postgres (default $VERN_TEST_DATABASE_URL).
    #[arg(long)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Result of `vern bench record-consent`.
#[derive(Debug, Clone, Serialize)]
pub struct RecordConsentReport {
    /// "record-consent".
    pub scenario: &'static str,
    /// Where it ran.
    pub target: String,
    /// Database.
    pub backend: DbChoice,
    /// Calls in flight.
    pub concurrency: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// Acknowledged RecordConsent calls per second.
    pub writes_per_s: f64,
    /// Latency, ms.
    pub p50_ms: f64,
    /// See p50_ms.
    pub p99_ms: f64,
    /// See p50_ms.
    pub p999_ms: f64,
    /// Failed calls.
    pub errors: u64,
    /// The first error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl RecordConsentReport {
    /// As text.
    pub fn text(&self) -> String {
        let mut s = format!(
            "RecordConsent through the gateway ({}), {} in flight, {:.1} s\n\
             {:.0} writes/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms\n",
            self.target,
            self.concurrency,
            self.duration_s,
            self.writes_per_s,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms
        );
        if self.errors > 0 {
            s.push_str(&format!(
                "errors: {} (first: {})\n",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        s
    }
}

/// Runs `vern bench record-consent`.
pub async fn record_consent(
    host: &dyn Host,
    config: &Config,
    args: &RecordConsentArgs,
    progress: bool,
) -> anyhow::Result<RecordConsentReport> {
    let be = backend(args.backend, &args.database_url)?;
    let env = Env::start(host, config, &args.target, be).await?;
    let result = async {
        let setup = load::connect(&env.url, 1).await?.remove(0);
        let (_tenant, tokens) = seed::tenant(&setup, &env).await?;
        let subjects = seed::subjects(&env, &tokens, args.subjects.max(1), progress).await?;
        let clients: Arc<Vec<_>> = Arc::new(
            load::connect(&env.url, env_connections(&args.target))
                .await?
                .into_iter()
                .map(cpb::consent_service_client::ConsentServiceClient::new)
                .collect(),
        );
        let token = tokens.crm.clone();
        let call: CallFn = Arc::new(move |worker, rng| {
            let mut client = clients[worker % clients.len()].clone();
            // Restricted subjects (every 100th) take consent events too.
            let subject = &subjects[(rng % subjects.len() as u64) as usize];
            let req = authed(
                seed::consent_request(
                    subject,
                    CONSENT_PURPOSE,
                    cpb::ConsentAction::Grant,
                    format!("bench-{worker}-{rng:016x}"),
                ),
                &token,
            );
            Box::pin(async move { client.record_consent(req).await.map(|_| ()) })
        });
        let b = seed::bar(1, "writing", progress);
        let mut w = load::run(
            call,
            args.concurrency,
            Duration::from_millis(500),
            args.duration,
        )
        .await;
        b.finish_and_clear();
        let p = percentiles(&mut w.latencies_ns);
        Ok(RecordConsentReport {
            scenario: "record-consent",
            target: env.label.clone(),
            backend: args.backend,
            concurrency: args.concurrency,
            duration_s: args.duration.as_secs_f64(),
            writes_per_s: w.rps(),
            p50_ms: p.p50_ms,
            p99_ms: p.p99_ms,
            p999_ms: p.p999_ms,
            errors: w.errors,
            first_error: w.first_error,
        })
    }
    .await;
    env.stop().await;
    result
}

fn env_connections(t: &TargetArgs) -> usize {
    t.connections.max(1)
}

// ---------------------------------------------------------------------------------------
// Import

/// Options of `vern bench import`.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// Rows in the generated CSV (one subject each: e-mail and a CRM reference).
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    /// ImportSubjects calls in flight (as `vern subjects import --concurrency`).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Rows per ImportSubjects call (as `vern subjects import`: 500).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Database of the in-process suite.
    #[arg(long, value_enum, default_value_t = DbChoice::Sqlite)]
    pub backend: DbChoice,
    /// PostgreSQL URL for --backend postgres (default $VERN_TEST_DATABASE_URL).
    #[arg(long)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Result of `vern bench import`.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// "import".
    pub scenario: &'static str,
    /// Where it ran.
    pub target: String,
    /// Rows in the file.
    pub rows: usize,
    /// Subjects created.
    pub created: usize,
    /// Rows refused or failed.
    pub failed: usize,
    /// Calls in flight.
    pub concurrency: usize,
    /// Rows per call.
    pub batch: usize,
    /// Seconds the import took.
    pub secs: f64,
    /// Rows per second.
    pub rows_per_s: f64,
    /// Rows per second over the first tenth of the rows answered.
    pub first_tenth_rows_per_s: f64,
    /// Rows per second over the last tenth of the rows answered.
    pub last_tenth_rows_per_s: f64,
    /// last_tenth_rows_per_s / first_tenth_rows_per_s (a store that slows as it grows
    /// shows below 1).
    pub last_over_first: f64,
}

/// Rows per second over the first and the last tenth of `total` rows, from the
/// answers' arrival times `(seconds since start, rows)` in order. A tenth ends (or
/// begins) at the answer that completes it; its rows are those answers' rows.
pub fn tenth_rates(answered: &[(f64, usize)], total: usize) -> (f64, f64) {
    let tenth = (total / 10).max(1);
    let mut first = (0.0, 0usize);
    let mut done = 0usize;
    for (t, n) in answered {
        done += n;
        if done >= tenth {
            first = (*t, done);
            break;
        }
    }
    // The last tenth: from the answer before which at least 9/10 were answered.
    let end = answered.last().map_or(0.0, |a| a.0);
    let mut last = (0.0, 0usize);
    let mut after = 0usize;
    for (i, (_, n)) in answered.iter().enumerate().rev() {
        after += n;
        if after >= tenth {
            let from = if i == 0 { 0.0 } else { answered[i - 1].0 };
            last = (end - from, after);
            break;
        }
    }
    let rate = |(secs, rows): (f64, usize)| rows as f64 / f64::max(secs, 1e-9);
    (rate(first), rate(last))
}

impl ImportReport {
    /// As text.
    pub fn text(&self) -> String {
        format!(
            "CSV import through the gateway ({}), ImportSubjects of {} rows, {} in flight\n\
             {} rows in {:.1} s: {:.0} rows/s ({} created, {} failed)\n\
             first tenth {:.0} rows/s, last tenth {:.0} rows/s (last/first {:.2})\n",
            self.target,
            self.batch,
            self.concurrency,
            self.rows,
            self.secs,
            self.rows_per_s,
            self.created,
            self.failed,
            self.first_tenth_rows_per_s,
            self.last_tenth_rows_per_s,
            self.last_over_first
        )
    }
}

/// Runs `vern bench import`.
pub async fn import(
    host: &dyn Host,
    config: &Config,
    args: &ImportArgs,
    _progress: bool,
) -> anyhow::Result<ImportReport> {
    let db = backend(args.backend, &args.database_url)?;
    let env = Env::start(host, config, &args.target, db).await?;
    let result = async {
        let ch = load::connect(&env.url, 1).await?.remove(0);
        let (tenant, tokens) = seed::tenant(&ch, &env).await?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("subjects.csv");
        let mut csv = String::with_capacity(args.rows * 48 + 32);
        csv.push_str("email,external_refs\n");
        let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
        for i in 0..args.rows {
            csv.push_str(&format!("member.{i}.{run}@example.test,crm:C-{run}-{i}\n"));
        }
        std::fs::write(&path, csv)?;
        let counts = host
            .import_csv(
                ch,
                tokens.crm_raw.clone(),
                tenant,
                path,
                args.batch,
                args.concurrency,
            )
            .await?;
        let secs = counts.answered.last().map_or(0.0, |a| a.0);
        let (first_tenth_rows_per_s, last_tenth_rows_per_s) =
            tenth_rates(&counts.answered, counts.rows);
        Ok(ImportReport {
            scenario: "import",
            target: env.label.clone(),
            rows: counts.rows,
            created: counts.created + counts.present,
            failed: counts.invalid + counts.failed,
            concurrency: args.concurrency,
            batch: args.batch,
            secs,
            rows_per_s: counts.rows as f64 / secs.max(1e-9),
            first_tenth_rows_per_s,
            last_tenth_rows_per_s,
            last_over_first: last_tenth_rows_per_s / first_tenth_rows_per_s.max(1e-9),
        })
    }
    .await;
    env.stop().await;
    result
}

// ---------------------------------------------------------------------------------------
// Audit

/// Options of `vern bench audit`.
#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    /// Batches appended (after one warm-up batch).
    #[arg(long, default_value_t = 120)]
    pub batches: usize,
    /// Events per batch (the outbox relays deliver up to 500).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Events verified in memory.
    #[arg(long, default_value_t = 100_000)]
    pub verify_events: usize,
    /// Database.
    #[arg(long, value_enum, default_value_t = DbChoice::Sqlite)]
    pub backend: DbChoice,
    /// PostgreSQL URL for --backend postgres (default $VERN_TEST_DATABASE_URL).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Result of `vern bench audit`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// "audit".
    pub scenario: &'static str,
    /// Database.
    pub backend: DbChoice,
    /// Events appended (measured).
    pub appended: u64,
    /// Appended events per second.
    pub append_per_s: f64,
    /// Milliseconds per batch.
    pub ms_per_batch: f64,
    /// VerifyChain reading from the database, events per second.
    pub verify_db_per_s: f64,
    /// Chain verification in memory (link, recompute, compare, checkpoints), events/s.
    pub verify_per_s: f64,
    /// Targets.
    pub target_append_per_s: f64,
    /// See target_append_per_s.
    pub target_verify_per_s: f64,
}

impl AuditReport {
    /// As text.
    pub fn text(&self) -> String {
        format!(
            "Audit chain ({:?})\n\
             append (batches, use case → store): {:.0} events/s ({:.1} ms per batch)   target ≥ {:.0}: {}\n\
             verify in memory:                   {:.0} events/s   target ≥ {:.0}: {}\n\
             VerifyChain from the database:      {:.0} events/s\n",
            self.backend,
            self.append_per_s,
            self.ms_per_batch,
            self.target_append_per_s,
            verdict(self.append_per_s >= self.target_append_per_s),
            self.verify_per_s,
            self.target_verify_per_s,
            verdict(self.verify_per_s >= self.target_verify_per_s),
            self.verify_db_per_s,
        )
    }
}

fn audit_event(i: usize) -> vern_audit::domain::EventInput {
    use vern_audit::domain::{EventInput, Outcome};
    EventInput {
        event_id: uuid::Uuid::now_v7().to_string(),
        actor_sub: format!("svc-{}", i % 7),
        actor_roles: vec!["service".into()],
        actor_client: "grpc-rust/0.14".into(),
        action: "UpdateSubject".into(),
        service: "subjects".into(),
        subject_id: uuid::Uuid::now_v7().to_string(),
        resource_type: "subject".into(),
        resource_id: uuid::Uuid::now_v7().to_string(),
        outcome: Some(Outcome::Success),
        changed_fields: vec!["email".into(), "phone".into()],
        request_id: format!("req-{i}"),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        occur_time: Some(chrono::Utc::now()),
        ..Default::default()
    }
}

/// Chain verification in memory of `n` events with a signed checkpoint per 1000, as
/// VerifyChain and `vern audit verify` do per event; events/s.
pub fn verify_in_memory(n: usize) -> f64 {
    use vern_audit::chain::{
        ChainedEvent, Checkpoint, Event, Start, Verifier, ZERO_HASH, next_hash,
    };
    let key = ed25519_key();
    let mut prev = ZERO_HASH;
    let mut scratch = vec![];
    let mut events = Vec::with_capacity(n);
    let mut cps = vec![];
    for seq in 1..=n as i64 {
        let e = Event {
            tenant_id: "bench".into(),
            seq,
            event_id: format!("0192f0c1-7a2b-7c3d-8e4f-{seq:012}"),
            occur_micros: 1_767_225_600_000_000 + seq * 1000,
            actor_sub: "crm-sync".into(),
            actor_roles: vec!["service".into()],
            actor_client: "grpc-rust/0.14".into(),
            action: "UpdateSubject".into(),
            service: "subjects".into(),
            subject_id: format!("0192f0c1-0000-7000-8000-{seq:012}"),
            resource_type: "subject".into(),
            resource_id: format!("0192f0c1-0000-7000-8000-{seq:012}"),
            outcome: "SUCCESS".into(),
            status_code: 0,
            changed_fields: vec!["email".into(), "phone".into()],
            request_id: format!("req-{seq}"),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            detail: String::new(),
        };
        let hash = next_hash(&prev, &e, &mut scratch);
        events.push(ChainedEvent {
            event: e,
            prev_hash: prev,
            hash,
        });
        if seq % 1000 == 0 {
            cps.push(Checkpoint::sign(key.signing_key(), "bench", seq, hash, seq));
        }
        prev = hash;
    }
    let started = Instant::now();
    let mut v = Verifier::new(
        key.signing_key().verifying_key(),
        Some("bench"),
        Start::FirstEvent,
    );
    let mut cps = cps.iter().peekable();
    for e in &events {
        v.event(e);
        while let Some(cp) = cps.next_if(|c| c.seq == e.event.seq) {
            v.checkpoint(cp.clone());
        }
    }
    let s = v.finish();
    let secs = started.elapsed().as_secs_f64();
    if !s.ok() {
        return 0.0;
    }
    s.checked as f64 / secs.max(1e-9)
}

fn ed25519_key() -> vern_audit::keys::AuditSigner {
    vern_audit::keys::AuditSigner::from_seed([7; 32])
}

/// Runs `vern bench audit`.
pub async fn audit(args: &AuditArgs) -> anyhow::Result<AuditReport> {
    use vern_audit::keys::{AuditSigner, CheckpointPolicy};
    use vern_audit::service::AuditLog;
    use vern_audit::store::AuditStore;
    use vern_kit::context::TenantId;
    use vern_kit::db::DbTarget;

    let dir = tempfile::tempdir()?;
    let (target, pg) = match backend(args.backend, &args.database_url)? {
        Backend::Sqlite => (DbTarget::for_service(None, dir.path(), "audit"), None),
        Backend::Postgres(url) => {
            let prefix = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            (
                DbTarget::with_prefix(Some(&url), dir.path(), &prefix, "audit"),
                Some(url),
            )
        }
    };
    let result = async {
        let store = AuditStore::open(&target).await?;
        let log = AuditLog::new(
            store,
            AuditSigner::from_seed([5; 32]),
            CheckpointPolicy {
                every_events: 1000,
                every: Duration::from_secs(3600),
            },
        );
        let tenant = TenantId::new("bench");
        let batch = args.batch.clamp(1, 500);
        log.append(&tenant, (0..batch).map(audit_event).collect())
            .await
            .map_err(|e| anyhow::anyhow!("append: {e}"))?;
        let batches: Vec<Vec<_>> = (0..args.batches)
            .map(|b| {
                (0..batch)
                    .map(|i| audit_event((b + 1) * batch + i))
                    .collect()
            })
            .collect();
        let started = Instant::now();
        let mut n = 0u64;
        for b in batches {
            n += log
                .append(&tenant, b)
                .await
                .map_err(|e| anyhow::anyhow!("append: {e}"))?
                .appended as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let v = log
            .verify(&tenant, 0, 0)
            .await
            .map_err(|e| anyhow::anyhow!("verify: {e}"))?;
        anyhow::ensure!(v.ok(), "the appended chain does not verify");
        let vsecs = started.elapsed().as_secs_f64();
        Ok(AuditReport {
            scenario: "audit",
            backend: args.backend,
            appended: n,
            append_per_s: n as f64 / secs.max(1e-9),
            ms_per_batch: secs * 1000.0 / args.batches.max(1) as f64,
            verify_db_per_s: v.checked as f64 / vsecs.max(1e-9),
            verify_per_s: verify_in_memory(args.verify_events.max(1000)),
            target_append_per_s: 20_000.0,
            target_verify_per_s: 1_000_000.0,
        })
    }
    .await;
    if let (Some(url), Some(schema)) = (pg, target.schema.as_deref()) {
        use sea_orm::{ConnectionTrait, Database};
        if let Ok(db) = Database::connect(&url).await {
            let _ = db
                .execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await;
            let _ = db.close().await;
        }
    }
    result
}

// ---------------------------------------------------------------------------------------
// Start-up

/// Options of `vern bench startup`.
#[derive(clap::Args, Debug, Clone)]
pub struct StartupArgs {
    /// Start-ups measured (each on a fresh data dir).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// The vern binary (default: this one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Result of `vern bench startup`.
#[derive(Debug, Clone, Serialize)]
pub struct StartupReport {
    /// "startup".
    pub scenario: &'static str,
    /// Wall time from spawning `vern dev` to the gateway's health answering SERVING, ms.
    pub ready_ms: Vec<f64>,
    /// What `vern dev` itself printed ("ready in N ms"), ms.
    pub reported_ms: Vec<f64>,
    /// Median of ready_ms.
    pub median_ready_ms: f64,
    /// Target, ms.
    pub target_ms: f64,
}

impl StartupReport {
    /// As text.
    pub fn text(&self) -> String {
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "vern dev start-up on a fresh data dir (six services migrated, gateway serving)\n\
             spawn → health SERVING: {} ms (median {:.0} ms)   target ≤ {:.0} ms: {}\n\
             as printed by vern dev: {} ms\n",
            list(&self.ready_ms),
            self.median_ready_ms,
            self.target_ms,
            verdict(self.median_ready_ms <= self.target_ms),
            list(&self.reported_ms),
        )
    }
}

/// Runs `vern bench startup`.
pub async fn startup(args: &StartupArgs) -> anyhow::Result<StartupReport> {
    use tokio::io::AsyncBufReadExt;
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("locating the vern binary")?,
    };
    let mut ready_ms = vec![];
    let mut reported_ms = vec![];
    for _ in 0..args.runs.max(1) {
        let dir = tempfile::tempdir()?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&binary)
            .arg("dev")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--console-listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let ready = wait_serving(port, Duration::from_secs(30)).await;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let mut printed = None;
        if let Some(out) = child.stdout.take() {
            let mut lines = tokio::io::BufReader::new(out).lines();
            if let Ok(Ok(Some(line))) =
                tokio::time::timeout(Duration::from_secs(2), lines.next_line()).await
            {
                printed = line
                    .strip_prefix("vern dev ready in ")
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|n| n.parse::<f64>().ok());
            }
        }
        let _ = child.kill().await;
        ready?;
        ready_ms.push(elapsed);
        if let Some(p) = printed {
            reported_ms.push(p);
        }
    }
    Ok(StartupReport {
        scenario: "startup",
        median_ready_ms: load::median(&ready_ms),
        ready_ms,
        reported_ms,
        target_ms: 2000.0,
    })
}

/// Polls the gateway's health until SERVING.
async fn wait_serving(port: u16, limit: Duration) -> anyhow::Result<()> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await
        {
            let mut h = HealthClient::new(ch);
            if let Ok(r) = h
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                && r.get_ref().status == ServingStatus::Serving as i32
            {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "vern dev not ready after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Access report

/// Options of `vern bench report`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Records of the subject.
    #[arg(long, default_value_t = 10_000)]
    pub records: usize,
    /// Measured ExportReport calls (one at a time), after one unmeasured.
    #[arg(long, default_value_t = 5)]
    pub calls: usize,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Result of `vern bench report`.
#[derive(Debug, Clone, Serialize)]
pub struct ReportReport {
    /// "report".
    pub scenario: &'static str,
    /// Where it ran.
    pub target: String,
    /// False when the suite does not serve the access report (yet).
    pub available: bool,
    /// Why not, when not available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Records of the subject.
    pub records: usize,
    /// Records in the report.
    pub report_records: usize,
    /// Size of the report's JSON document, bytes.
    pub report_bytes: usize,
    /// Milliseconds FulfilRequest took: gathering the data from the services and
    /// building and sealing the report.
    pub fulfil_ms: f64,
    /// Measured calls.
    pub calls: usize,
    /// Milliseconds per ExportReport (the whole document streamed).
    pub p50_ms: f64,
    /// See p50_ms.
    pub mean_ms: f64,
    /// See p50_ms.
    pub max_ms: f64,
}

impl ReportReport {
    /// As text.
    pub fn text(&self) -> String {
        if !self.available {
            return format!(
                "Access report: not measured: {}\n",
                self.message.as_deref().unwrap_or("not available")
            );
        }
        format!(
            "Access report through the gateway ({}), subject with {} records\n\
             FulfilRequest (gather, build, seal): {:.1} ms\n\
             ExportReport: {} records, {:.1} MB of JSON; per call: p50 {:.1} ms, mean {:.1} ms, max {:.1} ms ({} calls)\n",
            self.target,
            self.records,
            self.fulfil_ms,
            self.report_records,
            self.report_bytes as f64 / 1e6,
            self.p50_ms,
            self.mean_ms,
            self.max_ms,
            self.calls
        )
    }
}

/// Runs `vern bench report`.
pub async fn report(
    host: &dyn Host,
    config: &Config,
    args: &ReportArgs,
    progress: bool,
) -> anyhow::Result<ReportReport> {
    use vern_proto::rights::v1 as rpb;
    use vern_proto::subjects::v1 as spb;
    const MB64: usize = 64 * 1024 * 1024;

    // Default limits: the report is streamed (ExportReport), as `vern requests export`
    // reads it, so its size is not bounded by the message limit.
    let env = Env::start(host, config, &args.target, Backend::Sqlite).await?;
    let result = async {
        let ch = load::connect(&env.url, 1).await?.remove(0);
        let (tenant, tokens) = seed::tenant(&ch, &env).await?;
        let officer = crate::env::bearer(&env.token(&["privacy-officer"], Some(&tenant))?)?;
        let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone())
            .max_decoding_message_size(MB64)
            .max_encoding_message_size(MB64);
        let subject = subjects
            .create_subject(authed(
                spb::CreateSubjectRequest {
                    email: format!("report.{}@example.test", &tenant),
                    request_id: format!("bench-report-{tenant}"),
                    ..Default::default()
                },
                &tokens.crm,
            ))
            .await
            .map_err(|s| anyhow::anyhow!("CreateSubject: {:?}: {}", s.code(), s.message()))?
            .into_inner()
            .subject_id;
        let b = seed::bar(args.records as u64, "records", progress);
        for (n, start) in (0..args.records).step_by(1000).enumerate() {
            let end = (start + 1000).min(args.records);
            let records = (start..end)
                .map(|i| spb::Record {
                    category: vern_proto::common::v1::DataCategory::Contact as i32,
                    field: "event-attended".into(),
                    value: format!("Concert no. {i}, row {}, seat {}", i % 40, i % 25),
                    source: "crm".into(),
                    purposes: vec![CONSENT_PURPOSE.into()],
                    ..Default::default()
                })
                .collect();
            subjects
                .add_records(authed(
                    spb::AddRecordsRequest {
                        subject_id: subject.clone(),
                        records,
                        request_id: format!("bench-records-{n}"),
                    },
                    &tokens.crm,
                ))
                .await
                .map_err(|s| anyhow::anyhow!("AddRecords: {:?}: {}", s.code(), s.message()))?;
            b.inc((end - start) as u64);
        }
        b.finish_and_clear();

        let unavailable = |what: &str, s: tonic::Status| -> anyhow::Result<ReportReport> {
            if s.code() == tonic::Code::Unimplemented {
                Ok(ReportReport {
                    scenario: "report",
                    target: env.label.clone(),
                    available: false,
                    message: Some(format!(
                        "{what} answers UNIMPLEMENTED: the RightsService does not serve access reports in this build"
                    )),
                    records: args.records,
                    report_records: 0,
                    report_bytes: 0,
                    fulfil_ms: 0.0,
                    calls: 0,
                    p50_ms: 0.0,
                    mean_ms: 0.0,
                    max_ms: 0.0,
                })
            } else {
                Err(anyhow::anyhow!("{what}: {:?}: {}", s.code(), s.message()))
            }
        };
        let mut rights = rpb::rights_service_client::RightsServiceClient::new(ch)
            .max_decoding_message_size(MB64)
            .max_encoding_message_size(MB64);
        let id = match rights
            .submit_request(authed(
                rpb::SubmitRequestRequest {
                    r#type: rpb::RequestType::Access as i32,
                    requester: Some(rpb::submit_request_request::Requester::SubjectId(
                        subject.clone(),
                    )),
                    channel: rpb::RequestChannel::WebForm as i32,
                    request_id: "bench-access".into(),
                    ..Default::default()
                },
                &officer,
            ))
            .await
        {
            Ok(r) => r.into_inner().rights_request_id,
            Err(s) => return unavailable("SubmitRequest", s),
        };
        if let Err(s) = rights
            .verify_identity(authed(
                rpb::VerifyIdentityRequest {
                    rights_request_id: id.clone(),
                    subject_id: subject.clone(),
                    method: rpb::VerificationMethod::ElectronicId as i32,
                    request_id: "bench-verify".into(),
                    ..Default::default()
                },
                &officer,
            ))
            .await
        {
            return unavailable("VerifyIdentity", s);
        }
        let t0 = Instant::now();
        if let Err(s) = rights
            .fulfil_request(authed(
                rpb::FulfilRequestRequest {
                    rights_request_id: id.clone(),
                    request_id: "bench-fulfil".into(),
                    ..Default::default()
                },
                &officer,
            ))
            .await
        {
            return unavailable("FulfilRequest", s);
        }
        let fulfil_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut samples = vec![];
        let (mut records, mut bytes) = (0, 0);
        for i in 0..=args.calls {
            let t0 = Instant::now();
            let mut stream = match rights
                .export_report(authed(
                    rpb::ExportReportRequest {
                        rights_request_id: id.clone(),
                        language: String::new(),
                    },
                    &officer,
                ))
                .await
            {
                Ok(r) => r.into_inner(),
                Err(s) => return unavailable("ExportReport", s),
            };
            let mut json = Vec::new();
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(|s| anyhow::anyhow!("ExportReport: {:?}: {}", s.code(), s.message()))?
            {
                json.extend_from_slice(&chunk.json);
            }
            let dt = t0.elapsed();
            let doc: serde_json::Value = serde_json::from_slice(&json)?;
            records = doc["data"].as_array().map_or(0, Vec::len);
            bytes = json.len();
            if i > 0 {
                samples.push(dt.as_nanos() as u64);
            }
        }
        let p = percentiles(&mut samples);
        Ok(ReportReport {
            scenario: "report",
            target: env.label.clone(),
            available: true,
            message: None,
            records: args.records,
            report_records: records,
            report_bytes: bytes,
            fulfil_ms,
            calls: args.calls,
            p50_ms: p.p50_ms,
            mean_ms: p.mean_ms,
            max_ms: p.max_ms,
        })
    }
    .await;
    env.stop().await;
    result
}

#[cfg(test)]
mod tests {
    use super::tenth_rates;

    #[test]
    fn tenth_rates_time_the_first_and_last_tenth() {
        // 10 answers of 100 rows: the first tenth in 1 s, then one answer every 2 s.
        let answered: Vec<(f64, usize)> = (0..10).map(|i| (1.0 + 2.0 * i as f64, 100)).collect();
        let (first, last) = tenth_rates(&answered, 1000);
        assert!((first - 100.0).abs() < 1e-9, "{first}");
        assert!((last - 50.0).abs() < 1e-9, "{last}");
        assert_eq!(tenth_rates(&[], 0), (0.0, 0.0));
    }
}

/// `vern bench rotate-master`.
#[derive(clap::Args, Debug, Clone)]
pub struct RotateArgs {
    /// Subjects imported under master key version 1 before the rotation.
    #[arg(long, default_value_t = 10_000)]
    pub subjects: usize,
    /// Data keys per RewrapDataKeys call (as `vern keys rotate-master`).
    #[arg(long, default_value_t = 500)]
    pub page_size: i32,
    /// Database of the in-process suite.
    #[arg(long, value_enum, default_value_t = DbChoice::Sqlite)]
    pub backend: DbChoice,
    /// PostgreSQL URL for --backend postgres (default $VERN_TEST_DATABASE_URL).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Result of `vern bench rotate-master`.
#[derive(Debug, Clone, Serialize)]
pub struct RotateReport {
    /// "rotate-master".
    pub scenario: &'static str,
    /// Where it ran.
    pub target: String,
    /// Subjects in the store.
    pub subjects: usize,
    /// Data keys re-wrapped, all services.
    pub rewrapped: i64,
    /// Data keys examined, all services.
    pub examined: i64,
    /// Wall time of the whole rotation, seconds.
    pub secs: f64,
    /// Data keys re-wrapped per second.
    pub keys_per_s: f64,
    /// Wall time of a second run (everything already current: a resumed rotation).
    pub again_secs: f64,
    /// Per service: (name, examined, re-wrapped).
    pub services: Vec<(&'static str, i64, i64)>,
}

impl RotateReport {
    /// As text.
    pub fn text(&self) -> String {
        let per: Vec<String> = self
            .services
            .iter()
            .map(|(s, e, r)| format!("{s} {r}/{e}"))
            .collect();
        format!(
            "master key rotation ({}), {} subjects\n\
             {} data keys re-wrapped in {:.2} s: {:.0} keys/s ({})\n\
             a second run (nothing left to re-wrap) {:.2} s\n",
            self.target,
            self.subjects,
            self.rewrapped,
            self.secs,
            self.keys_per_s,
            per.join(", "),
            self.again_secs
        )
    }
}

/// Runs `vern bench rotate-master` on an in-process suite.
pub async fn rotate_master(
    host: &dyn Host,
    config: &Config,
    args: &RotateArgs,
) -> anyhow::Result<RotateReport> {
    use base64::Engine as _;
    let key = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
    let mut base = config.clone();
    base.keys.master_key = Some(key(1));
    base.keys.master_key_version = 1;
    base.keys.previous_master_keys.clear();
    let db = backend(args.backend, &args.database_url)?;
    let mut env = Env::start(host, &base, &TargetArgs::default(), db).await?;
    let result = async {
        let ch = load::connect(&env.url, 1).await?.remove(0);
        let (tenant, tokens) = seed::tenant(&ch, &env).await?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("subjects.csv");
        let mut csv = String::from("email,external_refs\n");
        for i in 0..args.subjects {
            csv.push_str(&format!("member.{i}@example.test,crm:C-{i}\n"));
        }
        std::fs::write(&path, csv)?;
        host.import_csv(ch, tokens.crm_raw.clone(), tenant, path, 500, 4)
            .await?;
        env.restart_with(host, |c| {
            c.keys.master_key = Some(key(2));
            c.keys.master_key_version = 2;
            c.keys.previous_master_keys.insert("1".into(), key(1));
        })
        .await?;
        let ch = load::connect(&env.url, 1).await?.remove(0);
        let admin = env.token(&["platform-admin"], None)?;
        let started = std::time::Instant::now();
        let services = host
            .rotate_master(ch.clone(), admin.clone(), 2, args.page_size)
            .await?;
        let secs = started.elapsed().as_secs_f64();
        let again = std::time::Instant::now();
        let repeat = host.rotate_master(ch, admin, 2, args.page_size).await?;
        let again_secs = again.elapsed().as_secs_f64();
        anyhow::ensure!(
            repeat.iter().all(|(_, _, r)| *r == 0),
            "a second rotation re-wrapped keys: {repeat:?}"
        );
        let rewrapped = services.iter().map(|s| s.2).sum();
        Ok(RotateReport {
            scenario: "rotate-master",
            target: env.label.clone(),
            subjects: args.subjects,
            rewrapped,
            examined: services.iter().map(|s| s.1).sum(),
            secs,
            keys_per_s: rewrapped as f64 / secs.max(1e-9),
            again_secs,
            services,
        })
    }
    .await;
    env.stop().await;
    result
}
