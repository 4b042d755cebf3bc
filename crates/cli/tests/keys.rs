//! Master key rotation from outside: `vern dev` with 10,000 subjects (and consent and
//! rights data keys) under master key version 1, restarted with version 2 current,
//! `vern keys rotate-master` through the gateway, then every subject read back, the
//! blind index still finding them, a subject erased before the rotation still
//! unreadable; a second rotation lets version 2 be retired entirely.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use support::{PURPOSE, TENANT, Vern, authed, consent_request, setup};
use tonic::Code;
use vern_proto::consents::v1 as cpb;
use vern_proto::rights::v1 as rpb;
use vern_proto::subjects::v1 as spb;

const SUBJECTS: usize = 10_000;

fn key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

fn vern(dir: &Path, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vern"))
        .args(args)
        .args(["--addr", url, "--data-dir"])
        .arg(dir)
        .env_remove("VERN_TOKEN")
        .env_remove("VERN_CONFIG")
        .output()
        .expect("vern runs")
}

fn ok(o: Output) -> String {
    support::stdout(&o)
}

/// `vern keys status`: whether it exited 0 (nothing to finish or fix), and its output.
fn status(data: &Path, url: &str) -> (bool, String) {
    let o = vern(data, url, &["keys", "status"]);
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// The `DATA KEYS` count of `service` for the status line whose label starts with
/// `label`.
fn count(status: &str, service: &str, label: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(service)?.trim_start();
        rest.starts_with(label)
            .then(|| rest.rsplit(' ').next()?.parse().ok())
            .flatten()
    })
}

fn env(current: (u32, u8), previous: &[(u32, u8)]) -> Vec<(String, String)> {
    let mut e = vec![
        ("VERN_KEYS__MASTER_KEY".to_owned(), key(current.1)),
        (
            "VERN_KEYS__MASTER_KEY_VERSION".to_owned(),
            current.0.to_string(),
        ),
    ];
    for (v, b) in previous {
        e.push((format!("VERN_KEYS__PREVIOUS_MASTER_KEYS__{v}"), key(*b)));
    }
    e
}

async fn start(dir: &Path, env: &[(String, String)]) -> (Vern, tonic::transport::Channel) {
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    Vern::start(dir, &env).await
}

/// Every live subject read in full (decrypted) through ListSubjects: their e-mails.
async fn read_all(ch: &tonic::transport::Channel, token: &str) -> Vec<String> {
    let mut client = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let (mut emails, mut page_token) = (vec![], String::new());
    loop {
        let page = client
            .list_subjects(authed(
                spb::ListSubjectsRequest {
                    page_size: 1000,
                    page_token: page_token.clone(),
                    state: spb::SubjectState::Active as i32,
                    view: spb::SubjectView::Full as i32,
                    ..Default::default()
                },
                token,
            ))
            .await
            .expect("list subjects")
            .into_inner();
        emails.extend(page.subjects.into_iter().map(|s| s.email));
        if page.next_page_token.is_empty() {
            return emails;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_master_keeps_every_subject_readable_and_erased_ones_unreadable() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path();
    let (v1, ch) = start(data, &env((1, 11), &[])).await;
    setup(&ch, &v1, 0).await;
    let crm = v1.token("integration");
    let officer = v1.token("privacy-officer");
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let mut ids = vec![];
    for batch in 0..SUBJECTS / 500 {
        let rows = (0..500)
            .map(|i| {
                let n = batch * 500 + i;
                spb::CreateSubjectRequest {
                    email: format!("person{n}@example.no"),
                    request_id: format!("rotate-{n}"),
                    ..Default::default()
                }
            })
            .collect();
        let done = subjects
            .import_subjects(authed(spb::ImportSubjectsRequest { subjects: rows }, &crm))
            .await
            .expect("import")
            .into_inner();
        ids.extend(done.results.into_iter().map(|r| r.subject_id));
    }
    assert_eq!(ids.len(), SUBJECTS);
    // Data keys in the other services: consent evidence and a rights request.
    let mut consents = cpb::consent_service_client::ConsentServiceClient::new(ch.clone());
    for (i, id) in ids.iter().take(20).enumerate() {
        consents
            .record_consent(authed(
                consent_request(id, true, &format!("consent-{i}")),
                &crm,
            ))
            .await
            .expect("consent");
    }
    let mut rights = rpb::rights_service_client::RightsServiceClient::new(ch.clone());
    let request = rights
        .submit_request(authed(
            rpb::SubmitRequestRequest {
                r#type: rpb::RequestType::Access as i32,
                requester: Some(rpb::submit_request_request::Requester::SubjectId(
                    ids[2].clone(),
                )),
                channel: rpb::RequestChannel::Email as i32,
                request_id: "rotate-access".into(),
                description: "Innsyn".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("rights request")
        .into_inner()
        .rights_request_id;
    // Erased before the rotation.
    let erased = ids[1].clone();
    subjects
        .erase_subject(authed(
            spb::EraseSubjectRequest {
                subject_id: erased.clone(),
                reason: "the subject asked".into(),
                request_id: "rotate-erase".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("erase");
    v1.sigterm();
    drop(v1);

    // Version 2 current, version 1 still there for what it wrapped.
    let (v2, ch) = start(data, &env((2, 22), &[(1, 11)])).await;
    let url = v2.url();
    let (clean, before) = status(data, &url);
    assert!(!clean, "a rotation to finish fails the command: {before}");
    assert!(
        before.contains(&format!(
            "rotation unfinished: {} keys under version 1 (subjects {}, consents 20, rights 1)",
            SUBJECTS - 1 + 21,
            SUBJECTS - 1
        )),
        "{before}"
    );
    assert!(
        !before.contains("remove it"),
        "nothing may be removed yet: {before}"
    );
    assert_eq!(
        count(&before, "subjects", "version 1"),
        Some(SUBJECTS as u64 - 1),
        "{before}"
    );
    assert_eq!(
        count(&before, "consents", "version 1"),
        Some(20),
        "{before}"
    );
    assert_eq!(count(&before, "rights", "version 1"), Some(1), "{before}");
    let rotated = ok(vern(data, &url, &["keys", "rotate-master", "--quiet"]));
    assert!(
        rotated.contains(&format!(
            "subjects  {} data keys examined, {} re-wrapped",
            SUBJECTS - 1,
            SUBJECTS - 1
        )),
        "{rotated}"
    );
    assert!(
        rotated.contains("consents  20 data keys examined, 20 re-wrapped"),
        "{rotated}"
    );
    assert!(
        rotated.contains("rights    1 data keys examined, 1 re-wrapped"),
        "{rotated}"
    );
    assert_eq!(
        count(&rotated, "subjects", "version 2 (current)"),
        Some(SUBJECTS as u64 - 1)
    );
    assert_eq!(count(&rotated, "subjects", "version 1"), None, "{rotated}");
    assert!(rotated.contains("keys the blind indexes"), "{rotated}");
    // Repeating it (a resumed rotation) re-wraps nothing: each service's count parsed
    // (a substring "0 re-wrapped" would also match "20 re-wrapped").
    let again = ok(vern(data, &url, &["keys", "rotate-master", "--quiet"]));
    for (service, examined) in [
        ("subjects", SUBJECTS as u64 - 1),
        ("consents", 20),
        ("rights", 1),
    ] {
        assert_eq!(
            number_before(&again, service, "re-wrapped"),
            Some(0),
            "{service}: {again}"
        );
        assert_eq!(
            number_before(&again, service, "data keys examined"),
            Some(examined),
            "{service}: {again}"
        );
    }
    drop(v2);

    // Version 3, with 2 retired entirely: only 1 (the index version) and 3 configured.
    let (v3, ch3) = start(data, &env((3, 33), &[(2, 22), (1, 11)])).await;
    ok(vern(data, &v3.url(), &["keys", "rotate-master", "--quiet"]));
    let (clean, text) = status(data, &v3.url());
    assert!(clean, "{text}");
    assert!(
        text.contains("no data key uses master key version 2"),
        "{text}"
    );
    drop(v3);
    drop(ch);
    let (v4, ch) = start(data, &env((3, 33), &[(1, 11)])).await;
    drop(ch3);
    let token = v4.token("privacy-officer");
    let emails = read_all(&ch, &token).await;
    assert_eq!(emails.len(), SUBJECTS - 1, "every live subject is listed");
    let mut expected: Vec<String> = (0..SUBJECTS)
        .filter(|n| *n != 1)
        .map(|n| format!("person{n}@example.no"))
        .collect();
    let mut got = emails.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "every subject decrypts to its own e-mail");
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    // The blind index did not change: lookups by e-mail still find subjects.
    let found = subjects
        .find_subject(authed(
            spb::FindSubjectRequest {
                identifier: Some(spb::find_subject_request::Identifier::Email(
                    "person9999@example.no".into(),
                )),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("find")
        .into_inner();
    assert_eq!(found.subject_id, ids[SUBJECTS - 1]);
    // The subject erased before the rotation stays unreadable.
    let gone = subjects
        .find_subject(authed(
            spb::FindSubjectRequest {
                identifier: Some(spb::find_subject_request::Identifier::Email(
                    "person1@example.no".into(),
                )),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect_err("erased");
    assert_eq!(gone.code(), Code::NotFound);
    let erased_now = subjects
        .get_subject(authed(
            spb::GetSubjectRequest {
                subject_id: erased.clone(),
                view: spb::SubjectView::Full as i32,
                ..Default::default()
            },
            &token,
        ))
        .await;
    match erased_now {
        Ok(s) => {
            let s = s.into_inner();
            assert!(
                s.email.is_empty() && s.phone.is_empty(),
                "no identifier of an erased subject"
            );
        }
        Err(s) => assert_eq!(s.code(), Code::NotFound),
    }
    // Consent evidence and the rights request open under version 3.
    let mut consents = cpb::consent_service_client::ConsentServiceClient::new(ch.clone());
    let history = consents
        .list_consent_history(authed(
            cpb::ListConsentHistoryRequest {
                subject_id: ids[0].clone(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("history")
        .into_inner();
    assert!(!history.events.is_empty());
    let mut rights = rpb::rights_service_client::RightsServiceClient::new(ch.clone());
    rights
        .get_request(authed(
            rpb::GetRequestRequest {
                rights_request_id: request,
            },
            &token,
        ))
        .await
        .expect("the rights request opens");
    let (clean, text) = status(data, &v4.url());
    assert!(clean, "{text}");
    assert_eq!(
        count(&text, "subjects", "version 3 (current)"),
        Some(SUBJECTS as u64 - 1)
    );
    let _ = (TENANT, PURPOSE);
}

const INDEXED: usize = 1_000;

fn find_by(identifier: spb::find_subject_request::Identifier) -> spb::FindSubjectRequest {
    spb::FindSubjectRequest {
        identifier: Some(identifier),
        ..Default::default()
    }
}

fn email(n: usize) -> spb::find_subject_request::Identifier {
    spb::find_subject_request::Identifier::Email(format!("indexed{n}@example.no"))
}

fn crm_ref(n: usize) -> spb::find_subject_request::Identifier {
    spb::find_subject_request::Identifier::ExternalRef(spb::ExternalRef {
        system: "crm".into(),
        id: format!("C-{n}"),
    })
}

fn import_row(n: usize) -> spb::CreateSubjectRequest {
    spb::CreateSubjectRequest {
        email: format!("indexed{n}@example.no"),
        external_refs: vec![spb::ExternalRef {
            system: "crm".into(),
            id: format!("C-{n}"),
        }],
        request_id: format!("index-{n}"),
        ..Default::default()
    }
}

/// The identifier and reference counts of the index status line whose label starts
/// with `label` (e.g. "version 1 (previous)").
fn index_count(status: &str, label: &str) -> Option<(u64, u64)> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(label)?;
        let mut n = rest.split_whitespace().filter_map(|w| w.parse().ok());
        Some((n.next()?, n.next()?))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_moves_the_blind_index_to_a_new_key_and_lets_the_old_master_key_go() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path();
    let (v1, ch) = start(data, &env((1, 11), &[])).await;
    setup(&ch, &v1, 0).await;
    let crm = v1.token("integration");
    let officer = v1.token("privacy-officer");
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let mut ids = vec![];
    for batch in 0..INDEXED / 500 {
        let rows = (0..500).map(|i| import_row(batch * 500 + i)).collect();
        let done = subjects
            .import_subjects(authed(spb::ImportSubjectsRequest { subjects: rows }, &crm))
            .await
            .expect("import")
            .into_inner();
        ids.extend(done.results.into_iter().map(|r| r.subject_id));
    }
    let mut consents = cpb::consent_service_client::ConsentServiceClient::new(ch.clone());
    let consent = consents
        .record_consent(authed(
            consent_request(&ids[0], true, "index-consent"),
            &crm,
        ))
        .await
        .expect("consent")
        .into_inner();
    let erased = ids[1].clone();
    subjects
        .erase_subject(authed(
            spb::EraseSubjectRequest {
                subject_id: erased.clone(),
                reason: "the subject asked".into(),
                request_id: "index-erase".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("erase");
    v1.sigterm();
    drop(v1);
    drop(ch);

    // Master key version 2, and the index moving from version 1 to 2.
    let mut moving = env((2, 22), &[(1, 11)]);
    moving.push(("VERN_KEYS__INDEX_KEY_VERSION".into(), "2".into()));
    moving.push(("VERN_KEYS__PREVIOUS_INDEX_KEY_VERSION".into(), "1".into()));
    let (v2, ch) = start(data, &moving).await;
    let url = v2.url();
    let crm = v2.token("integration");
    let officer = v2.token("privacy-officer");
    let live = INDEX_LIVE as u64;
    let (clean, before) = status(data, &url);
    assert!(!clean, "a re-index to run fails the command: {before}");
    assert!(before.contains("re-index unfinished"), "{before}");
    assert_eq!(
        index_count(&before, "version 1 (previous)"),
        Some((live, live)),
        "{before}"
    );
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    // Entries still under version 1 are found, by e-mail and by reference.
    for n in [0, 5, INDEXED - 1] {
        for by in [email(n), crm_ref(n)] {
            let s = subjects
                .find_subject(authed(find_by(by), &officer))
                .await
                .expect("found during the re-index")
                .into_inner();
            assert_eq!(s.subject_id, ids[n]);
        }
    }
    // They stay unique: a new subject cannot take an identifier indexed under 1.
    let taken = subjects
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: "indexed7@example.no".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    // A request repeated with its request id is answered as before (its fingerprint
    // was taken under the version 1 index key).
    let replay = subjects
        .import_subjects(authed(
            spb::ImportSubjectsRequest {
                subjects: vec![import_row(3)],
            },
            &crm,
        ))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replay.results[0].subject_id, ids[3]);
    assert!(replay.results[0].replayed, "{replay:?}");
    let mut consents = cpb::consent_service_client::ConsentServiceClient::new(ch.clone());
    let again = consents
        .record_consent(authed(
            consent_request(&ids[0], true, "index-consent"),
            &crm,
        ))
        .await
        .expect("consent replayed")
        .into_inner();
    assert_eq!(again, consent);
    // A subject created now is indexed under version 2 only.
    let newcomer = subjects
        .create_subject(authed(import_row(INDEXED), &crm))
        .await
        .expect("create")
        .into_inner()
        .subject_id;

    ok(vern(data, &url, &["keys", "rotate-master", "--quiet"]));
    let reindexed = ok(vern(
        data,
        &url,
        &["keys", "reindex", "--quiet", "--page-size", "300"],
    ));
    let entries = 2 * INDEX_LIVE;
    assert!(
        reindexed.contains(&format!(
            "subjects  {entries} index entries examined, {entries} re-indexed"
        )),
        "{reindexed}"
    );
    assert_eq!(
        index_count(&reindexed, "version 2 (current)"),
        Some((live + 1, live + 1)),
        "{reindexed}"
    );
    assert_eq!(index_count(&reindexed, "version 1"), None, "{reindexed}");
    assert!(
        reindexed.contains("every index entry is under version 2"),
        "{reindexed}"
    );
    let twice = ok(vern(data, &url, &["keys", "reindex", "--quiet"]));
    assert!(
        twice.contains("subjects  0 index entries examined, 0 re-indexed"),
        "{twice}"
    );
    v2.sigterm();
    drop(v2);
    drop(ch);

    // Version 1 retired entirely: neither a master key nor an index key any more.
    let mut done = env((2, 22), &[]);
    done.push(("VERN_KEYS__INDEX_KEY_VERSION".into(), "2".into()));
    let (v3, ch) = start(data, &done).await;
    let officer = v3.token("privacy-officer");
    let crm = v3.token("integration");
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    for n in [0, 3, 500, INDEXED - 1, INDEXED] {
        let want = if n == INDEXED { &newcomer } else { &ids[n] };
        for by in [email(n), crm_ref(n)] {
            let s = subjects
                .find_subject(authed(find_by(by), &officer))
                .await
                .expect("found after the re-index")
                .into_inner();
            assert_eq!(&s.subject_id, want);
            assert_eq!(s.email, format!("indexed{n}@example.no"));
        }
    }
    for by in [email(1), crm_ref(1)] {
        let gone = subjects
            .find_subject(authed(find_by(by), &officer))
            .await
            .expect_err("erased");
        assert_eq!(gone.code(), Code::NotFound);
    }
    let taken = subjects
        .create_subject(authed(
            spb::CreateSubjectRequest {
                external_refs: vec![spb::ExternalRef {
                    system: "crm".into(),
                    id: "C-7".into(),
                }],
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    let emails = read_all(&ch, &officer).await;
    assert_eq!(emails.len(), INDEX_LIVE + 1);
    let (_, status) = status(data, &v3.url());
    assert_eq!(
        index_count(&status, "version 2 (current)"),
        Some((live + 1, live + 1)),
        "{status}"
    );
}

/// Subjects of the re-index test still live (one of them is erased).
const INDEX_LIVE: usize = INDEXED - 1;

/// The number before `label` in `text` ("… 4 re-wrapped, …") on `service`'s line.
fn number_before(text: &str, service: &str, label: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(service))?;
    let at = line.find(label)?;
    line[..at].split_whitespace().last()?.parse().ok()
}

/// One data key that does not open (damaged bytes) stops nothing: the rotation
/// re-wraps every other key, lists the one it passed over (ids only), `vern keys
/// status` counts it, and the command exits non-zero at the end. A resumed rotation
/// re-wraps 0 keys in every service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_passes_over_a_key_that_does_not_open_and_fails_at_the_end() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path();
    let (v1, ch) = start(data, &env((1, 11), &[])).await;
    setup(&ch, &v1, 0).await;
    let ids = five_subjects(&ch, &v1, |n| format!("pass-over-{n}@example.no")).await;
    v1.sigterm();
    drop(v1);
    drop(ch);
    let damaged = ids[3].clone();
    damage_data_key(data, &damaged).await;

    let (v2, _ch) = start(data, &env((2, 22), &[(1, 11)])).await;
    let url = v2.url();
    let (clean, text) = status(data, &url);
    assert!(!clean, "a key that does not open fails the command: {text}");
    assert!(text.contains("DO NOT OPEN: subjects 1 data keys"), "{text}");
    let out = vern(data, &url, &["keys", "rotate-master", "--quiet"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "a passed-over key fails the command");
    assert_eq!(
        number_before(&stdout, "subjects", "re-wrapped"),
        Some(4),
        "{stdout}"
    );
    assert_eq!(
        number_before(&stdout, "subjects", "do not open"),
        Some(1),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("subjects {TENANT}/{damaged}")),
        "{stderr}"
    );
    assert!(!stderr.contains("pass-over-"), "no personal data: {stderr}");
    // The others are under version 2 now; the damaged one stays under 1.
    let (clean, after) = status(data, &url);
    assert!(!clean, "{after}");
    assert_eq!(
        count(&after, "subjects", "version 2 (current)"),
        Some(4),
        "{after}"
    );
    assert_eq!(count(&after, "subjects", "version 1"), Some(1), "{after}");
    // Resumed: every service re-wraps 0 (each count parsed, not a substring).
    let again = vern(data, &url, &["keys", "rotate-master", "--quiet"]);
    let again_out = String::from_utf8_lossy(&again.stdout).to_string();
    for service in ["subjects", "consents", "rights"] {
        assert_eq!(
            number_before(&again_out, service, "re-wrapped"),
            Some(0),
            "{service}: {again_out}"
        );
    }
    assert!(!again.status.success(), "still listed, still failing");
    drop(v2);
}

/// Damages `subject`'s wrapped data key in the subjects' key store (`vern dev`
/// stopped): its last byte flipped, so it still names its version but does not open.
async fn damage_data_key(data: &Path, subject: &str) {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use vern_subjects::store::entities::subject_key::{Column, Entity};
    let target = vern_kit::db::DbTarget::for_service(None, data, vern_subjects::KEY_STORE);
    let db = vern_kit::db::connect(&target).await.expect("key store");
    let row = Entity::find()
        .filter(Column::SubjectId.eq(subject))
        .one(&db)
        .await
        .expect("read")
        .expect("the key");
    let mut bytes = row.wrapped_key.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    Entity::update_many()
        .col_expr(Column::WrappedKey, Expr::value(bytes))
        .filter(Column::SubjectId.eq(subject))
        .exec(&db)
        .await
        .expect("damage");
    db.close().await.expect("close");
}

/// Five subjects created through `ch` by an integration of `v`, the `n`th with e-mail
/// `email(n)` (and request id from it); their ids.
async fn five_subjects(
    ch: &tonic::transport::Channel,
    v: &Vern,
    email: impl Fn(usize) -> String,
) -> Vec<String> {
    let crm = v.token("integration");
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let mut ids = vec![];
    for n in 0..5 {
        ids.push(
            subjects
                .create_subject(authed(
                    spb::CreateSubjectRequest {
                        email: email(n),
                        request_id: format!("five-{}", email(n)),
                        ..Default::default()
                    },
                    &crm,
                ))
                .await
                .expect("create")
                .into_inner()
                .subject_id,
        );
    }
    ids
}

/// What a run listed as passed over on stderr, one `<service> <tenant>/<id>` each.
fn passed_over_ids(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .skip_while(|l| !l.ends_with("were passed over:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// A re-index opens each subject's identifiers with its data key to digest them again,
/// so a data key that does not open leaves that subject's entry under the old version:
/// every other entry moves, the subject is listed by id (never by an identifier),
/// `vern keys status` counts the entry left, and the command exits non-zero at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_passes_over_a_key_that_does_not_open_and_fails_at_the_end() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path();
    let (v1, ch) = start(data, &env((1, 11), &[])).await;
    setup(&ch, &v1, 0).await;
    let address = |n: usize| format!("reindex-pass-{n}@example.no");
    let ids = five_subjects(&ch, &v1, address).await;
    v1.sigterm();
    drop(v1);
    drop(ch);
    let damaged = ids[3].clone();
    damage_data_key(data, &damaged).await;

    // The index moving from version 1 to 2. The data keys stay under master key
    // version 1 (still configured): a re-index opens them under any configured
    // version, so no rotation is needed for this.
    let mut moving = env((2, 22), &[(1, 11)]);
    moving.push(("VERN_KEYS__INDEX_KEY_VERSION".into(), "2".into()));
    moving.push(("VERN_KEYS__PREVIOUS_INDEX_KEY_VERSION".into(), "1".into()));
    let (v2, ch) = start(data, &moving).await;
    let url = v2.url();
    let out = vern(data, &url, &["keys", "reindex", "--quiet"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "a passed-over subject fails the command: {stdout}{stderr}"
    );
    // One e-mail entry per subject; each count parsed, not matched as a substring.
    assert_eq!(
        number_before(&stdout, "subjects", "index entries examined"),
        Some(5),
        "{stdout}"
    );
    assert_eq!(
        number_before(&stdout, "subjects", "re-indexed"),
        Some(4),
        "{stdout}"
    );
    assert_eq!(
        number_before(&stdout, "subjects", "subjects do not open"),
        Some(1),
        "{stdout}"
    );
    assert_eq!(
        passed_over_ids(&stderr),
        vec![format!("subjects {TENANT}/{damaged}")],
        "{stderr}"
    );
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("reindex-pass-") && !text.contains("example.no"),
            "no personal data: {text}"
        );
    }
    let (clean, after) = status(data, &url);
    assert!(!clean, "{after}");
    assert_eq!(
        index_count(&after, "version 2 (current)"),
        Some((4, 0)),
        "{after}"
    );
    assert_eq!(
        index_count(&after, "version 1 (previous)"),
        Some((1, 0)),
        "{after}"
    );
    assert!(
        after.contains("re-index unfinished: 1 index entries are not under version 2"),
        "{after}"
    );
    // Resumed: only the damaged subject's entry is left; nothing is rewritten and it
    // is listed again.
    let again = vern(data, &url, &["keys", "reindex", "--quiet"]);
    let again_out = String::from_utf8_lossy(&again.stdout).to_string();
    let again_err = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(!again.status.success(), "still listed, still failing");
    assert_eq!(
        number_before(&again_out, "subjects", "index entries examined"),
        Some(1),
        "{again_out}"
    );
    assert_eq!(
        number_before(&again_out, "subjects", "re-indexed"),
        Some(0),
        "{again_out}"
    );
    assert_eq!(
        passed_over_ids(&again_err),
        vec![format!("subjects {TENANT}/{damaged}")],
        "{again_err}"
    );
    v2.sigterm();
    drop(v2);
    drop(ch);

    // Without the previous index version the damaged subject's entry (still under
    // version 1) would be tried by no one: lookups would miss that person and a
    // CreateSubject with their e-mail would make a copy. So subjects refuses to start,
    // naming the version and the setting to put back.
    let mut moved = env((2, 22), &[(1, 11)]);
    moved.push(("VERN_KEYS__INDEX_KEY_VERSION".into(), "2".into()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vern"))
        .args(["dev", "--data-dir"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{}", support::free_port())])
        .args(["--console-listen", "127.0.0.1:0"])
        .envs(moved.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vern dev");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("vern dev started with an index entry under a version it does not try");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let mut refused = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut refused)
        .expect("stderr");
    assert!(!status.success(), "{refused}");
    assert!(
        refused.contains("1 blind-index entries are under index key version 1")
            && refused.contains("keys.previous_index_key_version = 1"),
        "names the entries left, their version and the setting: {refused}"
    );
    assert!(!refused.contains("example.no"), "no identifier: {refused}");
}

/// `vern keys status` along a rotation and a re-index: what it tells the operator to
/// keep at each step, and a master key version that still wraps data keys but is
/// configured nowhere (a rollback that dropped the new key too early) shown as NOT
/// CONFIGURED, with a non-zero exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_status_exits_non_zero_when_a_service_has_no_key_configured_and_says_what_to_keep() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path();
    let (v1, ch) = start(data, &env((1, 11), &[])).await;
    setup(&ch, &v1, 0).await;
    let crm = v1.token("integration");
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    for n in 0..3 {
        subjects
            .create_subject(authed(
                spb::CreateSubjectRequest {
                    email: format!("keep-{n}@example.no"),
                    request_id: format!("keep-{n}"),
                    ..Default::default()
                },
                &crm,
            ))
            .await
            .expect("create");
    }
    v1.sigterm();
    drop(v1);
    drop(ch);

    // Runbook step 2: the new key configured as a previous version only. It wraps
    // nothing yet, but removing it now would break step 3: status says to keep it.
    let (v2, ch) = start(data, &env((1, 11), &[(2, 22)])).await;
    let (clean, text) = status(data, &v2.url());
    assert!(clean, "nothing to finish or fix: {text}");
    assert!(
        text.contains(
            "master key version 2 is configured but not current yet: keep it; the next step of the rotation makes it current"
        ),
        "{text}"
    );
    assert!(!text.contains("remove it"), "{text}");
    assert_eq!(
        count(&text, "subjects", "version 1 (current)"),
        Some(3),
        "{text}"
    );
    v2.sigterm();
    drop(v2);
    drop(ch);

    // Step 3: version 2 current; a subject created now has its key under 2.
    let (v3, ch) = start(data, &env((2, 22), &[(1, 11)])).await;
    let crm = v3.token("integration");
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let newcomer = subjects
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: "keep-new@example.no".into(),
                request_id: "keep-new".into(),
                ..Default::default()
            },
            &crm,
        ))
        .await
        .expect("create")
        .into_inner()
        .subject_id;
    v3.sigterm();
    drop(v3);
    drop(ch);

    // A wrong rollback: version 1 current again, version 2 dropped instead of kept as
    // a previous key. The key under 2 is NOT CONFIGURED, status says to add it back,
    // and reading that subject fails naming no data.
    let (v4, ch) = start(data, &env((1, 11), &[])).await;
    let (clean, text) = status(data, &v4.url());
    assert!(
        !clean,
        "a version in use but not configured fails the command: {text}"
    );
    assert_eq!(
        count(&text, "subjects", "version 2 (NOT CONFIGURED)"),
        Some(1),
        "{text}"
    );
    assert_eq!(
        count(&text, "subjects", "version 1 (current)"),
        Some(3),
        "{text}"
    );
    let lacking = text.lines().find_map(|l| {
        let (n, rest) = l.split_once(' ')?;
        rest.starts_with("subjects data keys are under master key version 2, which")
            .then(|| n.parse::<u64>().ok())
            .flatten()
    });
    assert_eq!(lacking, Some(1), "{text}");
    assert!(
        text.contains("add it to keys.previous_master_keys"),
        "{text}"
    );
    let officer = v4.token("privacy-officer");
    let mut subjects = spb::subject_service_client::SubjectServiceClient::new(ch.clone());
    let missing = subjects
        .get_subject(authed(
            spb::GetSubjectRequest {
                subject_id: newcomer.clone(),
                view: spb::SubjectView::Full as i32,
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect_err("its key's version is not configured");
    assert_eq!(missing.code(), Code::FailedPrecondition, "{missing:?}");
    v4.sigterm();
    drop(v4);
    drop(ch);

    // Put right (version 2 current, 1 previous) and rotated: version 1 wraps nothing
    // but keys the blind index, so status says to keep it and never to remove it.
    let (v5, ch) = start(data, &env((2, 22), &[(1, 11)])).await;
    ok(vern(data, &v5.url(), &["keys", "rotate-master", "--quiet"]));
    let (clean, text) = status(data, &v5.url());
    assert!(clean, "{text}");
    assert_eq!(
        count(&text, "subjects", "version 2 (current)"),
        Some(4),
        "{text}"
    );
    assert!(
        text.contains(
            "master key version 1 wraps no data key but keys the blind indexes (keys.index_key_version): keep it configured"
        ),
        "{text}"
    );
    assert!(
        !text.contains("no data key uses master key version 1"),
        "{text}"
    );
    v5.sigterm();
    drop(v5);
    drop(ch);

    // Re-indexed to version 2: version 1 is still the previous index version, kept
    // for retried requests for a while, so still not to be removed.
    let mut moving = env((2, 22), &[(1, 11)]);
    moving.push(("VERN_KEYS__INDEX_KEY_VERSION".into(), "2".into()));
    moving.push(("VERN_KEYS__PREVIOUS_INDEX_KEY_VERSION".into(), "1".into()));
    let (v6, ch) = start(data, &moving).await;
    ok(vern(data, &v6.url(), &["keys", "reindex", "--quiet"]));
    let (clean, text) = status(data, &v6.url());
    assert!(clean, "{text}");
    assert_eq!(
        index_count(&text, "version 2 (current)"),
        Some((4, 0)),
        "{text}"
    );
    assert!(
        text.contains(
            "every index entry is under version 2. Keep keys.previous_index_key_version (1) while clients may still retry"
        ),
        "{text}"
    );
    assert!(text.contains("(a day is plenty for most)"), "{text}");
    assert!(
        !text.contains("no data key uses master key version 1"),
        "{text}"
    );
    v6.sigterm();
    drop(v6);
    drop(ch);

    // Version 1 retired entirely: nothing left to keep, nothing to fix.
    let mut done = env((2, 22), &[]);
    done.push(("VERN_KEYS__INDEX_KEY_VERSION".into(), "2".into()));
    let (v7, _ch) = start(data, &done).await;
    let (clean, text) = status(data, &v7.url());
    assert!(clean, "{text}");
    assert!(!text.contains("keep it"), "{text}");
    assert!(
        !text.contains("Keep keys.previous_index_key_version"),
        "{text}"
    );
    drop(v7);
}
