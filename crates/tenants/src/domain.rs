//! The controller registry's rules: tenants, purposes, recipients and the Art. 30
//! record. Pure: no I/O, no tonic.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vern_kit::error::{FieldViolation, Violations};
use vern_kit::validate;

/// Supervisory authority when none is given.
pub const DEFAULT_SUPERVISORY_AUTHORITY: &str = "Datatilsynet";

/// Checks a Norwegian organisation number: 9 digits, the last a mod-11 check digit
/// over the first eight with weights 3 2 7 6 5 4 3 2 (remainder 0 → 0; a computed
/// check digit of 10 makes the number invalid). Spaces are ignored. Returns the
/// normalised 9 digits.
pub fn org_number(field: &str, value: &str) -> Result<String, FieldViolation> {
    let digits: String = value.chars().filter(|c| *c != ' ').collect();
    if digits.len() != 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldViolation::new(field, "must be 9 digits"));
    }
    const WEIGHTS: [u32; 8] = [3, 2, 7, 6, 5, 4, 3, 2];
    let d: Vec<u32> = digits.bytes().map(|b| u32::from(b - b'0')).collect();
    let sum: u32 = WEIGHTS.iter().zip(&d).map(|(w, x)| w * x).sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => {
            return Err(FieldViolation::new(
                field,
                "is not a valid organisation number (mod-11)",
            ));
        }
        c => c,
    };
    if check != d[8] {
        return Err(FieldViolation::new(
            field,
            "check digit does not match (mod-11)",
        ));
    }
    Ok(digits)
}

/// EEA member states (EU + Iceland, Liechtenstein, Norway): no Chapter V transfer.
const EEA: [&str; 30] = [
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV",
    "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO",
];

/// Whether processing in `country` (ISO 3166-1 alpha-2) is a third-country transfer.
pub fn is_third_country(country: &str) -> bool {
    !EEA.contains(&country)
}

/// An ISO 3166-1 alpha-2 code, upper-cased.
pub fn country(field: &str, value: &str) -> Result<String, FieldViolation> {
    let up = value.trim().to_ascii_uppercase();
    if up.len() != 2 || !up.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(FieldViolation::new(
            field,
            "must be an ISO 3166-1 alpha-2 country code, e.g. NO",
        ));
    }
    Ok(up)
}

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $v),+ }
        impl $name {
            /// The stored name.
            pub fn as_str(self) -> &'static str { match self { $(Self::$v => $s),+ } }
            /// Parses a stored name.
            pub fn parse(s: &str) -> Option<Self> { match s { $($s => Some(Self::$v),)+ _ => None } }
        }
    };
}

text_enum!(
    /// Lifecycle of a tenant.
    TenantStatus { Active = "ACTIVE", Suspended = "SUSPENDED" }
);
text_enum!(
    /// Art. 6(1) legal basis.
    LegalBasis {
        Consent = "CONSENT", Contract = "CONTRACT", LegalObligation = "LEGAL_OBLIGATION",
        VitalInterests = "VITAL_INTERESTS", PublicTask = "PUBLIC_TASK", LegitimateInterests = "LEGITIMATE_INTERESTS",
    }
);
text_enum!(
    /// Category of personal data.
    DataCategory {
        Contact = "CONTACT", Identity = "IDENTITY", Employment = "EMPLOYMENT", Demographic = "DEMOGRAPHIC",
        Behaviour = "BEHAVIOUR", Communications = "COMMUNICATIONS", Preferences = "PREFERENCES",
        Financial = "FINANCIAL", Absence = "ABSENCE", Health = "HEALTH",
    }
);
text_enum!(
    /// Art. 9(2) condition for special categories.
    SpecialCondition {
        ExplicitConsent = "EXPLICIT_CONSENT", EmploymentLaw = "EMPLOYMENT_LAW",
        VitalInterestsIncapable = "VITAL_INTERESTS_INCAPABLE", NotForProfitMembers = "NOT_FOR_PROFIT_MEMBERS",
        ManifestlyPublic = "MANIFESTLY_PUBLIC", LegalClaims = "LEGAL_CLAIMS",
        SubstantialPublicInterest = "SUBSTANTIAL_PUBLIC_INTEREST", HealthCare = "HEALTH_CARE",
        PublicHealth = "PUBLIC_HEALTH", ArchivingResearch = "ARCHIVING_RESEARCH",
    }
);
text_enum!(
    /// Role of a recipient.
    RecipientRole { Processor = "PROCESSOR", Controller = "CONTROLLER", Authority = "AUTHORITY" }
);
text_enum!(
    /// Chapter V transfer safeguard.
    TransferSafeguard {
        AdequacyDecision = "ADEQUACY_DECISION", StandardContractualClauses = "STANDARD_CONTRACTUAL_CLAUSES",
        BindingCorporateRules = "BINDING_CORPORATE_RULES", Derogation = "DEROGATION",
    }
);

impl DataCategory {
    /// Special categories of Art. 9(1).
    pub fn is_special(self) -> bool {
        matches!(self, DataCategory::Health)
    }

    /// A special category, or one that may hold one: ABSENCE, since sick leave is data
    /// concerning health (Art. 4(15), Art. 9(1)); a payroll department's absence
    /// records ("fraværsinformasjon") usually include it. A purpose processing either
    /// needs an Art. 9(2) condition (for payroll: EMPLOYMENT_LAW, Art. 9(2)(b)).
    pub fn may_be_special(self) -> bool {
        self.is_special() || matches!(self, DataCategory::Absence)
    }
}

/// A tenant (controller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Slug id.
    pub tenant_id: String,
    /// Display name.
    pub name: String,
    /// 9-digit organisation number.
    pub org_number: String,
    /// DPO or privacy contact e-mail.
    pub dpo_email: String,
    /// DPO name.
    pub dpo_name: String,
    /// Supervisory authority.
    pub supervisory_authority: String,
    /// Organisation (group).
    pub group_id: String,
    /// Status.
    pub status: TenantStatus,
    /// Security measures (Art. 30(1)(g)).
    pub security_measures: Vec<String>,
    /// Why suspended.
    pub suspension_reason: String,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
}

/// The editable profile of a tenant (create input, update target).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantProfile {
    /// Display name.
    pub name: String,
    /// Organisation number.
    pub org_number: String,
    /// DPO e-mail.
    pub dpo_email: String,
    /// DPO name.
    pub dpo_name: String,
    /// Supervisory authority.
    pub supervisory_authority: String,
    /// Group.
    pub group_id: String,
    /// Security measures.
    pub security_measures: Vec<String>,
}

/// Fields of a tenant an update may change.
pub const TENANT_UPDATABLE: &[&str] = &[
    "name",
    "org_number",
    "dpo_email",
    "dpo_name",
    "supervisory_authority",
    "group_id",
    "security_measures",
];

impl TenantProfile {
    /// Validates and normalises the profile; `prefix` is prepended to field names
    /// (e.g. `tenant.` for UpdateTenant).
    pub fn validate(mut self, prefix: &str, v: &mut Violations) -> Self {
        let f = |name: &str| format!("{prefix}{name}");
        v.check(validate::line(&f("name"), &self.name, 200));
        self.name = self.name.trim().to_owned();
        if let Some(n) = v.check(org_number(&f("org_number"), &self.org_number)) {
            self.org_number = n;
        }
        self.dpo_email = self.dpo_email.trim().to_ascii_lowercase();
        v.check(validate::email(&f("dpo_email"), &self.dpo_email));
        v.check(validate::optional_line(&f("dpo_name"), &self.dpo_name, 200));
        v.check(validate::optional_line(
            &f("supervisory_authority"),
            &self.supervisory_authority,
            200,
        ));
        if self.supervisory_authority.trim().is_empty() {
            self.supervisory_authority = DEFAULT_SUPERVISORY_AUTHORITY.into();
        }
        if !self.group_id.is_empty() {
            v.check(validate::slug(&f("group_id"), &self.group_id, 2, 63));
        }
        if self.security_measures.len() > 100 {
            v.add(f("security_measures"), "at most 100 entries");
        }
        for (i, m) in self.security_measures.iter().enumerate() {
            v.check(validate::line(
                &format!("{}[{i}]", f("security_measures")),
                m,
                500,
            ));
        }
        self
    }
}

/// Validates a tenant id.
pub fn tenant_id(field: &str, id: &str) -> Result<(), FieldViolation> {
    validate::tenant_id(field, id)
}

/// Validates the id of a new tenant: a valid id that is not reserved. The platform's
/// audit chain has a tenant id of its own, which no department may take.
pub fn new_tenant_id(field: &str, id: &str) -> Result<(), FieldViolation> {
    tenant_id(field, id)?;
    if vern_kit::audit::is_platform_chain(id) {
        return Err(FieldViolation::new(
            field,
            "is reserved for the platform's audit chain",
        ));
    }
    Ok(())
}

/// A purpose of processing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purpose {
    /// Owning tenant.
    pub tenant_id: String,
    /// Key.
    pub key: String,
    /// Settings.
    pub spec: PurposeSpec,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
}

/// The editable part of a purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurposeSpec {
    /// What it is for.
    pub description: String,
    /// Legal basis.
    pub legal_basis: LegalBasis,
    /// Categories of data.
    pub data_categories: Vec<DataCategory>,
    /// Direct marketing?
    pub direct_marketing: bool,
    /// Categories of subjects.
    pub subject_categories: Vec<String>,
    /// Legitimate interest pursued.
    pub legitimate_interest: String,
    /// Art. 9(2) condition.
    pub special_condition: Option<SpecialCondition>,
    /// Erasure time limit text.
    pub retention_summary: String,
}

/// Fields of a purpose an update may change.
pub const PURPOSE_UPDATABLE: &[&str] = &[
    "description",
    "legal_basis",
    "data_categories",
    "direct_marketing",
    "subject_categories",
    "legitimate_interest",
    "special_category_condition",
    "retention_summary",
];

/// Validates a purpose key.
pub fn purpose_key(field: &str, key: &str) -> Result<(), FieldViolation> {
    validate::slug(field, key, 2, 63)
}

impl PurposeSpec {
    /// Checks the rules a purpose must satisfy; `prefix` is prepended to field names.
    pub fn validate(mut self, prefix: &str, v: &mut Violations) -> Self {
        let f = |name: &str| format!("{prefix}{name}");
        v.check(validate::text(&f("description"), &self.description, 2000));
        if self.data_categories.is_empty() {
            v.add(
                f("data_categories"),
                "at least one data category is required",
            );
        }
        self.data_categories.sort();
        self.data_categories.dedup();
        if self.legal_basis == LegalBasis::LegitimateInterests
            && self.legitimate_interest.trim().is_empty()
        {
            v.add(
                f("legitimate_interest"),
                "is required when the legal basis is LEGITIMATE_INTERESTS (Art. 13(1)(d))",
            );
        }
        v.check(validate::optional_text(
            &f("legitimate_interest"),
            &self.legitimate_interest,
            2000,
        ));
        if self.data_categories.iter().any(|c| c.may_be_special())
            && self.special_condition.is_none()
        {
            v.add(
                f("special_category_condition"),
                "is required when a special category (Art. 9) is processed, ABSENCE included (sick leave is health data)",
            );
        }
        if self.subject_categories.len() > 50 {
            v.add(f("subject_categories"), "at most 50 entries");
        }
        for (i, s) in self.subject_categories.iter().enumerate() {
            v.check(validate::line(
                &format!("{}[{i}]", f("subject_categories")),
                s,
                200,
            ));
        }
        v.check(validate::optional_text(
            &f("retention_summary"),
            &self.retention_summary,
            1000,
        ));
        self
    }
}

/// A recipient or processor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// Owning tenant.
    pub tenant_id: String,
    /// Id (UUID).
    pub recipient_id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: RecipientRole,
    /// Purpose keys.
    pub purposes: Vec<String>,
    /// ISO country.
    pub country: String,
    /// Transfer safeguard.
    pub transfer_safeguard: Option<TransferSafeguard>,
    /// What it does.
    pub description: String,
    /// Registered.
    pub create_time: DateTime<Utc>,
    /// Reference of the data processing agreement (Art. 28(3)).
    #[serde(default)]
    pub dpa_reference: String,
    /// When the agreement was signed.
    #[serde(default)]
    pub dpa_signed_date: Option<DateTime<Utc>>,
    /// When the agreement expires.
    #[serde(default)]
    pub dpa_expiry_date: Option<DateTime<Utc>>,
    /// When the recipient was ended (data stopped going to it).
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
    /// Why it was ended.
    #[serde(default)]
    pub end_reason: String,
    /// Last changed (the compare-and-set version); the creation time for rows from
    /// before recipients could change.
    #[serde(default = "unix_epoch")]
    pub update_time: DateTime<Utc>,
}

fn unix_epoch() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

impl Recipient {
    /// Whether data still goes to the recipient at `now` (not ended, or ended at a
    /// time still ahead).
    pub fn is_current(&self, now: DateTime<Utc>) -> bool {
        self.end_time.is_none_or(|e| e > now)
    }

    /// The editable part, for an update to merge into.
    pub fn as_new(&self) -> NewRecipient {
        NewRecipient {
            name: self.name.clone(),
            role: Some(self.role),
            purposes: self.purposes.clone(),
            country: self.country.clone(),
            transfer_safeguard: self.transfer_safeguard,
            description: self.description.clone(),
            dpa_reference: self.dpa_reference.clone(),
            dpa_signed_date: self.dpa_signed_date,
            dpa_expiry_date: self.dpa_expiry_date,
        }
    }
}

/// Fields of a recipient an update may change (the role cannot: a processor that
/// becomes a controller is another recipient).
pub const RECIPIENT_UPDATABLE: &[&str] = &[
    "name",
    "purposes",
    "country",
    "transfer_safeguard",
    "description",
    "dpa_reference",
    "dpa_signed_date",
    "dpa_expiry_date",
];

/// Input of CreateRecipient, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecipient {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Option<RecipientRole>,
    /// Purpose keys.
    pub purposes: Vec<String>,
    /// Country.
    pub country: String,
    /// Safeguard.
    pub transfer_safeguard: Option<TransferSafeguard>,
    /// Description.
    pub description: String,
    /// Data processing agreement reference.
    pub dpa_reference: String,
    /// Agreement signed.
    pub dpa_signed_date: Option<DateTime<Utc>>,
    /// Agreement expires.
    pub dpa_expiry_date: Option<DateTime<Utc>>,
}

impl NewRecipient {
    /// Checks the recipient rules (except that purposes exist, which needs the store).
    pub fn validate(self, v: &mut Violations) -> Self {
        self.validate_with("", v)
    }

    /// [`NewRecipient::validate`] with `prefix` before the field names (`recipient.` for
    /// UpdateRecipient).
    pub fn validate_with(mut self, prefix: &str, v: &mut Violations) -> Self {
        let f = |name: &str| format!("{prefix}{name}");
        v.check(validate::line(&f("name"), &self.name, 200));
        self.name = self.name.trim().to_owned();
        if self.role.is_none() {
            v.add(f("role"), "is required");
        }
        if let Some(c) = v.check(country(&f("country"), &self.country)) {
            self.country = c;
            if is_third_country(&self.country) && self.transfer_safeguard.is_none() {
                v.add(
                    f("transfer_safeguard"),
                    "is required for a country outside the EEA (GDPR Chapter V)",
                );
            }
        }
        for (i, p) in self.purposes.iter().enumerate() {
            v.check(purpose_key(&format!("{}[{i}]", f("purposes")), p));
        }
        self.purposes.sort();
        self.purposes.dedup();
        v.check(validate::optional_text(
            &f("description"),
            &self.description,
            2000,
        ));
        v.check(validate::optional_line(
            &f("dpa_reference"),
            &self.dpa_reference,
            200,
        ));
        self.dpa_reference = self.dpa_reference.trim().to_owned();
        if let (Some(signed), Some(expiry)) = (self.dpa_signed_date, self.dpa_expiry_date)
            && expiry < signed
        {
            v.add(f("dpa_expiry_date"), "must not be before dpa_signed_date");
        }
        self
    }
}

/// The reason of EndRecipient: required, one line (no personal data, as told in the
/// API).
pub fn end_reason(field: &str, reason: &str) -> Result<String, FieldViolation> {
    validate::line(field, reason, 1000)?;
    Ok(reason.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_department_takes_the_platform_chain_id() {
        let e = new_tenant_id("tenant_id", vern_kit::audit::PLATFORM_CHAIN).expect_err("reserved");
        assert!(e.description.contains("reserved"), "{}", e.description);
        assert!(new_tenant_id("tenant_id", "kultur").is_ok());
        assert!(new_tenant_id("tenant_id", "X").is_err(), "still validated");
    }

    #[test]
    fn org_numbers() {
        // CPM Analytics AS, from the seeds: 989 990 748.
        assert_eq!(
            org_number("o", "989 990 748").ok().as_deref(),
            Some("989990748")
        );
        assert!(org_number("o", "989990749").is_err(), "wrong check digit");
        assert!(org_number("o", "98999074").is_err(), "8 digits");
        assert!(org_number("o", "98999074a").is_err());
        // Remainder 0 gives check digit 0: 8,0,0,0,0,0,0,1 → 24+2=26... search one.
        let zero = (100_000_000u32..100_100_000)
            .map(|n| n.to_string())
            .find(|s| s.ends_with('0') && org_number("o", s).is_ok())
            .expect("a number with check digit 0 exists");
        let d: Vec<u32> = zero.bytes().map(|b| u32::from(b - b'0')).collect();
        let sum: u32 = [3, 2, 7, 6, 5, 4, 3, 2]
            .iter()
            .zip(&d)
            .map(|(w, x)| w * x)
            .sum();
        assert_eq!(sum % 11, 0);
        // Numbers whose computed check digit would be 10 are invalid whatever the last digit.
        let ten = (100_000_000u32..100_001_000)
            .map(|n| n.to_string())
            .find(|s| {
                let d: Vec<u32> = s.bytes().map(|b| u32::from(b - b'0')).collect();
                let sum: u32 = [3, 2, 7, 6, 5, 4, 3, 2]
                    .iter()
                    .zip(&d)
                    .map(|(w, x)| w * x)
                    .sum();
                sum % 11 == 1
            })
            .expect("exists");
        for last in 0..10 {
            let s = format!("{}{last}", &ten[..8]);
            assert!(org_number("o", &s).is_err(), "{s}");
        }
    }

    #[test]
    fn violation_names_field_not_value() {
        let e = org_number("org_number", "123456789").expect_err("bad");
        assert_eq!(e.field, "org_number");
        assert!(!e.description.contains("123456789"));
    }

    #[test]
    fn countries() {
        assert!(!is_third_country("NO"));
        assert!(!is_third_country("SE"));
        assert!(is_third_country("US"));
        assert_eq!(country("c", "no").ok().as_deref(), Some("NO"));
        assert!(country("c", "NOR").is_err());
    }

    fn spec(basis: LegalBasis, cats: Vec<DataCategory>) -> PurposeSpec {
        PurposeSpec {
            description: "Nyhetsbrevet KLIMA".into(),
            legal_basis: basis,
            data_categories: cats,
            direct_marketing: true,
            subject_categories: vec!["subscribers".into()],
            legitimate_interest: String::new(),
            special_condition: None,
            retention_summary: String::new(),
        }
    }

    #[test]
    fn purpose_rules() {
        let mut v = Violations::new();
        spec(
            LegalBasis::Consent,
            vec![DataCategory::Contact, DataCategory::Contact],
        )
        .validate("", &mut v);
        assert!(v.is_empty());

        let mut v = Violations::new();
        spec(LegalBasis::LegitimateInterests, vec![DataCategory::Contact]).validate("", &mut v);
        assert!(!v.is_empty(), "legitimate interest must be stated");

        let mut v = Violations::new();
        spec(LegalBasis::Consent, vec![DataCategory::Health]).validate("", &mut v);
        assert!(!v.is_empty(), "special category needs a condition");

        // Absence may be sick leave (Art. 9): it needs a condition too.
        let mut v = Violations::new();
        spec(LegalBasis::Contract, vec![DataCategory::Absence]).validate("", &mut v);
        assert!(!v.is_empty(), "absence needs a condition");
        let mut v = Violations::new();
        let mut payroll = spec(LegalBasis::LegalObligation, vec![DataCategory::Absence]);
        payroll.special_condition = Some(SpecialCondition::EmploymentLaw);
        payroll.validate("", &mut v);
        assert!(v.is_empty(), "with an Art. 9(2)(b) condition");

        let mut v = Violations::new();
        spec(LegalBasis::Consent, vec![]).validate("", &mut v);
        assert!(!v.is_empty(), "no categories");
    }

    #[test]
    fn recipient_rules() {
        let base = NewRecipient {
            name: "Mailchimp".into(),
            role: Some(RecipientRole::Processor),
            purposes: vec!["newsletter".into()],
            country: "us".into(),
            transfer_safeguard: None,
            description: String::new(),
            dpa_reference: String::new(),
            dpa_signed_date: None,
            dpa_expiry_date: None,
        };
        let mut v = Violations::new();
        base.clone().validate(&mut v);
        assert!(!v.is_empty(), "US needs a safeguard");
        let mut v = Violations::new();
        let r = NewRecipient {
            transfer_safeguard: Some(TransferSafeguard::StandardContractualClauses),
            ..base
        }
        .validate(&mut v);
        assert!(v.is_empty());
        assert_eq!(r.country, "US");

        // A DPA cannot expire before it was signed; the field named carries the prefix.
        let signed = DateTime::from_timestamp(1_700_000_000, 0).expect("t");
        let mut v = Violations::new();
        NewRecipient {
            dpa_reference: "AVT-2024-17".into(),
            dpa_signed_date: Some(signed),
            dpa_expiry_date: Some(signed - chrono::Duration::days(1)),
            transfer_safeguard: Some(TransferSafeguard::StandardContractualClauses),
            ..r
        }
        .validate_with("recipient.", &mut v);
        match v.finish() {
            Err(vern_kit::ApiError::InvalidArgument(vs)) => {
                let fields: Vec<&str> = vs.iter().map(|x| x.field.as_str()).collect();
                assert_eq!(fields, ["recipient.dpa_expiry_date"]);
            }
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn a_recipient_ended_is_no_longer_current() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("t");
        let mut r = Recipient {
            tenant_id: "t".into(),
            recipient_id: "r".into(),
            name: "Mailchimp".into(),
            role: RecipientRole::Processor,
            purposes: vec![],
            country: "NO".into(),
            transfer_safeguard: None,
            description: String::new(),
            create_time: now,
            dpa_reference: String::new(),
            dpa_signed_date: None,
            dpa_expiry_date: None,
            end_time: None,
            end_reason: String::new(),
            update_time: now,
        };
        assert!(r.is_current(now));
        r.end_time = Some(now);
        assert!(!r.is_current(now));
        r.end_time = Some(now + chrono::Duration::minutes(1));
        assert!(r.is_current(now), "an end still ahead");
        assert!(end_reason("reason", "  ").is_err());
        assert_eq!(
            end_reason("reason", " contract ended ").ok().as_deref(),
            Some("contract ended")
        );
    }
}
