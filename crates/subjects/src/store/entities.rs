//! sea-orm entities of the subjects service. Personal data is held only as
//! ciphertext (`*_ct`, `value_ct`) or as a keyed digest (`subject_lookups.digest`);
//! list-valued columns hold JSON text so the same schema works on SQLite and
//! PostgreSQL. Every table is keyed by tenant first.

/// `subjects`: one row per subject; after erasure the tombstone.
pub mod subject {
    use sea_orm::entity::prelude::*;

    /// A subject row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subjects")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// UUID v7, text.
        #[sea_orm(primary_key, auto_increment = false)]
        pub subject_id: String,
        /// ACTIVE, RESTRICTED or ERASED.
        pub state: String,
        /// Kind of the national id, if any.
        pub national_id_kind: Option<String>,
        /// E-mail, sealed with the subject's data key.
        pub email_ct: Option<Vec<u8>>,
        /// Phone, sealed.
        pub phone_ct: Option<Vec<u8>>,
        /// National id, sealed.
        pub national_id_ct: Option<Vec<u8>>,
        /// Why restricted, when it is one of vern's own texts (an erasure kept back by a
        /// retention duty) or a row written before m0005; empty otherwise.
        pub restriction_reason: String,
        /// Why restricted, as the caller gave it, sealed with the subject's data key: a
        /// statement about one person's case, shredded with the key.
        pub restriction_reason_ct: Option<Vec<u8>>,
        /// When restricted.
        pub restrict_time: Option<ChronoDateTimeUtc>,
        /// Purpose keys restricted while ACTIVE (Art. 18), JSON array, sorted.
        pub restricted_purposes: String,
        /// When erasure was requested while records had to be kept.
        pub erase_request_time: Option<ChronoDateTimeUtc>,
        /// End of the relationship.
        pub relationship_end_time: Option<ChronoDateTimeUtc>,
        /// Tombstone: when erased.
        pub erase_time: Option<ChronoDateTimeUtc>,
        /// Incremented on every state change.
        pub version: i64,
        /// Created.
        pub create_time: ChronoDateTimeUtc,
        /// Last changed (optimistic concurrency token).
        pub update_time: ChronoDateTimeUtc,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `subject_lookups`: the blind index, one row per identifier.
pub mod lookup {
    use sea_orm::entity::prelude::*;

    /// A blind-index entry.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subject_lookups")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// `email`, `phone` or `national_id`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: String,
        /// HMAC-SHA-256 of the normalised identifier under the tenant's blind-index key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub digest: Vec<u8>,
        /// The subject holding it.
        pub subject_id: String,
        /// The master key version the digest's index key is derived from
        /// (`keys.index_key_version` when written; a re-index moves it).
        pub index_version: i32,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `external_refs`: the subject's ids in the tenant's other systems.
pub mod external_ref {
    use sea_orm::entity::prelude::*;

    /// One reference.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "external_refs")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The other system.
        #[sea_orm(primary_key, auto_increment = false)]
        pub system: String,
        /// The blind index of (system, id): hex of HMAC-SHA-256 under the tenant's
        /// blind-index key. Rows of versions before m0002 hold the id itself until
        /// the pass at start seals them (`ref_ct` is then `None`).
        #[sea_orm(primary_key, auto_increment = false)]
        pub ref_id: String,
        /// The subject.
        pub subject_id: String,
        /// The subject's id there, sealed with the subject's data key.
        pub ref_ct: Option<Vec<u8>>,
        /// The master key version `ref_id`'s index key is derived from.
        pub index_version: i32,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `records`: personal data records; the value sealed with the subject's data key.
pub mod record {
    use sea_orm::entity::prelude::*;

    /// One record.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "records")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// UUID v7, text.
        #[sea_orm(primary_key, auto_increment = false)]
        pub record_id: String,
        /// The subject; `None` once anonymised (detached).
        pub subject_id: Option<String>,
        /// Data category.
        pub category: String,
        /// Name of the data item.
        pub field: String,
        /// The value, sealed; `None` once anonymised.
        pub value_ct: Option<Vec<u8>>,
        /// Where it came from.
        pub source: String,
        /// Purpose keys, JSON array.
        pub purposes: String,
        /// When collected.
        pub collected_at: ChronoDateTimeUtc,
        /// Provided by the subject.
        pub provided_by_subject: bool,
        /// Kept only under a retention duty after an erasure.
        pub restricted: bool,
        /// When that duty ends.
        pub retain_until_time: Option<ChronoDateTimeUtc>,
        /// Why kept.
        pub legal_reference: String,
        /// Stored.
        pub create_time: ChronoDateTimeUtc,
        /// Last changed (optimistic concurrency token).
        pub update_time: ChronoDateTimeUtc,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `subject_keys` (in the separate key store): each subject's wrapped data key.
pub mod subject_key {
    use sea_orm::entity::prelude::*;

    /// One wrapped key.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subject_keys")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The subject.
        #[sea_orm(primary_key, auto_increment = false)]
        pub subject_id: String,
        /// The data key, wrapped by the tenant key.
        pub wrapped_key: Vec<u8>,
        /// Stored.
        pub create_time: ChronoDateTimeUtc,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
