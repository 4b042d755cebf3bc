//! Shared plumbing for every vern service: configuration, the error model and its
//! mapping to gRPC status, authentication and the permission table, the per-call
//! context (effective tenant), database connection and migrations, idempotency by
//! `request_id`, page tokens, telemetry and the server bootstrap.

pub mod audit;
pub mod auth;
pub mod balance;
pub mod changes;
pub mod client;
pub mod config;
pub mod context;
pub mod db;
pub mod enums;
pub mod error;
pub mod idempotency;
pub mod keycheck;
pub mod keys;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod page;
pub mod permissions;
pub mod server;
pub mod shutdown;
pub mod streams;
pub mod telemetry;
pub mod tenancy;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod time;
pub mod tls;
pub mod validate;
pub mod verify;
pub mod wire;

pub use context::CallContext;
pub use error::{ApiError, FieldViolation};
