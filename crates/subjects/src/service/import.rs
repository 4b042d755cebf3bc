//! ImportSubjects: many CreateSubjects in one call.
//!
//! Each row is handled as CreateSubject handles it (validation, the request's
//! idempotency key, blind indexes, sealed identifiers and references, the ACTIVE
//! notification, one audit event per created subject), but batched: one idempotency
//! lookup, one blind-index lookup per identifier kind and one for references, one
//! multi-row write of the wrapped keys, and one transaction with multi-row inserts for
//! everything else. Invalid rows and rows whose identifier is held are answered and
//! left out before anything is written, so the transaction holds only rows that will
//! be created: all of them commit, or none. A transaction that loses a race (another
//! writer took an identifier or a request id meanwhile) is not partly applied: the
//! lookups run again and the rows are decided afresh.

use std::collections::{HashMap, HashSet};

use vern_kit::context::TenantId;
use vern_kit::db::DbFailure;
use vern_kit::error::{ApiError, FieldViolation};
use vern_kit::idempotency::Key;

use super::{Subjects, identifier_digests, lookup_row, new_subject_row, ref_digests, ref_row};
use crate::domain::crypto::DataKey;
use crate::domain::{IdentifierKind, NewSubject, RecordData, SubjectState, ValidSubject, key_aad};
use crate::error::{DbError, SubjectError};
use crate::relay::state_change;
use crate::store::Batch;

/// The most rows one ImportSubjects call may carry.
pub const MAX_IMPORT_ROWS: usize = 1000;

/// Attempts of a batch whose transaction lost a race before it gives up (ABORTED).
const ATTEMPTS: usize = 3;

/// One row of an import: the input (or the violations found while decoding it) and
/// its idempotency key.
#[derive(Debug)]
pub struct ImportRow {
    /// The row, or what is wrong with it.
    pub input: Result<NewSubject, Vec<FieldViolation>>,
    /// Its key (`None` without a request id).
    pub key: Option<Key>,
}

/// What happened to one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Created (`replayed`: by an earlier call with the same request id).
    Created {
        /// The subject.
        subject_id: String,
        /// Answered from the stored answer of an earlier call.
        replayed: bool,
    },
    /// An identifier or reference is held by this subject; nothing written.
    AlreadyPresent {
        /// The subject holding it.
        subject_id: String,
        /// The field held (`email`, `phone`, `national_id`, `external_refs[i]`).
        field: String,
    },
    /// Refused; nothing written.
    Invalid(Vec<FieldViolation>),
}

/// A row that passed validation and is not answered yet.
struct Pending {
    index: usize,
    valid: ValidSubject,
    key: Option<Key>,
}

fn violations(e: ApiError) -> Vec<FieldViolation> {
    match e {
        ApiError::InvalidArgument(v) => v,
        ApiError::FailedPrecondition { .. } => vec![FieldViolation::new(
            "request_id",
            "was already used for a different request",
        )],
        _ => vec![FieldViolation::new("", "refused")],
    }
}

impl Subjects {
    /// ImportSubjects: one outcome per row, in order. At most [`MAX_IMPORT_ROWS`]
    /// rows (the caller checks the count and names the field).
    pub async fn import(
        &self,
        tenant: &TenantId,
        rows: Vec<ImportRow>,
    ) -> Result<Vec<ImportOutcome>, SubjectError> {
        let now = vern_kit::time::now();
        let mut out: Vec<Option<ImportOutcome>> = vec![None; rows.len()];
        let mut pending = vec![];
        let mut seen_ids = HashSet::new();
        for (index, row) in rows.into_iter().enumerate() {
            let valid = row
                .input
                .and_then(|new| new.validate(now).map_err(violations));
            match valid {
                Err(v) => out[index] = Some(ImportOutcome::Invalid(v)),
                Ok(valid) => {
                    if let Some(k) = &row.key
                        && !seen_ids.insert(k.request_id().to_owned())
                    {
                        out[index] = Some(ImportOutcome::Invalid(vec![FieldViolation::new(
                            "request_id",
                            "is repeated in this call",
                        )]));
                        continue;
                    }
                    pending.push(Pending {
                        index,
                        valid,
                        key: row.key,
                    });
                }
            }
        }
        // Purposes against the tenant's, from one cached catalogue.
        let mut checked = Vec::with_capacity(pending.len());
        for p in pending {
            let violations = {
                let named: Vec<(String, &RecordData)> = p
                    .valid
                    .records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("records[{i}]."), r))
                    .collect();
                self.purpose_violations(tenant.as_str(), &named).await?
            };
            if violations.is_empty() {
                checked.push(p);
            } else {
                out[p.index] = Some(ImportOutcome::Invalid(violations));
            }
        }
        let pending = checked;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.import_pending(tenant, &pending, now).await {
                Ok(decided) => {
                    for (index, outcome) in decided {
                        out[index] = Some(outcome);
                    }
                    break;
                }
                Err(SubjectError::Db(DbError(e)))
                    if attempt < ATTEMPTS
                        && vern_kit::db::classify(&e) == DbFailure::UniqueViolation =>
                {
                    tracing::info!(
                        tenant = tenant.as_str(),
                        attempt,
                        "import batch lost a race; deciding its rows again"
                    );
                }
                Err(SubjectError::Db(DbError(e)))
                    if vern_kit::db::classify(&e) == DbFailure::UniqueViolation =>
                {
                    return Err(SubjectError::Conflict);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| ImportOutcome::Invalid(vec![])))
            .collect())
    }

    /// Decides and writes the pending rows: replays, held identifiers, then one
    /// transaction creating the rest.
    async fn import_pending(
        &self,
        tenant: &TenantId,
        pending: &[Pending],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(usize, ImportOutcome)>, SubjectError> {
        let t = tenant.as_str();
        let mut decided = vec![];
        if pending.is_empty() {
            return Ok(decided);
        }
        let keys: Vec<&Key> = pending.iter().filter_map(|p| p.key.as_ref()).collect();
        let mut replays = self.store.replay_many::<String>(&keys).await?;
        let tkeys = self.tenant_keys(t)?;

        // Blind indexes of every row (under the current index key first, and the
        // previous one during a re-index), then one lookup per kind and one for
        // references.
        struct Digests {
            ids: Vec<(IdentifierKind, Vec<[u8; 32]>)>,
            refs: Vec<Vec<String>>,
        }
        let digests: Vec<Digests> = pending
            .iter()
            .map(|p| Digests {
                ids: IdentifierKind::ALL
                    .into_iter()
                    .filter_map(|kind| {
                        p.valid
                            .identifiers
                            .get(kind)
                            .map(|v| (kind, identifier_digests(&tkeys, kind, v)))
                    })
                    .collect(),
                refs: p
                    .valid
                    .external_refs
                    .iter()
                    .map(|r| ref_digests(&tkeys, r))
                    .collect(),
            })
            .collect();
        let mut held: HashMap<(IdentifierKind, Vec<u8>), String> = HashMap::new();
        for kind in IdentifierKind::ALL {
            let wanted: Vec<Vec<u8>> = digests
                .iter()
                .flat_map(|d| d.ids.iter())
                .filter(|(k, _)| *k == kind)
                .flat_map(|(_, ds)| ds.iter().map(|d| d.to_vec()))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            for (digest, id) in self.store.find_by_digests(t, kind, &wanted).await? {
                held.insert((kind, digest), id);
            }
        }
        // References by blind index, and rows of older versions by plaintext id.
        let mut ref_keys: Vec<(String, String)> = vec![];
        for (p, d) in pending.iter().zip(&digests) {
            for (r, digests) in p.valid.external_refs.iter().zip(&d.refs) {
                for digest in digests {
                    ref_keys.push((r.system.clone(), digest.clone()));
                }
                ref_keys.push((r.system.clone(), r.id.clone()));
            }
        }
        let mut held_refs: HashMap<(String, String), String> = HashMap::new();
        let mut held_plain: HashMap<(String, String), String> = HashMap::new();
        for r in self.store.refs_by_keys(t, &ref_keys).await? {
            let k = (r.system.clone(), r.ref_id.clone());
            if r.ref_ct.is_some() {
                held_refs.insert(k, r.subject_id);
            } else {
                held_plain.insert(k, r.subject_id);
            }
        }

        let mut batch = Batch::default();
        let mut wrapped_keys = vec![];
        let mut answers: Vec<(&Key, String)> = vec![];
        let mut created = vec![];
        for (p, d) in pending.iter().zip(&digests) {
            if let Some(k) = &p.key
                && let Some(answer) = replays.remove(k.request_id())
            {
                decided.push((
                    p.index,
                    match answer {
                        Ok(subject_id) => ImportOutcome::Created {
                            subject_id,
                            replayed: true,
                        },
                        Err(e) => ImportOutcome::Invalid(violations(e)),
                    },
                ));
                continue;
            }
            let taken = d
                .ids
                .iter()
                .find_map(|(kind, digests)| {
                    digests
                        .iter()
                        .find_map(|digest| held.get(&(*kind, digest.to_vec())))
                        .map(|id| (kind.as_str().to_owned(), id.clone()))
                })
                .or_else(|| {
                    p.valid
                        .external_refs
                        .iter()
                        .zip(&d.refs)
                        .enumerate()
                        .find_map(|(i, (r, digests))| {
                            digests
                                .iter()
                                .find_map(|digest| {
                                    held_refs.get(&(r.system.clone(), digest.clone()))
                                })
                                .or_else(|| held_plain.get(&(r.system.clone(), r.id.clone())))
                                .map(|id| (format!("external_refs[{i}]"), id.clone()))
                        })
                });
            if let Some((field, subject_id)) = taken {
                decided.push((p.index, ImportOutcome::AlreadyPresent { subject_id, field }));
                continue;
            }

            let subject_id = uuid::Uuid::now_v7().to_string();
            // Later rows of this call holding the same identifier find this one.
            for (kind, digests) in &d.ids {
                for digest in digests {
                    held.insert((*kind, digest.to_vec()), subject_id.clone());
                }
            }
            for (r, digests) in p.valid.external_refs.iter().zip(&d.refs) {
                for digest in digests {
                    held_refs.insert((r.system.clone(), digest.clone()), subject_id.clone());
                }
            }
            let dek = DataKey::generate();
            wrapped_keys.push((
                subject_id.clone(),
                tkeys.kek.wrap(&dek, &key_aad(t, &subject_id)),
            ));
            let valid = &p.valid;
            let row = new_subject_row(t, &subject_id, valid, &dek, now);
            batch.insert_subjects.push(row);
            batch.insert_lookups.extend(
                d.ids
                    .iter()
                    .map(|(kind, digests)| lookup_row(t, &subject_id, *kind, digests[0], &tkeys)),
            );
            batch.insert_refs.extend(
                valid
                    .external_refs
                    .iter()
                    .map(|r| ref_row(t, &subject_id, r, &tkeys, &dek)),
            );
            for rec in valid.records.iter().cloned() {
                batch
                    .insert_records
                    .push(super::record_row(t, &subject_id, &dek, rec, now)?);
            }
            batch
                .outbox
                .push(state_change(&subject_id, SubjectState::Active, 1, now, &[]));
            if let Some(k) = &p.key {
                answers.push((k, subject_id.clone()));
            }
            created.push((
                subject_id.clone(),
                p.key
                    .as_ref()
                    .map(|k| k.request_id().to_owned())
                    .unwrap_or_default(),
            ));
            decided.push((
                p.index,
                ImportOutcome::Created {
                    subject_id,
                    replayed: false,
                },
            ));
        }
        if created.is_empty() {
            return Ok(decided);
        }
        // The keys first (an orphan key after a failure unwraps nothing that exists).
        self.keys.put_many(t, wrapped_keys).await?;
        self.store
            .apply_import(t, batch, &answers, &created)
            .await?;
        tracing::info!(tenant = t, created = created.len(), "subjects imported");
        self.nudge();
        Ok(decided)
    }
}
