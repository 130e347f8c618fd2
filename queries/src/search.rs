//! Full-text search over container log lines, backed by tantivy.
//!
//! [`LogIndex`] owns one tantivy index (a directory on disk, or RAM in tests) with one
//! document per log line: the service, container and stream it came from, the template
//! the template miner assigned to it, its time, and the line itself, tokenized for
//! free-text and phrase queries. It is the only place that writes that index; readers
//! on other threads search it through a [`LogSearcher`], which shares no lock with the
//! writer.
//!
//! Lines are added to an in-memory buffer of bounded size and only become searchable at
//! [`LogIndex::commit`]. A tantivy commit flushes segments and syncs files, which is far
//! too costly to pay per line at log rates, so the daemon commits in batches: on a
//! timer, from a blocking thread (`spawn_blocking` or a dedicated thread), never on the
//! ingest runtime, because both `commit` and `add` (when the buffer is full) block.
//! Between commits searches see the previous commit; a crash loses at most the lines
//! since then, which the Kafka offsets let ingest replay.
//!
//! Time is kept as microseconds since the Unix epoch in an `i64` field that is indexed,
//! fast and stored: range filters and the newest-first ordering both run on the fast
//! (columnar) values, with exact microsecond semantics.

use std::ops::Bound;
use std::path::Path;

pub use crate::error::SearchError;

use chrono::{DateTime, Utc};
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT, Value,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument,
    TantivyError, Term,
};

/// Name of the time field, needed by name for fast-field ordering.
const TIME: &str = "time";

/// Result count used by [`SearchQuery::default`].
pub const DEFAULT_LIMIT: usize = 100;

/// Most hits one search returns: the collector allocates for the whole limit up front.
pub const MAX_LIMIT: usize = 10_000;

/// One container log line, as handed to [`LogIndex::add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Service the container belongs to; matched exactly by [`SearchQuery::service`].
    pub service: String,
    /// Container name or id.
    pub container: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Template the template miner assigned to the line.
    pub template_id: u32,
    /// When the line was written. Kept at microsecond precision.
    pub time: DateTime<Utc>,
    /// The raw line.
    pub line: String,
}

/// Sizing of the index writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogIndexConfig {
    /// Memory the writer may buffer across all its threads before it flushes a segment on
    /// its own. Must be at least 15 MB per indexing thread (tantivy's floor).
    pub memory_budget_bytes: usize,
    /// Indexing threads. One keeps log indexing from competing with detection for CPU.
    pub indexer_threads: usize,
}

impl Default for LogIndexConfig {
    fn default() -> Self {
        LogIndexConfig {
            memory_budget_bytes: 50_000_000,
            indexer_threads: 1,
        }
    }
}

/// A search over the log index. All given filters must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// Query text over the line, in tantivy's query syntax: terms are ANDed by default,
    /// `"connection refused"` is a phrase, `OR`, `-term` and `field:value` work. Text
    /// containing a colon must be quoted, or the word before it is read as a field name.
    /// Empty (or blank) text matches every line, so the filters alone select.
    pub text: String,
    /// Only lines of exactly this service.
    pub service: Option<String>,
    /// Only lines at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only lines strictly before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only lines of this template.
    pub template_id: Option<u32>,
    /// At most this many hits (and never more than [`MAX_LIMIT`]), newest first. Zero
    /// returns none.
    pub limit: usize,
}

impl Default for SearchQuery {
    fn default() -> Self {
        SearchQuery {
            text: String::new(),
            service: None,
            since: None,
            until: None,
            template_id: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

/// One matching log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// When the line was written, at microsecond precision.
    pub time: DateTime<Utc>,
    /// Service the container belongs to.
    pub service: String,
    /// Container name or id.
    pub container: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Template the template miner assigned to the line.
    pub template_id: u32,
    /// The raw line.
    pub line: String,
}

/// The schema's field handles.
#[derive(Debug, Clone, Copy)]
struct Fields {
    service: Field,
    container: Field,
    stream: Field,
    template_id: Field,
    time: Field,
    line: Field,
}

impl Fields {
    fn schema() -> (Schema, Fields) {
        let mut builder = Schema::builder();
        let fields = Fields {
            service: builder.add_text_field("service", STRING | STORED),
            container: builder.add_text_field("container", STRING | STORED),
            stream: builder.add_text_field("stream", STRING | STORED),
            template_id: builder.add_u64_field("template_id", INDEXED | FAST | STORED),
            time: builder.add_i64_field(TIME, INDEXED | FAST | STORED),
            line: builder.add_text_field("line", TEXT | STORED),
        };
        (builder.build(), fields)
    }
}

/// Full-text index of container log lines. See the module documentation for the
/// batching contract.
pub struct LogIndex {
    /// `None` when opened read-only.
    writer: Option<IndexWriter>,
    searcher: LogSearcher,
    uncommitted: u64,
}

/// The searching side of a [`LogIndex`]: cheap to clone, and shared with the index
/// without a lock. A search sees what the index's last commit published; a commit
/// swaps the segments every clone searches, atomically, while searches run.
#[derive(Clone)]
pub struct LogSearcher {
    fields: Fields,
    reader: IndexReader,
    parser: QueryParser,
}

impl std::fmt::Debug for LogIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogIndex")
            .field("num_docs", &self.num_docs())
            .field("uncommitted", &self.uncommitted)
            .finish_non_exhaustive()
    }
}

impl LogIndex {
    /// Opens the index in `dir`, creating the directory and an empty index if missing.
    ///
    /// Holds tantivy's writer lock on the directory until dropped, so a second `LogIndex`
    /// over the same directory fails with [`SearchError::Open`].
    pub fn open(dir: &Path, config: LogIndexConfig) -> Result<LogIndex, SearchError> {
        std::fs::create_dir_all(dir).map_err(|source| SearchError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let open_err = |source: TantivyError| SearchError::Open {
            path: dir.to_path_buf(),
            source,
        };
        let directory = MmapDirectory::open(dir).map_err(|e| open_err(e.into()))?;
        let (schema, fields) = Fields::schema();
        let index = Index::open_or_create(directory, schema).map_err(open_err)?;
        LogIndex::with_index(index, fields, config).map_err(open_err)
    }

    /// Opens the index in `dir` for searching only, without the writer lock: a tool can
    /// search while the daemon writes. It sees what was committed when it opened.
    pub fn open_read_only(dir: &Path) -> Result<LogIndex, SearchError> {
        let open_err = |source: TantivyError| SearchError::Open {
            path: dir.to_path_buf(),
            source,
        };
        if !dir.is_dir() {
            return Err(SearchError::NoIndex {
                path: dir.to_path_buf(),
            });
        }
        let directory = MmapDirectory::open(dir).map_err(|e| open_err(e.into()))?;
        let index = Index::open(directory).map_err(open_err)?;
        let (_, fields) = Fields::schema();
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(open_err)?;
        let mut parser = QueryParser::for_index(&index, vec![fields.line]);
        parser.set_conjunction_by_default();
        Ok(LogIndex {
            writer: None,
            searcher: LogSearcher {
                fields,
                reader,
                parser,
            },
            uncommitted: 0,
        })
    }

    /// An index held in RAM only, for tests and tools.
    pub fn in_memory(config: LogIndexConfig) -> Result<LogIndex, SearchError> {
        let (schema, fields) = Fields::schema();
        let index = Index::create_in_ram(schema);
        LogIndex::with_index(index, fields, config).map_err(|source| SearchError::Index {
            operation: "create",
            source,
        })
    }

    fn with_index(
        index: Index,
        fields: Fields,
        config: LogIndexConfig,
    ) -> Result<LogIndex, TantivyError> {
        let writer: IndexWriter =
            index.writer_with_num_threads(config.indexer_threads, config.memory_budget_bytes)?;
        // Manual reload: a search sees exactly what the last `commit` published, with no
        // background watcher thread and no race in tests.
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let mut parser = QueryParser::for_index(&index, vec![fields.line]);
        parser.set_conjunction_by_default();
        Ok(LogIndex {
            writer: Some(writer),
            searcher: LogSearcher {
                fields,
                reader,
                parser,
            },
            uncommitted: 0,
        })
    }

    /// Buffers one line. It becomes searchable at the next [`commit`](Self::commit).
    ///
    /// May block while the writer flushes a full buffer; call it off the async runtime.
    pub fn add(&mut self, line: &LogLine) -> Result<(), SearchError> {
        let f = self.searcher.fields;
        let mut doc = TantivyDocument::new();
        doc.add_text(f.service, &line.service);
        doc.add_text(f.container, &line.container);
        doc.add_text(f.stream, &line.stream);
        doc.add_u64(f.template_id, u64::from(line.template_id));
        doc.add_i64(f.time, line.time.timestamp_micros());
        doc.add_text(f.line, &line.line);
        self.writer("add")?
            .add_document(doc)
            .map_err(|source| SearchError::Index {
                operation: "add",
                source,
            })?;
        self.uncommitted += 1;
        Ok(())
    }

    fn writer(&mut self, operation: &'static str) -> Result<&mut IndexWriter, SearchError> {
        self.writer
            .as_mut()
            .ok_or(SearchError::ReadOnly { operation })
    }

    /// Lines added since the last commit.
    pub fn uncommitted(&self) -> u64 {
        self.uncommitted
    }

    /// Publishes every line added (and deletion queued) so far: flushes, syncs, and
    /// reloads the reader so that the next [`search`](Self::search) sees them.
    ///
    /// Blocking and costly (file syncs): the daemon calls it periodically from a blocking
    /// thread, never per line and never on the ingest runtime.
    pub fn commit(&mut self) -> Result<(), SearchError> {
        self.writer("commit")?
            .commit()
            .map_err(|source| SearchError::Index {
                operation: "commit",
                source,
            })?;
        self.uncommitted = 0;
        self.searcher
            .reader
            .reload()
            .map_err(|source| SearchError::Index {
                operation: "reload",
                source,
            })
    }

    /// Deletes every line older than `cutoff` (lines at `cutoff` stay), and commits, so
    /// the deletion and any lines buffered before it are visible on return.
    ///
    /// The daemon calls it alongside the events table's retention. Blocking, like
    /// [`commit`](Self::commit). Disk space comes back as segments merge.
    pub fn delete_before(&mut self, cutoff: DateTime<Utc>) -> Result<(), SearchError> {
        let older = RangeQuery::new(
            Bound::Unbounded,
            Bound::Excluded(Term::from_field_i64(
                self.searcher.fields.time,
                cutoff.timestamp_micros(),
            )),
        );
        self.writer("delete")?
            .delete_query(Box::new(older))
            .map_err(|source| SearchError::Index {
                operation: "delete",
                source,
            })?;
        self.commit()
    }

    /// Lines visible to searches (committed and not deleted).
    pub fn num_docs(&self) -> u64 {
        self.searcher.num_docs()
    }

    /// The bytes the committed segments take (on disk, or in memory), deleted lines
    /// included until their segments merge.
    pub fn bytes(&self) -> u64 {
        self.searcher
            .reader
            .searcher()
            .space_usage()
            .map_or(0, |u| u.total().get_bytes())
    }

    /// Runs `q` over the committed lines, newest first.
    pub fn search(&self, q: &SearchQuery) -> Result<Vec<Hit>, SearchError> {
        self.searcher.search(q)
    }

    /// A searcher over this index for another thread: it needs nothing the writer holds.
    pub fn searcher(&self) -> LogSearcher {
        self.searcher.clone()
    }
}

impl LogSearcher {
    /// Lines visible to searches (committed and not deleted).
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Runs `q` over the committed lines, newest first. Blocking (it reads segments):
    /// call it off the async runtime.
    pub fn search(&self, q: &SearchQuery) -> Result<Vec<Hit>, SearchError> {
        let query = self.build_query(q)?;
        let searcher = self.reader.searcher();
        let visible = usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX);
        let limit = q.limit.min(MAX_LIMIT).min(visible);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let newest_first = TopDocs::with_limit(limit).order_by_fast_field::<i64>(TIME, Order::Desc);
        let top: Vec<(Option<i64>, DocAddress)> =
            searcher
                .search(&*query, &newest_first)
                .map_err(|source| SearchError::Index {
                    operation: "search",
                    source,
                })?;
        top.into_iter()
            .map(|(_, address)| {
                let doc: TantivyDocument =
                    searcher.doc(address).map_err(|source| SearchError::Index {
                        operation: "fetch",
                        source,
                    })?;
                self.hit(&doc)
            })
            .collect()
    }

    fn build_query(&self, q: &SearchQuery) -> Result<Box<dyn Query>, SearchError> {
        let f = &self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if !q.text.trim().is_empty() {
            let text = self
                .parser
                .parse_query(&q.text)
                .map_err(|e| SearchError::Query {
                    text: q.text.clone(),
                    message: e.to_string(),
                })?;
            clauses.push((Occur::Must, text));
        }
        if let Some(service) = &q.service {
            let term = Term::from_field_text(f.service, service);
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
            ));
        }
        if q.since.is_some() || q.until.is_some() {
            let micros = |t: DateTime<Utc>| Term::from_field_i64(f.time, t.timestamp_micros());
            let lower = q
                .since
                .map_or(Bound::Unbounded, |t| Bound::Included(micros(t)));
            let upper = q
                .until
                .map_or(Bound::Unbounded, |t| Bound::Excluded(micros(t)));
            clauses.push((Occur::Must, Box::new(RangeQuery::new(lower, upper))));
        }
        if let Some(template_id) = q.template_id {
            let term = Term::from_field_u64(f.template_id, u64::from(template_id));
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
            ));
        }
        if clauses.is_empty() {
            return Ok(Box::new(AllQuery));
        }
        Ok(Box::new(BooleanQuery::new(clauses)))
    }

    fn hit(&self, doc: &TantivyDocument) -> Result<Hit, SearchError> {
        let f = &self.fields;
        let text = |field: Field, name: &'static str| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or(SearchError::Corrupt { field: name })
        };
        let template_id = doc
            .get_first(f.template_id)
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(SearchError::Corrupt {
                field: "template_id",
            })?;
        let time = doc
            .get_first(f.time)
            .and_then(|v| v.as_i64())
            .and_then(DateTime::<Utc>::from_timestamp_micros)
            .ok_or(SearchError::Corrupt { field: TIME })?;
        Ok(Hit {
            time,
            service: text(f.service, "service")?,
            container: text(f.container, "container")?,
            stream: text(f.stream, "stream")?,
            template_id,
            line: text(f.line, "line")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// Tantivy's floor for one indexing thread; keeps tests light.
    const SMALL: LogIndexConfig = LogIndexConfig {
        memory_budget_bytes: 15_000_000,
        indexer_threads: 1,
    };

    fn at(second: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000 + second, 0).unwrap()
    }

    fn line(service: &str, template_id: u32, second: i64, text: &str) -> LogLine {
        LogLine {
            service: service.to_owned(),
            container: format!("{service}-7f9c"),
            stream: "stderr".to_owned(),
            template_id,
            time: at(second),
            line: text.to_owned(),
        }
    }

    fn index_of(lines: &[LogLine]) -> LogIndex {
        let mut index = LogIndex::in_memory(SMALL).unwrap();
        for l in lines {
            index.add(l).unwrap();
        }
        index.commit().unwrap();
        index
    }

    fn fixture() -> LogIndex {
        index_of(&[
            line("api", 1, 10, "dial tcp 10.0.0.7:5432: connection refused"),
            line("api", 2, 20, "refused to start: connection pool exhausted"),
            line(
                "worker",
                1,
                30,
                "dial tcp 10.0.0.9:6379: connection refused",
            ),
            line("worker", 3, 40, "connection reset by peer"),
        ])
    }

    fn search(index: &LogIndex, q: SearchQuery) -> Vec<Hit> {
        index.search(&q).unwrap()
    }

    fn lines_of(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|h| h.line.as_str()).collect()
    }

    fn text(text: &str) -> SearchQuery {
        SearchQuery {
            text: text.to_owned(),
            ..SearchQuery::default()
        }
    }

    #[test]
    fn phrase_matches_only_adjacent_words_in_order() {
        let index = fixture();
        let hits = search(&index, text("\"connection refused\""));
        assert_eq!(
            lines_of(&hits),
            [
                "dial tcp 10.0.0.9:6379: connection refused",
                "dial tcp 10.0.0.7:5432: connection refused",
            ]
        );
        // Unquoted, the words are ANDed anywhere in the line.
        let hits = search(&index, text("connection refused"));
        assert_eq!(hits.len(), 3);
        assert!(!lines_of(&hits).contains(&"connection reset by peer"));
    }

    #[test]
    fn hits_carry_every_stored_field() {
        let index = fixture();
        let hits = search(&index, text("pool"));
        assert_eq!(
            hits,
            [Hit {
                time: at(20),
                service: "api".to_owned(),
                container: "api-7f9c".to_owned(),
                stream: "stderr".to_owned(),
                template_id: 2,
                line: "refused to start: connection pool exhausted".to_owned(),
            }]
        );
    }

    #[test]
    fn service_filter_is_exact() {
        let index = fixture();
        let q = SearchQuery {
            service: Some("worker".to_owned()),
            ..text("connection")
        };
        let hits = search(&index, q);
        assert_eq!(hits.len(), 2);
        assert!(hits.iter().all(|h| h.service == "worker"));
        let q = SearchQuery {
            service: Some("work".to_owned()),
            ..text("connection")
        };
        assert!(search(&index, q).is_empty());
    }

    #[test]
    fn since_is_inclusive_and_until_exclusive() {
        let index = fixture();
        let q = SearchQuery {
            since: Some(at(20)),
            ..SearchQuery::default()
        };
        let times: Vec<_> = search(&index, q).iter().map(|h| h.time).collect();
        assert_eq!(times, [at(40), at(30), at(20)]);
        let q = SearchQuery {
            since: Some(at(20)),
            until: Some(at(40)),
            ..SearchQuery::default()
        };
        let times: Vec<_> = search(&index, q).iter().map(|h| h.time).collect();
        assert_eq!(times, [at(30), at(20)]);
    }

    #[test]
    fn template_filter_combines_with_text() {
        let index = fixture();
        let q = SearchQuery {
            template_id: Some(1),
            ..SearchQuery::default()
        };
        let hits = search(&index, q);
        assert_eq!(hits.len(), 2);
        assert!(hits.iter().all(|h| h.template_id == 1));
        let q = SearchQuery {
            template_id: Some(3),
            ..text("refused")
        };
        assert!(search(&index, q).is_empty());
    }

    #[test]
    fn newest_first_whatever_the_insertion_order() {
        let index = index_of(&[
            line("api", 1, 50, "tick"),
            line("api", 1, 10, "tick"),
            line("api", 1, 90, "tick"),
            line("api", 1, 30, "tick"),
        ]);
        let times: Vec<_> = search(&index, text("tick"))
            .iter()
            .map(|h| h.time)
            .collect();
        assert_eq!(times, [at(90), at(50), at(30), at(10)]);
        let q = SearchQuery {
            limit: 2,
            ..text("tick")
        };
        let times: Vec<_> = search(&index, q).iter().map(|h| h.time).collect();
        assert_eq!(times, [at(90), at(50)]);
    }

    #[test]
    fn lines_are_invisible_until_commit() {
        let mut index = LogIndex::in_memory(SMALL).unwrap();
        index.add(&line("api", 1, 10, "hello")).unwrap();
        assert_eq!(index.num_docs(), 0);
        assert_eq!(index.uncommitted(), 1);
        index.commit().unwrap();
        assert_eq!(index.num_docs(), 1);
        assert_eq!(index.uncommitted(), 0);
    }

    #[test]
    fn delete_before_removes_only_older_lines() {
        let mut index = fixture();
        assert_eq!(index.num_docs(), 4);
        index.delete_before(at(30)).unwrap();
        assert_eq!(index.num_docs(), 2);
        let times: Vec<_> = search(&index, SearchQuery::default())
            .iter()
            .map(|h| h.time)
            .collect();
        assert_eq!(times, [at(40), at(30)]);
    }

    #[test]
    fn malformed_query_names_the_problem() {
        let index = fixture();
        let err = index.search(&text("nosuchfield:oops")).unwrap_err();
        let SearchError::Query { text, message } = &err else {
            panic!("expected a query error, got {err:?}");
        };
        assert_eq!(text, "nosuchfield:oops");
        // The parser's own explanation, not just the echoed input.
        assert!(message.contains("does not exist"), "{message}");
        assert!(message.contains("nosuchfield"), "{message}");
        assert!(err.to_string().contains(message.as_str()));
    }

    #[test]
    fn zero_limit_returns_nothing() {
        let index = fixture();
        let q = SearchQuery {
            limit: 0,
            ..SearchQuery::default()
        };
        assert!(search(&index, q).is_empty());
    }

    #[test]
    fn persistent_index_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs");
        {
            let mut index = LogIndex::open(&path, SMALL).unwrap();
            index
                .add(&line("api", 4, 10, "disk quota exceeded"))
                .unwrap();
            index.commit().unwrap();
            // The writer lock keeps a second writer out while the first lives.
            let second = LogIndex::open(&path, SMALL).unwrap_err();
            assert!(matches!(second, SearchError::Open { .. }), "{second:?}");
        }
        let index = LogIndex::open(&path, SMALL).unwrap();
        assert_eq!(index.num_docs(), 1);
        assert_eq!(
            lines_of(&search(&index, text("\"quota exceeded\""))),
            ["disk quota exceeded"]
        );
    }
}
