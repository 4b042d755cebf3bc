//! Schema of the audit service.

use sea_orm_migration::prelude::*;

/// Runs the audit service's migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(vern_kit::idempotency::Migration),
            Box::new(M0001Chain),
        ]
    }
}

struct M0001Chain;

impl MigrationName for M0001Chain {
    fn name(&self) -> &str {
        "m0001_audit_chain"
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    TenantId,
    Seq,
    EventId,
    OccurTimeUs,
    ActorSub,
    ActorRoles,
    ActorClient,
    Action,
    Service,
    SubjectId,
    ResourceType,
    ResourceId,
    Outcome,
    StatusCode,
    ChangedFields,
    RequestId,
    TraceId,
    Detail,
    PrevHash,
    Hash,
    AppendTimeUs,
}

#[derive(DeriveIden)]
enum ChainHeads {
    Table,
    TenantId,
    Seq,
    HeadHash,
    CheckpointSeq,
    UpdateTimeUs,
}

#[derive(DeriveIden)]
enum AuditCheckpoints {
    Table,
    TenantId,
    Seq,
    HeadHash,
    CheckpointTimeUs,
    KeyId,
    Signature,
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Chain {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use AuditEvents as E;
        let text = |c: E| ColumnDef::new(c).text().not_null().to_owned();
        m.create_table(
            Table::create()
                .table(E::Table)
                .if_not_exists()
                .col(ColumnDef::new(E::TenantId).string_len(63).not_null())
                .col(ColumnDef::new(E::Seq).big_integer().not_null())
                .col(ColumnDef::new(E::EventId).string_len(36).not_null())
                .col(ColumnDef::new(E::OccurTimeUs).big_integer().not_null())
                .col(text(E::ActorSub))
                .col(text(E::ActorRoles))
                .col(text(E::ActorClient))
                .col(text(E::Action))
                .col(text(E::Service))
                .col(text(E::SubjectId))
                .col(text(E::ResourceType))
                .col(text(E::ResourceId))
                .col(ColumnDef::new(E::Outcome).string_len(16).not_null())
                .col(ColumnDef::new(E::StatusCode).integer().not_null())
                .col(text(E::ChangedFields))
                .col(text(E::RequestId))
                .col(text(E::TraceId))
                .col(text(E::Detail))
                .col(ColumnDef::new(E::PrevHash).binary().not_null())
                .col(ColumnDef::new(E::Hash).binary().not_null())
                .col(ColumnDef::new(E::AppendTimeUs).big_integer().not_null())
                .primary_key(Index::create().col(E::TenantId).col(E::Seq))
                .to_owned(),
        )
        .await?;
        // Idempotency by event id, per tenant.
        m.create_index(
            Index::create()
                .name("audit_events_event_id_uq")
                .table(E::Table)
                .col(E::TenantId)
                .col(E::EventId)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        // QueryEvents by subject, by actor, by resource and by time; each in seq order.
        for (name, col) in [
            ("audit_events_subject_idx", E::SubjectId),
            ("audit_events_actor_idx", E::ActorSub),
            ("audit_events_resource_idx", E::ResourceId),
        ] {
            m.create_index(
                Index::create()
                    .name(name)
                    .table(E::Table)
                    .col(E::TenantId)
                    .col(col)
                    .col(E::Seq)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        }
        m.create_index(
            Index::create()
                .name("audit_events_time_idx")
                .table(E::Table)
                .col(E::TenantId)
                .col(E::OccurTimeUs)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ChainHeads::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(ChainHeads::TenantId)
                        .string_len(63)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(ChainHeads::Seq).big_integer().not_null())
                .col(ColumnDef::new(ChainHeads::HeadHash).binary().not_null())
                .col(
                    ColumnDef::new(ChainHeads::CheckpointSeq)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ChainHeads::UpdateTimeUs)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AuditCheckpoints::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(AuditCheckpoints::TenantId)
                        .string_len(63)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(AuditCheckpoints::Seq)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(AuditCheckpoints::HeadHash)
                        .binary()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(AuditCheckpoints::CheckpointTimeUs)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(AuditCheckpoints::KeyId)
                        .string_len(32)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(AuditCheckpoints::Signature)
                        .binary()
                        .not_null(),
                )
                .primary_key(
                    Index::create()
                        .col(AuditCheckpoints::TenantId)
                        .col(AuditCheckpoints::Seq),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            AuditEvents::Table.into_iden(),
            ChainHeads::Table.into_iden(),
            AuditCheckpoints::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
