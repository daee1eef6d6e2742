//! `pg-latency`: how long a committed PostgreSQL change takes to become durable in the
//! embedded topic, at fixed rates, with default settings.
//!
//! A runtime streams one table with postgres-cdc (every `settings` default but `state_dir`
//! and the endpoints, `snapshot_mode: never`). A load task commits 100-row transactions
//! (the `pg-stream` rows, about 250 bytes each) on a fixed schedule at 1,000, 10,000 and
//! 50,000 rows/s in turn. A reader in the same process follows the topic: appends become
//! visible only once they are durable (fsync per `topic.fsync`, default `always`), and it
//! wakes on every append. A row's latency is the time the reader saw it minus its
//! `source.ts_ms` (the commit time PostgreSQL recorded; both clocks are this machine's).
//! `ts_ms` has millisecond resolution, so each figure can be up to 1 ms high.
//!
//! Beside each rate: the disk's own latency for a small durable append (a 64 KiB write and
//! fsync in the same directory, 200 times), the floor under any durable topic append.

use super::postgres::{insert_rows, source_runtime, Db, DDL};
use super::Params;
use crate::measure::{Figure, Latency, Machine, Probe, Report};
use anyhow::{anyhow, bail, ensure, Result};
use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use rivven_engine::topic::EmbeddedLog;
use rivven_testkit::unique_name;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Rows per transaction of the load.
const TXN_ROWS: u64 = 100;
/// The rates measured, in rows per second.
const RATES: [u64; 3] = [1_000, 10_000, 50_000];

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Latencies (ms) of every row the reader sees.
#[derive(Default)]
struct Seen {
    latencies: Vec<f64>,
    rows: u64,
}

/// Follow partition 0 of `topic` from its current end, recording each row's latency,
/// until `stop` is set.
async fn follow(
    log: EmbeddedLog,
    topic: &str,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<tokio::sync::Notify>,
) -> Result<()> {
    let mut changed = log.subscribe();
    let mut from = log.end_offset(topic, 0)?;
    loop {
        let batches = log.read(topic, 0, from, 8 << 20).await?;
        if batches.is_empty() {
            tokio::select! {
                r = changed.changed() => r.map_err(|e| anyhow!("topic log closed: {e}"))?,
                () = stop.notified() => return Ok(()),
            }
            continue;
        }
        let at = now_ms();
        let mut s = seen.lock().map_err(|_| anyhow!("poisoned"))?;
        for b in batches {
            from = b.next_offset();
            let source = b
                .batch
                .column_by_name("source")
                .ok_or_else(|| anyhow!("no source column"))?
                .as_struct();
            let ts = source
                .column_by_name("ts_ms")
                .ok_or_else(|| anyhow!("no source.ts_ms"))?
                .as_primitive::<Int64Type>();
            for i in 0..ts.len() {
                if ts.is_valid(i) {
                    s.latencies.push(at - ts.value(i) as f64);
                }
            }
            s.rows += b.batch.num_rows() as u64;
        }
    }
}

/// The disk's latency for a durable small append: `n` writes of 64 KiB, each fsynced.
fn fsync_latency(dir: &std::path::Path, n: usize) -> Result<Latency> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = vec![0x5au8; 64 << 10];
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(Latency::of(ms))
}

/// Commit `rows` rows from `first_id` in 100-row transactions at `rate` rows/s; returns
/// the seconds it took (more than planned when the server could not keep up).
async fn load(client: &tokio_postgres::Client, first_id: u64, rows: u64, rate: u64) -> Result<f64> {
    let interval = Duration::from_secs_f64(TXN_ROWS as f64 / rate as f64);
    let t0 = tokio::time::Instant::now();
    let mut id = first_id;
    let mut k = 0u32;
    while id < first_id + rows {
        tokio::time::sleep_until(t0 + interval * k).await;
        let hi = (id + TXN_ROWS - 1).min(first_id + rows - 1);
        client
            .batch_execute(&insert_rows(&id.to_string(), &hi.to_string()))
            .await
            .map_err(|e| anyhow!("load: {e}"))?;
        id = hi + 1;
        k += 1;
    }
    Ok(t0.elapsed().as_secs_f64())
}

pub async fn run(p: &Params) -> Result<Report> {
    // Each rate runs `--rows / 10,000` seconds, at most 15 (default 150,000 rows: 15 s).
    let seconds = (p.rows_or(150_000) as f64 / 10_000.0).clamp(0.5, 15.0);
    let db = Db::new()?;
    db.sql(DDL)?;
    db.sql("CREATE PUBLICATION bench_pub FOR TABLE bench")?;
    let tmp = tempfile::tempdir_in(&p.dir)?;
    let state = tmp.path().join("state");
    let slot = unique_name("lat");
    // Defaults only: no batch, queue or topic settings but the fsync policy (`always`
    // unless --fsync says otherwise).
    let yaml = format!(
        "version: \"1.0\"
sources:
  pg:
    {}
settings:
  state_dir: {}
  topic: {{fsync: {}}}
  health: {{enabled: false}}
  metrics: {{enabled: false}}
",
        db.source_yaml(&slot, "never")
            .replace("      snapshot: {parallel_tables: 1}\n", ""),
        state.display(),
        p.fsync_name()
    );
    let runtime = source_runtime(&yaml, tmp.path())?;
    let log = runtime.log().clone();
    let stop_runtime = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());

    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={} password={} dbname={}",
            db.pg.port, db.pg.user, db.pg.password, db.name
        ),
        tokio_postgres::NoTls,
    )
    .await
    .map_err(|e| anyhow!("connect: {e}"))?;
    tokio::spawn(conn);

    // Warm up: once the source streams from its slot, one transaction through it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let active =
        format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active");
    while client
        .query_one(active.as_str(), &[])
        .await
        .map_err(|e| anyhow!("{e}"))?
        .get::<_, i64>(0)
        == 0
    {
        ensure!(!run.is_finished(), "the pipeline ended before streaming");
        ensure!(
            Instant::now() < deadline,
            "the source did not start streaming"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut next_id = 1u64;
    load(&client, next_id, TXN_ROWS, 1_000).await?;
    next_id += TXN_ROWS;
    while !(log.has_topic("changes") && log.end_offset("changes", 0)? >= TXN_ROWS) {
        ensure!(!run.is_finished(), "the pipeline ended during warm-up");
        ensure!(Instant::now() < deadline, "warm-up timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let floor = fsync_latency(&state, 200)?;
    let mut figures = Vec::new();
    let mut params = Vec::new();
    for rate in RATES {
        let rows = ((rate as f64 * seconds) as u64).div_ceil(TXN_ROWS) * TXN_ROWS;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(tokio::sync::Notify::new());
        let reader = tokio::spawn(follow(log.clone(), "changes", seen.clone(), stop.clone()));
        let probe = Probe::start();
        let load_s = load(&client, next_id, rows, rate).await?;
        next_id += rows;
        // Wait for the last rows (or give up after 60 s: a figure then says how many).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = seen.lock().map_err(|_| anyhow!("poisoned"))?.rows;
            if got >= rows || Instant::now() >= deadline || run.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let sample = probe.stop();
        stop.notify_one();
        reader.await??;
        let s = std::mem::take(&mut *seen.lock().map_err(|_| anyhow!("poisoned"))?);
        ensure!(
            s.rows == rows,
            "rate {rate}: the topic got {} of {rows} rows",
            s.rows
        );
        let latency = Latency::of(s.latencies);
        params.push(serde_json::json!({
            "rate_rows_per_s": rate, "rows": rows, "load_seconds": load_s,
            "achieved_rows_per_s": (rows as f64 / load_s).round(),
        }));
        figures.push(
            Figure::new(
                &format!("commit to durable topic append at {rate} rows/s"),
                rows,
                0,
                sample,
            )
            .with_latency(
                latency,
                "64 KiB write + fsync on the same disk (200 times)",
                floor.clone(),
            ),
        );
    }
    stop_runtime.cancel();
    let report = run.await??;
    if !report.failed.is_empty() {
        bail!("failed: {:?}", report.failed);
    }
    Ok(Report {
        scenario: "pg-latency".into(),
        description: super::describe("pg-latency"),
        unix_time: crate::unix_time(),
        machine: Machine::here(),
        params: serde_json::json!({
            "rows_per_transaction": TXN_ROWS, "seconds_per_rate": seconds,
            "fsync": p.fsync_name(), "settings": "defaults", "postgres": db.pg.version,
            "rates": params,
        }),
        figures,
    })
}
