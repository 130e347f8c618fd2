//! SQL over the store's tables with DataFusion: read only, bounded in time, memory and
//! rows, and run on its own small runtime so that a heavy query never holds up ingest.
//!
//! Tables are *live*: each scan takes a fresh snapshot of its source (sealed Arrow
//! batches, shared, not copied), so one long-lived session serves every query and every
//! connection sees the newest data.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result as DfResult};
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
    /// Worker threads of the query runtime.
    pub threads: usize,
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
            // Two: the machine's other cores stay with ingest.
            threads: 2,
        }
    }
}

/// Why a query did not run.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("{0}")]
    ReadOnly(String),
    #[error("{0}")]
    Invalid(String),
    #[error("query exceeded the {0:?} time limit")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

impl SqlError {
    /// The outcome label of the SQL metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            SqlError::ReadOnly(_) => "rejected",
            SqlError::Invalid(_) => "invalid",
            SqlError::Timeout(_) => "timeout",
            SqlError::Failed(_) => "error",
        }
    }

    fn from_datafusion(e: DataFusionError, timeout: Duration) -> SqlError {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(m) if m.starts_with(DEADLINE) => {
                SqlError::Timeout(timeout)
            }
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => SqlError::Invalid(e.to_string()),
            _ => SqlError::Failed(e.to_string()),
        }
    }
}

const DEADLINE: &str = "query exceeded its time limit";

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

/// Whether a statement only reads. Sessions may set their own presentation variables
/// (`SET extra_float_digits`, `SET statement_timeout` …), but not the engine's.
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
            Set::SingleAssignment { variable, .. }
                if variable
                    .to_string()
                    .to_lowercase()
                    .starts_with("datafusion.") =>
            {
                reject("changing the engine's settings")
            }
            Set::SetTimeZone { value, .. }
                if !matches!(
                    value.to_string().trim_matches('\'').to_uppercase().as_str(),
                    "UTC" | "ETC/UTC" | "Z"
                ) =>
            {
                reject("a time zone other than UTC (times are served in UTC)")
            }
            _ => Ok(()),
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
        let config = || {
            SessionConfig::new()
                .with_information_schema(true)
                .with_target_partitions(limits.threads.max(1))
                .with_default_catalog_and_schema("datafusion", "public")
        };
        let api = SessionContext::new_with_config_rt(config(), env.clone());
        let wire = SessionContext::new_with_config_rt(config(), env);
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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(limits.threads.max(1))
            .thread_name("sql")
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
        let (schema, mut batches) = match tokio::time::timeout(timeout, task).await {
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
}
