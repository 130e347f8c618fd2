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
    /// One to `max` characters of `classes`: a random number written in a radix, whose
    /// leading zeros are dropped (Ruby's `rand(0x100000000).to_s(36)`).
    Span { max: usize, classes: Classes },
}

impl Body {
    /// How much of `rest` this body takes, if it takes any.
    fn take(&self, rest: &str) -> Option<usize> {
        let run = |admits: &dyn Fn(u8) -> bool| rest.bytes().take_while(|c| admits(*c)).count();
        match self {
            Body::Random { len, classes } => rest
                .get(..*len)
                .is_some_and(|m| m.bytes().all(|c| classes.admits(c)))
                .then_some(*len),
            Body::Digits => Some(run(&|c| c.is_ascii_digit())).filter(|n| *n > 0),
            Body::Span { max, classes } => {
                Some(run(&|c| classes.admits(c))).filter(|n| (1..=*max).contains(n))
            }
        }
    }

    fn render(&self) -> String {
        match self {
            Body::Random { len, classes } => format!("<[{}]{{{len}}}>", classes.render()),
            Body::Digits => "<[0-9]+>".to_owned(),
            Body::Span { max, classes } => format!("<[{}]{{1,{max}}}>", classes.render()),
        }
    }

    /// The body `<[class]quantity>` writes.
    fn parse(class: &str, quantity: &str) -> Option<Body> {
        if class == "0-9" && quantity == "+" {
            return Some(Body::Digits);
        }
        let classes = Classes::parse(class)?;
        let counts = quantity.strip_prefix('{')?.strip_suffix('}')?;
        Some(match counts.split_once(',') {
            Some(("1", max)) => Body::Span {
                max: max.parse().ok()?,
                classes,
            },
            Some(_) => return None,
            None => Body::Random {
                len: counts.parse().ok()?,
                classes,
            },
        })
    }

    /// Whether `other` is this body with a wider alphabet.
    fn widened_by(&self, other: &Body) -> bool {
        match (self, other) {
            (Body::Random { len: a, classes: x }, Body::Random { len: b, classes: y })
            | (Body::Span { max: a, classes: x }, Body::Span { max: b, classes: y }) => {
                a == b && (x.0 | y.0) == y.0 && x != y
            }
            _ => false,
        }
    }
}

/// What fixed folding writes for a volatile token (`<n>`, `<hex>`, `<uuid>`, `<id>`).
const MASKS: [&str; 4] = ["<n>", "<hex>", "<uuid>", "<id>"];

/// Separators of the segments of a name a segmented shape is learned over
/// (`tmp-<pid>-<random>`, `d<date>-<pid>-<random>`).
fn is_segment_separator(c: char) -> bool {
    c == '-' || c == '.'
}

/// One piece of a learned name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// The same text in every name.
    Text(String),
    /// A varying part.
    Body(Body),
    /// A segment (text between separators) that folds to this text, as fixed folding
    /// writes a component no shape covers (`d20261207` → `<hex>`).
    Folded(String),
}

/// A learned shape of the names in one directory: fixed text around one varying part
/// (`tmp<[a-z0-9_]{8}>`), or a name of segments some of which vary
/// (`tmp-<[0-9]+>-<[A-Za-z0-9_]{12}>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameShape {
    tokens: Vec<Token>,
}

impl NameShape {
    fn single(prefix: &str, body: Body, suffix: &str) -> NameShape {
        let mut tokens = Vec::with_capacity(3);
        if !prefix.is_empty() {
            tokens.push(Token::Text(prefix.to_owned()));
        }
        tokens.push(Token::Body(body));
        if !suffix.is_empty() {
            tokens.push(Token::Text(suffix.to_owned()));
        }
        NameShape { tokens }
    }

    /// The fixed prefix, the body and the fixed suffix of a shape of one varying part.
    fn as_single(&self) -> Option<(&str, &Body, &str)> {
        fn text(t: Option<&Token>) -> Option<&str> {
            match t {
                Some(Token::Text(s)) => Some(s.as_str()),
                None => Some(""),
                _ => None,
            }
        }
        let at = self
            .tokens
            .iter()
            .position(|t| matches!(t, Token::Body(_)))?;
        let Token::Body(body) = &self.tokens[at] else {
            return None;
        };
        (self.tokens.len() <= at + 2 && at <= 1).then_some(())?;
        Some((
            text(at.checked_sub(1).map(|i| &self.tokens[i]))?,
            body,
            text(self.tokens.get(at + 1))?,
        ))
    }

    pub fn matches(&self, name: &str) -> bool {
        let mut rest = name;
        for token in &self.tokens {
            let taken = match token {
                Token::Text(t) => rest.starts_with(t.as_str()).then_some(t.len()),
                Token::Body(b) => b.take(rest),
                Token::Folded(f) => {
                    let end = rest.find(is_segment_separator).unwrap_or(rest.len());
                    (fold(&rest[..end]) == *f).then_some(end)
                }
            };
            let Some(n) = taken else {
                return false;
            };
            rest = &rest[n..];
        }
        rest.is_empty()
    }

    /// The component as a baseline key writes it: `tmp<[a-z0-9_]{8}>`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for token in &self.tokens {
            match token {
                Token::Text(t) | Token::Folded(t) => out.push_str(t),
                Token::Body(b) => out.push_str(&b.render()),
            }
        }
        out
    }

    /// How many names the shape covers, roughly, in bits: of the shapes that cover a
    /// name, the broadest writes it (`tmp-<n>-<…>` over the `tmp-1234-<…>` learned
    /// while one process wrote).
    pub(super) fn breadth(&self) -> f64 {
        /// A run of digits or a folded segment: about as many names as a 64-bit number.
        const UNBOUNDED: f64 = 64.0;
        self.tokens
            .iter()
            .map(|t| match t {
                Token::Text(_) => 0.0,
                Token::Folded(_) | Token::Body(Body::Digits) => UNBOUNDED,
                Token::Body(Body::Random { len, classes } | Body::Span { max: len, classes }) => {
                    *len as f64 * classes.size().log2()
                        + f64::from(u8::from(matches!(t, Token::Body(Body::Span { .. }))))
                }
            })
            .sum()
    }

    /// The shape a rendered component names, if it names one.
    pub fn parse(component: &str) -> Option<NameShape> {
        let mut tokens = Vec::new();
        let mut rest = component;
        let mut bodies = 0;
        while !rest.is_empty() {
            let Some(start) = rest.find("<[") else {
                push_text(&mut tokens, rest);
                break;
            };
            push_text(&mut tokens, &rest[..start]);
            let close = start + rest[start..].find(']')?;
            let end = close + rest[close..].find('>')?;
            tokens.push(Token::Body(Body::parse(
                &rest[start + 2..close],
                &rest[close + 1..end],
            )?));
            bodies += 1;
            rest = &rest[end + 1..];
        }
        (bodies > 0).then_some(NameShape { tokens })
    }

    /// Whether `other` says the same with a wider alphabet (a later sample showed more
    /// of the generator's characters).
    pub(super) fn widens(&self, other: &NameShape) -> bool {
        let mut wider = false;
        let same = self.tokens.len() == other.tokens.len()
            && self
                .tokens
                .iter()
                .zip(&other.tokens)
                .all(|(a, b)| match (a, b) {
                    (Token::Body(x), Token::Body(y)) if x.widened_by(y) => {
                        wider = true;
                        true
                    }
                    _ => a == b,
                });
        same && wider
    }
}

/// Appends fixed text to a shape's tokens: a segment that folding masks is a folded
/// segment, the rest text.
fn push_text(tokens: &mut Vec<Token>, text: &str) {
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(is_segment_separator).unwrap_or(rest.len());
        let piece = &rest[..end];
        if MASKS.iter().any(|m| piece.contains(m)) {
            tokens.push(Token::Folded(piece.to_owned()));
        } else {
            push_plain(tokens, piece);
        }
        // The separator (one byte) after the piece.
        let next = (end + 1).min(rest.len());
        push_plain(tokens, &rest[end..next]);
        rest = &rest[next..];
    }
}

fn push_plain(tokens: &mut Vec<Token>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Token::Text(t)) = tokens.last_mut() {
        t.push_str(text);
    } else {
        tokens.push(Token::Text(text.to_owned()));
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

/// The chance that `n` draws, each a hit with chance `p`, hit `at_least..=at_most`
/// times.
fn binomial(n: u32, p: f64, at_least: u32, at_most: u32) -> f64 {
    let nf = f64::from(n);
    let mut term = (1.0 - p).powf(nf);
    let mut sum: f64 = 0.0;
    for k in 0..=n.min(at_most) {
        if k >= at_least {
            sum += term;
        }
        let k = f64::from(k);
        term *= (nf - k) / (k + 1.0) * p / (1.0 - p);
    }
    sum.min(1.0)
}

const VOWEL: f64 = 5.0 / 26.0;

/// Letters this unlikely for random letters are word-like: more vowels than random
/// letters hold, or fewer neighbouring consonants (random letters run at 19% vowels and
/// two consonants side by side two times in three; words near 40% and one in three).
/// Each test alone at 1% took about one group of random names in forty for words
/// (neighbouring pairs overlap, so their count spreads wider than a binomial's).
const WORDLIKE: f64 = 0.002;

/// Whether letters read like words: too many vowels, or consonants that too seldom
/// stand together, for letters drawn at random.
fn wordlike(middles: &[&str]) -> bool {
    let vowel = |c: u8| b"aeiouAEIOU".contains(&c);
    let (mut letters, mut vowels, mut pairs, mut clusters) = (0u32, 0u32, 0u32, 0u32);
    for m in middles {
        let b = m.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            if !c.is_ascii_alphabetic() {
                continue;
            }
            letters += 1;
            vowels += u32::from(vowel(c));
            if let Some(&d) = b.get(i + 1)
                && d.is_ascii_alphabetic()
            {
                pairs += 1;
                clusters += u32::from(!vowel(c) && !vowel(d));
            }
        }
    }
    let consonant = 1.0 - VOWEL;
    binomial(letters, VOWEL, vowels, letters) < WORDLIKE
        || binomial(pairs, consonant * consonant, 0, clusters) < WORDLIKE
}

/// Whether the varying parts of several names look drawn at random from their
/// alphabet: their characters spread nearly evenly over it (Miller–Madow corrected
/// entropy at least 80% of the alphabet's), and, where letters beyond hex appear, they
/// do not read like words ([`wordlike`]).
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
    if classes.0 & (LOWER | UPPER) != 0 && wordlike(middles) {
        return false;
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

/// A position of the varying parts that shows fewer distinct characters than uniform
/// draws would show this rarely is a fixed part, not a generator's.
const UNLIKELY: f64 = 1e-3;

/// The chance that `draws` uniform draws from `alphabet` characters show at most `d`
/// distinct ones, for each `d` from 0 to `draws`.
fn distinct_at_most(draws: usize, alphabet: f64) -> Vec<f64> {
    // p[k]: the chance of exactly k distinct characters after the draws so far.
    let mut p = vec![0.0; draws + 1];
    p[0] = 1.0;
    for _ in 0..draws {
        for k in (1..=draws).rev() {
            let seen = k as f64;
            p[k] =
                p[k] * (seen / alphabet) + p[k - 1] * ((alphabet - seen + 1.0).max(0.0) / alphabet);
        }
        p[0] = 0.0;
    }
    p.iter()
        .scan(0.0, |sum, x| {
            *sum += x;
            Some(*sum)
        })
        .collect()
}

/// The upper 1% point of the chi-squared distribution with `dof` degrees of freedom
/// (Wilson–Hilferty: within a few percent from 2 degrees up).
fn chi2_99(dof: f64) -> f64 {
    const Z_99: f64 = 2.3263;
    let c = 2.0 / (9.0 * dof);
    dof * (1.0 - c + Z_99 * c.sqrt()).powi(3)
}

/// Whether every position of the varying parts varies as a generator's would:
/// - no position shows so few distinct characters that uniform draws from the alphabet
///   would show as few less than once in [`UNLIKELY`]⁻¹ times (three draws from
///   `[a-z0-9_]` with one character three times);
/// - and the positions together are not unlikely either (Fisher's combination of their
///   chances, below 1%; the chances are of discrete counts, so random names fail it
///   less often than that): two generators' names that happen to share a length
///   (`upload-1234`, `tmpk2m9zq_x`) repeat a little at many positions.
fn varies_everywhere(middles: &[&str], classes: Classes) -> bool {
    let Some(len) = middles.first().map(|m| m.len()) else {
        return false;
    };
    let at_most = distinct_at_most(middles.len(), classes.size());
    let mut fisher = 0.0;
    for j in 0..len {
        let mut seen = [false; 128];
        for m in middles {
            seen[usize::from(m.as_bytes()[j] & 0x7f)] = true;
        }
        let distinct = seen.iter().filter(|&&b| b).count();
        let chance = at_most[distinct.min(middles.len())].min(1.0);
        if chance < UNLIKELY {
            return false;
        }
        fisher -= 2.0 * chance.ln();
    }
    fisher <= chi2_99(2.0 * len as f64)
}

/// Whether more than half of a group share a longer prefix or suffix than the one cut:
/// then the group mixes names of a generator with that longer fixed part and others
/// (three `tmpXXXXXXXX` and one `upload-1234` are not eleven random characters). It
/// takes three names at least: two random names share a character beyond the fixed part
/// once in a few tries, three once in several hundred.
fn majority_fixes_more(group: &[&str], prefix: usize, suffix: usize) -> bool {
    let half = group.len() / 2;
    let most_sharing = |part: &dyn Fn(&str) -> Option<&str>| {
        let mut parts: Vec<&str> = group.iter().filter_map(|n| part(n)).collect();
        parts.sort_unstable();
        parts
            .chunk_by(|a, b| a == b)
            .map(<[&str]>::len)
            .max()
            .unwrap_or(0)
    };
    let longer_prefix = most_sharing(&|n: &str| n.get(..prefix + 1));
    let longer_suffix =
        most_sharing(&|n: &str| n.len().checked_sub(suffix + 1).and_then(|i| n.get(i..)));
    let majority = |n: usize| n > half && n >= 3;
    majority(longer_prefix) || majority(longer_suffix)
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
        if majority_fixes_more(&group, prefix, suffix) {
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
        return Some(NameShape::single(
            &new[..prefix],
            Body::Random {
                len: new.len() - prefix - suffix,
                classes,
            },
            &new[new.len() - suffix..],
        ));
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
    digits_varying(names, new, min, true)
}

/// As [`digit_shape`]; `folded_known` says the names are folded where no shape covers
/// them (paths), so that names whose numbers folding already hides need no shape.
fn digits_varying<'a>(
    names: impl IntoIterator<Item = &'a str>,
    new: &str,
    min: usize,
    folded_known: bool,
) -> Option<NameShape> {
    let skeleton = digit_skeleton(new);
    if !skeleton.contains('#') {
        return None;
    }
    let group: Vec<&str> = names
        .into_iter()
        .filter(|n| digit_skeleton(n) == skeleton)
        .collect();
    if group.len() < min || (folded_known && group.iter().all(|n| fold(n) == fold(new))) {
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
    Some(NameShape::single(&new[..a], Body::Digits, &new[b..]))
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
    let letters = group
        .iter()
        .any(|n| n.bytes().any(|c| c.is_ascii_alphabetic()));
    (group.len() >= min.max(MIN_NAMES) && digits && letters).then(|| {
        NameShape::single(
            "",
            Body::Random {
                len: new.len(),
                classes: Classes(HEX | DIGIT),
            },
            "",
        )
    })
}

/// The shape `new` shares with at least `min` of `names` (which include it): random,
/// a run of digits, or, for a directory, a fan-out level.
pub(super) fn shape_of(names: &[&str], new: &str, min: usize, dir: bool) -> Option<NameShape> {
    let all = || names.iter().copied();
    let single = random_shape(all(), new, min).or_else(|| digit_shape(all(), new, min));
    let segmented = segmented_shape(names, new, min);
    match (single, segmented) {
        // Segments that vary beyond the one part: the name's pid or date varies too.
        (Some(single), Some(segmented)) if segmented.breadth() > single.breadth() => {
            Some(segmented)
        }
        (Some(single), _) => Some(single),
        (None, Some(segmented)) => Some(segmented),
        (None, None) => dir.then(|| fan_out_shape(all(), new, min)).flatten(),
    }
}

/// A name's segments: its text between [`is_segment_separator`]s.
fn segments(name: &str) -> Vec<&str> {
    name.split(is_segment_separator).collect()
}

/// The separators of a name, in order.
fn separators(name: &str) -> Vec<char> {
    name.chars().filter(|c| is_segment_separator(*c)).collect()
}

/// A shape of segments (`tmp-<[0-9]+>-<[A-Za-z0-9_]{12}>`) that `new` shares with at
/// least `min` of `names` (which include it): names with the same separators, whose
/// segments at each position are the same, or fold alike, or vary as a run of digits
/// or as random characters ([`varying_segment`]). A position whose names do none of
/// these (words: `chronyd`, `nginx`) is fixed to `new`'s and the names that differ
/// there left out, while at least `min` remain. Names that fixed folding already
/// writes as one pattern need none.
fn segmented_shape(names: &[&str], new: &str, min: usize) -> Option<NameShape> {
    let own = segments(new);
    if own.len() < 2 {
        return None;
    }
    let seps = separators(new);
    let mut group: Vec<(&str, Vec<&str>)> = names
        .iter()
        .filter(|n| separators(n) == seps)
        .map(|n| (*n, segments(n)))
        .collect();
    'narrow: loop {
        if group.len() < min {
            return None;
        }
        let folded = fold(new);
        if !folded.contains("<id>") && group.iter().all(|(n, _)| fold(n) == folded) {
            return None;
        }
        let mut tokens = Vec::with_capacity(own.len() * 2);
        for (j, segment) in own.iter().enumerate() {
            if j > 0 {
                push_plain(&mut tokens, &seps[j - 1].to_string());
            }
            let values: Vec<&str> = group.iter().map(|(_, s)| s[j]).collect();
            if values.iter().all(|v| v == segment) {
                let f = fold(segment);
                if f == *segment {
                    push_plain(&mut tokens, segment);
                } else {
                    tokens.push(Token::Folded(f));
                }
            } else if let Some(shape) = varying_segment(&values, segment) {
                for t in shape.tokens {
                    match t {
                        Token::Text(t) => push_plain(&mut tokens, &t),
                        other => tokens.push(other),
                    }
                }
            } else if values.iter().all(|v| fold(v) == fold(segment)) && fold(segment) != *segment {
                tokens.push(Token::Folded(fold(segment)));
            } else {
                group.retain(|(_, s)| s[j] == *segment);
                continue 'narrow;
            }
        }
        let shape = NameShape { tokens };
        let varies = shape.tokens.iter().any(|t| matches!(t, Token::Body(_)));
        return (varies && group.iter().all(|(n, _)| shape.matches(n))).then_some(shape);
    }
}

/// The shape of one position's segments where they differ: one varying run of digits
/// (`d<[0-9]+>`); or random characters, each segment another: of one length around
/// fixed text (tested as [`random_shape`]'s), or of lengths up to the longest, which
/// a number in a radix beyond ten writes (digits and letters, spread over their
/// alphabet, not word-like).
fn varying_segment(values: &[&str], own: &str) -> Option<NameShape> {
    if let Some(shape) = digits_varying(values.iter().copied(), own, values.len(), false) {
        return Some(shape);
    }
    let mut distinct = values.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < values.len() {
        return None;
    }
    let longest = values.iter().map(|v| v.len()).max()?;
    let (prefix, suffix) = if values.iter().all(|v| v.len() == longest) {
        let prefix = values.iter().map(|v| common_prefix(v, own)).min()?;
        let suffix = values.iter().map(|v| common_suffix(v, own)).min()?;
        (prefix, suffix.min(longest - prefix))
    } else {
        // A number's leading characters are not fixed text, however many agree.
        (0, 0)
    };
    if !own.is_char_boundary(prefix) || !own.is_char_boundary(own.len() - suffix) {
        return None;
    }
    let middles: Vec<&str> = values
        .iter()
        .map(|v| v.get(prefix..v.len() - suffix))
        .collect::<Option<_>>()?;
    let mut seen = 0u8;
    for c in middles.iter().flat_map(|m| m.bytes()) {
        seen |= Classes::of(c)?;
    }
    let longest = longest - prefix - suffix;
    if seen == DIGIT || longest < MIN_RANDOM_LEN || middles.iter().any(|m| m.is_empty()) {
        return None;
    }
    let classes = Classes(seen).normalised();
    let chars: usize = middles.iter().map(|m| m.len()).sum();
    // Segments never hold their separators.
    let alphabet = Classes(unruled_out(classes, chars).0 & !DASH);
    let body = if middles.iter().all(|m| m.len() == longest) {
        varies_everywhere(&middles, classes).then_some(Body::Random {
            len: longest,
            classes: alphabet,
        })?
    } else {
        // A number in a radix beyond ten mixes digits and letters; words have no digits.
        (seen & DIGIT != 0 && seen & !DIGIT != 0).then_some(Body::Span {
            max: longest,
            classes: alphabet,
        })?
    };
    looks_random(&middles, classes)
        .then(|| NameShape::single(&own[..prefix], body, &own[own.len() - suffix..]))
}

/// The shape `new` shares with at least `min` of `names` as a DNS name's first label,
/// which nothing folds: random, or a run of digits.
pub(super) fn label_shape(names: &[&str], new: &str, min: usize) -> Option<NameShape> {
    let all = || names.iter().copied();
    let Some(shape) = random_shape(all(), new, min) else {
        return digits_varying(all(), new, min, false);
    };
    let (prefix, body, suffix) = shape.as_single()?;
    // Host names are letters, digits and hyphens (RFC 1123); `_` appears only in
    // service labels (`_sip._tcp`). So a label's alphabet has it only when a label of
    // the shape showed one, however few were seen.
    let shown = names
        .iter()
        .any(|n| shape.matches(n) && n[prefix.len()..n.len() - suffix.len()].contains('_'));
    let body = match body {
        Body::Random { len, classes } if !shown => Body::Random {
            len: *len,
            classes: Classes(classes.0 & !UNDERSCORE),
        },
        other => other.clone(),
    };
    Some(NameShape::single(prefix, body, suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chance_of_few_distinct_characters_is_that_of_uniform_draws() {
        let p = distinct_at_most(2, 37.0);
        assert!((p[1] - 1.0 / 37.0).abs() < 1e-12, "{p:?}");
        assert!((p[2] - 1.0).abs() < 1e-12, "{p:?}");
        // Three draws all equal: 1/37².
        let p = distinct_at_most(3, 37.0);
        assert!((p[1] - 1.0 / (37.0 * 37.0)).abs() < 1e-12, "{p:?}");
        assert_eq!(p[0], 0.0);
    }

    #[test]
    fn a_majority_with_a_longer_fixed_part_is_another_generator() {
        let mixed = ["tmpbqymhbpj", "tmpk2m9zq_a", "tmpq0w8e7rt", "upload-1234"];
        assert!(majority_fixes_more(&mixed, 0, 0));
        let python = ["tmpbqymhbpj", "tmpk2m9zq_a", "tmpq0w8e7rt", "tmpv8n2m4xc"];
        assert!(!majority_fixes_more(&python, 3, 0));
        // Two of four sharing a character by chance is no majority.
        let chance = ["tmpbqymhbpj", "tmpbzm9zq_a", "tmpq0w8e7rt", "tmpv8n2m4xc"];
        assert!(!majority_fixes_more(&chance, 3, 0));
    }

    #[test]
    fn binomial_chances_add_up() {
        assert!((binomial(10, 0.3, 0, 10) - 1.0).abs() < 1e-12);
        assert!((binomial(1, VOWEL, 1, 1) - VOWEL).abs() < 1e-12);
        assert!((binomial(2, 0.5, 0, 0) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn words_read_like_words_and_random_letters_do_not() {
        assert!(wordlike(&["order", "price", "stock", "buyer"]));
        assert!(wordlike(&["report", "invoice", "summary"]));
        assert!(!wordlike(&["bqymhbpj", "kzmwzqxa", "qgwhexrt"]));
        assert!(!wordlike(&["r1ozj0bo", "ec71__lw", "z0763_lz", "gmo_y38b"]));
    }

    #[test]
    fn the_chi_squared_point_is_near_the_tables() {
        // Tables: 9.21 (2), 32.00 (16), 63.69 (40).
        for (dof, table) in [(2.0, 9.21), (16.0, 32.00), (40.0, 63.69)] {
            let q = chi2_99(dof);
            assert!((q - table).abs() / table < 0.03, "{dof}: {q}");
        }
    }

    #[test]
    fn a_position_repeating_by_chance_passes_and_a_fixed_one_fails() {
        let classes = Classes(LOWER | HEX | DIGIT | UNDERSCORE);
        // Position 2 shows two characters in four names: one time in two hundred.
        assert!(varies_everywhere(
            &["r1ozj0bo", "ec71__lw", "z0763_lz", "gmo_y38b"],
            classes
        ));
        // Two names of each of two generators: a little repetition at every position.
        assert!(!varies_everywhere(
            &["upload-1234", "tmpk2m9zq_x", "upload-9071", "tmpq8w_e3rt"],
            Classes(LOWER | HEX | DIGIT | UNDERSCORE | DASH)
        ));
        // Position 3 is the same in all four.
        assert!(!varies_everywhere(
            &["r1oxj0bo", "ec7x__lw", "z07x3_lz", "gmoxy38b"],
            classes
        ));
    }

    #[test]
    fn a_segment_of_varying_length_is_a_number_only_with_digits_and_letters() {
        let base36 = ["1k2qzx9", "b7wtr4", "1p4xjd0", "zv9qk3"];
        let shape = varying_segment(&base36, base36[0]).expect("a shape");
        assert_eq!(shape.render(), "<[a-z0-9_]{1,7}>");
        // Letters alone, however random they look, are not a number.
        let letters = ["kqzxvw", "bwtrnmq", "pxjdkz", "zvqkxwt"];
        assert_eq!(varying_segment(&letters, letters[0]), None);
    }

    #[test]
    fn a_host_label_admits_an_underscore_only_once_one_showed() {
        let plain = [
            "q3kz9x7mwa2b",
            "p8vn2k4jd0zr",
            "t5hw1m9qx7ca",
            "a2cx8v6nb3kq",
        ];
        let shape = label_shape(&plain, plain[3], MIN_NAMES).expect("a shape");
        assert_eq!(shape.render(), "<[a-z0-9-]{12}>");
        let mut under = plain;
        under[0] = "q3kz9x_mwa2b";
        let shape = label_shape(&under, under[3], MIN_NAMES).expect("a shape");
        assert_eq!(shape.render(), "<[a-z0-9_-]{12}>");
        // A file name's alphabet keeps what few names cannot rule out.
        let shape = random_shape(plain, plain[3], MIN_NAMES).expect("a shape");
        assert_eq!(shape.render(), "<[a-z0-9_-]{12}>");
    }
}
