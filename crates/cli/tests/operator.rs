//! Operator commands of the `vern` binary against the services' databases: `vern
//! migrate` (migrations only, several at once on PostgreSQL) and `vern outbox list` /
//! `retry`.

mod support;

use support::stdout;

use std::path::Path;
use std::process::{Command, Output};

fn vern(data_dir: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vern"));
    cmd.args(args)
        .env_remove("VERN_CONFIG")
        .env_remove("VERN_DATABASE_URL")
        .env_remove("VERN_KEYS__MASTER_KEY")
        .env("VERN_DATA_DIR", data_dir)
        .env("VERN_LOG_LEVEL", "warn")
        .current_dir(data_dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run vern")
}

/// `vern migrate` runs every store's migrations without keys or a server, and says
/// what it did; then `vern outbox` lists a parked row (never its payload) and
/// re-queues it.
#[test]
fn migrate_then_list_and_retry_parked_outbox_rows() {
    let dir = tempfile::tempdir().expect("dir");
    let out = stdout(&vern(dir.path(), &[], &["migrate"]));
    for store in [
        "tenants",
        "subjects",
        "subject_keys",
        "consents",
        "retention",
        "rights",
        "audit",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{store}: ")) && l.contains("applied")),
            "{store}: {out}"
        );
    }
    // Nothing but the databases was written: no dev keys, no audit signing key.
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|f| !f.ends_with(".db") && !f.ends_with("-wal") && !f.ends_with("-shm"))
        .collect();
    files.sort();
    assert!(files.is_empty(), "{files:?}");
    let again = stdout(&vern(
        dir.path(),
        &[],
        &["migrate", "--service", "subjects"],
    ));
    assert!(
        again.contains("subjects: up to date") && again.contains("subject_keys: up to date"),
        "{again}"
    );

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let target = vern_kit::db::DbTarget::for_service(None, dir.path(), "tenants");
    rt.block_on(async {
        let db = vern_kit::db::connect(&target).await.expect("tenants db");
        for _ in 0..2 {
            vern_kit::outbox::enqueue(&db, "dept-a", "purpose", b"PAYLOAD-SECRET".to_vec())
                .await
                .expect("enqueue");
        }
        use sea_orm::sea_query::Expr;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        use vern_kit::outbox::entity::{Column, Entity};
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .expect("time")
            .to_utc();
        Entity::update_many()
            .col_expr(Column::ParkedAt, Expr::value(at))
            .col_expr(
                Column::ParkReason,
                Expr::value("ApplyPurposes: InvalidArgument: purposes[0].key"),
            )
            .col_expr(Column::Attempts, Expr::value(1))
            .filter(Column::Id.eq(1))
            .exec(&db)
            .await
            .expect("park");
        db.close().await.expect("close");
    });

    let all = stdout(&vern(dir.path(), &[], &["outbox", "list"]));
    assert_eq!(all.lines().count(), 3, "{all}");
    assert!(!all.contains("PAYLOAD"), "{all}");
    let parked = stdout(&vern(
        dir.path(),
        &[],
        &["outbox", "list", "--parked", "--service", "tenants"],
    ));
    let lines: Vec<&str> = parked.lines().collect();
    assert_eq!(lines.len(), 2, "{parked}");
    assert!(lines[0].starts_with("SERVICE"), "{parked}");
    for cell in [
        "tenants",
        " 1 ",
        "dept-a",
        "purpose",
        "2026-12-01T10:00:00Z",
        "purposes[0].key",
    ] {
        assert!(lines[1].contains(cell), "{cell}: {parked}");
    }

    // Ids are per service: --id needs --service; one of --id and --all is needed.
    for args in [
        &["outbox", "retry", "--id", "1"][..],
        &["outbox", "retry", "--service", "tenants"][..],
    ] {
        let o = vern(dir.path(), &[], args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
    let o = vern(dir.path(), &[], &["outbox", "list", "--service", "audit"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has no outbox"),
        "{o:?}"
    );

    let done = stdout(&vern(
        dir.path(),
        &[],
        &["outbox", "retry", "--service", "tenants", "--id", "1", "2"],
    ));
    assert!(done.contains("tenants: 1 of 2 rows re-queued"), "{done}");
    let none = stdout(&vern(dir.path(), &[], &["outbox", "list", "--parked"]));
    assert_eq!(none.trim(), "no parked outbox rows");
    let all = stdout(&vern(dir.path(), &[], &["outbox", "list"]));
    assert!(
        all.lines()
            .nth(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .is_some_and(|cells| cells[4] == "0" && cells[6..] == ["-", "-"]),
        "re-queued with its attempts reset: {all}"
    );

    // Settings that point nowhere: an error naming them, never "no rows", and a retry
    // that cannot see re-queues nothing and says so.
    let nowhere = tempfile::tempdir().expect("dir");
    for args in [
        &["outbox", "list"][..],
        &["outbox", "list", "--parked"][..],
        &["outbox", "retry", "--all"][..],
    ] {
        let o = vern(nowhere.path(), &[], args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} must fail: {o:?}");
        assert!(
            err.contains("no tenants database") && err.contains("VERN_DATABASE_URL"),
            "{args:?}: {err}"
        );
        assert!(!String::from_utf8_lossy(&o.stdout).contains("no outbox rows"));
    }
}

/// Several `vern migrate` at once on a fresh PostgreSQL database (a Job and pods
/// starting together) all succeed.
#[test]
fn concurrent_vern_migrate_on_postgres() {
    let Some((env, cleanup)) = support::postgres_env(None) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let children: Vec<_> = (0..4)
        .map(|_| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_vern"));
            cmd.arg("migrate")
                .env_remove("VERN_CONFIG")
                .env("VERN_DATA_DIR", dir.path())
                .env("VERN_LOG_LEVEL", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            for (k, v) in &env {
                cmd.env(k, v);
            }
            cmd.spawn().expect("spawn")
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(cleanup.run());
    let mut applied = 0;
    for o in &outputs {
        let out = stdout(o);
        assert_eq!(out.lines().count(), 7, "{out}");
        applied += out.lines().filter(|l| l.contains("applied")).count();
    }
    // Each store was migrated by exactly one of them; the others found it done.
    assert_eq!(applied, 7, "{outputs:?}");
    assert!(
        std::fs::read_dir(dir.path()).expect("ls").next().is_none(),
        "nothing written to the data dir on PostgreSQL"
    );
}
