//! The `purposes` table: what every replica decides Check on. ApplyPurposes writes it
//! (only definitions newer than the stored ones) and bumps the tenant's change
//! generation in the same transaction, so the other replicas drop their cached copy
//! (`vern_kit::changes`).

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait,
};

use super::ConsentStore;
use super::entities::purpose;
use crate::domain::{LegalBasis, PurposeRule};
use crate::error::ConsentError;
use crate::purposes::{PurposeBook, Versioned, scope};

#[async_trait::async_trait]
impl PurposeBook for ConsentStore {
    async fn load(&self, tenant: &str, key: &str) -> Result<Option<Versioned>, ConsentError> {
        let Some(row) = purpose::Entity::find_by_id((tenant.to_owned(), key.to_owned()))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let rule = match row.legal_basis.as_deref() {
            None => None,
            Some(b) => Some(PurposeRule {
                legal_basis: LegalBasis::parse(b)
                    .ok_or(ConsentError::Corrupt("purposes.legal_basis"))?,
                direct_marketing: row.direct_marketing,
            }),
        };
        Ok(Some(Versioned {
            rule,
            version: row.version,
        }))
    }

    async fn save(
        &self,
        tenant: &str,
        definitions: &[(String, Versioned)],
    ) -> Result<Vec<bool>, ConsentError> {
        let txn = self.db.begin().await?;
        // First: the generation's row lock orders this tenant's writers, so the
        // version comparison below cannot race another replica's.
        vern_kit::changes::bump(&txn, &scope(tenant)).await?;
        let mut applied = Vec::with_capacity(definitions.len());
        for (key, def) in definitions {
            let stored = purpose::Entity::find()
                .filter(purpose::Column::TenantId.eq(tenant))
                .filter(purpose::Column::PurposeKey.eq(key.as_str()))
                .one(&txn)
                .await?;
            if stored.as_ref().is_some_and(|s| s.version > def.version) {
                applied.push(false);
                continue;
            }
            let row = purpose::ActiveModel {
                tenant_id: Set(tenant.to_owned()),
                purpose_key: Set(key.clone()),
                legal_basis: Set(def.rule.map(|r| r.legal_basis.as_str().to_owned())),
                direct_marketing: Set(def.rule.is_some_and(|r| r.direct_marketing)),
                version: Set(def.version),
            };
            if stored.is_some() {
                row.update(&txn).await?;
            } else {
                row.insert(&txn).await?;
            }
            applied.push(true);
        }
        txn.commit().await?;
        Ok(applied)
    }
}
