//! Results of controls remembered by the exact inputs they read.
//!
//! A check is a pure function of the parts of `event`, `alert`, `facts` and `service` it
//! selects: CEL has no clock, no randomness and no side effects. The fields a control
//! reads are found once in its expressions; a run of the control is then keyed by the
//! bytes of those fields' values, and a repeat of the same inputs (the same binary
//! started again in the same kind of container, which is most of what a service does)
//! reuses the result instead of interpreting the expressions again.
//!
//! Keys hold the values themselves, not a hash of them, so two runs share a result
//! only when every field their control reads is equal.

use std::collections::HashMap;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};

use crate::engine::Status;

/// The variables a check can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    Event,
    Alert,
    Facts,
    Service,
}

impl Root {
    fn named(name: &str) -> Option<Root> {
        match name {
            "event" => Some(Root::Event),
            "alert" => Some(Root::Alert),
            "facts" => Some(Root::Facts),
            "service" => Some(Root::Service),
            _ => None,
        }
    }
}

/// A field a control reads: a variable and the fields selected below it (empty: the
/// whole variable), and whether only its presence is read (`has(v.a.b)`).
pub(crate) type Input = (Root, Vec<String>, bool);

/// The inputs of an expression, or `None` when it cannot be keyed safely.
pub(crate) fn inputs(expr: &IdedExpr, out: &mut Vec<Input>) -> Option<()> {
    walk(expr, &mut Vec::new(), out)
}

fn walk(expr: &IdedExpr, bound: &mut Vec<String>, out: &mut Vec<Input>) -> Option<()> {
    match &expr.expr {
        Expr::Unspecified => return None,
        Expr::Literal(_) => {}
        Expr::Ident(name) => {
            if !bound.contains(name) {
                if let Some(root) = Root::named(name) {
                    out.push((root, Vec::new(), false));
                }
            }
        }
        Expr::Select(select) => {
            // A chain `v.a.b` rooted at a variable reads that one field.
            let mut fields = vec![select.field.clone()];
            let mut operand = &*select.operand;
            loop {
                match &operand.expr {
                    Expr::Select(inner) if !inner.test => {
                        fields.push(inner.field.clone());
                        operand = &inner.operand;
                    }
                    Expr::Ident(name) => {
                        if !bound.contains(name) {
                            if let Some(root) = Root::named(name) {
                                fields.reverse();
                                out.push((root, fields, select.test));
                            }
                        }
                        break;
                    }
                    _ => {
                        walk(operand, bound, out)?;
                        break;
                    }
                }
            }
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                walk(target, bound, out)?;
            }
            for arg in &call.args {
                walk(arg, bound, out)?;
            }
        }
        Expr::List(list) => {
            for e in &list.elements {
                walk(e, bound, out)?;
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                walk_entry(&entry.expr, bound, out)?;
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                walk_entry(&entry.expr, bound, out)?;
            }
        }
        Expr::Comprehension(c) => {
            walk(&c.iter_range, bound, out)?;
            walk(&c.accu_init, bound, out)?;
            let before = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.clone());
            bound.push(c.accu_var.clone());
            let inner = walk(&c.loop_cond, bound, out)
                .and_then(|()| walk(&c.loop_step, bound, out))
                .and_then(|()| walk(&c.result, bound, out));
            bound.truncate(before);
            inner?;
        }
    }
    Some(())
}

fn walk_entry(entry: &EntryExpr, bound: &mut Vec<String>, out: &mut Vec<Input>) -> Option<()> {
    match entry {
        EntryExpr::StructField(f) => walk(&f.value, bound, out),
        EntryExpr::MapEntry(e) => {
            walk(&e.key, bound, out)?;
            walk(&e.value, bound, out)
        }
    }
}

/// What a subject holds, as the JSON the checks read.
pub(crate) struct Values<'a> {
    pub event: &'a serde_json::Value,
    pub alert: Option<&'a serde_json::Value>,
    pub facts: &'a serde_json::Value,
    pub service: &'a str,
}

/// Writes one input's value as bytes: a marker when it is absent, else its JSON.
fn write_value(input: &Input, values: &Values<'_>, out: &mut Vec<u8>) {
    let (root, fields, presence) = input;
    let mut value = match root {
        Root::Event => Some(values.event),
        Root::Alert => values.alert,
        Root::Facts => Some(values.facts),
        Root::Service => {
            out.push(b'S');
            out.extend_from_slice(values.service.as_bytes());
            return;
        }
    };
    if *presence {
        // `has()` gives true or false when every level above the field is an object, and
        // otherwise what the value it stopped at gives (an error, or a missing key).
        let mut parent = value;
        for (depth, field) in fields.iter().enumerate() {
            match parent {
                Some(serde_json::Value::Object(o)) => match o.get(field) {
                    Some(v) => parent = Some(v),
                    None => {
                        out.extend_from_slice(&[b'0', depth as u8]);
                        return;
                    }
                },
                Some(other) => {
                    out.extend_from_slice(&[b'V', depth as u8]);
                    serde_json::to_writer(&mut *out, other).expect("JSON serializes");
                    return;
                }
                None => {
                    out.extend_from_slice(&[b'-', depth as u8]);
                    return;
                }
            }
        }
        out.push(b'1');
        return;
    }
    // Where the selection stopped matters too: a missing key, or a value that is not an
    // object, at one depth errs differently from another.
    let mut depth = 0u8;
    for field in fields {
        match value {
            Some(serde_json::Value::Object(o)) => {
                value = o.get(field);
                depth += 1;
            }
            _ => break,
        }
    }
    out.push(depth);
    match value {
        Some(v) => {
            out.push(b'V');
            // Serializing JSON into a Vec cannot fail.
            serde_json::to_writer(&mut *out, v).expect("JSON serializes");
        }
        None => out.push(b'-'),
    }
}

/// A control's result as remembered.
pub(crate) type Result = (Status, Option<String>);

/// What [`Memo::recall`] found.
pub(crate) enum Recall {
    Hit(Result),
    /// Evaluate, then [`Memo::remember`] the result.
    Miss,
    /// The control is not remembered (or the cache is off): evaluate.
    Off,
}

/// Remembered results, bounded: when full it starts over.
///
/// Each distinct input value is interned as a number, once per trigger however many
/// controls read it; a control's key is its index and the numbers of its inputs.
pub(crate) struct Memo {
    capacity: usize,
    /// The distinct inputs of the catalog.
    inputs: Vec<Input>,
    /// Per control, the indexes of its inputs (`None`: not remembered).
    reads: Vec<Option<Vec<usize>>>,
    interned: HashMap<Box<[u8]>, u32>,
    results: HashMap<Box<[u32]>, Result>,
    /// This trigger's number for each input, once computed.
    current: Vec<Option<u32>>,
    key: Vec<u32>,
    bytes: Vec<u8>,
    /// Runs answered from memory, and runs evaluated.
    pub hits: u64,
    pub misses: u64,
}

impl Memo {
    /// `reads`: per control, what it reads (`None`: not remembered).
    pub fn new(capacity: usize, reads: Vec<Option<Vec<Input>>>) -> Memo {
        let mut inputs: Vec<Input> = Vec::new();
        let reads: Vec<Option<Vec<usize>>> = reads
            .into_iter()
            .map(|read| {
                read.map(|read| {
                    read.into_iter()
                        .map(|input| match inputs.iter().position(|i| *i == input) {
                            Some(at) => at,
                            None => {
                                inputs.push(input);
                                inputs.len() - 1
                            }
                        })
                        .collect()
                })
            })
            .collect();
        Memo {
            capacity,
            current: vec![None; inputs.len()],
            inputs,
            reads,
            interned: HashMap::new(),
            results: HashMap::new(),
            key: Vec::new(),
            bytes: Vec::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// Whether a control can be remembered.
    #[cfg(test)]
    pub fn remembers(&self, control: usize) -> bool {
        self.reads[control].is_some()
    }

    /// Starts a trigger: its inputs are numbered afresh. A full cache starts over here,
    /// so that numbers stay valid for the whole trigger.
    pub fn begin(&mut self) {
        self.current.fill(None);
        if self.results.len() >= self.capacity || self.interned.len() >= self.capacity {
            self.results.clear();
            self.interned.clear();
        }
    }

    /// The remembered result of a control on this trigger's values, if any.
    pub fn recall(&mut self, control: usize, values: &Values<'_>) -> Recall {
        let reads = match &self.reads[control] {
            Some(reads) if self.capacity > 0 => reads,
            _ => {
                self.misses += 1;
                return Recall::Off;
            }
        };
        self.key.clear();
        self.key.push(control as u32);
        for &input in reads {
            let number = match self.current[input] {
                Some(n) => n,
                None => {
                    self.bytes.clear();
                    write_value(&self.inputs[input], values, &mut self.bytes);
                    let next = self.interned.len() as u32;
                    let n = match self.interned.get(&self.bytes[..]) {
                        Some(&n) => n,
                        None => {
                            self.interned.insert(self.bytes[..].into(), next);
                            next
                        }
                    };
                    self.current[input] = Some(n);
                    n
                }
            };
            self.key.push(number);
        }
        match self.results.get(&self.key[..]) {
            Some(result) => {
                self.hits += 1;
                Recall::Hit(result.clone())
            }
            None => {
                self.misses += 1;
                Recall::Miss
            }
        }
    }

    /// Remembers the result of the control the last [`Memo::recall`] missed.
    pub fn remember(&mut self, result: &Result) {
        self.results.insert(self.key[..].into(), result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(source: &str) -> Option<Vec<Input>> {
        let program = cel::Program::compile(source).unwrap();
        let mut out = Vec::new();
        inputs(program.expression(), &mut out).map(|()| out)
    }

    fn path(root: Root, fields: &[&str]) -> Input {
        (root, fields.iter().map(|f| f.to_string()).collect(), false)
    }

    fn presence(root: Root, fields: &[&str]) -> Input {
        (root, fields.iter().map(|f| f.to_string()).collect(), true)
    }

    #[test]
    fn a_check_reads_the_fields_it_selects() {
        let got =
            of(r#"has(event.process) && event.process.exe.matches("sh$") && facts.user != "root""#)
                .unwrap();
        assert_eq!(
            got,
            vec![
                presence(Root::Event, &["process"]),
                path(Root::Event, &["process", "exe"]),
                path(Root::Facts, &["user"]),
            ]
        );
    }

    #[test]
    fn comprehension_variables_are_not_inputs_and_may_shadow_roots() {
        let got =
            of(r#"event.process.args.exists(event, event == "-c") && service == "db""#).unwrap();
        assert_eq!(
            got,
            vec![
                path(Root::Event, &["process", "args"]),
                path(Root::Service, &[]),
            ]
        );
        // An index reads the whole value it indexes.
        assert_eq!(
            of(r#"alert["kind"] == "x""#).unwrap(),
            vec![path(Root::Alert, &[])]
        );
    }

    #[test]
    fn every_builtin_control_can_be_remembered() {
        let catalog = crate::Catalog::builtin();
        for c in catalog.controls() {
            let mut read = Vec::new();
            if let Some(applies) = &c.applies {
                assert!(
                    inputs(applies.expression(), &mut read).is_some(),
                    "{}",
                    c.id
                );
            }
            assert!(
                inputs(c.check.expression(), &mut read).is_some(),
                "{}",
                c.id
            );
            assert!(!read.is_empty(), "{} reads nothing", c.id);
        }
    }

    #[test]
    fn results_are_reused_exactly_when_every_read_field_is_equal() {
        let read = of(r#"event.process.exe == "/bin/sh" && has(event.process.uid)"#).unwrap();
        let mut memo = Memo::new(100, vec![None, Some(read)]);
        assert!(!memo.remembers(0) && memo.remembers(1));
        let facts = serde_json::json!({});
        let recall = |memo: &mut Memo, event: serde_json::Value| {
            memo.begin();
            let values = Values {
                event: &event,
                alert: None,
                facts: &facts,
                service: "api",
            };
            assert!(matches!(memo.recall(0, &values), Recall::Off));
            match memo.recall(1, &values) {
                Recall::Hit(r) => Some(r.0),
                Recall::Miss => {
                    memo.remember(&(Status::Pass, None));
                    None
                }
                Recall::Off => panic!("control 1 is remembered"),
            }
        };
        let a = serde_json::json!({"time": 1, "process": {"exe": "/bin/sh", "uid": 0}});
        assert_eq!(recall(&mut memo, a), None);
        let b = serde_json::json!({"time": 2, "process": {"exe": "/bin/sh", "uid": 0}});
        assert_eq!(recall(&mut memo, b), Some(Status::Pass), "time is not read");
        let c = serde_json::json!({"time": 1, "process": {"exe": "/bin/sh"}});
        assert_eq!(
            recall(&mut memo, c),
            None,
            "a field's absence is part of the key"
        );
        let c2 = serde_json::json!({"time": 1, "process": {"exe": "/bin/sh", "uid": 7}});
        assert_eq!(
            recall(&mut memo, c2),
            Some(Status::Pass),
            "has() reads only presence"
        );
        let c3 = serde_json::json!({"time": 1, "process": "/bin/sh"});
        assert_eq!(
            recall(&mut memo, c3),
            None,
            "has() below a non-object is its own case"
        );
        let d = serde_json::json!({"time": 1, "process": {"exe": "/bin/bash", "uid": 0}});
        assert_eq!(recall(&mut memo, d), None);
        // Control 0 is evaluated every time.
        assert_eq!((memo.hits, memo.misses), (2, 4 + 6));
        // Off: nothing is remembered.
        let mut off = Memo::new(0, vec![of("event.kind == 'x'")]);
        off.begin();
        let e = serde_json::json!({"kind": "x"});
        let values = Values {
            event: &e,
            alert: None,
            facts: &facts,
            service: "api",
        };
        assert!(matches!(off.recall(0, &values), Recall::Off));
    }
}
