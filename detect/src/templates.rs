//! An online log-template miner in the style of Drain (He et al., ICWS 2017): a
//! fixed-depth tree routes each line by its token count and first two tokens to a few
//! candidate templates; the most similar one absorbs the line (positions that differ
//! become `<*>`), or the line starts a new template.
//!
//! One configuration serves every service; nobody writes per-format regexes:
//! - A token that carries a digit, and an absolute path, is a parameter before routing
//!   (`blk_-69522958`, `10.0.0.7:8080`, `1.8.2`, `/var/vm/image`), and `key=value`
//!   keeps its key (`uid=0` becomes
//!   `uid=<*>`), so `setTotalSteps=12` and `setDiffSteps=3` stay apart. This is the
//!   masking Drain's users tune with regexes, done with one scan of the token.
//! - A number followed by a unit of time or size is one parameter (`384.0 B,`,
//!   `12.4 KB,`; `<1 sec`, `00:02`): the same message prints its quantities with more
//!   or fewer words, and a line's token count must not depend on it.
//! - A name with a one-digit suffix (`SOCKS5`, `ssh2`, `IPV6`, `en0`) is a word, not a
//!   parameter: protocols, versions and interfaces tell messages apart.
//! - A word that lines up with a parameter only because a parameter moved it one place
//!   (`7 bytes sent, 901 bytes (0.9 KB) received` against `901 bytes (0.9 KB) sent, 7
//!   bytes received`) is evidence of two messages, as two different words are.
//! - Two different words at one position are evidence of two messages (`Link Up` /
//!   `Link Down`, `client SPP.` / `client WindowsUpdateAgent.`): a line that differs from
//!   a template by words only starts a *variant* of it. When a template has collected
//!   `merge-after-variants` variants, the varying word is a parameter after all (user
//!   names, job names) and the family merges into one template whose old ids resolve
//!   to it. Drain instead merges at the first such line, and a single rare message then
//!   swallows the frequent one it resembles.
//! - A word that varies in two families is an entity that several messages name (a
//!   user opens and closes sessions; a state such as `VM Paused` belongs to one
//!   message): both families merge at once.
//! - Growth is bounded: a leaf holds at most `max-per-leaf` templates (past it a line
//!   joins its most similar template), and a miner at most `max-templates`; past that,
//!   lines count against one overflow template and [`Added::overflowed`] says so once.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// The parameter placeholder in template text.
pub const WILDCARD: &str = "<*>";

/// The text of the template that counts lines past the template cap.
pub const OVERFLOW_TEXT: &str = "<template cap reached: line not mined>";

/// Miner settings: one default for every service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct MinerConfig {
    /// A line joins a template when at least this share of its tokens match (a
    /// parameter where the template has `<*>` matches).
    pub similarity: f64,
    /// Templates kept per tree leaf (token count, first two tokens).
    pub max_per_leaf: usize,
    /// Word variants of one template that make the varying words parameters.
    pub merge_after_variants: usize,
    /// Live templates per miner (per service); past it lines count as overflow.
    pub max_templates: usize,
}

impl Default for MinerConfig {
    fn default() -> Self {
        MinerConfig {
            // 0.7: the best single value over the eight LogHub samples (0.5 and 0.6
            // merge distinct messages, 0.75 and up split Linux's).
            similarity: 0.7,
            // Holds every template the LogHub samples have per leaf several times over.
            max_per_leaf: 64,
            // LogHub's ground truth keeps up to a handful of word variants apart
            // (interface states, lifecycle verbs); more than that is a parameter.
            // Average GA on the eight samples: 3 gives 0.944, 6 0.953, no count at all
            // (words recurring in two families only) 0.895; `cargo bench --bench
            // loghub` picks 6 on every leave-one-dataset-out split.
            merge_after_variants: 6,
            // Far above the few hundred templates a busy service logs (Mac's sample,
            // the most varied in LogHub, has 341 in 2,000 lines).
            max_templates: 2000,
        }
    }
}

/// One learned template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// Stable for the life of the miner (and across snapshots): assigned in order of
    /// first appearance. A template merged into another keeps its id, which resolves.
    pub id: u32,
    pub tokens: Vec<String>,
    pub count: u64,
    /// The template this one is a word variant of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_of: Option<u32>,
    /// Variants collected since the last merge (roots only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub variants: u32,
    /// Set once this template was merged into another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<u32>,
    /// The template that counts lines past the cap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overflow: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Template {
    pub fn text(&self) -> String {
        self.tokens.join(" ")
    }
}

/// What [`Miner::add`] did with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// The template the line belongs to now.
    pub id: u32,
    /// The line started a template (a variant counts).
    pub created: bool,
    /// The line was the first to hit the template cap.
    pub overflowed: bool,
}

/// Leaf keys are already hashes: the map uses them as they are.
#[derive(Default)]
struct RouteHasher(u64);

impl Hasher for RouteHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A token as templates hold it: words as they are, parameters as `<*>`, `key=value`
/// parameters as `key=<*>`. Its text is never built for a line; templates keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Param,
    /// `key=<*>`; the key is held with its `=`.
    KeyParam(&'a str),
}

/// Token text in (at most) two pieces, so a line's tokens and a template's strings
/// hash and compare alike without building strings.
trait Pieces {
    fn pieces(&self) -> (&str, &str);
}

impl Pieces for String {
    fn pieces(&self) -> (&str, &str) {
        (self, "")
    }
}

impl Pieces for Token<'_> {
    fn pieces(&self) -> (&str, &str) {
        match *self {
            Token::Word(w) => (w, ""),
            Token::Param => (WILDCARD, ""),
            Token::KeyParam(k) => (k, WILDCARD),
        }
    }
}

/// The leaf of a line: a hash of its token count and first two tokens (`<*>` for a
/// parameter). Within a leaf those never change, so a template's leaf follows from its
/// tokens; a collision only puts two leaves' templates side by side, and `compare`
/// checks every token anyway.
fn route<T: Pieces>(tokens: &[T]) -> u64 {
    // The alerts' stable hash (FNV-1a with a separator after each part) of the two
    // tokens, with the length folded in.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for i in 0..2 {
        let (a, b) = tokens.get(i).map_or(("", ""), Pieces::pieces);
        for byte in a.bytes().chain(b.bytes()).chain(std::iter::once(0xff)) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^ (tokens.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The miner for one service.
#[derive(Debug, Default, Clone)]
pub struct Miner {
    config: MinerConfig,
    templates: Vec<Template>,
    leaves: HashMap<u64, Vec<u32>, BuildHasherDefault<RouteHasher>>,
    live: usize,
    overflow: Option<u32>,
    /// Every word that told a variant from its family's root, with that family (the
    /// first to show it).
    varied: HashMap<String, u32>,
}

/// The snapshot form of a miner: its templates in id order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MinerSnapshot {
    pub templates: Vec<Template>,
    /// The words variants varied in, with their family, sorted (state files written
    /// before these were kept have none: families merge by count until words recur).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub varied: Vec<(String, u32)>,
}

/// Masks a token in one scan: a token with a digit, or an absolute path of two or
/// more segments (`/var/log/app.log`; `/` alone or `and/or` is not), is a parameter,
/// and a `key=value` parameter keeps its key unless the key has a digit itself. A
/// name with a one-digit suffix is a word ([`numbered_name`]).
fn mask(token: &str) -> Token<'_> {
    let bytes = token.as_bytes();
    let mut digit_at = None;
    let mut eq_at = None;
    let mut slashes = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_digit() {
            if digit_at.is_none() {
                digit_at = Some(i);
            }
        } else if b == b'=' {
            if eq_at.is_none() {
                eq_at = Some(i);
            }
        } else if b == b'/' {
            slashes += 1;
        }
    }
    let path = bytes.first() == Some(&b'/') && slashes >= 2;
    if (digit_at.is_none() && !path) || (digit_at == Some(bytes.len() - 1) && numbered_name(bytes))
    {
        return Token::Word(token);
    }
    match eq_at {
        Some(p) if p > 0 && digit_at.is_none_or(|d| d > p) => Token::KeyParam(&token[..=p]),
        _ => Token::Param,
    }
}

/// Letters with one digit at the end: `SOCKS5`, `ssh2`, `IPV6`, `en0`, `awdl0`.
/// Such names are protocols, versions and interfaces, and tell messages apart
/// (`open through proxy … HTTPS` and `… SOCKS5`); identifiers that vary carry more
/// digits (`blk_38865`, `bglio11`, `R02-M1-N0`), or separators, and stay parameters.
fn numbered_name(bytes: &[u8]) -> bool {
    let [head @ .., last] = bytes else {
        return false;
    };
    last.is_ascii_digit() && head.len() >= 2 && head.iter().all(u8::is_ascii_alphabetic)
}

/// A unit word, with the punctuation that closes its phrase (`KB)`, `sec,`) and a
/// rate's `/s` allowed (`Mb/s`). Units are of time and size: a quantity written with a
/// unit is one parameter (`384.0 B,` and `1.2 KB,`; `<1 sec` and `00:02`), so a line's
/// length does not depend on how its value was printed.
fn is_unit(token: &str) -> bool {
    let word = token.trim_end_matches([',', ';', ':', '.', ')', ']', '}']);
    let word = word
        .strip_suffix("/s")
        .or_else(|| word.strip_suffix("/sec"))
        .unwrap_or(word);
    // Called for every word after a number: one lower-casing copy and one match.
    let mut lower = [0u8; 12];
    let Some(lower) = lower.get_mut(..word.len()) else {
        return false;
    };
    for (l, b) in lower.iter_mut().zip(word.bytes()) {
        *l = b.to_ascii_lowercase();
    }
    matches!(
        &*lower,
        b"ns"
            | b"us"
            | b"\xc2\xb5s"
            | b"ms"
            | b"msec"
            | b"msecs"
            | b"millis"
            | b"milliseconds"
            | b"s"
            | b"sec"
            | b"secs"
            | b"second"
            | b"seconds"
            | b"m"
            | b"min"
            | b"mins"
            | b"minute"
            | b"minutes"
            | b"h"
            | b"hr"
            | b"hrs"
            | b"hour"
            | b"hours"
            | b"d"
            | b"day"
            | b"days"
            | b"b"
            | b"byte"
            | b"bytes"
            | b"k"
            | b"kb"
            | b"kib"
            | b"mb"
            | b"mib"
            | b"gb"
            | b"gib"
            | b"tb"
            | b"tib"
    )
}

/// A number as printed, possibly after an opening bracket, sign or comparison
/// (`384.0`, `(1.16`, `<1`, `-5`, `00:02`).
fn is_number(token: &str) -> bool {
    token
        .trim_start_matches(['(', '[', '{', '<', '>', '~', '+', '-', '='])
        .starts_with(|c: char| c.is_ascii_digit())
}

/// Masks every token of a line; a number and the unit word after it are one
/// parameter.
fn tokenise<'a>(words: impl Iterator<Item = &'a str>, tokens: &mut SmallVec<[Token<'a>; 32]>) {
    let mut after_number = false;
    for word in words {
        if after_number && is_unit(word) {
            after_number = false;
            continue;
        }
        let token = mask(word);
        after_number = match token {
            Token::Param => is_number(word),
            Token::KeyParam(k) => is_number(&word[k.len()..]),
            Token::Word(_) => false,
        };
        tokens.push(token);
    }
}

/// The key of a `key=value` token, with its `=`.
fn key(token: &str) -> Option<&str> {
    match token.find('=') {
        Some(p) if p > 0 => Some(&token[..=p]),
        _ => None,
    }
}

/// The key a line's token shows: `key=<*>` keeps it, a word may hold one.
fn token_key<'a>(token: &Token<'a>) -> Option<&'a str> {
    match *token {
        Token::Word(w) => key(w),
        Token::Param => None,
        Token::KeyParam(k) => Some(k),
    }
}

/// A template token equals a line token.
fn same_text(a: &str, b: &Token<'_>) -> bool {
    match *b {
        Token::Word(w) => a == w,
        Token::Param => a == WILDCARD,
        Token::KeyParam(k) => {
            a.len() == k.len() + WILDCARD.len() && a.starts_with(k) && a.ends_with(WILDCARD)
        }
    }
}

fn is_parameter(token: &Token<'_>) -> bool {
    match *token {
        Token::Word(w) => w.ends_with(WILDCARD),
        Token::Param | Token::KeyParam(_) => true,
    }
}

/// How a line compares with a template of the same length.
#[derive(Debug, Clone, Copy)]
struct Comparison {
    score: f64,
    wildcards: usize,
    /// Positions where both hold a different word.
    word_mismatches: usize,
}

fn compare(template: &[String], line: &[Token<'_>]) -> Comparison {
    let (mut same, mut wildcards, mut word_mismatches) = (0usize, 0usize, 0usize);
    for (i, (a, b)) in template.iter().zip(line).enumerate() {
        if same_text(a, b) {
            same += 1;
            wildcards += usize::from(a == WILDCARD);
        } else if a == WILDCARD {
            wildcards += 1;
            if is_parameter(b) {
                // A parameter where the template has one is agreement, not noise.
                same += 1;
            } else if moved(template, line, i, |t, l| {
                same_text(t, b) && !same_text(t, l)
            }) {
                word_mismatches += 1;
            }
        } else if key(a).is_some_and(|k| token_key(b) == Some(k)) {
            // `rhost=<*>` and `rhost=example.org`: the same key, another value.
            same += 1;
        } else if b.pieces() != (WILDCARD, "")
            || moved(template, line, i, |t, l| {
                same_text(a, l) && !same_text(t, l)
            })
        {
            word_mismatches += 1;
        }
    }
    let score = if line.is_empty() {
        1.0
    } else {
        same as f64 / line.len() as f64
    };
    Comparison {
        score,
        wildcards,
        word_mismatches,
    }
}

/// The word that one side holds at `i`, where the other side holds a parameter, stands
/// next door on the other side only (`moved_to` is asked of both sides at `i - 1` and
/// at `i + 1`): the two line up only because a parameter moved the word
/// (`7 bytes sent, 901 bytes (0.9 KB) received` against `901 bytes (0.9 KB) sent, 7
/// bytes received`). That is a different message, not a word that varies. A word that
/// both sides hold next door is not moved (`invalid user <*>` and `invalid user user`).
fn moved(
    template: &[String],
    line: &[Token<'_>],
    i: usize,
    moved_to: impl Fn(&String, &Token<'_>) -> bool,
) -> bool {
    let at =
        |j: usize| matches!((template.get(j), line.get(j)), (Some(t), Some(l)) if moved_to(t, l));
    i.checked_sub(1).is_some_and(at) || at(i + 1)
}

fn generalise(template: &mut [String], other: &[String]) {
    for (a, b) in template.iter_mut().zip(other) {
        if a != b && a != WILDCARD {
            *a = match key(a) {
                Some(k) if key(b) == Some(k) => format!("{k}{WILDCARD}"),
                _ => WILDCARD.to_owned(),
            };
        }
    }
}

impl Miner {
    pub fn new(config: MinerConfig) -> Self {
        Miner {
            config,
            ..Miner::default()
        }
    }

    pub fn config(&self) -> &MinerConfig {
        &self.config
    }

    /// Every template ever made, merged ones included, in id order.
    pub fn all_templates(&self) -> &[Template] {
        &self.templates
    }

    /// The templates lines resolve to (merged ones left out).
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        self.templates.iter().filter(|t| t.merged_into.is_none())
    }

    /// Live templates, the overflow template included.
    pub fn len(&self) -> usize {
        self.live + usize::from(self.overflow.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The id a (possibly merged) template id resolves to now.
    pub fn resolve(&self, mut id: u32) -> u32 {
        while let Some(next) = self.templates.get(id as usize).and_then(|t| t.merged_into) {
            id = next;
        }
        id
    }

    /// The template an id resolves to.
    pub fn template(&self, id: u32) -> Option<&Template> {
        self.templates.get(self.resolve(id) as usize)
    }

    /// Adds a line; says which template it belongs to now.
    pub fn add(&mut self, line: &str) -> Added {
        // Most lines have at most 32 tokens: no allocation for them.
        let mut tokens: SmallVec<[Token<'_>; 32]> = SmallVec::new();
        if line.is_ascii() {
            tokenise(line.split_ascii_whitespace(), &mut tokens);
        } else {
            tokenise(line.split_whitespace(), &mut tokens);
        }
        // Drain's depth 4: the length, then the first two tokens, route a line.
        let route = route(&tokens);
        let leaf = self.leaves.get(&route).map(Vec::as_slice).unwrap_or(&[]);
        let mut strict: Option<(u32, Comparison)> = None;
        let mut loose: Option<(u32, Comparison)> = None;
        for &id in leaf {
            let c = compare(&self.templates[id as usize].tokens, &tokens);
            let slot = if c.word_mismatches == 0 {
                &mut strict
            } else {
                &mut loose
            };
            if slot.is_none_or(|(_, b)| {
                c.score > b.score || (c.score == b.score && c.wildcards > b.wildcards)
            }) {
                *slot = Some((id, c));
            }
        }
        let leaf_full = leaf.len() >= self.config.max_per_leaf;
        let similarity = self.config.similarity;
        match (strict, loose) {
            (Some((id, c)), _) if c.score >= similarity => self.absorb(id, &tokens),
            (_, Some((id, c))) if c.score >= similarity && !leaf_full => {
                let root = self.templates[id as usize].variant_of.unwrap_or(id);
                self.create(route, &tokens, Some(root))
            }
            _ if leaf_full => {
                // The leaf is full: the closest template takes the line, whatever it is.
                let best = [strict, loose]
                    .into_iter()
                    .flatten()
                    .max_by(|a, b| a.1.score.total_cmp(&b.1.score))
                    .map(|(id, _)| id)
                    .expect("a full leaf has templates");
                self.absorb(best, &tokens)
            }
            _ => self.create(route, &tokens, None),
        }
    }

    fn absorb(&mut self, id: u32, tokens: &[Token<'_>]) -> Added {
        let t = &mut self.templates[id as usize];
        for (a, b) in t.tokens.iter_mut().zip(tokens) {
            if a != WILDCARD && !same_text(a, b) {
                *a = match key(a) {
                    Some(k) if token_key(b) == Some(k) => format!("{k}{WILDCARD}"),
                    _ => WILDCARD.to_owned(),
                };
            }
        }
        t.count += 1;
        Added {
            id,
            created: false,
            overflowed: false,
        }
    }

    fn create(&mut self, route: u64, tokens: &[Token<'_>], variant_of: Option<u32>) -> Added {
        if self.live >= self.config.max_templates {
            return self.overflow();
        }
        let id = self.templates.len() as u32;
        self.templates.push(Template {
            id,
            tokens: tokens
                .iter()
                .map(|t| {
                    let (a, b) = t.pieces();
                    [a, b].concat()
                })
                .collect(),
            count: 1,
            variant_of,
            variants: 0,
            merged_into: None,
            overflow: false,
        });
        self.live += 1;
        self.leaves.entry(route).or_default().push(id);
        let Some(root) = variant_of else {
            return Added {
                id,
                created: true,
                overflowed: false,
            };
        };
        let others = self.note_varying(root, id);
        let r = &mut self.templates[root as usize];
        r.variants += 1;
        if (r.variants as usize) < self.config.merge_after_variants && others.is_empty() {
            return Added {
                id,
                created: true,
                overflowed: false,
            };
        }
        self.merge_family(root);
        for other in others {
            self.merge_family(other);
        }
        Added {
            id: root,
            created: true,
            overflowed: false,
        }
    }

    /// Notes the words variant `id` differs from its root `root` in; returns the other
    /// families some of them already varied in. A word that varies in two families is
    /// an entity several messages name (a user in `session opened for user news` and
    /// `session closed for user news`), not a message's state (`VM Paused`): both
    /// families merge at once, without waiting for `merge-after-variants`.
    fn note_varying(&mut self, root: u32, id: u32) -> Vec<u32> {
        let mut others = Vec::new();
        let (r, v) = (&self.templates[root as usize], &self.templates[id as usize]);
        for (a, b) in r.tokens.iter().zip(&v.tokens) {
            if a == b || a.ends_with(WILDCARD) || b.ends_with(WILDCARD) {
                continue;
            }
            for w in [a, b] {
                match self.varied.get(w) {
                    Some(&f) if f != root => {
                        if !others.contains(&f) {
                            others.push(f);
                        }
                    }
                    Some(_) => {}
                    None => {
                        self.varied.insert(w.clone(), root);
                    }
                }
            }
        }
        others
    }

    /// Folds every live variant of `root` into it: the words they vary in are
    /// parameters.
    fn merge_family(&mut self, root: u32) {
        let members: Vec<u32> = self
            .templates
            .iter()
            .filter(|t| t.variant_of == Some(root) && t.merged_into.is_none())
            .map(|t| t.id)
            .collect();
        for m in members {
            let (tokens, count) = {
                let t = &mut self.templates[m as usize];
                t.merged_into = Some(root);
                (t.tokens.clone(), t.count)
            };
            if let Some(leaf) = self.leaves.get_mut(&route(&tokens)) {
                leaf.retain(|&i| i != m);
            }
            let r = &mut self.templates[root as usize];
            generalise(&mut r.tokens, &tokens);
            r.count += count;
            self.live -= 1;
        }
        self.templates[root as usize].variants = 0;
    }

    fn overflow(&mut self) -> Added {
        if let Some(id) = self.overflow {
            self.templates[id as usize].count += 1;
            return Added {
                id,
                created: false,
                overflowed: false,
            };
        }
        let id = self.templates.len() as u32;
        self.templates.push(Template {
            id,
            tokens: vec![OVERFLOW_TEXT.to_owned()],
            count: 1,
            variant_of: None,
            variants: 0,
            merged_into: None,
            overflow: true,
        });
        self.overflow = Some(id);
        Added {
            id,
            created: true,
            overflowed: true,
        }
    }

    pub fn snapshot(&self) -> MinerSnapshot {
        let mut varied: Vec<(String, u32)> =
            self.varied.iter().map(|(w, f)| (w.clone(), *f)).collect();
        varied.sort_unstable();
        MinerSnapshot {
            templates: self.templates.clone(),
            varied,
        }
    }

    /// Rebuilds a miner from its snapshot; ids stay what they were.
    pub fn restore(config: MinerConfig, snapshot: MinerSnapshot) -> Self {
        let mut miner = Miner::new(config);
        for t in snapshot.templates {
            if t.merged_into.is_none() {
                if t.overflow {
                    miner.overflow = Some(t.id);
                } else {
                    miner.live += 1;
                    miner.leaves.entry(route(&t.tokens)).or_default().push(t.id);
                }
            }
            miner.templates.push(t);
        }
        let known = miner.templates.len();
        miner.varied = snapshot
            .varied
            .into_iter()
            .filter(|&(_, f)| (f as usize) < known)
            .collect();
        miner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Miner, id: u32) -> String {
        m.template(id).unwrap().text()
    }

    #[test]
    fn lines_differing_in_parameters_share_a_template() {
        let mut m = Miner::default();
        let a = m
            .add("PacketResponder 1 for block blk_38865049064139660 terminating")
            .id;
        let b = m
            .add("PacketResponder 0 for block blk_-6952295868487656571 terminating")
            .id;
        assert_eq!(a, b);
        assert_eq!(text(&m, a), "PacketResponder <*> for block <*> terminating");
    }

    #[test]
    fn different_messages_get_different_templates() {
        let mut m = Miner::default();
        let a = m
            .add("Receiving block blk_1 src: /10.0.0.1:5000 dest: /10.0.0.2:50010")
            .id;
        let b = m.add("Verification succeeded for blk_1").id;
        assert_ne!(a, b);
    }

    #[test]
    fn keys_of_key_value_parameters_stay_apart() {
        let mut m = Miner::default();
        let a = m
            .add("setTodayTotalDetailSteps=1514038530000##7007##548##8661")
            .id;
        let b = m
            .add("setTodayTotalDetailSteps=1514038440000##6995##547##8649")
            .id;
        let c = m.add("setDiffTotalSteps=12").id;
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(text(&m, a), "setTodayTotalDetailSteps=<*>");
    }

    #[test]
    fn a_quantity_is_one_parameter_whatever_its_unit_or_form() {
        let mut m = Miner::default();
        let lines = [
            "edge-a.example.net:8443 close, 0 bytes sent, 12 bytes received, lifetime <1 sec",
            "edge-b.example.net:8443 close, 403 bytes sent, 5120 bytes received, lifetime 00:02",
            "edge-a.example.net:8443 close, 88 bytes sent, 0 bytes received, lifetime 2 min",
        ];
        let ids: Vec<u32> = lines.iter().map(|l| m.add(l).id).collect();
        assert_eq!(ids, [ids[0]; 3], "{:?}", m.all_templates());
        let a = m
            .add("cached chunk c1 (estimated size 384.0 B, free 317.5 MB)")
            .id;
        let b = m
            .add("cached chunk c2 (estimated size 12.4 KB, free 317.1 MB)")
            .id;
        assert_eq!(a, b, "{:?}", m.all_templates());
        assert_ne!(a, ids[0]);
        // A number that is not a quantity keeps the word after it.
        let c = m.add("retried 3 times").id;
        let d = m.add("retried 3 s").id;
        assert_ne!(c, d);
    }

    #[test]
    fn a_word_shifted_by_a_parameter_is_another_message() {
        // The same words, one parameter earlier or later: the sent and the received
        // side printed their sizes in different forms. A line that lines up only
        // because a word moved is not the same message.
        let mut m = Miner::default();
        let sent = m
            .add("edge-a.example.net:443 close, 7 bytes sent, 901 bytes (0.9 KB) received, lifetime 00:02")
            .id;
        let received = m
            .add("edge-b.example.net:443 close, 901 bytes (0.9 KB) sent, 7 bytes received, lifetime 00:02")
            .id;
        assert_ne!(sent, received, "{:?}", m.all_templates());
        let later = m
            .add("edge-c.example.net:80 close, 12 bytes sent, 4410 bytes (4.3 KB) received, lifetime <1 sec")
            .id;
        assert_eq!(later, sent);
        assert_eq!(
            text(&m, sent),
            "<*> close, <*> sent, <*> <*> received, lifetime <*>"
        );
        // A parameter where a word stood, with no word moved, still generalises.
        let a = m.add("session closed for user alice after 12 s").id;
        let b = m.add("session closed for user 1007 after 3 s").id;
        assert_eq!(a, b);
        // A varying word that equals its neighbour has not moved.
        let c = m.add("session closed for user user after 5 s").id;
        assert_eq!(c, a, "{:?}", m.all_templates());
    }

    #[test]
    fn unit_words() {
        for unit in ["ms", "µs", "KB)", "sec,", "Mb/s", "Seconds", "MILLISECONDS"] {
            assert!(is_unit(unit), "{unit}");
        }
        for word in ["times", "", "secondsx", "KB)x", "milliseconds-long"] {
            assert!(!is_unit(word), "{word}");
        }
    }

    #[test]
    fn a_numbered_name_tells_messages_apart() {
        let mut m = Miner::default();
        let https = m
            .add("edge-a.example.net:443 open through proxy gw.example.net:3128 HTTPS")
            .id;
        let socks = m
            .add("edge-b.example.net:443 open through proxy gw.example.net:1080 SOCKS5")
            .id;
        assert_ne!(https, socks);
        let later = m
            .add("edge-c.example.net:80 open through proxy gw.example.net:1080 SOCKS5")
            .id;
        assert_eq!(later, socks);
        // Identifiers with more digits, or separators, stay parameters.
        let a = m.add("mount failed on io11 after retry").id;
        let b = m.add("mount failed on io12 after retry").id;
        let c = m.add("mount failed on R02-M1-N0 after retry").id;
        assert_eq!((a, b), (a, a));
        assert_eq!(c, a);
    }

    #[test]
    fn a_word_that_varies_in_two_messages_is_a_parameter_of_both() {
        let mut m = Miner::default();
        let mut opened = Vec::new();
        let mut closed = Vec::new();
        for user in ["alice", "bob", "carol"] {
            opened.push(m.add(&format!("session opened for user {user} by sshd")).id);
            closed.push(m.add(&format!("session closed for user {user}")).id);
        }
        let opened: Vec<u32> = opened.into_iter().map(|id| m.resolve(id)).collect();
        let closed: Vec<u32> = closed.into_iter().map(|id| m.resolve(id)).collect();
        assert_eq!(opened, [opened[0]; 3], "{:?}", m.all_templates());
        assert_eq!(closed, [closed[0]; 3], "{:?}", m.all_templates());
        assert_ne!(opened[0], closed[0]);
        assert_eq!(text(&m, closed[0]), "session closed for user <*>");
        // A restored miner remembers which words varied.
        let mut r = Miner::restore(MinerConfig::default(), m.snapshot());
        let a = r.add("worker job started for alice").id;
        let b = r.add("worker job started for bob").id;
        assert_eq!(r.resolve(a), r.resolve(b));
    }

    #[test]
    fn states_of_one_message_stay_apart() {
        let mut m = Miner::default();
        let ids: Vec<u32> = ["Paused", "Resumed", "Started", "Stopped"]
            .iter()
            .cycle()
            .take(40)
            .map(|s| {
                m.add(&format!("[instance: 7f3a-{s}] VM {s} (Lifecycle Event)"))
                    .id
            })
            .collect();
        let distinct: std::collections::HashSet<u32> =
            ids.iter().map(|&id| m.resolve(id)).collect();
        assert_eq!(distinct.len(), 4, "{:?}", m.all_templates());
    }

    #[test]
    fn a_rare_word_variant_does_not_swallow_the_frequent_message() {
        let mut m = Miner::default();
        for i in 0..50 {
            m.add(&format!(
                "Session: 3018{i}_14 initialized by client WindowsUpdateAgent."
            ));
        }
        let spp = m.add("Session: 30546174_3 initialized by client SPP.");
        assert!(spp.created);
        let wua = m.add("Session: 30546175_3 initialized by client WindowsUpdateAgent.");
        assert_ne!(spp.id, wua.id);
        assert_eq!(text(&m, spp.id), "Session: <*> initialized by client SPP.");
    }

    #[test]
    fn many_word_variants_become_a_parameter() {
        let mut m = Miner::default();
        let users = [
            "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
        ];
        let first = m.add("accepted login for alice from gateway").id;
        for u in users {
            m.add(&format!("accepted login for {u} from gateway"));
        }
        assert_eq!(m.templates().count(), 1, "{:?}", m.all_templates());
        assert_eq!(m.resolve(first), first);
        assert_eq!(text(&m, first), "accepted login for <*> from gateway");
        // Ids of the merged variants resolve to the family's template.
        for t in m.all_templates() {
            assert_eq!(m.resolve(t.id), first);
        }
        let later = m.add("accepted login for mallory from gateway");
        assert_eq!(later.id, first);
        assert!(!later.created);
    }

    #[test]
    fn a_hundred_passes_over_parameter_heavy_lines_do_not_grow_the_templates() {
        let mut m = Miner::default();
        let lines: Vec<String> = (0..200)
            .map(|i| {
                format!(
                    "user u{i} logged in from 10.0.{}.{} after {i}ms session {i:x} state={}",
                    i % 7,
                    i % 13,
                    [
                        "new", "old", "idle", "busy", "gone", "back", "away", "home", "lost",
                        "kept"
                    ][i % 10]
                )
            })
            .collect();
        for l in &lines {
            m.add(l);
        }
        let after_one = m.len();
        for _ in 0..100 {
            for l in &lines {
                assert!(!m.add(l).created);
            }
        }
        assert_eq!(m.len(), after_one);
        assert!(after_one <= 2, "{:?}", m.all_templates());
    }

    #[test]
    fn a_flood_of_unique_lines_hits_the_cap_once() {
        let mut m = Miner::new(MinerConfig {
            max_templates: 10,
            ..MinerConfig::default()
        });
        let mut overflowed = 0;
        for i in 0..500 {
            // Every line a different shape: its own token count.
            let line = vec!["w"; i + 1].join(" ");
            let added = m.add(&line);
            overflowed += usize::from(added.overflowed);
        }
        assert_eq!(overflowed, 1);
        assert_eq!(m.len(), 11);
        let overflow = m.templates().find(|t| t.text() == OVERFLOW_TEXT).unwrap();
        assert_eq!(overflow.count, 490);
    }

    #[test]
    fn a_restored_miner_keeps_ids_and_goes_on_matching() {
        let mut m = Miner::default();
        let a = m.add("connection from 10.0.0.1 refused").id;
        let b = m.add("disk full on /var").id;
        let restored = Miner::restore(
            MinerConfig::default(),
            serde_json::from_str(&serde_json::to_string(&m.snapshot()).unwrap()).unwrap(),
        );
        let mut r = restored;
        assert_eq!(r.add("connection from 10.0.0.9 refused").id, a);
        assert_eq!(r.add("disk full on /var").id, b);
        assert_eq!(r.add("something new entirely").id, 2);
    }
}
