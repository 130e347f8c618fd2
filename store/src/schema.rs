//! The `events` table's Arrow schema and the conversion of `Event`s into record batches.
//!
//! One wide table with a column per field any kind uses: Arrow keeps a null column
//! nearly free, and analysts get plain SQL (`WHERE kind = 'process_exec' AND exe = …`)
//! instead of JSON extraction. Column types map to standard PostgreSQL types: timestamps
//! with time zone, text, bigint, boolean, text arrays; the rarely read remainder is JSON
//! text in `details`.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use ingest::event::{Event, EventKind, Process};

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn text_list(name: &str) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        true,
    )
}

static EVENTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("source", DataType::Utf8, false),
        Field::new("service", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        // provenance
        Field::new("origin", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, true),
        Field::new("offset", DataType::Int64, false),
        // workload
        text("cluster"),
        text("node"),
        text("namespace"),
        text("pod"),
        text("container_id"),
        text("container_name"),
        text("image_repository"),
        text("image_tag"),
        text("image_digest"),
        text("workload"),
        text("workload_kind"),
        text("labels"),
        // process (exec, exit, and the process behind file, network and sensor events)
        text("exe"),
        text_list("args"),
        text("parent_exe"),
        Field::new("pid", DataType::Int64, true),
        Field::new("uid", DataType::Int64, true),
        text("user"),
        text("cwd"),
        // file access
        text("file_op"),
        text("path"),
        // network
        text("direction"),
        text("address"),
        Field::new("port", DataType::Int32, true),
        text("protocol"),
        text("dns_name"),
        // exec-into
        text("actor"),
        text_list("command"),
        Field::new("allowed", DataType::Boolean, true),
        // container lifecycle, process exit
        text("action"),
        Field::new("exit_code", DataType::Int64, true),
        // logs
        text("stream"),
        text("message"),
        Field::new("template_id", DataType::Int64, true),
        // sensor alerts
        text("rule"),
        text("priority"),
        // everything else, as JSON text
        text("details"),
    ]))
});

/// The schema of the `events` table.
pub fn events_schema() -> SchemaRef {
    EVENTS_SCHEMA.clone()
}

/// Column builders for one `events` record batch.
pub(crate) struct EventColumns {
    time: TimestampNanosecondBuilder,
    source: StringBuilder,
    service: StringBuilder,
    kind: StringBuilder,
    origin: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    cluster: StringBuilder,
    node: StringBuilder,
    namespace: StringBuilder,
    pod: StringBuilder,
    container_id: StringBuilder,
    container_name: StringBuilder,
    image_repository: StringBuilder,
    image_tag: StringBuilder,
    image_digest: StringBuilder,
    workload: StringBuilder,
    workload_kind: StringBuilder,
    labels: StringBuilder,
    exe: StringBuilder,
    args: ListBuilder<StringBuilder>,
    parent_exe: StringBuilder,
    pid: Int64Builder,
    uid: Int64Builder,
    user: StringBuilder,
    cwd: StringBuilder,
    file_op: StringBuilder,
    path: StringBuilder,
    direction: StringBuilder,
    address: StringBuilder,
    port: Int32Builder,
    protocol: StringBuilder,
    dns_name: StringBuilder,
    actor: StringBuilder,
    command: ListBuilder<StringBuilder>,
    allowed: BooleanBuilder,
    action: StringBuilder,
    exit_code: Int64Builder,
    stream: StringBuilder,
    message: StringBuilder,
    template_id: Int64Builder,
    rule: StringBuilder,
    priority: StringBuilder,
    details: StringBuilder,
}

impl EventColumns {
    pub(crate) fn with_capacity(rows: usize) -> Self {
        // Offsets are sized up front; value bytes grow on demand, because most columns
        // are null for most kinds and a guessed size would be held for nothing.
        let s = || StringBuilder::with_capacity(rows, 0);
        let list = || ListBuilder::with_capacity(StringBuilder::new(), rows);
        EventColumns {
            time: TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            source: s(),
            service: s(),
            kind: s(),
            origin: s(),
            partition: Int32Builder::with_capacity(rows),
            offset: Int64Builder::with_capacity(rows),
            cluster: s(),
            node: s(),
            namespace: s(),
            pod: s(),
            container_id: s(),
            container_name: s(),
            image_repository: s(),
            image_tag: s(),
            image_digest: s(),
            workload: s(),
            workload_kind: s(),
            labels: s(),
            exe: s(),
            args: list(),
            parent_exe: s(),
            pid: Int64Builder::with_capacity(rows),
            uid: Int64Builder::with_capacity(rows),
            user: s(),
            cwd: s(),
            file_op: s(),
            path: s(),
            direction: s(),
            address: s(),
            port: Int32Builder::with_capacity(rows),
            protocol: s(),
            dns_name: s(),
            actor: s(),
            command: list(),
            allowed: BooleanBuilder::with_capacity(rows),
            action: s(),
            exit_code: Int64Builder::with_capacity(rows),
            stream: s(),
            message: s(),
            template_id: Int64Builder::with_capacity(rows),
            rule: s(),
            priority: s(),
            details: s(),
        }
    }

    pub(crate) fn push(&mut self, e: &Event) {
        self.time.append_value(e.time.0);
        self.source.append_value(e.source.as_str());
        self.service.append_value(&e.service);
        self.kind.append_value(e.kind.name());
        self.origin.append_value(&e.provenance.origin);
        self.partition.append_option(e.provenance.partition);
        self.offset.append_value(e.provenance.offset);
        let w = &e.workload;
        self.cluster.append_option(w.cluster.as_deref());
        self.node.append_option(w.node.as_deref());
        self.namespace.append_option(w.namespace.as_deref());
        self.pod.append_option(w.pod.as_deref());
        self.container_id.append_option(w.container_id.as_deref());
        self.container_name
            .append_option(w.container_name.as_deref());
        self.image_repository
            .append_option(w.image.repository.as_deref());
        self.image_tag.append_option(w.image.tag.as_deref());
        self.image_digest.append_option(w.image.digest.as_deref());
        self.workload.append_option(w.workload.as_deref());
        self.workload_kind.append_option(w.workload_kind.as_deref());
        if w.labels.is_empty() {
            self.labels.append_null();
        } else {
            self.labels
                .append_value(serde_json::to_string(&w.labels).expect("string maps serialize"));
        }
        self.push_process(e.kind.process());

        let mut file_op = None;
        let mut path = None;
        let mut direction = None;
        let mut address = None;
        let mut port = None;
        let mut protocol = None;
        let mut dns_name = None;
        let mut actor = None;
        let mut command: Option<&[String]> = None;
        let mut allowed = None;
        let mut action = None;
        let mut exit_code = None;
        let mut stream = None;
        let mut message = None;
        let mut template_id = None;
        let mut rule = None;
        let mut priority = None;
        let mut details = None;
        match &e.kind {
            EventKind::ProcessExec { .. } => {}
            EventKind::ProcessExit { status, signal, .. } => {
                exit_code = *status;
                details = signal
                    .as_ref()
                    .map(|s| serde_json::json!({ "signal": s }).to_string());
            }
            EventKind::FileAccess { op, path: p, .. } => {
                file_op = Some(op.as_str());
                path = Some(p.as_str());
            }
            EventKind::Network {
                direction: d,
                address: a,
                port: p,
                protocol: pr,
                dns_name: dn,
                ..
            } => {
                direction = Some(d.as_str());
                address = Some(a.as_str());
                port = Some(i32::from(*p));
                protocol = Some(pr.as_str());
                dns_name = dn.as_deref();
            }
            EventKind::ExecInto {
                actor: a,
                command: c,
                via,
                allowed: al,
                source_ips,
            } => {
                actor = Some(a.as_str());
                command = Some(c);
                allowed = *al;
                details = Some(
                    serde_json::json!({ "via": via.as_str(), "source_ips": source_ips })
                        .to_string(),
                );
            }
            EventKind::Container { action: a, facts } => {
                action = Some(a.as_str());
                exit_code = facts.exit_code;
                if !facts.is_empty() {
                    details = Some(serde_json::to_string(facts).expect("facts serialize"));
                }
            }
            EventKind::Log {
                stream: s,
                message: m,
                template_id: t,
            } => {
                stream = s.as_deref();
                message = Some(m.as_str());
                template_id = t.map(i64::from);
            }
            EventKind::SensorAlert {
                rule: r,
                priority: p,
                tags,
                file,
                remote,
                output,
                ..
            } => {
                rule = Some(r.as_str());
                priority = Some(p.as_str());
                path = file.as_deref();
                if let Some((a, p)) = remote.as_deref().and_then(|r| r.rsplit_once(':')) {
                    address = Some(a.trim_start_matches('[').trim_end_matches(']'));
                    port = p.parse::<u16>().ok().map(i32::from);
                }
                details = Some(serde_json::json!({ "tags": tags, "output": output }).to_string());
            }
            EventKind::SensorHealth {
                sensor,
                report,
                lost,
                seen,
                detail,
            } => {
                action = Some(report.as_str());
                details = Some(
                    serde_json::json!({ "sensor": sensor, "lost": lost, "seen": seen, "detail": detail })
                        .to_string(),
                );
            }
        }
        self.file_op.append_option(file_op);
        self.path.append_option(path);
        self.direction.append_option(direction);
        self.address.append_option(address);
        self.port.append_option(port);
        self.protocol.append_option(protocol);
        self.dns_name.append_option(dns_name);
        self.actor.append_option(actor);
        append_list(&mut self.command, command);
        self.allowed.append_option(allowed);
        self.action.append_option(action);
        self.exit_code.append_option(exit_code);
        self.stream.append_option(stream);
        self.message.append_option(message);
        self.template_id.append_option(template_id);
        self.rule.append_option(rule);
        self.priority.append_option(priority);
        self.details.append_option(details);
    }

    fn push_process(&mut self, p: Option<&Process>) {
        self.exe.append_option(p.map(|p| p.exe.as_str()));
        append_list(&mut self.args, p.map(|p| p.args.as_slice()));
        self.parent_exe
            .append_option(p.and_then(|p| p.parent_exe.as_deref()));
        self.pid.append_option(p.and_then(|p| p.pid).map(i64::from));
        self.uid.append_option(p.and_then(|p| p.uid).map(i64::from));
        self.user.append_option(p.and_then(|p| p.user.as_deref()));
        self.cwd.append_option(p.and_then(|p| p.cwd.as_deref()));
    }

    pub(crate) fn finish(mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.origin.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.cluster.finish()),
            Arc::new(self.node.finish()),
            Arc::new(self.namespace.finish()),
            Arc::new(self.pod.finish()),
            Arc::new(self.container_id.finish()),
            Arc::new(self.container_name.finish()),
            Arc::new(self.image_repository.finish()),
            Arc::new(self.image_tag.finish()),
            Arc::new(self.image_digest.finish()),
            Arc::new(self.workload.finish()),
            Arc::new(self.workload_kind.finish()),
            Arc::new(self.labels.finish()),
            Arc::new(self.exe.finish()),
            Arc::new(self.args.finish()),
            Arc::new(self.parent_exe.finish()),
            Arc::new(self.pid.finish()),
            Arc::new(self.uid.finish()),
            Arc::new(self.user.finish()),
            Arc::new(self.cwd.finish()),
            Arc::new(self.file_op.finish()),
            Arc::new(self.path.finish()),
            Arc::new(self.direction.finish()),
            Arc::new(self.address.finish()),
            Arc::new(self.port.finish()),
            Arc::new(self.protocol.finish()),
            Arc::new(self.dns_name.finish()),
            Arc::new(self.actor.finish()),
            Arc::new(self.command.finish()),
            Arc::new(self.allowed.finish()),
            Arc::new(self.action.finish()),
            Arc::new(self.exit_code.finish()),
            Arc::new(self.stream.finish()),
            Arc::new(self.message.finish()),
            Arc::new(self.template_id.finish()),
            Arc::new(self.rule.finish()),
            Arc::new(self.priority.finish()),
            Arc::new(self.details.finish()),
        ];
        RecordBatch::try_new(events_schema(), columns).expect("builders match the schema")
    }
}

fn append_list(builder: &mut ListBuilder<StringBuilder>, values: Option<&[String]>) {
    match values {
        Some(values) => {
            for v in values {
                builder.values().append_value(v);
            }
            builder.append(true);
        }
        None => builder.append(false),
    }
}
