//! sea-orm entities of the consents service.

/// `consent_events`: the append-only proof of consent (Art. 7(1)).
pub mod consent_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "consent_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: String,
        pub tenant_id: String,
        pub subject_id: String,
        pub purpose: String,
        pub action: String,
        pub channel: String,
        pub notice_version: String,
        /// Plaintext evidence of rows written before sealing (m0002); `""` for every row
        /// written since, and blanked by the legacy sealing pass and by erasure.
        pub evidence: String,
        pub actor: String,
        pub recorded_by: String,
        pub request_id: String,
        pub rights_request_id: String,
        pub occur_time: ChronoDateTimeUtc,
        pub expires_at: Option<ChronoDateTimeUtc>,
        pub create_time: ChronoDateTimeUtc,
        /// The evidence sealed under the subject's data key (`consent_keys`); `None` when
        /// there is none, or once the subject is erased.
        pub evidence_ct: Option<Vec<u8>>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `consent_keys`: each subject's data key in this service, wrapped by the tenant key.
/// Deleted when the subject is erased (crypto-shredding).
pub mod consent_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "consent_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub subject_id: String,
        pub wrapped_key: Vec<u8>,
        pub create_time: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `consent_states`: the derived state of each (subject, purpose), kept in the same
/// transaction as its events so Check reads one row.
pub mod consent_state {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "consent_states")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub subject_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub purpose: String,
        pub latest_event_id: String,
        pub latest_action: String,
        pub latest_occur_time: ChronoDateTimeUtc,
        pub latest_expires_at: Option<ChronoDateTimeUtc>,
        pub objection_event_id: Option<String>,
        pub objection_occur_time: Option<ChronoDateTimeUtc>,
        pub last_grant_time: Option<ChronoDateTimeUtc>,
        pub notice_version: String,
        pub grounds_decision_id: Option<String>,
        pub grounds_objection_id: Option<String>,
        pub channel: String,
        pub version: i64,
        pub update_time: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `subject_states`: this service's projection of each subject's state, kept current by
/// the subjects service's outbox (ApplySubjectStates).
pub mod subject_state {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subject_states")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub subject_id: String,
        pub state: String,
        pub version: i64,
        pub change_time: ChronoDateTimeUtc,
        /// Purpose keys restricted while ACTIVE (Art. 18), JSON array.
        pub restricted_purposes: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `purposes`: the purposes of each tenant as Check needs them, as the tenants service
/// last announced them (ApplyPurposes), shared by every replica.
pub mod purpose {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "purposes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub purpose_key: String,
        /// The legal basis; `None` once the purpose is deleted.
        pub legal_basis: Option<String>,
        pub direct_marketing: bool,
        /// The definition's `update_time` in the tenants service (µs): older
        /// announcements are ignored.
        pub version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `objection_decisions`: every compelling-grounds decision (Art. 21(1)), the history
/// behind `consent_states.grounds_*`.
pub mod objection_decision {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "objection_decisions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub decision_id: String,
        pub subject_id: String,
        pub purpose: String,
        pub objection_event_id: String,
        /// Plaintext reason of rows written before sealing (m0006); `""` for every row
        /// written since, and blanked by the legacy sealing pass and by erasure.
        pub reason: String,
        pub decided_by: String,
        pub request_id: String,
        pub decide_time: ChronoDateTimeUtc,
        /// The reason sealed under the subject's data key (`consent_keys`); `None` for
        /// rows not sealed yet, and once the subject is erased.
        pub reason_ct: Option<Vec<u8>>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
