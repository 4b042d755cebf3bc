//! The personal-data keyring from configuration, and master key rotation for every
//! table that keeps wrapped data keys (the subjects' key store, the consents' keys,
//! the rights requests' keys).
//!
//! Rotation re-wraps: each stored data key is unwrapped with the version that wrapped
//! it and wrapped again under the current version. The data key stays the same, so no
//! sealed value is re-encrypted and no blind index changes. Each row is replaced only
//! if it still holds the bytes that were read (compare and set): a key shredded or
//! replaced meanwhile is never written back, so an erasure during a rotation stays an
//! erasure.

use std::collections::BTreeMap;

use crate::db::Db;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use vern_proto::common::v1::{
    CountDataKeysResponse, DataKeyCount, RewrapDataKeysRequest, RewrapDataKeysResponse,
};
use vern_seal::keyring::{KeyVersion, Keyring, MasterKeys, UnwrapError};

use crate::config::Config;
use crate::error::ApiError;

/// Data keys examined per call when the request sets no page size.
pub const DEFAULT_REWRAP_PAGE: u64 = 500;
/// Most data keys examined per call.
pub const MAX_REWRAP_PAGE: u64 = 5000;

/// The keyring of `config` (the dev master key in `vern dev`); `service` names the
/// component in the error.
pub fn keyring(config: &Config, service: &str) -> Result<Keyring, String> {
    let master = crate::auth::master_key(config)
        .map_err(|e| format!("{service}: reading the dev master key failed: {e}"))?;
    let keys = &config.keys;
    Keyring::from_config(
        &MasterKeys {
            current: master.as_deref().map(|m| (keys.master_key_version, m)),
            previous: &keys.previous_master_keys,
            index_version: keys.index_key_version,
            previous_index_version: keys.previous_index_key_version,
        },
        &keys.tenant_keys,
    )
    .map_err(|e| format!("{service}: {e}"))
}

/// A table of wrapped data keys: its tenant column, the column naming the key's owner
/// (subject or rights request) and the wrapped key column, and how a key's associated
/// data is built from tenant and owner.
pub struct WrappedKeys<E: EntityTrait> {
    /// Tenant id column.
    pub tenant: E::Column,
    /// Owner id column (second part of the primary key).
    pub owner: E::Column,
    /// Wrapped key column.
    pub wrapped: E::Column,
    /// Associated data of a wrapped key, as the service wraps it.
    pub aad: fn(&str, &str) -> Vec<u8>,
    /// Name of the list in page tokens.
    pub list: &'static str,
}

/// The error of a data key wrapped under a master key version this component does
/// not have (retired too early, or a replica not yet given the new version).
pub fn missing_version(v: u32) -> ApiError {
    ApiError::precondition(
        "MASTER_KEY_VERSION_MISSING",
        format!("master-key-versions/{v}"),
        format!(
            "a data key is wrapped under master key version {v}, which this service does not have: add it to keys.previous_master_keys"
        ),
    )
}

/// The error of a data key that does not open under the key configured for its version:
/// UNAVAILABLE naming the version, never NOT_FOUND or a guess. Nothing was read or
/// written.
pub fn does_not_open(version: KeyVersion) -> ApiError {
    tracing::error!(%version, "a data key does not open with the key configured for its version");
    ApiError::KeyUnusable(format!(
        "a data key wrapped under {version} does not open with the key configured for it: nothing was read or written; check the keys with `vern keys verify`"
    ))
}

fn rotation_error(e: UnwrapError) -> ApiError {
    match e {
        UnwrapError::UnknownVersion(v) => missing_version(v),
        UnwrapError::DoesNotOpen(v) => does_not_open(v),
        // Logged by kind only: which row is named by nothing that could identify anyone.
        UnwrapError::Crypto(_) => ApiError::Internal("a stored data key does not open"),
    }
}

fn db(e: DbErr) -> ApiError {
    crate::db::api_error(&e)
}

impl<E: EntityTrait> WrappedKeys<E>
where
    E::Model: Sync,
{
    /// Up to `limit` of `tenant`'s wrapped keys: (owner, wrapped key).
    pub async fn of_tenant<C: ConnectionTrait>(
        &self,
        conn: &C,
        tenant: &str,
        limit: u64,
    ) -> Result<Vec<(String, Vec<u8>)>, DbErr> {
        E::find()
            .select_only()
            .column(self.owner)
            .column(self.wrapped)
            .filter(self.tenant.eq(tenant))
            .order_by_asc(self.owner)
            .limit(limit)
            .into_tuple()
            .all(conn)
            .await
    }

    /// Keys after `after` (tenant, owner) in key order, at most `limit`.
    async fn page<C: ConnectionTrait>(
        &self,
        conn: &C,
        after: Option<(String, String)>,
        limit: u64,
    ) -> Result<Vec<(String, String, Vec<u8>)>, DbErr> {
        let mut query = E::find()
            .select_only()
            .column(self.tenant)
            .column(self.owner)
            .column(self.wrapped)
            .order_by_asc(self.tenant)
            .order_by_asc(self.owner)
            .limit(limit);
        if let Some((tenant, owner)) = after {
            query = query.filter(
                Condition::any().add(self.tenant.gt(tenant.clone())).add(
                    Condition::all()
                        .add(self.tenant.eq(tenant))
                        .add(self.owner.gt(owner)),
                ),
            );
        }
        query.into_tuple().all(conn).await
    }

    /// One page of a rotation: every key of the page not yet under the current master
    /// key version is re-wrapped under it, the page's updates in one transaction (one
    /// commit per page, not per key: 3.5× faster on PostgreSQL, BENCHMARKS.md).
    pub async fn rewrap(
        &self,
        conn: &Db,
        keyring: &Keyring,
        request: &RewrapDataKeysRequest,
    ) -> Result<RewrapDataKeysResponse, ApiError> {
        let limit = match request.page_size {
            n if n < 0 => return Err(ApiError::invalid("page_size", "must not be negative")),
            0 => DEFAULT_REWRAP_PAGE,
            n => (n as u64).min(MAX_REWRAP_PAGE),
        };
        let after = crate::page::decode_token(self.list, &request.page_token)?
            .map(|k| {
                k.split_once('\n')
                    .map(|(t, o)| (t.to_owned(), o.to_owned()))
                    .ok_or_else(|| {
                        ApiError::invalid("page_token", "is not a token this list issued")
                    })
            })
            .transpose()?;
        let Some(version) = keyring.master_version() else {
            return Err(ApiError::precondition(
                "NO_MASTER_KEY",
                "keys/master_key",
                "no master key is configured (tenants' own keys do not rotate with it)",
            ));
        };
        if request.master_key_version != 0 && request.master_key_version != version {
            return Err(ApiError::precondition(
                "MASTER_KEY_VERSION_MISMATCH",
                format!("master-key-versions/{}", request.master_key_version),
                format!(
                    "this service's current master key version is {version}, not {}: give every replica the same keys configuration first",
                    request.master_key_version
                ),
            ));
        }
        // Counted on the first page only: a COUNT(*) per page would scan the table
        // once per 500 keys.
        let total = match after {
            None => E::find().count(conn).await.map_err(db)? as i64,
            Some(_) => 0,
        };
        let rows = self.page(conn, after, limit).await.map_err(db)?;
        let mut rewrapped = 0i64;
        let mut unopenable = vec![];
        let txn = conn.begin().await.map_err(db)?;
        for (tenant, owner, wrapped) in &rows {
            let Some(keys) = keyring.tenant(tenant) else {
                continue;
            };
            // A shredded key (erasure) is empty: nothing to rotate.
            if wrapped.is_empty() {
                continue;
            }
            let new = match keys.kek.rewrap(wrapped, &(self.aad)(tenant, owner)) {
                Ok(Some(new)) => new,
                Ok(None) => continue,
                // One key that does not open stops nothing else: it is listed (ids
                // only) and the rotation goes on.
                Err(UnwrapError::Crypto(_) | UnwrapError::DoesNotOpen(_)) => {
                    // The tenant only: the operator gets the ids in the answer.
                    tracing::warn!(tenant = %tenant, "a stored data key does not open: passed over");
                    unopenable.push(format!("{tenant}/{owner}"));
                    continue;
                }
                // A version this service does not have: every key under it would fail
                // the same way; a configuration to fix first.
                Err(e) => return Err(rotation_error(e)),
            };
            let done = E::update_many()
                .col_expr(self.wrapped, Expr::value(new))
                .filter(self.tenant.eq(tenant.as_str()))
                .filter(self.owner.eq(owner.as_str()))
                .filter(self.wrapped.eq(wrapped.clone()))
                .exec(&txn)
                .await
                .map_err(db)?;
            rewrapped += done.rows_affected as i64;
        }
        txn.commit().await.map_err(db)?;
        let more = rows.len() as u64 == limit;
        let last = rows.last().map(|(t, o, _)| format!("{t}\n{o}"));
        Ok(RewrapDataKeysResponse {
            examined: rows.len() as i64,
            rewrapped,
            next_page_token: crate::page::next_token(self.list, more, last.as_deref()),
            total,
            master_key_version: version,
            unopenable,
        })
    }

    /// How many keys each version wraps, and which configured versions nothing uses.
    pub async fn count<C: ConnectionTrait>(
        &self,
        conn: &C,
        keyring: &Keyring,
    ) -> Result<CountDataKeysResponse, ApiError> {
        let mut counts: BTreeMap<u32, (i64, bool)> = BTreeMap::new();
        let mut unopenable = 0i64;
        let mut after = None;
        loop {
            let rows = self.page(conn, after, MAX_REWRAP_PAGE).await.map_err(db)?;
            for (tenant, owner, wrapped) in &rows {
                let Some(keys) = keyring.tenant(tenant) else {
                    continue;
                };
                if wrapped.is_empty() {
                    continue;
                }
                let version = match keys.kek.version_of(wrapped) {
                    Ok(KeyVersion::Tenant) => 0,
                    Ok(KeyVersion::Master(v)) => v,
                    Err(_) => {
                        unopenable += 1;
                        continue;
                    }
                };
                // Each key is opened: a key wrapped under a configured version that
                // does not open means a wrong key value or damaged bytes.
                if let Err(UnwrapError::Crypto(_) | UnwrapError::DoesNotOpen(_)) =
                    keys.kek.unwrap(wrapped, &(self.aad)(tenant, owner))
                {
                    unopenable += 1;
                }
                let entry = counts.entry(version).or_insert((0, false));
                entry.0 += 1;
                if version != 0 && !keyring.master_versions().contains(&version) {
                    entry.1 = true;
                }
            }
            if (rows.len() as u64) < MAX_REWRAP_PAGE {
                break;
            }
            after = rows.last().map(|(t, o, _)| (t.clone(), o.clone()));
        }
        let unused_versions = keyring
            .master_versions()
            .into_iter()
            .filter(|v| !counts.contains_key(v))
            .collect();
        Ok(CountDataKeysResponse {
            counts: counts
                .into_iter()
                .map(|(v, (count, unknown))| DataKeyCount {
                    master_key_version: v,
                    count,
                    unknown,
                })
                .collect(),
            master_key_version: keyring.master_version().unwrap_or_default(),
            index_key_version: keyring.index_version(),
            unused_versions,
            previous_index_key_version: keyring.previous_index_version().unwrap_or_default(),
            index_entries: vec![],
            unopenable,
        })
    }
}
