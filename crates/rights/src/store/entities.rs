//! sea-orm entities of the rights service. Personal data lives only in the sealed
//! columns (`personal`, reports' `sealed`).

/// `rights_requests`: one row per request.
pub mod request {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rights_requests")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub rights_request_id: String,
        pub request_type: String,
        pub status: String,
        pub subject_id: String,
        pub channel: String,
        pub request_id: String,
        /// The request's data key, wrapped by the tenant key.
        pub wrapped_key: Vec<u8>,
        /// Identity, description, corrected values and the case texts (verification
        /// note, extension and rejection reasons), sealed.
        pub personal: Vec<u8>,
        /// JSON array of purpose keys.
        pub purposes: String,
        pub received_at: ChronoDateTimeUtc,
        pub due_at: ChronoDateTimeUtc,
        pub original_due_at: ChronoDateTimeUtc,
        pub extended: bool,
        pub extension_months: i32,
        /// Empty: the reason is sealed in `personal`. Older versions stored it here in
        /// plaintext, until `Rights::seal_legacy_case_texts` moved it at start.
        pub extension_reason: String,
        pub subject_informed_at: Option<ChronoDateTimeUtc>,
        pub verify_time: Option<ChronoDateTimeUtc>,
        pub verified_by: String,
        pub verification_method: String,
        /// Empty: sealed in `personal` (as `extension_reason`).
        pub verification_note: String,
        pub rejection_ground: String,
        /// Empty: sealed in `personal` (as `extension_reason`).
        pub rejection_reason: String,
        pub reject_time: Option<ChronoDateTimeUtc>,
        pub complete_time: Option<ChronoDateTimeUtc>,
        /// True once FulfilRequest carried the request out.
        pub fulfilled: bool,
        /// JSON of the outcome (no personal data), once fulfilled.
        pub outcome: Option<String>,
        /// JSON array of required systems (copied from the settings at submission).
        pub required_systems: String,
        pub version: i64,
        pub create_time: ChronoDateTimeUtc,
        pub update_time: ChronoDateTimeUtc,
        /// When the personal content (identity, description, corrections, report) was
        /// destroyed because the subject was erased; `personal` is then empty.
        pub personal_erased_at: Option<ChronoDateTimeUtc>,
        /// Language of the report ("nb", "nn", "en"); NULL for requests from before
        /// languages existed.
        pub language: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `rights_reports`: the sealed report of a fulfilled request.
pub mod report {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rights_reports")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub rights_request_id: String,
        pub sealed: Vec<u8>,
        pub generate_time: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `rights_events`: the per-tenant feed, gap-free by `seq`. Ids, and the external
/// references sealed with the request's data key.
pub mod event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rights_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub event_id: String,
        pub event_type: String,
        pub subject_id: String,
        /// `[]`; rows of versions before m0003 held the JSON array of {system, id} in
        /// plaintext here until the pass at start sealed them.
        pub external_refs: String,
        pub rights_request_id: String,
        /// JSON array of purpose keys.
        pub purposes: String,
        /// JSON array of field names.
        pub fields: String,
        pub retain_until_time: Option<ChronoDateTimeUtc>,
        pub occur_time: ChronoDateTimeUtc,
        /// The JSON array of {system, id}, sealed with the request's data key; `None`
        /// when there are none, or once that key is destroyed.
        pub external_refs_ct: Option<Vec<u8>>,
        /// JSON of `model::ErasureDetail` (`{}` when there is none); no personal data.
        pub detail: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `rights_event_acks`: which system confirmed which event.
pub mod ack {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rights_event_acks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub system: String,
        pub acked_by: String,
        pub ack_time: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `rights_feed_heads`: the last seq of each tenant's feed, bumped in the transaction
/// that appends events so seqs are gap-free.
pub mod head {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rights_feed_heads")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        pub last_seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `rights_settings`: one row per tenant that changed its settings.
pub mod settings {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rights_settings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// JSON array of system names.
        pub required_systems: String,
        pub automated_decision_making: String,
        pub update_time: ChronoDateTimeUtc,
        /// Language of reports for requests without one; NULL means "nb".
        pub default_language: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
