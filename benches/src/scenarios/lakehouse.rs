//! `lakehouse`: the `iceberg` (memory catalog, local warehouse) and `delta-lake` (local
//! table) sinks appending a pre-filled embedded topic, driven by the runtime until caught
//! up and committed. Limit: a bare arrow-rs `ArrowWriter` with the same Parquet properties
//! (snappy, both sinks' default) writing the same batches, already in memory, to one
//! synced file in the same directory. Our side also reads and decodes the topic, conforms
//! the batches to the table schema, splits files, writes table metadata and commits.

use super::{bare_parquet, drain_into_sink, generate, prefill_events, Params};
use crate::measure::{Figure, Machine, Report};
use anyhow::{ensure, Result};
use rivven_sinks::format::{ParquetCompression, ParquetOptions};
use std::path::Path;

/// Rows per commit: the sinks' `batch_size`.
const COMMIT_ROWS: u64 = 1_000_000;

pub async fn run(p: &Params) -> Result<Report> {
    let rows_wanted = p.rows_or(10_000_000);
    let tmp = tempfile::tempdir_in(&p.dir)?;
    let state = tmp.path().join("state");
    let batches = generate(rows_wanted, p.batch_rows).await?;
    let bytes = prefill_events(&state, &batches).await?;
    // The bare writer first: same properties, same batches, same directory, synced.
    let props = ParquetOptions {
        compression: ParquetCompression::Snappy,
        ..ParquetOptions::default()
    }
    .properties()
    .map_err(anyhow::Error::msg)?;
    let (bare, bare_bytes) = bare_parquet(&batches, props, &tmp.path().join("bare.parquet"))?;

    let mut figures = Vec::new();
    let mut commits = serde_json::Map::new();
    for sink in ["iceberg", "delta-lake"] {
        let out = tmp.path().join(format!("lake-{sink}"));
        let config = match sink {
            "iceberg" => format!(
                "{{catalog: {{type: memory, memory: {{warehouse: {}}}}}, table: events, \
                 batch_size: {COMMIT_ROWS}, flush_interval_secs: 3600}}",
                out.display()
            ),
            _ => format!(
                "{{table_uri: {}, batch_size: {COMMIT_ROWS}, flush_interval_secs: 3600}}",
                out.join("events").display()
            ),
        };
        let group = format!("lake_{}", sink.replace('-', "_"));
        let sample = drain_into_sink(tmp.path(), &state, sink, &group, &config).await?;
        let (file_bytes, _) = super::files_under(&out, false)?;
        let (n_commits, n_files) = table_counts(sink, &out)?;
        ensure!(
            n_commits > 0,
            "{sink} committed nothing under {}",
            out.display()
        );
        let minutes = sample.seconds / 60.0;
        commits.insert(
            sink.to_string(),
            serde_json::json!({
                "commits": n_commits,
                "data_files": n_files,
                "files_per_commit": (n_files as f64 / n_commits as f64 * 100.0).round() / 100.0,
                "commits_per_minute": (n_commits as f64 / minutes.max(1e-9) * 10.0).round() / 10.0,
                "bytes_on_disk": file_bytes,
            }),
        );
        figures.push(
            Figure::new(
                &format!("topic -> {sink} append, snappy (local), {COMMIT_ROWS} rows per commit"),
                rows_wanted,
                bytes,
                sample,
            )
            .against(
                &format!(
                    "bare ArrowWriter parquet snappy, same batches in memory -> one synced file \
                     ({bare_bytes} bytes; table {file_bytes})"
                ),
                bare,
            ),
        );
    }
    Ok(Report {
        scenario: "lakehouse".into(),
        description: super::describe("lakehouse"),
        unix_time: crate::unix_time(),
        machine: Machine::here(),
        params: serde_json::json!({
            "rows": rows_wanted, "batch_rows": p.batch_rows, "dir": p.dir,
            "commit_rows": COMMIT_ROWS,
            "input_bytes": "in-memory Arrow size of the batches",
            "source": "datagen users cdc_mode seed 42 (nested change events), pre-filled topic",
            "commits": commits,
        }),
        figures,
    })
}

/// (commits, data files) of the table under `dir`: Iceberg snapshots (manifest lists) and
/// Parquet files; Delta log versions and Parquet files.
fn table_counts(sink: &str, dir: &Path) -> Result<(u64, u64)> {
    let (mut commits, mut files) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
                continue;
            }
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".parquet") {
                files += 1;
            }
            let is_commit = match sink {
                "iceberg" => name.starts_with("snap-") && name.ends_with(".avro"),
                _ => name.ends_with(".json") && d.ends_with("_delta_log"),
            };
            if is_commit {
                commits += 1;
            }
        }
    }
    Ok((commits, files))
}
