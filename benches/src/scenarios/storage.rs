//! `object-storage-parquet`: the object-storage sink writing Parquet (zstd, then snappy)
//! to the local provider, driven by the runtime from a pre-filled embedded topic until it
//! has caught up and committed. Limit: a bare arrow-rs `ArrowWriter` with the same writer
//! properties writing the same batches (already in memory) to one file in the same
//! directory, synced. Our side also reads and decodes the topic, names and renames the
//! file, and commits offsets.

use super::{generate, Params};
use crate::measure::{Figure, Machine, Probe, Report};
use anyhow::{ensure, Result};
use rivven_engine::config::TopicSettings;
use rivven_engine::registry::Registry;
use rivven_engine::runtime::Runtime;
use rivven_engine::topic::EmbeddedLog;
use rivven_sinks::format::{ParquetCompression, ParquetOptions};
use std::time::Instant;

pub async fn run(p: &Params) -> Result<Report> {
    let rows_wanted = p.rows_or(1_000_000);
    let tmp = tempfile::tempdir_in(&p.dir)?;
    let state = tmp.path().join("state");
    let batches = generate(rows_wanted, p.batch_rows).await?;
    let bytes: u64 = batches
        .iter()
        .map(|b| b.get_array_memory_size() as u64)
        .sum();
    {
        let log = EmbeddedLog::open(&state, TopicSettings::default())?;
        log.ensure_topic("events")?;
        for b in &batches {
            log.append("events", 0, b, None).await?;
        }
    }
    let mut figures = Vec::new();
    for codec in [ParquetCompression::Zstd, ParquetCompression::Snappy] {
        let name = format!("{codec:?}").to_lowercase();
        let out = tmp.path().join(format!("out-{name}"));
        // A one-row bounded source on another topic ends the run once the sink caught up.
        let yaml = format!(
            r#"version: "1.0"
sources:
  tick:
    connector: datagen
    topic: tick
    config: {{pattern: sequence, events_per_second: 0, max_events: 1}}
sinks:
  lake_{name}:
    connector: object-storage
    topics: [events]
    consumer_group: lake_{name}
    start_offset: earliest
    config:
      provider: local
      local: {{root: {root}}}
      format: parquet
      parquet: {{compression: {name}}}
      batch_size: {rows}
      max_file_bytes: 1099511627776
      flush_interval_secs: 3600
settings:
  state_dir: {state}
  health: {{enabled: false, port: 0}}
  metrics: {{enabled: false, port: 0}}
"#,
            root = out.display(),
            rows = rows_wanted,
            state = state.display(),
        );
        let loaded =
            rivven_engine::config::load_str(&yaml, "bench.yaml", tmp.path().into(), |_| None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut registry = Registry::new();
        rivven_sources::register(&mut registry)?;
        rivven_sinks::register(&mut registry)?;
        let pipelines = rivven_engine::pipelines::Pipelines::resolve(&loaded, &registry)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let runtime = Runtime::new(&loaded, &pipelines)?;
        let probe = Probe::start();
        let report = runtime.run().await?;
        let sample = probe.stop();
        ensure!(report.failed.is_empty(), "failed: {:?}", report.failed);
        let (file_bytes, _) = super::files_under(&out, false)?;
        ensure!(
            file_bytes > 0,
            "the sink wrote nothing under {}",
            out.display()
        );

        // The bare writer: same properties, same batches, same directory, synced.
        let props = ParquetOptions {
            compression: codec,
            ..ParquetOptions::default()
        }
        .properties()
        .map_err(anyhow::Error::msg)?;
        let path = tmp.path().join(format!("bare-{name}.parquet"));
        let t0 = Instant::now();
        let file = std::fs::File::create(&path)?;
        let mut w = parquet::arrow::ArrowWriter::try_new(
            file.try_clone()?,
            batches[0].schema(),
            Some(props),
        )?;
        for b in &batches {
            w.write(b)?;
        }
        w.close()?;
        file.sync_all()?;
        let bare = t0.elapsed().as_secs_f64();
        let bare_bytes = std::fs::metadata(&path)?.len();
        figures.push(
            Figure::new(
                &format!("topic -> object-storage parquet {name} (local)"),
                rows_wanted,
                bytes,
                sample,
            )
            .against(
                &format!(
                    "bare ArrowWriter parquet {name}, same batches in memory -> one synced file \
                     ({bare_bytes} bytes; ours {file_bytes})"
                ),
                bare,
            ),
        );
    }
    Ok(Report {
        scenario: "object-storage-parquet".into(),
        description: super::describe("object-storage-parquet"),
        unix_time: crate::unix_time(),
        machine: Machine::here(),
        params: serde_json::json!({
            "rows": rows_wanted, "batch_rows": p.batch_rows, "dir": p.dir,
            "input_bytes": "in-memory Arrow size of the batches",
            "source": "datagen users cdc_mode seed 42 (nested change events), pre-filled topic",
        }),
        figures,
    })
}
