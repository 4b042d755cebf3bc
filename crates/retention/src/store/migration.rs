//! Schema of the retention service.

use sea_orm_migration::prelude::*;

/// Runs the retention service's migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(vern_kit::idempotency::Migration),
            Box::new(vern_kit::outbox::Migration),
            Box::new(M0001Retention),
            Box::new(vern_kit::outbox::ParkingMigration),
            Box::new(vern_kit::outbox::LeaseMigration),
            Box::new(M0002SweepSlots),
            Box::new(vern_kit::outbox::TopicIndexMigration),
        ]
    }
}

struct M0001Retention;

impl MigrationName for M0001Retention {
    fn name(&self) -> &str {
        "m0001_retention"
    }
}

#[derive(DeriveIden)]
enum Policies {
    Table,
    PolicyId,
    TenantId,
    Name,
    Category,
    Purpose,
    Field,
    Period,
    Anchor,
    Action,
    LegalReference,
    LegalDuty,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum Holds {
    Table,
    HoldId,
    TenantId,
    Scope,
    SubjectId,
    Reason,
    EndTime,
    PlacedBy,
    CreateTime,
    ReleaseTime,
    ReleasedBy,
    ReleaseReason,
}

#[derive(DeriveIden)]
enum SweepRuns {
    Table,
    SweepRunId,
    TenantId,
    DryRun,
    Trigger,
    Status,
    RequestedBy,
    StartTime,
    EndTime,
    HeartbeatTime,
    PolicyResults,
    Items,
    ItemsTruncated,
    HeldSubjectCount,
    Error,
}

fn time(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Retention {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Policies::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(Policies::PolicyId)
                        .string_len(36)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Policies::TenantId).string_len(63).not_null())
                .col(ColumnDef::new(Policies::Name).string().not_null())
                .col(ColumnDef::new(Policies::Category).string_len(32).null())
                .col(ColumnDef::new(Policies::Purpose).string_len(63).null())
                .col(ColumnDef::new(Policies::Field).string_len(400).null())
                .col(ColumnDef::new(Policies::Period).string_len(32).not_null())
                .col(ColumnDef::new(Policies::Anchor).string_len(32).not_null())
                .col(ColumnDef::new(Policies::Action).string_len(16).not_null())
                .col(ColumnDef::new(Policies::LegalReference).text().not_null())
                .col(ColumnDef::new(Policies::LegalDuty).boolean().not_null())
                .col(time(Policies::CreateTime))
                .col(time(Policies::UpdateTime))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("policies_tenant")
                .table(Policies::Table)
                .col(Policies::TenantId)
                .col(Policies::PolicyId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Holds::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(Holds::HoldId)
                        .string_len(36)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Holds::TenantId).string_len(63).not_null())
                .col(ColumnDef::new(Holds::Scope).string_len(16).not_null())
                .col(ColumnDef::new(Holds::SubjectId).string_len(36).null())
                .col(ColumnDef::new(Holds::Reason).text().not_null())
                .col(
                    ColumnDef::new(Holds::EndTime)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(ColumnDef::new(Holds::PlacedBy).string().not_null())
                .col(time(Holds::CreateTime))
                .col(
                    ColumnDef::new(Holds::ReleaseTime)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(ColumnDef::new(Holds::ReleasedBy).string().not_null())
                .col(ColumnDef::new(Holds::ReleaseReason).text().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("holds_tenant_subject")
                .table(Holds::Table)
                .col(Holds::TenantId)
                .col(Holds::SubjectId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(SweepRuns::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(SweepRuns::SweepRunId)
                        .string_len(36)
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(SweepRuns::TenantId)
                        .string_len(63)
                        .not_null(),
                )
                .col(ColumnDef::new(SweepRuns::DryRun).boolean().not_null())
                .col(ColumnDef::new(SweepRuns::Trigger).string_len(16).not_null())
                .col(ColumnDef::new(SweepRuns::Status).string_len(16).not_null())
                .col(ColumnDef::new(SweepRuns::RequestedBy).string().not_null())
                .col(time(SweepRuns::StartTime))
                .col(
                    ColumnDef::new(SweepRuns::EndTime)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(time(SweepRuns::HeartbeatTime))
                .col(ColumnDef::new(SweepRuns::PolicyResults).text().not_null())
                .col(ColumnDef::new(SweepRuns::Items).text().not_null())
                .col(
                    ColumnDef::new(SweepRuns::ItemsTruncated)
                        .boolean()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SweepRuns::HeldSubjectCount)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(SweepRuns::Error).text().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("sweep_runs_tenant")
                .table(SweepRuns::Table)
                .col(SweepRuns::TenantId)
                .col(SweepRuns::SweepRunId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        // One running sweep per tenant, across instances: a partial unique index
        // (same syntax on SQLite and PostgreSQL).
        m.get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS sweep_runs_one_running \
                 ON sweep_runs (tenant_id) WHERE status = 'RUNNING'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            Policies::Table.into_iden(),
            Holds::Table.into_iden(),
            SweepRuns::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}

/// `sweep_slots`: the latest scheduled interval claimed per tenant, so that with several
/// instances each interval's scheduled sweep of a tenant runs once.
struct M0002SweepSlots;

impl MigrationName for M0002SweepSlots {
    fn name(&self) -> &str {
        "m0002_sweep_slots"
    }
}

#[derive(DeriveIden)]
enum SweepSlots {
    Table,
    TenantId,
    SlotStart,
    SweepRunId,
    ClaimTime,
}

#[async_trait::async_trait]
impl MigrationTrait for M0002SweepSlots {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(SweepSlots::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(SweepSlots::TenantId)
                        .string_len(63)
                        .not_null()
                        .primary_key(),
                )
                .col(time(SweepSlots::SlotStart))
                .col(
                    ColumnDef::new(SweepSlots::SweepRunId)
                        .string_len(36)
                        .not_null(),
                )
                .col(time(SweepSlots::ClaimTime))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(SweepSlots::Table).to_owned())
            .await
    }
}
