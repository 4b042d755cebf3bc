//! Key check values: a process given the wrong personal-data key refuses to start.
//!
//! A wrong 32-byte value for a key version that keys the blind index does not fail
//! loudly by itself: lookups by e-mail find nothing, and a uniqueness check finds no
//! match, so a second subject is created for an existing person — a copy an erasure by
//! e-mail would miss. So every configured key (each master key version, each tenant's
//! own key) has a check value stored in each service's database the first time the
//! service starts with it: HMAC-SHA-256 of a fixed label under the key, which reveals
//! nothing of it (`vern_seal::crypto::check_value_of_master`). Each later start
//! compares: a key whose value differs stops the process before it serves, with an
//! error naming the version and the setting, never the key ([`verify_and_record`]).
//! `vern keys verify` runs the same comparison without starting anything
//! ([`compare`]).
//!
//! The one-time risk: a database written before check values existed gets them from
//! the keys configured at its first start with this release. Were a wrong key configured
//! at that very start, its value would be recorded as the reference; ARCHITECTURE.md
//! ("Master key versions") says how to check the keys first.

use crate::db::Db;
use sea_orm::sea_query::OnConflict;
use sea_orm::{DbErr, EntityTrait, QuerySelect};
use sea_orm_migration::prelude::{
    ColumnDef, DeriveIden, MigrationName, MigrationTrait, SchemaManager, Table,
};
use vern_seal::keyring::{ConfiguredKey, Keyring};

/// The stored check values.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// The check value of one key.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "key_checks")]
    pub struct Model {
        /// `master/<version>` or `tenant/<id>`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        /// Hex of HMAC-SHA-256(key, `vern/key-check/v1`).
        pub check_value: String,
        /// When it was first recorded (RFC 3339).
        pub first_used: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// How a configured key compares with the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// The value stored for its name is its own.
    Matches,
    /// No value is stored for it yet: this is its first use here.
    FirstUse,
    /// Another key was used under its name: it must not be used.
    Differs,
}

/// A configured key whose check value differs from the one stored.
#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    /// Names the key's version (or tenant) and setting, never the key.
    #[error(
        "{setting} is not the key this database first used as {name} (its check value differs): refusing to start rather than miss what was written under the right key or write under the wrong one. Configure the key in use before; `vern keys verify` checks a key without starting a service"
    )]
    Differs {
        /// `master/<version>` or `tenant/<id>`.
        name: String,
        /// The setting that holds it.
        setting: String,
    },
    /// A department's data keys were wrapped under another key than the one configured
    /// for it now (its own key added or removed while it holds data). Names the
    /// department and the settings, never a key.
    #[error(
        "department {tenant}'s data keys do not open with {configured}: they were written under {written}. Refusing to start rather than miss the department's data or write some of it under another key. Configure the key in use before (moving a department to another key needs its data keys re-wrapped, which vern does not do)"
    )]
    DepartmentKeyChanged {
        /// The department (tenant id).
        tenant: String,
        /// The key configured for it now.
        configured: String,
        /// The key its data keys are under.
        written: String,
    },
    /// The values could not be read or written.
    #[error("reading the key check values failed: {0}")]
    Db(#[from] DbErr),
}

/// Data keys of a department tried at start: any one that opens shows the key is right.
const DEPARTMENT_SAMPLE: u64 = 3;

/// The departments whose key is their own now or was when first used here: each one
/// holding data keys must open them with the key configured for it now. A department
/// that gains its own key while its data is under the master key (or loses it) would
/// otherwise start fine and then find none of its people by e-mail — and let a
/// duplicate in — since the blind index is keyed by that key too.
pub async fn verify_departments<E>(
    db: &Db,
    keyring: &Keyring,
    key_db: &Db,
    keys: &crate::keys::WrappedKeys<E>,
) -> Result<(), KeyCheckError>
where
    E: EntityTrait,
    E::Model: Sync,
{
    use vern_seal::keyring::UnwrapError;
    let recorded: Vec<String> = entity::Entity::find()
        .select_only()
        .column(entity::Column::Name)
        .into_tuple::<String>()
        .all(db)
        .await?
        .into_iter()
        .filter_map(|n| n.strip_prefix("tenant/").map(str::to_owned))
        .collect();
    let mut departments: Vec<(String, bool)> = keyring
        .check_values()
        .into_iter()
        .filter_map(|(k, _)| match k {
            ConfiguredKey::Tenant(t) => Some((t, true)),
            _ => None,
        })
        .collect();
    for t in recorded {
        if !departments.iter().any(|(d, _)| *d == t) {
            departments.push((t, false));
        }
    }
    for (tenant, own) in departments {
        let sample = keys.of_tenant(key_db, &tenant, DEPARTMENT_SAMPLE).await?;
        if sample.is_empty() {
            continue;
        }
        let own_setting = format!("keys.tenant_keys.{tenant}");
        let master = "the master key".to_owned();
        let (configured, written) = if own {
            (own_setting, master)
        } else {
            (
                format!("the master key ({own_setting} is not configured)"),
                own_setting,
            )
        };
        let Some(kek) = keyring.tenant(&tenant) else {
            // No key at all for it: every call of the department is refused as it is.
            continue;
        };
        let opens = sample.iter().any(|(owner, wrapped)| {
            !matches!(
                kek.kek.unwrap(wrapped, &(keys.aad)(&tenant, owner)),
                Err(UnwrapError::Crypto(_) | UnwrapError::DoesNotOpen(_))
            )
        });
        if !opens {
            return Err(KeyCheckError::DepartmentKeyChanged {
                tenant,
                configured,
                written,
            });
        }
    }
    Ok(())
}

fn hex(value: &[u8; 32]) -> String {
    value.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every configured key of `keyring` compared with the values stored in `db`, changing
/// nothing.
pub async fn compare(db: &Db, keyring: &Keyring) -> Result<Vec<(ConfiguredKey, KeyCheck)>, DbErr> {
    let stored: std::collections::HashMap<String, String> = entity::Entity::find()
        .select_only()
        .column(entity::Column::Name)
        .column(entity::Column::CheckValue)
        .into_tuple()
        .all(db)
        .await?
        .into_iter()
        .collect();
    Ok(keyring
        .check_values()
        .into_iter()
        .map(|(key, value)| {
            let state = match stored.get(&key.name()) {
                None => KeyCheck::FirstUse,
                Some(v) if *v == hex(&value) => KeyCheck::Matches,
                Some(_) => KeyCheck::Differs,
            };
            (key, state)
        })
        .collect())
}

/// At start: refuses a configured key whose check value differs from the stored one,
/// and records the values of keys used here for the first time. Two replicas starting
/// together record the same value once (the first insert wins; the other compares).
pub async fn verify_and_record(db: &Db, keyring: &Keyring) -> Result<(), KeyCheckError> {
    let first_differing = |checked: &[(ConfiguredKey, KeyCheck)]| {
        checked
            .iter()
            .find(|(_, c)| *c == KeyCheck::Differs)
            .map(|(key, _)| KeyCheckError::Differs {
                name: key.name(),
                setting: key.setting(),
            })
    };
    let checked = compare(db, keyring).await?;
    if let Some(e) = first_differing(&checked) {
        return Err(e);
    }
    let first_used: Vec<String> = checked
        .iter()
        .filter(|(_, c)| *c == KeyCheck::FirstUse)
        .map(|(k, _)| k.name())
        .collect();
    if first_used.is_empty() {
        return Ok(());
    }
    let now = crate::time::now().to_rfc3339();
    let rows = keyring
        .check_values()
        .into_iter()
        .filter(|(k, _)| first_used.contains(&k.name()))
        .map(|(k, v)| {
            use sea_orm::ActiveValue::Set;
            entity::ActiveModel {
                name: Set(k.name()),
                check_value: Set(hex(&v)),
                first_used: Set(now.clone()),
            }
        });
    entity::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::column(entity::Column::Name)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    tracing::info!(keys = ?first_used, "key check values recorded (first use of these keys here)");
    // Another replica may have recorded its own value first.
    match first_differing(&compare(db, keyring).await?) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// [`verify_and_record`] and [`verify_departments`] for `service`'s start, its data
/// keys in `keys` of `key_db`: the error names the service.
pub async fn at_start<E>(
    db: &Db,
    keyring: &Keyring,
    service: &str,
    key_db: &Db,
    keys: &crate::keys::WrappedKeys<E>,
) -> Result<(), String>
where
    E: EntityTrait,
    E::Model: Sync,
{
    verify_and_record(db, keyring)
        .await
        .map_err(|e| format!("{service}: {e}"))?;
    verify_departments(db, keyring, key_db, keys)
        .await
        .map_err(|e| format!("{service}: {e}"))
}

/// Creates the `key_checks` table.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0000_key_checks"
    }
}

#[derive(DeriveIden)]
enum KeyChecks {
    Table,
    Name,
    CheckValue,
    FirstUsed,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KeyChecks::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(KeyChecks::Name)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(KeyChecks::CheckValue).string().not_null())
                    .col(ColumnDef::new(KeyChecks::FirstUsed).string().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(KeyChecks::Table).to_owned())
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use base64::Engine as _;
    use sea_orm_migration::prelude::MigratorTrait;
    use vern_seal::keyring::MasterKeys;

    use super::*;
    use crate::db::DbTarget;

    crate::store_test_suite!("keycheck":
        a_wrong_key_is_refused_by_name_and_setting_never_by_value,
        two_replicas_starting_together_record_one_value,
    );

    struct Migrator;

    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(Migration)]
        }
    }

    fn b64(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    /// Version 2 current (key `v2`), version 1 previous (key `v1`), tenant `kultur` with
    /// its own key.
    fn ring(v1: u8, v2: u8, kultur: Option<u8>) -> Keyring {
        let previous = HashMap::from([("1".to_owned(), b64(v1))]);
        let tenants: HashMap<String, String> = kultur
            .map(|k| ("kultur".to_owned(), b64(k)))
            .into_iter()
            .collect();
        Keyring::from_config(
            &MasterKeys {
                current: Some((2, &b64(v2))),
                previous: &previous,
                index_version: None,
                previous_index_version: None,
            },
            &tenants,
        )
        .expect("ring")
    }

    async fn a_wrong_key_is_refused_by_name_and_setting_never_by_value(target: DbTarget) {
        let db = crate::db::connect_and_migrate::<Migrator>(&target)
            .await
            .expect("db");
        let right = ring(1, 2, Some(3));
        let checked = compare(&db, &right).await.expect("compare");
        assert!(
            checked.iter().all(|(_, c)| *c == KeyCheck::FirstUse),
            "{checked:?}"
        );
        verify_and_record(&db, &right).await.expect("first use");
        verify_and_record(&db, &right)
            .await
            .expect("the same keys again");
        assert!(
            compare(&db, &right)
                .await
                .expect("compare")
                .iter()
                .all(|(_, c)| *c == KeyCheck::Matches)
        );
        // A wrong previous version (the one keying the blind index), a wrong current
        // one, a wrong tenant key: each refused, naming itself.
        for (wrong, name, setting) in [
            (
                ring(9, 2, Some(3)),
                "master/1",
                "VERN_KEYS__PREVIOUS_MASTER_KEYS__1",
            ),
            (ring(1, 9, Some(3)), "master/2", "keys.master_key"),
            (
                ring(1, 2, Some(9)),
                "tenant/kultur",
                "keys.tenant_keys.kultur",
            ),
        ] {
            let e = verify_and_record(&db, &wrong)
                .await
                .expect_err("a wrong key is refused");
            let text = e.to_string();
            assert!(text.contains(name) && text.contains(setting), "{text}");
            assert!(!text.contains(&b64(9)), "never the key: {text}");
        }
        // A new version (3) is recorded on its first use beside the others.
        let previous = HashMap::from([("1".to_owned(), b64(1)), ("2".to_owned(), b64(2))]);
        let next = Keyring::from_config(
            &MasterKeys {
                current: Some((3, &b64(4))),
                previous: &previous,
                index_version: None,
                previous_index_version: None,
            },
            &HashMap::new(),
        )
        .expect("ring");
        verify_and_record(&db, &next)
            .await
            .expect("version 3 added");
        let stored = entity::Entity::find().all(&db).await.expect("rows");
        assert_eq!(stored.len(), 4, "{stored:?}");
        for row in &stored {
            for byte in [1u8, 2, 3, 4] {
                assert!(
                    !row.check_value.contains(&hex(&[byte; 32])),
                    "a check value is not the key"
                );
            }
        }
    }

    async fn two_replicas_starting_together_record_one_value(target: DbTarget) {
        let a = crate::db::connect_and_migrate::<Migrator>(&target)
            .await
            .expect("db");
        let b = crate::db::connect(&target).await.expect("replica");
        // One replica has the right key, the other a wrong one: whichever records
        // first, the other is refused; never both accepted.
        let (right, wrong) = (ring(1, 2, None), ring(1, 8, None));
        let (ra, rb) = tokio::join!(verify_and_record(&a, &right), verify_and_record(&b, &wrong),);
        assert!(ra.is_ok() != rb.is_ok(), "{ra:?} {rb:?}");
        let rows = entity::Entity::find().all(&a).await.expect("rows");
        assert_eq!(rows.len(), 2, "one value per version: {rows:?}");
    }
}
