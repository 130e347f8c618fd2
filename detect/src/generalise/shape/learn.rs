//! Learning a shape from a directory's names: random, a run of digits, a fan-out
//! level, or segments some of which vary.

use super::chance::*;
use super::*;

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

/// A random shape shared by `new` and at least `min` of `names` (which include it).
fn random_shape<'a>(
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
fn digit_shape<'a>(
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
fn fan_out_shape<'a>(
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
pub(in crate::generalise) fn shape_of(
    names: &[&str],
    new: &str,
    min: usize,
    dir: bool,
) -> Option<NameShape> {
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
    let folded = fold(new);
    'narrow: loop {
        if group.len() < min {
            return None;
        }
        if !folded.contains("<id>") && group.iter().all(|(n, _)| fold(n) == folded) {
            return None;
        }
        let mut tokens = Vec::with_capacity(own.len() * 2);
        for (j, segment) in own.iter().enumerate() {
            if j > 0 {
                push_plain(&mut tokens, &seps[j - 1].to_string());
            }
            let values: Vec<&str> = group.iter().map(|(_, s)| s[j]).collect();
            let same = values.iter().all(|v| v == segment);
            let f = fold(segment);
            if same && f == *segment {
                push_plain(&mut tokens, segment);
            } else if let Some(shape) = (!same).then(|| varying_segment(&values, segment)).flatten()
            {
                for t in shape.tokens {
                    match t {
                        Token::Text(t) => push_plain(&mut tokens, &t),
                        other => tokens.push(other),
                    }
                }
            } else if f != *segment && values.iter().all(|v| fold(v) == f) {
                tokens.push(Token::Folded(f));
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
pub(in crate::generalise) fn label_shape(
    names: &[&str],
    new: &str,
    min: usize,
) -> Option<NameShape> {
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
