//! Records of a subject: add, rectify, delete. Every change also advances the
//! subject's `update_time` under its guard, so it cannot interleave with an erasure.

use vern_kit::context::TenantId;
use vern_kit::error::Violations;
use vern_kit::idempotency::Key;

use super::{Subjects, invalid, later, record_row, record_view, writable};
use crate::domain::crypto;
use crate::domain::{
    self, RECORD_UPDATABLE, Record, RecordInput, SubjectState, check_mask, record_aad,
    validate_records,
};
use crate::error::SubjectError;
use crate::store::entities::record;
use crate::store::{Batch, json};

impl Subjects {
    /// AddRecords: the subject must be ACTIVE. Returns the new records in request
    /// order.
    pub async fn add_records(
        &self,
        tenant: &TenantId,
        subject_id: &str,
        records: Vec<RecordInput>,
        idem: Option<Key>,
    ) -> Result<Vec<Record>, SubjectError> {
        let id = domain::subject_id("subject_id", subject_id).map_err(invalid)?;
        let now = vern_kit::time::now();
        let mut v = Violations::new();
        if records.is_empty() {
            v.add("records", "at least one record is required");
        }
        let data = validate_records("records", records, now, &mut v);
        v.finish()?;
        if let Some(ids) = self.store.replay::<Vec<String>>(idem.as_ref()).await? {
            return self.records_by_id(tenant, &id, &ids).await;
        }
        let t = tenant.as_str();
        let named: Vec<(String, &domain::RecordData)> = data
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("records[{i}]."), r))
            .collect();
        self.check_purposes(t, &named).await?;
        let row = self.subject_row(t, &id).await?;
        match SubjectState::parse(&row.state) {
            Some(SubjectState::Active) => {}
            Some(SubjectState::Erased) => return Err(SubjectError::Erased),
            _ => return Err(SubjectError::NotActive),
        }
        let keys = self.tenant_keys(t)?;
        let dek = self.data_key(t, &keys, &id).await?;
        let rows = data
            .into_iter()
            .map(|d| record_row(t, &id, &dek, d, now))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<String> = rows.iter().map(|r| r.record_id.clone()).collect();
        let mut touched = row.clone();
        touched.update_time = later(row.update_time);
        let batch = Batch {
            update_subjects: vec![(touched, row.update_time)],
            insert_records: rows,
            ..Default::default()
        };
        let ids = self.store.apply(t, batch, idem.as_ref(), ids).await?;
        tracing::info!(tenant = t, subject_id = %id, count = ids.len(), "records added");
        self.records_by_id(tenant, &id, &ids).await
    }

    /// UpdateRecord (rectification, Art. 16) of the masked fields. A record kept
    /// under a retention duty cannot change.
    pub async fn update_record(
        &self,
        tenant: &TenantId,
        subject_id: &str,
        record_id: &str,
        mask: &[String],
        changes: RecordInput,
        idem: Option<Key>,
    ) -> Result<Record, SubjectError> {
        let mut v = Violations::new();
        let id = v.check(domain::subject_id("subject_id", subject_id));
        let rid = v.check(domain::record_id("record.record_id", record_id));
        check_mask(&mut v, mask, RECORD_UPDATABLE);
        v.finish()?;
        let (id, rid) = (id.unwrap_or_default(), rid.unwrap_or_default());
        if let Some(rid) = self.store.replay::<String>(idem.as_ref()).await? {
            return self.record_by_id(tenant, &id, &rid).await;
        }
        let t = tenant.as_str();
        let row = self.subject_row(t, &id).await?;
        writable(&row)?;
        let current = self.owned_record(t, &id, &rid).await?;
        if current.restricted {
            return Err(SubjectError::RecordRestricted);
        }
        let wants = |f: &str| mask.iter().any(|m| m == f);
        let now = vern_kit::time::now();
        let old = record_view(t, current.clone(), None)?.data;
        let merged = RecordInput {
            category: if wants("category") {
                changes.category
            } else {
                Some(old.category)
            },
            field: if wants("field") {
                changes.field
            } else {
                old.field
            },
            value: if wants("value") {
                changes.value
            } else {
                String::new()
            },
            source: if wants("source") {
                changes.source
            } else {
                old.source
            },
            purposes: if wants("purposes") {
                changes.purposes
            } else {
                old.purposes
            },
            collected_at: Some(if wants("collected_at") {
                changes.collected_at.unwrap_or(now)
            } else {
                old.collected_at
            }),
            provided_by_subject: if wants("provided_by_subject") {
                changes.provided_by_subject
            } else {
                old.provided_by_subject
            },
        };
        let mut v = Violations::new();
        let data = merged.validate("record.", now, &mut v);
        v.finish()?;
        let Some(data) = data else {
            return Err(invalid(vern_kit::FieldViolation::new(
                "record",
                "is invalid",
            )));
        };
        if wants("purposes") || wants("category") {
            self.check_purposes(t, &[("record.".to_owned(), &data)])
                .await?;
        }
        let value_ct = if wants("value") {
            let keys = self.tenant_keys(t)?;
            let dek = self.data_key(t, &keys, &id).await?;
            Some(crypto::seal(
                &dek,
                data.value.as_bytes(),
                &record_aad(t, &id, &rid),
            ))
        } else {
            current.value_ct.clone()
        };
        let updated = record::Model {
            category: data.category.as_str().to_owned(),
            field: data.field,
            value_ct,
            source: data.source,
            purposes: json(&data.purposes)?,
            collected_at: data.collected_at,
            provided_by_subject: data.provided_by_subject,
            update_time: later(current.update_time),
            ..current.clone()
        };
        let mut touched = row.clone();
        touched.update_time = later(row.update_time);
        let batch = Batch {
            update_subjects: vec![(touched, row.update_time)],
            update_records: vec![(updated, current.update_time)],
            ..Default::default()
        };
        let rid = self.store.apply(t, batch, idem.as_ref(), rid).await?;
        tracing::info!(tenant = t, subject_id = %id, record_id = %rid, fields = ?mask, "record rectified");
        self.record_by_id(tenant, &id, &rid).await
    }

    /// DeleteRecord. A record kept under a retention duty cannot be deleted here (the
    /// retention service purges it when the duty ends).
    pub async fn delete_record(
        &self,
        tenant: &TenantId,
        subject_id: &str,
        record_id: &str,
        idem: Option<Key>,
    ) -> Result<(), SubjectError> {
        let mut v = Violations::new();
        let id = v.check(domain::subject_id("subject_id", subject_id));
        let rid = v.check(domain::record_id("record_id", record_id));
        v.finish()?;
        let (id, rid) = (id.unwrap_or_default(), rid.unwrap_or_default());
        if self.store.replay::<()>(idem.as_ref()).await?.is_some() {
            return Ok(());
        }
        let t = tenant.as_str();
        let row = self.subject_row(t, &id).await?;
        writable(&row)?;
        let current = self.owned_record(t, &id, &rid).await?;
        if current.restricted {
            return Err(SubjectError::RecordRestricted);
        }
        let mut touched = row.clone();
        touched.update_time = later(row.update_time);
        let batch = Batch {
            update_subjects: vec![(touched, row.update_time)],
            delete_records: vec![rid.clone()],
            ..Default::default()
        };
        self.store.apply(t, batch, idem.as_ref(), ()).await?;
        tracing::info!(tenant = t, subject_id = %id, record_id = %rid, "record deleted");
        Ok(())
    }

    /// A record of the subject (NOT_FOUND when it belongs to another subject).
    async fn owned_record(
        &self,
        tenant: &str,
        subject_id: &str,
        record_id: &str,
    ) -> Result<record::Model, SubjectError> {
        self.store
            .records(tenant, &[record_id.to_owned()])
            .await?
            .into_iter()
            .find(|r| r.subject_id.as_deref() == Some(subject_id))
            .ok_or(SubjectError::RecordNotFound)
    }

    async fn record_by_id(
        &self,
        tenant: &TenantId,
        subject_id: &str,
        record_id: &str,
    ) -> Result<Record, SubjectError> {
        self.records_by_id(tenant, subject_id, &[record_id.to_owned()])
            .await?
            .pop()
            .ok_or(SubjectError::RecordNotFound)
    }

    /// These records of the subject, decrypted, in the order of `ids` (records gone
    /// since are left out).
    async fn records_by_id(
        &self,
        tenant: &TenantId,
        subject_id: &str,
        ids: &[String],
    ) -> Result<Vec<Record>, SubjectError> {
        let t = tenant.as_str();
        let rows = self.store.records(t, ids).await?;
        let keys = self.tenant_keys(t)?;
        let dek = self.data_key(t, &keys, subject_id).await?;
        let mut out = vec![];
        for id in ids {
            if let Some(r) = rows
                .iter()
                .find(|r| &r.record_id == id && r.subject_id.as_deref() == Some(subject_id))
            {
                out.push(record_view(t, r.clone(), Some(&dek))?);
            }
        }
        Ok(out)
    }
}
