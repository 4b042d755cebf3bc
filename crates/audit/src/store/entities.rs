//! sea-orm entities of the audit service. Times are `BIGINT` microseconds since the
//! Unix epoch (UTC), exactly what the canonical encoding hashes; list columns hold JSON
//! text so the same schema works on SQLite and PostgreSQL.

/// `audit_events`: the chains, keyed by (tenant_id, seq).
pub mod audit_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub event_id: String,
        pub occur_time_us: i64,
        pub actor_sub: String,
        pub actor_roles: String,
        pub actor_client: String,
        pub action: String,
        pub service: String,
        pub subject_id: String,
        pub resource_type: String,
        pub resource_id: String,
        pub outcome: String,
        pub status_code: i32,
        pub changed_fields: String,
        pub request_id: String,
        pub trace_id: String,
        pub detail: String,
        pub prev_hash: Vec<u8>,
        pub hash: Vec<u8>,
        pub append_time_us: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `chain_heads`: per tenant the last seq and hash, updated with compare-and-set on
/// `seq` in every append transaction so two replicas cannot fork a chain.
pub mod chain_head {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "chain_heads")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        pub seq: i64,
        pub head_hash: Vec<u8>,
        pub checkpoint_seq: i64,
        pub update_time_us: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `audit_checkpoints`: signed statements of a chain head, keyed by (tenant_id, seq).
pub mod checkpoint {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_checkpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub head_hash: Vec<u8>,
        pub checkpoint_time_us: i64,
        pub key_id: String,
        pub signature: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
