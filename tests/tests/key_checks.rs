//! A wrong personal-data key is refused before anything is served. The scenario an
//! operator met: a wrong 32-byte value configured for the master key version that keys
//! the blind index used to start fine, answer NOT_FOUND for an existing person's
//! e-mail and create a duplicate subject on CreateSubject. Now the suite refuses to
//! start, naming the version and the setting (never the key), and once the right key is
//! back the person is found and a second CreateSubject with the e-mail is refused.
//! The same for a tenant's own key. On SQLite and on PostgreSQL.

use base64::Engine as _;
use tonic::Code;
use vern_proto::subjects::v1 as spb;
use vern_tests::{Backend, Suite, authed, create_tenant, token};

const TENANT: &str = "okonomi";
const EMAIL: &str = "kari.nordmann@example.no";

fn b64(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

async fn create(suite: &Suite, crm: &str, request_id: &str) -> Result<String, tonic::Status> {
    spb::subject_service_client::SubjectServiceClient::new(suite.channel.clone())
        .create_subject(authed(
            spb::CreateSubjectRequest {
                email: EMAIL.into(),
                request_id: request_id.into(),
                ..Default::default()
            },
            crm,
        ))
        .await
        .map(|r| r.into_inner().subject_id)
}

async fn subjects_with_the_email(suite: &Suite, officer: &str) -> Vec<String> {
    let found = spb::subject_service_client::SubjectServiceClient::new(suite.channel.clone())
        .find_subject(authed(
            spb::FindSubjectRequest {
                identifier: Some(spb::find_subject_request::Identifier::Email(EMAIL.into())),
                ..Default::default()
            },
            officer,
        ))
        .await;
    let listed = spb::subject_service_client::SubjectServiceClient::new(suite.channel.clone())
        .list_subjects(authed(
            spb::ListSubjectsRequest {
                page_size: 1000,
                ..Default::default()
            },
            officer,
        ))
        .await
        .expect("list")
        .into_inner()
        .subjects;
    assert!(found.is_ok(), "found by e-mail: {found:?}");
    listed.into_iter().map(|s| s.subject_id).collect()
}

async fn a_wrong_key_refuses_to_start(backend: Backend) {
    let Some(mut suite) = Suite::start_with(backend, |c| {
        c.keys.tenant_keys.insert("eget".into(), b64(7));
    })
    .await
    else {
        return;
    };
    create_tenant(&suite.channel, TENANT, "Økonomi").await;
    create_tenant(&suite.channel, "eget", "Eget").await;
    let crm = token(&["integration"], &[TENANT], 600);
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    let first = create(&suite, &crm, "first").await.expect("created");

    // A wrong master key (version 1: it keys the blind index and wraps every data
    // key), then a wrong tenant key: the suite refuses to start, naming them.
    let wrong = b64(9);
    for (adjust, name, setting) in [
        (
            Box::new({
                let wrong = wrong.clone();
                move |c: &mut vern_kit::config::Config| c.keys.master_key = Some(wrong)
            }) as Box<dyn FnOnce(&mut vern_kit::config::Config)>,
            "master/1",
            "keys.master_key",
        ),
        (
            Box::new(|c: &mut vern_kit::config::Config| {
                c.keys.tenant_keys.insert("eget".into(), b64(8));
            }),
            "tenant/eget",
            "keys.tenant_keys.eget",
        ),
    ] {
        let refused = suite
            .restart_with(adjust)
            .await
            .expect_err("a wrong key is refused at start");
        let text = format!("{refused:#}");
        assert!(
            text.contains(name) && text.contains(setting),
            "names the key and its setting: {text}"
        );
        assert!(
            !text.contains(&wrong) && !text.contains(&b64(8)),
            "never the key"
        );
        // The right keys again: it starts.
        suite
            .restart_with(|c| {
                c.keys.master_key = Some("dmVybi1lMmUtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=".into());
                c.keys.tenant_keys.insert("eget".into(), b64(7));
            })
            .await
            .expect("the right keys start");
    }
    // Nothing was created meanwhile: the person is found by e-mail, once, and a second
    // CreateSubject with the e-mail is refused.
    assert_eq!(subjects_with_the_email(&suite, &officer).await, vec![first]);
    let again = create(&suite, &crm, "second")
        .await
        .expect_err("a duplicate");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    suite.stop().await;
}

#[tokio::test]
async fn a_wrong_key_refuses_to_start_on_sqlite() {
    a_wrong_key_refuses_to_start(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_wrong_key_refuses_to_start_on_postgres() {
    a_wrong_key_refuses_to_start(Backend::Postgres).await;
}

/// A refused start: its error holds every one of `texts` and none of `keys`.
fn assert_refused(refused: anyhow::Result<()>, texts: &[&str], keys: &[&str]) {
    let text = format!("{:#}", refused.expect_err("refused at start"));
    for t in texts {
        assert!(text.contains(t), "{t:?} in: {text}");
    }
    for k in keys {
        assert!(!text.contains(k), "never the key: {text}");
    }
}

/// The person is found by e-mail, the only subject (`id`), and a second CreateSubject
/// (request `request_id`) with the e-mail is refused.
async fn found_once_not_again(suite: &Suite, crm: &str, officer: &str, id: &str, request_id: &str) {
    assert_eq!(
        subjects_with_the_email(suite, officer).await,
        vec![id.to_owned()]
    );
    let again = create(suite, crm, request_id)
        .await
        .expect_err("a duplicate");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
}

/// Data keys that do not open with a department's now-configured key (its own key
/// newly set, or removed), and index entries under a version the process does not
/// try, are refused at start; with the keys in use the person is found once and not
/// created again.
async fn a_department_key_switch_or_an_untried_index_version_refuses_to_start(backend: Backend) {
    const K1: &str = "dmVybi1lMmUtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=";
    const KULTUR: &str = "kultur";
    let kultur_key = b64(7);
    let Some(mut suite) = Suite::start_with(backend, |c| {
        c.keys.tenant_keys.insert(KULTUR.into(), kultur_key.clone());
    })
    .await
    else {
        return;
    };
    create_tenant(&suite.channel, TENANT, "Økonomi").await;
    create_tenant(&suite.channel, KULTUR, "Kultur").await;
    let crm = token(&["integration"], &[TENANT], 600);
    let officer = token(&["privacy-officer"], &[TENANT], 600);
    let first = create(&suite, &crm, "first").await.expect("created");

    // (a) Okonomi's data is under the master-derived key: its own key newly set is
    // refused.
    let own = b64(5);
    assert_refused(
        suite
            .restart_with(|c| {
                c.keys.tenant_keys.insert(TENANT.into(), own.clone());
            })
            .await,
        &["data keys do not open with", "keys.tenant_keys.okonomi"],
        &[&own, K1, &kultur_key],
    );
    suite
        .restart_with(|_| {})
        .await
        .expect("the keys in use start");
    found_once_not_again(&suite, &crm, &officer, &first, "second").await;

    // Master key version 2 current, 1 previous, the index moved to 2 without trying 1:
    // the entries under 1 would not be found.
    let k2 = b64(6);
    let rotated = |previous_index: Option<u32>| {
        let k2 = k2.clone();
        move |c: &mut vern_kit::config::Config| {
            c.keys.master_key = Some(k2);
            c.keys.master_key_version = 2;
            c.keys.previous_master_keys.insert("1".into(), K1.into());
            c.keys.index_key_version = Some(2);
            c.keys.previous_index_key_version = previous_index;
        }
    };
    assert_refused(
        suite.restart_with(rotated(None)).await,
        &["index key version 1", "keys.previous_index_key_version"],
        &[&k2, K1, &kultur_key],
    );
    suite
        .restart_with(rotated(Some(1)))
        .await
        .expect("trying version 1 starts");
    found_once_not_again(&suite, &crm, &officer, &first, "third").await;

    // (b) Kultur, keyed by its own key from the first start, with data: the key
    // removed is refused.
    let kultur_crm = token(&["integration"], &[KULTUR], 600);
    let kultur_officer = token(&["privacy-officer"], &[KULTUR], 600);
    let kultur_first = create(&suite, &kultur_crm, "kultur-first")
        .await
        .expect("created in kultur");
    assert_refused(
        suite
            .restart_with(|c| {
                c.keys.tenant_keys.remove(KULTUR);
            })
            .await,
        &["data keys do not open with", "keys.tenant_keys.kultur"],
        &[&kultur_key, &k2, K1],
    );
    suite
        .restart_with(|_| {})
        .await
        .expect("the keys in use start");
    found_once_not_again(
        &suite,
        &kultur_crm,
        &kultur_officer,
        &kultur_first,
        "kultur-second",
    )
    .await;
    found_once_not_again(&suite, &crm, &officer, &first, "fourth").await;
    suite.stop().await;
}

#[tokio::test]
async fn a_department_key_switch_or_an_untried_index_version_refuses_to_start_on_sqlite() {
    a_department_key_switch_or_an_untried_index_version_refuses_to_start(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_department_key_switch_or_an_untried_index_version_refuses_to_start_on_postgres() {
    a_department_key_switch_or_an_untried_index_version_refuses_to_start(Backend::Postgres).await;
}

/// `vern keys verify` compares a configuration with the databases before a rollout,
/// starting nothing: the right key matches, a wrong one is named and fails the
/// command, and no database to compare with is an error, not "all well".
#[tokio::test]
async fn vern_keys_verify_checks_a_key_before_a_rollout() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    let verify = |key: &str, dir: &std::path::Path| {
        std::process::Command::new(vern_tests::topology::vern_binary())
            .args(["keys", "verify"])
            .env_remove("VERN_CONFIG")
            .env("VERN_DATA_DIR", dir)
            .env("VERN_KEYS__MASTER_KEY", key)
            .output()
            .expect("vern runs")
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let right = verify(
        "dmVybi1lMmUtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=",
        &suite.data_dir(),
    );
    assert!(right.status.success(), "{}", text(&right));
    for service in ["subjects", "consents", "rights"] {
        assert!(
            text(&right)
                .lines()
                .any(|l| l.starts_with(service) && l.contains("master/1") && l.contains("matches")),
            "{}",
            text(&right)
        );
    }
    let wrong = verify(&b64(9), &suite.data_dir());
    assert!(!wrong.status.success(), "{}", text(&wrong));
    assert!(text(&wrong).contains("DIFFERS"), "{}", text(&wrong));
    assert!(text(&wrong).contains("keys.master_key"), "{}", text(&wrong));
    assert!(!text(&wrong).contains(&b64(9)), "never the key");
    let nowhere = tempfile::tempdir().expect("dir");
    let blind = verify(&b64(9), nowhere.path());
    assert!(!blind.status.success(), "{}", text(&blind));
    assert!(
        text(&blind).contains("no subjects database"),
        "{}",
        text(&blind)
    );
    suite.stop().await;
}

/// `vern subjects duplicates` finds what a past wrong key left behind, planted here
/// directly in the databases: a second live subject holding an existing person's
/// e-mail (sealed under its own data key, its index entry missing, as a copy made under
/// a wrong index key would be), and a subject whose data key was wrapped under a wrong
/// key. It names them by id, never by e-mail, and changes nothing.
#[tokio::test]
async fn vern_subjects_duplicates_finds_a_planted_copy() {
    use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter};
    use vern_subjects::domain::{IdentifierKind, identifier_aad, key_aad};
    use vern_subjects::store::entities::{subject, subject_key};

    const K1: &str = "dmVybi1lMmUtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=";
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    create_tenant(&suite.channel, TENANT, "Økonomi").await;
    let crm = token(&["integration"], &[TENANT], 600);
    let first = create(&suite, &crm, "first").await.expect("created");
    let duplicates = || {
        let o = std::process::Command::new(vern_tests::topology::vern_binary())
            .args(["subjects", "duplicates"])
            .env_remove("VERN_CONFIG")
            .env("VERN_DATA_DIR", suite.data_dir())
            .env("VERN_KEYS__MASTER_KEY", K1)
            .output()
            .expect("vern runs");
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let (clean, text) = duplicates();
    assert!(clean, "{text}");
    assert!(text.contains("1 live subjects examined"), "{text}");

    // Plant the copy and the unopenable subject.
    let main = vern_kit::db::connect(&suite.db_target("subjects"))
        .await
        .expect("subjects db");
    let keys_db = vern_kit::db::connect(&suite.db_target("subject_keys"))
        .await
        .expect("key store");
    let original = subject::Entity::find()
        .filter(subject::Column::SubjectId.eq(first.as_str()))
        .one(&main)
        .await
        .expect("read")
        .expect("the subject");
    let original_key = subject_key::Entity::find()
        .filter(subject_key::Column::SubjectId.eq(first.as_str()))
        .one(&keys_db)
        .await
        .expect("read")
        .expect("its key");
    let ring =
        vern_seal::keyring::Keyring::from_base64(Some(K1), &Default::default()).expect("ring");
    let wrong =
        vern_seal::keyring::Keyring::from_base64(Some(&b64(9)), &Default::default()).expect("ring");
    for (id, kek) in [
        ("0190b6a0-0000-7000-8000-00000000c0c1", &ring),
        ("0190b6a0-0000-7000-8000-00000000c0c2", &wrong),
    ] {
        let kek = kek.tenant(TENANT).expect("tenant keys").kek;
        let dek = vern_seal::crypto::DataKey::generate();
        let mut row = original.clone();
        row.subject_id = id.into();
        row.email_ct = Some(vern_seal::crypto::seal(
            &dek,
            EMAIL.as_bytes(),
            &identifier_aad(TENANT, id, IdentifierKind::Email),
        ));
        subject::ActiveModel::from(row)
            .insert(&main)
            .await
            .expect("planted");
        let mut key = original_key.clone();
        key.subject_id = id.into();
        key.wrapped_key = kek.wrap(&dek, &key_aad(TENANT, id));
        subject_key::ActiveModel::from(key)
            .insert(&keys_db)
            .await
            .expect("planted key");
    }

    let (clean, text) = duplicates();
    assert!(!clean, "findings exit non-zero: {text}");
    assert!(text.contains("3 live subjects examined"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("shared email")
            && l.contains(&first)
            && l.contains("0190b6a0-0000-7000-8000-00000000c0c1")
            && !l.contains("c0c2")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("does not open") && l.contains("c0c2")),
        "{text}"
    );
    assert!(!text.contains(EMAIL), "never the identifier: {text}");
    // It changed nothing: the copy is still there, unindexed.
    assert_eq!(
        subject::Entity::find()
            .all(&main)
            .await
            .expect("read")
            .len(),
        3
    );
    suite.stop().await;
}
