//! Generalisations a service learns from its own behaviour, so that its baseline covers
//! the next temp-file name and the next address of a rotating endpoint pool, and says
//! how it got there.
//!
//! - **Name shapes.** While a service learns, the names it writes are grouped per
//!   directory. Once a directory holds [`MIN_NAMES`] distinct names of one shape — the
//!   same length, a fixed prefix and suffix, and a varying part of at least
//!   [`MIN_RANDOM_LEN`] characters that looks random; or one varying run of digits — the
//!   shape is learned: `/tmp/tmp<[a-z0-9_]{8}>`, `/tmp/go-build<[0-9]+>`. A shape stands
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
                .and_then(|shapes| shapes.iter().find(|s| s.matches(component)));
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
        let general = self.path(raw);
        // Sample every component below the root, under its generalised directory.
        let raw_parts: Vec<&str> = raw.split('/').collect();
        let general_parts: Vec<&str> = general.split('/').collect();
        if raw_parts.len() != general_parts.len() {
            return Vec::new();
        }
        let mut dir_end = 0;
        let last = raw_parts.len() - 1;
        for (i, (r, g)) in raw_parts.iter().zip(&general_parts).enumerate() {
            if i > 1 {
                let dir = &general[..dir_end - 1];
                let covered = self
                    .shapes
                    .get(dir)
                    .is_some_and(|s| s.iter().any(|s| s.matches(r)));
                if !covered && !never_generalised(dir) {
                    learned |= self.sample(dir, r, i < last, widen);
                    if !widen {
                        // Learned while growing, after learning: kin to judge by at once.
                        self.keep_learned(dir, r, &general[dir_end + g.len()..]);
                    }
                }
            }
            dir_end += g.len() + 1;
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
        self.shapes.get(dir) != before.as_ref()
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
mod tests {
    use super::*;
    use crate::observe::Dimension;

    /// SplitMix64, as the simulator uses.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn word(&mut self, alphabet: &[u8], len: usize) -> String {
            (0..len)
                .map(|_| char::from(alphabet[self.next() as usize % alphabet.len()]))
                .collect()
        }
    }

    const PYTHON: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";

    fn learn(g: &mut Generalisations, paths: &[String]) -> Vec<Merge> {
        let mut merges = Vec::new();
        for p in paths {
            let key = format!("write {}", g.path(p));
            merges.extend(g.learn_path(&key, p, true));
        }
        merges
    }

    #[test]
    fn python_temp_names_learn_one_shape_that_covers_the_next_name() {
        let mut rng = Rng(1);
        let mut g = Generalisations::default();
        let names: Vec<String> = (0..6)
            .map(|_| format!("/tmp/tmp{}", rng.word(PYTHON, 8)))
            .collect();
        let merges = learn(&mut g, &names);
        assert!(!merges.is_empty(), "no shape learned from {names:?}");
        let next = format!("/tmp/tmp{}", rng.word(PYTHON, 8));
        let general = g.path(&next);
        assert!(general.starts_with("/tmp/tmp<[a-z"), "{general}");
        assert!(general.ends_with("]{8}>"), "{general}");
        assert_eq!(g.path(&format!("/tmp/tmp{}", rng.word(PYTHON, 8))), general);
    }

    #[test]
    fn a_name_of_another_shape_in_the_same_directory_stays_itself() {
        let mut rng = Rng(2);
        let mut g = Generalisations::default();
        let names: Vec<String> = (0..8)
            .map(|_| format!("/tmp/tmp{}", rng.word(PYTHON, 8)))
            .collect();
        learn(&mut g, &names);
        assert_eq!(g.path("/tmp/backdoor.sh"), "/tmp/backdoor.sh");
        assert_eq!(g.path("/tmp/tmpabc"), "/tmp/tmpabc");
        assert_eq!(g.path("/tmp/.x/kworker"), "/tmp/.x/kworker");
        // Another prefix, or characters the generator never writes.
        assert!(!g.path("/tmp/xyzabcdefgh").contains('['));
        assert!(!g.path("/tmp/tmpABCDEFGH").contains('['));
    }

    #[test]
    fn mktemp_go_hex_and_fan_out_names_are_learned_by_shape() {
        let mut rng = Rng(3);
        let alnum = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let cases: Vec<(Vec<String>, &str)> = vec![
            (
                (0..30)
                    .map(|_| format!("/tmp/tmp.{}", rng.word(alnum, 10)))
                    .collect(),
                // Learned from its first names, whose 40 characters cannot rule out `_`
                // and `-`.
                "/tmp/tmp.<[A-Za-z0-9_-]{10}>",
            ),
            (
                (0..6)
                    .map(|_| format!("/tmp/go-build{}", rng.next() % 4_000_000_000))
                    .collect(),
                "/tmp/go-build<[0-9]+>",
            ),
            (
                (0..30)
                    .map(|_| {
                        format!(
                            "/var/cache/app/{}/data.bin",
                            rng.word(b"abcdefghijklmnop", 12)
                        )
                    })
                    .collect(),
                "/var/cache/app/<[a-z_-]{12}>/data.bin",
            ),
        ];
        for (paths, want) in cases {
            let mut g = Generalisations::default();
            learn(&mut g, &paths);
            assert_eq!(g.path(&paths[0]), want, "{paths:?}");
        }
    }

    #[test]
    fn an_alphabet_is_widened_only_by_what_few_names_cannot_rule_out() {
        let mut rng = Rng(5);
        // Six names rarely show `_`; their absence from 48 characters rules nothing out.
        let mut g = Generalisations::default();
        let few: Vec<String> = (0..6)
            .map(|_| {
                format!(
                    "/tmp/tmp{}",
                    rng.word(b"abcdefghijklmnopqrstuvwxyz0123456789", 8)
                )
            })
            .collect();
        learn(&mut g, &few);
        assert!(g.path("/tmp/tmpab_cd_ef").contains("]{8}>"));
        // Upper-case letters would have shown: they stay outside.
        assert!(!g.path("/tmp/tmpABCDEFGH").contains("]{8}>"));
        // Letters only: digits would have shown, and past learning one odd name with
        // digits does not widen the shape.
        let mut g = Generalisations::default();
        let letters: Vec<String> = (0..30)
            .map(|_| format!("/tmp/tmp{}", rng.word(b"abcdefghijklmnopqrstuvwxyz", 8)))
            .collect();
        learn(&mut g, &letters);
        assert!(g.path("/tmp/tmpabqcdwef").contains("]{8}>"));
        assert!(!g.path("/tmp/tmpab1cd2ef").contains("]{8}>"));
        let odd = "/tmp/tmpab1cd2ef";
        g.learn_path(&format!("write {}", g.path(odd)), odd, false);
        assert!(!g.path("/tmp/tmpxy3zw4vu").contains("]{8}>"));
    }

    #[test]
    fn names_of_two_generators_of_one_length_are_not_one_shape() {
        let mut rng = Rng(6);
        let mut g = Generalisations::default();
        let mut paths = Vec::new();
        for _ in 0..12 {
            paths.push(format!("/tmp/upload-{}", 1000 + rng.next() % 9000));
            paths.push(format!("/tmp/tmp{}", rng.word(PYTHON, 8)));
        }
        learn(&mut g, &paths);
        assert_eq!(g.path("/tmp/upload-4411"), "/tmp/upload-<n>");
        assert!(g.path("/tmp/tmpk2m9zq_x").starts_with("/tmp/tmp<["));
    }

    #[test]
    fn fan_out_cache_levels_are_learned_so_their_files_share_one_shape() {
        let mut rng = Rng(7);
        let hex = b"0123456789abcdef";
        let cases = [
            // npm's content cache: two 2-character levels, then the rest of the hash.
            (
                "/root/.npm/_cacache/content-v2/sha512",
                vec![2, 2],
                124,
                "/root/.npm/_cacache/content-v2/sha512/<[a-f0-9]{2}>/<[a-f0-9]{2}>/<hex>",
            ),
            // pip's HTTP cache: five 1-character levels.
            (
                "/root/.cache/pip/http-v2",
                vec![1, 1, 1, 1, 1],
                51,
                "/root/.cache/pip/http-v2/<[a-f0-9]{1}>/<[a-f0-9]{1}>/<[a-f0-9]{1}>/<[a-f0-9]{1}>/<[a-f0-9]{1}>/<hex>",
            ),
            // git's loose objects.
            (
                "/app/repo/.git/objects",
                vec![2],
                38,
                "/app/repo/.git/objects/<[a-f0-9]{2}>/<hex>",
            ),
        ];
        for (root, levels, leaf, want) in cases {
            let mut g = Generalisations::default();
            let paths: Vec<String> = (0..200)
                .map(|_| {
                    let mut p = root.to_owned();
                    for len in &levels {
                        p.push('/');
                        p.push_str(&rng.word(hex, *len));
                    }
                    p.push('/');
                    p.push_str(&rng.word(hex, leaf));
                    p
                })
                .collect();
            learn(&mut g, &paths);
            let mut parts: Vec<String> = levels.iter().map(|l| rng.word(hex, *l)).collect();
            parts.push(rng.word(hex, leaf));
            let next = format!("{root}/{}", parts.join("/"));
            assert_eq!(g.path(&next), want, "{next}");
        }
    }

    #[test]
    fn short_directory_names_someone_chose_are_not_fan_out() {
        let mut g = Generalisations::default();
        // Letters only (no digit), or words of other lengths: chosen names.
        let paths: Vec<String> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .chain(["v1", "v2", "app", "db", "ca"].iter())
            .map(|d| format!("/srv/data/{d}/index.json"))
            .collect();
        learn(&mut g, &paths);
        assert_eq!(g.path("/srv/data/a/index.json"), "/srv/data/a/index.json");
        assert_eq!(g.path("/srv/data/v3/index.json"), "/srv/data/v3/index.json");
        // The last component is a file, never a fan-out level.
        let mut g = Generalisations::default();
        let files: Vec<String> = ["1a", "2b", "3c", "4d", "e5", "f6"]
            .iter()
            .map(|d| format!("/srv/data/{d}"))
            .collect();
        learn(&mut g, &files);
        assert!(!g.has_shapes());
    }

    /// How often random names of one generator are taken for a shape, and names of two
    /// generators of one length are not, in a thousand draws of each.
    #[test]
    fn few_random_names_make_a_shape_and_two_generators_do_not() {
        let mut rng = Rng(8);
        // `every`: one name in that many is another generator's (0: none).
        let mut shaped = |n: usize, every: usize| {
            (0..1000)
                .filter(|_| {
                    let names: Vec<String> = (0..n)
                        .map(|i| {
                            if every > 0 && i % every == every - 1 {
                                format!("upload-{}", 1000 + rng.next() % 9000)
                            } else {
                                format!("tmp{}", rng.word(PYTHON, 8))
                            }
                        })
                        .collect();
                    let all: Vec<&str> = names.iter().map(String::as_str).collect();
                    // From the other generator's name, and from one of the first's.
                    shape_of(&all, all[n - 1], n, false).is_some()
                        || (every > 0 && shape_of(&all, all[0], n, false).is_some())
                })
                .count()
        };
        for (n, at_least) in [(3, 930), (4, 980), (8, 970), (16, 970)] {
            let got = shaped(n, 0);
            assert!(got >= at_least, "{n} random names: {got} of 1000 shaped");
        }
        for (n, every) in [(4, 2), (6, 2), (8, 2), (4, 4), (8, 4), (8, 8)] {
            let got = shaped(n, every);
            assert!(
                got <= 20,
                "{n} names, one in {every} of another generator: {got} of 1000 shaped"
            );
        }
    }

    #[test]
    fn words_of_one_length_are_not_taken_for_random_names() {
        let mut g = Generalisations::default();
        let paths: Vec<String> = ["orders", "prices", "stocks", "carts1", "sellers", "buyers"]
            .iter()
            .map(|w| format!("/app/data/{w}.json"))
            .collect();
        assert!(learn(&mut g, &paths).is_empty());
        assert!(!g.has_shapes());
    }

    #[test]
    fn no_shape_is_learned_below_etc_binaries_or_credentials() {
        let mut rng = Rng(4);
        for dir in [
            "/etc/cron.d",
            "/usr/local/bin",
            "/root/.ssh",
            "/var/run/secrets/kubernetes.io/serviceaccount",
            "/etc",
        ] {
            let mut g = Generalisations::default();
            let paths: Vec<String> = (0..10)
                .map(|_| format!("{dir}/tmp{}", rng.word(PYTHON, 8)))
                .collect();
            assert!(learn(&mut g, &paths).is_empty(), "{dir}");
            assert!(!g.has_shapes(), "{dir}");
        }
    }

    #[test]
    fn learned_shapes_survive_as_baseline_keys() {
        let shape = "write /tmp/tmp<[a-z0-9_]{8}>";
        let g = Generalisations::rebuild([(Dimension::File, shape)]);
        assert_eq!(g.path("/tmp/tmpbqymhbpj"), "/tmp/tmp<[a-z0-9_]{8}>");
        assert_eq!(g.path("/tmp/tmpbq_m9bpj"), "/tmp/tmp<[a-z0-9_]{8}>");
        assert_eq!(
            g.cover(
                Dimension::File,
                "write /tmp/tmpbqymhbpj",
                Some("/tmp/tmpbqymhbpj")
            ),
            Some(shape.to_owned())
        );
        assert_eq!(
            NameShape::parse("tmp<[a-z0-9_]{8}>.log").map(|s| s.render()),
            Some("tmp<[a-z0-9_]{8}>.log".to_owned())
        );
    }

    #[test]
    fn rotating_public_addresses_learn_their_network_and_nothing_wider() {
        let mut g = Generalisations::default();
        let mut merges = Vec::new();
        for a in ["52.216.8.17", "52.216.9.200", "52.216.8.99", "52.216.9.4"] {
            let key = format!("connect tcp {a}:443");
            g.index(Dimension::Network, &key);
            merges.extend(g.learn_network(&key));
        }
        let last = merges.last().expect("a network learned");
        assert_eq!(last.into, "connect tcp 52.216.8.0/23:443");
        let cover = |k: &str| g.cover(Dimension::Network, k, None);
        assert_eq!(
            cover("connect tcp 52.216.9.77:443").as_deref(),
            Some("connect tcp 52.216.8.0/23:443")
        );
        // Outside the network, another port, another protocol.
        assert_eq!(cover("connect tcp 52.216.10.1:443"), None);
        assert_eq!(cover("connect tcp 52.216.9.77:4444"), None);
        assert_eq!(cover("connect udp 52.216.9.77:443"), None);
    }

    #[test]
    fn a_few_destinations_stay_exact_and_private_never_joins_public() {
        let mut g = Generalisations::default();
        for a in ["10.96.20.15", "10.96.20.16", "10.96.20.17"] {
            let key = format!("connect tcp {a}:5432");
            assert_eq!(g.learn_network(&key), None);
        }
        // A /8 apart: no network within the bound covers both.
        let mut g = Generalisations::default();
        for a in ["10.1.0.1", "11.1.0.1", "10.2.0.1", "11.2.0.1"] {
            assert_eq!(g.learn_network(&format!("connect tcp {a}:443")), None);
        }
    }

    #[test]
    fn spread_over_a_whole_slash_16_is_the_widest_learned() {
        let mut g = Generalisations::default();
        let mut last = None;
        for a in ["10.244.1.5", "10.244.77.9", "10.244.200.3", "10.244.13.1"] {
            last = g.learn_network(&format!("connect tcp {a}:8080")).or(last);
        }
        assert_eq!(
            last.map(|m| m.into).as_deref(),
            Some("connect tcp 10.244.0.0/16:8080")
        );
        assert_eq!(
            g.learn_network("connect tcp 10.245.0.1:8080"),
            None,
            "a /15 is wider than the bound"
        );
    }

    #[test]
    fn rotating_named_endpoints_learn_their_first_label_below_their_parent() {
        let mut rng = Rng(11);
        let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut g = Generalisations::default();
        let mut merges = Vec::new();
        for _ in 0..5 {
            let key = format!(
                "connect tcp d{}.cdn.example.net:443",
                rng.word(alphabet, 13)
            );
            g.index(Dimension::Network, &key);
            merges.extend(g.learn_network(&key));
        }
        let learned = merges.last().expect("a shape is learned");
        // Few names cannot rule out `-`, which host names may hold; `_` they hold only
        // in service labels (`_sip._tcp`), so a label's alphabet has it only when seen.
        assert_eq!(
            learned.into,
            "connect tcp d<[a-z0-9-]{13}>.cdn.example.net:443"
        );
        assert!(learned.from.len() >= MIN_NAMES, "{learned:?}");
        let next = format!(
            "connect tcp d{}.cdn.example.net:443",
            rng.word(alphabet, 13)
        );
        assert_eq!(
            g.cover(Dimension::Network, &next, None).as_deref(),
            Some("connect tcp d<[a-z0-9-]{13}>.cdn.example.net:443")
        );
        // Another parent, port, protocol or shape, or a deeper name, is not covered.
        for other in [
            "connect tcp d0a1b2c3d4e5f6.cdn.example.org:443",
            "connect tcp d0a1b2c3d4e5f6.cdn.example.net:8443",
            "connect udp d0a1b2c3d4e5f6.cdn.example.net:443",
            "connect tcp exfil.cdn.example.net:443",
            "connect tcp x.d0a1b2c3d4e5f6.cdn.example.net:443",
        ] {
            assert_eq!(g.cover(Dimension::Network, other, None), None, "{other}");
        }
        // The learned key alone teaches the shape (a state or baseline file).
        let rebuilt = Generalisations::rebuild([(Dimension::Network, learned.into.as_str())]);
        assert!(rebuilt.cover(Dimension::Network, &next, None).is_some());
    }

    #[test]
    fn numbered_members_learn_a_digit_shape_and_a_registrable_domain_never_varies() {
        let mut g = Generalisations::default();
        let mut last = None;
        for i in 0..4 {
            last = g
                .learn_network(&format!(
                    "connect tcp kafka-{i}.kafka.shop.svc.cluster.local:9092"
                ))
                .or(last);
        }
        assert_eq!(
            last.map(|m| m.into).as_deref(),
            Some("connect tcp kafka-<[0-9]+>.kafka.shop.svc.cluster.local:9092")
        );
        // Names right below a public suffix name their owner: never a shape.
        let mut rng = Rng(5);
        for suffix in ["com", "co.uk"] {
            for _ in 0..8 {
                let key = format!(
                    "connect tcp {}.{suffix}:443",
                    rng.word(b"abcdefghijklmnopqrstuvwxyz", 12)
                );
                assert_eq!(g.learn_network(&key), None, "{key}");
            }
        }
    }

    #[test]
    fn named_destinations_learned_before_a_restart_are_kin_after_it() {
        let mut g = Generalisations::default();
        for key in [
            "connect tcp d3kq9zv2mx7tpa.cdn.example.net:443",
            "connect tcp dq7wn4hz0rb2ke.cdn.example.net:443",
        ] {
            g.index(Dimension::Network, key);
            assert_eq!(g.learn_network(key), None);
        }
        let samples = g.samples();
        let json = serde_json::to_string(&samples).unwrap();
        let mut restored = Generalisations::rebuild([]);
        restored.restore(serde_json::from_str(&json).unwrap());
        let kin = restored
            .kin_network("connect tcp d8m2xj5tq0wcnv.cdn.example.net:443")
            .expect("kin after the restart");
        assert_eq!(kin.anchors.len(), 2, "{kin:?}");
        assert_eq!(kin.key, None);
    }
}
