//! Schemas of the subjects service: the main store ([`Migrator`]) and the separate key
//! store ([`KeyMigrator`]).

use sea_orm_migration::prelude::*;

/// Runs the main store's migrations: idempotency keys, outbox, then the subjects'
/// tables.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(vern_kit::idempotency::Migration),
            Box::new(vern_kit::outbox::Migration),
            Box::new(M0001Subjects),
            Box::new(vern_kit::outbox::ParkingMigration),
            Box::new(M0002SealedRefs),
            Box::new(vern_kit::outbox::LeaseMigration),
            Box::new(vern_kit::outbox::TopicIndexMigration),
            Box::new(M0003RestrictedPurposes),
            Box::new(M0004IndexVersions),
            Box::new(vern_kit::keycheck::Migration),
            Box::new(M0005SealedRestrictionReasons),
            Box::new(M0006StateIndex),
        ]
    }
}

/// Runs the key store's migrations.
pub struct KeyMigrator;

#[async_trait::async_trait]
impl MigratorTrait for KeyMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001SubjectKeys)]
    }
}

struct M0001Subjects;

impl MigrationName for M0001Subjects {
    fn name(&self) -> &str {
        "m0001_subjects"
    }
}

#[derive(DeriveIden)]
enum Subjects {
    Table,
    TenantId,
    SubjectId,
    State,
    NationalIdKind,
    EmailCt,
    PhoneCt,
    NationalIdCt,
    RestrictionReason,
    RestrictTime,
    EraseRequestTime,
    RelationshipEndTime,
    EraseTime,
    Version,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum SubjectLookups {
    Table,
    TenantId,
    Kind,
    Digest,
    SubjectId,
}

#[derive(DeriveIden)]
enum ExternalRefs {
    Table,
    TenantId,
    System,
    RefId,
    SubjectId,
}

#[derive(DeriveIden)]
enum Records {
    Table,
    TenantId,
    RecordId,
    SubjectId,
    Category,
    Field,
    ValueCt,
    Source,
    Purposes,
    CollectedAt,
    ProvidedBySubject,
    Restricted,
    RetainUntilTime,
    LegalReference,
    CreateTime,
    UpdateTime,
}

fn tenant(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c).string_len(63).not_null().to_owned()
}

fn uuid_text(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c).string_len(36).not_null().to_owned()
}

fn time(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn optional_time(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Subjects {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Subjects::Table)
                .if_not_exists()
                .col(tenant(Subjects::TenantId))
                .col(uuid_text(Subjects::SubjectId))
                .col(ColumnDef::new(Subjects::State).string_len(16).not_null())
                .col(
                    ColumnDef::new(Subjects::NationalIdKind)
                        .string_len(16)
                        .null(),
                )
                .col(ColumnDef::new(Subjects::EmailCt).blob().null())
                .col(ColumnDef::new(Subjects::PhoneCt).blob().null())
                .col(ColumnDef::new(Subjects::NationalIdCt).blob().null())
                .col(
                    ColumnDef::new(Subjects::RestrictionReason)
                        .text()
                        .not_null(),
                )
                .col(optional_time(Subjects::RestrictTime))
                .col(optional_time(Subjects::EraseRequestTime))
                .col(optional_time(Subjects::RelationshipEndTime))
                .col(optional_time(Subjects::EraseTime))
                .col(ColumnDef::new(Subjects::Version).big_integer().not_null())
                .col(time(Subjects::CreateTime))
                .col(time(Subjects::UpdateTime))
                .primary_key(
                    Index::create()
                        .col(Subjects::TenantId)
                        .col(Subjects::SubjectId),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("subjects_list_idx")
                .table(Subjects::Table)
                .col(Subjects::TenantId)
                .col(Subjects::CreateTime)
                .col(Subjects::SubjectId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(SubjectLookups::Table)
                .if_not_exists()
                .col(tenant(SubjectLookups::TenantId))
                .col(
                    ColumnDef::new(SubjectLookups::Kind)
                        .string_len(16)
                        .not_null(),
                )
                .col(ColumnDef::new(SubjectLookups::Digest).blob().not_null())
                .col(uuid_text(SubjectLookups::SubjectId))
                // UNIQUE(tenant_id, kind, digest): one subject per identifier and tenant.
                .primary_key(
                    Index::create()
                        .col(SubjectLookups::TenantId)
                        .col(SubjectLookups::Kind)
                        .col(SubjectLookups::Digest),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("subject_lookups_subject_idx")
                .table(SubjectLookups::Table)
                .col(SubjectLookups::TenantId)
                .col(SubjectLookups::SubjectId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ExternalRefs::Table)
                .if_not_exists()
                .col(tenant(ExternalRefs::TenantId))
                .col(
                    ColumnDef::new(ExternalRefs::System)
                        .string_len(63)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ExternalRefs::RefId)
                        .string_len(255)
                        .not_null(),
                )
                .col(uuid_text(ExternalRefs::SubjectId))
                // UNIQUE(tenant_id, system, ref_id).
                .primary_key(
                    Index::create()
                        .col(ExternalRefs::TenantId)
                        .col(ExternalRefs::System)
                        .col(ExternalRefs::RefId),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("external_refs_subject_idx")
                .table(ExternalRefs::Table)
                .col(ExternalRefs::TenantId)
                .col(ExternalRefs::SubjectId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Records::Table)
                .if_not_exists()
                .col(tenant(Records::TenantId))
                .col(uuid_text(Records::RecordId))
                .col(ColumnDef::new(Records::SubjectId).string_len(36).null())
                .col(ColumnDef::new(Records::Category).string_len(32).not_null())
                .col(ColumnDef::new(Records::Field).string_len(100).not_null())
                .col(ColumnDef::new(Records::ValueCt).blob().null())
                .col(ColumnDef::new(Records::Source).string_len(100).not_null())
                .col(ColumnDef::new(Records::Purposes).text().not_null())
                .col(time(Records::CollectedAt))
                .col(
                    ColumnDef::new(Records::ProvidedBySubject)
                        .boolean()
                        .not_null(),
                )
                .col(ColumnDef::new(Records::Restricted).boolean().not_null())
                .col(optional_time(Records::RetainUntilTime))
                .col(ColumnDef::new(Records::LegalReference).text().not_null())
                .col(time(Records::CreateTime))
                .col(time(Records::UpdateTime))
                .primary_key(
                    Index::create()
                        .col(Records::TenantId)
                        .col(Records::RecordId),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("records_subject_idx")
                .table(Records::Table)
                .col(Records::TenantId)
                .col(Records::SubjectId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("records_collected_idx")
                .table(Records::Table)
                .col(Records::TenantId)
                .col(Records::CollectedAt)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            Records::Table.into_iden(),
            ExternalRefs::Table.into_iden(),
            SubjectLookups::Table.into_iden(),
            Subjects::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}

struct M0001SubjectKeys;

impl MigrationName for M0001SubjectKeys {
    fn name(&self) -> &str {
        "m0001_subject_keys"
    }
}

#[derive(DeriveIden)]
enum SubjectKeys {
    Table,
    TenantId,
    SubjectId,
    WrappedKey,
    CreateTime,
}

#[async_trait::async_trait]
impl MigrationTrait for M0001SubjectKeys {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(SubjectKeys::Table)
                .if_not_exists()
                .col(tenant(SubjectKeys::TenantId))
                .col(uuid_text(SubjectKeys::SubjectId))
                .col(ColumnDef::new(SubjectKeys::WrappedKey).blob().not_null())
                .col(time(SubjectKeys::CreateTime))
                .primary_key(
                    Index::create()
                        .col(SubjectKeys::TenantId)
                        .col(SubjectKeys::SubjectId),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(SubjectKeys::Table).to_owned())
            .await
    }
}

/// Adds `external_refs.ref_ct`: the reference id sealed with the subject's data key;
/// `ref_id` then holds its blind index. Rows written before are sealed by a pass at
/// start (`Subjects::seal_legacy_refs`): migrations have no keys.
struct M0002SealedRefs;

impl MigrationName for M0002SealedRefs {
    fn name(&self) -> &str {
        "m0002_sealed_external_refs"
    }
}

#[derive(DeriveIden)]
enum SealedRefs {
    RefCt,
}

#[async_trait::async_trait]
impl MigrationTrait for M0002SealedRefs {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.has_column("external_refs", "ref_ct").await? {
            return Ok(());
        }
        m.alter_table(
            Table::alter()
                .table(ExternalRefs::Table)
                .add_column(ColumnDef::new(SealedRefs::RefCt).blob().null())
                .to_owned(),
        )
        .await
    }
}

/// Adds `subjects.restricted_purposes`: the purpose keys restricted (Art. 18) while the
/// subject is ACTIVE, JSON text; `[]` for every existing row.
struct M0003RestrictedPurposes;

impl MigrationName for M0003RestrictedPurposes {
    fn name(&self) -> &str {
        "m0003_restricted_purposes"
    }
}

#[derive(DeriveIden)]
enum RestrictedPurposes {
    RestrictedPurposes,
}

#[async_trait::async_trait]
impl MigrationTrait for M0003RestrictedPurposes {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.has_column("subjects", "restricted_purposes").await? {
            return Ok(());
        }
        m.alter_table(
            Table::alter()
                .table(Subjects::Table)
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

/// Adds `index_version` to `subject_lookups` and `external_refs`: the master key version
/// each digest's index key is derived from, so a re-index knows which entries it has
/// rewritten. Every existing entry was written under version 1 (the only index
/// version before this migration).
struct M0004IndexVersions;

impl MigrationName for M0004IndexVersions {
    fn name(&self) -> &str {
        "m0004_index_versions"
    }
}

#[derive(DeriveIden)]
enum IndexVersion {
    IndexVersion,
}

#[async_trait::async_trait]
impl MigrationTrait for M0004IndexVersions {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in ["subject_lookups", "external_refs"] {
            if m.has_column(table, "index_version").await? {
                continue;
            }
            m.alter_table(
                Table::alter()
                    .table(Alias::new(table))
                    .add_column(
                        ColumnDef::new(IndexVersion::IndexVersion)
                            .integer()
                            .not_null()
                            .default(1),
                    )
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}

/// Adds `subjects.restriction_reason_ct`: the caller's restriction reason sealed with
/// the subject's data key. Reasons written before are sealed by a pass at start
/// (`Subjects::seal_legacy_restriction_reasons`): migrations have no keys.
struct M0005SealedRestrictionReasons;

impl MigrationName for M0005SealedRestrictionReasons {
    fn name(&self) -> &str {
        "m0005_sealed_restriction_reasons"
    }
}

#[derive(DeriveIden)]
enum SealedRestrictionReasons {
    RestrictionReasonCt,
}

#[async_trait::async_trait]
impl MigrationTrait for M0005SealedRestrictionReasons {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.has_column("subjects", "restriction_reason_ct").await? {
            return Ok(());
        }
        m.alter_table(
            Table::alter()
                .table(Subjects::Table)
                .add_column(
                    ColumnDef::new(SealedRestrictionReasons::RestrictionReasonCt)
                        .blob()
                        .null(),
                )
                .to_owned(),
        )
        .await
    }
}

/// Adds `subjects_state_idx` on (tenant_id, state): GetSubjectStats counts a department's
/// subjects by state from the index alone (100,000 subjects: a scan of small index
/// entries, not of rows holding ciphertexts).
struct M0006StateIndex;

impl MigrationName for M0006StateIndex {
    fn name(&self) -> &str {
        "m0006_subjects_state_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0006StateIndex {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("subjects_state_idx")
                .table(Subjects::Table)
                .col(Subjects::TenantId)
                .col(Subjects::State)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }
}
