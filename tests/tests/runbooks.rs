//! The master-key and re-index runbooks of deploy/README.md, followed literally on the
//! separate-process topology (two replicas of every service on PostgreSQL).
//!
//! The runbooks' steps are fenced blocks tagged `runbook=<name>`: an `env` block is a
//! change to the services' environment (`NAME=value`, `--unset=NAME`), rolled out to
//! every replica before the next command that talks to the running suite; an `sh`
//! block holds commands, run as written with the runbook's names (`$VERN_ADDR`,
//! `$PLATFORM_ADMIN_TOKEN`) in the environment and the pending configuration plus the
//! database settings (as an operator runs `vern keys verify` before a rollout). Every
//! command must succeed. Afterwards every subject is found by e-mail under the new
//! keys alone, and each key operation is in the platform's audit chain.

use std::collections::BTreeMap;
use std::time::Duration;

use vern_proto::subjects::v1 as spb;
use vern_tests::{Backend, Suite, authed, create_tenant, token};

const TENANT: &str = "kultur";
/// The suite's master key (version 1).
const K1: &str = "dmVybi1lMmUtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=";
const SUBJECTS: usize = 200;

/// One step's block.
#[derive(Debug)]
enum Block {
    /// Environment changes, one per line.
    Env(Vec<String>),
    /// Commands, one per line.
    Sh(Vec<String>),
}

/// The blocks of `runbook` in deploy/README.md, in order.
fn blocks(runbook: &str) -> Vec<Block> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/README.md");
    let doc = std::fs::read_to_string(path).expect("deploy/README.md");
    let tag = format!("runbook={runbook}");
    let mut out = vec![];
    let mut open: Option<(bool, Vec<String>)> = None;
    for line in doc.lines() {
        let t = line.trim();
        match &mut open {
            None if t.starts_with("```") && t.split_whitespace().any(|w| w == tag) => {
                open = Some((t.starts_with("```env"), vec![]));
            }
            Some(_) if t == "```" => {
                if let Some((env, lines)) = open.take() {
                    out.push(if env {
                        Block::Env(lines)
                    } else {
                        Block::Sh(lines)
                    });
                }
            }
            Some((_, lines)) if !t.is_empty() && !t.starts_with('#') => lines.push(t.to_owned()),
            _ => {}
        }
    }
    out
}

/// `text` with the runbook's names replaced (longest first: `$NEW_KEY` before `$NEW`).
fn substitute(text: &str, names: &[(&str, String)]) -> String {
    let mut names: Vec<&(&str, String)> = names.iter().collect();
    names.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    let mut out = text.to_owned();
    for (n, v) in names {
        out = out.replace(&format!("${n}"), v);
    }
    out
}

struct Operator<'a> {
    suite: &'a mut Suite,
    /// The configuration the next rollout deploys.
    pending: BTreeMap<String, String>,
    /// Names the runbook removed (kept as `--unset` lines for the replicas).
    removed: Vec<String>,
    deployed: BTreeMap<String, String>,
    names: Vec<(&'static str, String)>,
    admin: String,
    rollouts: usize,
}

impl Operator<'_> {
    async fn roll_out(&mut self) {
        let dir = self
            .suite
            .topology
            .as_ref()
            .expect("topology")
            .dir
            .path()
            .to_owned();
        // Settings first, removals after: the topology takes them in any order.
        let mut lines: Vec<String> = self
            .pending
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        lines.extend(self.removed.iter().map(|n| format!("--unset={n}")));
        for r in 1..=2 {
            std::fs::write(
                dir.join(format!("replica-{r}.env")),
                lines.join("\n") + "\n",
            )
            .expect("replica env");
        }
        self.suite.restart_topology(K1, &[]).await;
        self.deployed = self.pending.clone();
        self.rollouts += 1;
    }

    async fn follow(&mut self, runbook: &str) -> String {
        let steps = blocks(runbook);
        assert!(
            steps.iter().filter(|b| matches!(b, Block::Env(_))).count() >= 2
                && steps.iter().filter(|b| matches!(b, Block::Sh(_))).count() >= 3,
            "the {runbook} runbook's blocks: {steps:?}"
        );
        let topology = self.suite.topology.as_ref().expect("topology");
        let gateway = format!("http://{}", topology.gateway());
        let prefix = topology.prefix.clone();
        let bin_dir = vern_tests::topology::vern_binary()
            .parent()
            .expect("bin dir")
            .to_owned();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut last = String::new();
        for step in steps {
            match step {
                Block::Env(lines) => {
                    for line in lines {
                        let line = substitute(&line, &self.names);
                        if let Some(name) = line.strip_prefix("--unset=") {
                            self.pending.remove(name);
                            self.removed.push(name.to_owned());
                        } else {
                            let (k, v) = line.split_once('=').expect("NAME=value");
                            self.removed.retain(|n| n != k);
                            self.pending.insert(k.to_owned(), v.to_owned());
                        }
                    }
                }
                Block::Sh(lines) => {
                    for line in lines {
                        // A command that talks to the running suite sees the rollout.
                        if line.contains("--addr") && self.pending != self.deployed {
                            self.roll_out().await;
                        }
                        let out = tokio::task::block_in_place(|| {
                            std::process::Command::new("bash")
                                .args(["-c", &line])
                                .env_remove("VERN_CONFIG")
                                .env_remove("VERN_TOKEN")
                                .env("PATH", &path)
                                .env("VERN_ADDR", &gateway)
                                .env("PLATFORM_ADMIN_TOKEN", &self.admin)
                                .env(
                                    "VERN_DATABASE_URL",
                                    vern_kit::testing::pg_url().expect("PostgreSQL"),
                                )
                                .env("VERN_DATABASE_SCHEMA_PREFIX", &prefix)
                                .envs(&self.pending)
                                .output()
                                .expect("bash runs")
                        });
                        let text = format!(
                            "{}{}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        );
                        assert!(out.status.success(), "{runbook}: `{line}` failed:\n{text}");
                        last = text;
                    }
                }
            }
        }
        if self.pending != self.deployed {
            self.roll_out().await;
        }
        last
    }
}

async fn found_by_email(suite: &Suite, officer: &str) -> usize {
    let mut client = spb::subject_service_client::SubjectServiceClient::new(suite.channel.clone());
    let mut found = 0;
    for n in 0..SUBJECTS {
        let r = client
            .find_subject(authed(
                spb::FindSubjectRequest {
                    identifier: Some(spb::find_subject_request::Identifier::Email(format!(
                        "person{n}@example.no"
                    ))),
                    ..Default::default()
                },
                officer,
            ))
            .await;
        if r.is_ok() {
            found += 1;
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_and_reindex_runbooks_work_followed_literally() {
    let Some(mut suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    create_tenant(&suite.channel, TENANT, "Kultur").await;
    let crm = token(&["integration"], &[TENANT], 3600);
    let officer = token(&["privacy-officer"], &[TENANT], 3600);
    let mut client = spb::subject_service_client::SubjectServiceClient::new(suite.channel.clone());
    for n in 0..SUBJECTS {
        client
            .create_subject(authed(
                spb::CreateSubjectRequest {
                    email: format!("person{n}@example.no"),
                    request_id: format!("runbook-{n}"),
                    ..Default::default()
                },
                &crm,
            ))
            .await
            .expect("created");
    }
    let new_key = base64_of([42u8; 32]);
    let names = vec![
        ("OLD", "1".to_owned()),
        ("NEW", "2".to_owned()),
        ("OLD_KEY", K1.to_owned()),
        ("NEW_KEY", new_key),
    ];
    let base = BTreeMap::from([("VERN_KEYS__MASTER_KEY".to_owned(), K1.to_owned())]);
    let mut operator = Operator {
        suite: &mut suite,
        pending: base.clone(),
        removed: vec![],
        deployed: base,
        names,
        admin: token(&["platform-admin"], &[], 3600),
        rollouts: 0,
    };
    let rotated = operator.follow("master-key").await;
    assert!(
        rotated.contains("version 2 (current)"),
        "the last status: {rotated}"
    );
    let reindexed = operator.follow("reindex").await;
    assert_eq!(operator.rollouts, 3, "one rollout per env block");
    // The end state: master key 2 only, index under 2, version 1 gone everywhere.
    assert!(
        !operator
            .pending
            .contains_key("VERN_KEYS__PREVIOUS_MASTER_KEYS__1")
            && operator
                .pending
                .get("VERN_KEYS__INDEX_KEY_VERSION")
                .map(String::as_str)
                == Some("2"),
        "{:?}",
        operator.pending
    );
    assert!(reindexed.contains("version 2 (current)"), "{reindexed}");
    assert!(!reindexed.contains("version 1"), "{reindexed}");
    drop(operator);
    assert_eq!(
        found_by_email(&suite, &officer).await,
        SUBJECTS,
        "every subject is found by e-mail under the new keys alone"
    );
    // Each key operation is in the platform's chain.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = vern_tests::chain_events(&suite.channel, "vern-platform").await;
        let has = |service: &str, action: &str| {
            events
                .iter()
                .any(|e| e.service == service && e.action == action && e.status_code == 0)
        };
        if has("subjects", "RewrapDataKeys")
            && has("consents", "RewrapDataKeys")
            && has("rights", "RewrapDataKeys")
            && has("subjects", "ReindexSubjects")
            && has("subjects", "CountDataKeys")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "key operations missing from the platform chain: {:?}",
            events
                .iter()
                .map(|e| (&e.service, &e.action))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    suite.stop().await;
}

fn base64_of(bytes: [u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
