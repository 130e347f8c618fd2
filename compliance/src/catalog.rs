//! The control catalog: controls as data (TOML), checked in CEL, the Common Expression
//! Language Kubernetes admission policies use. The built-in catalog ships in the binary;
//! users add controls in files of the same format, and every problem in a file is
//! reported with the file, the line and what is wrong.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use detect::{AlertKind, Severity};
use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

/// The built-in catalog's text.
pub const BUILTIN: &str = include_str!("../controls/builtin.toml");

/// A framework a control refers to, with the version its section numbers follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Framework {
    /// CIS Docker Benchmark v1.6.0.
    CisDocker,
    /// CIS Kubernetes Benchmark v1.8.0.
    CisKubernetes,
    /// NIST SP 800-190.
    Nist800190,
    /// NIST SP 800-53 rev. 5.
    Nist80053,
    /// PCI DSS v4.0.
    PciDss,
}

impl Framework {
    pub const ALL: [Framework; 5] = [
        Framework::CisDocker,
        Framework::CisKubernetes,
        Framework::Nist800190,
        Framework::Nist80053,
        Framework::PciDss,
    ];

    /// The prefix references use (`pci-dss:11.5.2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Framework::CisDocker => "cis-docker",
            Framework::CisKubernetes => "cis-kubernetes",
            Framework::Nist800190 => "nist-800-190",
            Framework::Nist80053 => "nist-800-53",
            Framework::PciDss => "pci-dss",
        }
    }

    pub fn parse(s: &str) -> Option<Framework> {
        Framework::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// How a section id of this framework looks.
    fn id_pattern(self) -> &'static Regex {
        static SECTION: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"^\d+(\.\d+)+$").expect("valid regex"));
        static NIST_53: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"^[A-Z]{2}-\d+(\(\d+\))?$").expect("valid regex"));
        static PCI: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"^\d+(\.\d+)*$").expect("valid regex"));
        match self {
            Framework::CisDocker | Framework::CisKubernetes | Framework::Nist800190 => &SECTION,
            Framework::Nist80053 => &NIST_53,
            Framework::PciDss => &PCI,
        }
    }
}

/// A section of a framework.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    pub framework: Framework,
    pub id: String,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.framework.as_str(), self.id)
    }
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, String> {
        let (framework, id) = s
            .split_once(':')
            .ok_or_else(|| format!("reference {s:?} is not framework:section"))?;
        let framework = Framework::parse(framework).ok_or_else(|| {
            format!(
                "reference {s:?}: unknown framework {framework:?} (known: {})",
                Framework::ALL.map(Framework::as_str).join(", ")
            )
        })?;
        if !framework.id_pattern().is_match(id) {
            return Err(format!(
                "reference {s:?}: {id:?} is not a {} section id",
                framework.as_str()
            ));
        }
        Ok(Reference {
            framework,
            id: id.to_owned(),
        })
    }
}

/// Event kinds a control may be fired by: the native format's `kind` values.
pub use ingest::decode::NATIVE_KINDS as EVENT_KINDS;

/// Alert kinds by the name configuration and catalogs use.
pub const ALERT_KINDS: [AlertKind; 8] = [
    AlertKind::Process,
    AlertKind::File,
    AlertKind::SensitiveRead,
    AlertKind::Network,
    AlertKind::Exec,
    AlertKind::BaselineCap,
    AlertKind::LogTemplate,
    AlertKind::Rate,
];

/// What fires a control.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Triggers {
    pub alerts: Vec<AlertKind>,
    pub events: Vec<&'static str>,
}

/// A compiled control.
#[derive(Clone)]
pub struct Control {
    pub id: String,
    pub title: String,
    pub rationale: String,
    pub severity: Severity,
    pub remediation: String,
    pub references: Vec<Reference>,
    pub triggers: Triggers,
    /// When it is false the control does not apply (`not_applicable`).
    pub applies: Option<Arc<cel::Program>>,
    pub applies_source: Option<String>,
    /// True passes, false fails.
    pub check: Arc<cel::Program>,
    pub check_source: String,
    /// The file it came from (`builtin.toml` for the built-in catalog).
    pub file: String,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control")
            .field("id", &self.id)
            .field("file", &self.file)
            .field("check", &self.check_source)
            .finish_non_exhaustive()
    }
}

/// A problem in a control file: the file, the 1-based line, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct CatalogError {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    control: Vec<Spanned<RawControl>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    id: Spanned<String>,
    title: String,
    rationale: String,
    severity: Spanned<String>,
    remediation: String,
    references: Spanned<Vec<Spanned<String>>>,
    triggers: Spanned<RawTriggers>,
    #[serde(default)]
    applies: Option<Spanned<String>>,
    check: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    #[serde(default)]
    alerts: Vec<Spanned<String>>,
    #[serde(default)]
    events: Vec<Spanned<String>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

static ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+$").expect("valid regex"));

/// The catalog: controls in file order, ids unique.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    controls: Vec<Control>,
}

impl Catalog {
    /// The built-in catalog.
    pub fn builtin() -> Catalog {
        let mut c = Catalog::default();
        c.add_text("builtin.toml", BUILTIN)
            .expect("the built-in catalog is valid (its tests say so)");
        c
    }

    /// The built-in catalog and the controls of the given files, in order.
    pub fn load(files: &[impl AsRef<Path>]) -> Result<Catalog, CatalogError> {
        let mut c = Catalog::builtin();
        for f in files {
            let path = f.as_ref();
            let text = std::fs::read_to_string(path).map_err(|e| CatalogError {
                file: path.display().to_string(),
                line: 0,
                problem: format!("cannot read: {e}"),
            })?;
            c.add_text(&path.display().to_string(), &text)?;
        }
        Ok(c)
    }

    pub fn controls(&self) -> &[Control] {
        &self.controls
    }

    pub fn get(&self, id: &str) -> Option<&Control> {
        self.controls.iter().find(|c| c.id == id)
    }

    /// Parses and checks one file's controls and adds them; on any problem nothing is
    /// added.
    pub fn add_text(&mut self, file: &str, text: &str) -> Result<(), CatalogError> {
        let err = |offset: usize, problem: String| CatalogError {
            file: file.to_owned(),
            line: line_of(text, offset),
            problem,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            err(offset, e.message().to_owned())
        })?;
        let mut seen: HashMap<String, String> = self
            .controls
            .iter()
            .map(|c| (c.id.clone(), c.file.clone()))
            .collect();
        let mut added = Vec::new();
        for raw in raw.control {
            let at = raw.span().start;
            let raw = raw.into_inner();
            let id = raw.id.get_ref().clone();
            if !ID.is_match(&id) {
                return Err(err(
                    raw.id.span().start,
                    format!("control id {id:?} is not like DW-RT-001 (capitals, digits, dashes)"),
                ));
            }
            if let Some(other) = seen.insert(id.clone(), file.to_owned()) {
                return Err(err(
                    raw.id.span().start,
                    format!("control id {id:?} is already defined in {other}"),
                ));
            }
            let severity: Severity =
                serde_json::from_value(serde_json::Value::String(raw.severity.get_ref().clone()))
                    .map_err(|_| {
                    err(
                        raw.severity.span().start,
                        format!(
                            "{id}: severity {:?} is not one of info, low, medium, high, critical",
                            raw.severity.get_ref()
                        ),
                    )
                })?;
            let mut references = Vec::new();
            for r in raw.references.get_ref() {
                references.push(
                    Reference::parse(r.get_ref())
                        .map_err(|p| err(r.span().start, format!("{id}: {p}")))?,
                );
            }
            if references.is_empty() {
                return Err(err(
                    raw.references.span().start,
                    format!("{id}: a control needs at least one framework reference"),
                ));
            }
            let triggers_at = raw.triggers.span().start;
            let raw_triggers = raw.triggers.into_inner();
            let mut triggers = Triggers::default();
            for a in &raw_triggers.alerts {
                let kind = ALERT_KINDS
                    .into_iter()
                    .find(|k| k.as_str() == a.get_ref())
                    .ok_or_else(|| {
                        err(
                            a.span().start,
                            format!(
                                "{id}: unknown alert kind {:?} in triggers (known: {})",
                                a.get_ref(),
                                ALERT_KINDS.map(AlertKind::as_str).join(", ")
                            ),
                        )
                    })?;
                triggers.alerts.push(kind);
            }
            for e in &raw_triggers.events {
                let kind = EVENT_KINDS
                    .into_iter()
                    .find(|k| k == e.get_ref())
                    .ok_or_else(|| {
                        err(
                            e.span().start,
                            format!(
                                "{id}: unknown event kind {:?} in triggers (known: {})",
                                e.get_ref(),
                                EVENT_KINDS.join(", ")
                            ),
                        )
                    })?;
                triggers.events.push(kind);
            }
            if triggers.alerts.is_empty() && triggers.events.is_empty() {
                return Err(err(
                    triggers_at,
                    format!("{id}: triggers names no alert or event kind, so it would never run"),
                ));
            }
            let compile = |source: &Spanned<String>, what: &str| {
                cel::Program::compile(source.get_ref())
                    .map(Arc::new)
                    .map_err(|e| {
                        err(
                            source.span().start,
                            format!(
                                "{id}: {what} is not valid CEL: {}",
                                one_line(&e.to_string())
                            ),
                        )
                    })
            };
            let check = compile(&raw.check, "check")?;
            let applies = raw
                .applies
                .as_ref()
                .map(|a| compile(a, "applies"))
                .transpose()?;
            let _ = at;
            added.push(Control {
                id,
                title: raw.title,
                rationale: raw.rationale,
                severity,
                remediation: raw.remediation,
                references,
                triggers,
                applies,
                applies_source: raw.applies.map(Spanned::into_inner),
                check,
                check_source: raw.check.into_inner(),
                file: file.to_owned(),
            });
        }
        self.controls.extend(added);
        Ok(())
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_is_valid_and_covers_every_framework() {
        let c = Catalog::builtin();
        assert!(c.controls().len() >= 25, "{} controls", c.controls().len());
        let mut ids = std::collections::HashSet::new();
        for control in c.controls() {
            assert!(ids.insert(&control.id), "{} twice", control.id);
            assert!(!control.references.is_empty());
            assert!(!control.title.is_empty() && !control.remediation.is_empty());
        }
        for f in Framework::ALL {
            assert!(
                c.controls()
                    .iter()
                    .any(|ctl| ctl.references.iter().any(|r| r.framework == f)),
                "no control refers to {}",
                f.as_str()
            );
        }
    }

    const GOOD: &str = r#"
[[control]]
id = "ACME-001"
title = "No curl in payments"
rationale = "Payments never download anything."
severity = "medium"
remediation = "Remove curl from the image."
references = ["pci-dss:11.5.1", "nist-800-53:CM-7"]
triggers = { events = ["process_exec"] }
check = '!(has(event.process) && event.process.exe.endsWith("/curl"))'
"#;

    fn problem(text: &str) -> CatalogError {
        let mut c = Catalog::builtin();
        c.add_text("acme.toml", text).unwrap_err()
    }

    #[test]
    fn a_user_file_adds_controls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acme.toml");
        std::fs::write(&path, GOOD).unwrap();
        let c = Catalog::load(&[&path]).unwrap();
        assert_eq!(c.controls().len(), Catalog::builtin().controls().len() + 1);
        assert_eq!(c.get("ACME-001").unwrap().file, path.display().to_string());
    }

    #[test]
    fn problems_in_user_files_name_the_file_line_and_problem() {
        let e = problem(&GOOD.replace("severity = \"medium\"", "severity = \"urgent\""));
        assert_eq!((e.file.as_str(), e.line), ("acme.toml", 6));
        assert!(e.problem.contains("severity \"urgent\""), "{e}");

        let e = problem(&GOOD.replace("pci-dss:11.5.1", "pci-dss:eleven"));
        assert_eq!(e.line, 8);
        assert!(e.problem.contains("not a pci-dss section id"), "{e}");

        let e = problem(&GOOD.replace("nist-800-53:CM-7", "iso:27001"));
        assert!(e.problem.contains("unknown framework \"iso\""), "{e}");

        let e = problem(&GOOD.replace("process_exec", "process_start"));
        assert_eq!(e.line, 9);
        assert!(
            e.problem.contains("unknown event kind \"process_start\""),
            "{e}"
        );

        let e = problem(&GOOD.replace("endsWith(\"/curl\"))", "endsWith(\"/curl\""));
        assert_eq!(e.line, 10);
        assert!(e.problem.contains("check is not valid CEL"), "{e}");

        let first = Catalog::builtin().controls()[0].id.clone();
        let e = problem(&GOOD.replace("ACME-001", &first));
        assert!(e.problem.contains("already defined in builtin.toml"), "{e}");

        let e = problem(&format!("{GOOD}\nmystery = 1\n"));
        assert!(e.problem.contains("unknown field"), "{e}");
        assert_eq!(
            e.to_string(),
            format!("acme.toml:{}: {}", e.line, e.problem)
        );
    }
}
