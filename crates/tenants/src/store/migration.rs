//! Schema of the tenants service.

use sea_orm_migration::prelude::*;

/// Runs the tenants service's migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(vern_kit::idempotency::Migration),
            Box::new(M0001Registry),
            Box::new(vern_kit::outbox::Migration),
            Box::new(vern_kit::outbox::ParkingMigration),
            Box::new(vern_kit::outbox::LeaseMigration),
            Box::new(vern_kit::outbox::TopicIndexMigration),
            Box::new(M0002RecipientLifecycle),
            // The generation of tenant statuses (GetTenantStatusGeneration).
            Box::new(vern_kit::changes::Migration),
        ]
    }
}

struct M0001Registry;

impl MigrationName for M0001Registry {
    fn name(&self) -> &str {
        "m0001_registry"
    }
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    TenantId,
    Name,
    OrgNumber,
    DpoEmail,
    DpoName,
    SupervisoryAuthority,
    GroupId,
    Status,
    SecurityMeasures,
    SuspensionReason,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum Purposes {
    Table,
    TenantId,
    Key,
    Description,
    LegalBasis,
    DataCategories,
    DirectMarketing,
    SubjectCategories,
    LegitimateInterest,
    SpecialCategoryCondition,
    RetentionSummary,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum Recipients {
    Table,
    RecipientId,
    TenantId,
    Name,
    Role,
    Purposes,
    Country,
    TransferSafeguard,
    Description,
    CreateTime,
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Registry {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Tenants::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(Tenants::TenantId)
                        .string_len(63)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Tenants::Name).string().not_null())
                .col(ColumnDef::new(Tenants::OrgNumber).string_len(9).not_null())
                .col(ColumnDef::new(Tenants::DpoEmail).string().not_null())
                .col(ColumnDef::new(Tenants::DpoName).string().not_null())
                .col(
                    ColumnDef::new(Tenants::SupervisoryAuthority)
                        .string()
                        .not_null(),
                )
                .col(ColumnDef::new(Tenants::GroupId).string_len(63).not_null())
                .col(ColumnDef::new(Tenants::Status).string_len(16).not_null())
                .col(ColumnDef::new(Tenants::SecurityMeasures).text().not_null())
                .col(ColumnDef::new(Tenants::SuspensionReason).text().not_null())
                .col(
                    ColumnDef::new(Tenants::CreateTime)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Tenants::UpdateTime)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Purposes::Table)
                .if_not_exists()
                .col(ColumnDef::new(Purposes::TenantId).string_len(63).not_null())
                .col(ColumnDef::new(Purposes::Key).string_len(63).not_null())
                .col(ColumnDef::new(Purposes::Description).text().not_null())
                .col(
                    ColumnDef::new(Purposes::LegalBasis)
                        .string_len(32)
                        .not_null(),
                )
                .col(ColumnDef::new(Purposes::DataCategories).text().not_null())
                .col(
                    ColumnDef::new(Purposes::DirectMarketing)
                        .boolean()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Purposes::SubjectCategories)
                        .text()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Purposes::LegitimateInterest)
                        .text()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Purposes::SpecialCategoryCondition)
                        .string_len(48)
                        .null(),
                )
                .col(ColumnDef::new(Purposes::RetentionSummary).text().not_null())
                .col(
                    ColumnDef::new(Purposes::CreateTime)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Purposes::UpdateTime)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .primary_key(Index::create().col(Purposes::TenantId).col(Purposes::Key))
                .foreign_key(
                    ForeignKey::create()
                        .from(Purposes::Table, Purposes::TenantId)
                        .to(Tenants::Table, Tenants::TenantId),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Recipients::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(Recipients::RecipientId)
                        .string_len(36)
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(Recipients::TenantId)
                        .string_len(63)
                        .not_null(),
                )
                .col(ColumnDef::new(Recipients::Name).string().not_null())
                .col(ColumnDef::new(Recipients::Role).string_len(16).not_null())
                .col(ColumnDef::new(Recipients::Purposes).text().not_null())
                .col(ColumnDef::new(Recipients::Country).string_len(2).not_null())
                .col(
                    ColumnDef::new(Recipients::TransferSafeguard)
                        .string_len(48)
                        .null(),
                )
                .col(ColumnDef::new(Recipients::Description).text().not_null())
                .col(
                    ColumnDef::new(Recipients::CreateTime)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(Recipients::Table, Recipients::TenantId)
                        .to(Tenants::Table, Tenants::TenantId),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("recipients_tenant_idx")
                .table(Recipients::Table)
                .col(Recipients::TenantId)
                .col(Recipients::RecipientId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("tenants_group_idx")
                .table(Tenants::Table)
                .col(Tenants::GroupId)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Recipients::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Purposes::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Tenants::Table).to_owned())
            .await
    }
}

/// Adds to `recipients` the data processing agreement (Art. 28(3): `dpa_reference`,
/// `dpa_signed_date`, `dpa_expiry_date`), the end of a recipient (`end_time`,
/// `end_reason`) and `update_time` (the compare-and-set version; NULL for rows written
/// before, which then use `create_time`). Every column nullable or with a default.
struct M0002RecipientLifecycle;

impl MigrationName for M0002RecipientLifecycle {
    fn name(&self) -> &str {
        "m0002_recipient_lifecycle"
    }
}

#[derive(DeriveIden)]
enum RecipientLifecycle {
    DpaReference,
    DpaSignedDate,
    DpaExpiryDate,
    EndTime,
    EndReason,
    UpdateTime,
}

#[async_trait::async_trait]
impl MigrationTrait for M0002RecipientLifecycle {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use RecipientLifecycle as C;
        let columns = [
            (
                "dpa_reference",
                ColumnDef::new(C::DpaReference)
                    .string_len(200)
                    .not_null()
                    .default("")
                    .to_owned(),
            ),
            (
                "dpa_signed_date",
                ColumnDef::new(C::DpaSignedDate)
                    .timestamp_with_time_zone()
                    .null()
                    .to_owned(),
            ),
            (
                "dpa_expiry_date",
                ColumnDef::new(C::DpaExpiryDate)
                    .timestamp_with_time_zone()
                    .null()
                    .to_owned(),
            ),
            (
                "end_time",
                ColumnDef::new(C::EndTime)
                    .timestamp_with_time_zone()
                    .null()
                    .to_owned(),
            ),
            (
                "end_reason",
                ColumnDef::new(C::EndReason)
                    .text()
                    .not_null()
                    .default("")
                    .to_owned(),
            ),
            (
                "update_time",
                ColumnDef::new(C::UpdateTime)
                    .timestamp_with_time_zone()
                    .null()
                    .to_owned(),
            ),
        ];
        // One column per ALTER: SQLite adds one at a time.
        for (name, col) in columns {
            if m.has_column("recipients", name).await? {
                continue;
            }
            m.alter_table(
                Table::alter()
                    .table(Recipients::Table)
                    .add_column(col)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
