//! What a control's expressions read: the fields of `event`, `alert`, `facts` and
//! `service` they select, found once in the expressions, and those fields' values as
//! the bytes a remembered result is keyed by.

use cel::common::ast::{EntryExpr, Expr, IdedExpr};

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
            if !bound.contains(name)
                && let Some(root) = Root::named(name)
            {
                out.push((root, Vec::new(), false));
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
                        if !bound.contains(name)
                            && let Some(root) = Root::named(name)
                        {
                            fields.reverse();
                            out.push((root, fields, select.test));
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
pub(super) fn write_value(input: &Input, values: &Values<'_>, out: &mut Vec<u8>) {
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
}
