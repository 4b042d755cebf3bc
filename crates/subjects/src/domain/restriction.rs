//! Restriction of processing (Art. 18), as a whole or per purpose.
//!
//! A subject is restricted as a whole (state RESTRICTED: every purpose is denied) or,
//! while ACTIVE, for a set of its tenant's purposes: a subject who contests the
//! accuracy of the data used for marketing (Art. 18(1)(a)) or objects to one purpose
//! pending the verification of compelling grounds (Art. 18(1)(d)) still has a contract
//! to be served. Restricting the whole subject absorbs the purposes; lifting it lifts
//! everything. Every change is told to the recipients (Art. 19): [`Change::notice`].

use std::collections::BTreeSet;

use super::SubjectState;

/// What a restriction or its lifting does to a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing to do (already so): the call answers the subject as it is.
    Unchanged,
    /// The subject's new restriction.
    To {
        /// Its new state (RESTRICTED: as a whole).
        state: SubjectState,
        /// Its new restricted purposes (always empty when RESTRICTED).
        purposes: Vec<String>,
        /// What the recipients are told: the purposes restricted or lifted by this
        /// change, empty for the whole subject.
        notice: Vec<String>,
    },
}

/// Why a restriction change is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The subject is erased.
    Erased,
    /// Nothing named is restricted.
    NotRestricted,
    /// The subject awaits erasure (its records are kept restricted under a duty).
    ErasurePending,
    /// Purposes named for a subject restricted as a whole.
    WhollyRestricted,
}

/// RestrictSubject: `purposes` empty restricts the whole subject; otherwise they join
/// the restricted ones.
pub fn restrict(
    state: SubjectState,
    current: &[String],
    purposes: &[String],
) -> Result<Change, Refusal> {
    match state {
        SubjectState::Erased => Err(Refusal::Erased),
        SubjectState::Restricted => Ok(Change::Unchanged),
        SubjectState::Active if purposes.is_empty() => Ok(Change::To {
            state: SubjectState::Restricted,
            purposes: vec![],
            notice: vec![],
        }),
        SubjectState::Active => {
            let before: BTreeSet<&String> = current.iter().collect();
            let added: BTreeSet<&String> =
                purposes.iter().filter(|p| !before.contains(p)).collect();
            if added.is_empty() {
                return Ok(Change::Unchanged);
            }
            Ok(Change::To {
                state: SubjectState::Active,
                purposes: before.union(&added).map(|p| (*p).clone()).collect(),
                notice: added.into_iter().cloned().collect(),
            })
        }
    }
}

/// LiftRestriction (Art. 18(3)): `purposes` empty lifts every restriction; otherwise
/// each must be restricted.
pub fn lift(
    state: SubjectState,
    erase_pending: bool,
    current: &[String],
    purposes: &[String],
) -> Result<Change, Refusal> {
    match state {
        SubjectState::Erased => Err(Refusal::Erased),
        SubjectState::Restricted if erase_pending => Err(Refusal::ErasurePending),
        SubjectState::Restricted if !purposes.is_empty() => Err(Refusal::WhollyRestricted),
        SubjectState::Restricted => Ok(Change::To {
            state: SubjectState::Active,
            purposes: vec![],
            notice: vec![],
        }),
        SubjectState::Active if current.is_empty() => Err(Refusal::NotRestricted),
        SubjectState::Active if purposes.is_empty() => Ok(Change::To {
            state: SubjectState::Active,
            purposes: vec![],
            notice: sorted(current),
        }),
        SubjectState::Active => {
            let lifted: BTreeSet<&String> = purposes.iter().collect();
            if lifted.iter().any(|p| !current.contains(p)) {
                return Err(Refusal::NotRestricted);
            }
            Ok(Change::To {
                state: SubjectState::Active,
                purposes: sorted(current)
                    .into_iter()
                    .filter(|p| !lifted.contains(p))
                    .collect(),
                notice: lifted.into_iter().cloned().collect(),
            })
        }
    }
}

fn sorted(purposes: &[String]) -> Vec<String> {
    purposes
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn restricting_purposes_keeps_the_subject_active_and_adds_only_new_ones() {
        let c = restrict(SubjectState::Active, &v(&["crm"]), &v(&["news", "crm"]));
        assert_eq!(
            c,
            Ok(Change::To {
                state: SubjectState::Active,
                purposes: v(&["crm", "news"]),
                notice: v(&["news"]),
            })
        );
        assert_eq!(
            restrict(SubjectState::Active, &v(&["crm"]), &v(&["crm"])),
            Ok(Change::Unchanged)
        );
    }

    #[test]
    fn restricting_the_whole_subject_absorbs_its_purposes() {
        assert_eq!(
            restrict(SubjectState::Active, &v(&["crm"]), &[]),
            Ok(Change::To {
                state: SubjectState::Restricted,
                purposes: vec![],
                notice: vec![],
            })
        );
        assert_eq!(
            restrict(SubjectState::Restricted, &[], &v(&["crm"])),
            Ok(Change::Unchanged),
            "a wholly restricted subject already has every purpose restricted"
        );
        assert_eq!(
            restrict(SubjectState::Erased, &[], &[]),
            Err(Refusal::Erased)
        );
    }

    #[test]
    fn lifting_purposes_needs_each_to_be_restricted() {
        let current = v(&["news", "crm"]);
        assert_eq!(
            lift(SubjectState::Active, false, &current, &v(&["crm"])),
            Ok(Change::To {
                state: SubjectState::Active,
                purposes: v(&["news"]),
                notice: v(&["crm"]),
            })
        );
        assert_eq!(
            lift(SubjectState::Active, false, &current, &v(&["crm", "hr"])),
            Err(Refusal::NotRestricted)
        );
        assert_eq!(
            lift(SubjectState::Active, false, &current, &[]),
            Ok(Change::To {
                state: SubjectState::Active,
                purposes: vec![],
                notice: v(&["crm", "news"]),
            }),
            "lifting everything names what was lifted"
        );
        assert_eq!(
            lift(SubjectState::Active, false, &[], &[]),
            Err(Refusal::NotRestricted)
        );
    }

    #[test]
    fn lifting_a_whole_restriction() {
        assert_eq!(
            lift(SubjectState::Restricted, false, &[], &[]),
            Ok(Change::To {
                state: SubjectState::Active,
                purposes: vec![],
                notice: vec![],
            })
        );
        assert_eq!(
            lift(SubjectState::Restricted, false, &[], &v(&["crm"])),
            Err(Refusal::WhollyRestricted)
        );
        assert_eq!(
            lift(SubjectState::Restricted, true, &[], &[]),
            Err(Refusal::ErasurePending)
        );
        assert_eq!(
            lift(SubjectState::Erased, false, &[], &[]),
            Err(Refusal::Erased)
        );
    }
}
