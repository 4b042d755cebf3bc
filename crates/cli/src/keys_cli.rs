//! `vern keys rotate-master`, `vern keys reindex` and `vern keys status`: master key
//! rotation and re-indexing through the gateway. Every service that keeps data keys
//! (subjects, consents, rights) re-wraps them, a page at a time, under its current
//! master key version; the data keys and every value sealed with them stay as they
//! are. A re-index rewrites the subjects' blind-index entries under the current index
//! key version.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use tonic::Code;
use vern_kit::config::Config;
use vern_proto::common::v1::{
    CountDataKeysRequest, CountDataKeysResponse, RewrapDataKeysRequest, RewrapDataKeysResponse,
};
use vern_proto::consents::v1::consent_service_client::ConsentServiceClient;
use vern_proto::rights::v1::rights_service_client::RightsServiceClient;
use vern_proto::subjects::v1::ReindexSubjectsRequest;
use vern_proto::subjects::v1::subject_service_client::SubjectServiceClient;

use crate::remote::{Client, ClientArgs};

/// The services that keep wrapped data keys, in rotation order.
pub const KEY_SERVICES: [KeyService; 3] = [
    KeyService::Subjects,
    KeyService::Consents,
    KeyService::Rights,
];

/// A service keeping data keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyService {
    /// The subjects' key store.
    Subjects,
    /// The consent evidence keys.
    Consents,
    /// The rights requests' keys.
    Rights,
}

impl KeyService {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            KeyService::Subjects => "subjects",
            KeyService::Consents => "consents",
            KeyService::Rights => "rights",
        }
    }

    async fn rewrap(
        self,
        client: &Client,
        request: RewrapDataKeysRequest,
    ) -> Result<RewrapDataKeysResponse, tonic::Status> {
        let ch = client.channel.clone();
        let req = client.request(request);
        Ok(match self {
            KeyService::Subjects => SubjectServiceClient::new(ch).rewrap_data_keys(req).await,
            KeyService::Consents => ConsentServiceClient::new(ch).rewrap_data_keys(req).await,
            KeyService::Rights => RightsServiceClient::new(ch).rewrap_data_keys(req).await,
        }?
        .into_inner())
    }

    async fn count(self, client: &Client) -> Result<CountDataKeysResponse, tonic::Status> {
        let ch = client.channel.clone();
        let req = client.request(CountDataKeysRequest {});
        Ok(match self {
            KeyService::Subjects => SubjectServiceClient::new(ch).count_data_keys(req).await,
            KeyService::Consents => ConsentServiceClient::new(ch).count_data_keys(req).await,
            KeyService::Rights => RightsServiceClient::new(ch).count_data_keys(req).await,
        }?
        .into_inner())
    }
}

/// `vern keys rotate-master`.
#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    /// Data keys re-wrapped per call (at most 5000).
    #[arg(long, default_value_t = 500)]
    pub page_size: i32,
    /// No progress bars (for scripts).
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `vern keys reindex`.
#[derive(clap::Args, Debug)]
pub struct ReindexArgs {
    /// Index entries examined per call (at most 5000).
    #[arg(long, default_value_t = 500)]
    pub page_size: i32,
    /// No progress bar (for scripts).
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `vern keys status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Connects as a platform admin: a minted dev token gets that role whatever `--role`
/// says, since nothing else may rotate keys.
async fn connect(config: &Config, args: &ClientArgs) -> anyhow::Result<Client> {
    let mut args = args.clone();
    if args.token.is_none() {
        args.role = "platform-admin".into();
    }
    Client::connect(&args, config).await
}

/// What one service did in a rotation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// Data keys examined.
    pub examined: i64,
    /// Of those, re-wrapped.
    pub rewrapped: i64,
    /// Keys that did not open, passed over (`<tenant>/<owner id>`).
    pub unopenable: Vec<String>,
}

/// Runs `vern keys rotate-master`: each service to the end, then the status.
pub async fn rotate_master(config: &Config, args: RotateArgs) -> anyhow::Result<()> {
    let client = connect(config, &args.client).await?;
    // Every service must agree on the target version before anything is re-wrapped.
    let mut target = 0u32;
    for service in KEY_SERVICES {
        let count = service
            .count(&client)
            .await
            .with_context(|| format!("asking the {} service for its keys", service.name()))?;
        match target {
            0 => target = count.master_key_version,
            t if t != count.master_key_version => anyhow::bail!(
                "the {} service's current master key version is {}, not {t}: give every service the same keys configuration first",
                service.name(),
                count.master_key_version
            ),
            _ => {}
        }
    }
    if target == 0 {
        anyhow::bail!("no master key is configured (tenants' own keys do not rotate with it)");
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "re-wrapping every data key under master key version {target}"
    )?;
    let mut unopenable = vec![];
    for service in KEY_SERVICES {
        let done = rotate_service(&client, service, target, args.page_size, !args.quiet).await?;
        writeln!(
            out,
            "{:<9} {} data keys examined, {} re-wrapped, {} do not open",
            service.name(),
            done.examined,
            done.rewrapped,
            done.unopenable.len()
        )?;
        unopenable.extend(
            done.unopenable
                .iter()
                .map(|id| format!("{} {id}", service.name())),
        );
    }
    drop(out);
    print_status(&client).await?;
    passed_over(&unopenable, "data keys")
}

/// Lists what a run passed over and fails the command when there is any: the run did
/// everything else, and an operator must look at each.
fn passed_over(ids: &[String], what: &str) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    eprintln!("\nthese {what} do not open with the configured keys and were passed over:");
    for id in ids {
        eprintln!("  {id}");
    }
    anyhow::bail!(
        "{} {what} do not open: check the master key values (keys.master_key, keys.previous_master_keys) on every replica; what they seal cannot be read",
        ids.len()
    )
}

/// Re-wraps one service's data keys page by page. A page that fails for a passing
/// reason (unavailable, overloaded) is asked again; rotation is idempotent, so an
/// interrupted run is resumed by running the command again.
pub async fn rotate_service(
    client: &Client,
    service: KeyService,
    target: u32,
    page_size: i32,
    progress: bool,
) -> anyhow::Result<Rotated> {
    let bar = progress_bar(progress, service.name(), "data keys");
    let mut done = Rotated::default();
    let mut token = String::new();
    let mut total = 0i64;
    loop {
        let request = RewrapDataKeysRequest {
            page_token: token.clone(),
            page_size,
            master_key_version: target,
        };
        let page = with_retries(|| service.rewrap(client, request.clone()))
            .await
            .with_context(|| {
                format!(
                    "re-wrapping the {} service's data keys (run the command again to resume)",
                    service.name()
                )
            })?;
        done.examined += page.examined;
        done.rewrapped += page.rewrapped;
        done.unopenable.extend(page.unopenable);
        // The first page says how many there are; later ones say 0.
        total = total.max(page.total);
        bar.set_length(total.max(done.examined) as u64);
        bar.set_position(done.examined as u64);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    bar.finish_and_clear();
    Ok(done)
}

/// What a re-index did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reindexed {
    /// Entries under an older index version examined.
    pub examined: i64,
    /// Of those, rewritten under the current one.
    pub reindexed: i64,
    /// The index version they are now under.
    pub index_version: u32,
    /// Subjects passed over because their keys or identifiers did not open.
    pub unopenable: Vec<String>,
}

/// Runs `vern keys reindex`: every page, then the status.
pub async fn reindex(config: &Config, args: ReindexArgs) -> anyhow::Result<()> {
    let client = connect(config, &args.client).await?;
    let count = KeyService::Subjects
        .count(&client)
        .await
        .context("asking the subjects service for its index")?;
    if count.previous_index_key_version == 0 {
        anyhow::bail!(
            "the subjects service has no keys.previous_index_key_version: set keys.index_key_version to the new version and keys.previous_index_key_version to the old one on every subjects replica first"
        );
    }
    println!(
        "re-indexing identifiers and external references from index key version {} to {}",
        count.previous_index_key_version, count.index_key_version
    );
    let done = reindex_subjects(
        &client,
        count.index_key_version,
        args.page_size,
        !args.quiet,
    )
    .await?;
    println!(
        "subjects  {} index entries examined, {} re-indexed, {} subjects do not open",
        done.examined,
        done.reindexed,
        done.unopenable.len()
    );
    print_status(&client).await?;
    let ids: Vec<String> = done
        .unopenable
        .iter()
        .map(|id| format!("subjects {id}"))
        .collect();
    passed_over(&ids, "subjects")
}

/// Re-indexes page by page; a page that fails for a passing reason is asked again,
/// and an interrupted run is resumed by running the command again.
pub async fn reindex_subjects(
    client: &Client,
    target: u32,
    page_size: i32,
    progress: bool,
) -> anyhow::Result<Reindexed> {
    let bar = progress_bar(progress, "subjects", "index entries");
    let mut done = Reindexed {
        index_version: target,
        ..Default::default()
    };
    let mut token = String::new();
    let mut total = 0i64;
    loop {
        let request = ReindexSubjectsRequest {
            page_token: token.clone(),
            page_size,
            index_key_version: target,
        };
        let page = with_retries(|| {
            let req = client.request(request.clone());
            let mut c = SubjectServiceClient::new(client.channel.clone());
            async move { c.reindex_subjects(req).await.map(|r| r.into_inner()) }
        })
        .await
        .context("re-indexing the subjects (run the command again to resume)")?;
        done.examined += page.examined;
        done.reindexed += page.reindexed;
        for id in page.unopenable {
            if !done.unopenable.contains(&id) {
                done.unopenable.push(id);
            }
        }
        total = total.max(page.total);
        bar.set_length(total.max(done.examined) as u64);
        bar.set_position(done.examined as u64);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    bar.finish_and_clear();
    Ok(done)
}

/// A progress bar of `what` for `service`, hidden when `progress` is off (scripts).
fn progress_bar(progress: bool, service: &str, what: &str) -> indicatif::ProgressBar {
    if !progress {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(0);
    let template =
        format!("{{prefix:<9}} {{bar:40}} {{pos}}/{{len}} {what}  {{per_sec}}  eta {{eta}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        b.set_style(style);
    }
    b.set_prefix(service.to_owned());
    b
}

async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut wait = Duration::from_millis(200);
    let mut attempts = 0;
    loop {
        match call().await {
            Err(s)
                if attempts < 6
                    && matches!(
                        s.code(),
                        Code::Unavailable | Code::ResourceExhausted | Code::Aborted
                    ) =>
            {
                attempts += 1;
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Runs `vern keys status`.
pub async fn status(config: &Config, args: StatusArgs) -> anyhow::Result<()> {
    let client = connect(config, &args.client).await?;
    let problems = print_status(&client).await?;
    if !problems.is_empty() {
        anyhow::bail!(
            "{} thing(s) to finish or fix (above); nothing may be removed until `vern keys status` shows none",
            problems.len()
        );
    }
    Ok(())
}

/// One replica's answer to CountDataKeys.
struct ReplicaCount {
    /// Its address (`-` when the suite has one replica per service, as `vern dev`).
    addr: String,
    count: CountDataKeysResponse,
}

/// Every replica of `service` asked in turn: the gateway sends a call naming a replica
/// (`x-vern-replica`) to that one, and says how many there are.
async fn count_replicas(
    service: KeyService,
    client: &Client,
) -> Result<Vec<ReplicaCount>, tonic::Status> {
    use vern_kit::balance::{REPLICA_ADDR_HEADER, REPLICA_HEADER, REPLICAS_HEADER};
    let mut out = vec![];
    let mut n = 0;
    loop {
        let mut req = client.request(CountDataKeysRequest {});
        if let Ok(v) = n.to_string().parse() {
            req.metadata_mut().insert(REPLICA_HEADER, v);
        }
        let ch = client.channel.clone();
        let answer = match service {
            KeyService::Subjects => SubjectServiceClient::new(ch).count_data_keys(req).await,
            KeyService::Consents => ConsentServiceClient::new(ch).count_data_keys(req).await,
            KeyService::Rights => RightsServiceClient::new(ch).count_data_keys(req).await,
        }?;
        let meta = answer.metadata();
        let text = |h: &str| meta.get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let replicas: usize = text(REPLICAS_HEADER)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        out.push(ReplicaCount {
            addr: text(REPLICA_ADDR_HEADER).unwrap_or_else(|| "-".to_owned()),
            count: answer.into_inner(),
        });
        n += 1;
        if n >= replicas {
            return Ok(out);
        }
    }
}

/// Prints, per service, how many data keys each version wraps, what every replica is
/// configured with, and what is left to do; returns the problems found (an unfinished
/// rotation or re-index, a version some replica lacks, replicas that disagree, keys
/// that do not open), which `vern keys status` exits non-zero on.
async fn print_status(client: &Client) -> anyhow::Result<Vec<String>> {
    let mut out = std::io::stdout().lock();
    let mut problems: Vec<String> = vec![];
    let mut in_use = std::collections::BTreeSet::new();
    let mut configured = std::collections::BTreeSet::new();
    let mut current = std::collections::BTreeSet::new();
    let mut index = 0;
    let mut previous_index = 0;
    let mut entries = vec![];
    // Keys under a version other than the current one: version → (service, count).
    let mut behind: std::collections::BTreeMap<u32, Vec<(&str, i64)>> = Default::default();
    let mut replicas: Vec<(&str, ReplicaCount)> = vec![];
    writeln!(
        out,
        "{:<9} {:<24} {:>10}",
        "SERVICE", "WRAPPED UNDER", "DATA KEYS"
    )?;
    for service in KEY_SERVICES {
        let all = count_replicas(service, client)
            .await
            .with_context(|| format!("asking the {} service for its keys", service.name()))?;
        let Some(first) = all.first() else { continue };
        let c = first.count.clone();
        index = c.index_key_version;
        previous_index = previous_index.max(c.previous_index_key_version);
        entries.extend(c.index_entries.iter().cloned());
        for r in &all {
            configured.extend(r.count.unused_versions.iter().copied());
            current.insert(r.count.master_key_version);
        }
        if c.unopenable > 0 {
            problems.push(format!(
                "DO NOT OPEN: {} {} data keys (a wrong key value or damaged bytes; rotation passes over them)",
                service.name(),
                c.unopenable
            ));
        }
        if c.counts.is_empty() {
            writeln!(out, "{:<9} {:<24} {:>10}", service.name(), "-", 0)?;
        }
        for k in &c.counts {
            let v = k.master_key_version;
            // Unknown to any replica: that replica cannot open these keys.
            let lacking: Vec<&str> = all
                .iter()
                .filter(|r| {
                    r.count
                        .counts
                        .iter()
                        .any(|x| x.master_key_version == v && x.unknown)
                })
                .map(|r| r.addr.as_str())
                .collect();
            let label = match v {
                0 => "tenant's own key".to_owned(),
                v if !lacking.is_empty() => format!("version {v} (NOT CONFIGURED)"),
                v if v == c.master_key_version => format!("version {v} (current)"),
                v => format!("version {v}"),
            };
            if v != 0 {
                in_use.insert(v);
                if v != c.master_key_version {
                    behind.entry(v).or_default().push((service.name(), k.count));
                }
            }
            if !lacking.is_empty() {
                problems.push(format!(
                    "{} {} data keys are under master key version {v}, which {} not configured with: add it to keys.previous_master_keys there",
                    k.count,
                    service.name(),
                    if lacking == ["-"] {
                        "this service is".to_owned()
                    } else {
                        format!("replica(s) {} are", lacking.join(", "))
                    }
                ));
            }
            writeln!(out, "{:<9} {:<24} {:>10}", service.name(), label, k.count)?;
        }
        replicas.extend(all.into_iter().map(|r| (service.name(), r)));
    }
    // What each replica runs with: a rollout is finished when they all agree.
    writeln!(
        out,
        "\n{:<9} {:<22} {:>8} {:>6} {:>15}",
        "SERVICE", "REPLICA", "CURRENT", "INDEX", "PREVIOUS INDEX"
    )?;
    for (service, r) in &replicas {
        let previous = match r.count.previous_index_key_version {
            0 => "-".to_owned(),
            v => v.to_string(),
        };
        writeln!(
            out,
            "{:<9} {:<22} {:>8} {:>6} {:>15}",
            service, r.addr, r.count.master_key_version, r.count.index_key_version, previous
        )?;
    }
    let settings = |r: &ReplicaCount| {
        (
            r.count.master_key_version,
            r.count.index_key_version,
            r.count.previous_index_key_version,
        )
    };
    if let Some((_, first)) = replicas.first()
        && replicas.iter().any(|(_, r)| settings(r) != settings(first))
    {
        problems.push(
            "the replicas do not agree on the master key version, the index version or the previous index version (above): finish the rollout before rotating, re-indexing or removing a key".to_owned(),
        );
    }
    let current_version = current.iter().copied().max().unwrap_or(0);
    for (v, where_) in &behind {
        let total: i64 = where_.iter().map(|(_, n)| n).sum();
        let detail: Vec<String> = where_.iter().map(|(s, n)| format!("{s} {n}")).collect();
        problems.push(format!(
            "rotation unfinished: {total} keys under version {v} ({}): run vern keys rotate-master",
            detail.join(", ")
        ));
    }
    let unused: Vec<u32> = configured
        .iter()
        .copied()
        .filter(|v| !in_use.contains(v) && !current.contains(v))
        .collect();
    // Newer than the current version: added in step 2 of the runbook, current in step 3.
    let upcoming: Vec<String> = unused
        .iter()
        .filter(|v| **v > current_version)
        .map(u32::to_string)
        .collect();
    if !upcoming.is_empty() {
        writeln!(
            out,
            "master key version {} is configured but not current yet: keep it; the next step of the rotation makes it current",
            upcoming.join(", ")
        )?;
    }
    let removable: Vec<String> = unused
        .iter()
        .filter(|v| **v < current_version && **v != index && **v != previous_index)
        .map(u32::to_string)
        .collect();
    if !removable.is_empty() && problems.is_empty() {
        writeln!(
            out,
            "no data key uses master key version {} (on any replica): remove it from keys.previous_master_keys, roll out, then destroy the key",
            removable.join(", ")
        )?;
    }
    writeln!(
        out,
        "\n{:<24} {:>12} {:>14}",
        "INDEX KEYED BY", "IDENTIFIERS", "EXTERNAL REFS"
    )?;
    for e in &entries {
        let label = match e.index_key_version {
            v if v == index => format!("version {v} (current)"),
            v if v == previous_index => format!("version {v} (previous)"),
            v => format!("version {v} (NOT CONFIGURED)"),
        };
        writeln!(
            out,
            "{:<24} {:>12} {:>14}",
            label, e.identifiers, e.external_refs
        )?;
    }
    let left: i64 = entries
        .iter()
        .filter(|e| e.index_key_version != index)
        .map(|e| e.identifiers + e.external_refs)
        .sum();
    if previous_index != 0 && left == 0 {
        writeln!(
            out,
            "every index entry is under version {index}. Keep keys.previous_index_key_version ({previous_index}) while clients may still retry requests sent before the re-index began (a day is plenty for most), then remove it on every replica"
        )?;
    } else if left > 0 {
        problems.push(format!(
            "re-index unfinished: {left} index entries are not under version {index}: {}",
            if previous_index != 0 {
                "run vern keys reindex"
            } else {
                "set keys.previous_index_key_version to their version and run vern keys reindex"
            }
        ));
    }
    if unused.contains(&index) {
        writeln!(
            out,
            "master key version {index} wraps no data key but keys the blind indexes (keys.index_key_version): keep it configured"
        )?;
    }
    for p in &problems {
        writeln!(out, "{p}")?;
    }
    Ok(problems)
}

/// `vern keys verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Only this service's database (subjects, consents or rights).
    #[arg(long)]
    pub service: Option<String>,
    /// A `vern dev` data directory: its SQLite files, and its dev master key unless
    /// keys.master_key is configured.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

/// How a key compares in one service's database, for `vern keys verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The service whose database was read.
    pub service: &'static str,
    /// `master/<version>` or `tenant/<id>`.
    pub key: String,
    /// Where the key is configured.
    pub setting: String,
    /// The comparison.
    pub check: vern_kit::keycheck::KeyCheck,
}

/// Compares the configured keys (the configuration `vern serve` would read: the same
/// file and `VERN_*` variables) with the check values in each key service's database,
/// changing nothing; run it with the new configuration before rolling it out. A key
/// whose value differs, or no database to compare with, is an error (non-zero exit).
pub async fn verify(config: &Config, args: VerifyArgs) -> anyhow::Result<()> {
    let mut config = config.clone();
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
        config.auth.dev_key = true;
    }
    let verified = verify_keys(&config, args.service.as_deref()).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<10} {:<16} {:<10} SETTING",
        "SERVICE", "KEY", "CHECK"
    )?;
    for v in &verified {
        use vern_kit::keycheck::KeyCheck;
        let check = match v.check {
            KeyCheck::Matches => "matches",
            KeyCheck::FirstUse => "first use",
            KeyCheck::Differs => "DIFFERS",
        };
        writeln!(
            out,
            "{:<10} {:<16} {:<10} {}",
            v.service, v.key, check, v.setting
        )?;
    }
    let differing: Vec<&Verified> = verified
        .iter()
        .filter(|v| v.check == vern_kit::keycheck::KeyCheck::Differs)
        .collect();
    if !differing.is_empty() {
        anyhow::bail!(
            "{} configured key(s) differ from the key their database first used ({}): a service given them refuses to start; do not roll this configuration out",
            differing.len(),
            differing
                .iter()
                .map(|v| format!("{} {}", v.service, v.setting))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if verified
        .iter()
        .any(|v| v.check == vern_kit::keycheck::KeyCheck::FirstUse)
    {
        writeln!(
            out,
            "\"first use\": no value is stored for that key yet; the service records it when it starts with it"
        )?;
    }
    Ok(())
}

/// The comparison behind [`verify`].
pub async fn verify_keys(config: &Config, only: Option<&str>) -> anyhow::Result<Vec<Verified>> {
    let services: Vec<KeyService> = match only {
        None => KEY_SERVICES.to_vec(),
        Some(s) => vec![
            *KEY_SERVICES
                .iter()
                .find(|k| k.name() == s)
                .with_context(|| format!("{s:?} keeps no keys (subjects, consents or rights)"))?,
        ],
    };
    let targets: Vec<(KeyService, vern_kit::db::DbTarget)> = services
        .into_iter()
        .map(|s| (s, crate::target(config, s.name())))
        .collect();
    // Nothing to compare with is an error, not "all well" (and no dev key is made).
    for (service, target) in &targets {
        if vern_kit::db::sqlite_file(target).is_some_and(|f| !f.exists()) {
            anyhow::bail!(
                "no {} database at {} to compare with: set database_url (VERN_DATABASE_URL) and database_schema_prefix as for `vern serve`, or --data-dir for vern dev's files",
                service.name(),
                target.url
            );
        }
    }
    let keyring =
        vern_kit::keys::keyring(config, "vern keys verify").map_err(anyhow::Error::msg)?;
    let mut out = vec![];
    for (service, target) in targets {
        let db = vern_kit::db::connect(&target)
            .await
            .with_context(|| format!("opening the {} database", service.name()))?;
        let checked = vern_kit::keycheck::compare(&db, &keyring)
            .await
            .with_context(|| {
                format!(
                    "reading the {} database's key check values (has this release's {} started on it yet?)",
                    service.name(),
                    service.name()
                )
            })?;
        let _ = db.close().await;
        out.extend(checked.into_iter().map(|(key, check)| Verified {
            service: service.name(),
            key: key.name(),
            setting: key.setting(),
            check,
        }));
    }
    Ok(out)
}
