//! The snapshot: every captured table read with binary `COPY` inside the snapshot the
//! replication slot exported, decoded straight into change-event batches (`op = "r"`).
//!
//! - **Planning**: a table is one unit, or (PostgreSQL 14+, above `snapshot.chunk_rows`
//!   estimated rows) several chunks of heap blocks read with TID range scans. A resumed
//!   snapshot skips the units its position lists as done.
//! - **Workers**: up to `snapshot.parallel_tables` sessions, each in a REPEATABLE READ
//!   transaction importing the exported snapshot, take units in turn; their batches
//!   interleave, one stream per table.
//! - **Units**: the COPY of a unit selects only the published, kept columns (and the
//!   publication's row filter), so snapshot and stream batches of a table have one shape.
//!   The last batch of a unit carries the position recording it as done.
//! - **End**: the sessions commit, then streaming starts on the replication session at
//!   the slot's consistent point, or (`initial_only`) the slot is dropped.

use super::catalog;
use super::config::{PostgresCdcConfig, SnapshotMode};
use super::conn::{format_lsn, quote_ident, ConnError, ConnectParams, ReplicationConnection};
use super::dead_letter::{dead_letter_batch, raw_json};
use super::events::{SourceInfo, TableEvents};
use super::pgoutput::{Relation, Value};
use super::position::Pos;
use super::stream::{route, start_replication, stream_name};
use super::types::{Kind, TypeCatalog};
use bytes::{Buf, BytesMut};
use rivven_engine::batch::{now_ms, op, SourceBatch};
use rivven_engine::routing::TopicResolver;
use rivven_engine::status::PipelineStatus;
use rivven_engine::{Error, Result};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// Whether `mode`, with a stored position `pos` and the slot present or not, reads the
/// tables before streaming.
pub(super) fn needed(mode: SnapshotMode, pos: Option<&Pos>, slot_exists: bool) -> bool {
    let unfinished = pos.is_some_and(|p| !p.snapshot_done);
    match mode {
        SnapshotMode::Never | SnapshotMode::NoData => false,
        SnapshotMode::Always => true,
        SnapshotMode::Initial | SnapshotMode::InitialOnly => pos.is_none() || unfinished,
        SnapshotMode::WhenNeeded => pos.is_none() || unfinished || !slot_exists,
    }
}

/// What the snapshot needs from its source.
pub(super) struct Env {
    /// The catalog session.
    pub sql: Arc<Client>,
    pub cfg: PostgresCdcConfig,
    pub catalog: TypeCatalog,
    pub database: Arc<str>,
    pub router: Option<TopicResolver>,
    /// Topic for rows that fail to decode (`None`: a failure stops the source).
    pub dead_letter: Option<Arc<str>>,
    /// Where progress is reported (absent outside a runtime).
    pub status: Option<Arc<PipelineStatus>>,
    /// Whether streaming, after the snapshot, asks for binary values.
    pub binary: bool,
}

/// What [`Snapshot::poll`] produced.
pub(super) enum Polled {
    /// A batch of snapshot rows (or dead-letter rows).
    Batch(SourceBatch),
    /// The snapshot is complete and streaming started after `from` on `repl` (`streaming`:
    /// protocol 2 streaming is on).
    Streaming {
        repl: ReplicationConnection,
        streaming: bool,
        from: u64,
    },
    /// The snapshot is complete and there is nothing to stream (`initial_only`).
    Finished,
}

struct Copy {
    events: TableEvents,
    /// Rows read so far, and the planner's estimate (`pg_class.reltuples`; `None` for a
    /// table never analyzed).
    done: u64,
    estimated: Option<i64>,
    last_report: Instant,
    carry: BytesMut,
    /// Field (offset, length) of the tuple being decoded; reused across rows.
    fields: Vec<Option<(usize, usize)>>,
    /// Whether the binary COPY header has been read.
    header_done: bool,
    /// The id of the unit being read (table or chunk).
    unit: String,
    topic: Option<Arc<str>>,
    stream_name: Arc<str>,
}

/// A snapshot in progress: see the module docs.
pub(super) struct Snapshot {
    env: Env,
    /// The replication session, kept until the snapshot ends and streaming starts on it.
    repl: Option<ReplicationConnection>,
    /// Batches queued while reading (the rows around a dead-lettered one): they go out
    /// before anything else.
    pub ready: VecDeque<SourceBatch>,
    /// Set when a row failed to decode with no dead-letter topic (builders hold a partial
    /// row): the source must be reopened.
    pub interrupted: bool,
    /// Tables read completely (also those of an interrupted attempt this one resumes).
    tables_done: Vec<String>,
    /// Per table: rows read, estimate, finished.
    progress: std::collections::BTreeMap<String, (u64, Option<i64>, bool)>,
    /// Sessions holding the snapshot (REPEATABLE READ transactions), one per parallel
    /// table.
    workers: Vec<Worker>,
    consistent_point: u64,
    /// Tables not started yet.
    pending: VecDeque<Unit>,
    rows: u64,
    /// The session to look at first next time (round-robin).
    turn: usize,
    /// Ending the snapshot transactions and starting to stream (or dropping the slot),
    /// as a task so that a cancelled poll resumes it.
    finishing: Option<tokio::task::JoinHandle<Result<Option<Streaming>>>>,
}

/// The replication session after the snapshot, and whether protocol streaming is on.
type Streaming = (ReplicationConnection, bool);

/// A session whose table COPY has started.
type Started = (ReplicationConnection, Box<Copy>);

/// One snapshot session: idle (holding its connection), starting a table's COPY (a task
/// holds the connection), or copying.
struct Worker {
    conn: Option<ReplicationConnection>,
    copy: Option<Box<Copy>>,
    starting: Option<tokio::task::JoinHandle<Result<Started>>>,
}

enum WorkerEvent {
    Started(Result<Started>),
    /// COPY data was appended to the copy's `carry` (`true`), or the COPY ended.
    Data(std::result::Result<bool, ConnError>),
}

impl Worker {
    fn busy(&self) -> bool {
        self.copy.is_some() || self.starting.is_some()
    }

    /// The session's next event. Cancel-safe.
    async fn next(&mut self) -> WorkerEvent {
        if let Some(h) = self.starting.as_mut() {
            let r = match h.await {
                Ok(r) => r,
                Err(e) => Err(Error::internal(format!("postgres-cdc snapshot step: {e}"))),
            };
            return WorkerEvent::Started(r);
        }
        match (self.conn.as_mut(), self.copy.as_mut()) {
            (Some(c), Some(copy)) => WorkerEvent::Data(c.copy_data_into(&mut copy.carry).await),
            _ => std::future::pending().await,
        }
    }
}

impl Snapshot {
    /// Start a snapshot at `consistent_point`: plan the units of every published table
    /// (minus `tables_done` of an interrupted attempt), and open the sessions, each in a
    /// transaction importing `exported` (a resumed snapshot has none: it reads at a newer
    /// snapshot). `repl` is the replication session streaming continues on.
    pub async fn begin(
        env: Env,
        repl: ReplicationConnection,
        session: &ConnectParams,
        consistent_point: u64,
        exported: Option<&str>,
        tables_done: Vec<String>,
    ) -> Result<Self> {
        // Big tables are read in chunks of heap blocks (TID range scans, PostgreSQL 14+);
        // an interrupted attempt's finished tables and chunks are skipped.
        let chunk_rows = if repl.server_major() >= 14 {
            env.cfg.snapshot.chunk_rows
        } else {
            0
        };
        let mut units = Vec::new();
        for (schema, table) in catalog::publication_tables(&env.sql, &env.cfg).await? {
            let estimate = catalog::size_estimate(&env.sql, &schema, &table).await?;
            units.extend(plan_units(
                &schema,
                &table,
                estimate,
                chunk_rows,
                &tables_done,
            ));
        }
        let sessions = env.cfg.snapshot.parallel_tables.min(units.len()).max(1);
        let begin = match exported {
            Some(name) => format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                name.replace('\'', "''")
            ),
            None => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_string(),
        };
        let mut workers = Vec::with_capacity(sessions);
        for _ in 0..sessions {
            let mut conn = ReplicationConnection::connect(session)
                .await
                .map_err(|e| e.into_error("snapshot connection"))?;
            conn.simple_query(&begin)
                .await
                .map_err(|e| e.into_error("snapshot transaction"))?;
            workers.push(Worker {
                conn: Some(conn),
                copy: None,
                starting: None,
            });
        }
        tracing::info!(
            tables = units.len(),
            sessions,
            consistent_point = %format_lsn(consistent_point),
            "snapshot starting"
        );
        Ok(Snapshot {
            env,
            repl: Some(repl),
            ready: VecDeque::new(),
            interrupted: false,
            tables_done,
            progress: Default::default(),
            workers,
            consistent_point,
            pending: units.into(),
            rows: 0,
            turn: 0,
            finishing: None,
        })
    }

    /// Snapshot progress of the table being copied: gauges, `/status` details, a log
    /// line at most every 5 s and at the end of each table.
    fn report_progress(&mut self, worker: usize, force: bool) {
        let snap = self;
        let Some(copy) = snap.workers.get_mut(worker).and_then(|w| w.copy.as_mut()) else {
            return;
        };
        let table = copy.unit.clone();
        snap.progress
            .insert(table.clone(), (copy.done, copy.estimated, force));
        if let Some(st) = &snap.env.status {
            st.set_gauge(
                "postgres_snapshot_rows",
                &[("table", &table)],
                copy.done as f64,
            );
            if let Some(est) = copy.estimated {
                st.set_gauge(
                    "postgres_snapshot_rows_estimated",
                    &[("table", &table)],
                    est as f64,
                );
            }
            let tables: serde_json::Map<String, serde_json::Value> = snap
                .progress
                .iter()
                .map(|(t, (done, est, finished))| {
                    (
                        t.clone(),
                        serde_json::json!({"rows": done, "estimated": est, "finished": finished}),
                    )
                })
                .collect();
            st.set_detail(
                "snapshot",
                serde_json::json!({"tables": tables, "pending_tables": snap.pending.len()}),
            );
        }
        if force || copy.last_report.elapsed() >= Duration::from_secs(5) {
            copy.last_report = Instant::now();
            tracing::info!(
                table = %table,
                rows = copy.done,
                estimated = copy.estimated.unwrap_or(-1),
                finished = force,
                "snapshot progress"
            );
        }
    }

    /// The next snapshot batch, or how the snapshot ended. Up to
    /// `snapshot.parallel_tables` units are copied at once, each on its own session
    /// holding the same snapshot; their batches interleave (one stream per table).
    /// Cancel-safe: multi-step exchanges run as tasks whose handles this awaits.
    pub async fn poll(&mut self, max_rows: usize) -> Result<Polled> {
        loop {
            let snap = &mut *self;
            if let Some(h) = snap.finishing.as_mut() {
                let r = h
                    .await
                    .map_err(|e| Error::internal(format!("postgres-cdc snapshot end: {e}")));
                snap.finishing = None;
                tracing::info!(rows = snap.rows, "snapshot complete");
                return Ok(match r?? {
                    Some((repl, streaming)) => Polled::Streaming {
                        repl,
                        streaming,
                        from: snap.consistent_point,
                    },
                    None => Polled::Finished,
                });
            }
            // Idle sessions take the next tables.
            for w in snap.workers.iter_mut() {
                if w.busy() {
                    continue;
                }
                let Some(unit) = snap.pending.pop_front() else {
                    break;
                };
                let conn = w
                    .conn
                    .take()
                    .ok_or_else(|| Error::internal("snapshot session missing"))?;
                let env = &snap.env;
                let job = CopyJob {
                    sql: env.sql.clone(),
                    topic: route(
                        env.router.as_ref(),
                        &env.cfg.database,
                        &unit.schema,
                        &unit.table,
                    ),
                    cfg: env.cfg.clone(),
                    catalog: env.catalog.clone(),
                    database: env.database.clone(),
                    unit,
                };
                w.starting = Some(tokio::spawn(job.start(conn)));
            }
            if snap.pending.is_empty() && snap.workers.iter().all(|w| !w.busy()) {
                // Every table read: end the snapshot transactions, then stream (or stop).
                let conns: Vec<ReplicationConnection> = snap
                    .workers
                    .iter_mut()
                    .filter_map(|w| w.conn.take())
                    .collect();
                let cp = snap.consistent_point;
                snap.finishing = Some(tokio::spawn(finish_snapshot(
                    conns,
                    snap.repl.take(),
                    snap.env.sql.clone(),
                    snap.env.cfg.clone(),
                    snap.env.binary,
                    cp,
                )));
                continue;
            }
            let cp = snap.consistent_point;
            // Wait for the next event of any busy session (each future is cancel-safe).
            // The first ready future wins, so the order rotates: sessions take turns.
            let (i, event) = {
                let n = snap.workers.len();
                let start = snap.turn % n;
                let mut waiting: Vec<_> = snap
                    .workers
                    .iter_mut()
                    .enumerate()
                    .filter(|(_, w)| w.busy())
                    .map(|(i, w)| ((i + n - start) % n, i, w))
                    .collect();
                waiting.sort_by_key(|(order, _, _)| *order);
                let futures: Vec<_> = waiting
                    .into_iter()
                    .map(|(_, i, w)| Box::pin(async move { (i, w.next().await) }))
                    .collect();
                futures_util::future::select_all(futures).await.0
            };
            snap.turn = i + 1;
            let w = &mut snap.workers[i];
            match event {
                WorkerEvent::Started(r) => {
                    w.starting = None;
                    let (conn, copy) = r?;
                    w.conn = Some(conn);
                    w.copy = Some(copy);
                }
                WorkerEvent::Data(r) => {
                    let more = r.map_err(|e| e.into_error("snapshot COPY"))?;
                    let copy = w
                        .copy
                        .as_mut()
                        .ok_or_else(|| Error::internal("snapshot copy"))?;
                    if !more {
                        // This table is done: its last batch records it as done (a batch
                        // without rows when none are left: an empty table or chunk, or a
                        // last row that went to the dead-letter topic).
                        let batch = copy
                            .events
                            .finish()
                            .map_err(|e| Error::internal(e.to_string()))?
                            .unwrap_or_else(|| {
                                arrow::array::RecordBatch::new_empty(copy.events.schema().clone())
                            });
                        let stream_name = copy.stream_name.clone();
                        let unit = copy.unit.clone();
                        let topic = copy.topic.clone();
                        self.report_progress(i, true);
                        let snap = &mut *self;
                        snap.workers[i].copy = None;
                        snap.tables_done.push(unit);
                        let all_done =
                            snap.pending.is_empty() && snap.workers.iter().all(|w| !w.busy());
                        snap.rows += batch.num_rows() as u64;
                        return Ok(Polled::Batch(SourceBatch {
                            batch,
                            position: Pos {
                                lsn: cp,
                                snapshot_done: all_done,
                                tables_done: snap.tables_done.clone(),
                                seq: 0,
                            }
                            .to_position(),
                            stream: Some(stream_name),
                            topic,
                        }));
                    }
                    let pos_text = format_lsn(cp);
                    let position = Pos {
                        lsn: cp,
                        snapshot_done: false,
                        tables_done: snap.tables_done.clone(),
                        seq: 0,
                    }
                    .to_position();
                    // Queue the complete rows accumulated so far (a partly appended row is
                    // cut off) as a batch at `position`.
                    let (stream, topic) = (&copy.stream_name, &copy.topic);
                    let queue = |events: &mut TableEvents,
                                 ready: &mut VecDeque<SourceBatch>,
                                 rows: &mut u64|
                     -> Result<()> {
                        let batch = events
                            .finish()
                            .map_err(|e| Error::internal(e.to_string()))?;
                        if let Some(batch) = batch {
                            *rows += batch.num_rows() as u64;
                            ready.push_back(SourceBatch {
                                batch,
                                position: position.clone(),
                                stream: Some(stream.clone()),
                                topic: topic.clone(),
                            });
                        }
                        Ok(())
                    };
                    let src = SourceInfo {
                        pos: &pos_text,
                        txid: None,
                        ts_ms: None,
                        snapshot: true,
                        now_ms: now_ms(),
                    };
                    if !copy.header_done {
                        match copy_header_len(&copy.carry)
                            .map_err(|e| Error::data(format!("snapshot: {e}")))?
                        {
                            Some(n) => {
                                let _ = copy.carry.split_to(n);
                                copy.header_done = true;
                            }
                            None => continue,
                        }
                    }
                    let mut consumed = 0;
                    let mut row: Vec<Option<&[u8]>> = Vec::with_capacity(copy.fields.len());
                    while let Some((len, fields)) =
                        next_copy_tuple(&copy.carry[consumed..], &mut copy.fields)
                            .map_err(|e| Error::data(format!("snapshot: {e}")))?
                    {
                        let base = consumed;
                        consumed += len;
                        if !fields {
                            continue; // the trailer
                        }
                        row.clear();
                        row.extend(copy.fields.iter().map(|f| {
                            f.map(|(start, n)| &copy.carry[base + start..base + start + n])
                        }));
                        // A full batch goes out only once another row shows the unit is
                        // not finished: the batch that ends a unit then always carries the
                        // position recording it as done.
                        if copy.events.len() >= max_rows {
                            queue(&mut copy.events, &mut snap.ready, &mut snap.rows)?;
                        }
                        copy.done += 1;
                        let Err(e) = copy.events.push_snapshot_row(&row, &src) else {
                            continue;
                        };
                        let Some(dlq) = snap.env.dead_letter.clone() else {
                            snap.interrupted = true;
                            return Err(Error::data(e));
                        };
                        // The complete rows before it go out (the partial row is cut off),
                        // then this row goes to the dead-letter topic with its raw values;
                        // all at the position of the unit's unfinished snapshot.
                        let relation = &copy.events.relation;
                        let table = format!("{}.{}", relation.namespace, relation.name);
                        let names: Vec<String> =
                            relation.columns.iter().map(|c| c.name.clone()).collect();
                        let values: Vec<Value> = row
                            .iter()
                            .map(|v| {
                                v.map_or(Value::Null, |b| {
                                    Value::Binary(bytes::Bytes::copy_from_slice(b))
                                })
                            })
                            .collect();
                        tracing::warn!(table = %table, error = %e, dead_letter_topic = %dlq,
                            "snapshot row sent to the dead-letter topic");
                        let dead = dead_letter_batch(
                            &e,
                            copy.topic.as_deref().unwrap_or(""),
                            &table,
                            op::READ,
                            &pos_text,
                            [None, Some(raw_json(&names, &values))],
                        )?;
                        queue(&mut copy.events, &mut snap.ready, &mut snap.rows)?;
                        snap.ready.push_back(SourceBatch {
                            batch: dead,
                            position: position.clone(),
                            stream: Some(Arc::from("dead_letter")),
                            topic: Some(dlq),
                        });
                    }
                    copy.carry.advance(consumed);
                    if let Some(out) = snap.ready.pop_front() {
                        self.report_progress(i, false);
                        return Ok(Polled::Batch(out));
                    }
                }
            }
        }
    }
}

/// A unit of snapshot work: a whole table, or a range of its heap blocks (a chunk,
/// selected with a TID range scan). Its id (`schema.table` or `schema.table@a-b`, `b`
/// empty for an open end) is what positions record as done.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unit {
    schema: String,
    table: String,
    blocks: Option<(u64, Option<u64>)>,
    /// Rows expected, from the table's statistics (progress reporting only).
    estimated: Option<i64>,
}

impl Unit {
    fn id(&self) -> String {
        match self.blocks {
            None => format!("{}.{}", self.schema, self.table),
            Some((a, Some(b))) => format!("{}.{}@{a}-{b}", self.schema, self.table),
            Some((a, None)) => format!("{}.{}@{a}-", self.schema, self.table),
        }
    }
}

/// Plan the units of one table: whole, or in chunks of about `chunk_rows` rows by block
/// ranges (the last one open-ended, so rows in blocks added since the statistics are
/// read too), minus the units `done` (ids) of an interrupted attempt, whose gaps become
/// the units to read.
fn plan_units(
    schema: &str,
    table: &str,
    estimate: Option<(i64, i64)>,
    chunk_rows: u64,
    done: &[String],
) -> Vec<Unit> {
    let whole = format!("{schema}.{table}");
    if done.contains(&whole) {
        return Vec::new();
    }
    let prefix = format!("{whole}@");
    // Block ranges already read, from chunk ids.
    let mut covered: Vec<(u64, Option<u64>)> = done
        .iter()
        .filter_map(|d| d.strip_prefix(&prefix))
        .filter_map(|r| {
            let (a, b) = r.split_once('-')?;
            Some((
                a.parse().ok()?,
                if b.is_empty() {
                    None
                } else {
                    Some(b.parse().ok()?)
                },
            ))
        })
        .collect();
    let unit = |blocks, estimated| Unit {
        schema: schema.to_string(),
        table: table.to_string(),
        blocks,
        estimated,
    };
    if !covered.is_empty() {
        // Resume: read the gaps between finished chunks.
        covered.sort();
        let mut units = Vec::new();
        let mut at = 0u64;
        for (a, b) in covered {
            if a > at {
                units.push(unit(Some((at, Some(a))), None));
            }
            match b {
                Some(b) => at = at.max(b),
                None => return units,
            }
        }
        units.push(unit(Some((at, None)), None));
        return units;
    }
    match estimate {
        Some((rows, pages)) if chunk_rows > 0 && rows > chunk_rows as i64 && pages > 1 => {
            let n = (rows as u64).div_ceil(chunk_rows).min(pages as u64);
            let step = (pages as u64).div_ceil(n);
            (0..n)
                .map(|k| {
                    let end = if k + 1 == n {
                        None
                    } else {
                        Some((k + 1) * step)
                    };
                    unit(Some((k * step, end)), Some(rows / n as i64))
                })
                .collect()
        }
        _ => vec![unit(None, estimate.map(|(rows, _)| rows))],
    }
}

/// What a task needs to start copying one table.
struct CopyJob {
    sql: Arc<Client>,
    topic: Option<Arc<str>>,
    cfg: PostgresCdcConfig,
    catalog: TypeCatalog,
    database: Arc<str>,
    unit: Unit,
}

impl CopyJob {
    /// Read the table's shape, then start `COPY ... TO STDOUT (FORMAT binary)` of its kept
    /// columns on the snapshot session.
    async fn start(
        self,
        mut conn: ReplicationConnection,
    ) -> Result<(ReplicationConnection, Box<Copy>)> {
        let (schema, table) = (&self.unit.schema, &self.unit.table);
        let relation = catalog::relation(&self.sql, schema, table).await?;
        // Read what the stream will carry: the publication's column list and row filter
        // (PostgreSQL 15+), then `column_filters`.
        let published = catalog::published(&self.sql, &self.cfg.publication, schema, table).await?;
        let keep: Vec<usize> = self
            .cfg
            .kept_columns(
                schema,
                table,
                relation.columns.iter().map(|c| c.name.as_str()),
            )
            .into_iter()
            .filter(|&i| published.has_column(&relation.columns[i].name))
            .collect();
        let cols = keep
            .iter()
            .map(|&i| {
                let c = &relation.columns[i];
                let name = quote_ident(&c.name);
                if copies_as_text(c.type_oid, c.type_modifier, &self.catalog) {
                    format!("{name}::text")
                } else {
                    name
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut conds: Vec<String> = Vec::new();
        match self.unit.blocks {
            None => {}
            Some((a, Some(b))) => {
                conds.push(format!("ctid >= '({a},0)'::tid AND ctid < '({b},0)'::tid"))
            }
            Some((a, None)) => conds.push(format!("ctid >= '({a},0)'::tid")),
        }
        conds.extend(published.row_filter.map(|f| format!("({f})")));
        let range = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        let stmt = format!(
            "COPY (SELECT {cols} FROM {}.{}{range}) TO STDOUT (FORMAT binary)",
            quote_ident(schema),
            quote_ident(table)
        );
        // The COPY reads only kept columns, so its rows map 1:1 onto them.
        let kept_relation = Relation {
            columns: keep.iter().map(|&i| relation.columns[i].clone()).collect(),
            ..relation
        };
        let n = kept_relation.columns.len();
        let events = TableEvents::new(
            Arc::new(kept_relation),
            (0..n).collect(),
            &self.catalog,
            self.database.clone(),
            self.cfg.temporal_infinity,
        );
        let estimated = self.unit.estimated;
        conn.copy_out(&stmt)
            .await
            .map_err(|e| e.into_error(&format!("snapshot {schema}.{table}")))?;
        tracing::info!(unit = %self.unit.id(), "snapshot of table started");
        Ok((
            conn,
            Box::new(Copy {
                events,
                done: 0,
                estimated,
                last_report: Instant::now(),
                carry: BytesMut::new(),
                header_done: false,
                fields: Vec::with_capacity(n),
                topic: self.topic,
                stream_name: stream_name(schema, table),
                unit: self.unit.id(),
            }),
        ))
    }
}

/// End the snapshot transaction; then start streaming from the consistent point on the
/// replication connection, or (initial_only) close it and drop the slot.
async fn finish_snapshot(
    conns: Vec<ReplicationConnection>,
    repl: Option<ReplicationConnection>,
    sql: Arc<Client>,
    cfg: PostgresCdcConfig,
    binary: bool,
    consistent_point: u64,
) -> Result<Option<Streaming>> {
    for mut conn in conns {
        conn.simple_query("COMMIT")
            .await
            .map_err(|e| e.into_error("end snapshot transaction"))?;
    }
    if cfg.snapshot_mode == SnapshotMode::InitialOnly {
        drop(repl);
        catalog::drop_slot(&sql, &cfg.slot_name).await?;
        return Ok(None);
    }
    let mut repl = repl.ok_or_else(|| Error::internal("replication connection missing"))?;
    let streaming = start_replication(&mut repl, &cfg, binary, consistent_point).await?;
    Ok(Some((repl, streaming)))
}

/// Whether the snapshot selects a column as `::text`: text-shaped kinds this source
/// cannot render from their binary form (arrays, types without a binary decoder). Raw
/// string types (whose binary form is their exact text; a cast would strip `char(n)`
/// padding) and the scalars rendered here to PostgreSQL's text output (uuid, inet, jsonb,
/// enums, timetz, unconstrained numeric, ...) are read in binary, as pgoutput's binary
/// values are: the server then spends no time formatting them.
fn copies_as_text(type_oid: u32, typmod: i32, catalog: &TypeCatalog) -> bool {
    let text_shaped = matches!(
        Kind::of(type_oid, typmod, catalog),
        Kind::Text | Kind::Json | Kind::List(_)
    );
    text_shaped
        && !matches!(
            super::binary::decoder(type_oid, typmod, catalog),
            Ok(super::binary::Decoder::Text(_))
        )
}

const COPY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Length of the binary COPY header once `buf` holds all of it.
fn copy_header_len(buf: &[u8]) -> std::result::Result<Option<usize>, String> {
    if buf.len() < 19 {
        return Ok(None);
    }
    if &buf[..11] != COPY_SIGNATURE {
        return Err("not a binary COPY stream".into());
    }
    let ext = u32::from_be_bytes([buf[15], buf[16], buf[17], buf[18]]) as usize;
    Ok((buf.len() >= 19 + ext).then_some(19 + ext))
}

/// One binary COPY tuple at the start of `buf`: `Some((length, is_row))` once the whole
/// tuple is buffered, with each field's (offset, length) in `fields` (`None` = NULL);
/// `is_row` is false for the trailer.
fn next_copy_tuple(
    buf: &[u8],
    fields: &mut Vec<Option<(usize, usize)>>,
) -> std::result::Result<Option<(usize, bool)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let count = i16::from_be_bytes([buf[0], buf[1]]);
    if count == -1 {
        return Ok(Some((2, false)));
    }
    if count < 0 {
        return Err(format!("bad field count {count}"));
    }
    let mut pos = 2;
    fields.clear();
    for _ in 0..count {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]);
        pos += 4;
        if len < 0 {
            fields.push(None);
            continue;
        }
        let len = len as usize;
        if buf.len() < pos + len {
            return Ok(None);
        }
        fields.push(Some((pos, len)));
        pos += len;
    }
    Ok(Some((pos, true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(units: &[Unit]) -> Vec<String> {
        units.iter().map(Unit::id).collect()
    }

    #[test]
    fn units_of_small_big_and_resumed_tables() {
        assert_eq!(
            ids(&plan_units("s", "t", Some((100, 10)), 1000, &[])),
            ["s.t"]
        );
        assert_eq!(ids(&plan_units("s", "t", None, 1000, &[])), ["s.t"]);
        assert_eq!(
            ids(&plan_units("s", "t", Some((3500, 100),), 1000, &[])),
            ["s.t@0-25", "s.t@25-50", "s.t@50-75", "s.t@75-"]
        );
        assert!(plan_units("s", "t", Some((3500, 100)), 1000, &["s.t".into()]).is_empty());
        // Resume: the gaps between finished chunks, the last one open-ended.
        let done = ["s.t@25-50".to_string(), "s.t@0-25".into(), "s.t@75-".into()];
        assert_eq!(
            ids(&plan_units("s", "t", Some((9999, 999)), 1000, &done)),
            ["s.t@50-75"]
        );
        let done = ["s.t@0-25".to_string()];
        assert_eq!(
            ids(&plan_units("s", "t", Some((9999, 999)), 1000, &done)),
            ["s.t@25-"]
        );
        // Chunking off.
        assert_eq!(
            ids(&plan_units("s", "t", Some((3500, 100)), 0, &[])),
            ["s.t"]
        );
    }
}
