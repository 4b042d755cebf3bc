//! `vern subjects import --csv FILE`: registers subjects from a CSV file.
//!
//! Columns (header required, any order, all optional): `email`, `phone`, `national_id`,
//! `external_refs` (`system:id`, several separated by `;`). Each row is one CreateSubject
//! whose `request_id` is derived from the tenant and the row, so a re-run replays
//! instead of writing twice; a subject that already exists (same identifier) counts as
//! present. Bad rows are reported with their line number and the field at fault, never
//! their values, while good rows commit.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tonic::Code;
use vern_proto::subjects::v1 as pb;

use crate::remote::Client;

/// What happened to one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOutcome {
    /// Created by this run.
    Created,
    /// A subject with this identifier or reference already exists.
    AlreadyPresent,
    /// Refused: the field and why.
    Invalid(String),
    /// The call failed (e.g. unavailable); worth a re-run.
    Failed(String),
}

/// The result of an import.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Rows read.
    pub rows: usize,
    /// Rows that created (or had created) a subject.
    pub created: usize,
    /// Rows whose subject already existed.
    pub present: usize,
    /// (line, reason) of refused rows.
    pub invalid: Vec<(u64, String)>,
    /// (line, reason) of rows that failed for another reason.
    pub failed: Vec<(u64, String)>,
}

const COLUMNS: [&str; 4] = ["email", "phone", "national_id", "external_refs"];

/// Imports `path` through `client`; `tenant` scopes the request ids.
pub async fn import_csv(
    client: &Client,
    tenant: &str,
    path: &Path,
    concurrency: usize,
    progress: bool,
) -> anyhow::Result<Report> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_slice());
    let headers = reader.headers().context("reading the CSV header")?.clone();
    for h in headers.iter() {
        if !COLUMNS.contains(&h) {
            anyhow::bail!(
                "unknown column {h:?}; expected any of {}",
                COLUMNS.join(", ")
            );
        }
    }
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (ce, cp, cn, cr) = (
        col("email"),
        col("phone"),
        col("national_id"),
        col("external_refs"),
    );

    let mut rows = vec![];
    let mut report = Report::default();
    for record in reader.records() {
        match record {
            Ok(r) => {
                let line = r.position().map_or(0, |p| p.line());
                let get = |c: Option<usize>| c.and_then(|i| r.get(i)).unwrap_or("").to_owned();
                rows.push((line, get(ce), get(cp), get(cn), get(cr)));
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                report.invalid.push((line, "malformed CSV row".into()));
            }
        }
    }
    report.rows = rows.len() + report.invalid.len();

    let bar = if progress {
        let b = indicatif::ProgressBar::new(rows.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} rows  {per_sec}  eta {eta}",
        ) {
            b.set_style(style);
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = prost_types::Timestamp::from(std::time::SystemTime::now());
    let mut tasks = tokio::task::JoinSet::new();
    for (line, email, phone, national_id, refs) in rows {
        let permit = permits.clone().acquire_owned().await?;
        let client = client.clone();
        let request_id = row_request_id(tenant, &email, &phone, &national_id, &refs);

        tasks.spawn(async move {
            let outcome = import_row(
                &client,
                email,
                phone,
                national_id,
                &refs,
                request_id,
                &started,
            )
            .await;
            drop(permit);
            (line, outcome)
        });
        while let Some(done) = tasks.try_join_next() {
            tally(&mut report, done?, &bar);
        }
    }
    while let Some(done) = tasks.join_next().await {
        tally(&mut report, done?, &bar);
    }
    bar.finish_and_clear();
    report.invalid.sort();
    report.failed.sort();
    Ok(report)
}

fn tally(report: &mut Report, (line, outcome): (u64, RowOutcome), bar: &indicatif::ProgressBar) {
    bar.inc(1);
    match outcome {
        RowOutcome::Created => report.created += 1,
        RowOutcome::AlreadyPresent => report.present += 1,
        RowOutcome::Invalid(why) => report.invalid.push((line, why)),
        RowOutcome::Failed(why) => report.failed.push((line, why)),
    }
}

fn row_request_id(tenant: &str, email: &str, phone: &str, national_id: &str, refs: &str) -> String {
    let mut h = Sha256::new();
    for part in [tenant, email, phone, national_id, refs] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("import-{}", &hex::encode(h.finalize())[..40])
}

fn parse_refs(refs: &str) -> Result<Vec<pb::ExternalRef>, String> {
    refs.split(';')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| match r.split_once(':') {
            Some((system, id)) if !system.is_empty() && !id.is_empty() => Ok(pb::ExternalRef {
                system: system.to_owned(),
                id: id.to_owned(),
            }),
            _ => Err("external_refs: each reference must be system:id".to_owned()),
        })
        .collect()
}

async fn import_row(
    client: &Client,
    email: String,
    phone: String,
    national_id: String,
    refs: &str,
    request_id: String,
    started: &prost_types::Timestamp,
) -> RowOutcome {
    let external_refs = match parse_refs(refs) {
        Ok(r) => r,
        Err(why) => return RowOutcome::Invalid(why),
    };
    if email.is_empty() && phone.is_empty() && national_id.is_empty() && external_refs.is_empty() {
        return RowOutcome::Invalid("the row has no identifier".into());
    }
    let mut subjects =
        pb::subject_service_client::SubjectServiceClient::new(client.channel.clone());
    let req = client.request(pb::CreateSubjectRequest {
        email,
        phone,
        national_id,
        external_refs,
        request_id,
        ..Default::default()
    });
    match subjects.create_subject(req).await {
        // A replayed answer (an earlier run of this row) names an older subject.
        Ok(s) => match s.into_inner().create_time {
            Some(t) if (t.seconds, t.nanos) < (started.seconds, started.nanos) => {
                RowOutcome::AlreadyPresent
            }
            _ => RowOutcome::Created,
        },
        Err(s) if s.code() == Code::AlreadyExists => RowOutcome::AlreadyPresent,
        Err(s) if s.code() == Code::InvalidArgument => {
            use tonic_types::StatusExt;
            let fields = s
                .get_details_bad_request()
                .map(|b| {
                    b.field_violations
                        .iter()
                        .map(|v| format!("{}: {}", v.field, v.description))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| s.message().to_owned());
            RowOutcome::Invalid(fields)
        }
        Err(s) => RowOutcome::Failed(format!("{:?}: {}", s.code(), s.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_stable_and_distinct() {
        let a = row_request_id("t", "a@b.no", "", "", "");
        assert_eq!(a, row_request_id("t", "a@b.no", "", "", ""));
        assert_ne!(a, row_request_id("u", "a@b.no", "", "", ""), "per tenant");
        assert_ne!(a, row_request_id("t", "", "a@b.no", "", ""), "per column");
        assert!(a.len() <= 128);
    }

    #[test]
    fn refs_parse() {
        let r = parse_refs("crm:1; accounting:A-9;").expect("refs");
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].system, "accounting");
        assert!(parse_refs("nocolon").is_err());
    }
}
