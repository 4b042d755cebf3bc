//! Master key rotation and re-indexing as deployed: two replicas of every service on
//! PostgreSQL, each its own `vern serve` process, restarted with new key configuration
//! as a rollout would. A half-rolled-out configuration (one replica on the new version,
//! one on the old) refuses to rotate and keeps every subject readable; once rolled out,
//! `vern keys rotate-master` and `vern keys reindex` run while a client creates and
//! erases subjects; afterwards version 1 is removed everywhere and every live subject
//! is read back and found by e-mail and by reference, every erased one is gone.

use std::collections::BTreeSet;
use std::process::Output;
use std::time::Instant;

use base64::Engine as _;
use tonic::Code;
use tonic::transport::Channel;
use vern_proto::subjects::v1 as spb;
use vern_tests::{Backend, Suite, authed, create_tenant, token};

const TENANT: &str = "okonomi";
/// The suite's master key (version 1).
const K1: &str = "dmVybi1lMmUtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=";
const SUBJECTS: usize = 2_000;
/// Erased before the rotation, and while it runs.
const ERASED_BEFORE: usize = 10;
const ERASED_DURING: usize = 50;
const CREATED_DURING: usize = 100;

fn k2() -> String {
    base64::engine::general_purpose::STANDARD.encode([22u8; 32])
}

fn row(prefix: &str, n: usize) -> spb::CreateSubjectRequest {
    spb::CreateSubjectRequest {
        email: format!("{prefix}{n}@example.no"),
        external_refs: vec![spb::ExternalRef {
            system: "erp".into(),
            id: format!("{prefix}-{n}"),
        }],
        request_id: format!("rot-{prefix}-{n}"),
        ..Default::default()
    }
}

/// `vern keys <args>` against the suite's gateway as a platform admin.
fn keys(suite: &Suite, args: &[&str]) -> Output {
    let platform = token(&["platform-admin"], &[], 3600);
    std::process::Command::new(vern_tests::topology::vern_binary())
        .arg("keys")
        .args(args)
        .args([
            "--addr",
            &format!("http://{}", suite.addr),
            "--token",
            &platform,
        ])
        .env_remove("VERN_CONFIG")
        .env_remove("VERN_TOKEN")
        .output()
        .expect("vern runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "vern failed: {}\n{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

/// The number after `label` on the status line that starts with `prefix`.
fn line_numbers(status: &str, prefix: &str) -> Vec<u64> {
    status
        .lines()
        .find(|l| l.starts_with(prefix))
        .map(|l| {
            l[prefix.len()..]
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

async fn erase(ch: &Channel, officer: &str, id: &str) {
    spb::subject_service_client::SubjectServiceClient::new(ch.clone())
        .erase_subject(authed(
            spb::EraseSubjectRequest {
                subject_id: id.into(),
                reason: "the subject asked".into(),
                request_id: format!("rot-erase-{id}"),
                ..Default::default()
            },
            officer,
        ))
        .await
        .expect("erase");
}

/// Every live subject's e-mail, decrypted (ListSubjects pages spread over both
/// replicas).
async fn emails(ch: &Channel, officer: &str) -> BTreeSet<String> {
    let mut client = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let (mut out, mut page_token) = (BTreeSet::new(), String::new());
    loop {
        let page = client
            .list_subjects(authed(
                spb::ListSubjectsRequest {
                    page_size: 200,
                    page_token: page_token.clone(),
                    state: spb::SubjectState::Active as i32,
                    view: spb::SubjectView::Full as i32,
                    ..Default::default()
                },
                officer,
            ))
            .await
            .expect("list subjects")
            .into_inner();
        out.extend(page.subjects.into_iter().map(|s| s.email));
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

async fn find(
    ch: &Channel,
    officer: &str,
    by: spb::find_subject_request::Identifier,
) -> Result<String, tonic::Status> {
    spb::subject_service_client::SubjectServiceClient::new(ch.clone())
        .find_subject(authed(
            spb::FindSubjectRequest {
                identifier: Some(by),
                ..Default::default()
            },
            officer,
        ))
        .await
        .map(|s| s.into_inner().subject_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_and_reindex_on_replicas_while_they_serve() {
    let Some(mut suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    let ch = suite.channel.clone();
    create_tenant(&ch, TENANT, "Økonomiavdelingen").await;
    let crm = token(&["integration"], &[TENANT], 3600);
    let officer = token(&["privacy-officer"], &[TENANT], 3600);
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let mut ids = vec![];
    for batch in 0..SUBJECTS / 500 {
        let rows = (0..500).map(|i| row("r", batch * 500 + i)).collect();
        let done = subjects
            .import_subjects(authed(spb::ImportSubjectsRequest { subjects: rows }, &crm))
            .await
            .expect("import")
            .into_inner();
        ids.extend(done.results.into_iter().map(|r| r.subject_id));
    }
    assert_eq!(ids.len(), SUBJECTS);
    for id in &ids[..ERASED_BEFORE] {
        erase(&ch, &officer, id).await;
    }

    // Half rolled out: replica 1 keeps version 1 current (and can open version 2),
    // replica 2 has version 2 current. Rotation refuses; every subject stays readable.
    let dir = suite
        .topology
        .as_ref()
        .expect("topology")
        .dir
        .path()
        .to_owned();
    let k2 = k2();
    std::fs::write(
        dir.join("replica-1.env"),
        format!("VERN_KEYS__PREVIOUS_MASTER_KEYS__2={k2}\n"),
    )
    .expect("replica 1 env");
    std::fs::write(
        dir.join("replica-2.env"),
        format!(
            "VERN_KEYS__MASTER_KEY={k2}\nVERN_KEYS__MASTER_KEY_VERSION=2\nVERN_KEYS__PREVIOUS_MASTER_KEYS__1={K1}\n"
        ),
    )
    .expect("replica 2 env");
    suite.restart_topology(K1, &[]).await;
    let ch = suite.channel.clone();
    let refused = keys(&suite, &["rotate-master", "--quiet", "--page-size", "50"]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("master key version"), "{why}");
    let live: BTreeSet<String> = (ERASED_BEFORE..SUBJECTS)
        .map(|n| format!("r{n}@example.no"))
        .collect();
    for _ in 0..2 {
        assert_eq!(emails(&ch, &officer).await, live, "readable mid-rollout");
    }

    // Rolled out: version 2 current everywhere, and the index moving from 1 to 2.
    std::fs::remove_file(dir.join("replica-1.env")).expect("rm");
    std::fs::remove_file(dir.join("replica-2.env")).expect("rm");
    suite
        .restart_topology(
            &k2,
            &[
                ("VERN_KEYS__MASTER_KEY_VERSION", "2"),
                ("VERN_KEYS__PREVIOUS_MASTER_KEYS__1", K1),
                ("VERN_KEYS__INDEX_KEY_VERSION", "2"),
                ("VERN_KEYS__PREVIOUS_INDEX_KEY_VERSION", "1"),
            ],
        )
        .await;
    let ch = suite.channel.clone();
    // A client creates and erases subjects while both passes run.
    let writer = {
        let (ch, crm, officer) = (ch.clone(), crm.clone(), officer.clone());
        let doomed: Vec<String> = ids[ERASED_BEFORE..ERASED_BEFORE + ERASED_DURING].to_vec();
        tokio::spawn(async move {
            let mut client = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
            let (mut created, mut written_at) = (vec![], vec![]);
            for n in 0..CREATED_DURING {
                let s = client
                    .create_subject(authed(row("w", n), &crm))
                    .await
                    .expect("create during rotation")
                    .into_inner();
                created.push(s.subject_id);
                written_at.push(Instant::now());
                if let Some(id) = doomed.get(n) {
                    erase(&ch, &officer, id).await;
                    written_at.push(Instant::now());
                }
            }
            (created, written_at)
        })
    };
    let rotation_began = Instant::now();
    let rotated = tokio::task::block_in_place(|| {
        ok(keys(
            &suite,
            &["rotate-master", "--quiet", "--page-size", "100"],
        ))
    });
    let rotation_ended = Instant::now();
    let reindexed = tokio::task::block_in_place(|| {
        ok(keys(&suite, &["reindex", "--quiet", "--page-size", "100"]))
    });
    let reindex_ended = Instant::now();
    let (created, written_at) = writer.await.expect("writer");
    // The writer really wrote while the keys moved (else the passes met no change).
    let during =
        |from: Instant, to: Instant| written_at.iter().filter(|t| **t > from && **t < to).count();
    let (in_rotation, in_reindex) = (
        during(rotation_began, rotation_ended),
        during(rotation_ended, reindex_ended),
    );
    eprintln!(
        "writes during the re-wrap: {in_rotation}; during the re-index: {in_reindex}; of {}",
        written_at.len()
    );
    assert!(
        in_rotation > 0,
        "no write while the data keys were re-wrapped ({} writes in all)",
        written_at.len()
    );
    assert!(rotated.contains("re-wrapped"), "{rotated}");
    assert!(reindexed.contains("re-indexed"), "{reindexed}");
    let status = ok(keys(&suite, &["status"]));
    let live_count = (SUBJECTS - ERASED_BEFORE - ERASED_DURING + CREATED_DURING) as u64;
    assert_eq!(
        line_numbers(&status, "subjects  version 2 (current)"),
        [live_count],
        "{status}"
    );
    assert!(
        !status.lines().any(|l| l.starts_with("subjects  version 1")),
        "{status}"
    );
    assert_eq!(
        line_numbers(&status, "version 2 (current)"),
        [live_count, live_count],
        "{status}"
    );
    assert!(
        status.contains("every index entry is under version 2"),
        "{status}"
    );
    // Every replica was asked, each by its address.
    for service in ["subjects", "consents", "rights"] {
        for ip in ["127.0.0.2:", "127.0.0.3:"] {
            assert!(
                status
                    .lines()
                    .any(|l| l.starts_with(service) && l.contains(ip)),
                "{service} {ip}: {status}"
            );
        }
    }

    // Version 1 removed everywhere: neither a master key nor an index key any more.
    suite
        .restart_topology(
            &k2,
            &[
                ("VERN_KEYS__MASTER_KEY_VERSION", "2"),
                ("VERN_KEYS__INDEX_KEY_VERSION", "2"),
            ],
        )
        .await;
    let ch = suite.channel.clone();
    let mut want: BTreeSet<String> = (ERASED_BEFORE + ERASED_DURING..SUBJECTS)
        .map(|n| format!("r{n}@example.no"))
        .collect();
    want.extend((0..CREATED_DURING).map(|n| format!("w{n}@example.no")));
    assert_eq!(
        emails(&ch, &officer).await,
        want,
        "every live subject opens"
    );
    use spb::find_subject_request::Identifier;
    let erp = |id: String| {
        Identifier::ExternalRef(spb::ExternalRef {
            system: "erp".into(),
            id,
        })
    };
    for n in [ERASED_BEFORE + ERASED_DURING, 777, SUBJECTS - 1] {
        for by in [
            Identifier::Email(format!("r{n}@example.no")),
            erp(format!("r-{n}")),
        ] {
            assert_eq!(find(&ch, &officer, by).await.expect("found"), ids[n]);
        }
    }
    for n in [0, CREATED_DURING - 1] {
        assert_eq!(
            find(&ch, &officer, erp(format!("w-{n}")))
                .await
                .expect("found"),
            created[n]
        );
    }
    for n in [
        0,
        ERASED_BEFORE - 1,
        ERASED_BEFORE,
        ERASED_BEFORE + ERASED_DURING - 1,
    ] {
        for by in [
            Identifier::Email(format!("r{n}@example.no")),
            erp(format!("r-{n}")),
        ] {
            let gone = find(&ch, &officer, by).await.expect_err("erased");
            assert_eq!(gone.code(), Code::NotFound);
        }
    }
    // Still unique under the new index key.
    let taken = spb::subject_service_client::SubjectServiceClient::new(ch.clone())
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: "r1000@example.no".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
}
