//! Baselines as code: the baseline file (per service, the behaviours it is allowed,
//! by dimension and key, and where each came from), made from a detector snapshot,
//! merged into one, and compared with another.
//!
//! Counts and times are left out of the file so that exporting twice gives the same
//! file and a review in git shows only real changes.

use std::collections::{BTreeMap, BTreeSet};

use ingest::Nanos;
use serde::{Deserialize, Serialize};

use crate::detector::{Origin, Phase};
use crate::error::DetectError;
use crate::observe::Dimension;
use crate::snapshot::{BaselineEntry, DetectorSnapshot, ServiceSnapshot};

pub const BASELINE_FILE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineFile {
    pub version: u32,
    pub services: Vec<ServiceBaseline>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceBaseline {
    pub service: String,
    pub entries: Vec<AllowedBehaviour>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedBehaviour {
    pub dimension: Dimension,
    pub key: String,
    #[serde(default = "imported")]
    pub origin: Origin,
}

fn imported() -> Origin {
    Origin::Imported
}

/// The baselines of a detector snapshot, optionally of one service.
pub fn from_snapshot(snapshot: &DetectorSnapshot, service: Option<&str>) -> BaselineFile {
    from_services(
        snapshot
            .services
            .iter()
            .filter(|s| service.is_none_or(|name| s.service == name)),
    )
}

/// The baseline file of the given services, in the order given.
pub fn from_services<'a>(services: impl IntoIterator<Item = &'a ServiceSnapshot>) -> BaselineFile {
    let services: Vec<ServiceBaseline> = services
        .into_iter()
        .map(|s| ServiceBaseline {
            service: s.service.clone(),
            entries: s
                .baseline
                .iter()
                .map(|e| AllowedBehaviour {
                    dimension: e.dimension,
                    key: e.key.clone(),
                    origin: e.origin,
                })
                .collect(),
        })
        .collect();
    BaselineFile {
        version: BASELINE_FILE_VERSION,
        services,
    }
}

/// A baseline file from its JSON text; refused when it is not one or of another version.
pub fn parse(text: &str) -> Result<BaselineFile, DetectError> {
    let file: BaselineFile =
        serde_json::from_str(text).map_err(|e| DetectError::NotBaselineFile(e.to_string()))?;
    if file.version != BASELINE_FILE_VERSION {
        return Err(DetectError::BaselineVersion {
            found: file.version,
            reads: BASELINE_FILE_VERSION,
        });
    }
    Ok(file)
}

/// Merges a baseline file into a detector snapshot: every entry it lists becomes
/// allowed and is marked `imported`; a service the snapshot does not know starts out
/// monitoring. Returns how many entries were new.
pub fn import_into(snapshot: &mut DetectorSnapshot, file: &BaselineFile, now: Nanos) -> usize {
    let mut added = 0;
    for incoming in &file.services {
        let index = match snapshot
            .services
            .iter()
            .position(|s| s.service == incoming.service)
        {
            Some(i) => i,
            None => {
                snapshot.services.push(ServiceSnapshot {
                    service: incoming.service.clone(),
                    phase: Phase::Monitoring,
                    // Learning "ended" at the epoch: every real event is judged
                    // against the imported entries, none is learned silently.
                    learning_since: Nanos(0),
                    // The retention counts from the import.
                    last_event: None,
                    events: 0,
                    learned_at: Some((Nanos(0), 0)),
                    image_digest: None,
                    seen_digests: Vec::new(),
                    grace_until: None,
                    cap_alerted: false,
                    baseline: Vec::new(),
                    written: Vec::new(),
                    written_hashes: Vec::new(),
                    logs: None,
                    novelty: Vec::new(),
                    growth_until: None,
                    samples: Default::default(),
                });
                snapshot.services.len() - 1
            }
        };
        let service = &mut snapshot.services[index];
        for e in &incoming.entries {
            // Template ids name templates of this service's own miner: an id it never
            // made would allow whatever template gets that number later.
            if e.dimension == Dimension::LogTemplate {
                let known = e
                    .key
                    .strip_prefix('#')
                    .and_then(|id| id.parse::<usize>().ok())
                    .zip(service.logs.as_ref())
                    .is_some_and(|(id, logs)| id < logs.templates.templates.len());
                if !known {
                    continue;
                }
            }
            if service
                .baseline
                .iter()
                .any(|b| b.dimension == e.dimension && b.key == e.key)
            {
                continue;
            }
            service.baseline.push(BaselineEntry {
                dimension: e.dimension,
                key: e.key.clone(),
                origin: Origin::Imported,
                first_seen: now,
                count: 0,
                learned_from: 0,
            });
            added += 1;
        }
        service
            .baseline
            .sort_by(|a, b| (a.dimension, &a.key).cmp(&(b.dimension, &b.key)));
    }
    snapshot.services.sort_by(|a, b| a.service.cmp(&b.service));
    added
}

/// Lines `+ service dimension key` for what `new` allows and `old` does not, `-` for the
/// reverse; sorted, origins ignored.
pub fn diff(old: &BaselineFile, new: &BaselineFile) -> Vec<String> {
    let set = |f: &BaselineFile| -> BTreeSet<(String, Dimension, String)> {
        f.services
            .iter()
            .flat_map(|s| {
                s.entries
                    .iter()
                    .map(move |e| (s.service.clone(), e.dimension, e.key.clone()))
            })
            .collect()
    };
    let (a, b) = (set(old), set(new));
    let mut lines: BTreeMap<(String, Dimension, String), char> = BTreeMap::new();
    for k in a.difference(&b) {
        lines.insert(k.clone(), '-');
    }
    for k in b.difference(&a) {
        lines.insert(k.clone(), '+');
    }
    lines
        .into_iter()
        .map(|((service, dimension, key), sign)| {
            format!(
                "{sign} {service} {} {key}",
                serde_json::to_value(dimension)
                    .expect("dimensions serialize")
                    .as_str()
                    .unwrap_or("?")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &[(&str, Dimension, &str)]) -> BaselineFile {
        let mut services: BTreeMap<&str, Vec<AllowedBehaviour>> = BTreeMap::new();
        for (s, d, k) in entries {
            services.entry(s).or_default().push(AllowedBehaviour {
                dimension: *d,
                key: (*k).into(),
                origin: Origin::Learned,
            });
        }
        BaselineFile {
            version: BASELINE_FILE_VERSION,
            services: services
                .into_iter()
                .map(|(s, entries)| ServiceBaseline {
                    service: s.into(),
                    entries,
                })
                .collect(),
        }
    }

    #[test]
    fn diff_lists_added_and_removed_behaviour() {
        let old = file(&[
            ("shop/api", Dimension::Process, "/a (parent /b)"),
            ("shop/api", Dimension::Network, "connect tcp 10.0.0.1:5432"),
        ]);
        let new = file(&[
            ("shop/api", Dimension::Process, "/a (parent /b)"),
            ("shop/api", Dimension::Process, "/usr/bin/curl (parent /a)"),
        ]);
        assert_eq!(
            diff(&old, &new),
            vec![
                "+ shop/api process /usr/bin/curl (parent /a)",
                "- shop/api network connect tcp 10.0.0.1:5432"
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
