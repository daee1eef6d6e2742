//! `datagen-topic-null`: the whole runtime, datagen (`cdc_mode`) → embedded topic → a null
//! sink that counts rows, until the bounded source is exhausted and the sink has caught up
//! and committed. Limit: writing the topic's on-disk bytes raw (frame-sized chunks, same
//! fsync policy) plus reading them back, the least I/O that moving those bytes through a
//! disk log costs.

use super::{drain_datagen, files_under, raw_read, raw_write, Params};
use crate::measure::{Figure, Machine, Probe, Report};
use anyhow::{ensure, Result};
use async_trait::async_trait;
use rivven_engine::batch::SinkBatch;
use rivven_engine::config::Validate;
use rivven_engine::connector::Sink;
use rivven_engine::registry::{Category, ConnectorInfo, PipelineContext, Registry, SinkConnector};
use rivven_engine::runtime::Runtime;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A sink that accepts everything and counts rows (benchmark-only; not in the product).
#[derive(Debug, Default)]
struct Null {
    rows: Arc<AtomicU64>,
}

/// The null sink takes no keys.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoKeys {}

impl Validate for NoKeys {}

struct NullSink {
    rows: Arc<AtomicU64>,
}

#[async_trait]
impl Sink for NullSink {
    async fn write(&mut self, batch: &SinkBatch) -> rivven_engine::Result<()> {
        self.rows
            .fetch_add(batch.batch.num_rows() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn flush(&mut self) -> rivven_engine::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl SinkConnector for Null {
    type Config = NoKeys;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "null",
            category: Category::Utility,
            description: "discards batches, counting rows (benchmarks only)",
            tags: &["bench"],
        }
    }

    async fn check(&self, _: &NoKeys) -> rivven_engine::Result<String> {
        Ok("null sink".into())
    }

    fn create(&self, _: &PipelineContext, _: NoKeys) -> rivven_engine::Result<Box<dyn Sink>> {
        Ok(Box::new(NullSink {
            rows: self.rows.clone(),
        }))
    }
}

pub async fn run(p: &Params) -> Result<Report> {
    let rows_wanted = p.rows_or(2_000_000);
    let tmp = tempfile::tempdir_in(&p.dir)?;
    let state = tmp.path().join("state");
    let fsync = p.fsync_name();
    let yaml = format!(
        r#"version: "1.0"
sources:
  gen:
    connector: datagen
    topic: events
    config:
      pattern: users
      cdc_mode: true
      seed: 42
      events_per_second: 0
      max_events: {rows}
sinks:
  discard:
    connector: "null"
    topics: [events]
    consumer_group: bench
settings:
  state_dir: {state}
  batch: {{max_rows: {batch_rows}}}
  topic: {{fsync: {fsync}}}
  health: {{enabled: false, port: 0}}
  metrics: {{enabled: false, port: 0}}
"#,
        rows = rows_wanted,
        batch_rows = p.batch_rows,
        state = state.display(),
    );
    let loaded = rivven_engine::config::load_str(&yaml, "bench.yaml", tmp.path().into(), |_| None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut registry = Registry::new();
    rivven_sources::register(&mut registry)?;
    let counter = Arc::new(AtomicU64::new(0));
    registry.register_sink(Null {
        rows: counter.clone(),
    })?;
    let pipelines = rivven_engine::pipelines::Pipelines::resolve(&loaded, &registry)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = Runtime::new(&loaded, &pipelines)?;

    // The source's own ceiling: datagen alone, batches dropped (same data, same batching).
    let probe = Probe::start();
    let (src_rows, src_bytes) = drain_datagen(rows_wanted, p.batch_rows).await?;
    let source_alone = probe.stop();

    let probe = Probe::start();
    let report = runtime.run().await?;
    let sample = probe.stop();
    ensure!(report.failed.is_empty(), "failed: {:?}", report.failed);
    let rows = counter.load(Ordering::Relaxed);
    ensure!(
        rows == rows_wanted,
        "null sink saw {rows} rows, wanted {}",
        rows_wanted
    );

    let (bytes, data) = files_under(&state.join("topics"), true)?;
    let frames = rows.div_ceil(p.batch_rows as u64).max(1);
    let raw_w = raw_write(tmp.path(), &data, (bytes / frames) as usize, p.fsync)?;
    drop(data);
    let (raw_r, _) = raw_read(tmp.path())?;

    Ok(Report {
        scenario: "datagen-topic-null".into(),
        description: super::describe("datagen-topic-null"),
        unix_time: crate::unix_time(),
        machine: Machine::here(),
        params: serde_json::json!({
            "rows": rows, "batch_rows": p.batch_rows, "fsync": fsync,
            "on_disk_bytes": bytes, "dir": p.dir,
            "source": "datagen users cdc_mode seed 42, unthrottled",
        }),
        figures: vec![
            Figure::new("pipeline end to end", rows, bytes, sample).against(
                &format!("raw write (fsync {fsync}) + raw read of the topic's bytes"),
                raw_w + raw_r,
            ),
            // Reference: the source alone (bytes = in-memory Arrow size of its batches).
            Figure::new("datagen source alone", src_rows, src_bytes, source_alone),
        ],
    })
}
