//! `object-storage-parquet`: the object-storage sink writing Parquet (zstd, then snappy)
//! to the local provider, driven by the runtime from a pre-filled embedded topic until it
//! has caught up and committed. Limit: a bare arrow-rs `ArrowWriter` with the same writer
//! properties writing the same batches (already in memory) to one file in the same
//! directory, synced. Our side also reads and decodes the topic, names and renames the
//! file, and commits offsets.

use super::{bare_parquet, drain_into_sink, generate, prefill_events, Params};
use crate::measure::{Figure, Machine, Report};
use anyhow::{ensure, Result};
use rivven_sinks::format::{ParquetCompression, ParquetOptions};

pub async fn run(p: &Params) -> Result<Report> {
    let rows_wanted = p.rows_or(1_000_000);
    let tmp = tempfile::tempdir_in(&p.dir)?;
    let state = tmp.path().join("state");
    let batches = generate(rows_wanted, p.batch_rows).await?;
    let bytes = prefill_events(&state, &batches).await?;
    let mut figures = Vec::new();
    for codec in [ParquetCompression::Zstd, ParquetCompression::Snappy] {
        let name = format!("{codec:?}").to_lowercase();
        let out = tmp.path().join(format!("out-{name}"));
        let config = format!(
            "{{provider: local, local: {{root: {root}}}, format: parquet, \
             parquet: {{compression: {name}}}, batch_size: {rows_wanted}, \
             max_file_bytes: 1099511627776, flush_interval_secs: 3600}}",
            root = out.display(),
        );
        let group = format!("lake_{name}");
        let sample = drain_into_sink(tmp.path(), &state, "object-storage", &group, &config).await?;
        let (file_bytes, _) = super::files_under(&out, false)?;
        ensure!(
            file_bytes > 0,
            "the sink wrote nothing under {}",
            out.display()
        );
        let props = ParquetOptions {
            compression: codec,
            ..ParquetOptions::default()
        }
        .properties()
        .map_err(anyhow::Error::msg)?;
        let (bare, bare_bytes) = bare_parquet(
            &batches,
            props,
            &tmp.path().join(format!("bare-{name}.parquet")),
        )?;
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
