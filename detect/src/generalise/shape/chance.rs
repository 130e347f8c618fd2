//! The chances that tell a generator's names from names someone chose: how evenly
//! their characters spread, whether letters read like words, whether each position
//! varies as random draws would.

use super::*;

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
pub(super) fn looks_random(middles: &[&str], classes: Classes) -> bool {
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
pub(super) fn unruled_out(seen: Classes, chars: usize) -> Classes {
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
pub(super) fn varies_everywhere(middles: &[&str], classes: Classes) -> bool {
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
pub(super) fn majority_fixes_more(group: &[&str], prefix: usize, suffix: usize) -> bool {
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
}
