//! `vern outbox`: what waits in the services' outboxes, and putting parked rows back.
//! Reads the services' databases directly (as `vern migrate` does), so it works while
//! the services are down; it never shows a notification's payload. It connects with
//! the settings `vern serve` reads (`database_url`, `database_schema_prefix`, or the
//! SQLite files in `data_dir`), and a service whose database it cannot find is an
//! error, never an empty answer.

use std::io::Write;

use anyhow::Context;
use vern_kit::config::Config;
use vern_kit::db::Db;
use vern_kit::outbox::{Requeue, RowInfo};
use vern_proto::consents::v1::consent_service_client::ConsentServiceClient;
use vern_proto::retention::v1::retention_service_client::RetentionServiceClient;
use vern_proto::rights::v1::rights_service_client::RightsServiceClient;
use vern_proto::subjects::v1::subject_service_client::SubjectServiceClient;
use vern_proto::tenants::v1::tenant_service_client::TenantServiceClient;

use crate::remote::Client;

/// The services that have an outbox (audit receives, it sends nothing).
pub const OUTBOX_SERVICES: [&str; 5] = ["tenants", "subjects", "consents", "retention", "rights"];

/// `vern outbox …`.
#[derive(clap::Subcommand, Debug)]
pub enum OutboxCommand {
    /// List the rows waiting in the outboxes, oldest first: id, tenant, topic, failed
    /// attempts, when it was enqueued and parked, and why. Never the notification.
    ///
    /// A parked row was refused by its receiver (INVALID_ARGUMENT, OUT_OF_RANGE) or
    /// failed outbox.max_attempts times; it waits for `vern outbox retry`. The ids are
    /// per service.
    List(ListArgs),
    /// Put parked rows back in the queue, with their attempts reset. The relay delivers
    /// them within a second (after rows of their tenant that went while they were
    /// parked: receivers order by version or event id). Fix the cause first, or they
    /// park again.
    Retry(RetryArgs),
}

/// `vern outbox list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this service's outbox (tenants, subjects, consents, retention or rights).
    #[arg(long)]
    pub service: Option<String>,
    /// Only parked rows.
    #[arg(long)]
    pub parked: bool,
    /// At most this many rows per service (at most 1000 with --addr).
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Asking the running services instead of their databases.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Ask the running services through the gateway at this address
    /// (ListOutboxRows / RetryOutboxRows) instead of reading their databases.
    #[arg(long)]
    pub addr: Option<String>,
    /// A platform admin's token (with --addr). Without it one is minted from the dev
    /// key in the data directory (`vern dev`).
    #[arg(long, env = "VERN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `vern outbox retry`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("rows").required(true).args(["id", "all"])))]
pub struct RetryArgs {
    /// The service whose outbox holds the rows (needed with --id: ids are per service).
    #[arg(long)]
    pub service: Option<String>,
    /// Ids of parked rows, as `vern outbox list --parked` shows them.
    #[arg(long, num_args = 1.., requires = "service")]
    pub id: Vec<i64>,
    /// Every parked row (of --service, or of every service).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Runs `vern outbox …`.
pub async fn run(config: &Config, command: OutboxCommand) -> anyhow::Result<()> {
    match command {
        OutboxCommand::List(a) => list(config, a).await,
        OutboxCommand::Retry(a) => retry(config, a).await,
    }
}

fn services(service: Option<&str>) -> anyhow::Result<Vec<&'static str>> {
    match service {
        None => Ok(OUTBOX_SERVICES.to_vec()),
        Some(s) => match OUTBOX_SERVICES.iter().find(|o| **o == s) {
            Some(o) => Ok(vec![*o]),
            None => anyhow::bail!(
                "{s:?} has no outbox (services with one: {})",
                OUTBOX_SERVICES.join(", ")
            ),
        },
    }
}

/// The service's database. Its SQLite file missing (nothing is created) means these
/// are not the settings of the deployment: an error naming the settings, never "no
/// rows".
async fn open(config: &Config, service: &str) -> anyhow::Result<Db> {
    let target = crate::target(config, service);
    if let Some(file) = vern_kit::db::sqlite_file(&target)
        && !file.exists()
    {
        anyhow::bail!(
            "no {service} database at {}: give the settings `vern serve` uses (--config, VERN_DATABASE_URL and VERN_DATABASE_SCHEMA_PREFIX for PostgreSQL, or VERN_DATA_DIR for SQLite files)",
            file.display()
        );
    }
    vern_kit::db::connect(&target)
        .await
        .with_context(|| format!("opening the {service} database"))
}

/// A platform admin's client of the gateway at `addr`.
async fn remote(config: &Config, args: &RemoteArgs, addr: &str) -> anyhow::Result<Client> {
    let client = crate::remote::ClientArgs {
        addr: addr.to_owned(),
        token: args.token.clone(),
        tenant: None,
        role: "platform-admin".into(),
        data_dir: config.data_dir.clone(),
    };
    Client::connect(&client, config).await
}

fn time(t: Option<prost_types::Timestamp>) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = t?;
    chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
}

/// One service's rows, asked of the service (ListOutboxRows); `true` when there are more.
async fn list_remote(
    client: &Client,
    service: &str,
    parked_only: bool,
    limit: u64,
) -> anyhow::Result<(Vec<RowInfo>, bool)> {
    use vern_proto::common::v1::ListOutboxRowsRequest;
    let req = client.request(ListOutboxRowsRequest {
        parked_only,
        page_size: i32::try_from(limit).unwrap_or(i32::MAX),
    });
    let ch = client.channel.clone();
    let answer = match service {
        "tenants" => TenantServiceClient::new(ch).list_outbox_rows(req).await,
        "subjects" => SubjectServiceClient::new(ch).list_outbox_rows(req).await,
        "consents" => ConsentServiceClient::new(ch).list_outbox_rows(req).await,
        "retention" => RetentionServiceClient::new(ch).list_outbox_rows(req).await,
        "rights" => RightsServiceClient::new(ch).list_outbox_rows(req).await,
        other => anyhow::bail!("{other:?} has no outbox"),
    }
    .map_err(|s| {
        anyhow::anyhow!(
            "asking {service} for its outbox: {:?}: {}",
            s.code(),
            s.message()
        )
    })?
    .into_inner();
    let rows = answer
        .rows
        .into_iter()
        .map(|r| RowInfo {
            id: r.id,
            tenant_id: r.tenant_id,
            topic: r.topic,
            attempts: r.attempts,
            create_time: time(r.create_time).unwrap_or_default(),
            parked_at: time(r.park_time),
            park_reason: (!r.park_reason.is_empty()).then_some(r.park_reason),
        })
        .collect();
    Ok((rows, answer.more))
}

async fn list(config: &Config, args: ListArgs) -> anyhow::Result<()> {
    let mut rows: Vec<(&str, RowInfo)> = vec![];
    let client = match &args.remote.addr {
        Some(addr) => Some(remote(config, &args.remote, addr).await?),
        None => None,
    };
    for service in services(args.service.as_deref())? {
        if let Some(client) = &client {
            let (found, more) = list_remote(client, service, args.parked, args.limit).await?;
            if more {
                eprintln!(
                    "{service}: more than {} rows, the oldest shown (--limit)",
                    found.len()
                );
            }
            rows.extend(found.into_iter().map(|r| (service, r)));
            continue;
        }
        let db = open(config, service).await?;
        // One more than shown tells whether there are more.
        let mut found = vern_kit::outbox::list(&db, args.parked, args.limit.saturating_add(1))
            .await
            .with_context(|| format!("reading the {service} outbox (not migrated?)"))?;
        let _ = db.close().await;
        if found.len() as u64 > args.limit {
            found.truncate(usize::try_from(args.limit).unwrap_or(usize::MAX));
            eprintln!(
                "{service}: more than {} rows, the oldest shown (--limit)",
                args.limit
            );
        }
        rows.extend(found.into_iter().map(|r| (service, r)));
    }
    let mut out = std::io::stdout().lock();
    if rows.is_empty() {
        writeln!(
            out,
            "{}",
            if args.parked {
                "no parked outbox rows"
            } else {
                "no outbox rows"
            }
        )?;
        return Ok(());
    }
    print_table(&mut out, &rows)?;
    Ok(())
}

fn print_table(out: &mut impl Write, rows: &[(&str, RowInfo)]) -> std::io::Result<()> {
    let time =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let header = [
        "SERVICE", "ID", "TENANT", "TOPIC", "ATTEMPTS", "CREATED", "PARKED", "REASON",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|(service, r)| {
            [
                (*service).to_owned(),
                r.id.to_string(),
                r.tenant_id.clone(),
                r.topic.clone(),
                r.attempts.to_string(),
                time(&r.create_time),
                r.parked_at.as_ref().map_or_else(|| "-".to_owned(), time),
                // One line per row.
                r.park_reason
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |s| s.replace(['\n', '\r'], " ")),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cols: &[&str]| -> std::io::Result<()> {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(out, &header)?;
    for row in &cells {
        line(out, &row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

async fn retry(config: &Config, args: RetryArgs) -> anyhow::Result<()> {
    let which = if args.all {
        Requeue::AllParked
    } else {
        Requeue::Ids(&args.id)
    };
    let mut out = std::io::stdout().lock();
    let client = match &args.remote.addr {
        Some(addr) => Some(remote(config, &args.remote, addr).await?),
        None => None,
    };
    for service in services(args.service.as_deref())? {
        let n = match &client {
            Some(client) => retry_remote(client, service, &which).await?,
            None => {
                let db = open(config, service).await?;
                let n = vern_kit::outbox::retry(&db, which).await.with_context(|| {
                    format!("re-queueing in the {service} outbox (not migrated?)")
                })?;
                let _ = db.close().await;
                n
            }
        };
        match which {
            Requeue::Ids(ids) if (n as usize) < ids.len() => writeln!(
                out,
                "{service}: {n} of {} rows re-queued (the others are not parked, or not there)",
                ids.len()
            )?,
            _ => writeln!(out, "{service}: {n} parked row(s) re-queued")?,
        }
    }
    Ok(())
}

/// Re-queues through the service (RetryOutboxRows); how many rows went back.
async fn retry_remote(client: &Client, service: &str, which: &Requeue<'_>) -> anyhow::Result<u64> {
    use vern_proto::common::v1::RetryOutboxRowsRequest;
    let req = client.request(match which {
        Requeue::AllParked => RetryOutboxRowsRequest {
            ids: vec![],
            all_parked: true,
        },
        Requeue::Ids(ids) => RetryOutboxRowsRequest {
            ids: ids.to_vec(),
            all_parked: false,
        },
    });
    let ch = client.channel.clone();
    let answer = match service {
        "tenants" => TenantServiceClient::new(ch).retry_outbox_rows(req).await,
        "subjects" => SubjectServiceClient::new(ch).retry_outbox_rows(req).await,
        "consents" => ConsentServiceClient::new(ch).retry_outbox_rows(req).await,
        "retention" => RetentionServiceClient::new(ch).retry_outbox_rows(req).await,
        "rights" => RightsServiceClient::new(ch).retry_outbox_rows(req).await,
        other => anyhow::bail!("{other:?} has no outbox"),
    }
    .map_err(|s| {
        anyhow::anyhow!(
            "asking {service} to re-queue: {:?}: {}",
            s.code(),
            s.message()
        )
    })?;
    Ok(u64::try_from(answer.into_inner().requeued_count).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_line_per_row_and_no_payload() {
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let rows = vec![
            (
                "subjects",
                RowInfo {
                    id: 7,
                    tenant_id: "dept-a".into(),
                    topic: "subject_state".into(),
                    attempts: 12,
                    create_time: t,
                    parked_at: Some(t),
                    park_reason: Some(
                        "failed 12 times:\nApplySubjectStates failed: Internal".into(),
                    ),
                },
            ),
            (
                "tenants",
                RowInfo {
                    id: 1200,
                    tenant_id: "dept-b".into(),
                    topic: "purpose".into(),
                    attempts: 0,
                    create_time: t,
                    parked_at: None,
                    park_reason: None,
                },
            ),
        ];
        let mut out = vec![];
        print_table(&mut out, &rows).expect("print");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("SERVICE   ID    TENANT  TOPIC"),
            "{text}"
        );
        assert!(
            lines[1].ends_with(
                "2027-01-15T08:00:00Z  failed 12 times: ApplySubjectStates failed: Internal"
            ),
            "{text}"
        );
        assert!(
            lines[2].starts_with("tenants   1200  dept-b  purpose "),
            "{text}"
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            [
                "tenants",
                "1200",
                "dept-b",
                "purpose",
                "0",
                "2027-01-15T08:00:00Z",
                "-",
                "-"
            ]
        );
    }

    #[test]
    fn only_services_with_an_outbox() {
        assert_eq!(services(None).expect("all").len(), 5);
        assert_eq!(services(Some("rights")).expect("one"), ["rights"]);
        assert!(services(Some("audit")).is_err());
    }
}
