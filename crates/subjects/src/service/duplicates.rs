//! `vern subjects duplicates`: what a past key misconfiguration (or any other fault)
//! left behind, found from the data itself. It reports and changes nothing.
//!
//! The blind index cannot show a duplicate by itself: its key is the primary key, so
//! two entries never share a digest — a copy made under a wrong index key holds a
//! different digest for the same e-mail. So the scan opens every live subject's
//! identifiers with the configured keys and digests them again under the current
//! index key: subjects of one tenant whose identifiers digest alike hold the same
//! e-mail, phone or national id. A subject whose data key or identifiers do not open
//! (a key wrapped under a wrong key is exactly that) is listed too. Only ids and kinds
//! are reported, never an identifier.

use std::collections::{BTreeMap, HashMap};

use super::{ciphertext, open_text};
use crate::domain::keyring::Keyring;
use crate::domain::{IdentifierKind, identifier_aad, key_aad};
use crate::error::SubjectError;
use crate::store::{KeyStore, SubjectStore};

/// Subjects read per query.
const PAGE: u64 = 1000;

/// Subjects of one tenant holding the same identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedIdentifier {
    /// The tenant.
    pub tenant_id: String,
    /// Which identifier they share (email, phone, national_id).
    pub kind: IdentifierKind,
    /// The subjects, oldest id first.
    pub subject_ids: Vec<String>,
}

/// What [`find_duplicates`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DuplicateReport {
    /// Live (not erased) subjects examined.
    pub examined: u64,
    /// Identifiers held by more than one live subject of a tenant.
    pub shared: Vec<SharedIdentifier>,
    /// Subjects whose data key or sealed identifiers do not open with the configured
    /// keys, as `<tenant>/<subject id>`.
    pub unopenable: Vec<String>,
    /// Subjects of tenants no configured key covers, as `<tenant>/<subject id>`.
    pub no_key: Vec<String>,
}

/// Scans every live subject (see the module). Holds one 32-byte digest per identifier
/// in memory: about 100 MB for a million subjects with three identifiers each.
pub async fn find_duplicates(
    store: &SubjectStore,
    keys: &KeyStore,
    keyring: &Keyring,
) -> Result<DuplicateReport, SubjectError> {
    let mut report = DuplicateReport::default();
    let mut holders: HashMap<(String, IdentifierKind, [u8; 32]), Vec<String>> = HashMap::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let rows = store.live_subjects_after(after.clone(), PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = Some((last.tenant_id.clone(), last.subject_id.clone()));
        let full = rows.len() as u64 == PAGE;
        let mut by_tenant: BTreeMap<String, Vec<crate::store::entities::subject::Model>> =
            BTreeMap::new();
        for row in rows {
            by_tenant
                .entry(row.tenant_id.clone())
                .or_default()
                .push(row);
        }
        for (tenant, rows) in by_tenant {
            report.examined += rows.len() as u64;
            let Some(tenant_keys) = keyring.tenant(&tenant) else {
                report
                    .no_key
                    .extend(rows.iter().map(|r| format!("{tenant}/{}", r.subject_id)));
                continue;
            };
            let ids: Vec<String> = rows.iter().map(|r| r.subject_id.clone()).collect();
            let wrapped = keys.get_many(&tenant, &ids).await?;
            for row in rows {
                let id = &row.subject_id;
                let Some(dek) = wrapped
                    .get(id)
                    .and_then(|w| tenant_keys.kek.unwrap(w, &key_aad(&tenant, id)).ok())
                else {
                    report.unopenable.push(format!("{tenant}/{id}"));
                    continue;
                };
                let mut opened = true;
                for kind in [
                    IdentifierKind::Email,
                    IdentifierKind::Phone,
                    IdentifierKind::NationalId,
                ] {
                    let Some(ct) = ciphertext(&row, kind) else {
                        continue;
                    };
                    match open_text(&dek, ct, &identifier_aad(&tenant, id, kind)) {
                        Ok(value) => {
                            let digest = crate::domain::crypto::blind_index(
                                &tenant_keys.blind,
                                kind.as_str(),
                                &value,
                            );
                            holders
                                .entry((tenant.clone(), kind, digest))
                                .or_default()
                                .push(id.clone());
                        }
                        Err(_) => opened = false,
                    }
                }
                if !opened {
                    report.unopenable.push(format!("{tenant}/{id}"));
                }
            }
        }
        if !full {
            break;
        }
    }
    let mut shared: Vec<SharedIdentifier> = holders
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|((tenant_id, kind, _), mut subject_ids)| {
            subject_ids.sort();
            SharedIdentifier {
                tenant_id,
                kind,
                subject_ids,
            }
        })
        .collect();
    shared.sort_by(|a, b| {
        (&a.tenant_id, a.kind.as_str(), &a.subject_ids).cmp(&(
            &b.tenant_id,
            b.kind.as_str(),
            &b.subject_ids,
        ))
    });
    report.shared = shared;
    Ok(report)
}
