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
//!
//! A control is first asked part by part: its expressions are split at their boolean
//! operators (`&&`, `||`, `!`), each part remembered by what it alone reads, and a run
//! asks only the parts it needs, as CEL would. `!(shell(exe) && interactive(args))`
//! then reads `args` only for shells, so a service starting the same program with new
//! arguments each time still reuses its result. A part that errs or gives no bool
//! sends the whole control to the interpreter, which says exactly why.

use std::collections::HashMap;

use cel::common::ast::{Expr, IdedExpr, operators};

mod reads;

use reads::write_value;
pub(crate) use reads::{Input, Values};

use crate::engine::Status;

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

/// A control's expression split at its boolean operators; the leaves are parts, each
/// remembered on its own (an index into [`Memo`]'s keyed expressions).
#[derive(Debug)]
enum Plan {
    Part(usize),
    Not(Box<Plan>),
    And(Box<Plan>, Box<Plan>),
    Or(Box<Plan>, Box<Plan>),
}

/// A part of a control's expression: evaluated on its own, remembered by what it reads.
struct Part {
    expr: IdedExpr,
    /// Its key's id in [`Memo::reads`].
    id: usize,
}

/// Remembered results, bounded: when full it starts over.
///
/// Each distinct input value is interned as a number, once per trigger however many
/// controls read it; a control's (or part's) key is its id and the numbers of its
/// inputs. Controls are ids `0..n`, their parts the ids after them.
pub(crate) struct Memo {
    capacity: usize,
    /// The distinct inputs of the catalog.
    inputs: Vec<Input>,
    /// Per control, then per part, the indexes of its inputs (`None`: not remembered).
    reads: Vec<Option<Vec<usize>>>,
    /// Per control, its `applies` and `check` split into parts.
    plans: Vec<(Option<Plan>, Plan)>,
    parts: Vec<Part>,
    interned: HashMap<Box<[u8]>, u32>,
    results: HashMap<Box<[u32]>, Result>,
    /// This trigger's number for each input, once computed.
    current: Vec<Option<u32>>,
    key: Vec<u32>,
    bytes: Vec<u8>,
    /// Runs answered from memory, and runs evaluated (in part or whole).
    pub hits: u64,
    pub misses: u64,
}

/// What reading a control's or part's key found.
enum Lookup {
    Found(Result),
    Missing,
    Unkeyed,
}

/// The inputs of `exprs` as indexes into `inputs` (added there when new).
fn intern_inputs<'a>(
    exprs: impl IntoIterator<Item = &'a IdedExpr>,
    inputs: &mut Vec<Input>,
) -> Option<Vec<usize>> {
    let mut read = Vec::new();
    for expr in exprs {
        reads::inputs(expr, &mut read)?;
    }
    read.dedup();
    Some(
        read.into_iter()
            .map(|input| intern_input(input, inputs))
            .collect(),
    )
}

fn intern_input(input: Input, inputs: &mut Vec<Input>) -> usize {
    match inputs.iter().position(|i| *i == input) {
        Some(at) => at,
        None => {
            inputs.push(input);
            inputs.len() - 1
        }
    }
}

/// Splits `expr` at its boolean operators, adding its parts (with their reads) to
/// `parts` and `reads`.
fn split(
    expr: &IdedExpr,
    parts: &mut Vec<Part>,
    reads: &mut Vec<Option<Vec<usize>>>,
    inputs: &mut Vec<Input>,
) -> Plan {
    if let Expr::Call(call) = &expr.expr
        && call.target.is_none()
    {
        match (call.func_name.as_str(), call.args.as_slice()) {
            (operators::LOGICAL_AND, [a, b]) => {
                return Plan::And(
                    Box::new(split(a, parts, reads, inputs)),
                    Box::new(split(b, parts, reads, inputs)),
                );
            }
            (operators::LOGICAL_OR, [a, b]) => {
                return Plan::Or(
                    Box::new(split(a, parts, reads, inputs)),
                    Box::new(split(b, parts, reads, inputs)),
                );
            }
            (operators::LOGICAL_NOT, [a]) => {
                return Plan::Not(Box::new(split(a, parts, reads, inputs)));
            }
            _ => {}
        }
    }
    let id = reads.len();
    reads.push(intern_inputs([expr], inputs));
    parts.push(Part {
        expr: expr.clone(),
        id,
    });
    Plan::Part(parts.len() - 1)
}

impl Memo {
    /// `controls`: per control, its `applies` (if any) and `check` expressions.
    pub fn new<'a>(
        capacity: usize,
        controls: impl IntoIterator<Item = (Option<&'a IdedExpr>, &'a IdedExpr)>,
    ) -> Memo {
        let controls: Vec<_> = controls.into_iter().collect();
        let mut inputs: Vec<Input> = Vec::new();
        let mut reads: Vec<Option<Vec<usize>>> = controls
            .iter()
            .map(|&(applies, check)| intern_inputs(applies.into_iter().chain([check]), &mut inputs))
            .collect();
        let mut parts = Vec::new();
        let plans = controls
            .iter()
            .map(|(applies, check)| {
                let applies = applies.map(|a| split(a, &mut parts, &mut reads, &mut inputs));
                let check = split(check, &mut parts, &mut reads, &mut inputs);
                (applies, check)
            })
            .collect();
        Memo {
            capacity,
            current: vec![None; inputs.len()],
            inputs,
            reads,
            plans,
            parts,
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
        if self.capacity == 0 {
            self.misses += 1;
            return Recall::Off;
        }
        match self.lookup(control, values) {
            Lookup::Found(result) => {
                self.hits += 1;
                Recall::Hit(result)
            }
            Lookup::Missing => {
                self.misses += 1;
                Recall::Miss
            }
            Lookup::Unkeyed => {
                self.misses += 1;
                Recall::Off
            }
        }
    }

    /// Reads the key of control or part `id` on this trigger's values (left in
    /// `self.key` for [`Memo::remember`]).
    fn lookup(&mut self, id: usize, values: &Values<'_>) -> Lookup {
        let Some(reads) = &self.reads[id] else {
            return Lookup::Unkeyed;
        };
        self.key.clear();
        self.key.push(id as u32);
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
            Some(result) => Lookup::Found(result.clone()),
            None => Lookup::Missing,
        }
    }

    /// A control's result asked part by part: each part from memory, or from `eval` (a
    /// bool, or `None` when it errs or gives another value). `None` when the control
    /// must be evaluated whole (a part it needed erred, or nothing is remembered); then
    /// nothing is counted and [`Memo::recall`] follows.
    pub fn by_parts(
        &mut self,
        control: usize,
        values: &Values<'_>,
        eval: &mut dyn FnMut(&IdedExpr) -> Option<bool>,
    ) -> Option<Result> {
        if self.capacity == 0 {
            return None;
        }
        let plans = std::mem::take(&mut self.plans);
        let mut evaluated = false;
        let (applies, check) = &plans[control];
        let result = (|| {
            if let Some(applies) = applies
                && !self.ask(applies, values, eval, &mut evaluated)?
            {
                return Some((Status::NotApplicable, None));
            }
            let pass = self.ask(check, values, eval, &mut evaluated)?;
            Some((if pass { Status::Pass } else { Status::Fail }, None))
        })();
        self.plans = plans;
        if result.is_some() {
            if evaluated {
                self.misses += 1;
            } else {
                self.hits += 1;
            }
        }
        result
    }

    /// One plan's value, as CEL's operators give it when every part they ask is a bool:
    /// `&&` and `||` ask their right side only when the left does not decide.
    fn ask(
        &mut self,
        plan: &Plan,
        values: &Values<'_>,
        eval: &mut dyn FnMut(&IdedExpr) -> Option<bool>,
        evaluated: &mut bool,
    ) -> Option<bool> {
        match plan {
            Plan::Not(p) => self.ask(p, values, eval, evaluated).map(|b| !b),
            Plan::And(a, b) => match self.ask(a, values, eval, evaluated)? {
                false => Some(false),
                true => self.ask(b, values, eval, evaluated),
            },
            Plan::Or(a, b) => match self.ask(a, values, eval, evaluated)? {
                true => Some(true),
                false => self.ask(b, values, eval, evaluated),
            },
            Plan::Part(i) => {
                let id = self.parts[*i].id;
                let found = match self.lookup(id, values) {
                    // A part that erred sends its control to the interpreter again.
                    Lookup::Found((status, _)) => {
                        return (status != Status::NotApplicable).then_some(status == Status::Pass);
                    }
                    found => found,
                };
                *evaluated = true;
                let b = eval(&self.parts[*i].expr);
                if matches!(found, Lookup::Missing) {
                    let status = match b {
                        Some(true) => Status::Pass,
                        Some(false) => Status::Fail,
                        None => Status::NotApplicable,
                    };
                    self.results.insert(self.key[..].into(), (status, None));
                }
                b
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

    #[test]
    fn results_are_reused_exactly_when_every_read_field_is_equal() {
        let program =
            cel::Program::compile(r#"event.process.exe == "/bin/sh" && has(event.process.uid)"#)
                .unwrap();
        let mut memo = Memo::new(100, [(None, program.expression())]);
        assert!(memo.remembers(0));
        let facts = serde_json::json!({});
        let recall = |memo: &mut Memo, event: serde_json::Value| {
            memo.begin();
            let values = values(&event, &facts);
            match memo.recall(0, &values) {
                Recall::Hit(r) => Some(r.0),
                Recall::Miss => {
                    memo.remember(&(Status::Pass, None));
                    None
                }
                Recall::Off => panic!("control 0 is remembered"),
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
        assert_eq!((memo.hits, memo.misses), (2, 4));
        // Off: nothing is remembered.
        let program = cel::Program::compile("event.kind == 'x'").unwrap();
        let mut off = Memo::new(0, [(None, program.expression())]);
        off.begin();
        let e = serde_json::json!({"kind": "x"});
        let values = values(&e, &facts);
        assert!(matches!(off.recall(0, &values), Recall::Off));
        assert!(off.by_parts(0, &values, &mut |_| Some(true)).is_none());
    }

    fn values<'a>(event: &'a serde_json::Value, facts: &'a serde_json::Value) -> Values<'a> {
        Values {
            event,
            alert: None,
            facts,
            service: "api",
        }
    }

    /// Runs control 0 by parts on `event`, evaluating each asked part with CEL; returns
    /// the result and the parts evaluated.
    fn by_parts(memo: &mut Memo, event: serde_json::Value) -> (Option<Result>, Vec<String>) {
        let facts = serde_json::json!({});
        memo.begin();
        let values = values(&event, &facts);
        let mut ctx = cel::Context::default();
        ctx.add_variable("event", event.clone()).unwrap();
        let mut asked = Vec::new();
        let result = memo.by_parts(0, &values, &mut |part| {
            asked.push(format!("{:?}", part.expr).chars().take(40).collect());
            match cel::Value::resolve(part, &ctx) {
                Ok(cel::Value::Bool(b)) => Some(b),
                _ => None,
            }
        });
        (result, asked)
    }

    #[test]
    fn a_part_no_run_needs_is_neither_read_nor_evaluated() {
        let applies = cel::Program::compile("has(event.process)").unwrap();
        let check = cel::Program::compile(
            r#"!(event.process.exe == "/bin/sh" && event.process.args.exists(a, a == "-i"))"#,
        )
        .unwrap();
        let mut memo = Memo::new(100, [(Some(applies.expression()), check.expression())]);
        let exec =
            |exe: &str, arg: &str| serde_json::json!({"process": {"exe": exe, "args": [arg]}});
        let log = serde_json::json!({"kind": "log"});
        // Each run in turn: the event, its result, and how many parts it evaluated.
        let runs = [
            // The first asks all it needs: `applies`, and the executable.
            (exec("/app/server", "--port=1"), Status::Pass, 2),
            // New arguments of a program that is not a shell: nothing evaluated.
            (exec("/app/server", "--port=2"), Status::Pass, 0),
            // A shell asks its arguments, each new list once.
            (exec("/bin/sh", "-i"), Status::Fail, 2),
            (exec("/bin/sh", "-i"), Status::Fail, 0),
            (exec("/bin/sh", "-c"), Status::Pass, 1),
            // Not applicable without a process, whatever else the event holds.
            (log, Status::NotApplicable, 1),
        ];
        for (i, (event, status, evaluated)) in runs.into_iter().enumerate() {
            let (got, asked) = by_parts(&mut memo, event);
            assert_eq!(got, Some((status, None)), "run {i}");
            assert_eq!(asked.len(), evaluated, "run {i}: {asked:?}");
        }
        assert_eq!((memo.hits, memo.misses), (2, 4));
    }

    #[test]
    fn a_part_that_errs_sends_its_control_to_the_interpreter() {
        let check =
            cel::Program::compile(r#"event.process.exe == "/bin/sh" || event.size > 3"#).unwrap();
        let mut memo = Memo::new(100, [(None, check.expression())]);
        // `event.size` is missing: the part errs, and is remembered to err.
        for _ in 0..2 {
            let (got, _) = by_parts(&mut memo, serde_json::json!({"process": {"exe": "/app"}}));
            assert_eq!(got, None);
        }
        // The left part decides without the right one.
        let (got, _) = by_parts(
            &mut memo,
            serde_json::json!({"process": {"exe": "/bin/sh"}}),
        );
        assert_eq!(got, Some((Status::Pass, None)));
        // Nothing is counted for a run sent to the interpreter: `recall` counts it.
        assert_eq!((memo.hits, memo.misses), (0, 1));
    }
}
