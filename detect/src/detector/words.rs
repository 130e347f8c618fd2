//! The words of an alert: what was seen, against which baseline, how confident the
//! baseline is, and whether a sensor alert names the same act.

use super::*;

/// Whether a drift alert's subject is the act a sensor alert names: the same
/// executable, or the same file (as a path pattern). Exact, never a substring.
pub(super) fn subject_is_act(alert: &Alert, sensor: &PendingSensor) -> bool {
    let (exe, file) = (sensor.exe.as_deref(), sensor.file.as_deref());
    match alert.dimension {
        Dimension::Process => {
            exe.is_some_and(|e| alert.subject.split(" (parent ").next() == Some(e))
        }
        Dimension::Args => {
            exe.is_some_and(|e| alert.subject == e || alert.subject.starts_with(&format!("{e} ")))
        }
        Dimension::File => file.is_some_and(|f| {
            alert.subject.split_once(' ').map(|(_, p)| p) == Some(crate::pattern::fold(f).as_str())
        }),
        Dimension::SensitiveRead => file.is_some_and(|f| alert.subject == crate::pattern::fold(f)),
        // "connect tcp 10.96.0.1:443": the same remote end.
        Dimension::Network => sensor
            .remote
            .as_deref()
            .is_some_and(|r| alert.subject.rsplit(' ').next() == Some(r)),
        Dimension::Exec | Dimension::LogTemplate | Dimension::Rate | Dimension::Health => false,
    }
}

pub(super) fn matches_act(sensor: &PendingSensor, obs: &Observation, kind: &EventKind) -> bool {
    let (exe, file) = (sensor.exe.as_deref(), sensor.file.as_deref());
    let by_exe =
        exe.is_some_and(|e| obs.exe == Some(e) || kind.process().is_some_and(|p| p.exe == e));
    let by_file =
        file.is_some_and(|f| matches!(kind, EventKind::FileAccess { path, .. } if path == f));
    let by_remote = sensor.remote.as_deref().is_some_and(|r| {
        matches!(kind, EventKind::Network { address, port, .. } if r.rsplit_once(':') == Some((address.as_str(), port.to_string().as_str())))
    });
    by_exe || by_file || by_remote
}

/// Whether a dimension still growing may absorb this new entry (learn it, report it
/// at low): everything but what is critical, or high outside the network (a package
/// manager, a write below `/etc` or a binary directory, an exec-in).
pub(super) fn absorbed_by_growth(obs: &Observation) -> bool {
    match obs.severity {
        Severity::Critical => false,
        Severity::High => obs.dimension == Dimension::Network,
        _ => obs.dimension != Dimension::SensitiveRead,
    }
}

/// Why a new entry was learned after the learning period and reported at low.
pub(super) fn growing_text(
    service: &str,
    state: &ServiceState,
    obs: &Observation,
    max: u64,
) -> String {
    let n = state.novelty(obs.dimension).copied().unwrap_or_default();
    let until = state
        .growth_until
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    format!(
        "Baseline still growing: `{}` is new for {service}, whose {} were still growing when learning ended \
         ({:.0}% of the latest observations were new, {} entries learned from {} observations). It was learned \
         and is reported at low while the dimension settles ({} of at most {max} entries learned so far, until {until}).",
        obs.key,
        obs.dimension.plural(),
        n.rate * 100.0,
        n.new,
        n.seen,
        n.grown,
    )
}

/// Why a new entry after learning was reported at low: it is kin to what was learned.
pub(super) fn kin_text(
    service: &str,
    state: &ServiceState,
    obs: &Observation,
    kin: &crate::generalise::Kinship,
    learned: bool,
) -> String {
    let (what, shared) = if obs.dimension == Dimension::Network {
        // A named destination's pattern is a shape of its first label.
        (
            "destinations",
            if kin.pattern.contains("<[") {
                "shape"
            } else {
                "network"
            },
        )
    } else {
        ("names", "shape")
    };
    let outcome = if learned {
        format!(
            "Now that {} share it, `{}` is learned and later {what} of it are known.",
            kin.seen,
            kin.key.as_deref().unwrap_or_default()
        )
    } else {
        format!(
            "It is reported at low, and learned once {} {what} of it are seen.",
            kin.enough
        )
    };
    let mut listed: Vec<String> = kin
        .anchors
        .iter()
        .take(3)
        .map(|a| format!("`{a}`"))
        .collect();
    if kin.anchors.len() > 3 {
        listed.push(format!("… ({} in all)", kin.anchors.len()));
    }
    format!(
        "`{}` is new for {service}, but of the {shared} `{}` of what it learned {}: {} \
         ({} {what} of it seen so far). {outcome}{}",
        obs.key,
        kin.pattern,
        learning_text(state),
        listed.join(", "),
        kin.seen,
        confidence_text(state, obs.dimension)
    )
}

/// How sure the baseline is of a dimension: how often learning still found new entries
/// in it when learning ended.
pub(super) fn confidence_text(state: &ServiceState, dimension: Dimension) -> String {
    let Some(n) = state.novelty(dimension) else {
        return String::new();
    };
    if n.seen == 0 {
        return format!(
            " Baseline confidence: no {} were seen while learning.",
            dimension.plural()
        );
    }
    format!(
        " Baseline confidence {:.0}%: {:.0}% of the latest {} seen while learning were new ({} entries from {} observations).",
        (1.0 - n.rate) * 100.0,
        n.rate * 100.0,
        dimension.plural(),
        n.new,
        n.seen
    )
}

/// Contrasts the new behaviour with what the service was seen doing.
pub(super) fn explain(service: &str, state: &ServiceState, obs: &Observation) -> String {
    if obs.dimension == Dimension::LogTemplate {
        return explain_template(service, state, obs);
    }
    let mut known: Vec<(&str, u32)> = state
        .baseline
        .iter()
        .filter(|(k, _)| k.dimension == obs.dimension)
        .filter(|(k, _)| obs.dimension != Dimension::Args || k.key.split(' ').next() == obs.exe)
        .map(|(k, e)| (k.key.as_str(), e.learned_from))
        .collect();
    // Learned generalisations first (the widest), then the rest by key.
    known.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let total = known.len();
    let what_from = if obs.dimension == Dimension::Network {
        "destinations"
    } else {
        "names"
    };
    let listed = known
        .iter()
        .take(5)
        .map(|(k, from)| match from {
            0 | 1 => format!("`{k}`"),
            n => format!("`{k}` (learned from {n} {what_from})"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let known_text = match total {
        0 => format!("it has no known {}", obs.dimension.plural()),
        n if n <= 5 => format!("known {}: {listed}", obs.dimension.plural()),
        n => format!("known {}: {listed}, … ({n} in all)", obs.dimension.plural()),
    };
    let learning = learning_text(state);
    let what = match obs.dimension {
        Dimension::SensitiveRead => format!("A read of sensitive file `{}`", obs.key),
        Dimension::Args => format!("The argument pattern `{}`", obs.key),
        _ => format!("`{}`", obs.key),
    };
    let never = if obs.dimension == Dimension::SensitiveRead {
        format!(
            "is not in the baseline of {service} (sensitive reads are never learned silently, {learning})"
        )
    } else {
        format!("was never seen for {service} {learning}")
    };
    let confidence = confidence_text(state, obs.dimension);
    format!("{what} {never}; {known_text}.{confidence}")
}

/// How the service came by its baseline.
fn learning_text(state: &ServiceState) -> String {
    match state.learned_at {
        // A service that never learned: its baseline came from a file.
        Some((_, 0)) => "(its baseline was imported, not learned)".to_owned(),
        Some((at, events)) => {
            let secs = at.0.saturating_sub(state.learning_since.0).max(0) / 1_000_000_000;
            format!(
                "in {} of learning over {} events",
                humantime::format_duration(std::time::Duration::from_secs(secs as u64)),
                events
            )
        }
        None => format!(
            "while it is still learning ({} events so far)",
            state.events
        ),
    }
}

/// A new template: what it says, an example line, and the templates the service was
/// learned with (the most frequent first, with their shares).
fn explain_template(service: &str, state: &ServiceState, obs: &Observation) -> String {
    let logs = &state.logs;
    let id: Option<u32> = obs.key.strip_prefix('#').and_then(|i| i.parse().ok());
    let text = id
        .and_then(|id| logs.miner().template(id))
        .map(|t| t.text())
        .unwrap_or_default();
    let example = id
        .and_then(|id| logs.info(id))
        .map(|i| format!(" Example: `{}`.", i.example))
        .unwrap_or_default();
    let weight = match weigh(&text).1 {
        Some(word) => format!(
            " It says `{word}`, which weighs it {}.",
            format!("{:?}", obs.severity).to_lowercase()
        ),
        None => String::new(),
    };
    let mut known: Vec<(&str, u64)> = state
        .baseline
        .iter()
        .filter(|(k, _)| k.dimension == Dimension::LogTemplate)
        .map(|(k, e)| (k.key.as_str(), e.count))
        .collect();
    known.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let total: u64 = known.iter().map(|(_, n)| n).sum();
    let listed = known
        .iter()
        .take(5)
        .map(|(key, n)| {
            let text = key
                .strip_prefix('#')
                .and_then(|i| i.parse().ok())
                .and_then(|i| logs.miner().template(i))
                .map(|t| t.text())
                .unwrap_or_default();
            format!("`{text}` {:.1}%", *n as f64 * 100.0 / total.max(1) as f64)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let known_text = match known.len() {
        0 => "it had no known log templates".to_owned(),
        n => format!("its {n} known templates over {total} lines, most frequent first: {listed}"),
    };
    format!(
        "New log template `{text}` for {service}, never seen {}.{weight}{example} Baseline: {known_text}.{}",
        learning_text(state),
        confidence_text(state, Dimension::LogTemplate)
    )
    .replace(".. ", ". ")
}
