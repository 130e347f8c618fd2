//! One pipeline builder for `run`, `demo` and `replay`: the stages every mode shares,
//! built from the configuration, their workers started under the supervisor.

use std::sync::Arc;

use anyhow::Context;
use compliance::worker::{Compliance, ComplianceMetrics};
use detect::Detector;
use ingest::IngestMetrics;
use pipeline::{Offsets, Owner, PipelineMetrics, Stages, state};
use prometheus_client::registry::Registry;
use store::{EventTable, StoreMetrics};
use tracing::info;

/// How `run`, `demo` and `replay` differ in the pipeline they build.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    /// Print each raised alert and failing finding on stdout (the demo's view).
    pub print: bool,
    /// Whether the wall clock moves report schedules too (a daemon), or only the
    /// events' time (a replay).
    pub wall_clock: bool,
}

/// Builds the stages every mode shares from the configuration: the event table, the
/// owned detector, delivery when sinks are configured, the log indexer, the compliance
/// worker and report schedules, with their metrics in `registry`.
pub fn build(
    config: &crate::config::Config,
    detector: Detector,
    registry: &mut Registry,
    mode: Mode,
    cluster: Option<pipeline::cluster::Cluster>,
    sup: &mut crate::supervisor::Supervisor,
) -> anyhow::Result<(Stages, Owner)> {
    let notifier = if config.notify.sinks.is_empty() {
        None
    } else {
        let metrics = notify::NotifyMetrics::register(registry);
        Some(
            notify::Notifier::start(&config.notify, metrics)
                .context("cannot start alert delivery")?,
        )
    };
    let compliance = match Compliance::new(
        &config.compliance,
        ComplianceMetrics::register(registry),
        on_findings(notifier.clone(), cluster.clone(), mode.print),
    )
    .context("invalid control file")?
    {
        Some((compliance, worker)) => {
            sup.spawn_thread("compliance", move || worker.run())?;
            Some(compliance)
        }
        None => None,
    };
    let reports = compliance::Reports::start(
        &config.reports,
        compliance.as_ref(),
        compliance::ReportsMode {
            wall_clock: mode.wall_clock,
            print: mode.print,
        },
        crate::reports::poster()?,
    )?;
    let log_index = if config.search.enabled {
        let (indexer, worker) =
            queries::indexer::LogIndexer::new(queries::indexer::IndexerConfig {
                dir: config.index_dir(),
                commit_interval: config.search.commit_interval,
                retention: config.store.retention,
                max_bytes: config.search.max_bytes.0 as u64,
            })
            .context("cannot open the log index")?;
        sup.spawn_thread("log-indexer", move || worker.run())?;
        Some(indexer)
    } else {
        None
    };
    let (owner, views, commands) = Owner::new(detector);
    let stages = Stages {
        events: Arc::new(EventTable::new(config.store.clone())),
        views,
        commands,
        ingest_metrics: IngestMetrics::register(registry),
        store_metrics: StoreMetrics::register(registry),
        pipeline_metrics: PipelineMetrics::register(registry),
        print_alerts: mode.print,
        log_index,
        compliance,
        reports,
        notifier,
        cluster,
    };
    Ok((stages, owner))
}

/// What happens to new findings beyond the compliance worker's view: failing ones, and
/// those that clear a failure, go to delivery; every one goes to the cluster topic; the
/// demo prints failures.
fn on_findings(
    notifier: Option<notify::Notifier>,
    cluster: Option<pipeline::cluster::Cluster>,
    print: bool,
) -> compliance::worker::OnFindings {
    Box::new(move |findings| {
        if let Some(c) = &cluster {
            c.publish_findings(findings);
        }
        if let Some(n) = &notifier {
            n.submit_all_blocking(
                findings
                    .iter()
                    .filter(|f| f.status == compliance::Status::Fail || f.clears_failure)
                    .map(notify::Item::from_finding)
                    .collect(),
            );
        }
        if print {
            for f in findings
                .iter()
                .filter(|f| f.status == compliance::Status::Fail)
            {
                println!(
                    "FINDING fail {} {}: {} [{}]",
                    f.control,
                    f.service,
                    f.title,
                    f.references.join(", ")
                );
            }
        }
    })
}

/// What a start restores from the data directory.
pub struct Restored {
    pub detector: Detector,
    /// The offsets the state file reflects.
    pub offsets: Offsets,
    /// The alert journal, with a data directory.
    pub journal: Option<pipeline::Journal>,
    /// Alerts raised or changed after the state file, before a crash: delivery is handed
    /// them again (it drops what it took before).
    pub journaled: Vec<detect::Alert>,
}

/// Restores the detector from the data directory's state file and alert journal, if
/// there are any.
pub fn restore(config: &crate::config::Config) -> anyhow::Result<Restored> {
    let mut restored = Restored {
        detector: Detector::new(config.detect.clone()),
        offsets: Offsets::new(),
        journal: None,
        journaled: Vec::new(),
    };
    let Some(dir) = &config.state.data_dir else {
        return Ok(restored);
    };
    let recovered = state::recover(dir)?;
    restored.journal = Some(recovered.journal);
    restored.journaled = recovered.journaled;
    let Some(file) = recovered.state else {
        return Ok(restored);
    };
    let services = file.detector.services.len();
    let alerts = file.detector.alerts.len();
    restored.detector = Detector::restore(config.detect.clone(), file.detector)?;
    restored.offsets = file.offsets;
    info!(services, alerts, journaled = restored.journaled.len(), written_at = %file.written_at, "State restored.");
    Ok(restored)
}
