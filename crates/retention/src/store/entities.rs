//! sea-orm entities of the retention service. List-valued columns hold JSON text so
//! the same schema works on SQLite and PostgreSQL.

/// `policies`: retention policies, keyed by a time-ordered UUID (creation order).
pub mod policy {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "policies")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub policy_id: String,
        pub tenant_id: String,
        pub name: String,
        pub category: Option<String>,
        pub purpose: Option<String>,
        pub field: Option<String>,
        pub period: String,
        pub anchor: String,
        pub action: String,
        pub legal_reference: String,
        pub legal_duty: bool,
        pub create_time: ChronoDateTimeUtc,
        pub update_time: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `holds`: legal holds, keyed by a time-ordered UUID.
pub mod hold {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "holds")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub hold_id: String,
        pub tenant_id: String,
        pub scope: String,
        pub subject_id: Option<String>,
        pub reason: String,
        pub end_time: Option<ChronoDateTimeUtc>,
        pub placed_by: String,
        pub create_time: ChronoDateTimeUtc,
        pub release_time: Option<ChronoDateTimeUtc>,
        pub released_by: String,
        pub release_reason: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `sweep_runs`: one row per sweep; at most one RUNNING row per tenant (a partial
/// unique index), which is the tenant's sweep lock across instances.
pub mod sweep_run {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sweep_runs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub sweep_run_id: String,
        pub tenant_id: String,
        pub dry_run: bool,
        pub trigger: String,
        pub status: String,
        pub requested_by: String,
        pub start_time: ChronoDateTimeUtc,
        pub end_time: Option<ChronoDateTimeUtc>,
        /// Last sign of life of the running sweep (stale runs are taken over).
        pub heartbeat_time: ChronoDateTimeUtc,
        pub policy_results: String,
        pub items: String,
        pub items_truncated: bool,
        pub held_subject_count: i64,
        pub error: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `sweep_slots`: per tenant, the start of the latest scheduled interval an instance
/// claimed (with the run it started). A claim is a conditional write, so of several
/// instances exactly one sweeps a tenant per interval.
pub mod sweep_slot {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sweep_slots")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        pub slot_start: ChronoDateTimeUtc,
        pub sweep_run_id: String,
        pub claim_time: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
