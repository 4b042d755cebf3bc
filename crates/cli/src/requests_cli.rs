//! `vern requests …`: the rights requests of a tenant by deadline (`list`, with
//! `--overdue`), and a request's report as the subject's readable copy or as JSON
//! (`export`).
//!
//! Dev tokens minted for these commands default to the `privacy-officer` role (the
//! `integration` default of the other client commands cannot read requests).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use vern_kit::config::Config;
use vern_proto::rights::v1 as pb;

use crate::remote::{Client, ClientArgs};

/// `vern requests …`.
#[derive(clap::Subcommand, Debug)]
pub enum RequestsCommand {
    /// List rights requests, earliest deadline first.
    List(ListArgs),
    /// Print or save the report of a fulfilled request (the Art. 15 answer for an access
    /// request). Contains personal data.
    Export(ExportArgs),
}

/// A request status on the command line.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum StatusArg {
    /// Registered, identity not verified.
    Received,
    /// Identity verified.
    Verified,
    /// Being carried out or waiting for confirmations.
    InProgress,
    /// Done.
    Completed,
    /// Rejected.
    Rejected,
}

impl StatusArg {
    fn pb(self) -> pb::RequestStatus {
        match self {
            StatusArg::Received => pb::RequestStatus::Received,
            StatusArg::Verified => pb::RequestStatus::Verified,
            StatusArg::InProgress => pb::RequestStatus::InProgress,
            StatusArg::Completed => pb::RequestStatus::Completed,
            StatusArg::Rejected => pb::RequestStatus::Rejected,
        }
    }
}

/// `vern requests list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only requests past their deadline and not completed or rejected.
    #[arg(long)]
    pub overdue: bool,
    /// Only requests with this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Output format of `vern requests export`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default)]
pub enum Format {
    /// Readable text, for the subject.
    #[default]
    Text,
    /// The report as one JSON document (machine-readable, Art. 20).
    Json,
}

/// `vern requests export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The rights request id.
    pub id: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write to this file (mode 0600) instead of standard output.
    #[arg(short = 'o', long = "out")]
    pub out: Option<PathBuf>,
    /// Language of the report's text: nb (bokmål), nn (nynorsk) or en. Default: the
    /// request's own language.
    #[arg(long)]
    pub language: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// Connects with a dev token of the privacy-officer role unless a role or token was given.
async fn connect(config: &Config, args: &ClientArgs) -> anyhow::Result<Client> {
    let mut args = args.clone();
    if args.token.is_none() && args.role == "integration" {
        args.role = "privacy-officer".into();
    }
    Client::connect(&args, config).await
}

/// Runs a `vern requests` command.
pub async fn run(config: &Config, command: RequestsCommand) -> anyhow::Result<()> {
    match command {
        RequestsCommand::List(a) => list(config, a).await,
        RequestsCommand::Export(a) => export(config, a).await,
    }
}

fn day(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(vern_kit::time::from_timestamp)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "-".into())
}

// The TYPE and STATUS columns by explicit arms: the texts stay as they are when the
// protobuf value names change.

/// A request type as the TYPE column shows it.
fn type_text(t: pb::RequestType) -> &'static str {
    match t {
        pb::RequestType::Unspecified => "REQUEST_TYPE_UNSPECIFIED",
        pb::RequestType::Access => "ACCESS",
        pb::RequestType::Rectification => "RECTIFICATION",
        pb::RequestType::Erasure => "ERASURE",
        pb::RequestType::Restriction => "RESTRICTION",
        pb::RequestType::Objection => "OBJECTION",
        pb::RequestType::Portability => "PORTABILITY",
        pb::RequestType::WithdrawConsent => "WITHDRAW_CONSENT",
    }
}

/// A request status as the STATUS column shows it.
fn status_text(s: pb::RequestStatus) -> &'static str {
    match s {
        pb::RequestStatus::Unspecified => "REQUEST_STATUS_UNSPECIFIED",
        pb::RequestStatus::Received => "RECEIVED",
        pb::RequestStatus::Verified => "VERIFIED",
        pb::RequestStatus::InProgress => "IN_PROGRESS",
        pb::RequestStatus::Completed => "COMPLETED",
        pb::RequestStatus::Rejected => "REJECTED",
    }
}

fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_owned()
}

/// The requests as a table, one line each; no personal data (ids, types, dates).
pub fn table(requests: &[pb::RightsRequest]) -> String {
    let mut out = format!(
        "{:<36}  {:<16}  {:<11}  {:<10}  {:<10}  {:<7}  {:<8}  {}\n",
        "ID", "TYPE", "STATUS", "RECEIVED", "DUE", "OVERDUE", "PENDING", "SUBJECT"
    );
    for r in requests {
        let kind = pb::RequestType::try_from(r.r#type)
            .map(type_text)
            .unwrap_or("?");
        let status = pb::RequestStatus::try_from(r.status)
            .map(status_text)
            .unwrap_or("?");
        let due = if r.extended {
            format!("{}*", day(r.due_at.as_ref()))
        } else {
            day(r.due_at.as_ref())
        };
        out.push_str(&format!(
            "{:<36}  {:<16}  {:<11}  {:<10}  {:<10}  {:<7}  {:<8}  {}\n",
            r.rights_request_id,
            short(kind, ""),
            short(status, ""),
            day(r.received_at.as_ref()),
            due,
            if r.overdue { "yes" } else { "" },
            r.pending_systems.join(","),
            if r.subject_id.is_empty() {
                "(identity only)"
            } else {
                &r.subject_id
            },
        ));
    }
    out
}

async fn list(config: &Config, args: ListArgs) -> anyhow::Result<()> {
    let c = connect(config, &args.client).await?;
    let mut rights = pb::rights_service_client::RightsServiceClient::new(c.channel.clone());
    let mut all = vec![];
    let mut token = String::new();
    loop {
        let page = rights
            .list_requests(c.request(pb::ListRequestsRequest {
                page_size: 1000,
                page_token: token,
                status: args.status.map_or(0, |s| s.pb() as i32),
                overdue: args.overdue,
                ..Default::default()
            }))
            .await
            .map_err(status_error)?
            .into_inner();
        all.extend(page.rights_requests);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    print!("{}", table(&all));
    let overdue = all.iter().filter(|r| r.overdue).count();
    eprintln!(
        "{} requests, {overdue} overdue{}",
        all.len(),
        if all.iter().any(|r| r.extended) {
            " (* deadline extended)"
        } else {
            ""
        }
    );
    Ok(())
}

/// The report in `format`: its JSON document as returned, or its readable rendering.
pub fn render(json: &str, format: Format) -> anyhow::Result<String> {
    match format {
        Format::Json => Ok(format!("{json}\n")),
        Format::Text => {
            let parsed: vern_rights::report::Report =
                serde_json::from_str(json).context("the report's JSON is not readable")?;
            Ok(vern_rights::report::render_text(&parsed))
        }
    }
}

async fn export(config: &Config, args: ExportArgs) -> anyhow::Result<()> {
    let c = connect(config, &args.client).await?;
    let mut rights = pb::rights_service_client::RightsServiceClient::new(c.channel.clone())
        .max_decoding_message_size(config.server.max_message_bytes);
    // Streamed in chunks, so a report of any size arrives (GetReport is one message).
    let mut chunks = rights
        .export_report(c.request(pb::ExportReportRequest {
            rights_request_id: args.id.clone(),
            language: args.language.clone().unwrap_or_default(),
        }))
        .await
        .map_err(status_error)?
        .into_inner();
    let mut json = Vec::new();
    while let Some(chunk) = chunks.message().await.map_err(status_error)? {
        if chunk.offset != json.len() as i64 {
            anyhow::bail!("the report stream skipped bytes (at {})", json.len());
        }
        json.extend_from_slice(&chunk.json);
        if json.len() as i64 > chunk.total_bytes {
            anyhow::bail!("the report stream sent more than it announced");
        }
    }
    let json = String::from_utf8(json).context("the report is not UTF-8")?;
    let mut text = render(&json, args.format)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    match &args.out {
        None => {
            std::io::stdout().write_all(text.as_bytes())?;
        }
        Some(path) => {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                // The report holds personal data: readable by the owner only.
                opts.mode(0o600);
            }
            let mut f = opts
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            eprintln!("report of {} written to {}", args.id, path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_deadlines_without_personal_data() {
        let r = pb::RightsRequest {
            rights_request_id: "0199-a".into(),
            r#type: pb::RequestType::Access as i32,
            status: pb::RequestStatus::Verified as i32,
            received_at: Some(prost_types::Timestamp {
                seconds: 1_769_853_600, // 2026-01-31T10:00Z
                nanos: 0,
            }),
            due_at: Some(prost_types::Timestamp {
                seconds: 1_772_272_800, // 2026-02-28T10:00Z
                nanos: 0,
            }),
            overdue: true,
            description: "secret words".into(),
            ..Default::default()
        };
        let t = table(&[r]);
        assert!(t.contains("ACCESS"));
        assert!(t.contains("2026-01-31"));
        assert!(t.contains("2026-02-28"));
        assert!(t.contains("yes"));
        assert!(!t.contains("secret"), "no personal data in the table");
    }
}
