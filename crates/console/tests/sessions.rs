//! The console's session store on SQLite and on PostgreSQL: what one replica saves
//! another loads, an expired session is never loaded and is swept, and a new session
//! never takes over an existing one's id; sealed, a session's tokens are not in the
//! clear and it opens only under its key and its own id.

use std::collections::HashMap;

use sea_orm::EntityTrait;
use time::{Duration, OffsetDateTime};
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{ExpiredDeletion, SessionStore};
use vern_console::sessions::{Sessions, entity};
use vern_kit::db::DbTarget;

vern_kit::store_test_suite!("console":
    a_session_one_replica_saves_another_loads,
    expired_sessions_are_never_loaded_and_are_swept,
    a_new_session_never_takes_an_existing_id,
    sealed_sessions_hold_no_token_in_the_clear_and_open_only_under_their_key_and_id,
);

fn record(who: &str, expires_in: Duration) -> Record {
    let mut data = HashMap::new();
    data.insert("who".to_owned(), serde_json::json!(who));
    Record {
        id: Id::default(),
        data,
        // Whole seconds: what the store keeps.
        expiry_date: OffsetDateTime::from_unix_timestamp(
            (OffsetDateTime::now_utc() + expires_in).unix_timestamp(),
        )
        .expect("time"),
    }
}

async fn rows(s: &Sessions) -> usize {
    entity::Entity::find()
        .all(s.connection())
        .await
        .expect("rows")
        .len()
}

async fn a_session_one_replica_saves_another_loads(target: DbTarget) {
    let (a, b) = (
        Sessions::open(&target).await.expect("replica a"),
        Sessions::open(&target).await.expect("replica b"),
    );
    let mut r = record("officer-1", Duration::hours(1));
    a.create(&mut r).await.expect("create");
    let loaded = b.load(&r.id).await.expect("load").expect("found");
    assert_eq!(loaded.id, r.id);
    assert_eq!(loaded.data, r.data);
    assert_eq!(loaded.expiry_date, r.expiry_date);

    // Changed on b (a new language, a refreshed token): a sees it.
    r.data.insert("lang".to_owned(), serde_json::json!("en"));
    b.save(&r).await.expect("save");
    let again = a.load(&r.id).await.expect("load").expect("found");
    assert_eq!(again.data["lang"], serde_json::json!("en"));
    assert_eq!(rows(&a).await, 1, "saved over, not beside");

    // Signed out on a: gone for b.
    a.delete(&r.id).await.expect("delete");
    assert!(b.load(&r.id).await.expect("load").is_none());
    assert!(a.load(&Id::default()).await.expect("load").is_none());
}

async fn expired_sessions_are_never_loaded_and_are_swept(target: DbTarget) {
    let s = Sessions::open(&target).await.expect("open");
    let mut old = record("gone", Duration::seconds(-5));
    let mut live = record("here", Duration::hours(8));
    s.create(&mut old).await.expect("create");
    s.create(&mut live).await.expect("create");
    assert!(
        s.load(&old.id).await.expect("load").is_none(),
        "an expired session is never loaded"
    );
    assert!(s.load(&live.id).await.expect("load").is_some());
    assert_eq!(rows(&s).await, 2);
    s.delete_expired().await.expect("sweep");
    assert_eq!(
        rows(&s).await,
        1,
        "the expired one is swept, the live one stays"
    );
    assert!(s.load(&live.id).await.expect("load").is_some());
}

async fn a_new_session_never_takes_an_existing_id(target: DbTarget) {
    let s = Sessions::open(&target).await.expect("open");
    let mut first = record("first", Duration::hours(1));
    s.create(&mut first).await.expect("create");
    let mut second = record("second", Duration::hours(1));
    second.id = first.id;
    s.create(&mut second).await.expect("create");
    assert_ne!(second.id, first.id, "a taken id is drawn again");
    let kept = s.load(&first.id).await.expect("load").expect("found");
    assert_eq!(kept.data["who"], serde_json::json!("first"));
    let new = s.load(&second.id).await.expect("load").expect("found");
    assert_eq!(new.data["who"], serde_json::json!("second"));
}

async fn sealed_sessions_hold_no_token_in_the_clear_and_open_only_under_their_key_and_id(
    target: DbTarget,
) {
    use sea_orm::{ActiveModelTrait, ActiveValue::Set};
    let key = [7u8; 32];
    let (a, b) = (
        Sessions::open(&target).await.expect("a").sealed_with(key),
        Sessions::open(&target).await.expect("b").sealed_with(key),
    );
    let mut r = record("refresh-token-secret-value", Duration::hours(1));
    a.create(&mut r).await.expect("create");
    let stored = entity::Entity::find_by_id(r.id.to_string())
        .one(a.connection())
        .await
        .expect("row")
        .expect("found");
    let clear = String::from_utf8_lossy(&stored.data);
    assert!(
        !clear.contains("refresh-token-secret-value") && !clear.contains("who"),
        "sealed: {clear}"
    );
    // Another replica with the same key opens it.
    assert_eq!(
        b.load(&r.id).await.expect("load").expect("found").data,
        r.data
    );
    // Under another key, or with no key: not loaded (the person signs in again).
    let other = Sessions::open(&target)
        .await
        .expect("c")
        .sealed_with([8u8; 32]);
    assert!(other.load(&r.id).await.expect("load").is_none());
    let unsealed = Sessions::open(&target).await.expect("d");
    assert!(unsealed.load(&r.id).await.expect("load").is_none());
    // The sealed data copied to another session id does not open there.
    let moved = Id::default();
    entity::ActiveModel {
        id: Set(moved.to_string()),
        data: Set(stored.data.clone()),
        expires_at: Set(stored.expires_at),
    }
    .insert(a.connection())
    .await
    .expect("copy");
    assert!(a.load(&moved).await.expect("load").is_none());
    // An unsealed session of an older version is not loaded by a sealing store.
    let mut old = record("older", Duration::hours(1));
    unsealed.create(&mut old).await.expect("create");
    assert!(a.load(&old.id).await.expect("load").is_none());
    assert!(unsealed.load(&old.id).await.expect("load").is_some());
}
