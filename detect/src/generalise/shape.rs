//! Name shapes: what a directory's generated names have in common (length, fixed prefix
//! and suffix, a varying part drawn from an alphabet, or a varying run of digits; or
//! segments some of which vary), how a baseline key writes one, and which names it
//! covers. [`learn`] finds a shape in a directory's names, with the chances in
//! [`chance`] that tell a generator's names from names someone chose.

use crate::pattern::fold;

mod chance;
mod learn;

pub(super) use learn::{label_shape, shape_of};

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
