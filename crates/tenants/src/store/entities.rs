//! sea-orm entities of the tenants service. List-valued columns hold JSON text so the
//! same schema works on SQLite and PostgreSQL.

/// `tenants`: one row per controller.
pub mod tenant {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        pub name: String,
        pub org_number: String,
        pub dpo_email: String,
        pub dpo_name: String,
        pub supervisory_authority: String,
        pub group_id: String,
        pub status: String,
        pub security_measures: String,
        pub suspension_reason: String,
        pub create_time: ChronoDateTimeUtc,
        pub update_time: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `purposes`: keyed by (tenant_id, key).
pub mod purpose {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "purposes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub description: String,
        pub legal_basis: String,
        pub data_categories: String,
        pub direct_marketing: bool,
        pub subject_categories: String,
        pub legitimate_interest: String,
        pub special_category_condition: Option<String>,
        pub retention_summary: String,
        pub create_time: ChronoDateTimeUtc,
        pub update_time: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `recipients`: recipients and processors, ids are time-ordered UUIDs.
pub mod recipient {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "recipients")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub recipient_id: String,
        pub tenant_id: String,
        pub name: String,
        pub role: String,
        pub purposes: String,
        pub country: String,
        pub transfer_safeguard: Option<String>,
        pub description: String,
        pub create_time: ChronoDateTimeUtc,
        /// Data processing agreement (Art. 28(3)).
        pub dpa_reference: String,
        pub dpa_signed_date: Option<ChronoDateTimeUtc>,
        pub dpa_expiry_date: Option<ChronoDateTimeUtc>,
        /// When the recipient was ended; NULL while current.
        pub end_time: Option<ChronoDateTimeUtc>,
        pub end_reason: String,
        /// NULL for rows from before recipients could change: `create_time` then.
        pub update_time: Option<ChronoDateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
