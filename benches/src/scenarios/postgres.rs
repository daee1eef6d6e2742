//! `pg-stream` and `pg-snapshot`: postgres-cdc against a private PostgreSQL 15 (started by
//! rivven-testkit), each compared with PostgreSQL's own tool doing the same work on the
//! same server in the same run.
//!
//! - `pg-stream`: two pgoutput slots are created at the same point, then a mixed workload
//!   runs (60% inserts, 30% updates, 10% deletes of 16-column, ~250-byte rows, 1,000 rows
//!   per transaction). The runtime streams one slot into the embedded topic until every
//!   change is in it; then `pg_recvlogical` drains the other into /dev/null up to the
//!   same end LSN.
//! - `pg-snapshot`: a table is read by the runtime with `snapshot_mode: initial_only` into
//!   the embedded topic, and by `COPY ... TO STDOUT (FORMAT binary)` into /dev/null. One
//!   snapshot session (`parallel_tables: 1`), like the one COPY it is compared with.
//!
//! Both sides of a ratio move the same rows; figures carry the same `bytes` (the topic's
//! on-disk size for the stream, the table's heap size for the snapshot), so the ratio is
//! the ratio of rates.

use super::{files_under, Params};
use crate::measure::{Figure, Machine, Probe, Report, Sample};
use anyhow::{anyhow, bail, ensure, Context, Result};
use rivven_engine::registry::Registry;
use rivven_engine::runtime::Runtime;
use rivven_testkit::{unique_name, Postgres};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(super) const DDL: &str = "CREATE TABLE bench (
  id int8 PRIMARY KEY, a int4, b int8, c float8, d numeric(12,2), e text, f varchar(64),
  g bool, h timestamptz, i date, j uuid, k text, l int2, m float4, n text, o text)";

/// `INSERT ... SELECT` of rows `lo..=hi` (SQL expressions; about 250 bytes each).
pub(super) fn insert_rows(lo: &str, hi: &str) -> String {
    format!(
        "INSERT INTO bench SELECT g, g % 1000, g * 7, g * 0.5, (g % 100000) / 100.0, md5(g::text),
           'user-' || g || '@example.com', g % 2 = 0,
           '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second',
           '2024-01-01'::date + (g % 365)::int, md5(g::text)::uuid,
           md5((g * 3)::text) || md5((g * 5)::text), (g % 30000)::int2, g * 0.25,
           'note ' || g, repeat('x', 40)
         FROM generate_series({lo}, {hi}) g"
    )
}

pub(super) struct Db {
    pub pg: Postgres,
    pub name: String,
    /// Drops the database and its slots when the scenario ends.
    _temp: rivven_testkit::TempDatabase,
}

impl Db {
    pub fn new() -> Result<Db> {
        let pg = rivven_testkit::postgres().map_err(|e| anyhow!("{e}"))?;
        let temp = pg.temp_database("bench").map_err(|e| anyhow!(e))?;
        Ok(Db {
            pg,
            name: temp.name.clone(),
            _temp: temp,
        })
    }

    pub fn sql(&self, sql: &str) -> Result<String> {
        self.pg.psql(&self.name, sql).map_err(|e| anyhow!("{e}"))
    }

    pub fn source_yaml(&self, slot: &str, mode: &str) -> String {
        self.source_yaml_with(slot, mode, "")
    }

    /// [`Db::source_yaml`] with more `config:` lines (`extra`, already indented).
    fn source_yaml_with(&self, slot: &str, mode: &str, extra: &str) -> String {
        format!(
            "connector: postgres-cdc
    topic: changes
    config:
      host: 127.0.0.1
      port: {}
      database: {}
      user: {}
      password: \"{}\"
      slot_name: {slot}
      publication: bench_pub
      tables: [bench]
      snapshot: {{parallel_tables: 1}}
      snapshot_mode: {mode}{extra}",
            self.pg.port, self.name, self.pg.user, self.pg.password
        )
    }
}

/// A runtime for `yaml` (a pipeline file with the built-in sources), relative paths under
/// `dir`.
/// Run a postgres-cdc source alone in a task, as the runtime runs one, dropping its
/// batches, until it has given `limit` rows or ends; returns the rows and batches it gave.
async fn drain_source(
    cfg: rivven_sources::postgres_cdc::PostgresCdcConfig,
    batch_rows: usize,
    limit: Option<u64>,
) -> Result<(u64, u64)> {
    tokio::spawn(async move {
        let mut src = rivven_sources::postgres_cdc::PostgresCdcSource::new(cfg);
        rivven_engine::connector::Source::open(&mut src, None).await?;
        let (mut rows, mut batches) = (0u64, 0u64);
        while limit.is_none_or(|l| rows < l) {
            match rivven_engine::connector::Source::poll(&mut src, batch_rows).await? {
                Some(b) => {
                    rows += b.batch.num_rows() as u64;
                    batches += 1;
                }
                None => break,
            }
        }
        Ok((rows, batches))
    })
    .await?
}

pub(super) fn source_runtime(yaml: &str, dir: &std::path::Path) -> Result<Runtime> {
    let loaded = rivven_engine::config::load_str(yaml, "bench.yaml", dir.into(), |_| None)
        .map_err(|e| anyhow!("{e}"))?;
    let mut registry = Registry::new();
    rivven_sources::register(&mut registry)?;
    let pipelines = rivven_engine::pipelines::Pipelines::resolve(&loaded, &registry)
        .map_err(|e| anyhow!("{e}"))?;
    Ok(Runtime::new(&loaded, &pipelines)?)
}

/// Run a config with one source and no sink until `done(rows in topic)` or the runtime
/// ends; returns (sample, rows, on-disk topic bytes).
async fn run_pipeline(
    p: &Params,
    source_yaml: &str,
    until_rows: Option<u64>,
) -> Result<(Sample, u64, u64)> {
    let tmp = tempfile::tempdir_in(&p.dir)?;
    let state = tmp.path().join("state");
    let yaml = format!(
        "version: \"1.0\"
sources:
  pg:
    {source_yaml}
settings:
  state_dir: {}
  batch: {{max_rows: {}}}
  topic: {{fsync: {}}}
  health: {{enabled: false, port: 0}}
  metrics: {{enabled: false, port: 0}}
",
        state.display(),
        p.batch_rows,
        p.fsync_name()
    );
    let runtime = source_runtime(&yaml, tmp.path())?;
    let log = runtime.log().clone();
    let stop = runtime.shutdown_token();
    let probe = Probe::start();
    let run = tokio::spawn(runtime.run());
    if let Some(n) = until_rows {
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            let have = if log.has_topic("changes") {
                log.end_offset("changes", 0)?
            } else {
                0
            };
            if have >= n {
                break;
            }
            if run.is_finished() {
                bail!("the pipeline ended with {have} of {n} rows");
            }
            ensure!(Instant::now() < deadline, "timed out at {have} of {n} rows");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // An unbounded run is measured when the goal is reached, a bounded one when it ends.
    let sample = if until_rows.is_some() {
        let s = probe.stop();
        stop.cancel();
        let report = run.await??;
        ensure!(report.failed.is_empty(), "failed: {:?}", report.failed);
        s
    } else {
        let report = run.await??;
        ensure!(report.failed.is_empty(), "failed: {:?}", report.failed);
        probe.stop()
    };
    let rows = log.end_offset("changes", 0)?;
    let (bytes, _) = files_under(&state.join("topics"), false)?;
    Ok((sample, rows, bytes))
}

pub async fn stream(p: &Params) -> Result<Report> {
    let changes = p.rows_or(1_000_000);
    let db = Db::new()?;
    db.sql(DDL)?;
    db.sql("CREATE PUBLICATION bench_pub FOR TABLE bench")?;
    // Two slots for pg_recvlogical: the best of two runs is the baseline. Ours reads one
    // slot with text values and one with `binary: true`.
    let (ours, ours_binary, theirs) = (
        unique_name("ours"),
        unique_name("ours_bin"),
        [unique_name("theirs"), unique_name("theirs")],
    );
    // The server decoding alone (pgoutput into a counting query), and our source alone
    // (batches dropped), each in both value formats.
    let (server, server_binary, alone, alone_binary) = (
        unique_name("server"),
        unique_name("server_bin"),
        unique_name("alone"),
        unique_name("alone_bin"),
    );
    for slot in [
        &ours,
        &ours_binary,
        &theirs[0],
        &theirs[1],
        &server,
        &server_binary,
        &alone,
        &alone_binary,
    ] {
        db.sql(&format!(
            "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
        ))?;
    }
    // The workload: 60% inserts, 30% updates, 10% deletes, 1,000 rows per transaction.
    let inserts = changes * 6 / 10;
    let updates = changes * 3 / 10;
    let deletes = changes - inserts - updates;
    let t0 = Instant::now();
    db.sql(&format!(
        "DO $$ BEGIN
           FOR t IN 0..{} LOOP
             {};
             COMMIT;
           END LOOP;
         END $$",
        inserts.div_ceil(1000) - 1,
        insert_rows("t * 1000 + 1", &format!("least((t + 1) * 1000, {inserts})"))
    ))
    .context("insert workload")?;
    db.sql(&format!(
        "DO $$ BEGIN
           FOR t IN 0..{} LOOP
             UPDATE bench SET a = a + 1, k = md5(k), h = h + interval '1 day'
               WHERE id > t * 1000 AND id <= least((t + 1) * 1000, {updates});
             COMMIT;
           END LOOP;
         END $$",
        updates.div_ceil(1000) - 1
    ))
    .context("update workload")?;
    db.sql(&format!(
        "DO $$ BEGIN
           FOR t IN 0..{} LOOP
             DELETE FROM bench WHERE id > {inserts} - (t + 1) * 1000
               AND id <= {inserts} - t * 1000 AND id > {inserts} - {deletes};
             COMMIT;
           END LOOP;
         END $$",
        deletes.div_ceil(1000) - 1
    ))
    .context("delete workload")?;
    let workload_s = t0.elapsed().as_secs_f64();
    let end_lsn = db.sql("SELECT pg_current_wal_lsn()")?.trim().to_string();

    // Ours first; then PostgreSQL's own client drains the identical slot into /dev/null
    // (its WAL reads then find a warm cache: any advantage is the baseline's).
    let (sample, rows, topic_bytes) = run_pipeline(
        p,
        &db.source_yaml_with(&ours, "never", "\n      binary: false"),
        Some(changes),
    )
    .await?;
    ensure!(rows >= changes, "topic has {rows} rows, expected {changes}");
    let binary_yaml = db.source_yaml_with(&ours_binary, "never", "\n      binary: true");
    let (binary_sample, rows, binary_bytes) = run_pipeline(p, &binary_yaml, Some(changes)).await?;
    ensure!(
        rows >= changes,
        "binary: topic has {rows} rows, expected {changes}"
    );
    let mut recv_s = f64::MAX;
    for slot in &theirs {
        let t = Instant::now();
        let status = Command::new(db.pg.bin_dir.join("pg_recvlogical"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &db.pg.port.to_string(),
                "-U",
                &db.pg.user,
            ])
            .args(["-d", &db.name, "--slot", slot, "--start", "--no-loop"])
            .args(["--endpos", &end_lsn, "-o", "proto_version=1"])
            .args(["-o", "publication_names=bench_pub", "-f", "/dev/null"])
            .env("PGPASSWORD", &db.pg.password)
            .stdin(Stdio::null())
            .status()?;
        recv_s = recv_s.min(t.elapsed().as_secs_f64());
        ensure!(status.success(), "pg_recvlogical failed: {status}");
    }
    // The server's own decoding on identical slots: pgoutput with the same options,
    // messages counted in the query, nothing sent over the network.
    let mut server_s = [0f64; 2];
    for (i, (slot, extra)) in [(&server, ""), (&server_binary, ", 'binary', 'true'")]
        .into_iter()
        .enumerate()
    {
        let t = Instant::now();
        let counted: u64 = db
            .sql(&format!(
                "SELECT count(*) FILTER (WHERE get_byte(data, 0) IN (73, 85, 68)) \
                 FROM pg_logical_slot_get_binary_changes('{slot}', '{end_lsn}', NULL, \
                   'proto_version', '1', 'publication_names', 'bench_pub'{extra})"
            ))?
            .trim()
            .parse()
            .context("server decode count")?;
        server_s[i] = t.elapsed().as_secs_f64();
        ensure!(
            counted == changes,
            "the server decoded {counted} changes, expected {changes}"
        );
    }
    // Our source alone: the same slots' changes decoded into batches that are dropped.
    let (mut alone_samples, mut alone_batches) = (Vec::new(), Vec::new());
    for (slot, binary) in [(&alone, false), (&alone_binary, true)] {
        let cfg: rivven_sources::postgres_cdc::PostgresCdcConfig = serde_yaml::from_str(&format!(
            "host: 127.0.0.1\nport: {}\ndatabase: {}\nuser: {}\npassword: \"{}\"\n\
                 slot_name: {slot}\npublication: bench_pub\ntables: [bench]\n\
                 snapshot_mode: never\nbinary: {binary}\n",
            db.pg.port, db.name, db.pg.user, db.pg.password
        ))?;
        let probe = Probe::start();
        let (got, batches) = drain_source(cfg, p.batch_rows, Some(changes)).await?;
        alone_batches.push(batches);
        ensure!(
            got == changes,
            "the source ended after {got} of {changes} changes"
        );
        alone_samples.push(probe.stop());
    }
    Ok(Report {
        scenario: "pg-stream".into(),
        description: super::describe("pg-stream"),
        unix_time: crate::unix_time(),
        machine: Machine::here(),
        params: serde_json::json!({
            "changes": changes, "inserts": inserts, "updates": updates, "deletes": deletes,
            "rows_per_transaction": 1000, "columns": 16, "batch_rows": p.batch_rows,
            "fsync": p.fsync_name(), "topic_bytes": topic_bytes,
            "workload_seconds": workload_s, "postgres": db.pg.version,
            "source_alone_batches": alone_batches,
        }),
        figures: vec![
            Figure::new(
                "stream into the embedded topic (text values)",
                changes,
                topic_bytes,
                sample,
            )
            .against(
                "pg_recvlogical draining an identical slot into /dev/null (best of 2)",
                recv_s,
            ),
            Figure::new(
                "stream into the embedded topic (binary: true)",
                changes,
                binary_bytes,
                binary_sample,
            )
            .against(
                "pg_recvlogical draining an identical slot into /dev/null (best of 2)",
                recv_s,
            ),
            Figure::new(
                "stream into the embedded topic (text values)",
                changes,
                topic_bytes,
                sample,
            )
            .against(SERVER_TEXT, server_s[0]),
            Figure::new(
                "stream into the embedded topic (binary: true)",
                changes,
                binary_bytes,
                binary_sample,
            )
            .against(SERVER_BINARY, server_s[1]),
            Figure::new(
                "postgres-cdc source alone, batches dropped (text values)",
                changes,
                topic_bytes,
                alone_samples[0],
            )
            .against(SERVER_TEXT, server_s[0]),
            Figure::new(
                "postgres-cdc source alone, batches dropped (binary: true)",
                changes,
                binary_bytes,
                alone_samples[1],
            )
            .against(SERVER_BINARY, server_s[1]),
        ],
    })
}

/// The server's own decoding, the limit of any logical-replication client.
const SERVER_TEXT: &str =
    "the server decoding an identical slot (pg_logical_slot_get_binary_changes, pgoutput \
     text values, changes counted in the query)";
const SERVER_BINARY: &str =
    "the server decoding an identical slot (pg_logical_slot_get_binary_changes, pgoutput \
     binary values, changes counted in the query)";

pub async fn snapshot(p: &Params) -> Result<Report> {
    let rows = p.rows_or(5_000_000);
    let db = Db::new()?;
    db.sql(DDL)?;
    db.sql("CREATE PUBLICATION bench_pub FOR TABLE bench")?;
    let mut lo = 1;
    while lo <= rows {
        let hi = (lo + 999_999).min(rows);
        db.sql(&insert_rows(&lo.to_string(), &hi.to_string()))?;
        lo = hi + 1;
    }
    db.sql("VACUUM ANALYZE bench")?;
    let heap: u64 = db
        .sql("SELECT pg_relation_size('bench')")?
        .trim()
        .parse()
        .context("relation size")?;
    // Warm the cache for both readers alike.
    db.sql("SELECT count(*) FROM bench")?;

    let t = Instant::now();
    let status = Command::new(db.pg.bin_dir.join("psql"))
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &db.pg.port.to_string()])
        .args(["-U", &db.pg.user, "-d", &db.name])
        .args(["-c", "COPY bench TO STDOUT (FORMAT binary)"])
        .env("PGPASSWORD", &db.pg.password)
        .stdout(std::fs::File::create("/dev/null")?)
        .status()?;
    let copy_s = t.elapsed().as_secs_f64();
    ensure!(status.success(), "COPY failed: {status}");

    // The source alone (batches dropped): the connector's own ceiling.
    let cfg: rivven_sources::postgres_cdc::PostgresCdcConfig = serde_yaml::from_str(&format!(
        "host: 127.0.0.1\nport: {}\ndatabase: {}\nuser: {}\npassword: \"{}\"\n\
         slot_name: {}\npublication: bench_pub\ntables: [bench]\nsnapshot_mode: initial_only\n\
         snapshot: {{parallel_tables: 1}}\n",
        db.pg.port,
        db.name,
        db.pg.user,
        db.pg.password,
        unique_name("alone")
    ))?;
    let probe = Probe::start();
    let (alone_rows, _) = drain_source(cfg, p.batch_rows, None).await?;
    let alone = probe.stop();
    ensure!(
        alone_rows == rows,
        "source alone read {alone_rows} rows, expected {rows}"
    );

    let slot = unique_name("snap");
    let (sample, got, topic_bytes) =
        run_pipeline(p, &db.source_yaml(&slot, "initial_only"), None).await?;
    ensure!(got == rows, "topic has {got} rows, expected {rows}");
    Ok(Report {
        scenario: "pg-snapshot".into(),
        description: super::describe("pg-snapshot"),
        unix_time: crate::unix_time(),
        machine: Machine::here(),
        params: serde_json::json!({
            "rows": rows, "columns": 16, "heap_bytes": heap, "topic_bytes": topic_bytes,
            "batch_rows": p.batch_rows, "fsync": p.fsync_name(), "postgres": db.pg.version,
        }),
        figures: vec![
            Figure::new("snapshot into the embedded topic", rows, heap, sample)
                .against("COPY ... TO STDOUT (FORMAT binary) into /dev/null", copy_s),
            Figure::new(
                "postgres-cdc source alone (batches dropped)",
                rows,
                heap,
                alone,
            )
            .against("COPY ... TO STDOUT (FORMAT binary) into /dev/null", copy_s),
        ],
    })
}
