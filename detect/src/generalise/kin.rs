//! Kin: what a service meets after learning that has the shape of what it learned.
//!
//! A service that wrote two or three temp files, or reached a rotating endpoint pool at
//! two or three addresses, while it learned has not shown enough for a name shape or a
//! network to be learned ([`MIN_NAMES`], [`MIN_ADDRESSES`]). Once learning is over, its
//! next names and addresses are judged against what it did learn:
//!
//! - a name is kin when it forms a random or digit shape with names learned in its
//!   directory (at least one learned, [`KIN_MIN`] distinct in all, the rest of the path
//!   the same);
//! - an address is kin when it lies in the bound network (/16, IPv6 /48) of a learned
//!   exact destination of the same port and protocol, of the same kind (private or
//!   public), [`KIN_MIN`] distinct in all; or in the bound of a learned network: a pool
//!   seen rotating over a /24 while learning rotates over its neighbours too.
//!
//! Kin is reported at low and remembered; once the names or addresses reach what
//! learning asks for (beside a learned network: two new addresses), the shape or the
//! wider network is learned and later ones are known. What learned nothing of its kind
//! stays drift at its own severity: a new directory, a new port, a move from private to
//! public, an address beyond the bound, and every directory that is never generalised.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::network::{Net, covering, mask, split_network_key};
use super::shape::{MIN_NAMES, shape_of};
use super::{Generalisations, MIN_ADDRESSES, group_key, never_generalised, split_file_key};

/// Distinct names (or addresses) of one shape, at least one of them learned, for a later
/// one to be kin: two could be a coincidence, three of one length with random-looking
/// middles that vary at every position are a generator's.
pub const KIN_MIN: usize = 3;

/// Learned names kept per directory once learning is over (the newest): more than the
/// [`MIN_NAMES`] that teach a shape.
const KIN_KEPT: usize = 8;

/// Names (and destinations) met since learning ended, kept per directory (and port):
/// a temp directory holds the names of several generators side by side, and each
/// must keep the few it needs while the others write.
const SINCE_KEPT: usize = 32;

/// Directories (and ports) whose names (and destinations) are kept once learning is over:
/// those with the most names. A couple of KiB each at most, so a service's kin stays
/// within some tens of KiB however much it writes.
const KIN_DIRS: usize = 16;

/// A name in a directory, with what follows it in the path (empty for a file's own name).
type Named = (String, String);

/// One directory's names: learned, and met since learning ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KinNames {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learned: Vec<Named>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub since: Vec<Named>,
}

/// What a later name or address has in common with what was learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kinship {
    /// The shape or network they share (`/tmp/tmp<[a-z0-9_]{8}>`, `151.101.0.0/17:443`).
    pub pattern: String,
    /// The learned names, addresses or networks it resembles.
    pub anchors: Vec<String>,
    /// How many distinct names or addresses of it were seen in all, this one included
    /// (beside a learned network: the new ones).
    pub seen: usize,
    /// How many of them learn it (counted as `seen` is).
    pub enough: usize,
    /// The generalised baseline key, once they are enough to learn it.
    pub key: Option<String>,
}

pub(super) fn push_bounded<T: PartialEq>(list: &mut Vec<T>, item: T, kept: usize) {
    if list.contains(&item) {
        return;
    }
    if list.len() >= kept {
        list.remove(0);
    }
    list.push(item);
}

impl Generalisations {
    /// Keeps, from the file keys learned, the names of the directories that hold the
    /// most of them, to judge later names against (at the end of learning, and again at
    /// the end of growth).
    pub fn keep_kin(&mut self) {
        let mut by_dir: HashMap<String, Vec<Named>> = HashMap::new();
        for (_, raw) in &self.paths {
            self.each_component(raw, |dir, name, rest| {
                push_bounded(
                    by_dir.entry(dir.to_owned()).or_default(),
                    (name.to_owned(), rest.to_owned()),
                    KIN_KEPT,
                );
            });
        }
        let mut dirs: Vec<(String, Vec<Named>)> = by_dir.into_iter().collect();
        dirs.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        for (dir, learned) in dirs {
            if !self.kin.contains_key(&dir) && self.kin.len() >= KIN_DIRS {
                continue;
            }
            let kin = self.kin.entry(dir).or_default();
            for named in learned {
                push_bounded(&mut kin.learned, named, KIN_KEPT);
            }
        }
    }

    /// Keeps one learned name of a directory (if the directory is kept, or there is room
    /// for it).
    pub(super) fn keep_learned(&mut self, dir: &str, name: &str, rest: &str) {
        if !self.kin.contains_key(dir) && self.kin.len() >= KIN_DIRS {
            return;
        }
        let kin = self.kin.entry(dir.to_owned()).or_default();
        push_bounded(
            &mut kin.learned,
            (name.to_owned(), rest.to_owned()),
            KIN_KEPT,
        );
    }

    /// Calls `f(dir, name, rest)` for each component of `raw` below the root that no
    /// learned shape covers and whose (generalised) directory may be generalised.
    fn each_component(&self, raw: &str, mut f: impl FnMut(&str, &str, &str)) {
        let general = self.path(raw);
        let raw_parts: Vec<&str> = raw.split('/').collect();
        let general_parts: Vec<&str> = general.split('/').collect();
        if raw_parts.len() != general_parts.len() {
            return;
        }
        let mut dir_end = 0;
        for (i, (r, g)) in raw_parts.iter().zip(&general_parts).enumerate() {
            if i > 1 && !r.is_empty() {
                let dir = &general[..dir_end - 1];
                let rest = &general[dir_end + g.len()..];
                let covered = self
                    .shapes
                    .get(dir)
                    .is_some_and(|s| s.iter().any(|s| s.matches(r)));
                if !covered && !never_generalised(dir) {
                    f(dir, r, rest);
                }
            }
            dir_end += g.len() + 1;
        }
    }

    /// Whether a file key that missed the baseline after learning is kin to names the
    /// service learned; if so it is remembered, and once enough names share the shape,
    /// the shape is learned and its baseline key returned.
    pub fn kin_path(&mut self, key: &str, raw: &str) -> Option<Kinship> {
        let (op, _) = split_file_key(key)?;
        let mut found = None;
        self.each_component(raw, |dir, name, rest| {
            if found.is_some() {
                return;
            }
            let Some(kin) = self.kin.get(dir) else {
                return;
            };
            let same_rest = |list: &[Named]| -> Vec<String> {
                list.iter()
                    .filter(|(_, r)| r == rest)
                    .map(|(n, _)| n.clone())
                    .collect()
            };
            let learned = same_rest(&kin.learned);
            if learned.is_empty() {
                return;
            }
            let mut all = learned.clone();
            for n in same_rest(&kin.since) {
                if !all.contains(&n) {
                    all.push(n);
                }
            }
            if !all.iter().any(|n| n == name) {
                all.push(name.to_owned());
            }
            let names: Vec<&str> = all.iter().map(String::as_str).collect();
            let shape = shape_of(&names, name, KIN_MIN, !rest.is_empty()).and_then(|shape| {
                let anchors: Vec<String> = learned
                    .iter()
                    .filter(|n| shape.matches(n))
                    .map(|n| format!("{dir}/{n}{rest}"))
                    .collect();
                let seen = all.iter().filter(|n| shape.matches(n)).count();
                (!anchors.is_empty()).then_some((shape, anchors, seen))
            });
            found = Some((dir.to_owned(), (name.to_owned(), rest.to_owned()), shape));
        });
        // A name in a directory with learned names is remembered, kin or not yet: the
        // next names of its shape count it.
        let (dir, named, shape) = found?;
        let pattern_rest = named.1.clone();
        if let Some(kin) = self.kin.get_mut(&dir) {
            push_bounded(&mut kin.since, named, SINCE_KEPT);
        }
        let (shape, anchors, seen) = shape?;
        let pattern = format!("{dir}/{}{pattern_rest}", shape.render());
        let key = (seen >= MIN_NAMES).then(|| {
            self.add_shape(dir, shape);
            format!("{op} {}", self.path(raw))
        });
        Some(Kinship {
            pattern,
            anchors,
            seen,
            enough: MIN_NAMES,
            key,
        })
    }

    /// Whether a network key that missed the baseline after learning is kin to
    /// destinations the service learned; if so it is remembered, and once enough
    /// destinations share the network, the network's baseline key is returned.
    pub fn kin_network(&mut self, key: &str) -> Option<Kinship> {
        let Some((head, net, port)) = split_network_key(key) else {
            return self.kin_name(key);
        };
        if !net.is_exact() {
            return None;
        }
        let group = group_key(head, port);
        let bound = Net {
            base: mask(net.base, net.bound()),
            prefix: net.bound(),
        };
        let public = net.is_public();
        let of_kind = |n: &Net| bound.contains(*n) && n.is_public() == public;
        let learned: Vec<Net> = self
            .nets
            .get(&group)?
            .iter()
            .copied()
            .filter(of_kind)
            .collect();
        if learned.is_empty() {
            return None;
        }
        // Remembered, kin or not yet: the next destinations beside it count it.
        if self.kin_nets.contains_key(&group) || self.kin_nets.len() < KIN_DIRS {
            push_bounded(
                self.kin_nets.entry(group.clone()).or_default(),
                net,
                SINCE_KEPT,
            );
        }
        let mut fresh: Vec<Net> = self
            .kin_nets
            .get(&group)
            .into_iter()
            .flatten()
            .copied()
            .filter(|n| of_kind(n) && !learned.iter().any(|l| l.contains(*n)))
            .collect();
        if !fresh.contains(&net) {
            fresh.push(net);
        }
        // Beside a learned network, the pool is known to rotate: two new addresses
        // widen it. Beside exact addresses, they and the new ones together must be as
        // many as learning asks for.
        let (seen, kin, needed) = if learned.iter().any(|n| !n.is_exact()) {
            (fresh.len(), true, KIN_MIN - 1)
        } else {
            let seen = learned.len() + fresh.len();
            (seen, seen >= KIN_MIN, MIN_ADDRESSES)
        };
        let enough = seen >= needed;
        if !kin {
            return None;
        }
        let members: Vec<Net> = learned.iter().chain(&fresh).copied().collect();
        let network = covering(net, &members);
        let pattern = format!("{network}:{port}");
        let key = enough.then(|| format!("{head} {pattern}"));
        Some(Kinship {
            pattern,
            anchors: learned.iter().map(Net::to_string).collect(),
            seen,
            enough: needed,
            key,
        })
    }
}

/// The samples a service's generalisations keep, as a state file carries them: names
/// and learned paths while it learns, kin once it monitors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub names: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kin: BTreeMap<String, KinNames>,
    /// Destinations met since learning, per `connect <protocol>|<port>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kin_nets: BTreeMap<String, Vec<String>>,
    /// First labels of named destinations, per `connect <protocol>|<port>|<parent>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dns: BTreeMap<String, super::Labels>,
}

impl Samples {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
            && self.paths.is_empty()
            && self.kin.is_empty()
            && self.kin_nets.is_empty()
            && self.dns.is_empty()
    }
}

impl Generalisations {
    /// The samples, for a state file.
    pub fn samples(&self) -> Samples {
        Samples {
            names: self
                .names
                .iter()
                .map(|(d, n)| (d.clone(), n.iter().cloned().collect()))
                .collect(),
            paths: self.paths.iter().cloned().collect(),
            kin: self
                .kin
                .iter()
                .map(|(d, k)| (d.clone(), k.clone()))
                .collect(),
            kin_nets: self
                .kin_nets
                .iter()
                .map(|(g, n)| (g.clone(), n.iter().map(Net::to_string).collect()))
                .collect(),
            dns: self.name_samples(),
        }
    }

    /// Takes back the samples a state file carried (the learned shapes and networks come
    /// from the baseline's keys).
    pub fn restore(&mut self, samples: Samples) {
        self.names = samples
            .names
            .into_iter()
            .map(|(d, n)| (d, n.into_iter().collect()))
            .collect();
        self.paths = samples.paths.into_iter().collect();
        self.kin = samples.kin.into_iter().collect();
        self.kin_nets = samples
            .kin_nets
            .into_iter()
            .map(|(g, n)| (g, n.iter().filter_map(|n| Net::parse(n)).collect()))
            .collect();
        self.restore_names(samples.dns);
    }
}
