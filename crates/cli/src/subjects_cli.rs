//! `vern subjects duplicates`: a report of what a past fault left in the subjects
//! database (see `vern_subjects::service::duplicates`), read directly with the keys.

use std::io::Write;
use std::path::PathBuf;

use vern_kit::config::Config;

/// Runs the scan and prints its findings; an error (exit code 1) when there are any.
pub async fn duplicates(config: &Config, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mut config = config.clone();
    if let Some(dir) = data_dir {
        config.data_dir = dir;
        config.auth.dev_key = true;
    }
    let target = crate::target(&config, "subjects");
    let keys = vern_subjects::key_store_target(&config);
    for t in [&target, &keys] {
        if vern_kit::db::sqlite_file(t).is_some_and(|f| !f.exists()) {
            anyhow::bail!(
                "no subjects database at {} to read: set database_url (VERN_DATABASE_URL) and database_schema_prefix as for `vern serve`, or --data-dir for vern dev's files",
                t.url
            );
        }
    }
    let report = vern_subjects::find_duplicates(&config, &target)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{} live subjects examined", report.examined)?;
    for s in &report.shared {
        writeln!(
            out,
            "shared {:<12} {:<20} {}",
            s.kind.as_str(),
            s.tenant_id,
            s.subject_ids.join(" ")
        )?;
    }
    for s in &report.unopenable {
        writeln!(out, "does not open       {s}")?;
    }
    for s in &report.no_key {
        writeln!(out, "no key              {s}")?;
    }
    let findings = report.shared.len() + report.unopenable.len() + report.no_key.len();
    if findings > 0 {
        anyhow::bail!(
            "{} shared identifier(s), {} subject(s) that do not open, {} without a key: nothing was changed; see deploy/README.md, \"Repairing after a wrong key\"",
            report.shared.len(),
            report.unopenable.len(),
            report.no_key.len()
        );
    }
    writeln!(out, "no duplicates, every subject opens")?;
    Ok(())
}
