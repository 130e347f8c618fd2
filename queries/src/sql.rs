//! SQL over the store's tables with DataFusion: read only, bounded in time, memory and
//! rows, and run on its own small runtime so that a heavy query never holds up ingest.
//!
//! Tables are *live*: each scan takes a fresh snapshot of its source (sealed Arrow
//! batches, shared, not copied), so one long-lived session serves every query and every
//! connection sees the newest data.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::error::SqlError;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, TableType};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{Set, Statement};
use serde::Deserialize;

use crate::guard::{BoundConcat, Caps, DEADLINE, GuardRule, bound_functions};

/// Reads a table's current contents.
pub type Reader = Arc<dyn Fn() -> Vec<RecordBatch> + Send + Sync>;

/// Limits on every SQL query (`[sql]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SqlLimits {
    /// A query still reading data past this long fails.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Memory all running queries may hold for sorts, joins and aggregates together.
    pub memory_bytes: usize,
    /// Rows a result holds at most; the rest are cut (the HTTP API says so).
    pub max_rows: usize,
    /// Bytes a result holds at most; a larger result fails the query.
    pub max_result_bytes: usize,
    /// Bytes one value computed by a function may hold (a string, a list).
    pub max_value_bytes: usize,
    /// Bytes one function may compute for one batch of rows.
    pub max_batch_bytes: usize,
    /// Worker threads of the query runtime.
    pub threads: usize,
    /// The nice value of those threads: above 0, queries yield the CPU to detection
    /// whenever both want it.
    pub nice: i32,
}

impl SqlLimits {
    /// The caps every query runs under.
    pub fn caps(&self) -> Caps {
        Caps {
            value_bytes: self.max_value_bytes,
            batch_bytes: self.max_batch_bytes,
            result_bytes: self.max_result_bytes,
            timeout: self.timeout,
        }
    }
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            // Grafana's own data-source timeout is 30 s: a query that is slower than that
            // helps nobody.
            timeout: Duration::from_secs(30),
            // 1 GiB: ten million events are about 2 GiB of Arrow; an aggregate over them
            // needs a small fraction of that, a runaway self-join does not get the box.
            memory_bytes: 1 << 30,
            // More rows than any panel draws or a person reads.
            max_rows: 100_000,
            // 64 MiB: 100,000 rows of a wide table, and a small part of the box even
            // with the copies the HTTP path makes to answer JSON.
            max_result_bytes: 64 << 20,
            // 8 MiB: several times the largest log line a record may carry.
            max_value_bytes: 8 << 20,
            // 64 MiB: a batch of 8,192 ordinary values with room to spare.
            max_batch_bytes: 64 << 20,
            // Two: the machine's other cores stay with ingest.
            threads: 2,
            // 10, as `nice` defaults: a dashboard refresh waits a little when ingest is
            // busy; ingest does not wait for the dashboard.
            nice: 10,
        }
    }
}

impl SqlError {
    fn from_datafusion(e: DataFusionError, timeout: Duration) -> SqlError {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(m) if m.starts_with(DEADLINE) => {
                SqlError::Timeout(timeout)
            }
            DataFusionError::ResourcesExhausted(m) => SqlError::TooLarge(m.clone()),
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => SqlError::Invalid(e.to_string()),
            _ => SqlError::Failed(e.to_string()),
        }
    }
}

/// A table whose scans snapshot a live source.
pub struct LiveTable {
    schema: SchemaRef,
    read: Reader,
    timeout: Duration,
}

impl fmt::Debug for LiveTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveTable")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batches = (self.read)();
        // The deadline runs from planning: a query that is still reading data past it
        // stops at its next batch.
        let deadline = Instant::now() + self.timeout;
        let n = state
            .config()
            .target_partitions()
            .clamp(1, batches.len().max(1));
        let mut parts = vec![Vec::new(); n];
        for (i, batch) in batches.into_iter().enumerate() {
            parts[i % n].push(batch);
        }
        let partitions = parts
            .into_iter()
            .map(|batches| {
                Arc::new(Snapshot {
                    schema: self.schema.clone(),
                    batches,
                    deadline,
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        Ok(Arc::new(StreamingTableExec::try_new(
            self.schema.clone(),
            partitions,
            projection,
            Vec::<LexOrdering>::new(),
            false,
            limit,
        )?))
    }
}

/// One partition of one scan's snapshot.
#[derive(Debug)]
struct Snapshot {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    deadline: Instant,
}

impl PartitionStream for Snapshot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let deadline = self.deadline;
        let batches = self.batches.clone().into_iter().map(move |b| {
            if Instant::now() > deadline {
                Err(DataFusionError::ResourcesExhausted(DEADLINE.to_owned()))
            } else {
                Ok(b)
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches),
        ))
    }
}

/// Caps every query's result at a number of rows (the wire server's row limit).
#[derive(Debug)]
struct RowLimit(usize);

impl AnalyzerRule for RowLimit {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        match plan {
            LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::DescribeTable(_)
            | LogicalPlan::Copy(_) => Ok(plan),
            plan => LogicalPlanBuilder::from(plan)
                .limit(0, Some(self.0))?
                .build(),
        }
    }

    fn name(&self) -> &str {
        "driftwatch_row_limit"
    }
}

/// The session variables a connection may set: what psql, psycopg, node-postgres and
/// Grafana send. Each is kept in the connection's own state, never in the engine's.
pub const SESSION_VARIABLES: [&str; 7] = [
    "statement_timeout",
    "datestyle",
    "intervalstyle",
    "bytea_output",
    "application_name",
    "extra_float_digits",
    "search_path",
];

/// The name a `SET` assigns, as the parser read it (quotes removed, so that
/// `"datafusion.x"` is the name `datafusion.x`), lower case; `None` for a qualified or
/// computed name.
fn single_name(variable: &datafusion::sql::sqlparser::ast::ObjectName) -> Option<String> {
    use datafusion::sql::sqlparser::ast::ObjectNamePart;
    match variable.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] => Some(ident.value.to_lowercase()),
        _ => None,
    }
}

/// A `SET` that can only restate what driftwatch already serves (`TIME ZONE 'UTC'`,
/// `client_encoding = 'UTF8'`): accepted, and answered without touching any state.
pub fn fixed_setting(statement: &Statement) -> bool {
    let value_is = |v: &datafusion::sql::sqlparser::ast::Expr, accepted: &[&str]| {
        let text = v.to_string();
        let text = text.trim_matches(|c| c == '\'' || c == '"').to_uppercase();
        accepted.contains(&text.as_str())
    };
    const UTC: [&str; 4] = ["UTC", "ETC/UTC", "Z", "+00:00"];
    match statement {
        Statement::Set(Set::SetTimeZone {
            local: false,
            value,
        }) => value_is(value, &UTC),
        Statement::Set(Set::SingleAssignment {
            scope: None,
            hivevar: false,
            variable,
            values,
        }) if values.len() == 1 => match single_name(variable).as_deref() {
            Some("timezone") => value_is(&values[0], &UTC),
            Some("client_encoding") => value_is(&values[0], &["UTF8", "UTF-8", "UNICODE"]),
            _ => false,
        },
        _ => false,
    }
}

/// Whether a statement only reads. Sessions may set their own presentation variables
/// ([`SESSION_VARIABLES`]), judged on the parsed statement, never the engine's
/// settings.
pub fn check_read_only(statement: &Statement) -> Result<(), SqlError> {
    let reject = |what: &str| {
        Err(SqlError::ReadOnly(format!(
            "driftwatch's SQL is read-only: {what} is not accepted"
        )))
    };
    match statement {
        Statement::Query(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowSchemas { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. } => Ok(()),
        Statement::Explain { statement, .. } => check_read_only(statement),
        Statement::Set(set) => match set {
            Set::SingleAssignment {
                scope: None,
                hivevar: false,
                variable,
                values,
            } => match single_name(variable).as_deref() {
                Some(name) if SESSION_VARIABLES.contains(&name) => Ok(()),
                Some(name @ ("timezone" | "client_encoding")) => {
                    if fixed_setting(statement) {
                        Ok(())
                    } else {
                        let value = values.first().map(ToString::to_string).unwrap_or_default();
                        reject(&format!(
                            "SET {name} = {value} (driftwatch serves UTC times in UTF8 only)"
                        ))
                    }
                }
                _ => reject(&format!(
                    "SET {variable} (a session may set only {})",
                    SESSION_VARIABLES.join(", ")
                )),
            },
            Set::SetTimeZone { local: false, .. } if fixed_setting(statement) => Ok(()),
            Set::SetTimeZone { .. } => {
                reject("a time zone other than UTC (times are served in UTC)")
            }
            other => reject(&format!("{other}")),
        },
        other => {
            let text = other.to_string();
            let verb: String = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                .to_uppercase();
            reject(&format!("{verb} …"))
        }
    }
}

/// A finished query.
#[derive(Debug)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Rows beyond the row limit were cut.
    pub truncated: bool,
    pub elapsed: Duration,
}

impl QueryOutput {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// The runtime queries run on; shut down without waiting when dropped.
struct QueryRuntime(Option<tokio::runtime::Runtime>);

/// Lowers the calling thread's CPU priority to `nice` (0 leaves it alone).
pub fn lower_priority(thread: &str, nice: i32) {
    if nice == 0 {
        return;
    }
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
        tracing::warn!(error = %e, thread, nice, "Cannot lower a thread's priority; it competes with ingest as an equal.");
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The SQL engine: tables, limits, and the runtime queries run on.
pub struct SqlEngine {
    api: SessionContext,
    wire: Arc<SessionContext>,
    limits: SqlLimits,
    runtime: QueryRuntime,
}

impl SqlEngine {
    /// An engine over named live tables.
    pub fn new(
        tables: Vec<(&str, SchemaRef, Reader)>,
        limits: SqlLimits,
    ) -> Result<Self, DataFusionError> {
        let env = Arc::new(
            RuntimeEnvBuilder::new()
                .with_memory_limit(limits.memory_bytes, 1.0)
                .build()?,
        );
        let caps = limits.caps();
        let context = || {
            let config = SessionConfig::new()
                .with_information_schema(true)
                .with_target_partitions(limits.threads.max(1))
                .with_default_catalog_and_schema("datafusion", "public");
            let state = SessionStateBuilder::new()
                .with_config(config)
                .with_runtime_env(env.clone())
                .with_default_features()
                .with_physical_optimizer_rule(Arc::new(GuardRule { caps }))
                .build();
            let ctx = SessionContext::new_with_state(state);
            ctx.add_analyzer_rule(Arc::new(BoundConcat::new(caps)));
            bound_functions(&ctx, caps);
            ctx
        };
        let api = context();
        let wire = context();
        wire.add_analyzer_rule(Arc::new(RowLimit(limits.max_rows)));
        for (name, schema, read) in tables {
            let table = Arc::new(LiveTable {
                schema,
                read,
                timeout: limits.timeout,
            });
            api.register_table(name, table.clone())?;
            wire.register_table(name, table)?;
        }
        let nice = limits.nice;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(limits.threads.max(1))
            .thread_name("sql")
            .on_thread_start(move || lower_priority("sql", nice))
            .enable_all()
            .build()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(SqlEngine {
            api,
            wire: Arc::new(wire),
            limits,
            runtime: QueryRuntime(Some(runtime)),
        })
    }

    pub fn limits(&self) -> &SqlLimits {
        &self.limits
    }

    /// The session the PostgreSQL wire server serves (results capped at the row limit).
    pub fn wire_context(&self) -> Arc<SessionContext> {
        self.wire.clone()
    }

    /// The runtime queries (and the wire server) run on.
    pub fn runtime(&self) -> tokio::runtime::Handle {
        self.runtime
            .0
            .as_ref()
            .expect("runtime lives as long as the engine")
            .handle()
            .clone()
    }

    /// Runs one read-only statement on the query runtime.
    pub async fn query(&self, sql: &str) -> Result<QueryOutput, SqlError> {
        let started = Instant::now();
        let ctx = self.api.clone();
        let sql = sql.to_owned();
        let max_rows = self.limits.max_rows;
        let timeout = self.limits.timeout;
        let task = self.runtime().spawn(async move {
            let options = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let df =
                ctx.sql_with_options(&sql, options)
                    .await
                    .map_err(|e| match e.find_root() {
                        DataFusionError::Plan(m) if m.contains("not supported") => {
                            SqlError::ReadOnly(format!("driftwatch's SQL is read-only: {m}"))
                        }
                        _ => SqlError::from_datafusion(e, timeout),
                    })?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let df = df
                .limit(0, Some(max_rows + 1))
                .map_err(|e| SqlError::from_datafusion(e, timeout))?;
            let batches = df
                .collect()
                .await
                .map_err(|e| SqlError::from_datafusion(e, timeout))?;
            Ok::<_, SqlError>((schema, batches))
        });
        // The plan stops itself at its deadline; this is for a query that never reached
        // execution (planning), and a caller that goes away takes its query with it.
        let abort = AbortOnDrop(task.abort_handle());
        let answer = tokio::time::timeout(timeout + PLANNING_GRACE, task).await;
        drop(abort);
        let (schema, mut batches) = match answer {
            Err(_) => return Err(SqlError::Timeout(timeout)),
            Ok(Err(e)) => return Err(SqlError::Failed(format!("query task failed: {e}"))),
            Ok(Ok(result)) => result?,
        };
        let truncated = cut(&mut batches, max_rows);
        Ok(QueryOutput {
            schema,
            batches,
            truncated,
            elapsed: started.elapsed(),
        })
    }
}

/// Past the deadline, a query still being planned is abandoned this much later.
const PLANNING_GRACE: Duration = Duration::from_secs(1);

/// Aborts a query's task when its caller stops waiting for it.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Cuts batches to `max` rows; true if anything was cut.
fn cut(batches: &mut Vec<RecordBatch>, max: usize) -> bool {
    let mut left = max;
    let mut cut = false;
    batches.retain_mut(|b| {
        if left == 0 {
            cut |= b.num_rows() > 0;
            return false;
        }
        if b.num_rows() > left {
            *b = b.slice(0, left);
            cut = true;
        }
        left -= b.num_rows();
        true
    });
    cut
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn numbers(rows: i64) -> (SchemaRef, Reader) {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let s = schema.clone();
        let read: Reader = Arc::new(move || {
            (0..rows)
                .step_by(1000)
                .map(|start| {
                    let end = (start + 1000).min(rows);
                    RecordBatch::try_new(
                        s.clone(),
                        vec![Arc::new(Int64Array::from_iter_values(start..end))],
                    )
                    .unwrap()
                })
                .collect()
        });
        (schema, read)
    }

    fn engine(rows: i64, limits: SqlLimits) -> SqlEngine {
        let (schema, read) = numbers(rows);
        SqlEngine::new(vec![("numbers", schema, read)], limits).unwrap()
    }

    #[tokio::test]
    async fn queries_see_the_source_and_results_are_cut_at_the_row_limit() {
        let limits = SqlLimits {
            max_rows: 10,
            ..SqlLimits::default()
        };
        let e = engine(5000, limits);
        let out = e.query("SELECT sum(n) AS s FROM numbers").await.unwrap();
        assert_eq!(
            out.batches[0]
                .column(0)
                .as_primitive::<Int64Type>()
                .value(0),
            (0..5000).sum::<i64>()
        );
        assert!(!out.truncated);
        let out = e.query("SELECT n FROM numbers ORDER BY n").await.unwrap();
        assert_eq!((out.rows(), out.truncated), (10, true));
        let out = e.query("SELECT n FROM numbers WHERE n < 10").await.unwrap();
        assert_eq!((out.rows(), out.truncated), (10, false));
    }

    #[tokio::test]
    async fn statements_that_change_state_are_rejected() {
        let e = engine(10, SqlLimits::default());
        for sql in [
            "CREATE TABLE t (a INT)",
            "CREATE VIEW v AS SELECT 1",
            "DROP TABLE numbers",
            "INSERT INTO numbers VALUES (1)",
            "SET datafusion.execution.batch_size = 1",
        ] {
            let err = e.query(sql).await.unwrap_err();
            assert!(matches!(err, SqlError::ReadOnly(_)), "{sql}: {err:?}");
        }
        assert!(matches!(
            e.query("SELEC 1").await.unwrap_err(),
            SqlError::Invalid(_)
        ));
        // The table is still there and unchanged.
        let out = e.query("SELECT count(*) FROM numbers").await.unwrap();
        assert_eq!(
            out.batches[0]
                .column(0)
                .as_primitive::<Int64Type>()
                .value(0),
            10
        );
    }

    #[test]
    fn the_wire_guard_passes_reads_and_rejects_writes() {
        let parse = |sql: &str| {
            Parser::parse_sql(&PostgreSqlDialect {}, sql)
                .unwrap()
                .remove(0)
        };
        for sql in [
            "SELECT 1",
            "EXPLAIN SELECT 1",
            "SET extra_float_digits = 3",
            "SET TIME ZONE 'UTC'",
            "SHOW TABLES",
            "BEGIN",
            "COMMIT",
        ] {
            check_read_only(&parse(sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        for sql in [
            "CREATE TABLE t (a INT)",
            "DROP TABLE events",
            "INSERT INTO alerts VALUES (1)",
            "UPDATE alerts SET status = 'resolved'",
            "DELETE FROM alerts",
            "EXPLAIN DELETE FROM alerts",
            "COPY alerts TO '/tmp/x'",
            "SET datafusion.execution.target_partitions = 64",
            "SET TIME ZONE 'Europe/Paris'",
        ] {
            let err = check_read_only(&parse(sql)).unwrap_err();
            assert!(err.to_string().contains("read-only"), "{sql}: {err}");
        }
    }

    #[tokio::test]
    async fn a_query_reading_past_its_deadline_fails() {
        let limits = SqlLimits {
            timeout: Duration::from_millis(1),
            ..SqlLimits::default()
        };
        // A cross join over 20,000 × 20,000 rows takes far longer than 1 ms.
        let e = engine(20_000, limits);
        let err = e
            .query("SELECT count(*) FROM numbers a, numbers b WHERE a.n + b.n = 7")
            .await
            .unwrap_err();
        assert!(matches!(err, SqlError::Timeout(_)), "{err:?}");
    }

    fn too_large(e: &SqlEngine, sql: &str) {
        match e.query(sql).await_blocking() {
            Err(SqlError::TooLarge(m)) => assert!(
                m.contains("SQL limit") || m.contains("allocation failed"),
                "{sql}: {m}"
            ),
            other => panic!("{sql}: {other:?}"),
        }
    }

    /// Runs a future to completion on a fresh runtime (the engine has its own).
    trait Blocking: std::future::Future + Sized {
        fn await_blocking(self) -> Self::Output {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(self)
        }
    }
    impl<F: std::future::Future> Blocking for F {}

    /// Each of these would allocate gigabytes before a memory pool ever saw them.
    #[test]
    fn functions_that_multiply_their_input_refuse_past_the_value_cap() {
        let e = engine(10, SqlLimits::default());
        for sql in [
            "SELECT length(repeat(arrow_cast('x', 'LargeUtf8'), 100000000000))",
            "SELECT length(repeat('abc', n * 100000000)) FROM numbers",
            "SELECT lpad('x', 2000000000)",
            "SELECT rpad('x', 2000000000, 'yz')",
            "SELECT length(replace(repeat('x', 1000000), 'x', repeat('y', 1000)))",
            "SELECT length(replace(repeat('x', 1000000), '', repeat('y', 100)))",
            r"SELECT length(regexp_replace(repeat('x', 1000000), '(x*)', repeat('\1', 500)))",
            "SELECT cardinality(array_repeat('x', 10000000000))",
            "SELECT cardinality(range(1, 1000000000000))",
            "SELECT cardinality(generate_series(1, 1000000000000))",
            "SELECT cardinality(range(TIMESTAMP '1970-01-01', TIMESTAMP '2200-01-01', INTERVAL '1 second'))",
            "SELECT cardinality(array_resize([1], 10000000000, 0))",
        ] {
            too_large(&e, sql);
        }
        // Ordinary uses stay ordinary.
        let out = e
            .query("SELECT repeat('ab', 3) AS r, lpad('7', 3, '0') AS p, cardinality(range(1, 10)) AS c, \
                    replace('a-b', '-', '+') AS x")
            .await_blocking()
            .unwrap();
        let row = arrow::util::pretty::pretty_format_batches(&out.batches)
            .unwrap()
            .to_string();
        assert!(
            row.contains("ababab") && row.contains("007") && row.contains("a+b"),
            "{row}"
        );
    }

    /// Aggregates that grow a value row by row stop at the value cap or at the memory
    /// pool, whichever comes first.
    #[test]
    fn aggregates_that_grow_a_value_stop_at_a_limit() {
        let e = engine(10, SqlLimits::default());
        for sql in [
            "SELECT length(string_agg(repeat('x', 100000), '')) FROM generate_series(1, 100000)",
            "SELECT cardinality(array_agg(repeat('x', 100000))) FROM generate_series(1, 100000)",
        ] {
            too_large(&e, sql);
        }
    }

    #[test]
    fn concatenation_chains_stay_under_the_value_cap() {
        let e = engine(10, SqlLimits::default());
        too_large(
            &e,
            "WITH a AS (SELECT repeat('x', 3000000) AS s) SELECT length(s || s || s || s) FROM a",
        );
        too_large(
            &e,
            "WITH a AS (SELECT repeat('x', 3000000) AS s) SELECT length(concat(s, s, s, s)) FROM a",
        );
        // The column keeps its name.
        let out = e.query("SELECT 'a' || 'b'").await_blocking().unwrap();
        assert_eq!(out.schema.field(0).name(), "Utf8(\"a\") || Utf8(\"b\")");
    }

    #[test]
    fn a_result_larger_than_its_cap_fails() {
        let limits = SqlLimits {
            max_result_bytes: 1 << 20,
            ..SqlLimits::default()
        };
        let e = engine(5000, limits);
        too_large(&e, "SELECT repeat('x', 1000) FROM numbers");
        // The same rows, smaller, pass.
        let out = e.query("SELECT n FROM numbers").await_blocking().unwrap();
        assert_eq!(out.rows(), 5000);
    }

    /// The query stops at its deadline: nothing keeps running on the query runtime, on
    /// the HTTP path or the wire session's plans.
    #[test]
    fn a_query_past_its_deadline_stops_running() {
        let limits = SqlLimits {
            timeout: Duration::from_millis(300),
            ..SqlLimits::default()
        };
        let e = engine(10, limits);
        let endless = "SELECT count(*) FROM generate_series(1, 1000000000000000)";
        for _ in 0..2 {
            let err = e.query(endless).await_blocking().unwrap_err();
            assert!(matches!(err, SqlError::Timeout(_)), "{err:?}");
        }
        let wire = e.wire_context();
        let err = e
            .runtime()
            .block_on_other(async move { wire.sql(endless).await?.collect().await })
            .unwrap_err();
        assert!(err.to_string().contains("time limit"), "{err}");
        let metrics = e.runtime().metrics();
        let mut alive = usize::MAX;
        for _ in 0..50 {
            alive = metrics.num_alive_tasks();
            if alive == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(alive, 0, "queries still running after their deadline");
    }

    trait BlockOnOther {
        fn block_on_other<F>(&self, f: F) -> F::Output
        where
            F: std::future::Future + Send + 'static,
            F::Output: Send + 'static;
    }
    impl BlockOnOther for tokio::runtime::Handle {
        /// Runs `f` as a task of this runtime and waits for it from outside.
        fn block_on_other<F>(&self, f: F) -> F::Output
        where
            F: std::future::Future + Send + 'static,
            F::Output: Send + 'static,
        {
            let task = self.spawn(f);
            futures::executor::block_on(task).unwrap()
        }
    }

    #[test]
    fn settings_are_judged_on_the_parsed_name_and_stay_with_the_session() {
        let parse = |sql: &str| {
            Parser::parse_sql(&PostgreSqlDialect {}, sql)
                .unwrap()
                .remove(0)
        };
        for sql in [
            "SET statement_timeout = 5000",
            "SET extra_float_digits = 3",
            "SET DateStyle = 'ISO'",
            "SET application_name = 'psql'",
            "SET search_path = public",
            "SET TIME ZONE 'UTC'",
            "SET timezone = 'UTC'",
            "SET client_encoding = 'UTF8'",
        ] {
            check_read_only(&parse(sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        for sql in [
            "SET \"datafusion.runtime.memory_limit\" = '1K'",
            "SET datafusion.runtime.memory_limit = '1K'",
            "SET \"datafusion\".\"execution\".\"batch_size\" = 1",
            "SET timezone = 'Europe/Paris'",
            "SET LOCAL statement_timeout = 0",
            "SET SESSION datafusion.execution.batch_size = 1",
            "SET TIME ZONE 'Europe/Paris'",
            "SET client_encoding = 'LATIN1'",
            "SET work_mem = '1GB'",
            "RESET datafusion.runtime.memory_limit",
            "RESET ALL",
        ] {
            let err = check_read_only(&parse(sql)).unwrap_err();
            assert!(err.to_string().contains("read-only"), "{sql}: {err}");
        }
        // What only restates the served settings is answered without the engine.
        assert!(fixed_setting(&parse("SET timezone = 'UTC'")));
        assert!(!fixed_setting(&parse("SET statement_timeout = 5000")));
    }

    proptest::proptest! {
        // Failing cases are reported, not saved beside the sources.
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever a viewer puts into the functions that grow values, with whatever
        /// sizes, the query answers or fails with an error of its kind; it never
        /// panics, and never holds more than the caps allow.
        #[test]
        fn hostile_function_calls_answer_or_fail_cleanly(
            function in proptest::sample::select(vec![
                "repeat('ab', {n})",
                "lpad('x', {n})",
                "rpad('x', {n}, 'yz')",
                "replace(repeat('x', {m}), 'x', repeat('y', {m}))",
                "regexp_replace(repeat('x', {m}), '(x)', repeat('\\1', {m}), 'g')",
                "array_repeat('x', {n})",
                "range(0, {n})",
                "generate_series(0, {n})",
                "array_resize([1], {n}, 0)",
                "concat(repeat('x', {m}), repeat('y', {m}))",
                "repeat('x', {m}) || repeat('y', {m}) || repeat('z', {m})",
                "to_hex({n})",
                "substr(repeat('x', {m}), {n})",
            ]),
            n in proptest::prop_oneof![0i64..100, -1000i64..0, 1_000_000i64..100_000_000_000i64],
            m in proptest::prop_oneof![0i64..1000, 1_000_000i64..5_000_000],
            outer in proptest::sample::select(vec!["length(CAST(({f}) AS TEXT))", "({f}) IS NULL"]),
        ) {
            let e = SHARED.get_or_init(|| engine(10, SqlLimits::default()));
            let call = function.replace("{n}", &n.to_string()).replace("{m}", &m.to_string());
            let sql = format!("SELECT {}", outer.replace("{f}", &call));
            match e.query(&sql).await_blocking() {
                Ok(out) => proptest::prop_assert!(
                    out.batches.iter().map(crate::guard::logical_bytes).sum::<usize>()
                        <= SqlLimits::default().max_result_bytes
                ),
                Err(SqlError::TooLarge(_) | SqlError::Failed(_) | SqlError::Invalid(_)) => {}
                Err(other) => proptest::prop_assert!(false, "{sql}: {other:?}"),
            }
        }
    }

    static SHARED: std::sync::OnceLock<SqlEngine> = std::sync::OnceLock::new();
}
