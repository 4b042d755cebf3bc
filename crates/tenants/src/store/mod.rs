//! Persistence of tenants, purposes and recipients. Every purpose and recipient query
//! is scoped by tenant id.

pub mod entities;
pub mod migration;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use vern_kit::db::Db;
use vern_kit::db::DbTarget;
use vern_kit::idempotency::{self, Key, commit_once};

use crate::domain::{
    DataCategory, LegalBasis, Purpose, PurposeSpec, Recipient, RecipientRole, SpecialCondition,
    Tenant, TenantStatus, TransferSafeguard,
};
use crate::error::{TenantError, unique_or};
use entities::{purpose, recipient, tenant};

pub use migration::Migrator;

/// Outbox topic of purpose changes (delivered to ConsentService/ApplyPurposes).
pub const PURPOSE_TOPIC: &str = "purpose";

/// Filter of ListTenants.
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    /// Only this group.
    pub group_id: Option<String>,
    /// Only this status.
    pub status: Option<TenantStatus>,
    /// Only these tenants (the caller's own, for tenant-scoped callers).
    pub only: Option<Vec<String>>,
}

/// A page of results and whether more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// True when another page exists.
    pub more: bool,
}

fn page<T>(mut items: Vec<T>, limit: u64) -> Page<T> {
    let more = items.len() as u64 > limit;
    items.truncate(limit as usize);
    Page { items, more }
}

/// The tenants service's store.
#[derive(Clone, Debug)]
pub struct TenantStore {
    db: Db,
}

impl TenantStore {
    /// Connects to `target` and runs the migrations.
    pub async fn open(target: &DbTarget) -> Result<Self, DbErr> {
        let db = vern_kit::db::connect_and_migrate::<Migrator>(target).await?;
        Ok(Self { db })
    }

    /// The connection (for tests).
    pub fn connection(&self) -> &Db {
        &self.db
    }

    /// A stored answer to an earlier call with the same request id.
    pub async fn replay<R: serde::de::DeserializeOwned>(
        &self,
        key: Option<&Key>,
    ) -> Result<Option<R>, TenantError> {
        Ok(idempotency::replay(&self.db, key).await?)
    }

    /// Inserts a tenant.
    pub async fn create_tenant(
        &self,
        t: &Tenant,
        key: Option<&Key>,
    ) -> Result<Tenant, TenantError> {
        let row = tenant_active(t);
        Ok(commit_once(&self.db, key, t.clone(), move |txn| {
            Box::pin(async move {
                row.insert(txn)
                    .await
                    .map_err(|e| unique_or(e, TenantError::TenantExists))?;
                // Unknown → active is a status change too: components that answered
                // "no such tenant" forget it.
                vern_kit::changes::bump(txn, STATUS_SCOPE).await?;
                Ok::<_, TenantError>(())
            })
        })
        .await?)
    }

    /// One tenant.
    pub async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, TenantError> {
        tenant::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(tenant_from_row)
            .transpose()
    }

    /// A page of tenants ordered by id, after `after`.
    pub async fn list_tenants(
        &self,
        after: Option<&str>,
        limit: u64,
        filter: &TenantFilter,
    ) -> Result<Page<Tenant>, TenantError> {
        let mut q = tenant::Entity::find().order_by_asc(tenant::Column::TenantId);
        if let Some(a) = after {
            q = q.filter(tenant::Column::TenantId.gt(a));
        }
        if let Some(g) = &filter.group_id {
            q = q.filter(tenant::Column::GroupId.eq(g.as_str()));
        }
        if let Some(s) = filter.status {
            q = q.filter(tenant::Column::Status.eq(s.as_str()));
        }
        if let Some(only) = &filter.only {
            q = q.filter(tenant::Column::TenantId.is_in(only.iter().map(String::as_str)));
        }
        let rows = q.limit(limit + 1).all(&self.db).await?;
        let items = rows
            .into_iter()
            .map(tenant_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit))
    }

    /// Replaces a tenant's row if it was not changed since `expected_update_time`.
    pub async fn update_tenant(
        &self,
        updated: &Tenant,
        expected: chrono::DateTime<chrono::Utc>,
        status_changes: bool,
        key: Option<&Key>,
    ) -> Result<Tenant, TenantError> {
        let t = updated;
        let update = tenant::Entity::update_many()
            .col_expr(tenant::Column::Name, Expr::value(t.name.clone()))
            .col_expr(tenant::Column::OrgNumber, Expr::value(t.org_number.clone()))
            .col_expr(tenant::Column::DpoEmail, Expr::value(t.dpo_email.clone()))
            .col_expr(tenant::Column::DpoName, Expr::value(t.dpo_name.clone()))
            .col_expr(
                tenant::Column::SupervisoryAuthority,
                Expr::value(t.supervisory_authority.clone()),
            )
            .col_expr(tenant::Column::GroupId, Expr::value(t.group_id.clone()))
            .col_expr(tenant::Column::Status, Expr::value(t.status.as_str()))
            .col_expr(
                tenant::Column::SecurityMeasures,
                Expr::value(json(&t.security_measures)?),
            )
            .col_expr(
                tenant::Column::SuspensionReason,
                Expr::value(t.suspension_reason.clone()),
            )
            .col_expr(tenant::Column::UpdateTime, Expr::value(t.update_time))
            .filter(tenant::Column::TenantId.eq(t.tenant_id.as_str()))
            .filter(tenant::Column::UpdateTime.eq(expected));
        Ok(commit_once(&self.db, key, t.clone(), move |txn| {
            Box::pin(async move {
                if update.exec(txn).await?.rows_affected != 1 {
                    return Err(TenantError::Conflict);
                }
                if status_changes {
                    vern_kit::changes::bump(txn, STATUS_SCOPE).await?;
                }
                Ok(())
            })
        })
        .await?)
    }

    /// The generation of tenant statuses: moves with every suspension and resumption.
    pub async fn status_generation(&self) -> Result<i64, TenantError> {
        Ok(vern_kit::changes::generations(&self.db)
            .await?
            .into_iter()
            .find(|(scope, _)| scope == STATUS_SCOPE)
            .map_or(0, |(_, g)| g))
    }

    /// Inserts a purpose and, in the same transaction, its change notification.
    pub async fn create_purpose(
        &self,
        p: &Purpose,
        key: Option<&Key>,
        notification: Vec<u8>,
    ) -> Result<Purpose, TenantError> {
        let row = purpose_active(p)?;
        let tenant = p.tenant_id.clone();
        Ok(commit_once(&self.db, key, p.clone(), move |txn| {
            Box::pin(async move {
                row.insert(txn)
                    .await
                    .map_err(|e| unique_or(e, TenantError::PurposeExists))?;
                vern_kit::outbox::enqueue(txn, &tenant, PURPOSE_TOPIC, notification).await?;
                Ok::<_, TenantError>(())
            })
        })
        .await?)
    }

    /// One purpose of a tenant.
    pub async fn get_purpose(
        &self,
        tenant_id: &str,
        key: &str,
    ) -> Result<Option<Purpose>, TenantError> {
        purpose::Entity::find_by_id((tenant_id.to_owned(), key.to_owned()))
            .one(&self.db)
            .await?
            .map(purpose_from_row)
            .transpose()
    }

    /// A page of a tenant's purposes ordered by key.
    pub async fn list_purposes(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Page<Purpose>, TenantError> {
        let mut q = purpose::Entity::find()
            .filter(purpose::Column::TenantId.eq(tenant_id))
            .order_by_asc(purpose::Column::Key);
        if let Some(a) = after {
            q = q.filter(purpose::Column::Key.gt(a));
        }
        let rows = q.limit(limit + 1).all(&self.db).await?;
        let items = rows
            .into_iter()
            .map(purpose_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit))
    }

    /// Replaces a purpose if it was not changed since `expected`.
    pub async fn update_purpose(
        &self,
        p: &Purpose,
        expected: chrono::DateTime<chrono::Utc>,
        key: Option<&Key>,
        notification: Vec<u8>,
    ) -> Result<Purpose, TenantError> {
        let tenant = p.tenant_id.clone();
        let s = &p.spec;
        let update = purpose::Entity::update_many()
            .col_expr(
                purpose::Column::Description,
                Expr::value(s.description.clone()),
            )
            .col_expr(
                purpose::Column::LegalBasis,
                Expr::value(s.legal_basis.as_str()),
            )
            .col_expr(
                purpose::Column::DataCategories,
                Expr::value(json(&categories(&s.data_categories))?),
            )
            .col_expr(
                purpose::Column::DirectMarketing,
                Expr::value(s.direct_marketing),
            )
            .col_expr(
                purpose::Column::SubjectCategories,
                Expr::value(json(&s.subject_categories)?),
            )
            .col_expr(
                purpose::Column::LegitimateInterest,
                Expr::value(s.legitimate_interest.clone()),
            )
            .col_expr(
                purpose::Column::SpecialCategoryCondition,
                Expr::value(s.special_condition.map(|c| c.as_str().to_owned())),
            )
            .col_expr(
                purpose::Column::RetentionSummary,
                Expr::value(s.retention_summary.clone()),
            )
            .col_expr(purpose::Column::UpdateTime, Expr::value(p.update_time))
            .filter(purpose::Column::TenantId.eq(p.tenant_id.as_str()))
            .filter(purpose::Column::Key.eq(p.key.as_str()))
            .filter(purpose::Column::UpdateTime.eq(expected));
        Ok(commit_once(&self.db, key, p.clone(), move |txn| {
            Box::pin(async move {
                if update.exec(txn).await?.rows_affected != 1 {
                    return Err(TenantError::Conflict);
                }
                vern_kit::outbox::enqueue(txn, &tenant, PURPOSE_TOPIC, notification).await?;
                Ok(())
            })
        })
        .await?)
    }

    /// Inserts a recipient after checking, in the same transaction, that its purposes
    /// exist in its tenant.
    pub async fn create_recipient(
        &self,
        r: &Recipient,
        key: Option<&Key>,
    ) -> Result<Recipient, TenantError> {
        let row = recipient::ActiveModel {
            recipient_id: Set(r.recipient_id.clone()),
            tenant_id: Set(r.tenant_id.clone()),
            name: Set(r.name.clone()),
            role: Set(r.role.as_str().to_owned()),
            purposes: Set(json(&r.purposes)?),
            country: Set(r.country.clone()),
            transfer_safeguard: Set(r.transfer_safeguard.map(|s| s.as_str().to_owned())),
            description: Set(r.description.clone()),
            create_time: Set(r.create_time),
            dpa_reference: Set(r.dpa_reference.clone()),
            dpa_signed_date: Set(r.dpa_signed_date),
            dpa_expiry_date: Set(r.dpa_expiry_date),
            end_time: Set(r.end_time),
            end_reason: Set(r.end_reason.clone()),
            update_time: Set(Some(r.update_time)),
        };
        let (tenant_id, purposes) = (r.tenant_id.clone(), r.purposes.clone());
        Ok(commit_once(&self.db, key, r.clone(), move |txn| {
            Box::pin(async move {
                let known = existing_purpose_keys(txn, &tenant_id, &purposes).await?;
                if let Some(i) = purposes.iter().position(|p| !known.contains(p)) {
                    return Err(TenantError::UnknownPurpose(i));
                }
                row.insert(txn).await?;
                Ok(())
            })
        })
        .await?)
    }

    /// One recipient of a tenant.
    pub async fn get_recipient(
        &self,
        tenant_id: &str,
        recipient_id: &str,
    ) -> Result<Option<Recipient>, TenantError> {
        recipient::Entity::find()
            .filter(recipient::Column::TenantId.eq(tenant_id))
            .filter(recipient::Column::RecipientId.eq(recipient_id))
            .one(&self.db)
            .await?
            .map(recipient_from_row)
            .transpose()
    }

    /// Replaces a recipient's editable fields and its end (`r` as a whole) if it was
    /// not changed since `expected` and is not ended; its purposes are checked in the
    /// same transaction.
    pub async fn update_recipient(
        &self,
        r: &Recipient,
        expected: chrono::DateTime<chrono::Utc>,
        key: Option<&Key>,
    ) -> Result<Recipient, TenantError> {
        let update = recipient::Entity::update_many()
            .col_expr(recipient::Column::Name, Expr::value(r.name.clone()))
            .col_expr(recipient::Column::Purposes, Expr::value(json(&r.purposes)?))
            .col_expr(recipient::Column::Country, Expr::value(r.country.clone()))
            .col_expr(
                recipient::Column::TransferSafeguard,
                Expr::value(r.transfer_safeguard.map(|s| s.as_str().to_owned())),
            )
            .col_expr(
                recipient::Column::Description,
                Expr::value(r.description.clone()),
            )
            .col_expr(
                recipient::Column::DpaReference,
                Expr::value(r.dpa_reference.clone()),
            )
            .col_expr(
                recipient::Column::DpaSignedDate,
                Expr::value(r.dpa_signed_date),
            )
            .col_expr(
                recipient::Column::DpaExpiryDate,
                Expr::value(r.dpa_expiry_date),
            )
            .col_expr(recipient::Column::EndTime, Expr::value(r.end_time))
            .col_expr(
                recipient::Column::EndReason,
                Expr::value(r.end_reason.clone()),
            )
            .col_expr(
                recipient::Column::UpdateTime,
                Expr::value(Some(r.update_time)),
            )
            .filter(recipient::Column::TenantId.eq(r.tenant_id.as_str()))
            .filter(recipient::Column::RecipientId.eq(r.recipient_id.as_str()))
            // Only a current recipient changes: an end is final.
            .filter(recipient::Column::EndTime.is_null())
            .filter(
                Condition::any()
                    .add(recipient::Column::UpdateTime.eq(expected))
                    .add(
                        Condition::all()
                            .add(recipient::Column::UpdateTime.is_null())
                            .add(recipient::Column::CreateTime.eq(expected)),
                    ),
            );
        let (tenant_id, purposes) = (r.tenant_id.clone(), r.purposes.clone());
        Ok(commit_once(&self.db, key, r.clone(), move |txn| {
            Box::pin(async move {
                let known = existing_purpose_keys(txn, &tenant_id, &purposes).await?;
                if let Some(i) = purposes.iter().position(|p| !known.contains(p)) {
                    return Err(TenantError::Api(vern_kit::ApiError::invalid(
                        format!("recipient.purposes[{i}]"),
                        "is not a purpose of this tenant",
                    )));
                }
                if update.exec(txn).await?.rows_affected != 1 {
                    return Err(TenantError::Conflict);
                }
                Ok(())
            })
        })
        .await?)
    }

    /// A page of a tenant's recipients in creation order: the current ones (not ended
    /// at `now`), or all with `include_ended`.
    pub async fn list_recipients(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: u64,
        include_ended: bool,
    ) -> Result<Page<Recipient>, TenantError> {
        let mut q = recipient::Entity::find()
            .filter(recipient::Column::TenantId.eq(tenant_id))
            .order_by_asc(recipient::Column::RecipientId);
        if !include_ended {
            q = q.filter(current(vern_kit::time::now()));
        }
        if let Some(a) = after {
            q = q.filter(recipient::Column::RecipientId.gt(a));
        }
        let rows = q.limit(limit + 1).all(&self.db).await?;
        let items = rows
            .into_iter()
            .map(recipient_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit))
    }

    /// All purposes and the current recipients of a tenant (for the record of
    /// processing, Art. 30(1)(d): ended recipients leave it).
    pub async fn registry(
        &self,
        tenant_id: &str,
    ) -> Result<(Vec<Purpose>, Vec<Recipient>), TenantError> {
        let purposes = purpose::Entity::find()
            .filter(purpose::Column::TenantId.eq(tenant_id))
            .order_by_asc(purpose::Column::Key)
            .all(&self.db)
            .await?
            .into_iter()
            .map(purpose_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let recipients = recipient::Entity::find()
            .filter(recipient::Column::TenantId.eq(tenant_id))
            .filter(current(vern_kit::time::now()))
            .order_by_asc(recipient::Column::RecipientId)
            .all(&self.db)
            .await?
            .into_iter()
            .map(recipient_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((purposes, recipients))
    }
}

/// Recipients data still goes to at `now`: not ended, or ended at a time still ahead
/// (an end may be given up to the clock skew ahead).
fn current(now: chrono::DateTime<chrono::Utc>) -> Condition {
    Condition::any()
        .add(recipient::Column::EndTime.is_null())
        .add(recipient::Column::EndTime.gt(now))
}

async fn existing_purpose_keys(
    db: &impl ConnectionTrait,
    tenant_id: &str,
    keys: &[String],
) -> Result<Vec<String>, DbErr> {
    if keys.is_empty() {
        return Ok(vec![]);
    }
    Ok(purpose::Entity::find()
        .filter(purpose::Column::TenantId.eq(tenant_id))
        .filter(purpose::Column::Key.is_in(keys.iter().map(String::as_str)))
        .all(db)
        .await?
        .into_iter()
        .map(|p| p.key)
        .collect())
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, DbErr> {
    serde_json::to_string(v).map_err(|e| DbErr::Json(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, DbErr> {
    serde_json::from_str(s).map_err(|e| DbErr::Json(e.to_string()))
}

fn categories(c: &[DataCategory]) -> Vec<&'static str> {
    c.iter().map(|c| c.as_str()).collect()
}

fn corrupt(what: &str) -> DbErr {
    DbErr::Type(format!("unknown stored value in {what}"))
}

fn tenant_active(t: &Tenant) -> tenant::ActiveModel {
    tenant::ActiveModel {
        tenant_id: Set(t.tenant_id.clone()),
        name: Set(t.name.clone()),
        org_number: Set(t.org_number.clone()),
        dpo_email: Set(t.dpo_email.clone()),
        dpo_name: Set(t.dpo_name.clone()),
        supervisory_authority: Set(t.supervisory_authority.clone()),
        group_id: Set(t.group_id.clone()),
        status: Set(t.status.as_str().to_owned()),
        security_measures: Set(
            serde_json::to_string(&t.security_measures).unwrap_or_else(|_| "[]".into())
        ),
        suspension_reason: Set(t.suspension_reason.clone()),
        create_time: Set(t.create_time),
        update_time: Set(t.update_time),
    }
}

fn tenant_from_row(m: tenant::Model) -> Result<Tenant, TenantError> {
    Ok(Tenant {
        status: TenantStatus::parse(&m.status).ok_or_else(|| corrupt("tenants.status"))?,
        security_measures: from_json(&m.security_measures)?,
        tenant_id: m.tenant_id,
        name: m.name,
        org_number: m.org_number,
        dpo_email: m.dpo_email,
        dpo_name: m.dpo_name,
        supervisory_authority: m.supervisory_authority,
        group_id: m.group_id,
        suspension_reason: m.suspension_reason,
        create_time: m.create_time,
        update_time: m.update_time,
    })
}

fn purpose_active(p: &Purpose) -> Result<purpose::ActiveModel, DbErr> {
    let s = &p.spec;
    Ok(purpose::ActiveModel {
        tenant_id: Set(p.tenant_id.clone()),
        key: Set(p.key.clone()),
        description: Set(s.description.clone()),
        legal_basis: Set(s.legal_basis.as_str().to_owned()),
        data_categories: Set(json(&categories(&s.data_categories))?),
        direct_marketing: Set(s.direct_marketing),
        subject_categories: Set(json(&s.subject_categories)?),
        legitimate_interest: Set(s.legitimate_interest.clone()),
        special_category_condition: Set(s.special_condition.map(|c| c.as_str().to_owned())),
        retention_summary: Set(s.retention_summary.clone()),
        create_time: Set(p.create_time),
        update_time: Set(p.update_time),
    })
}

fn purpose_from_row(m: purpose::Model) -> Result<Purpose, TenantError> {
    let cats: Vec<String> = from_json(&m.data_categories)?;
    let data_categories = cats
        .iter()
        .map(|c| DataCategory::parse(c).ok_or_else(|| corrupt("purposes.data_categories")))
        .collect::<Result<Vec<_>, _>>()?;
    let special_condition = match &m.special_category_condition {
        Some(s) => Some(
            SpecialCondition::parse(s)
                .ok_or_else(|| corrupt("purposes.special_category_condition"))?,
        ),
        None => None,
    };
    Ok(Purpose {
        spec: PurposeSpec {
            description: m.description,
            legal_basis: LegalBasis::parse(&m.legal_basis)
                .ok_or_else(|| corrupt("purposes.legal_basis"))?,
            data_categories,
            direct_marketing: m.direct_marketing,
            subject_categories: from_json(&m.subject_categories)?,
            legitimate_interest: m.legitimate_interest,
            special_condition,
            retention_summary: m.retention_summary,
        },
        tenant_id: m.tenant_id,
        key: m.key,
        create_time: m.create_time,
        update_time: m.update_time,
    })
}

fn recipient_from_row(m: recipient::Model) -> Result<Recipient, TenantError> {
    let transfer_safeguard = match &m.transfer_safeguard {
        Some(s) => Some(
            TransferSafeguard::parse(s).ok_or_else(|| corrupt("recipients.transfer_safeguard"))?,
        ),
        None => None,
    };
    Ok(Recipient {
        role: RecipientRole::parse(&m.role).ok_or_else(|| corrupt("recipients.role"))?,
        purposes: from_json(&m.purposes)?,
        transfer_safeguard,
        tenant_id: m.tenant_id,
        recipient_id: m.recipient_id,
        name: m.name,
        country: m.country,
        description: m.description,
        update_time: m.update_time.unwrap_or(m.create_time),
        create_time: m.create_time,
        dpa_reference: m.dpa_reference,
        dpa_signed_date: m.dpa_signed_date,
        dpa_expiry_date: m.dpa_expiry_date,
        end_time: m.end_time,
        end_reason: m.end_reason,
    })
}

/// The change-generation scope of tenant statuses.
const STATUS_SCOPE: &str = "tenant-status";
