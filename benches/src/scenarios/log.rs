//! `log-append-read`: the embedded topic log against raw sequential file I/O.
//!
//! Batches are generated first (not timed). Append: every batch through
//! `EmbeddedLog::append` (Arrow IPC encode, CRC, write, fsync per policy) and a final
//! `sync_all`. Limit: the segment files' exact bytes written raw in frame-sized chunks
//! with the same fsync policy. Read: every batch back through `EmbeddedLog::read` (CRC
//! check, IPC decode). Limit: the raw file read sequentially. The page cache is warm for
//! both reads.

use super::{files_under, generate, raw_read, raw_write, Params};
use crate::measure::{Figure, Machine, Probe, Report};
use anyhow::{ensure, Result};
use rivven_engine::config::TopicSettings;
use rivven_engine::topic::EmbeddedLog;

pub async fn run(p: &Params) -> Result<Report> {
    let rows_wanted = p.rows_or(2_000_000);
    let batches = generate(rows_wanted, p.batch_rows).await?;
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    ensure!(
        rows == rows_wanted,
        "generated {rows} rows, wanted {}",
        rows_wanted
    );
    let tmp = tempfile::tempdir_in(&p.dir)?;
    let state = tmp.path().join("state");
    let settings = TopicSettings {
        fsync: p.fsync,
        ..TopicSettings::default()
    };
    let log = EmbeddedLog::open(&state, settings.clone())?;
    log.ensure_topic("bench")?;

    let probe = Probe::start();
    for b in &batches {
        log.append("bench", 0, b, None).await?;
    }
    log.sync_all()?;
    let append = probe.stop();
    drop(batches);

    let (bytes, data) = files_under(&state.join("topics"), true)?;
    ensure!(bytes > 0, "no segment bytes under {}", state.display());
    let frames = rows.div_ceil(p.batch_rows as u64).max(1);
    let raw_w = raw_write(tmp.path(), &data, (bytes / frames) as usize, p.fsync)?;
    drop(data);

    let end = log.end_offset("bench", 0)?;
    let probe = Probe::start();
    let mut off = 0;
    let mut read_rows = 0u64;
    while off < end {
        for b in log.read("bench", 0, off, 8 << 20).await? {
            read_rows += b.batch.num_rows() as u64;
            off = b.next_offset();
        }
    }
    let read = probe.stop();
    ensure!(
        read_rows == rows,
        "read {read_rows} rows back, appended {rows}"
    );
    let (raw_r, raw_bytes) = raw_read(tmp.path())?;
    ensure!(raw_bytes == bytes);

    let fsync = p.fsync_name();
    Ok(Report {
        scenario: "log-append-read".into(),
        description: super::describe("log-append-read"),
        unix_time: crate::unix_time(),
        machine: Machine::here(),
        params: serde_json::json!({
            "rows": rows, "batch_rows": p.batch_rows, "fsync": fsync,
            "segment_bytes": settings.segment_bytes, "on_disk_bytes": bytes,
            "page_cache": "warm for both reads", "dir": p.dir,
        }),
        figures: vec![
            Figure::new("append", rows, bytes, append).against(
                &format!("raw sequential write, same bytes, fsync {fsync}"),
                raw_w,
            ),
            Figure::new("read", rows, bytes, read)
                .against("raw sequential read of the same bytes", raw_r),
        ],
    })
}
