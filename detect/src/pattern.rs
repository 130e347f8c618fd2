//! Folding of volatile parts (numbers, hashes, UUIDs, random names) out of arguments and
//! paths, so that a service writing `/tmp/upload-8f3a2c…` a thousand ways learns one
//! pattern, `/tmp/upload-<hex>`. A scanner, not regexes: it runs on every event.

/// Characters that separate the tokens of a path or argument.
fn is_separator(c: char) -> bool {
    matches!(
        c,
        '/' | '-'
            | '_'
            | '.'
            | ':'
            | '='
            | ','
            | '@'
            | ' '
            | '+'
            | '?'
            | '&'
            | '['
            | ']'
            | '('
            | ')'
            | '"'
            | '\''
    )
}

/// What a token folds to, if it is volatile.
fn fold_token(token: &str) -> Option<&'static str> {
    let len = token.chars().count();
    if len == 0 {
        return None;
    }
    let digits = token.chars().filter(char::is_ascii_digit).count();
    if digits == len {
        return Some("<n>");
    }
    if len >= 6 && digits > 0 && token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Some("<hex>");
    }
    // Random names (`tmpk2m9zq`, `x2x7q`) interleave letters and digits; names such
    // as `sha256` or `python3` switch once.
    let alnum = token.chars().all(|c| c.is_ascii_alphanumeric());
    let switches = token
        .as_bytes()
        .windows(2)
        .filter(|w| w[0].is_ascii_digit() != w[1].is_ascii_digit())
        .count();
    if alnum && len >= 5 && switches >= 2 {
        return Some("<id>");
    }
    None
}

/// Units of time and size that follow a number in arguments and names (`--older-than
/// 36h`, `--max-size=512MiB`, `--timeout 30s`).
const UNITS: [&str; 24] = [
    "ns", "us", "ms", "s", "sec", "m", "min", "h", "d", "w", "y", "b", "k", "kb", "kib", "mb",
    "mib", "g", "gb", "gib", "t", "tb", "tib", "x",
];

/// The unit of a number with one (`36h` → `h`): the number folds, the unit stays.
fn unit_of(token: &str) -> Option<&str> {
    let digits = token.bytes().take_while(u8::is_ascii_digit).count();
    let unit = &token[digits..];
    (digits > 0 && UNITS.iter().any(|u| unit.eq_ignore_ascii_case(u))).then_some(unit)
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Folds the volatile tokens of `s`, keeping separators and stable words.
pub fn fold(s: &str) -> String {
    fold_with(s, false)
}

/// [`fold`], and in arguments numbers with a unit too (`36h` → `<n>h`: in a path, `3d`
/// is more likely a name).
fn fold_with(s: &str, units: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        if rest.len() >= 36 && rest.is_char_boundary(36) && is_uuid(&rest[..36]) {
            out.push_str("<uuid>");
            rest = &rest[36..];
            continue;
        }
        let end = rest.find(is_separator).unwrap_or(rest.len());
        if end == 0 {
            let c = rest.chars().next().expect("non-empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let token = &rest[..end];
        match fold_token(token) {
            Some(mask) => out.push_str(mask),
            None => match unit_of(token).filter(|_| units) {
                Some(unit) => {
                    out.push_str("<n>");
                    out.push_str(unit);
                }
                None => out.push_str(token),
            },
        }
        rest = &rest[end..];
    }
    out
}

/// Folds an argument list into one pattern string.
pub fn fold_args(args: &[String]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&fold_with(a, true));
    }
    out
}

/// The last path component: `/usr/bin/bash` → `bash`.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_fold_into_one_pattern() {
        assert_eq!(fold("/tmp/upload-8f3a2c"), "/tmp/upload-<hex>");
        assert_eq!(fold("/tmp/upload-9b17e0d4"), "/tmp/upload-<hex>");
        assert_eq!(fold("/tmp/report-4411.csv"), "/tmp/report-<n>.csv");
        assert_eq!(fold("/tmp/tmpk2m9zq/out"), "/tmp/<id>/out");
    }

    #[test]
    fn numbers_with_units_fold_to_their_unit_in_arguments() {
        let args = |a: &[&str]| fold_args(&a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(args(&["--older-than", "1012h"]), "--older-than <n>h");
        assert_eq!(args(&["--max-size=512MiB"]), "--max-size=<n>MiB");
        assert_eq!(args(&["--timeout", "30s"]), "--timeout <n>s");
        // Not a unit, no number first, or in a path: as before.
        assert_eq!(args(&["python3", "amd64"]), "python3 amd64");
        assert_eq!(fold("/opt/3d/model"), "/opt/3d/model");
    }

    #[test]
    fn uuids_and_hashes_fold() {
        assert_eq!(
            fold("--job=6f1c9a7e-3b2d-4e8f-9a0b-1c2d3e4f5a6b"),
            "--job=<uuid>"
        );
        assert_eq!(fold("sha256:0b8e4f1d2c3a4b5c"), "sha256:<hex>");
    }

    #[test]
    fn stable_words_and_paths_stay() {
        assert_eq!(fold("/usr/local/bin/gunicorn"), "/usr/local/bin/gunicorn");
        assert_eq!(fold("app:app"), "app:app");
        assert_eq!(fold("/etc/nginx/nginx.conf"), "/etc/nginx/nginx.conf");
        assert_eq!(
            fold("/usr/lib/python3.12/site.py"),
            "/usr/lib/python3.<n>/site.py"
        );
    }

    #[test]
    fn arguments_fold_word_by_word() {
        let args = vec![
            "/app/worker.py".to_owned(),
            "--job".to_owned(),
            "48120".to_owned(),
        ];
        assert_eq!(fold_args(&args), "/app/worker.py --job <n>");
    }

    #[test]
    fn folding_never_panics_on_multibyte_text() {
        assert_eq!(fold("/tmp/ünïcødé-42"), "/tmp/ünïcødé-<n>");
        let _ = fold("ééééééééééééééééééééééééééééééééééééééé");
    }
}
