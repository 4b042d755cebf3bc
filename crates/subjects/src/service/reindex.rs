//! Re-indexing: moving the blind index from one index key version to another.
//!
//! While `keys.previous_index_key_version` is set, every lookup and uniqueness check
//! tries an identifier's digest under both index keys, and new entries are written
//! under the current one. [`Subjects::reindex`] walks the identifier entries, then the
//! external-reference entries, in key order; each entry still under the previous
//! version is opened through its subject (the identifier sealed in the subject row,
//! the reference id sealed in the reference row, both with the subject's data key),
//! digested under the current key and rewritten only if it is still as read. Nothing
//! sealed changes. A page repeated rewrites nothing twice, so an interrupted re-index
//! resumes from any earlier page token.

use std::collections::{BTreeMap, HashMap};

use vern_kit::error::ApiError;

use super::{Subjects, ciphertext, open_text, ref_digest_under};
use crate::domain::crypto::{self, BlindIndexKey};
use crate::domain::keyring::TenantKeys;
use crate::domain::{ExternalRef, IdentifierKind, identifier_aad, key_aad, ref_aad};
use crate::error::SubjectError;
use crate::store::entities::{external_ref, lookup, subject};

/// Entries examined per call when the request sets no page size.
pub const DEFAULT_REINDEX_PAGE: u64 = 500;
/// Most entries examined per call.
pub const MAX_REINDEX_PAGE: u64 = 5000;

/// The list name of re-index page tokens.
const LIST: &str = "reindex";

/// What one page of a re-index did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexPage {
    /// Entries under an older index version examined.
    pub examined: i64,
    /// Of those, rewritten under the current index version.
    pub reindexed: i64,
    /// Token of the next page; empty when every entry has been examined.
    pub next_page_token: String,
    /// Entries under an older version when the first page began; 0 after it.
    pub total: i64,
    /// The index version entries are rewritten under.
    pub index_version: u32,
    /// Subjects of this page whose data key or sealed identifiers do not open, as
    /// `<tenant>/<subject id>`: passed over, so the rest is re-indexed.
    pub unopenable: Vec<String>,
}

/// Where a re-index goes on: identifier entries first, then references.
enum Cursor {
    Lookups(Option<(String, String, Vec<u8>)>),
    Refs(Option<(String, String, String)>),
}

impl Cursor {
    fn decode(token: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::invalid("page_token", "is not a token this list issued");
        let Some(text) = vern_kit::page::decode_token(LIST, token)? else {
            return Ok(Cursor::Lookups(None));
        };
        let parts: Vec<&str> = text.split('\n').collect();
        match parts.as_slice() {
            ["r"] => Ok(Cursor::Refs(None)),
            ["l", t, k, d] => Ok(Cursor::Lookups(Some((
                (*t).to_owned(),
                (*k).to_owned(),
                hex::decode(d).map_err(|_| bad())?,
            )))),
            ["r", t, s, r] => Ok(Cursor::Refs(Some((
                (*t).to_owned(),
                (*s).to_owned(),
                (*r).to_owned(),
            )))),
            _ => Err(bad()),
        }
    }
}

fn token(text: &str) -> String {
    vern_kit::page::next_token(LIST, true, Some(text))
}

fn precondition(reason: &str, resource: String, message: String) -> SubjectError {
    SubjectError::Api(ApiError::precondition(reason, resource, message))
}

/// The key an entry under `version` was digested with: the previous index key, or
/// for a tenant with its own key (whose index key never changes) the current one.
fn old_key(keys: &TenantKeys, version: u32) -> Option<&BlindIndexKey> {
    match &keys.previous_blind {
        Some((v, k)) if *v == version => Some(k),
        Some(_) => None,
        None => Some(&keys.blind),
    }
}

impl Subjects {
    /// One page of a re-index to the current index version; `index_version` 0 or the
    /// service's own (a replica configured otherwise refuses).
    pub async fn reindex(
        &self,
        page_token: &str,
        page_size: i32,
        index_version: u32,
    ) -> Result<ReindexPage, SubjectError> {
        let limit = match page_size {
            n if n < 0 => return Err(ApiError::invalid("page_size", "must not be negative").into()),
            0 => DEFAULT_REINDEX_PAGE,
            n => (n as u64).min(MAX_REINDEX_PAGE),
        };
        let cursor = Cursor::decode(page_token)?;
        let current = self.keyring.index_version();
        if index_version != 0 && index_version != current {
            return Err(precondition(
                "INDEX_KEY_VERSION_MISMATCH",
                format!("index-key-versions/{index_version}"),
                format!(
                    "this service's index key version is {current}, not {index_version}: give every replica the same keys configuration first"
                ),
            ));
        }
        let Some(previous) = self.keyring.previous_index_version() else {
            return Err(precondition(
                "NO_PREVIOUS_INDEX_VERSION",
                "keys/previous_index_key_version".to_owned(),
                "keys.previous_index_key_version is not set: there is no index version to re-index from".to_owned(),
            ));
        };
        let stored = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        let (current_v, previous_v) = (stored(current), stored(previous));
        let total = if page_token.is_empty() {
            self.store
                .index_counts()
                .await?
                .into_iter()
                .filter(|(v, _)| *v != current_v)
                .map(|(_, (ids, refs))| ids + refs)
                .sum()
        } else {
            0
        };
        let mut unopenable = vec![];
        let (examined, reindexed, next) = match cursor {
            Cursor::Lookups(after) => {
                let rows = self.store.lookups_after(after, limit).await?;
                let more = rows.len() as u64 == limit;
                let stale: Vec<lookup::Model> = rows
                    .iter()
                    .filter(|r| r.index_version == previous_v)
                    .cloned()
                    .collect();
                let examined = rows.iter().filter(|r| r.index_version != current_v).count();
                let updates = self
                    .rekeyed_lookups(&stale, previous, &mut unopenable)
                    .await?;
                let done = self.store.rekey_entries(&updates, &[], current_v).await?;
                let next = match rows.last() {
                    Some(l) if more => token(&format!(
                        "l\n{}\n{}\n{}",
                        l.tenant_id,
                        l.kind,
                        hex::encode(&l.digest)
                    )),
                    _ => token("r"),
                };
                (examined, done, next)
            }
            Cursor::Refs(after) => {
                let rows = self.store.refs_after(after, limit).await?;
                let more = rows.len() as u64 == limit;
                let stale: Vec<external_ref::Model> = rows
                    .iter()
                    .filter(|r| r.index_version == previous_v && r.ref_ct.is_some())
                    .cloned()
                    .collect();
                let examined = rows.iter().filter(|r| r.index_version != current_v).count();
                let updates = self.rekeyed_refs(&stale, previous, &mut unopenable).await?;
                let done = self.store.rekey_entries(&[], &updates, current_v).await?;
                let next = match rows.last() {
                    Some(r) if more => {
                        token(&format!("r\n{}\n{}\n{}", r.tenant_id, r.system, r.ref_id))
                    }
                    _ => String::new(),
                };
                (examined, done, next)
            }
        };
        if reindexed > 0 {
            tracing::info!(
                entries = reindexed,
                index_version = current,
                "blind index entries re-indexed"
            );
        }
        Ok(ReindexPage {
            examined: examined as i64,
            reindexed: reindexed as i64,
            next_page_token: next,
            total,
            index_version: current,
            unopenable,
        })
    }

    /// The subject rows and data keys of the subjects these entries belong to, per
    /// tenant: one query for the rows and one for the keys per tenant of the page.
    async fn owners<'a>(
        &self,
        entries: impl Iterator<Item = (&'a str, &'a str)>,
        unopenable: &mut Vec<String>,
    ) -> Result<HashMap<(String, String), (subject::Model, crypto::DataKey)>, SubjectError> {
        let mut by_tenant: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (t, s) in entries {
            by_tenant.entry(t).or_default().push(s.to_owned());
        }
        let mut out = HashMap::new();
        for (t, mut ids) in by_tenant {
            ids.sort();
            ids.dedup();
            let Some(keys) = self.keyring.tenant(t) else {
                continue;
            };
            let wrapped = self.keys.get_many(t, &ids).await?;
            for row in self.store.subjects(t, &ids).await? {
                // No data key: the subject is being erased; its entries go with it.
                let Some(w) = wrapped.get(&row.subject_id) else {
                    continue;
                };
                let dek = match keys.kek.unwrap(w, &key_aad(t, &row.subject_id)) {
                    Ok(dek) => dek,
                    // One key that does not open stops nothing else: listed, passed over.
                    Err(
                        vern_seal::keyring::UnwrapError::Crypto(_)
                        | vern_seal::keyring::UnwrapError::DoesNotOpen(_),
                    ) => {
                        tracing::warn!(tenant = %t, "a subject's data key does not open: passed over");
                        pass_over(unopenable, t, &row.subject_id);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                out.insert((t.to_owned(), row.subject_id.clone()), (row, dek));
            }
        }
        Ok(out)
    }

    /// The new digests of identifier entries keyed under `previous`.
    async fn rekeyed_lookups(
        &self,
        stale: &[lookup::Model],
        previous: u32,
        unopenable: &mut Vec<String>,
    ) -> Result<Vec<(lookup::Model, Vec<u8>)>, SubjectError> {
        let owners = self
            .owners(
                stale
                    .iter()
                    .map(|l| (l.tenant_id.as_str(), l.subject_id.as_str())),
                unopenable,
            )
            .await?;
        let mut out = vec![];
        for l in stale {
            let t = l.tenant_id.as_str();
            let (Some((row, dek)), Some(keys), Some(kind)) = (
                owners.get(&(l.tenant_id.clone(), l.subject_id.clone())),
                self.keyring.tenant(t),
                IdentifierKind::parse(&l.kind),
            ) else {
                continue;
            };
            let Some(ct) = ciphertext(row, kind) else {
                continue;
            };
            let Ok(value) = open_text(dek, ct, &identifier_aad(t, &l.subject_id, kind)) else {
                pass_over(unopenable, t, &l.subject_id);
                continue;
            };
            // Rewrite only an entry that is the digest of what the subject holds now.
            let Some(old) = old_key(&keys, previous) else {
                continue;
            };
            if crypto::blind_index(old, kind.as_str(), &value).as_slice() != l.digest.as_slice() {
                continue;
            }
            out.push((
                l.clone(),
                crypto::blind_index(&keys.blind, kind.as_str(), &value).to_vec(),
            ));
        }
        Ok(out)
    }

    /// The new `ref_id`s of reference entries keyed under `previous`.
    async fn rekeyed_refs(
        &self,
        stale: &[external_ref::Model],
        previous: u32,
        unopenable: &mut Vec<String>,
    ) -> Result<Vec<(external_ref::Model, String)>, SubjectError> {
        let owners = self
            .owners(
                stale
                    .iter()
                    .map(|r| (r.tenant_id.as_str(), r.subject_id.as_str())),
                unopenable,
            )
            .await?;
        let mut out = vec![];
        for r in stale {
            let t = r.tenant_id.as_str();
            let (Some((_, dek)), Some(keys), Some(ct)) = (
                owners.get(&(r.tenant_id.clone(), r.subject_id.clone())),
                self.keyring.tenant(t),
                r.ref_ct.as_ref(),
            ) else {
                continue;
            };
            let Ok(id) = open_text(dek, ct, &ref_aad(t, &r.subject_id, &r.system)) else {
                pass_over(unopenable, t, &r.subject_id);
                continue;
            };
            let reference = ExternalRef {
                system: r.system.clone(),
                id,
            };
            let Some(old) = old_key(&keys, previous) else {
                continue;
            };
            if ref_digest_under(old, &reference) != r.ref_id {
                continue;
            }
            out.push((r.clone(), ref_digest_under(&keys.blind, &reference)));
        }
        Ok(out)
    }

    /// The blind-index entries per index version, oldest first.
    pub async fn index_entries(
        &self,
    ) -> Result<Vec<vern_proto::common::v1::IndexEntryCount>, SubjectError> {
        Ok(self
            .store
            .index_counts()
            .await?
            .into_iter()
            .map(
                |(v, (identifiers, external_refs))| vern_proto::common::v1::IndexEntryCount {
                    index_key_version: u32::try_from(v).unwrap_or_default(),
                    identifiers,
                    external_refs,
                },
            )
            .collect())
    }
}

/// Lists a subject passed over (once per page).
fn pass_over(unopenable: &mut Vec<String>, tenant: &str, subject: &str) {
    let id = format!("{tenant}/{subject}");
    if !unopenable.contains(&id) {
        unopenable.push(id);
    }
}
