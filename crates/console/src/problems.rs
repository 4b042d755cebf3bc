//! The API's refusals of a form, in the person's language, next to the field they
//! name. The services answer bad input with INVALID_ARGUMENT and a google.rpc
//! BadRequest whose field violations name the request's fields; a page that sends a
//! form turns those into one message per form field with [`field_problems`].
//!
//! A field the console knows has its own message (`api-field-<field>`, dots and
//! underscores as hyphens, in every catalog); any other gets the catalog's general one
//! with the API's description (English; never personal data: the API puts none in
//! its errors). A violation of a field the form does not show is returned under its
//! API name, for the page to show at the top.

use tonic_types::StatusExt as _;

use crate::pages::Texts;

/// One field's problem, in the page's language.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    /// The field as the API names it (e.g. `org_number`, `tenant.dpo_email`).
    pub field: String,
    /// What to show next to it.
    pub message: String,
}

/// The field problems in `status`, if it is an INVALID_ARGUMENT with field
/// violations (empty otherwise: the page shows the status as a whole).
pub fn field_problems(status: &tonic::Status, t: &Texts<'_>) -> Vec<FieldProblem> {
    if status.code() != tonic::Code::InvalidArgument {
        return vec![];
    }
    let Some(bad) = status.get_details_bad_request() else {
        return vec![];
    };
    bad.field_violations
        .iter()
        .map(|v| {
            let id = format!("api-field-{}", v.field.replace(['.', '_'], "-"));
            let message = if t.has(&id) {
                t.get(&id)
            } else {
                t.with(
                    "api-field-invalid",
                    &[("description", v.description.clone())],
                )
            };
            FieldProblem {
                field: v.field.clone(),
                message,
            }
        })
        .collect()
}

/// The message for `field` among `problems`, for the template.
pub fn for_field<'a>(problems: &'a [FieldProblem], field: &str) -> Option<&'a str> {
    problems
        .iter()
        .find(|p| p.field == field)
        .map(|p| p.message.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::Lang;
    use tonic_types::ErrorDetails;

    fn refused() -> tonic::Status {
        let mut d = ErrorDetails::new();
        d.add_bad_request_violation(
            "org_number",
            "must be 9 digits with a valid MOD11 check digit",
        );
        d.add_bad_request_violation("purpose_id", "unknown purpose");
        tonic::Status::with_error_details(tonic::Code::InvalidArgument, "invalid request", d)
    }

    #[test]
    fn each_violation_lands_on_its_field_in_the_persons_language() {
        let console = crate::Console::new(crate::Settings::default()).expect("console");
        let nb = Texts::new(&console, Lang::Nb);
        let found = field_problems(&refused(), &nb);
        assert_eq!(found.len(), 2);
        assert_eq!(
            for_field(&found, "org_number"),
            Some("Skriv organisasjonsnummeret: ni sifre med gyldig kontrollsiffer.")
        );
        // A field without a message of its own: the general one, with the API's words.
        assert_eq!(
            for_field(&found, "purpose_id"),
            Some("Ikke godtatt: unknown purpose")
        );
        let en = Texts::new(&console, Lang::En);
        assert_eq!(
            for_field(&field_problems(&refused(), &en), "org_number"),
            Some("Enter the organisation number: nine digits with a valid check digit.")
        );
        assert_eq!(for_field(&found, "name"), None);
    }

    #[test]
    fn other_refusals_name_no_field() {
        let console = crate::Console::new(crate::Settings::default()).expect("console");
        let t = Texts::new(&console, Lang::Nb);
        assert!(field_problems(&tonic::Status::permission_denied("no"), &t).is_empty());
        assert!(field_problems(&tonic::Status::invalid_argument("no details"), &t).is_empty());
    }
}
