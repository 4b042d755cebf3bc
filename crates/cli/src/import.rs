//! `vern subjects import --csv FILE`: registers subjects from a CSV file.
//!
//! Columns (header required, any order, all optional): `email`, `phone`, `national_id`,
//! `external_refs` (`system:id`, several separated by `;`). Rows go in ImportSubjects
//! calls of [`BATCH_ROWS`], a few in flight; each row carries a `request_id` derived
//! from the tenant and the row (as its CreateSubject did before), so a re-run replays
//! instead of writing twice; a subject that already exists (same identifier) counts as
//! present. Bad rows are reported with their line number and the field at fault, never
//! their values, while good rows commit.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
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

/// Rows per ImportSubjects call (the server takes up to 1,000).
pub const BATCH_ROWS: usize = 500;

/// One CSV row: its line and its columns.
#[derive(Debug, Clone)]
pub struct Row {
    /// Line in the file (1 is the header).
    pub line: u64,
    /// `email` column.
    pub email: String,
    /// `phone` column.
    pub phone: String,
    /// `national_id` column.
    pub national_id: String,
    /// `external_refs` column.
    pub refs: String,
}

/// Imports `path` through `client` in calls of [`BATCH_ROWS`] rows, `concurrency`
/// calls in flight; `tenant` scopes the request ids.
pub async fn import_csv(
    client: &Client,
    tenant: &str,
    path: &Path,
    concurrency: usize,
    progress: bool,
) -> anyhow::Result<Report> {
    let (rows, mut report) = read_csv(path)?;
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
    import_rows(
        client,
        tenant,
        rows,
        BATCH_ROWS,
        concurrency,
        &mut report,
        &mut |n| bar.inc(n as u64),
    )
    .await?;
    bar.finish_and_clear();
    Ok(report)
}

/// Reads and checks the CSV file: its rows, and a report counting them with the
/// malformed ones already listed as invalid.
pub fn read_csv(path: &Path) -> anyhow::Result<(Vec<Row>, Report)> {
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
                rows.push(Row {
                    line,
                    email: get(ce),
                    phone: get(cp),
                    national_id: get(cn),
                    refs: get(cr),
                });
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                report.invalid.push((line, "malformed CSV row".into()));
            }
        }
    }
    report.rows = rows.len() + report.invalid.len();
    Ok((rows, report))
}

/// Imports `rows` with ImportSubjects calls of `batch` rows, `in_flight` calls at a
/// time, adding their outcomes to `report`. `done` is told how many rows each call
/// answered (or each locally refused row), as the answers arrive.
pub async fn import_rows(
    client: &Client,
    tenant: &str,
    rows: Vec<Row>,
    batch: usize,
    in_flight: usize,
    report: &mut Report,
    done: &mut (dyn FnMut(usize) + Send),
) -> anyhow::Result<()> {
    let batch = batch.clamp(1, 1000);
    let permits = Arc::new(Semaphore::new(in_flight.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending: Vec<(u64, pb::CreateSubjectRequest)> = Vec::with_capacity(batch);
    let mut rows = rows.into_iter().peekable();
    while let Some(row) = rows.next() {
        match row_request(tenant, row.email, row.phone, row.national_id, &row.refs) {
            Err(why) => {
                tally(report, (row.line, RowOutcome::Invalid(why)));
                done(1);
            }
            Ok(req) => pending.push((row.line, req)),
        }
        if pending.len() == batch || (rows.peek().is_none() && !pending.is_empty()) {
            let permit = permits.clone().acquire_owned().await?;
            let client = client.clone();
            let calls = std::mem::replace(&mut pending, Vec::with_capacity(batch));
            tasks.spawn(async move {
                let out = import_batch(&client, calls).await;
                drop(permit);
                out
            });
        }
        while let Some(answered) = tasks.try_join_next() {
            let answered = answered?;
            done(answered.len());
            for a in answered {
                tally(report, a);
            }
        }
    }
    while let Some(answered) = tasks.join_next().await {
        let answered = answered?;
        done(answered.len());
        for a in answered {
            tally(report, a);
        }
    }
    report.invalid.sort();
    report.failed.sort();
    Ok(())
}

fn tally(report: &mut Report, (line, outcome): (u64, RowOutcome)) {
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

/// The CreateSubject of one row (its request id derived from the tenant and the row,
/// so a re-run replays), or why the row cannot be sent.
fn row_request(
    tenant: &str,
    email: String,
    phone: String,
    national_id: String,
    refs: &str,
) -> Result<pb::CreateSubjectRequest, String> {
    let external_refs = parse_refs(refs)?;
    if email.is_empty() && phone.is_empty() && national_id.is_empty() && external_refs.is_empty() {
        return Err("the row has no identifier".into());
    }
    let request_id = row_request_id(tenant, &email, &phone, &national_id, refs);
    Ok(pb::CreateSubjectRequest {
        email,
        phone,
        national_id,
        external_refs,
        request_id,
        ..Default::default()
    })
}

/// One ImportSubjects call: the outcome of each row, by line.
async fn import_batch(
    client: &Client,
    rows: Vec<(u64, pb::CreateSubjectRequest)>,
) -> Vec<(u64, RowOutcome)> {
    let (lines, subjects): (Vec<u64>, Vec<pb::CreateSubjectRequest>) = rows.into_iter().unzip();
    let mut api = pb::subject_service_client::SubjectServiceClient::new(client.channel.clone());
    let req = client.request(pb::ImportSubjectsRequest { subjects });
    let results = match api.import_subjects(req).await {
        Ok(r) => r.into_inner().results,
        Err(s) => {
            let why = format!("{:?}: {}", s.code(), s.message());
            return lines
                .into_iter()
                .map(|l| (l, RowOutcome::Failed(why.clone())))
                .collect();
        }
    };
    let mut out: Vec<(u64, RowOutcome)> = lines
        .iter()
        .map(|l| (*l, RowOutcome::Failed("no answer for this row".into())))
        .collect();
    for r in results {
        let Some(slot) = usize::try_from(r.index).ok().and_then(|i| out.get_mut(i)) else {
            continue;
        };
        slot.1 = match pb::ImportStatus::try_from(r.status) {
            // A replayed answer (an earlier run of this row) counts as present.
            Ok(pb::ImportStatus::Created) if r.replayed => RowOutcome::AlreadyPresent,
            Ok(pb::ImportStatus::Created) => RowOutcome::Created,
            Ok(pb::ImportStatus::AlreadyPresent) => RowOutcome::AlreadyPresent,
            Ok(pb::ImportStatus::Invalid) => RowOutcome::Invalid(
                r.violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            _ => RowOutcome::Failed("unknown result".into()),
        };
    }
    out
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
