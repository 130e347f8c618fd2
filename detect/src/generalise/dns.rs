//! Destinations named by DNS: the first label of a name, generalised below its parent
//! domain the way a file's name is below its directory.
//!
//! A service that reaches `d1a2b3c4d5e6f7.cdn.example.net`, `web-0.web.shop.svc.cluster.local`
//! and their siblings names one pool of endpoints, whose first label is a generator's
//! (random characters, or one run of digits). The labels a port's connections use under
//! one parent are sampled, and the same shapes as for file names ([`label_shape`]) are
//! learned from them: `connect tcp d<[a-z0-9-]{13}>.cdn.example.net:443`.
//!
//! Bounds:
//! - Only the first label varies, and only below a registrable domain: a name's last two
//!   labels (three under a country's generic second level, `co.uk`) are never
//!   generalised, so a pattern never spans owners (`<…>.com`) or domains (`<…>.example.com`
//!   covers no name of `example.org`, nor `a.b.example.com`).
//! - A learned pattern covers the other names of its parent, and a parent shared by a
//!   provider's tenants (`cloudfront.net`) is covered for all of them, as a learned
//!   network covers a provider's whole /23.
//! - Before a pattern is learned, [`MIN_NAMES`] distinct labels of one shape are needed
//!   while learning; after it, a name is kin (low) with one learned label and
//!   [`KIN_MIN`] in all, and learns the pattern at [`MIN_NAMES`], as for file names.
//! - Labels with several varying runs of digits (`ip-10-0-1-23`) are not a shape: they
//!   stay exact.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::kin::{KIN_MIN, Kinship, push_bounded};
use super::shape::{MIN_NAMES, NameShape, label_shape};
use super::{Generalisations, Merge, insert_shape};

/// Parents (per port and protocol) whose labels a service keeps: those it reaches
/// first. A couple of KiB each at most.
pub(super) const GROUPS_KEPT: usize = 16;

/// Labels kept per parent: learned (the newest), and met since learning ended.
const LEARNED_KEPT: usize = 32;
const SINCE_KEPT: usize = 32;

/// Second-level labels that countries register names below (`example.co.uk`).
const GENERIC_SECOND_LEVEL: [&str; 8] = ["co", "com", "net", "org", "gov", "edu", "ac", "ne"];

/// One parent's first labels: learned, and met since learning ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learned: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub since: Vec<String>,
}

/// A named destination's key: `connect tcp a1.cdn.example.net:443`.
pub(super) struct NameKey<'a> {
    pub head: &'a str,
    pub label: &'a str,
    pub parent: &'a str,
    pub port: &'a str,
}

impl NameKey<'_> {
    /// The key the patterns of a name's parent, port and protocol are kept under.
    pub fn group(&self) -> String {
        format!("{}|{}|{}", self.head, self.port, self.parent)
    }

    /// The destination with another first label, without its port: `a2.cdn.example.net`.
    pub fn name(&self, label: &str) -> String {
        format!("{label}.{}", self.parent)
    }

    /// The baseline key for another first label.
    pub fn with_label(&self, label: &str) -> String {
        format!("{} {}:{}", self.head, self.name(label), self.port)
    }
}

/// The parts of a network key whose destination is a DNS name with a first label that
/// may be generalised; `None` for addresses and for names too short to have one.
pub(super) fn split_name_key(key: &str) -> Option<NameKey<'_>> {
    let (rest, port) = key.rsplit_once(':')?;
    let (head, dest) = rest.rsplit_once(' ')?;
    if dest.parse::<std::net::IpAddr>().is_ok() || dest.contains('/') {
        return None;
    }
    let (label, parent) = dest.split_once('.')?;
    let labels: Vec<&str> = parent.split('.').collect();
    let registrable = match labels.as_slice() {
        [.., second, top] if top.len() == 2 && GENERIC_SECOND_LEVEL.contains(second) => 3,
        _ => 2,
    };
    (!label.is_empty() && labels.len() >= registrable && labels.iter().all(|l| !l.is_empty()))
        .then_some(NameKey {
            head,
            label,
            parent,
            port,
        })
}

impl Generalisations {
    /// Indexes a learned name pattern's key.
    pub(super) fn index_name(&mut self, key: &str) {
        if let Some(k) = split_name_key(key)
            && let Some(shape) = NameShape::parse(k.label)
        {
            self.add_name_shape(k.group(), shape);
        }
    }

    fn add_name_shape(&mut self, group: String, shape: NameShape) {
        insert_shape(self.name_shapes.entry(group).or_default(), shape);
    }

    /// The learned pattern's key that covers a named destination, if one does.
    pub(super) fn cover_name(&self, key: &str) -> Option<String> {
        let k = split_name_key(key)?;
        let shape = self
            .name_shapes
            .get(&k.group())?
            .iter()
            .find(|s| s.matches(k.label))?;
        Some(k.with_label(&shape.render()))
    }

    /// Samples a newly learned named destination; when its parent's labels now make a
    /// shape, returns the entries to fold into it.
    pub(super) fn learn_name(&mut self, key: &str) -> Option<Merge> {
        let k = split_name_key(key)?;
        if NameShape::parse(k.label).is_some() {
            return None;
        }
        let group = k.group();
        if !self.labels.contains_key(&group) && self.labels.len() >= GROUPS_KEPT {
            return None;
        }
        let labels = self.labels.entry(group.clone()).or_default();
        push_bounded(&mut labels.learned, k.label.to_owned(), LEARNED_KEPT);
        let names: Vec<&str> = labels.learned.iter().map(String::as_str).collect();
        let shape = label_shape(&names, k.label, MIN_NAMES)?;
        let from: Vec<String> = names
            .iter()
            .filter(|n| shape.matches(n))
            .map(|n| k.with_label(n))
            .collect();
        let into = k.with_label(&shape.render());
        self.add_name_shape(group, shape);
        Some(Merge { into, from })
    }

    /// Whether a named destination that missed the baseline after learning is kin to
    /// names the service learned below the same parent; if so it is remembered, and
    /// once enough share a shape, the shape is learned and its key returned.
    pub(super) fn kin_name(&mut self, key: &str) -> Option<Kinship> {
        let k = split_name_key(key)?;
        let group = k.group();
        let labels = self.labels.get_mut(&group)?;
        if labels.learned.is_empty() {
            return None;
        }
        push_bounded(&mut labels.since, k.label.to_owned(), SINCE_KEPT);
        let mut all: Vec<&str> = labels.learned.iter().map(String::as_str).collect();
        for n in &labels.since {
            if !all.contains(&n.as_str()) {
                all.push(n);
            }
        }
        let shape = label_shape(&all, k.label, KIN_MIN)?;
        let anchors: Vec<String> = labels
            .learned
            .iter()
            .filter(|n| shape.matches(n))
            .map(|n| k.name(n))
            .collect();
        if anchors.is_empty() {
            return None;
        }
        let seen = all.iter().filter(|n| shape.matches(n)).count();
        let rendered = shape.render();
        let pattern = format!("{}:{}", k.name(&rendered), k.port);
        let learned = seen >= MIN_NAMES;
        let key = learned.then(|| k.with_label(&rendered));
        if learned {
            self.add_name_shape(group, shape);
        }
        Some(Kinship {
            pattern,
            anchors,
            seen,
            enough: MIN_NAMES,
            key,
        })
    }

    /// The labels kept, for a state file.
    pub(super) fn name_samples(&self) -> std::collections::BTreeMap<String, Labels> {
        self.labels
            .iter()
            .map(|(g, l)| (g.clone(), l.clone()))
            .collect()
    }

    pub(super) fn restore_names(&mut self, labels: std::collections::BTreeMap<String, Labels>) {
        self.labels = labels.into_iter().collect::<HashMap<_, _>>();
    }
}
