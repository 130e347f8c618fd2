//! What one SQL query may produce, and for how long.
//!
//! DataFusion's memory pool accounts for the operators that buffer (sorts, joins,
//! aggregates), not for values that functions compute, nor for the result a caller
//! collects. So every query is also bounded here, in three places:
//!
//! - **Functions.** Every scalar function is wrapped. Before it runs, the functions
//!   whose output grows with an argument (`repeat`, `lpad`, `rpad`, `replace`,
//!   `regexp_replace`, `array_repeat`, `array_resize`, `range`, `generate_series`)
//!   have their output size estimated from their arguments, and refuse when it could
//!   pass the value cap. After it runs, any variable-width output (strings, binaries,
//!   lists) is measured against the value and batch caps. String concatenation with
//!   `||` is checked the same way, one operator at a time, so a chain of them never
//!   holds more than two capped values.
//! - **The result.** The root of every physical plan counts the bytes it hands out;
//!   past the result cap the query fails.
//! - **Time.** The root also holds the query's deadline. When it passes, the plan's
//!   stream is dropped, which stops every operator under it (DataFusion's operators
//!   yield cooperatively, and its spawned tasks are aborted on drop). The deadline
//!   runs from the first batch asked for, on the HTTP and the wire path alike.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{ExprSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Documentation, Expr, ExpressionPlacement, LogicalPlan, Operator,
    ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, StructFieldMapping,
    Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

/// The message of the error a query gets when its deadline passes.
pub(crate) const DEADLINE: &str = "query exceeded its time limit";

/// The caps one query runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Caps {
    /// One value a function computes (a string, a binary, a list).
    pub value_bytes: usize,
    /// One array a function computes: a batch's worth of values.
    pub batch_bytes: usize,
    /// Everything the query's result holds.
    pub result_bytes: usize,
    /// Wall-clock time from the first batch asked for.
    pub timeout: Duration,
}

fn too_large(what: &str, bytes: u128, cap: usize) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "{what} would hold {bytes} bytes, over driftwatch's SQL limit of {cap} bytes"
    ))
}

/// Wraps every scalar function the session knows (again after more are registered;
/// wrapped functions are left as they are).
pub fn bound_functions(ctx: &SessionContext, caps: Caps) {
    let functions: Vec<Arc<ScalarUDF>> = ctx.state().scalar_functions().values().cloned().collect();
    let mut seen = std::collections::HashSet::new();
    for f in functions {
        if f.inner().as_ref().downcast_ref::<Bounded>().is_some()
            || !seen.insert(f.name().to_owned())
        {
            continue;
        }
        ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
            inner: f.as_ref().clone(),
            caps,
        }));
    }
}

/// A scalar function whose output is bounded.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    caps: Caps,
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    #[allow(deprecated)]
    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        self.inner.inner().is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        if let Some(bytes) = estimate(self.inner.name(), &args.args, args.number_rows)
            && bytes > self.caps.value_bytes as u128
        {
            return Err(too_large(
                &format!("{}(…)", self.inner.name()),
                bytes,
                self.caps.value_bytes,
            ));
        }
        let out = self.inner.invoke_with_args(args)?;
        check_output(self.inner.name(), &out, self.caps)?;
        Ok(out)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        self.inner.inner().with_updated_config(config).map(|inner| {
            ScalarUDF::new_from_impl(Bounded {
                inner,
                caps: self.caps,
            })
        })
    }

    /// The function's own simplification (`arrow_cast` depends on it), with every
    /// function call in its answer bounded too: it may rebuild the call with the
    /// unwrapped function.
    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> DfResult<ExprSimplifyResult> {
        Ok(match self.inner.simplify(args, info)? {
            ExprSimplifyResult::Simplified(e) => {
                ExprSimplifyResult::Simplified(bound_calls(e, self.caps)?)
            }
            original => original,
        })
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.inner().conditional_arguments(args)
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> DfResult<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> DfResult<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> DfResult<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<StructFieldMapping> {
        self.inner.inner().struct_field_mapping(literal_args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.placement(args)
    }
}

/// Wraps every scalar function call in `e` that is not bounded yet.
fn bound_calls(e: Expr, caps: Caps) -> DfResult<Expr> {
    e.transform_up(|e| match e {
        Expr::ScalarFunction(f) if f.func.inner().as_ref().downcast_ref::<Bounded>().is_none() => {
            let func = Arc::new(ScalarUDF::new_from_impl(Bounded {
                inner: f.func.as_ref().clone(),
                caps,
            }));
            Ok(Transformed::yes(Expr::ScalarFunction(
                ScalarFunction::new_udf(func, f.args),
            )))
        }
        e => Ok(Transformed::no(e)),
    })
    .map(|t| t.data)
}

/// The largest value the functions that multiply their input could produce, in bytes,
/// from their arguments; `None` for every other function.
fn estimate(name: &str, args: &[ColumnarValue], rows: usize) -> Option<u128> {
    let len = |i: usize| args.get(i).map_or(0, max_len);
    let int = |i: usize| args.get(i).map_or(0, max_int).max(0) as u128;
    Some(match name {
        "repeat" => len(0) * int(1),
        // The length counts characters, of up to four bytes each.
        "lpad" | "rpad" => int(1) * 4,
        "replace" => {
            let from = args.get(1).map_or(0, min_len).max(1);
            len(0) + (len(0) / from + 1) * len(2)
        }
        // Every match (at most one per position) emits the replacement, and each group
        // reference in it repeats at most the whole input.
        "regexp_replace" => (len(0) + 1) * len(2) + len(0) * (len(2) / 2 + 1),
        "array_repeat" => int(1) * len(0).max(8),
        "array_resize" => int(1) * 8,
        "range" | "generate_series" => series_len(args, rows) * 8,
        _ => return None,
    })
}

/// The largest byte length (strings, binaries) or element count (lists) among the
/// values of an argument.
fn max_len(v: &ColumnarValue) -> u128 {
    lens(v).into_iter().max().unwrap_or(0) as u128
}

fn min_len(v: &ColumnarValue) -> u128 {
    lens(v).into_iter().min().unwrap_or(0) as u128
}

fn lens(v: &ColumnarValue) -> Vec<usize> {
    let array = match v {
        ColumnarValue::Array(a) => a.clone(),
        ColumnarValue::Scalar(s) => match s.to_array() {
            Ok(a) => a,
            Err(_) => return vec![s.size()],
        },
    };
    value_lens(&array)
}

/// Byte length of each value of a variable-width array (element count for lists).
fn value_lens(a: &ArrayRef) -> Vec<usize> {
    fn spans<O: arrow::array::OffsetSizeTrait>(offsets: &[O]) -> Vec<usize> {
        offsets
            .windows(2)
            .map(|w| (w[1] - w[0]).as_usize())
            .collect()
    }
    match a.data_type() {
        DataType::Utf8 => spans(a.as_string::<i32>().value_offsets()),
        DataType::LargeUtf8 => spans(a.as_string::<i64>().value_offsets()),
        DataType::Binary => spans(a.as_binary::<i32>().value_offsets()),
        DataType::LargeBinary => spans(a.as_binary::<i64>().value_offsets()),
        DataType::Utf8View => a
            .as_string_view()
            .views()
            .iter()
            .map(|v| *v as u32 as usize)
            .collect(),
        DataType::BinaryView => a
            .as_binary_view()
            .views()
            .iter()
            .map(|v| *v as u32 as usize)
            .collect(),
        DataType::List(_) => spans(a.as_list::<i32>().value_offsets()),
        DataType::LargeList(_) => spans(a.as_list::<i64>().value_offsets()),
        _ => vec![a.get_array_memory_size() / a.len().max(1)],
    }
}

/// The largest integer among an argument's values (0 when it is not an integer).
fn max_int(v: &ColumnarValue) -> i64 {
    ints(v).into_iter().flatten().max().unwrap_or(0)
}

fn ints(v: &ColumnarValue) -> Vec<Option<i64>> {
    let array = match v {
        ColumnarValue::Array(a) => a.clone(),
        ColumnarValue::Scalar(s) => match s.to_array() {
            Ok(a) => a,
            Err(_) => return vec![None],
        },
    };
    if !array.data_type().is_integer() {
        return vec![None; array.len()];
    }
    match arrow::compute::cast(&array, &DataType::Int64) {
        Ok(a) => a
            .as_primitive::<arrow::datatypes::Int64Type>()
            .iter()
            .collect(),
        Err(_) => vec![None; array.len()],
    }
}

/// The longest list `range`/`generate_series` could return for these arguments:
/// integers, or dates and timestamps stepped by an interval (a month counted as its
/// shortest, 28 days).
fn series_len(args: &[ColumnarValue], rows: usize) -> u128 {
    const DAY: i128 = 86_400_000_000_000;
    let rows = rows.max(1);
    let at = |v: &ColumnarValue, i: usize| -> Option<ScalarValue> {
        match v {
            ColumnarValue::Scalar(s) => Some(s.clone()),
            ColumnarValue::Array(a) => {
                ScalarValue::try_from_array(a, i.min(a.len().checked_sub(1)?)).ok()
            }
        }
    };
    // Any point in time or integer, in a common unit (nanoseconds for time).
    let point = |s: &ScalarValue| -> Option<i128> {
        match s {
            ScalarValue::Date32(Some(d)) => Some(i128::from(*d) * DAY),
            ScalarValue::Date64(Some(ms)) => Some(i128::from(*ms) * 1_000_000),
            ScalarValue::TimestampSecond(Some(v), _) => Some(i128::from(*v) * 1_000_000_000),
            ScalarValue::TimestampMillisecond(Some(v), _) => Some(i128::from(*v) * 1_000_000),
            ScalarValue::TimestampMicrosecond(Some(v), _) => Some(i128::from(*v) * 1_000),
            ScalarValue::TimestampNanosecond(Some(v), _) => Some(i128::from(*v)),
            s if s.data_type().is_integer() => {
                s.cast_to(&DataType::Int64).ok().and_then(|v| match v {
                    ScalarValue::Int64(Some(v)) => Some(i128::from(v)),
                    _ => None,
                })
            }
            _ => None,
        }
    };
    let step = |s: &ScalarValue| -> Option<i128> {
        match s {
            ScalarValue::IntervalMonthDayNano(Some(v)) => Some(
                i128::from(v.months) * 28 * DAY
                    + i128::from(v.days) * DAY
                    + i128::from(v.nanoseconds),
            ),
            ScalarValue::IntervalDayTime(Some(v)) => {
                Some(i128::from(v.days) * DAY + i128::from(v.milliseconds) * 1_000_000)
            }
            ScalarValue::IntervalYearMonth(Some(m)) => Some(i128::from(*m) * 28 * DAY),
            s => point(s),
        }
    };
    let mut longest = 0u128;
    for i in 0..rows {
        let values: Vec<Option<ScalarValue>> = args.iter().map(|a| at(a, i)).collect();
        let (start, stop, by) = match values.as_slice() {
            [Some(stop)] => (Some(0), point(stop), Some(1)),
            [Some(start), Some(stop)] => (point(start), point(stop), Some(1)),
            [Some(start), Some(stop), Some(by)] => (point(start), point(stop), step(by)),
            _ => continue,
        };
        let (Some(start), Some(stop), Some(by)) = (start, stop, by) else {
            continue;
        };
        if by == 0 {
            // The function itself refuses a zero step.
            continue;
        }
        let n = ((stop - start) / by).max(0) as u128 + 1;
        longest = longest.max(n);
        // One row with a scalar for every argument stands for all rows.
        if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            break;
        }
    }
    longest
}

fn variable_width(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::FixedSizeList(..)
            | DataType::Map(..)
            | DataType::Struct(_)
    )
}

/// Measures a computed value against the value and batch caps.
fn check_output(what: &str, out: &ColumnarValue, caps: Caps) -> DfResult<()> {
    let t = out.data_type();
    if !variable_width(&t) {
        return Ok(());
    }
    match out {
        ColumnarValue::Scalar(s) => {
            let bytes = s.size();
            if bytes > caps.value_bytes {
                return Err(too_large(
                    &format!("{what}(…)"),
                    bytes as u128,
                    caps.value_bytes,
                ));
            }
        }
        ColumnarValue::Array(a) => {
            let lens = value_lens(a);
            let element = match &t {
                DataType::List(f) | DataType::LargeList(f) => {
                    if variable_width(f.data_type()) {
                        16
                    } else {
                        f.data_type().primitive_width().unwrap_or(8)
                    }
                }
                _ => 1,
            };
            let largest = lens.iter().copied().max().unwrap_or(0) * element;
            if largest > caps.value_bytes {
                return Err(too_large(
                    &format!("{what}(…)"),
                    largest as u128,
                    caps.value_bytes,
                ));
            }
            let total: usize = lens.iter().sum::<usize>() * element;
            if total > caps.batch_bytes {
                return Err(too_large(
                    &format!("a batch of {what}(…)"),
                    total as u128,
                    caps.batch_bytes,
                ));
            }
        }
    }
    Ok(())
}

/// `x || y` with its result measured, so that chains of concatenations stay bounded.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CheckedConcat {
    signature: Signature,
    caps: Caps,
}

impl ScalarUDFImpl for CheckedConcat {
    fn name(&self) -> &str {
        "driftwatch_checked"
    }

    /// The column keeps the name of the expression it checks.
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        Ok(args
            .first()
            .map(|a| a.schema_name().to_string())
            .unwrap_or_default())
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Null))
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let value = args.args.swap_remove(0);
        check_output("||", &value, self.caps)?;
        Ok(value)
    }
}

/// Rewrites every `x || y` into a checked one.
#[derive(Debug)]
pub struct BoundConcat {
    checked: Arc<ScalarUDF>,
}

impl BoundConcat {
    pub fn new(caps: Caps) -> Self {
        BoundConcat {
            checked: Arc::new(ScalarUDF::new_from_impl(CheckedConcat {
                signature: Signature::any(1, Volatility::Immutable),
                caps,
            })),
        }
    }
}

impl AnalyzerRule for BoundConcat {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            plan.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::BinaryExpr(BinaryExpr {
                        op: Operator::StringConcat,
                        ..
                    }) => Ok(Transformed::yes(Expr::ScalarFunction(
                        ScalarFunction::new_udf(self.checked.clone(), vec![e]),
                    ))),
                    e => Ok(Transformed::no(e)),
                })
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "driftwatch_bound_concat"
    }
}

/// Puts a [`Guard`] at the root of every physical plan.
#[derive(Debug)]
pub struct GuardRule {
    pub caps: Caps,
}

impl PhysicalOptimizerRule for GuardRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if plan.is::<Guard>() {
            return Ok(plan);
        }
        Ok(Arc::new(Guard {
            properties: plan.properties().clone(),
            input: plan,
            caps: self.caps,
        }))
    }

    fn name(&self) -> &str {
        "driftwatch_guard"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The root of a plan: its deadline and its result cap.
#[derive(Debug)]
pub struct Guard {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    caps: Caps,
}

impl DisplayAs for Guard {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "Guard: timeout={:?}, result_bytes={}",
            self.caps.timeout, self.caps.result_bytes
        )
    }
}

impl ExecutionPlan for Guard {
    fn name(&self) -> &str {
        "Guard"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn PhysicalExpr>,
        ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children.swap_remove(0);
        Ok(Arc::new(Guard {
            properties: input.properties().clone(),
            input,
            caps: self.caps,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let caps = self.caps;
        struct State {
            input: SendableRecordBatchStream,
            deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
            bytes: usize,
            done: bool,
        }
        let state = State {
            input,
            deadline: None,
            bytes: 0,
            done: false,
        };
        let stream = futures::stream::unfold(state, move |mut st| async move {
            if st.done {
                return None;
            }
            let deadline = st
                .deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(caps.timeout)));
            let next = tokio::select! {
                biased;
                () = deadline.as_mut() => {
                    st.done = true;
                    return Some((Err(DataFusionError::ResourcesExhausted(DEADLINE.to_owned())), st));
                }
                next = st.input.next() => next,
            };
            match next {
                None => None,
                Some(Ok(batch)) => {
                    st.bytes += logical_bytes(&batch);
                    if st.bytes > caps.result_bytes {
                        st.done = true;
                        return Some((
                            Err(too_large("the result", st.bytes as u128, caps.result_bytes)),
                            st,
                        ));
                    }
                    Some((Ok(batch), st))
                }
                Some(Err(e)) => {
                    st.done = true;
                    Some((Err(e), st))
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The bytes a batch's values take, counting a slice of a shared buffer as the slice
/// (unlike Arrow's memory size, which counts the whole buffer once per slice).
pub(crate) fn logical_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            let rows = c.len();
            if variable_width(c.data_type()) {
                rows * 8 + value_lens(c).iter().sum::<usize>()
            } else {
                rows * c.data_type().primitive_width().unwrap_or(8)
            }
        })
        .sum()
}
