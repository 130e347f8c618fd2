//! Generalisations a service learns from its own behaviour, so that its baseline covers
//! the next temp-file name and the next address of a rotating endpoint pool, and says
//! how it got there.
//!
//! - **Name shapes.** While a service learns, the names it writes are grouped per
//!   directory. Once a directory holds [`MIN_NAMES`] distinct names of one shape — the
//!   same length, a fixed prefix and suffix, and a varying part of at least
//!   [`MIN_RANDOM_LEN`] characters that looks random; or one varying run of digits — the
//!   shape is learned: `/tmp/tmp<[a-z0-9_]{8}>`, `/tmp/go-build<[0-9]+>`. Names of
//!   segments several of which vary (a pid, a date beside the random part) are learned
//!   segment by segment: `/tmp/tmp-<[0-9]+>-<[A-Za-z0-9_]{12}>`. Names below
//!   directories a shape then covers are judged together, as the shape writes their
//!   directory: `/tmp/pymp-<[a-z0-9_-]{8}>/listener-<[a-z0-9_-]{8}>`. A shape stands
//!   for one path component, never for a directory tree, a name of another shape in the
//!   same directory is still new, and no shape is learned in `/etc`, system binary and
//!   library directories, or credential and service-account directories.
//! - **Networks.** When a service's connections to one port spread over
//!   [`MIN_ADDRESSES`] destinations of one kind (private or public) within a /16 (IPv6:
//!   a /48), the network that covers them is learned instead: a /24 (IPv6: /64), or
//!   wider when the destinations spread wider, never wider than that bound.
//! - **Named destinations.** The first label of a destination's DNS name is sampled
//!   below its parent domain, per port and protocol, and learns the same shapes as a
//!   file name: `connect tcp d<[a-z0-9-]{13}>.cdn.example.net:443` (see [`dns`]).
//! - **Fan-out levels.** Short hex directories of caches (`_cacache/…/ab/cd/…`) are
//!   learned one level at a time, as a shape of their own (see [`shape`]).
//! - **Kin.** After learning, a name or address of the shape of the few a service
//!   learned is reported at low, and learned once enough share it (see [`kin`]).
//!
//! Learned generalisations are ordinary baseline entries whose keys carry the pattern
//! (`write /tmp/tmp<[a-z0-9_]{8}>`, `connect tcp 52.216.8.0/23:443`). The indexes here
//! are rebuilt from those keys, so a state file or a baseline file carries them, and an
//! analyst can write one by hand. Nothing here runs for known behaviour: a path or an
//! address is generalised only when its exact key misses the baseline.

mod dns;
mod kin;
mod network;
mod shape;

use std::collections::{HashMap, VecDeque};

pub use dns::Labels;
pub use kin::{KIN_MIN, KinNames, Kinship, Samples};
pub use network::{Net, split_network_key};
use network::{covering, mask};
use shape::shape_of;
pub use shape::{MIN_NAMES, MIN_RANDOM_LEN, NameShape};

use crate::pattern::fold;

/// Distinct destinations within one bound network a port must see before the network is
/// learned; a service that only ever used a few keeps them exact.
pub const MIN_ADDRESSES: usize = 4;

/// Names remembered per directory while learning (the newest): enough to tell a
/// generator's alphabet from chance.
const NAMES_KEPT: usize = 32;

/// Directories a service samples names in while learning; past it, new directories are
/// not sampled (their names are learned exactly, as before).
const DIRS_KEPT: usize = 256;

/// Learned file keys remembered with the path they came from, so that a shape learned
/// later can fold them into its pattern.
const PATHS_KEPT: usize = 1024;

/// Destinations remembered per port while learning.
const DESTINATIONS_KEPT: usize = 256;

/// Directories whose names are never generalised: what changes there is always worth
/// its own entry.
fn never_generalised(dir: &str) -> bool {
    const ROOTS: [&str; 15] = [
        "/etc",
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/lib",
        "/lib32",
        "/lib64",
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib",
        "/boot",
        "/proc",
    ];
    const PARTS: [&str; 11] = [
        "/.ssh",
        "/.gnupg",
        "/.aws",
        "/.azure",
        "/.kube",
        "/.docker",
        "/.config/gcloud",
        "/secrets",
        "/serviceaccount",
        "/credentials",
        "/cron",
    ];
    dir.is_empty()
        || !dir.starts_with('/')
        || ROOTS.iter().any(|r| {
            dir == *r
                || dir
                    .strip_prefix(r)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        || PARTS.iter().any(|p| dir.contains(p))
        || crate::observe::is_sensitive(&format!("{dir}/"))
}

/// A file key's parts: `write /tmp/x` → (`write`, `/tmp/x`).
fn split_file_key(key: &str) -> Option<(&str, &str)> {
    key.split_once(' ')
}

/// What a learned generalisation did to the baseline: entries folded into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub into: String,
    pub from: Vec<String>,
}

/// A service's learned generalisations and what it samples to learn more.
#[derive(Debug, Clone, Default)]
pub struct Generalisations {
    /// Learned name shapes by the (generalised) directory that holds them.
    shapes: HashMap<String, Vec<NameShape>>,
    /// Networks learned per `connect <protocol>` and port (`connect tcp|443`), with the
    /// exact destinations learned beside them.
    nets: HashMap<String, Vec<Net>>,
    /// Names written per directory while learning (the newest [`NAMES_KEPT`]).
    names: HashMap<String, VecDeque<String>>,
    /// Learned file keys with the raw path each came from.
    paths: VecDeque<(String, String)>,
    /// Names learned per directory, and met since, kept once learning is over.
    kin: HashMap<String, KinNames>,
    /// Destinations met since learning ended, per `connect <protocol>|<port>`.
    kin_nets: HashMap<String, Vec<Net>>,
    /// Learned shapes of named destinations' first labels, per `connect
    /// <protocol>|<port>|<parent domain>` (see [`dns`]).
    name_shapes: HashMap<String, Vec<NameShape>>,
    /// First labels of named destinations, learned and met since, per the same key.
    labels: HashMap<String, Labels>,
}

/// Adds a learned shape to those of one directory (or parent domain): in place of the
/// one it widens, else beside the others.
fn insert_shape(shapes: &mut Vec<NameShape>, shape: NameShape) {
    if let Some(narrower) = shapes.iter_mut().find(|s| s.widens(&shape)) {
        *narrower = shape;
    } else if !shapes.contains(&shape) {
        shapes.push(shape);
    }
}

/// The shape that writes `name`: of those that cover it, the broadest
/// ([`NameShape::breadth`]), the first learned of equals.
fn covering_shape<'a>(shapes: &'a [NameShape], name: &str) -> Option<&'a NameShape> {
    shapes
        .iter()
        .filter(|s| s.matches(name))
        .fold(None, |best: Option<&NameShape>, s| match best {
            Some(b) if b.breadth() >= s.breadth() => Some(b),
            _ => Some(s),
        })
}

fn group_key(head: &str, port: &str) -> String {
    format!("{head}|{port}")
}

impl Generalisations {
    /// The generalisations a baseline's keys carry.
    pub fn rebuild<'a>(
        entries: impl IntoIterator<Item = (crate::observe::Dimension, &'a str)>,
    ) -> Self {
        let mut g = Generalisations::default();
        for (dimension, key) in entries {
            g.index(dimension, key);
        }
        g
    }

    /// Indexes what one baseline key says.
    pub fn index(&mut self, dimension: crate::observe::Dimension, key: &str) {
        use crate::observe::Dimension;
        match dimension {
            // Only a learned shape's key carries `<[`: plain keys are not parsed.
            Dimension::File if key.contains("<[") => {
                let Some((_, path)) = split_file_key(key) else {
                    return;
                };
                let mut dir = 0;
                for (i, c) in path.match_indices('/') {
                    let component = &path[dir..i];
                    if let Some(shape) = NameShape::parse(component) {
                        self.add_shape(path[..dir.saturating_sub(1)].to_owned(), shape);
                    }
                    dir = i + c.len();
                }
                if let Some(shape) = NameShape::parse(&path[dir..]) {
                    self.add_shape(path[..dir.saturating_sub(1)].to_owned(), shape);
                }
            }
            Dimension::Network => {
                if let Some((head, net, port)) = split_network_key(key) {
                    let nets = self.nets.entry(group_key(head, port)).or_default();
                    if !nets.contains(&net) && nets.len() < DESTINATIONS_KEPT {
                        nets.push(net);
                    }
                } else if key.contains("<[") {
                    self.index_name(key);
                }
            }
            _ => {}
        }
    }

    fn add_shape(&mut self, dir: String, shape: NameShape) {
        if never_generalised(&dir) {
            return;
        }
        insert_shape(self.shapes.entry(dir).or_default(), shape);
    }

    /// Whether any shape has been learned (the common case is none).
    pub fn has_shapes(&self) -> bool {
        !self.shapes.is_empty()
    }

    /// A raw path with each component that a learned shape covers replaced by the
    /// shape, the rest folded: `/tmp/tmpbqymhbpj` → `/tmp/tmp<[a-z0-9_]{8}>`.
    pub fn path(&self, raw: &str) -> String {
        let mut out = String::with_capacity(raw.len() + 16);
        for (i, component) in raw.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            let dir = &out[..out.len().saturating_sub(1)];
            let shape = (i > 1)
                .then(|| self.shapes.get(dir))
                .flatten()
                .and_then(|shapes| covering_shape(shapes, component));
            match shape {
                Some(s) => {
                    let r = s.render();
                    out.push_str(&r);
                }
                None => out.push_str(&fold(component)),
            }
        }
        out
    }

    /// The learned key covering a file or network key that missed the baseline, if a
    /// learned generalisation covers it.
    pub fn cover(
        &self,
        dimension: crate::observe::Dimension,
        key: &str,
        raw_path: Option<&str>,
    ) -> Option<String> {
        use crate::observe::Dimension;
        match dimension {
            Dimension::File if self.has_shapes() => {
                let (op, _) = split_file_key(key)?;
                let general = format!("{op} {}", self.path(raw_path?));
                (general != key).then_some(general)
            }
            Dimension::Network => {
                let Some((head, net, port)) = split_network_key(key) else {
                    return self.cover_name(key);
                };
                let nets = self.nets.get(&group_key(head, port))?;
                let cover = nets
                    .iter()
                    .filter(|n| **n != net && n.contains(net))
                    .min_by_key(|n| std::cmp::Reverse(n.prefix))?;
                Some(format!("{head} {cover}:{port}"))
            }
            _ => None,
        }
    }

    /// Learns from a file key newly learned from `raw`: samples its names, and returns
    /// the baseline entries to fold together when a name shape was learned.
    /// `widen` also lets a shape already learned widen its alphabet (while learning;
    /// later, one odd name must not widen what the service was learned with).
    pub fn learn_path(&mut self, key: &str, raw: &str, widen: bool) -> Vec<Merge> {
        if self.paths.len() == PATHS_KEPT {
            self.paths.pop_front();
        }
        self.paths.push_back((key.to_owned(), raw.to_owned()));
        let mut learned = false;
        let mut general = self.path(raw);
        // Sample every component below the root, under its generalised directory.
        let raw_parts: Vec<&str> = raw.split('/').collect();
        if raw_parts.len() != general.split('/').count() {
            return Vec::new();
        }
        let last = raw_parts.len() - 1;
        for (i, r) in raw_parts.iter().enumerate().skip(2) {
            // The directory as the shapes learned so far write it: a shape just learned
            // for a directory of this path counts for the names below it.
            let dir_end: usize = general.split('/').take(i).map(|g| g.len() + 1).sum();
            let dir = &general[..dir_end - 1];
            let covered = self
                .shapes
                .get(dir)
                .is_some_and(|s| s.iter().any(|s| s.matches(r)));
            if covered || never_generalised(dir) {
                continue;
            }
            let dir = dir.to_owned();
            let taught = self.sample(&dir, r, i < last, widen);
            if !widen {
                // Learned while growing, after learning: kin to judge by at once.
                let rest = general[dir_end..]
                    .find('/')
                    .map_or("", |at| &general[dir_end + at..]);
                let rest = rest.to_owned();
                self.keep_learned(&dir, r, &rest);
            }
            if taught {
                learned = true;
                general = self.path(raw);
            }
        }
        if !learned {
            return Vec::new();
        }
        // Fold the keys learned so far into the shapes.
        let mut paths = std::mem::take(&mut self.paths);
        let mut merges: HashMap<String, Vec<String>> = HashMap::new();
        for (old, raw) in &mut paths {
            let Some((op, _)) = split_file_key(old) else {
                continue;
            };
            let new = format!("{op} {}", self.path(raw));
            if new != *old {
                merges
                    .entry(new.clone())
                    .or_default()
                    .push(std::mem::replace(old, new));
            }
        }
        self.paths = paths;
        let mut merges: Vec<Merge> = merges
            .into_iter()
            .map(|(into, mut from)| {
                from.sort_unstable();
                from.dedup();
                Merge { into, from }
            })
            .collect();
        merges.sort_by(|a, b| a.into.cmp(&b.into));
        merges
    }

    /// Adds a name to its directory's sample; true when that taught a shape.
    fn sample(&mut self, dir: &str, name: &str, is_dir: bool, widen: bool) -> bool {
        if name.is_empty() {
            return false;
        }
        if !self.names.contains_key(dir) && self.names.len() >= DIRS_KEPT {
            return false;
        }
        let names = self.names.entry(dir.to_owned()).or_default();
        if names.iter().any(|n| n == name) {
            return false;
        }
        if names.len() == NAMES_KEPT {
            names.pop_front();
        }
        names.push_back(name.to_owned());
        let sample: Vec<&str> = names.iter().map(String::as_str).collect();
        let Some(shape) = shape_of(&sample, name, MIN_NAMES, is_dir) else {
            return false;
        };
        let before = self.shapes.get(dir).cloned();
        if !widen
            && before
                .as_ref()
                .is_some_and(|b| b.iter().any(|s| s.widens(&shape)))
        {
            return false;
        }
        self.add_shape(dir.to_owned(), shape);
        let learned = self.shapes.get(dir) != before.as_ref();
        if learned && widen {
            self.regroup(dir);
        }
        learned
    }

    /// Moves the names sampled below directories that a shape just learned in `dir`
    /// covers into the sample of the directory as the shape writes it: a temp
    /// directory's files were sampled one per directory before the directory's own
    /// shape was known (`/tmp/pymp-<…>/listener-<…>`), and together they may show a
    /// shape of their own. A directory sampled under its folded name (`pymp-<id>`) moves
    /// when a name of the shape folds to it. Moved names are judged as file names (no
    /// fan-out level).
    fn regroup(&mut self, dir: &str) {
        let Some(shapes) = self.shapes.get(dir).cloned() else {
            return;
        };
        // Directories were sampled as the path wrote them then: raw, or folded.
        let folded: HashMap<String, &NameShape> = self
            .names
            .get(dir)
            .into_iter()
            .flatten()
            .filter_map(|n| Some((fold(n), covering_shape(&shapes, n)?)))
            .collect();
        let prefix = format!("{dir}/");
        let mut moved: Vec<(String, String)> = self
            .names
            .keys()
            .filter_map(|key| {
                let rest = key.strip_prefix(&prefix)?;
                let (component, below) = rest.split_once('/').unwrap_or((rest, ""));
                let shape = covering_shape(&shapes, component)
                    .or_else(|| folded.get(component).copied())?;
                let mut target = format!("{prefix}{}", shape.render());
                if !below.is_empty() {
                    target.push('/');
                    target.push_str(below);
                }
                Some((key.clone(), target))
            })
            .collect();
        moved.sort_unstable();
        for (from, to) in moved {
            let Some(names) = self.names.remove(&from) else {
                continue;
            };
            for name in names {
                self.sample(&to, &name, false, true);
            }
        }
    }

    /// Learns from a network key newly learned: when the port's destinations now spread
    /// over enough of one network, returns the entries to fold into it.
    pub fn learn_network(&mut self, key: &str) -> Option<Merge> {
        let Some((head, net, port)) = split_network_key(key) else {
            return self.learn_name(key);
        };
        let nets = self.nets.entry(group_key(head, port)).or_default();
        if !nets.contains(&net) {
            if nets.len() == DESTINATIONS_KEPT {
                return None;
            }
            nets.push(net);
        }
        let bound = Net {
            base: mask(net.base, net.bound()),
            prefix: net.bound(),
        };
        let public = net.is_public();
        let members: Vec<Net> = nets
            .iter()
            .copied()
            .filter(|n| bound.contains(*n) && n.is_public() == public)
            .collect();
        if members.len() < MIN_ADDRESSES {
            return None;
        }
        let learned = covering(net, &members);
        let from: Vec<Net> = members
            .into_iter()
            .filter(|m| learned.contains(*m) && *m != learned)
            .collect();
        if from.is_empty() {
            return None;
        }
        nets.retain(|n| !from.contains(n));
        if !nets.contains(&learned) {
            nets.push(learned);
        }
        Some(Merge {
            into: format!("{head} {learned}:{port}"),
            from: from.iter().map(|n| format!("{head} {n}:{port}")).collect(),
        })
    }

    /// Forgets the samples taken while learning (the learned shapes and networks stay,
    /// and so does what [`Generalisations::keep_kin`] kept).
    pub fn stop_sampling(&mut self) {
        self.names = HashMap::new();
        self.paths = VecDeque::new();
    }
}

#[cfg(test)]
mod tests;
