//! Conversions between a domain enum and its protobuf enum by explicit `match` arms.
//!
//! Converting through names (`as_str_name`, `from_str_name`) ties stored values, report
//! texts and metric labels to the protobuf value names, which change when the API's
//! values take their enum's prefix. prost names the Rust variants without that prefix,
//! so a domain variant and its protobuf variant share a name, and [`crate::proto_enum`]
//! generates the arms from one list of variants: a domain variant missing from the list
//! does not compile.

/// `proto_enum!(pub(crate) to_pb, from_pb: Domain => pb::Proto { A, B, C });` defines
/// `fn to_pb(Domain) -> pb::Proto` and `fn from_pb(pb::Proto) -> Option<Domain>` (the
/// `UNSPECIFIED` value and values the domain does not know are `None`).
#[macro_export]
macro_rules! proto_enum {
    ($vis:vis $to:ident, $from:ident: $domain:ident => $pb:ty { $($v:ident),+ $(,)? }) => {
        #[allow(dead_code)]
        $vis fn $to(d: $domain) -> $pb {
            type P = $pb;
            match d {
                $($domain::$v => P::$v),+
            }
        }
        #[allow(dead_code)]
        $vis fn $from(p: $pb) -> Option<$domain> {
            type P = $pb;
            #[allow(unreachable_patterns)]
            match p {
                $(P::$v => Some($domain::$v),)+
                _ => None,
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Basis {
        Consent,
        Contract,
    }

    mod pb {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum LegalBasis {
            Unspecified,
            Consent,
            Contract,
            VitalInterests,
        }
    }

    proto_enum!(basis_pb, basis_of: Basis => pb::LegalBasis { Consent, Contract });

    #[test]
    fn arms_map_each_variant_and_nothing_else() {
        assert_eq!(basis_pb(Basis::Consent), pb::LegalBasis::Consent);
        assert_eq!(basis_pb(Basis::Contract), pb::LegalBasis::Contract);
        assert_eq!(basis_of(pb::LegalBasis::Contract), Some(Basis::Contract));
        assert_eq!(basis_of(pb::LegalBasis::Unspecified), None);
        assert_eq!(basis_of(pb::LegalBasis::VitalInterests), None);
    }
}
