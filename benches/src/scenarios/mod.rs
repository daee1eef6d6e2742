//! Named scenarios. Each one measures our path and, in the same run on the same bytes, the
//! physical limit it is compared with.

#[cfg(feature = "lakehouse")]
pub mod lakehouse;
pub mod latency;
pub mod log;
pub mod pipeline;
pub mod postgres;
pub mod storage;
pub mod transforms;

use anyhow::Result;
use arrow::record_batch::RecordBatch;
use rivven_engine::config::FsyncPolicy;
use rivven_engine::connector::Source;
use rivven_sources::datagen::{DatagenConfig, DatagenSource};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

/// Knobs shared by the scenarios.
#[derive(Debug, Clone)]
pub struct Params {
    /// Rows (change events) per scenario; `None`: the scenario's default.
    pub rows: Option<u64>,
    /// Rows per batch.
    pub batch_rows: usize,
    /// Where temp data goes (a disk, not tmpfs, for honest I/O figures).
    pub dir: std::path::PathBuf,
    /// Embedded-log fsync policy.
    pub fsync: FsyncPolicy,
}

impl Params {
    /// The row count: `--rows`, else the scenario's default.
    pub fn rows_or(&self, default: u64) -> u64 {
        self.rows.unwrap_or(default)
    }

    pub fn fsync_name(&self) -> &'static str {
        match self.fsync {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Interval => "interval",
            FsyncPolicy::Never => "never",
        }
    }
}

/// The description of scenario `name` (from [`ALL`]).
pub fn describe(name: &str) -> String {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map_or(String::new(), |(_, d)| (*d).to_string())
}

/// (name, description) of every scenario.
pub const ALL: &[(&str, &str)] = &[
    #[cfg(feature = "lakehouse")]
    (
        "lakehouse",
        "iceberg (memory catalog) and delta-lake sinks appending a pre-filled topic (default \
         10M rows, 1M rows per commit, snappy); compared with a bare ArrowWriter writing the \
         same batches to one synced file (built with --features lakehouse)",
    ),
    (
        "log-append-read",
        "embedded topic log: append change-event batches, then read them all back; \
         compared with raw sequential write (same bytes, same fsync policy) and read",
    ),
    (
        "datagen-topic-null",
        "whole pipeline: datagen cdc_mode -> embedded topic -> null sink; compared with \
         writing and reading the topic's bytes raw",
    ),
    (
        "pg-stream",
        "postgres-cdc streaming a mixed insert/update/delete workload (default 1M changes, \
         16 columns) into the embedded topic; compared with pg_recvlogical draining an \
         identical slot",
    ),
    (
        "pg-snapshot",
        "postgres-cdc snapshot (initial_only) of a table (default 5M rows) into the embedded \
         topic; compared with COPY ... TO STDOUT (FORMAT binary) into /dev/null",
    ),
    (
        "pg-latency",
        "postgres-cdc commit-to-durable-append latency at 1k, 10k and 50k rows/s (100-row \
         transactions, default settings); compared with the disk's own write+fsync latency",
    ),
    (
        "transform-chain",
        "six-step transform chain (unwrap, mask, filter, cast, insert_field, rename) over \
         datagen change events (default 1M), one thread; ratio_to_limit here is the \
         speed-up over the same steps row at a time on serde_json values",
    ),
    (
        "object-storage-parquet",
        "object-storage sink writing Parquet (zstd, snappy) from the embedded topic to a \
         local directory (default 1M change events); compared with a bare arrow-rs \
         ArrowWriter writing the same batches to the same directory",
    ),
];

/// The datagen config every scenario uses: change events (60/30/10), fixed seed, unthrottled.
pub fn datagen_config(rows: u64) -> Result<DatagenConfig> {
    Ok(serde_yaml::from_str(&format!(
        "pattern: users\ncdc_mode: true\nseed: 42\nevents_per_second: 0\nmax_events: {rows}\n"
    ))?)
}

/// Generate `rows` change events as batches of `batch_rows`.
pub async fn generate(rows: u64, batch_rows: usize) -> Result<Vec<RecordBatch>> {
    let mut src = DatagenSource::new(datagen_config(rows)?);
    src.open(None).await?;
    let mut out = Vec::new();
    while let Some(b) = src.poll(batch_rows).await? {
        out.push(b.batch);
    }
    Ok(out)
}

/// The generated batches written to partition 0 of topic `events` in a log at `state`;
/// returns their in-memory Arrow bytes.
pub async fn prefill_events(state: &Path, batches: &[RecordBatch]) -> Result<u64> {
    let log = rivven_engine::topic::EmbeddedLog::open(
        state,
        rivven_engine::config::TopicSettings::default(),
    )?;
    log.ensure_topic("events")?;
    for b in batches {
        log.append("events", 0, b, None).await?;
    }
    Ok(batches
        .iter()
        .map(|b| b.get_array_memory_size() as u64)
        .sum())
}

/// One sink `lake` draining topic `events` (group `group`) into `connector` with
/// `config` (a YAML flow mapping), with a one-row datagen source on another topic that
/// ends the run once the sink has caught up and committed. Returns the CPU/time sample.
pub async fn drain_into_sink(
    dir: &Path,
    state: &Path,
    connector: &str,
    group: &str,
    config: &str,
) -> Result<crate::measure::Sample> {
    let yaml = format!(
        r#"version: "1.0"
sources:
  tick:
    connector: datagen
    topic: tick
    config: {{pattern: sequence, events_per_second: 0, max_events: 1}}
sinks:
  lake:
    connector: {connector}
    topics: [events]
    consumer_group: {group}
    start_offset: earliest
    config: {config}
settings:
  state_dir: {state}
  health: {{enabled: false, port: 0}}
  metrics: {{enabled: false, port: 0}}
"#,
        state = state.display(),
    );
    let loaded = rivven_engine::config::load_str(&yaml, "bench.yaml", dir.into(), |_| None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut registry = rivven_engine::registry::Registry::new();
    rivven_sources::register(&mut registry)?;
    rivven_sinks::register(&mut registry)?;
    let pipelines = rivven_engine::pipelines::Pipelines::resolve(&loaded, &registry)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = rivven_engine::runtime::Runtime::new(&loaded, &pipelines)?;
    let probe = crate::measure::Probe::start();
    let report = runtime.run().await?;
    let sample = probe.stop();
    anyhow::ensure!(report.failed.is_empty(), "failed: {:?}", report.failed);
    Ok(sample)
}

/// The physical limit of the sink scenarios: a bare arrow-rs `ArrowWriter` with `props`
/// writing `batches` (already in memory) to one file at `path`, synced. Returns (seconds,
/// file bytes).
pub fn bare_parquet(
    batches: &[RecordBatch],
    props: parquet::file::properties::WriterProperties,
    path: &Path,
) -> Result<(f64, u64)> {
    let t0 = Instant::now();
    let file = std::fs::File::create(path)?;
    let mut w =
        parquet::arrow::ArrowWriter::try_new(file.try_clone()?, batches[0].schema(), Some(props))?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    file.sync_all()?;
    Ok((t0.elapsed().as_secs_f64(), std::fs::metadata(path)?.len()))
}

/// Run the datagen source alone, dropping each batch: (rows, in-memory Arrow bytes).
pub async fn drain_datagen(rows: u64, batch_rows: usize) -> Result<(u64, u64)> {
    let mut src = DatagenSource::new(datagen_config(rows)?);
    src.open(None).await?;
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(b) = src.poll(batch_rows).await? {
        n += b.batch.num_rows() as u64;
        bytes += b.batch.get_array_memory_size() as u64;
    }
    Ok((n, bytes))
}

/// Total size of the regular files under `dir`, and their contents concatenated.
pub fn files_under(dir: &Path, keep: bool) -> Result<(u64, Vec<u8>)> {
    let mut total = 0;
    let mut data = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                total += e.metadata()?.len();
                if keep {
                    std::fs::File::open(e.path())?.read_to_end(&mut data)?;
                }
            }
        }
    }
    Ok((total, data))
}

/// The physical limit of writing `data` sequentially in chunks of `chunk` bytes to a new
/// file in `dir` with the given fsync policy (`always`: fdatasync after every chunk, as
/// the log does after every frame; otherwise one fsync at the end). Disk timings vary
/// from run to run, so this is the best of three. Returns seconds.
pub fn raw_write(dir: &Path, data: &[u8], chunk: usize, fsync: FsyncPolicy) -> Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..3 {
        best = best.min(raw_write_once(dir, data, chunk, fsync)?);
    }
    Ok(best)
}

fn raw_write_once(dir: &Path, data: &[u8], chunk: usize, fsync: FsyncPolicy) -> Result<f64> {
    let path = dir.join("raw.bin");
    let t0 = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    for c in data.chunks(chunk.max(1)) {
        f.write_all(c)?;
        if fsync == FsyncPolicy::Always {
            f.sync_data()?;
        }
    }
    if fsync != FsyncPolicy::Never {
        f.sync_all()?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// The physical limit of reading the file `raw_write` wrote, sequentially in 1 MiB reads.
/// Returns (seconds, bytes read).
pub fn raw_read(dir: &Path) -> Result<(f64, u64)> {
    let t0 = Instant::now();
    let mut f = std::fs::File::open(dir.join("raw.bin"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    let mut checksum = 0u8;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            break;
        }
        checksum ^= buf[r - 1];
        n += r as u64;
    }
    std::hint::black_box(checksum);
    Ok((t0.elapsed().as_secs_f64(), n))
}
