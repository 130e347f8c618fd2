//! Name shapes: what a directory's generated names have in common (length, fixed prefix
//! and suffix, a varying part drawn from an alphabet, or a varying run of digits), and
//! the tests that tell a generator's names from names someone chose.

use crate::pattern::fold;

/// Distinct names of one shape a directory must hold before the shape is learned:
/// three could be a coincidence of a service's own file names, four of one length with
/// random-looking middles are a generator.
pub const MIN_NAMES: usize = 4;

/// The longest name of a fan-out level (`ab` in npm's `_cacache/…/ab/cd/…`, `a` in
/// pip's `http-v2/a/b/c/…`, git's two-character object directories).
pub const FAN_OUT_LEN: usize = 3;

/// The shortest varying part taken for random: shorter ones (`app1`, `ab`) are as likely
/// to be names someone chose.
pub const MIN_RANDOM_LEN: usize = 5;

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
    pub(super) fn widens(&self, other: &NameShape) -> bool {
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
/// (`A·(1 − (1 − 1/A)ⁿ)`), or all but one of the draws where that is fewer (three draws
/// from a large alphabet give three distinct characters only four times in five, two
/// almost always).
/// Names of two generators that happen to share a length (`upload-1234`, `tmpk2m9zq_x`)
/// keep their fixed parts in place and fail it.
fn varies_everywhere(middles: &[&str], classes: Classes) -> bool {
    let Some(len) = middles.first().map(|m| m.len()) else {
        return false;
    };
    let alphabet = classes.size();
    let draws = i32::try_from(middles.len()).unwrap_or(i32::MAX);
    let need = (0.75 * alphabet * (1.0 - (1.0 - 1.0 / alphabet).powi(draws)))
        .min(f64::from(draws - 1));
    (0..len).all(|j| {
        let mut seen = [false; 128];
        for m in middles {
            seen[usize::from(m.as_bytes()[j] & 0x7f)] = true;
        }
        seen.iter().filter(|&&b| b).count() as f64 >= need
    })
}

/// A random shape shared by `new` and at least `min` of `names` (which include it).
pub(super) fn random_shape<'a>(
    names: impl IntoIterator<Item = &'a str>,
    new: &str,
    min: usize,
) -> Option<NameShape> {
    let same: Vec<&str> = names.into_iter().filter(|n| n.len() == new.len()).collect();
    if same.len() < min {
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
        if group.len() < min {
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
pub(super) fn digit_shape<'a>(
    names: impl IntoIterator<Item = &'a str>,
    new: &str,
    min: usize,
) -> Option<NameShape> {
    let skeleton = digit_skeleton(new);
    if !skeleton.contains('#') {
        return None;
    }
    let group: Vec<&str> = names
        .into_iter()
        .filter(|n| digit_skeleton(n) == skeleton)
        .collect();
    if group.len() < min || group.iter().all(|n| fold(n) == fold(new)) {
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

/// A fan-out level (`<[a-f0-9]{2}>`): directories of one length of at most
/// [`FAN_OUT_LEN`] hex characters, at least `min` distinct, digits and letters both
/// among them. Too short to look random, they are told from names someone chose by
/// being directories, many, and all hex.
pub(super) fn fan_out_shape<'a>(
    names: impl IntoIterator<Item = &'a str>,
    new: &str,
    min: usize,
) -> Option<NameShape> {
    let hex = |n: &str| n.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if new.is_empty() || new.len() > FAN_OUT_LEN || !hex(new) {
        return None;
    }
    let group: Vec<&str> = names
        .into_iter()
        .filter(|n| n.len() == new.len() && hex(n))
        .collect();
    let digits = group.iter().any(|n| n.bytes().any(|c| c.is_ascii_digit()));
    let letters = group.iter().any(|n| n.bytes().any(|c| c.is_ascii_alphabetic()));
    (group.len() >= min.max(MIN_NAMES) && digits && letters).then(|| NameShape {
        prefix: String::new(),
        suffix: String::new(),
        body: Body::Random {
            len: new.len(),
            classes: Classes(HEX | DIGIT),
        },
    })
}

/// The shape `new` shares with at least `min` of `names` (which include it): random,
/// a run of digits, or, for a directory, a fan-out level.
pub(super) fn shape_of(names: &[&str], new: &str, min: usize, dir: bool) -> Option<NameShape> {
    let all = || names.iter().copied();
    random_shape(all(), new, min)
        .or_else(|| digit_shape(all(), new, min))
        .or_else(|| dir.then(|| fan_out_shape(all(), new, min)).flatten())
}
