//! The `alerts`, `baselines`, `services`, `log_templates`, `findings`, `posture` and
//! `notifications` tables: Arrow batches built from plain rows, so that the
//! store stays ignorant of detection's types (detection depends on the store, not the
//! other way round). Detection builds the rows; readers get consistent batches.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Int64Builder, StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

fn ts(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        false,
    )
}

static ALERTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        ts("time"),
        ts("last_seen"),
        Field::new("service", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("subject", DataType::Utf8, false),
        Field::new("explanation", DataType::Utf8, false),
        Field::new("mitre", DataType::Utf8, true),
        Field::new("count", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("dedup_key", DataType::Utf8, false),
        Field::new("sensor_rules", DataType::Utf8, true),
        Field::new("evidence", DataType::Utf8, false),
        // The daemon that holds the alert (its cluster member name); null without a
        // cluster topic.
        Field::new("member", DataType::Utf8, true),
    ]))
});

static BASELINES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("service", DataType::Utf8, false),
        Field::new("dimension", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("origin", DataType::Utf8, false),
        ts("first_seen"),
        Field::new("count", DataType::Int64, false),
        // A learned generalisation (a name shape, a network): how many entries it was
        // learned from; 0 for an entry that is just itself.
        Field::new("learned_from", DataType::Int64, false),
        // Whether the entry's dimension was still growing when learning ended.
        Field::new("growing", DataType::Boolean, false),
    ]))
});

static LOG_TEMPLATES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("service", DataType::Utf8, false),
        Field::new("template_id", DataType::Int64, false),
        Field::new("template", DataType::Utf8, false),
        ts("first_seen"),
        Field::new("count", DataType::Int64, false),
        Field::new("example", DataType::Utf8, false),
        Field::new("learned", DataType::Boolean, false),
    ]))
});

pub fn log_templates_schema() -> SchemaRef {
    LOG_TEMPLATES.clone()
}

/// One row of `log_templates`: a service's template as its miner holds it now.
pub struct LogTemplateRow<'a> {
    pub service: &'a str,
    pub template_id: i64,
    pub template: String,
    pub first_seen: i64,
    pub count: i64,
    /// The first line of the template (cut at 512 bytes).
    pub example: &'a str,
    /// In the service's baseline (learned, accepted or imported).
    pub learned: bool,
}

pub fn log_templates_batch<'a>(rows: impl IntoIterator<Item = LogTemplateRow<'a>>) -> RecordBatch {
    let (mut service, mut template, mut example) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let (mut id, mut count) = (Int64Builder::new(), Int64Builder::new());
    let mut first_seen = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let mut learned = arrow::array::BooleanBuilder::new();
    for r in rows {
        service.append_value(r.service);
        id.append_value(r.template_id);
        template.append_value(&r.template);
        first_seen.append_value(r.first_seen);
        count.append_value(r.count);
        example.append_value(r.example);
        learned.append_value(r.learned);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(service.finish()),
        Arc::new(id.finish()),
        Arc::new(template.finish()),
        Arc::new(first_seen.finish()),
        Arc::new(count.finish()),
        Arc::new(example.finish()),
        Arc::new(learned.finish()),
    ];
    RecordBatch::try_new(log_templates_schema(), columns).expect("builders match the schema")
}

pub fn alerts_schema() -> SchemaRef {
    ALERTS.clone()
}

pub fn baselines_schema() -> SchemaRef {
    BASELINES.clone()
}

/// One row of `alerts`.
pub struct AlertRow<'a> {
    pub id: &'a str,
    pub time: i64,
    pub last_seen: i64,
    pub service: &'a str,
    pub kind: &'a str,
    pub severity: &'a str,
    pub subject: &'a str,
    pub explanation: &'a str,
    /// `T1059.004 Command and Scripting Interpreter: Unix Shell`
    pub mitre: Option<String>,
    pub count: i64,
    pub status: &'a str,
    pub dedup_key: &'a str,
    /// Comma-separated Falco rules.
    pub sensor_rules: Option<String>,
    /// Provenance of the cited records, `topic/partition@offset` or `file:line`, comma-separated.
    pub evidence: String,
    /// The cluster member holding it, when there is a cluster topic.
    pub member: Option<&'a str>,
}

/// One row of `baselines`.
pub struct BaselineRow<'a> {
    pub service: &'a str,
    pub dimension: &'a str,
    pub key: &'a str,
    pub origin: &'a str,
    pub first_seen: i64,
    pub count: i64,
    pub learned_from: i64,
    pub growing: bool,
}

pub fn alerts_batch<'a>(rows: impl IntoIterator<Item = AlertRow<'a>>) -> RecordBatch {
    let mut id = StringBuilder::new();
    let mut time = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let mut last_seen = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let (mut service, mut kind, mut severity, mut subject, mut explanation) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let (mut mitre, mut status, mut dedup, mut rules, mut evidence) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut count = Int64Builder::new();
    let mut member = StringBuilder::new();
    for r in rows {
        id.append_value(r.id);
        time.append_value(r.time);
        last_seen.append_value(r.last_seen);
        service.append_value(r.service);
        kind.append_value(r.kind);
        severity.append_value(r.severity);
        subject.append_value(r.subject);
        explanation.append_value(r.explanation);
        mitre.append_option(r.mitre);
        count.append_value(r.count);
        status.append_value(r.status);
        dedup.append_value(r.dedup_key);
        rules.append_option(r.sensor_rules);
        evidence.append_value(r.evidence);
        member.append_option(r.member);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(time.finish()),
        Arc::new(last_seen.finish()),
        Arc::new(service.finish()),
        Arc::new(kind.finish()),
        Arc::new(severity.finish()),
        Arc::new(subject.finish()),
        Arc::new(explanation.finish()),
        Arc::new(mitre.finish()),
        Arc::new(count.finish()),
        Arc::new(status.finish()),
        Arc::new(dedup.finish()),
        Arc::new(rules.finish()),
        Arc::new(evidence.finish()),
        Arc::new(member.finish()),
    ];
    RecordBatch::try_new(alerts_schema(), columns).expect("builders match the schema")
}

pub fn baselines_batch<'a>(rows: impl IntoIterator<Item = BaselineRow<'a>>) -> RecordBatch {
    let (mut service, mut dimension, mut key, mut origin) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut first_seen = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let (mut count, mut learned_from) = (Int64Builder::new(), Int64Builder::new());
    let mut growing = BooleanBuilder::new();
    for r in rows {
        service.append_value(r.service);
        dimension.append_value(r.dimension);
        key.append_value(r.key);
        origin.append_value(r.origin);
        first_seen.append_value(r.first_seen);
        count.append_value(r.count);
        learned_from.append_value(r.learned_from);
        growing.append_value(r.growing);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(service.finish()),
        Arc::new(dimension.finish()),
        Arc::new(key.finish()),
        Arc::new(origin.finish()),
        Arc::new(first_seen.finish()),
        Arc::new(count.finish()),
        Arc::new(learned_from.finish()),
        Arc::new(growing.finish()),
    ];
    RecordBatch::try_new(baselines_schema(), columns).expect("builders match the schema")
}

static SERVICES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("service", DataType::Utf8, false),
        Field::new("phase", DataType::Utf8, false),
        ts("learning_since"),
        Field::new(
            "learned_at",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            true,
        ),
        Field::new("events", DataType::Int64, false),
        Field::new("baseline_entries", DataType::Int64, false),
        Field::new("log_templates", DataType::Int64, false),
        Field::new("image_digest", DataType::Utf8, true),
        Field::new("open_alerts", DataType::Int64, false),
        // The dimensions still growing when learning ended (comma-separated; empty when
        // every dimension had settled).
        Field::new("growing", DataType::Utf8, false),
    ]))
});

pub fn services_schema() -> SchemaRef {
    SERVICES.clone()
}

/// One row of `services`: a service's lifecycle as detection sees it now.
pub struct ServiceRow<'a> {
    pub service: &'a str,
    /// `learning`, `monitoring` or `locked`.
    pub phase: &'a str,
    pub learning_since: i64,
    pub learned_at: Option<i64>,
    pub events: i64,
    pub baseline_entries: i64,
    pub log_templates: i64,
    pub image_digest: Option<&'a str>,
    pub open_alerts: i64,
    pub growing: &'a str,
}

pub fn services_batch<'a>(rows: impl IntoIterator<Item = ServiceRow<'a>>) -> RecordBatch {
    let (mut service, mut phase, mut digest, mut growing) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut since = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let mut learned = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let (mut events, mut entries, mut templates, mut open) = (
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
    );
    for r in rows {
        service.append_value(r.service);
        phase.append_value(r.phase);
        since.append_value(r.learning_since);
        learned.append_option(r.learned_at);
        events.append_value(r.events);
        entries.append_value(r.baseline_entries);
        templates.append_value(r.log_templates);
        digest.append_option(r.image_digest);
        open.append_value(r.open_alerts);
        growing.append_value(r.growing);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(service.finish()),
        Arc::new(phase.finish()),
        Arc::new(since.finish()),
        Arc::new(learned.finish()),
        Arc::new(events.finish()),
        Arc::new(entries.finish()),
        Arc::new(templates.finish()),
        Arc::new(digest.finish()),
        Arc::new(open.finish()),
        Arc::new(growing.finish()),
    ];
    RecordBatch::try_new(services_schema(), columns).expect("builders match the schema")
}

static FINDINGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        ts("time"),
        Field::new("service", DataType::Utf8, false),
        Field::new("container", DataType::Utf8, false),
        Field::new("control", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new(
            "frameworks",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new(
            "references",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new("alert_id", DataType::Utf8, true),
        Field::new("evidence", DataType::Utf8, false),
        Field::new("facts", DataType::Utf8, false),
        Field::new("note", DataType::Utf8, true),
    ]))
});

pub fn findings_schema() -> SchemaRef {
    FINDINGS.clone()
}

/// One row of `findings`.
pub struct FindingRow<'a> {
    pub id: &'a str,
    pub time: i64,
    pub service: &'a str,
    pub container: &'a str,
    pub control: &'a str,
    pub title: &'a str,
    /// `fail`, `pass` or `not_applicable`.
    pub status: &'a str,
    pub severity: &'a str,
    /// The frameworks the control refers to (`pci-dss`, …), for filtering.
    pub frameworks: Vec<String>,
    /// `framework:section`.
    pub references: &'a [String],
    pub alert_id: Option<&'a str>,
    /// Provenance of the triggering records, comma-separated.
    pub evidence: String,
    /// The container facts the check read, as JSON.
    pub facts: String,
    pub note: Option<&'a str>,
}

pub fn findings_batch<'a>(rows: impl IntoIterator<Item = FindingRow<'a>>) -> RecordBatch {
    use arrow::array::ListBuilder;
    let mut s: Vec<StringBuilder> = (0..11).map(|_| StringBuilder::new()).collect();
    let mut time = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let mut frameworks = ListBuilder::new(StringBuilder::new());
    let mut references = ListBuilder::new(StringBuilder::new());
    for r in rows {
        s[0].append_value(r.id);
        time.append_value(r.time);
        s[1].append_value(r.service);
        s[2].append_value(r.container);
        s[3].append_value(r.control);
        s[4].append_value(r.title);
        s[5].append_value(r.status);
        s[6].append_value(r.severity);
        for f in &r.frameworks {
            frameworks.values().append_value(f);
        }
        frameworks.append(true);
        for x in r.references {
            references.values().append_value(x);
        }
        references.append(true);
        s[7].append_option(r.alert_id);
        s[8].append_value(&r.evidence);
        s[9].append_value(&r.facts);
        s[10].append_option(r.note);
    }
    let mut f = s.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next = || f.next().expect("eleven string columns");
    let columns: Vec<ArrayRef> = vec![
        next(),
        Arc::new(time.finish()),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        Arc::new(frameworks.finish()),
        Arc::new(references.finish()),
        next(),
        next(),
        next(),
        next(),
    ];
    RecordBatch::try_new(findings_schema(), columns).expect("builders match the schema")
}

static POSTURE: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("service", DataType::Utf8, false),
        Field::new("control", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new(
            "frameworks",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new("status", DataType::Utf8, false),
        ts("since"),
        ts("last_checked"),
        Field::new("finding_id", DataType::Utf8, false),
    ]))
});

pub fn posture_schema() -> SchemaRef {
    POSTURE.clone()
}

/// One row of `posture`: where a service stands on a control.
pub struct PostureRow<'a> {
    pub service: &'a str,
    pub control: &'a str,
    pub title: &'a str,
    pub severity: &'a str,
    pub frameworks: Vec<String>,
    pub status: &'a str,
    /// Since when the status holds ("failing since").
    pub since: i64,
    pub last_checked: i64,
    pub finding_id: &'a str,
}

pub fn posture_batch<'a>(rows: impl IntoIterator<Item = PostureRow<'a>>) -> RecordBatch {
    use arrow::array::ListBuilder;
    let mut s: Vec<StringBuilder> = (0..6).map(|_| StringBuilder::new()).collect();
    let mut frameworks = ListBuilder::new(StringBuilder::new());
    let mut since = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let mut last = TimestampNanosecondBuilder::new().with_timezone("UTC");
    for r in rows {
        s[0].append_value(r.service);
        s[1].append_value(r.control);
        s[2].append_value(r.title);
        s[3].append_value(r.severity);
        for f in &r.frameworks {
            frameworks.values().append_value(f);
        }
        frameworks.append(true);
        s[4].append_value(r.status);
        since.append_value(r.since);
        last.append_value(r.last_checked);
        s[5].append_value(r.finding_id);
    }
    let mut f = s.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next = || f.next().expect("six string columns");
    let columns: Vec<ArrayRef> = vec![
        next(),
        next(),
        next(),
        next(),
        Arc::new(frameworks.finish()),
        next(),
        Arc::new(since.finish()),
        Arc::new(last.finish()),
        next(),
    ];
    RecordBatch::try_new(posture_schema(), columns).expect("builders match the schema")
}

static NOTIFICATIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("item", false),
        text("source", false),
        text("sink", false),
        text("notification", false),
        text("state", false),
        Field::new("attempts", DataType::Int64, false),
        text("last_error", true),
        ts("updated"),
    ]))
});

pub fn notifications_schema() -> SchemaRef {
    NOTIFICATIONS.clone()
}

/// The delivery of one alert or finding to one sink.
pub struct NotificationRow<'a> {
    /// The alert's or finding's id.
    pub item: &'a str,
    /// `alert` or `finding`.
    pub source: &'a str,
    pub sink: &'a str,
    pub notification: &'a str,
    pub state: &'a str,
    pub attempts: i64,
    pub last_error: Option<&'a str>,
    pub updated: i64,
}

pub fn notifications_batch<'a>(rows: impl IntoIterator<Item = NotificationRow<'a>>) -> RecordBatch {
    let mut text: Vec<StringBuilder> = (0..6).map(|_| StringBuilder::new()).collect();
    let mut attempts = Int64Builder::new();
    let mut updated = TimestampNanosecondBuilder::new().with_timezone("UTC");
    for r in rows {
        text[0].append_value(r.item);
        text[1].append_value(r.source);
        text[2].append_value(r.sink);
        text[3].append_value(r.notification);
        text[4].append_value(r.state);
        text[5].append_option(r.last_error);
        attempts.append_value(r.attempts);
        updated.append_value(r.updated);
    }
    let mut columns: Vec<ArrayRef> = text[..5]
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    columns.push(Arc::new(attempts.finish()));
    columns.push(Arc::new(text[5].finish()));
    columns.push(Arc::new(updated.finish()));
    RecordBatch::try_new(notifications_schema(), columns)
        .expect("notification columns match the schema")
}
