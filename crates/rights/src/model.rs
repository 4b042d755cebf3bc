//! The rights service's values as the use cases see them (no tonic, no sea-orm types).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    Channel, ErasureCause, EventType, Language, RejectionGround, RequestStatus, RequestType,
    VerificationMethod,
};

/// A reference to the subject in another system.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExternalRef {
    /// The system, e.g. "crm".
    pub system: String,
    /// The id there.
    pub id: String,
}

/// The identity a requester claims. Personal data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Identity {
    /// E-mail.
    pub email: String,
    /// Phone.
    pub phone: String,
    /// National id.
    pub national_id: String,
    /// Full name.
    pub name: String,
    /// Reference in another system.
    pub external_ref: Option<ExternalRef>,
}

/// One correction of a RECTIFICATION request; `value` is personal data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rectification {
    /// "email", "phone", "national_id" or a record's field name.
    pub field: String,
    /// The record, when correcting a record.
    pub record_id: String,
    /// The corrected value.
    pub value: String,
}

/// The personal data of a request, sealed at rest.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Personal {
    /// Claimed identity, if no subject id was given.
    pub identity: Option<Identity>,
    /// The request in the subject's words.
    pub description: String,
    /// Corrections asked for.
    pub rectifications: Vec<Rectification>,
    /// VerifyIdentity's note on how the identity was checked (free text about the
    /// case; not part of the API's answer).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verification_note: String,
    /// Why the deadline was extended (Art. 12(3)).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub extension_reason: String,
    /// Why the request was rejected.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rejection_reason: String,
}

/// A record kept, restricted, instead of erased.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RetainedItem {
    /// The record.
    pub record_id: String,
    /// Its category (enum name, e.g. "FINANCIAL").
    pub category: String,
    /// Its field name.
    pub field: String,
    /// Until when it is kept; `None` for an open-ended legal hold.
    pub retain_until_time: Option<DateTime<Utc>>,
    /// Why it is kept.
    pub legal_reference: String,
}

/// What fulfilling a request did. No personal data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Human-readable summary.
    pub summary: String,
    /// ERASURE: records erased.
    pub erased_record_count: i32,
    /// ERASURE: records kept.
    pub retained: Vec<RetainedItem>,
    /// Feed events published.
    pub event_ids: Vec<String>,
}

/// A downstream system's confirmation of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The system.
    pub system: String,
    /// The event.
    pub event_id: String,
    /// Token subject of the caller.
    pub acked_by: String,
    /// When.
    pub ack_time: DateTime<Utc>,
}

/// A rights request with its personal data opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RightsRequest {
    /// Tenant.
    pub tenant_id: String,
    /// Id.
    pub rights_request_id: String,
    /// The right.
    pub request_type: RequestType,
    /// Lifecycle status.
    pub status: RequestStatus,
    /// The subject; empty when unknown or none.
    pub subject_id: String,
    /// Identity, description, rectifications and the case texts (verification note,
    /// extension and rejection reasons); empty once destroyed with the erased subject.
    pub personal: Personal,
    /// How it arrived.
    pub channel: Channel,
    /// Idempotency key of the submission.
    pub request_id: String,
    /// Purposes concerned.
    pub purposes: Vec<String>,
    /// Receipt.
    pub received_at: DateTime<Utc>,
    /// Deadline.
    pub due_at: DateTime<Utc>,
    /// Deadline before extension.
    pub original_due_at: DateTime<Utc>,
    /// Extended?
    pub extended: bool,
    /// Extension months.
    pub extension_months: i32,
    /// When the subject was told of the extension.
    pub subject_informed_at: Option<DateTime<Utc>>,
    /// Verification time.
    pub verify_time: Option<DateTime<Utc>>,
    /// Who verified.
    pub verified_by: String,
    /// How.
    pub verification_method: Option<VerificationMethod>,
    /// Rejection ground.
    pub rejection_ground: Option<RejectionGround>,
    /// Rejection time.
    pub reject_time: Option<DateTime<Utc>>,
    /// Completion time.
    pub complete_time: Option<DateTime<Utc>>,
    /// Whether fulfilment was carried out.
    pub fulfilled: bool,
    /// What fulfilment did.
    pub outcome: Option<Outcome>,
    /// Systems that must confirm.
    pub required_systems: Vec<String>,
    /// Confirmations received.
    pub confirmations: Vec<Confirmation>,
    /// Required systems not yet confirmed.
    pub pending_systems: Vec<String>,
    /// Last change.
    pub update_time: DateTime<Utc>,
    /// Language of the report; `None` for requests from before languages existed.
    pub language: Option<Language>,
}

impl RightsRequest {
    /// Deadline passed and not closed.
    pub fn overdue(&self, now: DateTime<Utc>) -> bool {
        !self.status.is_final() && self.due_at < now
    }
}

/// A feed event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Tenant.
    pub tenant_id: String,
    /// Id.
    pub event_id: String,
    /// Gap-free position.
    pub seq: i64,
    /// What happened.
    pub event_type: EventType,
    /// The subject.
    pub subject_id: String,
    /// The subject's references.
    pub external_refs: Vec<ExternalRef>,
    /// The causing request.
    pub rights_request_id: String,
    /// Purposes concerned.
    pub purposes: Vec<String>,
    /// Changed field names.
    pub fields: Vec<String>,
    /// ERASED: until when kept records stay.
    pub retain_until_time: Option<DateTime<Utc>>,
    /// When.
    pub occur_time: DateTime<Utc>,
    /// Confirmations.
    pub confirmations: Vec<Confirmation>,
    /// ERASED, RECORDS_ERASED: why, and which records.
    pub erasure: ErasureDetail,
}

/// What an erasure event says beyond its type (stored as JSON in `rights_events.detail`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErasureDetail {
    /// Why; `None` for events before causes were recorded and for other types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<ErasureCause>,
    /// RETENTION: the policy whose period ended.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy_id: String,
    /// RECORDS_ERASED: the records (ids, categories, field names; never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<ErasedRecord>,
}

/// A record erased while its subject remains.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErasedRecord {
    /// The record's id.
    pub record_id: String,
    /// Its category (the protobuf `DataCategory` value name).
    pub category: String,
    /// Its field name.
    pub field: String,
}

/// The tenant's rights settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Tenant.
    pub tenant_id: String,
    /// Systems that must confirm.
    pub required_systems: Vec<String>,
    /// Art. 15(1)(h) statement.
    pub automated_decision_making: String,
    /// Last change; `None` for defaults never saved.
    pub update_time: Option<DateTime<Utc>>,
    /// Language of reports for requests submitted without one (Art. 12(1)).
    pub default_language: Language,
}

/// Default statement on automated decision-making.
pub const NO_AUTOMATED_DECISIONS: &str = "none";

impl Settings {
    /// The defaults of `tenant`.
    pub fn defaults(tenant: &str) -> Self {
        Self {
            tenant_id: tenant.to_owned(),
            required_systems: vec![],
            automated_decision_making: NO_AUTOMATED_DECISIONS.to_owned(),
            update_time: None,
            default_language: crate::domain::DEFAULT_LANGUAGE,
        }
    }
}
