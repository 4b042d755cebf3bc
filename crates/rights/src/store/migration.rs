//! Schema of the rights service.

use sea_orm_migration::prelude::*;

/// Runs the rights service's migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(vern_kit::idempotency::Migration),
            Box::new(vern_kit::outbox::Migration),
            Box::new(M0001Rights),
            Box::new(M0002PersonalErasedAt),
            Box::new(vern_kit::outbox::ParkingMigration),
            Box::new(M0003SealedFeedRefs),
            Box::new(vern_kit::outbox::LeaseMigration),
            Box::new(vern_kit::outbox::TopicIndexMigration),
            Box::new(M0004Languages),
            Box::new(M0005EventDetail),
            Box::new(vern_kit::keycheck::Migration),
            Box::new(M0006StatusIndex),
        ]
    }
}

struct M0001Rights;

impl MigrationName for M0001Rights {
    fn name(&self) -> &str {
        "m0001_rights"
    }
}

#[derive(DeriveIden)]
enum RightsRequests {
    Table,
    TenantId,
    RightsRequestId,
    RequestType,
    Status,
    SubjectId,
    Channel,
    RequestId,
    WrappedKey,
    Personal,
    Purposes,
    ReceivedAt,
    DueAt,
    OriginalDueAt,
    Extended,
    ExtensionMonths,
    ExtensionReason,
    SubjectInformedAt,
    VerifyTime,
    VerifiedBy,
    VerificationMethod,
    VerificationNote,
    RejectionGround,
    RejectionReason,
    RejectTime,
    CompleteTime,
    Fulfilled,
    Outcome,
    RequiredSystems,
    Version,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum RightsReports {
    Table,
    TenantId,
    RightsRequestId,
    Sealed,
    GenerateTime,
}

#[derive(DeriveIden)]
enum RightsEvents {
    Table,
    TenantId,
    Seq,
    EventId,
    EventType,
    SubjectId,
    ExternalRefs,
    RightsRequestId,
    Purposes,
    Fields,
    RetainUntilTime,
    OccurTime,
}

#[derive(DeriveIden)]
enum RightsEventAcks {
    Table,
    TenantId,
    EventId,
    System,
    AckedBy,
    AckTime,
}

#[derive(DeriveIden)]
enum RightsFeedHeads {
    Table,
    TenantId,
    LastSeq,
}

#[derive(DeriveIden)]
enum RightsSettings {
    Table,
    TenantId,
    RequiredSystems,
    AutomatedDecisionMaking,
    UpdateTime,
}

fn s(c: impl IntoIden, len: u32) -> ColumnDef {
    ColumnDef::new(c).string_len(len).not_null().to_owned()
}
fn text(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c).text().not_null().to_owned()
}
fn time(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}
fn opt_time(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Rights {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use RightsRequests as R;
        m.create_table(
            Table::create()
                .table(R::Table)
                .if_not_exists()
                .col(s(R::TenantId, 63))
                .col(s(R::RightsRequestId, 36))
                .col(s(R::RequestType, 32))
                .col(s(R::Status, 16))
                .col(s(R::SubjectId, 36))
                .col(s(R::Channel, 16))
                .col(s(R::RequestId, 128))
                .col(ColumnDef::new(R::WrappedKey).blob().not_null())
                .col(ColumnDef::new(R::Personal).blob().not_null())
                .col(text(R::Purposes))
                .col(time(R::ReceivedAt))
                .col(time(R::DueAt))
                .col(time(R::OriginalDueAt))
                .col(ColumnDef::new(R::Extended).boolean().not_null())
                .col(ColumnDef::new(R::ExtensionMonths).integer().not_null())
                .col(text(R::ExtensionReason))
                .col(opt_time(R::SubjectInformedAt))
                .col(opt_time(R::VerifyTime))
                .col(text(R::VerifiedBy))
                .col(s(R::VerificationMethod, 64))
                .col(text(R::VerificationNote))
                .col(s(R::RejectionGround, 64))
                .col(text(R::RejectionReason))
                .col(opt_time(R::RejectTime))
                .col(opt_time(R::CompleteTime))
                .col(ColumnDef::new(R::Fulfilled).boolean().not_null())
                .col(ColumnDef::new(R::Outcome).text().null())
                .col(text(R::RequiredSystems))
                .col(ColumnDef::new(R::Version).big_integer().not_null())
                .col(time(R::CreateTime))
                .col(time(R::UpdateTime))
                .primary_key(Index::create().col(R::TenantId).col(R::RightsRequestId))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("rights_requests_due_idx")
                .table(R::Table)
                .col(R::TenantId)
                .col(R::DueAt)
                .col(R::RightsRequestId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("rights_requests_subject_idx")
                .table(R::Table)
                .col(R::TenantId)
                .col(R::SubjectId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(RightsReports::Table)
                .if_not_exists()
                .col(s(RightsReports::TenantId, 63))
                .col(s(RightsReports::RightsRequestId, 36))
                .col(ColumnDef::new(RightsReports::Sealed).blob().not_null())
                .col(time(RightsReports::GenerateTime))
                .primary_key(
                    Index::create()
                        .col(RightsReports::TenantId)
                        .col(RightsReports::RightsRequestId),
                )
                .to_owned(),
        )
        .await?;
        use RightsEvents as E;
        m.create_table(
            Table::create()
                .table(E::Table)
                .if_not_exists()
                .col(s(E::TenantId, 63))
                .col(ColumnDef::new(E::Seq).big_integer().not_null())
                .col(s(E::EventId, 36))
                .col(s(E::EventType, 48))
                .col(s(E::SubjectId, 36))
                .col(text(E::ExternalRefs))
                .col(s(E::RightsRequestId, 36))
                .col(text(E::Purposes))
                .col(text(E::Fields))
                .col(opt_time(E::RetainUntilTime))
                .col(time(E::OccurTime))
                .primary_key(Index::create().col(E::TenantId).col(E::Seq))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("rights_events_id_idx")
                .table(E::Table)
                .col(E::TenantId)
                .col(E::EventId)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("rights_events_request_idx")
                .table(E::Table)
                .col(E::TenantId)
                .col(E::RightsRequestId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        use RightsEventAcks as A;
        m.create_table(
            Table::create()
                .table(A::Table)
                .if_not_exists()
                .col(s(A::TenantId, 63))
                .col(s(A::EventId, 36))
                .col(s(A::System, 63))
                .col(text(A::AckedBy))
                .col(time(A::AckTime))
                .primary_key(
                    Index::create()
                        .col(A::TenantId)
                        .col(A::EventId)
                        .col(A::System),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(RightsFeedHeads::Table)
                .if_not_exists()
                .col(s(RightsFeedHeads::TenantId, 63).primary_key().to_owned())
                .col(
                    ColumnDef::new(RightsFeedHeads::LastSeq)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(RightsSettings::Table)
                .if_not_exists()
                .col(s(RightsSettings::TenantId, 63).primary_key().to_owned())
                .col(text(RightsSettings::RequiredSystems))
                .col(text(RightsSettings::AutomatedDecisionMaking))
                .col(time(RightsSettings::UpdateTime))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            RightsSettings::Table.into_iden(),
            RightsFeedHeads::Table.into_iden(),
            RightsEventAcks::Table.into_iden(),
            RightsEvents::Table.into_iden(),
            RightsReports::Table.into_iden(),
            RightsRequests::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Adds `rights_requests.personal_erased_at`: when the request's personal content was
/// destroyed with its subject (Art. 17).
struct M0002PersonalErasedAt;

impl MigrationName for M0002PersonalErasedAt {
    fn name(&self) -> &str {
        "m0002_rights_personal_erased_at"
    }
}

#[derive(DeriveIden)]
enum ErasedAt {
    PersonalErasedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for M0002PersonalErasedAt {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.has_column("rights_requests", "personal_erased_at")
            .await?
        {
            return Ok(());
        }
        m.alter_table(
            Table::alter()
                .table(RightsRequests::Table)
                .add_column(opt_time(ErasedAt::PersonalErasedAt))
                .to_owned(),
        )
        .await
    }
}

/// Adds `rights_events.external_refs_ct`: the event's external references sealed with
/// its request's data key. Rows written before are sealed by a pass at start
/// (`Rights::seal_legacy_feed`): migrations have no keys.
struct M0003SealedFeedRefs;

impl MigrationName for M0003SealedFeedRefs {
    fn name(&self) -> &str {
        "m0003_rights_sealed_feed_refs"
    }
}

#[derive(DeriveIden)]
enum SealedFeedRefs {
    ExternalRefsCt,
}

#[async_trait::async_trait]
impl MigrationTrait for M0003SealedFeedRefs {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.has_column("rights_events", "external_refs_ct").await? {
            return Ok(());
        }
        m.alter_table(
            Table::alter()
                .table(RightsEvents::Table)
                .add_column(ColumnDef::new(SealedFeedRefs::ExternalRefsCt).blob().null())
                .to_owned(),
        )
        .await
    }
}

/// Adds `rights_requests.language` (the report's language, Art. 12(1)) and
/// `rights_settings.default_language`; both nullable (NULL: from before languages
/// existed; a NULL default is "nb").
struct M0004Languages;

impl MigrationName for M0004Languages {
    fn name(&self) -> &str {
        "m0004_rights_languages"
    }
}

#[derive(DeriveIden)]
enum Languages {
    Language,
    DefaultLanguage,
}

#[async_trait::async_trait]
impl MigrationTrait for M0004Languages {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per ALTER: SQLite adds one at a time.
        if !m.has_column("rights_requests", "language").await? {
            m.alter_table(
                Table::alter()
                    .table(RightsRequests::Table)
                    .add_column(ColumnDef::new(Languages::Language).string_len(8).null())
                    .to_owned(),
            )
            .await?;
        }
        if !m.has_column("rights_settings", "default_language").await? {
            m.alter_table(
                Table::alter()
                    .table(RightsSettings::Table)
                    .add_column(
                        ColumnDef::new(Languages::DefaultLanguage)
                            .string_len(8)
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}

/// Adds `rights_events.detail`: why an erasure happened and which records went
/// (erasures without a rights request reach the feed too, Art. 17(2), Art. 19).
struct M0005EventDetail;

impl MigrationName for M0005EventDetail {
    fn name(&self) -> &str {
        "m0005_rights_event_detail"
    }
}

#[derive(DeriveIden)]
enum EventDetail {
    Detail,
}

#[async_trait::async_trait]
impl MigrationTrait for M0005EventDetail {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.has_column("rights_events", "detail").await? {
            return Ok(());
        }
        m.alter_table(
            Table::alter()
                .table(RightsEvents::Table)
                .add_column(
                    ColumnDef::new(EventDetail::Detail)
                        .text()
                        .not_null()
                        .default("{}"),
                )
                .to_owned(),
        )
        .await
    }
}

/// Adds `rights_requests_status_idx` on (tenant_id, status, due_at): GetRequestStats
/// counts a department's requests by status, with each status's nearest deadline, from
/// the index alone.
struct M0006StatusIndex;

impl MigrationName for M0006StatusIndex {
    fn name(&self) -> &str {
        "m0006_rights_requests_status_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0006StatusIndex {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("rights_requests_status_idx")
                .table(RightsRequests::Table)
                .col(RightsRequests::TenantId)
                .col(RightsRequests::Status)
                .col(RightsRequests::DueAt)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }
}
