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
//!
//! Learned generalisations are ordinary baseline entries whose keys carry the pattern
//! (`write /tmp/tmp<[a-z0-9_]{8}>`, `connect tcp 52.216.8.0/23:443`). The indexes here
//! are rebuilt from those keys, so a state file or a baseline file carries them, and an
//! analyst can write one by hand. Nothing here runs for known behaviour: a path or an
//! address is generalised only when its exact key misses the baseline.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use crate::pattern::fold;

/// Distinct names of one shape a directory must hold before the shape is learned:
/// three could be a coincidence of a service's own file names, four of one length with
/// random-looking middles are a generator.
pub const MIN_NAMES: usize = 4;

/// The shortest varying part taken for random: shorter ones (`app1`, `ab`) are as likely
/// to be names someone chose.
pub const MIN_RANDOM_LEN: usize = 5;

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

/// The shortest prefix a learned network may have: a /16 of IPv4 (a provider's region
/// block), a /48 of IPv6 (one site).
const IPV4_BOUND: u8 = 16;
const IPV6_BOUND: u8 = 48;

/// The prefix a learned network starts at: one /24 of IPv4, one /64 of IPv6.
const IPV4_START: u8 = 24;
const IPV6_START: u8 = 64;

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

/// Character classes of a name's varying part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Classes(u8);

const UPPER: u8 = 1;
/// `a`–`f` only: hex names stay hex.
const HEX: u8 = 2;
/// `g`–`z` (with `a`–`f`: all lower-case letters).
const LOWER: u8 = 4;
const DIGIT: u8 = 8;
const UNDERSCORE: u8 = 16;
const DASH: u8 = 32;

impl Classes {
    fn of(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(UPPER),
            b'a'..=b'f' => Some(HEX),
            b'g'..=b'z' => Some(LOWER),
            b'0'..=b'9' => Some(DIGIT),
            b'_' => Some(UNDERSCORE),
            b'-' => Some(DASH),
            _ => None,
        }
    }

    fn admits(self, c: u8) -> bool {
        match Classes::of(c) {
            Some(HEX) => self.0 & (HEX | LOWER) != 0,
            Some(k) => self.0 & k != 0,
            None => false,
        }
    }

    /// Letters seen beyond `f` make the class all lower-case letters.
    fn normalised(self) -> Classes {
        if self.0 & LOWER != 0 {
            Classes(self.0 | HEX)
        } else {
            self
        }
    }

    fn size(self) -> f64 {
        let mut n = 0.0;
        if self.0 & UPPER != 0 {
            n += 26.0;
        }
        if self.0 & LOWER != 0 {
            n += 26.0;
        } else if self.0 & HEX != 0 {
            n += 6.0;
        }
        if self.0 & DIGIT != 0 {
            n += 10.0;
        }
        if self.0 & UNDERSCORE != 0 {
            n += 1.0;
        }
        if self.0 & DASH != 0 {
            n += 1.0;
        }
        n
    }

    fn render(self) -> String {
        let mut s = String::new();
        if self.0 & UPPER != 0 {
            s.push_str("A-Z");
        }
        if self.0 & LOWER != 0 {
            s.push_str("a-z");
        } else if self.0 & HEX != 0 {
            s.push_str("a-f");
        }
        if self.0 & DIGIT != 0 {
            s.push_str("0-9");
        }
        if self.0 & UNDERSCORE != 0 {
            s.push('_');
        }
        if self.0 & DASH != 0 {
            s.push('-');
        }
        s
    }

    fn parse(s: &str) -> Option<Classes> {
        let mut c = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let (class, len) = if rest.starts_with("A-Z") {
                (UPPER, 3)
            } else if rest.starts_with("a-z") {
                (LOWER | HEX, 3)
            } else if rest.starts_with("a-f") {
                (HEX, 3)
            } else if rest.starts_with("0-9") {
                (DIGIT, 3)
            } else if rest.starts_with('_') {
                (UNDERSCORE, 1)
            } else if rest.starts_with('-') {
                (DASH, 1)
            } else {
                return None;
            };
            c |= class;
            rest = &rest[len..];
        }
        (c != 0).then_some(Classes(c))
    }
}

/// What varies in a learned name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Body {
    /// Exactly `len` characters of `classes`.
    Random { len: usize, classes: Classes },
    /// One run of digits, of any length.
    Digits,
}

/// A learned shape of the names in one directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameShape {
    prefix: String,
    suffix: String,
    body: Body,
}

impl NameShape {
    pub fn matches(&self, name: &str) -> bool {
        let Some(middle) = name
            .strip_prefix(self.prefix.as_str())
            .and_then(|m| m.strip_suffix(self.suffix.as_str()))
        else {
            return false;
        };
        match &self.body {
            Body::Random { len, classes } => {
                middle.len() == *len && middle.bytes().all(|c| classes.admits(c))
            }
            Body::Digits => !middle.is_empty() && middle.bytes().all(|c| c.is_ascii_digit()),
        }
    }

    /// The component as a baseline key writes it: `tmp<[a-z0-9_]{8}>`.
    pub fn render(&self) -> String {
        let token = match &self.body {
            Body::Random { len, classes } => format!("<[{}]{{{len}}}>", classes.render()),
            Body::Digits => "<[0-9]+>".to_owned(),
        };
        format!("{}{token}{}", self.prefix, self.suffix)
    }

    /// The shape a rendered component names, if it names one.
    pub fn parse(component: &str) -> Option<NameShape> {
        let start = component.find("<[")?;
        let close = start + component[start..].find("]")?;
        let end = close + component[close..].find('>')?;
        let (prefix, suffix) = (&component[..start], &component[end + 1..]);
        let class = &component[start + 2..close];
        let quantity = &component[close + 1..end];
        let body = if class == "0-9" && quantity == "+" {
            Body::Digits
        } else {
            let len = quantity
                .strip_prefix('{')?
                .strip_suffix('}')?
                .parse()
                .ok()?;
            Body::Random {
                len,
                classes: Classes::parse(class)?,
            }
        };
        Some(NameShape {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
            body,
        })
    }

    /// Whether `other` says the same with a wider alphabet (a later sample showed more
    /// of the generator's characters).
    fn widens(&self, other: &NameShape) -> bool {
        match (&self.body, &other.body) {
            (Body::Random { len: a, classes: x }, Body::Random { len: b, classes: y }) => {
                a == b
                    && self.prefix == other.prefix
                    && self.suffix == other.suffix
                    && (x.0 | y.0) == y.0
                    && x != y
            }
            _ => false,
        }
    }
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

fn common_suffix(a: &str, b: &str) -> usize {
    a.chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum()
}

/// Whether the varying parts of several names look drawn at random from their
/// alphabet: their characters spread nearly evenly over it (Miller–Madow corrected
/// entropy at least 80% of the alphabet's), and letters are not word-like (at most 30%
/// vowels where letters beyond hex appear; words run near 40%, random letters 19%).
fn looks_random(middles: &[&str], classes: Classes) -> bool {
    let mut counts = [0u32; 128];
    let mut n = 0u32;
    for m in middles {
        for c in m.bytes() {
            counts[usize::from(c & 0x7f)] += 1;
            n += 1;
        }
    }
    if n == 0 {
        return false;
    }
    let total = f64::from(n);
    let observed = counts.iter().filter(|&&c| c > 0).count() as f64;
    let plug_in: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / total;
            -p * p.log2()
        })
        .sum();
    let entropy = plug_in + (observed - 1.0) / (2.0 * total * std::f64::consts::LN_2);
    let alphabet = classes.size();
    if alphabet < 2.0 || entropy < 0.8 * alphabet.log2() {
        return false;
    }
    if classes.0 & (LOWER | UPPER) != 0 {
        let letters: u32 = counts
            .iter()
            .enumerate()
            .filter(|(c, _)| (*c as u8).is_ascii_alphabetic())
            .map(|(_, n)| n)
            .sum();
        let vowels: u32 = b"aeiouAEIOU".iter().map(|c| counts[usize::from(*c)]).sum();
        if letters > 0 && f64::from(vowels) > 0.3 * f64::from(letters) {
            return false;
        }
    }
    true
}

/// The classes a generator may draw from beyond those seen: a class whose absence from
/// `chars` characters is not yet significant (at least a 1% chance of not showing if the
/// generator drew from it) is admitted. A Python `tempfile` name holds `_` one time in
/// five, so a few names without one say nothing; 30 characters without an upper-case
/// letter say the generator has none.
fn unruled_out(seen: Classes, chars: usize) -> Classes {
    let mut classes = seen;
    for candidate in [UPPER, LOWER | HEX, DIGIT, UNDERSCORE, DASH] {
        if seen.0 & candidate == candidate {
            continue;
        }
        let widened = Classes(seen.0 | candidate).size();
        let extra = widened - seen.size();
        let unseen = (1.0 - extra / widened).powi(i32::try_from(chars).unwrap_or(i32::MAX));
        if unseen >= 0.01 {
            classes.0 |= candidate;
        }
    }
    classes
}

/// Whether every position of the varying parts varies as a generator's would: at least
/// three quarters of the distinct characters `n` uniform draws from the alphabet give
/// (`A·(1 − (1 − 1/A)ⁿ)`).
/// Names of two generators that happen to share a length (`upload-1234`, `tmpk2m9zq_x`)
/// keep their fixed parts in place and fail it.
fn varies_everywhere(middles: &[&str], classes: Classes) -> bool {
    let Some(len) = middles.first().map(|m| m.len()) else {
        return false;
    };
    let alphabet = classes.size();
    let draws = i32::try_from(middles.len()).unwrap_or(i32::MAX);
    let need = 0.75 * alphabet * (1.0 - (1.0 - 1.0 / alphabet).powi(draws));
    (0..len).all(|j| {
        let mut seen = [false; 128];
        for m in middles {
            seen[usize::from(m.as_bytes()[j] & 0x7f)] = true;
        }
        seen.iter().filter(|&&b| b).count() as f64 >= need
    })
}

/// A random shape shared by `new` and enough of `names` (which include it).
fn random_shape(names: &VecDeque<String>, new: &str) -> Option<NameShape> {
    let same: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| n.len() == new.len())
        .collect();
    if same.len() < MIN_NAMES {
        return None;
    }
    // The most specific (prefix, suffix) around `new` that enough names share.
    let mut cuts: Vec<(usize, usize)> = same
        .iter()
        .filter(|n| **n != new)
        .map(|n| (common_prefix(n, new), common_suffix(n, new)))
        .collect();
    cuts.sort_unstable_by_key(|(p, s)| std::cmp::Reverse(p + s));
    cuts.dedup();
    for (p, s) in cuts {
        if new.len() < p + s + MIN_RANDOM_LEN {
            continue;
        }
        let group: Vec<&str> = same
            .iter()
            .copied()
            .filter(|n| common_prefix(n, new) >= p && common_suffix(n, new) >= s)
            .collect();
        if group.len() < MIN_NAMES {
            continue;
        }
        // The group's own common prefix and suffix, so that the pattern is exact.
        let prefix = group.iter().map(|n| common_prefix(n, new)).min()?;
        let suffix = group.iter().map(|n| common_suffix(n, new)).min()?;
        let (prefix, suffix) = if new.len() < prefix + suffix + MIN_RANDOM_LEN {
            (p, s)
        } else {
            (prefix, suffix)
        };
        if !new.is_char_boundary(prefix) || !new.is_char_boundary(new.len() - suffix) {
            continue;
        }
        let middles: Vec<&str> = group.iter().map(|n| &n[prefix..n.len() - suffix]).collect();
        let mut classes = 0u8;
        let mut valid = true;
        for m in &middles {
            for c in m.bytes() {
                match Classes::of(c) {
                    Some(k) => classes |= k,
                    None => valid = false,
                }
            }
        }
        // A varying part of digits alone is a number, whatever its length: a digit shape.
        if classes == DIGIT {
            return None;
        }
        let classes = Classes(classes).normalised();
        if !valid || !varies_everywhere(&middles, classes) || !looks_random(&middles, classes) {
            continue;
        }
        let chars: usize = middles.iter().map(|m| m.len()).sum();
        let classes = unruled_out(classes, chars);
        // Names that fixed folding reliably makes one pattern (`<hex>`, `<n>`, `<uuid>`)
        // need nothing learned; `<id>` is a guess that misses a generator's names
        // without digits, so a shape is learned over it.
        let folded = fold(new);
        if !folded.contains("<id>") && group.iter().all(|n| fold(n) == folded) {
            return None;
        }
        return Some(NameShape {
            prefix: new[..prefix].to_owned(),
            suffix: new[new.len() - suffix..].to_owned(),
            body: Body::Random {
                len: new.len() - prefix - suffix,
                classes,
            },
        });
    }
    None
}

/// `new` with each run of digits as `#`.
fn digit_skeleton(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !in_run {
                out.push('#');
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// The digit runs of a name, as byte ranges.
fn digit_runs(name: &str) -> Vec<(usize, usize)> {
    let b = name.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

/// A shape whose one varying part is a run of digits (`go-build<[0-9]+>`), shared by
/// `new` and enough of `names`.
fn digit_shape(names: &VecDeque<String>, new: &str) -> Option<NameShape> {
    let skeleton = digit_skeleton(new);
    if !skeleton.contains('#') {
        return None;
    }
    let group: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| digit_skeleton(n) == skeleton)
        .collect();
    if group.len() < MIN_NAMES || group.iter().all(|n| fold(n) == fold(new)) {
        return None;
    }
    let runs: Vec<Vec<&str>> = group
        .iter()
        .map(|n| digit_runs(n).iter().map(|&(a, b)| &n[a..b]).collect())
        .collect();
    let own = digit_runs(new);
    let varying: Vec<usize> = (0..own.len())
        .filter(|&i| runs.iter().any(|r| r[i] != runs[0][i]))
        .collect();
    let [i] = varying.as_slice() else {
        return None;
    };
    let (a, b) = own[*i];
    Some(NameShape {
        prefix: new[..a].to_owned(),
        suffix: new[b..].to_owned(),
        body: Body::Digits,
    })
}

/// One network a port's destinations fall in: an address with its prefix length (an
/// exact address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    pub base: IpAddr,
    pub prefix: u8,
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4((u32::from(v4) & m).into())
        }
        IpAddr::V6(v6) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6((u128::from(v6) & m).into())
        }
    }
}

fn bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

impl Net {
    fn full(addr: IpAddr) -> Net {
        Net {
            base: addr,
            prefix: bits(addr).1,
        }
    }

    /// `52.216.8.0/23`, `10.0.0.1`, `2001:db8::/64`.
    pub fn parse(s: &str) -> Option<Net> {
        match s.split_once('/') {
            Some((a, p)) => {
                let base: IpAddr = a.parse().ok()?;
                let prefix: u8 = p.parse().ok()?;
                (prefix <= bits(base).1).then_some(Net {
                    base: mask(base, prefix),
                    prefix,
                })
            }
            None => s.parse().ok().map(Net::full),
        }
    }

    fn is_exact(self) -> bool {
        self.prefix == bits(self.base).1
    }

    fn contains(self, other: Net) -> bool {
        self.base.is_ipv4() == other.base.is_ipv4()
            && other.prefix >= self.prefix
            && mask(other.base, self.prefix) == self.base
    }

    fn bound(self) -> u8 {
        if self.base.is_ipv4() {
            IPV4_BOUND
        } else {
            IPV6_BOUND
        }
    }

    fn start(self) -> u8 {
        if self.base.is_ipv4() {
            IPV4_START
        } else {
            IPV6_START
        }
    }

    fn is_public(self) -> bool {
        crate::observe::is_public(&self.base.to_string())
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_exact() {
            write!(f, "{}", self.base)
        } else {
            write!(f, "{}/{}", self.base, self.prefix)
        }
    }
}

/// The common prefix length of two addresses of one family.
fn common_bits(a: IpAddr, b: IpAddr) -> u8 {
    let ((x, width), (y, _)) = (bits(a), bits(b));
    let shift = 128 - u32::from(width);
    let diff = (x << shift) ^ (y << shift);
    (diff.leading_zeros().min(u32::from(width))) as u8
}

/// A network key's parts: `connect tcp 52.216.8.0/23:443` → (`connect tcp`, net, `443`).
pub fn split_network_key(key: &str) -> Option<(&str, Net, &str)> {
    let (rest, port) = key.rsplit_once(':')?;
    let (head, dest) = rest.rsplit_once(' ')?;
    Some((head, Net::parse(dest)?, port))
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
            Dimension::File => {
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
                }
            }
            _ => {}
        }
    }

    fn add_shape(&mut self, dir: String, shape: NameShape) {
        if never_generalised(&dir) {
            return;
        }
        let shapes = self.shapes.entry(dir).or_default();
        if let Some(narrower) = shapes.iter_mut().find(|s| s.widens(&shape)) {
            *narrower = shape;
        } else if !shapes.contains(&shape) {
            shapes.push(shape);
        }
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
                let (head, net, port) = split_network_key(key)?;
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
        for (i, (r, g)) in raw_parts.iter().zip(&general_parts).enumerate() {
            if i > 1 {
                let dir = &general[..dir_end - 1];
                let covered = self
                    .shapes
                    .get(dir)
                    .is_some_and(|s| s.iter().any(|s| s.matches(r)));
                if !covered && !never_generalised(dir) {
                    learned |= self.sample(dir, r, widen);
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
    fn sample(&mut self, dir: &str, name: &str, widen: bool) -> bool {
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
        let Some(shape) = random_shape(names, name).or_else(|| digit_shape(names, name)) else {
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
        let (head, net, port) = split_network_key(key)?;
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
        let mut prefix = net.start().min(net.prefix);
        for m in &members {
            prefix = prefix.min(m.prefix).min(common_bits(m.base, net.base));
        }
        let prefix = prefix.max(net.bound());
        let learned = Net {
            base: mask(net.base, prefix),
            prefix,
        };
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

    /// Forgets the samples taken while learning (the learned shapes and networks stay).
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
}
