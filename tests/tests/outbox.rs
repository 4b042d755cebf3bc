//! `vern outbox list|retry --addr` ask the running services (ListOutboxRows,
//! RetryOutboxRows through the gateway) instead of reading their databases: a platform
//! admin sees a parked row (never its payload) and puts it back; anyone else is
//! refused; both calls are in the platform's audit chain.

use std::time::{Duration, Instant};

use vern_tests::{Backend, Suite, token};

// The CLI runs while this process serves it: the runtime needs a thread besides the
// one waiting for the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_commands_ask_the_services_with_addr_on_vern_dev() {
    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    ask_the_services(suite).await;
}

/// The same through the topology's gateway, to one of two tenants replicas, each its
/// own `vern serve` process on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_commands_ask_the_services_with_addr_on_the_topology() {
    let Some(suite) = Suite::start(Backend::Replicas).await else {
        return;
    };
    ask_the_services(suite).await;
}

async fn ask_the_services(suite: Suite) {
    // A parked row in the tenants service's outbox, as a refused delivery leaves it.
    // Inserted parked: a row enqueued first and parked after could be taken by a
    // running relay in between (the topology's replicas poll) and parked with its own
    // reason.
    {
        use sea_orm::{ActiveModelTrait, ActiveValue::Set};
        let db = vern_kit::db::connect(&suite.db_target("tenants"))
            .await
            .expect("tenants db");
        let now = chrono::Utc::now();
        vern_kit::outbox::entity::ActiveModel {
            tenant_id: Set("dept-a".to_owned()),
            topic: Set("purpose".to_owned()),
            payload: Set(b"PAYLOAD-SECRET".to_vec()),
            attempts: Set(1),
            create_time: Set(now),
            parked_at: Set(Some(now)),
            park_reason: Set(Some(
                "ApplyPurposes: InvalidArgument: purposes[0].key".to_owned(),
            )),
            ..Default::default()
        }
        .insert(&db)
        .await
        .expect("a parked row");
    }
    // Run from a directory with no databases: only the services can answer.
    let elsewhere = tempfile::tempdir().expect("dir");
    let vern = |token: &str, args: &[&str]| {
        let o = tokio::task::block_in_place(|| {
            std::process::Command::new(vern_tests::topology::vern_binary())
                .args(args)
                .args([
                    "--addr",
                    &format!("http://{}", suite.addr),
                    "--token",
                    token,
                ])
                .env_remove("VERN_CONFIG")
                .env_remove("VERN_DATABASE_URL")
                .env("VERN_DATA_DIR", elsewhere.path())
                .current_dir(elsewhere.path())
                .output()
                .expect("vern runs")
        });
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let admin = token(&["platform-admin"], &[], 600);
    let (ok, listed, err) = vern(&admin, &["outbox", "list", "--parked"]);
    assert!(ok, "{err}");
    let row = listed
        .lines()
        .find(|l| l.starts_with("tenants"))
        .unwrap_or_else(|| panic!("the parked row: {listed}"));
    assert!(row.contains("dept-a") && row.contains("purpose"), "{row}");
    assert!(row.contains("ApplyPurposes: InvalidArgument"), "{row}");
    assert!(!listed.contains("PAYLOAD"), "never the payload: {listed}");

    let crm = token(&["integration"], &["dept-a"], 600);
    let (ok, _, err) = vern(&crm, &["outbox", "list"]);
    assert!(!ok, "an integration may not read outboxes");
    assert!(err.contains("PermissionDenied"), "{err}");

    let (ok, retried, err) = vern(
        &admin,
        &["outbox", "retry", "--all", "--service", "tenants"],
    );
    assert!(ok, "{err}");
    assert!(
        retried.contains("tenants: 1 parked row(s) re-queued"),
        "{retried}"
    );

    // Both calls are operator actions in the platform's chain.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = vern_tests::chain_events(&suite.channel, "vern-platform").await;
        let has = |action: &str| {
            events
                .iter()
                .any(|e| e.service == "tenants" && e.action == action && e.status_code == 0)
        };
        if has("ListOutboxRows") && has("RetryOutboxRows") {
            break;
        }
        assert!(Instant::now() < deadline, "not in the platform chain");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    suite.stop().await;
}
