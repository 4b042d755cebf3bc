//! Schema of the consents service.

use sea_orm_migration::prelude::*;

/// Runs the consents service's migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(vern_kit::idempotency::Migration),
            Box::new(M0001Consents),
            Box::new(vern_kit::outbox::Migration),
            Box::new(vern_kit::outbox::ParkingMigration),
            Box::new(M0002SealedEvidence),
            Box::new(vern_kit::changes::Migration),
            Box::new(M0003Purposes),
            Box::new(vern_kit::outbox::LeaseMigration),
            Box::new(vern_kit::outbox::TopicIndexMigration),
            Box::new(M0004CompellingGrounds),
            Box::new(M0005RestrictedPurposes),
            Box::new(M0006SealedGrounds),
            Box::new(vern_kit::keycheck::Migration),
        ]
    }
}

struct M0001Consents;

impl MigrationName for M0001Consents {
    fn name(&self) -> &str {
        "m0001_consents"
    }
}

#[derive(DeriveIden)]
enum ConsentEvents {
    Table,
    EventId,
    TenantId,
    SubjectId,
    Purpose,
    Action,
    Channel,
    NoticeVersion,
    Evidence,
    Actor,
    RecordedBy,
    RequestId,
    RightsRequestId,
    OccurTime,
    ExpiresAt,
    CreateTime,
}

#[derive(DeriveIden)]
enum ConsentStates {
    Table,
    TenantId,
    SubjectId,
    Purpose,
    LatestEventId,
    LatestAction,
    LatestOccurTime,
    LatestExpiresAt,
    ObjectionEventId,
    ObjectionOccurTime,
    LastGrantTime,
    NoticeVersion,
    Channel,
    Version,
    UpdateTime,
}

#[derive(DeriveIden)]
enum SubjectStates {
    Table,
    TenantId,
    SubjectId,
    State,
    Version,
    ChangeTime,
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Consents {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ConsentEvents::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(ConsentEvents::EventId)
                        .string_len(36)
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(ConsentEvents::TenantId)
                        .string_len(63)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentEvents::SubjectId)
                        .string_len(36)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentEvents::Purpose)
                        .string_len(63)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentEvents::Action)
                        .string_len(16)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentEvents::Channel)
                        .string_len(16)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentEvents::NoticeVersion)
                        .string()
                        .not_null(),
                )
                .col(ColumnDef::new(ConsentEvents::Evidence).text().not_null())
                .col(ColumnDef::new(ConsentEvents::Actor).string().not_null())
                .col(
                    ColumnDef::new(ConsentEvents::RecordedBy)
                        .string()
                        .not_null(),
                )
                .col(ColumnDef::new(ConsentEvents::RequestId).string().not_null())
                .col(
                    ColumnDef::new(ConsentEvents::RightsRequestId)
                        .string()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentEvents::OccurTime)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentEvents::ExpiresAt)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(
                    ColumnDef::new(ConsentEvents::CreateTime)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("consent_events_subject_idx")
                .table(ConsentEvents::Table)
                .col(ConsentEvents::TenantId)
                .col(ConsentEvents::SubjectId)
                .col(ConsentEvents::Purpose)
                .col(ConsentEvents::EventId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ConsentStates::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(ConsentStates::TenantId)
                        .string_len(63)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentStates::SubjectId)
                        .string_len(36)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentStates::Purpose)
                        .string_len(63)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentStates::LatestEventId)
                        .string_len(36)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentStates::LatestAction)
                        .string_len(16)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentStates::LatestOccurTime)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentStates::LatestExpiresAt)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(
                    ColumnDef::new(ConsentStates::ObjectionEventId)
                        .string_len(36)
                        .null(),
                )
                .col(
                    ColumnDef::new(ConsentStates::ObjectionOccurTime)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(
                    ColumnDef::new(ConsentStates::LastGrantTime)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(
                    ColumnDef::new(ConsentStates::NoticeVersion)
                        .string()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentStates::Channel)
                        .string_len(16)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentStates::Version)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentStates::UpdateTime)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .primary_key(
                    Index::create()
                        .col(ConsentStates::TenantId)
                        .col(ConsentStates::SubjectId)
                        .col(ConsentStates::Purpose),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(SubjectStates::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(SubjectStates::TenantId)
                        .string_len(63)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SubjectStates::SubjectId)
                        .string_len(36)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SubjectStates::State)
                        .string_len(16)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SubjectStates::Version)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SubjectStates::ChangeTime)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .primary_key(
                    Index::create()
                        .col(SubjectStates::TenantId)
                        .col(SubjectStates::SubjectId),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(SubjectStates::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(ConsentStates::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(ConsentEvents::Table).to_owned())
            .await
    }
}

/// Sealed evidence: the subjects' data keys (`consent_keys`) and the sealed column
/// `consent_events.evidence_ct`. Additive; rows written before keep their plaintext
/// `evidence` until the store seals them at start ([`super::ConsentStore::seal_legacy`]).
struct M0002SealedEvidence;

impl MigrationName for M0002SealedEvidence {
    fn name(&self) -> &str {
        "m0002_sealed_evidence"
    }
}

#[derive(DeriveIden)]
enum ConsentKeys {
    Table,
    TenantId,
    SubjectId,
    WrappedKey,
    CreateTime,
}

#[derive(DeriveIden)]
enum SealedEvents {
    EvidenceCt,
}

#[async_trait::async_trait]
impl MigrationTrait for M0002SealedEvidence {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ConsentKeys::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(ConsentKeys::TenantId)
                        .string_len(63)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ConsentKeys::SubjectId)
                        .string_len(36)
                        .not_null(),
                )
                .col(ColumnDef::new(ConsentKeys::WrappedKey).blob().not_null())
                .col(
                    ColumnDef::new(ConsentKeys::CreateTime)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .primary_key(
                    Index::create()
                        .col(ConsentKeys::TenantId)
                        .col(ConsentKeys::SubjectId),
                )
                .to_owned(),
        )
        .await?;
        if !m.has_column("consent_events", "evidence_ct").await? {
            m.alter_table(
                Table::alter()
                    .table(ConsentEvents::Table)
                    .add_column(ColumnDef::new(SealedEvents::EvidenceCt).blob().null())
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ConsentKeys::Table).to_owned())
            .await
    }
}

/// Purposes shared by the replicas (`purposes`), versioned by the tenants service's
/// `update_time`.
struct M0003Purposes;

impl MigrationName for M0003Purposes {
    fn name(&self) -> &str {
        "m0003_purposes"
    }
}

#[derive(DeriveIden)]
enum Purposes {
    Table,
    TenantId,
    PurposeKey,
    LegalBasis,
    DirectMarketing,
    Version,
}

#[async_trait::async_trait]
impl MigrationTrait for M0003Purposes {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Purposes::Table)
                .if_not_exists()
                .col(ColumnDef::new(Purposes::TenantId).string_len(63).not_null())
                .col(ColumnDef::new(Purposes::PurposeKey).string().not_null())
                .col(ColumnDef::new(Purposes::LegalBasis).string().null())
                .col(
                    ColumnDef::new(Purposes::DirectMarketing)
                        .boolean()
                        .not_null(),
                )
                .col(ColumnDef::new(Purposes::Version).big_integer().not_null())
                .primary_key(
                    Index::create()
                        .col(Purposes::TenantId)
                        .col(Purposes::PurposeKey),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Purposes::Table).to_owned())
            .await
    }
}

/// Compelling-grounds decisions (Art. 21(1)): the `objection_decisions` history and, on
/// `consent_states`, the latest decision with the objection it answers (what Check reads).
struct M0004CompellingGrounds;

impl MigrationName for M0004CompellingGrounds {
    fn name(&self) -> &str {
        "m0004_compelling_grounds"
    }
}

#[derive(DeriveIden)]
enum ObjectionDecisions {
    Table,
    TenantId,
    DecisionId,
    SubjectId,
    Purpose,
    ObjectionEventId,
    Reason,
    DecidedBy,
    RequestId,
    DecideTime,
}

#[derive(DeriveIden)]
enum GroundsColumns {
    ConsentStates,
    GroundsDecisionId,
    GroundsObjectionId,
}

#[async_trait::async_trait]
impl MigrationTrait for M0004CompellingGrounds {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use ObjectionDecisions as D;
        m.create_table(
            Table::create()
                .table(D::Table)
                .if_not_exists()
                .col(ColumnDef::new(D::TenantId).string_len(63).not_null())
                .col(ColumnDef::new(D::DecisionId).string().not_null())
                .col(ColumnDef::new(D::SubjectId).string().not_null())
                .col(ColumnDef::new(D::Purpose).string().not_null())
                .col(ColumnDef::new(D::ObjectionEventId).string().not_null())
                .col(ColumnDef::new(D::Reason).text().not_null())
                .col(ColumnDef::new(D::DecidedBy).string().not_null())
                .col(ColumnDef::new(D::RequestId).string().not_null())
                .col(
                    ColumnDef::new(D::DecideTime)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .primary_key(Index::create().col(D::TenantId).col(D::DecisionId))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("objection_decisions_subject")
                .table(D::Table)
                .col(D::TenantId)
                .col(D::SubjectId)
                .to_owned(),
        )
        .await?;
        for (col, name) in [
            (GroundsColumns::GroundsDecisionId, "grounds_decision_id"),
            (GroundsColumns::GroundsObjectionId, "grounds_objection_id"),
        ] {
            if !m.has_column("consent_states", name).await? {
                m.alter_table(
                    Table::alter()
                        .table(GroundsColumns::ConsentStates)
                        .add_column(ColumnDef::new(col).string().null())
                        .to_owned(),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ObjectionDecisions::Table).to_owned())
            .await
    }
}

/// Adds `subject_states.restricted_purposes`: the purpose keys the subject's processing
/// is restricted for (Art. 18) while it is ACTIVE, JSON text; `[]` for existing rows.
struct M0005RestrictedPurposes;

impl MigrationName for M0005RestrictedPurposes {
    fn name(&self) -> &str {
        "m0005_restricted_purposes"
    }
}

#[derive(DeriveIden)]
enum RestrictedPurposes {
    SubjectStates,
    RestrictedPurposes,
}

#[async_trait::async_trait]
impl MigrationTrait for M0005RestrictedPurposes {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.has_column("subject_states", "restricted_purposes")
            .await?
        {
            return Ok(());
        }
        m.alter_table(
            Table::alter()
                .table(RestrictedPurposes::SubjectStates)
                .add_column(
                    ColumnDef::new(RestrictedPurposes::RestrictedPurposes)
                        .text()
                        .not_null()
                        .default("[]"),
                )
                .to_owned(),
        )
        .await
    }
}

/// Sealed compelling-grounds reasons: `objection_decisions.reason_ct`, the reason sealed
/// under the subject's data key (a statement about one person's case, shredded with the
/// subject). Additive; rows written before keep their plaintext `reason` until the store
/// seals them at start ([`super::ConsentStore::seal_legacy`]): migrations have no keys.
struct M0006SealedGrounds;

impl MigrationName for M0006SealedGrounds {
    fn name(&self) -> &str {
        "m0006_sealed_grounds"
    }
}

#[derive(DeriveIden)]
enum SealedGrounds {
    ObjectionDecisions,
    ReasonCt,
}

#[async_trait::async_trait]
impl MigrationTrait for M0006SealedGrounds {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.has_column("objection_decisions", "reason_ct").await? {
            return Ok(());
        }
        m.alter_table(
            Table::alter()
                .table(SealedGrounds::ObjectionDecisions)
                .add_column(ColumnDef::new(SealedGrounds::ReasonCt).blob().null())
                .to_owned(),
        )
        .await
    }
}
