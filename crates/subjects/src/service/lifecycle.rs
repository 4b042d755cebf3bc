//! A subject's lifecycle: restriction (Art. 18), erasure (Art. 17) with
//! crypto-shredding, and the purge primitive of the retention service. Every state
//! change bumps the subject's version and enqueues a notification for consents in
//! the same transaction.

use std::collections::{BTreeSet, HashMap};

use vern_kit::context::TenantId;
use vern_kit::error::Violations;
use vern_kit::idempotency::Key;
use vern_kit::validate;

use super::{Subjects, invalid, later, month_start, tombstone};
use crate::domain::restriction;
use crate::domain::{
    self, DataCategory, EraseOutcome, PurgeAction, PurgeItem, PurgeOutcome, PurgeRequest, Retain,
    Subject, SubjectState, View, validate_retain,
};
use crate::error::SubjectError;
use crate::relay::{erasure_notice, records_erased_notice, restriction_notice, state_change};
use crate::store::entities::{record, subject};
use crate::store::{Batch, corrupt, from_json, json};

/// Most purposes one restriction call names.
pub const MAX_RESTRICTED_PURPOSES: usize = 100;

/// The input of RestrictSubject and LiftRestriction.
#[derive(Debug, Clone, Copy)]
pub struct RestrictionCall<'a> {
    /// The subject.
    pub subject_id: &'a str,
    /// Why (no personal data).
    pub reason: &'a str,
    /// The purposes concerned; empty: the whole subject.
    pub purposes: &'a [String],
    /// RestrictSubject: the rights request carried out, if any.
    pub rights_request_id: &'a str,
}

impl<'a> RestrictionCall<'a> {
    /// A call for the whole subject, not carrying out a rights request.
    pub fn whole(subject_id: &'a str, reason: &'a str) -> Self {
        Self {
            subject_id,
            reason,
            purposes: &[],
            rights_request_id: "",
        }
    }
}

/// A refused restriction change as the service's error.
fn refused(r: restriction::Refusal) -> SubjectError {
    match r {
        restriction::Refusal::Erased => SubjectError::Erased,
        restriction::Refusal::NotRestricted => SubjectError::NotRestricted,
        restriction::Refusal::ErasurePending => SubjectError::ErasurePending,
        restriction::Refusal::WhollyRestricted => SubjectError::WhollyRestricted,
    }
}

/// Restriction reason of a subject whose erasure keeps records.
pub const ERASURE_RESTRICTION: &str = "erasure requested; records kept under a retention duty";

impl Subjects {
    /// RestrictSubject (Art. 18): without `purposes`, ACTIVE → RESTRICTED; with them,
    /// the subject stays ACTIVE and they join its restricted purposes (each must be a
    /// purpose of the tenant). Already so: the subject as it is. `by_request` is the
    /// rights request carried out, if any; the recipients hear of every change
    /// through the rights feed (Art. 19).
    pub async fn restrict(
        &self,
        tenant: &TenantId,
        call: RestrictionCall<'_>,
        idem: Option<Key>,
    ) -> Result<Subject, SubjectError> {
        let (id, by_request) = self.validate_restriction_call(&call)?;
        if let Some(id) = self.store.replay::<String>(idem.as_ref()).await? {
            return self.get(tenant, &id, View::Full).await;
        }
        let t = tenant.as_str();
        if !call.purposes.is_empty() {
            let catalogue = self
                .purposes
                .catalogue(t, call.purposes.iter().map(String::as_str))
                .await?;
            let mut v = Violations::new();
            for (i, p) in call.purposes.iter().enumerate() {
                if !catalogue.contains_key(p) {
                    v.add(format!("purposes[{i}]"), "is not a purpose of the tenant");
                }
            }
            v.finish()?;
        }
        let row = self.subject_row(t, &id).await?;
        let current: Vec<String> = from_json(&row.restricted_purposes)?;
        let change =
            restriction::restrict(state(&row)?, &current, call.purposes).map_err(refused)?;
        self.apply_restriction(t, row, change, true, call.reason, by_request, idem)
            .await?;
        self.get(tenant, &id, View::Full).await
    }

    /// LiftRestriction (Art. 18(3)): without `purposes`, every restriction ends
    /// (RESTRICTED → ACTIVE, unless erasure is pending); with them, those purposes'.
    pub async fn lift_restriction(
        &self,
        tenant: &TenantId,
        call: RestrictionCall<'_>,
        idem: Option<Key>,
    ) -> Result<Subject, SubjectError> {
        let (id, _) = self.validate_restriction_call(&call)?;
        if let Some(id) = self.store.replay::<String>(idem.as_ref()).await? {
            return self.get(tenant, &id, View::Full).await;
        }
        let t = tenant.as_str();
        let row = self.subject_row(t, &id).await?;
        let current: Vec<String> = from_json(&row.restricted_purposes)?;
        let change = restriction::lift(
            state(&row)?,
            row.erase_request_time.is_some(),
            &current,
            call.purposes,
        )
        .map_err(refused)?;
        self.apply_restriction(t, row, change, false, call.reason, None, idem)
            .await?;
        self.get(tenant, &id, View::Full).await
    }

    /// Writes a restriction change with its state change for consents and its notice
    /// for the rights feed, in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn apply_restriction(
        &self,
        t: &str,
        row: subject::Model,
        change: restriction::Change,
        restricted: bool,
        reason: &str,
        by_request: Option<String>,
        idem: Option<Key>,
    ) -> Result<(), SubjectError> {
        let id = row.subject_id.clone();
        let restriction::Change::To {
            state,
            purposes,
            notice,
        } = change
        else {
            return Ok(());
        };
        let now = vern_kit::time::now();
        let still_restricted = state == SubjectState::Restricted || !purposes.is_empty();
        // The caller's reason states something about this person's case: it is sealed
        // with their data key, so it goes with the key at erasure.
        let (restriction_reason, restriction_reason_ct) = if !still_restricted {
            (String::new(), None)
        } else if restricted {
            let keys = self.tenant_keys(t)?;
            let dek = self.data_key(t, &keys, &id).await?;
            let sealed = crate::domain::crypto::seal(
                &dek,
                reason.trim().as_bytes(),
                &crate::domain::restriction_aad(t, &id),
            );
            (String::new(), Some(sealed))
        } else {
            (
                row.restriction_reason.clone(),
                row.restriction_reason_ct.clone(),
            )
        };
        let updated = subject::Model {
            state: state.as_str().to_owned(),
            restriction_reason,
            restriction_reason_ct,
            restrict_time: if !still_restricted {
                None
            } else if restricted {
                Some(now)
            } else {
                row.restrict_time
            },
            restricted_purposes: json(&purposes)?,
            version: row.version + 1,
            update_time: later(row.update_time),
            ..row.clone()
        };
        let batch = Batch {
            outbox: vec![state_change(&id, state, updated.version, now, &purposes)],
            erasures: vec![restriction_notice(
                &id,
                restricted,
                &notice,
                now,
                by_request.as_deref(),
            )],
            update_subjects: vec![(updated, row.update_time)],
            ..Default::default()
        };
        self.store
            .apply(t, batch, idem.as_ref(), id.clone())
            .await?;
        tracing::info!(
            tenant = t,
            subject_id = %id,
            restricted,
            purposes = notice.len(),
            "subject restriction changed"
        );
        self.nudge();
        Ok(())
    }

    fn validate_restriction_call(
        &self,
        call: &RestrictionCall<'_>,
    ) -> Result<(String, Option<String>), SubjectError> {
        let mut v = Violations::new();
        let id = v.check(domain::subject_id("subject_id", call.subject_id));
        v.check(validate::text("reason", call.reason, 1000));
        if call.purposes.len() > MAX_RESTRICTED_PURPOSES {
            v.add(
                "purposes",
                format!("at most {MAX_RESTRICTED_PURPOSES} purposes"),
            );
        }
        for (i, p) in call.purposes.iter().enumerate() {
            v.check(domain::purpose_key(&format!("purposes[{i}]"), p));
        }
        let by_request = if call.rights_request_id.is_empty() {
            None
        } else {
            v.check(domain::subject_id(
                "rights_request_id",
                call.rights_request_id,
            ))
        };
        v.finish()?;
        Ok((id.unwrap_or_default(), by_request))
    }

    /// EraseSubject (Art. 17).
    ///
    /// With an empty `retain`: destroys the subject's data key first (the shred), then
    /// deletes its records, blind-index entries and references and replaces its row by
    /// the tombstone (ERASED, erase time).
    ///
    /// With records to retain: erases the identifiers and every other record, keeps
    /// the named ones restricted (until when, why), keeps the key and the references,
    /// and the subject becomes RESTRICTED awaiting erasure; PurgeRecords erases it when
    /// the last kept record goes. An erased subject answers as erased.
    ///
    /// Either way the rights service is told, through the outbox, to destroy its copies
    /// (identity and reports of the subject's rights requests); `rights_request_id`
    /// names the rights request the erasure carries out, if any.
    pub async fn erase(
        &self,
        tenant: &TenantId,
        subject_id: &str,
        reason: &str,
        retain: Vec<Retain>,
        rights_request_id: &str,
        idem: Option<Key>,
    ) -> Result<EraseOutcome, SubjectError> {
        let mut v = Violations::new();
        let id = v.check(domain::subject_id("subject_id", subject_id));
        v.check(validate::text("reason", reason, 1000));
        let by_request = if rights_request_id.is_empty() {
            None
        } else {
            v.check(domain::subject_id("rights_request_id", rights_request_id))
        };
        let retain = validate_retain("retain", retain, &mut v);
        v.finish()?;
        let id = id.unwrap_or_default();
        if let Some(done) = self.store.replay::<EraseOutcome>(idem.as_ref()).await? {
            return Ok(done);
        }
        let t = tenant.as_str();
        let row = self.subject_row(t, &id).await?;
        if state(&row)? == SubjectState::Erased {
            return Ok(EraseOutcome {
                subject_id: id,
                state: SubjectState::Erased,
                fully_erased: true,
                erased_record_count: 0,
                retained: vec![],
                erase_time: row.erase_time.unwrap_or(row.update_time),
            });
        }
        let records = self.store.records_of(t, std::slice::from_ref(&id)).await?;
        let mut v = Violations::new();
        for (i, r) in retain.iter().enumerate() {
            if !records.iter().any(|x| x.record_id == r.record_id) {
                v.add(
                    format!("retain[{i}].record_id"),
                    "is not a record of this subject",
                );
            }
        }
        v.finish()?;
        let now = vern_kit::time::now();
        let mut batch = Batch {
            delete_lookups: vec![(id.clone(), None)],
            erasures: vec![erasure_notice(&id, now, by_request.as_deref(), None)],
            ..Default::default()
        };
        let outcome = if retain.is_empty() {
            // The shred comes first: if anything below fails, the data is already
            // unreadable and a repeated call completes the erasure.
            self.keys.shred(t, std::slice::from_ref(&id)).await?;
            let tomb = tombstone(&row, now);
            batch.outbox.push(state_change(
                &id,
                SubjectState::Erased,
                tomb.version,
                now,
                &[],
            ));
            batch.update_subjects.push((tomb, row.update_time));
            batch.delete_refs_of.push(id.clone());
            batch.delete_records_of.push(id.clone());
            EraseOutcome {
                subject_id: id.clone(),
                state: SubjectState::Erased,
                fully_erased: true,
                erased_record_count: count(records.len()),
                retained: vec![],
                erase_time: now,
            }
        } else {
            let was = state(&row)?;
            let mut updated = subject::Model {
                state: SubjectState::Restricted.as_str().to_owned(),
                national_id_kind: None,
                email_ct: None,
                phone_ct: None,
                national_id_ct: None,
                restriction_reason: ERASURE_RESTRICTION.to_owned(),
                restriction_reason_ct: None,
                restrict_time: row.restrict_time.or(Some(now)),
                // Restricted as a whole now: the purposes are absorbed.
                restricted_purposes: "[]".to_owned(),
                // A later erasure call (the retention sweep deciding again) keeps the
                // time the erasure was first asked for.
                erase_request_time: row.erase_request_time.or(Some(now)),
                update_time: later(row.update_time),
                ..row.clone()
            };
            if was != SubjectState::Restricted {
                updated.version += 1;
                batch.outbox.push(state_change(
                    &id,
                    SubjectState::Restricted,
                    updated.version,
                    now,
                    &[],
                ));
            }
            batch.update_subjects.push((updated, row.update_time));
            for r in records.iter() {
                match retain.iter().find(|k| k.record_id == r.record_id) {
                    Some(k) => batch.update_records.push((
                        record::Model {
                            restricted: true,
                            retain_until_time: k.retain_until_time,
                            legal_reference: k.legal_reference.clone(),
                            update_time: later(r.update_time),
                            ..r.clone()
                        },
                        r.update_time,
                    )),
                    None => batch.delete_records.push(r.record_id.clone()),
                }
            }
            EraseOutcome {
                subject_id: id.clone(),
                state: SubjectState::Restricted,
                fully_erased: false,
                erased_record_count: count(batch.delete_records.len()),
                retained: retain,
                erase_time: now,
            }
        };
        let outcome = self.store.apply(t, batch, idem.as_ref(), outcome).await?;
        tracing::info!(
            tenant = t,
            subject_id = %id,
            fully_erased = outcome.fully_erased,
            erased_records = outcome.erased_record_count,
            kept_records = outcome.retained.len(),
            "subject erased"
        );
        self.nudge();
        Ok(outcome)
    }

    /// PurgeRecords, the retention service's primitive: deletes or anonymises up to
    /// `limit` records matching every filter, never of excluded subjects (legal
    /// holds). Kept records are matched only through `retain_until_before`, and a
    /// subject awaiting erasure whose last kept record goes is erased (key first).
    /// A dry run counts and lists the matches and changes nothing.
    pub async fn purge(
        &self,
        tenant: &TenantId,
        mut req: PurgeRequest,
        idem: Option<Key>,
    ) -> Result<PurgeOutcome, SubjectError> {
        let limit = req.validate()?;
        let t = tenant.as_str();
        if req.dry_run {
            let total = self.store.purge_count(t, &req.filter).await?;
            let matches = self.store.purge_matches(t, &req.filter, limit).await?;
            return Ok(PurgeOutcome {
                matched_count: total as i64,
                purged_count: 0,
                items: matches
                    .into_iter()
                    .map(purge_item)
                    .collect::<Result<_, _>>()?,
                truncated: total > limit,
                erased_subject_ids: vec![],
            });
        }
        if let Some(done) = self.store.replay::<PurgeOutcome>(idem.as_ref()).await? {
            return Ok(done);
        }
        let action = req
            .action
            .ok_or_else(|| invalid(vern_kit::FieldViolation::new("action", "is required")))?;
        let mut matches = self.store.purge_matches(t, &req.filter, limit + 1).await?;
        let truncated = matches.len() as u64 > limit;
        matches.truncate(limit as usize);
        let now = vern_kit::time::now();
        let mut batch = Batch::default();
        let purged: BTreeSet<&str> = matches.iter().map(|r| r.record_id.as_str()).collect();
        for r in &matches {
            match action {
                PurgeAction::Delete => batch.delete_records.push(r.record_id.clone()),
                PurgeAction::Anonymise => batch.update_records.push((
                    record::Model {
                        subject_id: None,
                        value_ct: None,
                        source: String::new(),
                        collected_at: month_start(r.collected_at),
                        provided_by_subject: false,
                        restricted: false,
                        retain_until_time: None,
                        legal_reference: String::new(),
                        update_time: later(r.update_time),
                        ..r.clone()
                    },
                    r.update_time,
                )),
            }
        }
        // Subjects awaiting erasure whose last kept record goes now.
        let affected: Vec<String> = matches
            .iter()
            .filter_map(|r| r.subject_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let awaiting: Vec<subject::Model> = self
            .store
            .subjects(t, &affected)
            .await?
            .into_iter()
            .filter(|s| {
                s.erase_request_time.is_some() && s.state == SubjectState::Restricted.as_str()
            })
            .collect();
        let ids: Vec<String> = awaiting.iter().map(|s| s.subject_id.clone()).collect();
        let mut left: HashMap<String, usize> = HashMap::new();
        for r in self.store.records_of(t, &ids).await? {
            if !purged.contains(r.record_id.as_str())
                && let Some(s) = r.subject_id
            {
                *left.entry(s).or_default() += 1;
            }
        }
        let erased: Vec<&subject::Model> = awaiting
            .iter()
            .filter(|s| !left.contains_key(&s.subject_id))
            .collect();
        let erased_ids: Vec<String> = erased.iter().map(|s| s.subject_id.clone()).collect();
        // The shred first, as in EraseSubject.
        self.keys.shred(t, &erased_ids).await?;
        for s in erased {
            let tomb = tombstone(s, now);
            batch.outbox.push(state_change(
                &s.subject_id,
                SubjectState::Erased,
                tomb.version,
                now,
                &[],
            ));
            batch.erasures.push(erasure_notice(
                &s.subject_id,
                now,
                None,
                Some(req.policy_id.as_str()),
            ));
            batch.update_subjects.push((tomb, s.update_time));
            batch.delete_lookups.push((s.subject_id.clone(), None));
            batch.delete_refs_of.push(s.subject_id.clone());
        }
        // Subjects that remain hear which of their records went (Art. 17(2), Art. 19:
        // the downstream copies go too), one notice per subject.
        let mut by_subject: std::collections::BTreeMap<&str, Vec<(String, DataCategory, String)>> =
            Default::default();
        for r in &matches {
            let Some(s) = r.subject_id.as_deref() else {
                continue;
            };
            if erased_ids.iter().any(|e| e == s) {
                continue;
            }
            let category =
                DataCategory::parse(&r.category).ok_or_else(|| corrupt("record category"))?;
            by_subject
                .entry(s)
                .or_default()
                .push((r.record_id.clone(), category, r.field.clone()));
        }
        for (s, records) in &by_subject {
            batch
                .erasures
                .push(records_erased_notice(s, now, &req.policy_id, records));
        }
        let n = matches.len() as i64;
        let outcome = PurgeOutcome {
            matched_count: n,
            purged_count: n,
            items: vec![],
            truncated,
            erased_subject_ids: erased_ids,
        };
        let outcome = self.store.apply(t, batch, idem.as_ref(), outcome).await?;
        tracing::info!(
            tenant = t,
            policy_id = %req.policy_id,
            action = action.as_str(),
            purged = outcome.purged_count,
            erased_subjects = outcome.erased_subject_ids.len(),
            truncated = outcome.truncated,
            "records purged"
        );
        if !outcome.erased_subject_ids.is_empty() {
            self.nudge();
        }
        Ok(outcome)
    }
}

fn state(row: &subject::Model) -> Result<SubjectState, SubjectError> {
    SubjectState::parse(&row.state).ok_or_else(|| corrupt("subjects.state").into())
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn purge_item(r: record::Model) -> Result<PurgeItem, SubjectError> {
    Ok(PurgeItem {
        subject_id: r.subject_id.unwrap_or_default(),
        category: DataCategory::parse(&r.category).ok_or_else(|| corrupt("records.category"))?,
        purposes: from_json(&r.purposes)?,
        record_id: r.record_id,
        field: r.field,
        collected_at: r.collected_at,
    })
}
