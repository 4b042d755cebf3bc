//! `vern bench`: benchmarks measured side by side with the limit of the machine.
//!
//! Check through the gateway is driven with N calls in flight over HTTP/2 and compared,
//! in the same run and with the same client, with a bare tonic echo service
//! ([`echo`]): the ratio holds from machine to machine where absolute figures do not.
//! The other scenarios (BatchCheck, RecordConsent, CSV import, audit, access report,
//! start-up) report absolute figures against the targets of docs/design.md, "Quality bars".
//!
//! Everything runs on loopback, bounded in time; seeding goes through the public API.

pub mod check;
pub mod console;
pub mod echo;
pub mod env;
pub mod load;
pub mod scenarios;
pub mod seed;
pub mod watchers;

use std::time::Duration;

pub use env::{Host, ImportCounts, SuiteHandle};
use vern_kit::config::Config;

/// The services of the suite (PostgreSQL schemas are `<prefix>_<service>`).
pub const SERVICES: [&str; 6] = [
    "tenants",
    "subjects",
    "consents",
    "retention",
    "rights",
    "audit",
];

/// The `vern bench` scenarios.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchCommand {
    /// Check through the gateway vs. a bare tonic echo (requests/s, p50/p99/p99.9).
    Check(check::CheckArgs),
    /// BatchCheck of 10,000 subject ids (ms per call).
    BatchCheck(scenarios::BatchCheckArgs),
    /// RecordConsent writes/s on SQLite or PostgreSQL.
    RecordConsent(scenarios::RecordConsentArgs),
    /// CSV import of subjects (rows/s), as `vern subjects import`.
    Import(scenarios::ImportArgs),
    /// Audit chain: append (events/s) and verification (events/s).
    Audit(scenarios::AuditArgs),
    /// Access report for a subject with 10,000 records: FulfilRequest, then ExportReport.
    Report(scenarios::ReportArgs),
    /// `vern dev` start-up until ready.
    Startup(scenarios::StartupArgs),
    /// Master key rotation: subjects imported under version 1, the suite restarted with
    /// version 2 current, then every data key re-wrapped (keys/s).
    RotateMaster(scenarios::RotateArgs),
    /// What another tenant's open WatchEvents streams (1,000 by default) cost GetSubject
    /// (p50 with / without, alternating rounds).
    Watchers(watchers::WatchersArgs),
    /// The console's department overview, rendered on the server, with 100,000 subjects
    /// and 1,000 open rights requests in the department (target: p95 ≤ 50 ms).
    Console(console::ConsoleArgs),
}

impl BenchCommand {
    fn json(&self) -> bool {
        match self {
            BenchCommand::Check(a) => a.target.json,
            BenchCommand::BatchCheck(a) => a.target.json,
            BenchCommand::RecordConsent(a) => a.target.json,
            BenchCommand::Import(a) => a.target.json,
            BenchCommand::Audit(a) => a.json,
            BenchCommand::Report(a) => a.target.json,
            BenchCommand::Startup(a) => a.json,
            BenchCommand::RotateMaster(a) => a.json,
            BenchCommand::Watchers(a) => a.target.json,
            BenchCommand::Console(a) => a.target.json,
        }
    }
}

/// Runs a scenario and prints its report (text, or one JSON object with `--json`).
/// Progress bars go to stderr.
pub async fn run(host: &dyn Host, config: &Config, command: BenchCommand) -> anyhow::Result<()> {
    let json = command.json();
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (value, text) = match command {
        BenchCommand::Check(a) => {
            let r = check::run(host, config, &a, progress).await?;
            (serde_json::to_value(&r)?, check::text(&r))
        }
        BenchCommand::BatchCheck(a) => {
            let r = scenarios::batch_check(host, config, &a, progress).await?;
            (serde_json::to_value(&r)?, r.text())
        }
        BenchCommand::RecordConsent(a) => {
            let r = scenarios::record_consent(host, config, &a, progress).await?;
            (serde_json::to_value(&r)?, r.text())
        }
        BenchCommand::Import(a) => {
            let r = scenarios::import(host, config, &a, progress).await?;
            (serde_json::to_value(&r)?, r.text())
        }
        BenchCommand::RotateMaster(a) => {
            let r = scenarios::rotate_master(host, config, &a).await?;
            (serde_json::to_value(&r)?, r.text())
        }
        BenchCommand::Audit(a) => {
            let r = scenarios::audit(&a).await?;
            (serde_json::to_value(&r)?, r.text())
        }
        BenchCommand::Report(a) => {
            let r = scenarios::report(host, config, &a, progress).await?;
            (serde_json::to_value(&r)?, r.text())
        }
        BenchCommand::Startup(a) => {
            let r = scenarios::startup(&a).await?;
            (serde_json::to_value(&r)?, r.text())
        }
        BenchCommand::Watchers(a) => {
            let r = watchers::run(host, config, &a, progress).await?;
            (serde_json::to_value(&r)?, r.text())
        }
        BenchCommand::Console(a) => {
            let r = console::run(host, config, &a, progress).await?;
            (serde_json::to_value(&r)?, r.text())
        }
    };
    if json {
        println!("{}", serde_json::to_string(&value)?);
    } else {
        print!("{text}");
    }
    Ok(())
}

/// Parses "5s", "500ms", "2m" or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 5s, 500ms)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    if !(secs > 0.0 && secs <= 3600.0) {
        return Err(format!("{s:?} must be above 0 and at most an hour"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
