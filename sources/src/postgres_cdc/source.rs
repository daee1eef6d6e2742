//! The `postgres-cdc` source: snapshot inside the slot's exported snapshot, then the
//! pgoutput stream, both decoded into change-event batches.

use super::catalog::{self, SESSION_OPTIONS};
use super::config::{PostgresCdcConfig, SnapshotMode};
use super::conn::{
    format_lsn, parse_lsn, quote_ident, sqlstate, ConnectParams, ReplicationConnection,
    ReplicationMessage,
};
use super::events::{SourceInfo, TableEvents, ToastPolicy};
use super::pgoutput::{self, PgOutput, Relation, Value};
use super::types::TypeCatalog;
use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use rivven_engine::batch::now_ms;
use rivven_engine::batch::{op, Position, SourceBatch};
use rivven_engine::connector::Source;
use rivven_engine::{Error, Result};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// Milliseconds between the PostgreSQL epoch (2000-01-01) and the Unix epoch.
const PG_EPOCH_MS: i64 = 946_684_800_000;

/// The stored position: the LSN to resume streaming after, and whether the snapshot
/// finished (an unfinished snapshot is redone on restart).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pos {
    lsn: u64,
    snapshot_done: bool,
    /// During a snapshot: the tables (`schema.table`) read completely so far.
    tables_done: Vec<String>,
    /// Streaming: the batch's sequence number in this process, so that `commit` can tell
    /// when everything emitted is durable (several batches may carry the same LSN).
    seq: u64,
}

impl Pos {
    fn new(lsn: u64, snapshot_done: bool) -> Self {
        Pos {
            lsn,
            snapshot_done,
            tables_done: Vec::new(),
            seq: 0,
        }
    }

    fn to_position(&self) -> Position {
        let mut v = serde_json::json!({
            "lsn": format_lsn(self.lsn),
            "snapshot_done": self.snapshot_done,
        });
        if !self.snapshot_done {
            v["tables_done"] = serde_json::json!(self.tables_done);
        }
        if self.seq > 0 {
            v["seq"] = serde_json::json!(self.seq);
        }
        Position(v)
    }

    fn from_position(p: &Position) -> Result<Pos> {
        let bad = || Error::state(format!("postgres-cdc: unreadable stored position {}", p.0));
        let lsn =
            p.0.get("lsn")
                .and_then(|v| v.as_str())
                .and_then(parse_lsn)
                .ok_or_else(bad)?;
        let snapshot_done =
            p.0.get("snapshot_done")
                .and_then(|v| v.as_bool())
                .ok_or_else(bad)?;
        let tables_done =
            p.0.get("tables_done")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
        let seq = p.0.get("seq").and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(Pos {
            lsn,
            snapshot_done,
            tables_done,
            seq,
        })
    }
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

struct Snapshot {
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
    Data(std::result::Result<bool, super::conn::ConnError>),
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

/// A captured table of the stream: its events and where they go.
struct Captured {
    events: TableEvents,
    topic: Option<Arc<str>>,
    stream: Arc<str>,
}

struct Txn {
    xid: u32,
    /// The transaction's commit LSN (`source.pos`).
    final_lsn: u64,
    commit_ms: i64,
}

/// The `postgres-cdc` source. See the module docs for guarantees.
pub struct PostgresCdcSource {
    cfg: PostgresCdcConfig,
    /// Topic for changes that fail to decode (`None`: a failure stops the source).
    dead_letter: Option<Arc<str>>,
    /// The pipeline's status, for slot lag and snapshot progress (absent when the source
    /// runs outside a runtime, as in benchmarks).
    status: Option<Arc<rivven_engine::status::PipelineStatus>>,
    router: Option<rivven_engine::routing::TopicResolver>,
    database: Arc<str>,
    toast: ToastPolicy,
    sql: Option<Arc<Client>>,
    repl: Option<ReplicationConnection>,
    catalog: TypeCatalog,
    /// Captured relations (by OID) and their accumulating events.
    tables: HashMap<u32, Captured>,
    /// Relations seen in the stream and not captured.
    skipped: HashSet<u32>,
    /// The relation whose events are accumulating (one at a time, to keep order).
    current: Option<u32>,
    ready: VecDeque<SourceBatch>,
    txn: Option<Txn>,
    /// End LSN of the last commit fully decoded.
    last_commit_end: u64,
    /// Stream batches handed out, and the highest of them acknowledged durable: all
    /// emitted data is durable exactly when they are equal.
    emitted_seq: u64,
    acked_seq: u64,
    /// Highest LSN acknowledged durable.
    durable: u64,
    /// Highest WAL position received.
    received: u64,
    confirmed: u64,
    last_status: Instant,
    snapshot: Option<Snapshot>,
    finished: bool,
    /// Set when a row failed to decode mid-way (builders hold a partial row): the
    /// source must be reopened.
    interrupted: bool,
    last_heartbeat: Instant,
    /// Commits decoded and not yet confirmed to the server, oldest first, for the lag
    /// check: (end LSN, commit time in ms of the oldest commit merged into the entry).
    /// Commits less than a second apart share an entry, which bounds its length.
    unconfirmed: VecDeque<(u64, i64)>,
    /// Whether protocol 2 streaming was negotiated.
    streaming: bool,
    /// The top-level xid of the open Stream Start block, if any.
    stream_xid: Option<u32>,
    /// Buffered messages of in-progress streamed transactions: top-level xid →
    /// (subtransaction xid, message), in arrival order.
    streamed: HashMap<u32, Vec<(u32, PgOutput)>>,
    /// A Relation message held back while the type catalog is reloaded.
    deferred: Option<PgOutput>,
    /// Whether pgoutput sends binary values (decided at `open` from `binary`).
    binary: bool,
    /// The pipeline's state directory: `binary: auto` records a fallback to text values
    /// there (absent outside a runtime).
    state_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for PostgresCdcSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCdcSource")
            .field("slot", &self.cfg.slot_name)
            .field("last_commit_end", &format_lsn(self.last_commit_end))
            .finish_non_exhaustive()
    }
}

impl PostgresCdcSource {
    pub fn new(cfg: PostgresCdcConfig) -> Self {
        Self {
            status: None,
            router: cfg.resolver(),
            database: Arc::from(cfg.database.as_str()),
            toast: ToastPolicy {
                placeholder: cfg.unavailable_value_placeholder.clone(),
            },
            cfg,
            sql: None,
            repl: None,
            catalog: TypeCatalog::default(),
            tables: HashMap::new(),
            skipped: HashSet::new(),
            current: None,
            ready: VecDeque::new(),
            txn: None,
            last_commit_end: 0,
            emitted_seq: 0,
            acked_seq: 0,
            durable: 0,
            received: 0,
            confirmed: 0,
            last_status: Instant::now(),
            snapshot: None,
            finished: false,
            interrupted: false,
            dead_letter: None,
            last_heartbeat: Instant::now(),
            unconfirmed: VecDeque::new(),
            streaming: false,
            stream_xid: None,
            streamed: HashMap::new(),
            deferred: None,
            binary: false,
            state_dir: None,
        }
    }

    /// Keep per-pipeline state (the `binary: auto` fallback marker) under `dir`.
    pub fn with_state_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.state_dir = Some(dir);
        self
    }

    /// The file recording that `binary: auto` fell back to text values until an LSN.
    fn text_values_marker(&self) -> Option<std::path::PathBuf> {
        self.state_dir.as_ref().map(|d| d.join("text-values-until"))
    }

    /// Decide whether pgoutput sends binary values: `binary: true`/`false` as configured
    /// (binary needs PostgreSQL 14+), `auto` when every kept column of the captured
    /// tables has a binary decoder and no fallback recorded past `resume_lsn` applies.
    async fn decide_binary(&mut self, resume_lsn: Option<u64>) -> Result<bool> {
        let supported = self.repl()?.server_major() >= 14;
        if let Some(fixed) = self.cfg.binary.fixed() {
            return Ok(fixed && supported);
        }
        if !supported {
            return Ok(false);
        }
        if let Some(marker) = self.text_values_marker() {
            match std::fs::read_to_string(&marker) {
                Ok(text) => {
                    // Unreadable (it is written atomically, so not torn): text values.
                    let until = parse_lsn(text.trim()).unwrap_or(u64::MAX);
                    if resume_lsn.is_some_and(|r| r < until) {
                        tracing::info!(until = %format_lsn(until),
                            "binary: auto: text values until past the change that needed them");
                        return Ok(false);
                    }
                    std::fs::remove_file(&marker)
                        .map_err(|e| Error::io(format!("remove {}", marker.display()), e))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("read {}", marker.display()), e)),
            }
        }
        let mut without = Vec::new();
        for (schema, table) in catalog::publication_tables(self.sql()?, &self.cfg).await? {
            let relation = catalog::relation(self.sql()?, &schema, &table).await?;
            without.extend(self.without_binary_decoder(&relation));
        }
        if !without.is_empty() {
            tracing::info!(columns = ?without,
                "binary: auto: text values, these columns have no binary decoder");
        }
        Ok(without.is_empty())
    }

    /// The kept columns of `relation` (`schema.table.column`) whose binary values this
    /// source cannot decode.
    fn without_binary_decoder(&self, relation: &Relation) -> Vec<String> {
        let keep = self.cfg.kept_columns(
            &relation.namespace,
            &relation.name,
            relation.columns.iter().map(|c| c.name.as_str()),
        );
        keep.into_iter()
            .map(|i| &relation.columns[i])
            .filter(|c| super::binary::decoder(c.type_oid, c.type_modifier, &self.catalog).is_err())
            .map(|c| format!("{}.{}.{}", relation.namespace, relation.name, c.name))
            .collect()
    }

    /// Report slot lag and snapshot progress to the pipeline's status.
    pub fn with_status(mut self, status: Arc<rivven_engine::status::PipelineStatus>) -> Self {
        self.status = Some(status);
        self
    }

    /// Send streamed changes that fail to decode to `topic` (with the reason and the raw
    /// values) instead of stopping; the rows around them go on.
    pub fn with_dead_letter(mut self, topic: Option<String>) -> Self {
        self.dead_letter = topic.map(Arc::from);
        self
    }

    fn report_slot(&self) {
        let Some(st) = &self.status else { return };
        let lag = self.received.saturating_sub(self.confirmed);
        st.set_gauge(
            "postgres_slot_lag_bytes",
            &[("slot", &self.cfg.slot_name)],
            lag as f64,
        );
        st.set_detail(
            "slot",
            serde_json::json!({
                "name": self.cfg.slot_name,
                "received_lsn": format_lsn(self.received),
                "confirmed_lsn": format_lsn(self.confirmed),
                "lag_bytes": lag,
                "protocol_streaming": self.streaming,
                "binary_values": self.binary,
            }),
        );
    }

    /// Snapshot progress of the table being copied: gauges, `/status` details, a log
    /// line at most every 5 s and at the end of each table.
    fn report_progress(&mut self, worker: usize, force: bool) {
        let Some(snap) = self.snapshot.as_mut() else {
            return;
        };
        let Some(copy) = snap.workers.get_mut(worker).and_then(|w| w.copy.as_mut()) else {
            return;
        };
        let table = copy.unit.clone();
        snap.progress
            .insert(table.clone(), (copy.done, copy.estimated, force));
        if let Some(st) = &self.status {
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

    /// The heartbeat settings, when enabled.
    fn heartbeat(&self) -> Option<&super::config::HeartbeatConfig> {
        self.cfg.heartbeat.as_ref().filter(|h| h.enabled)
    }

    /// Run a heartbeat: the action query, a lag check, and an event when configured.
    async fn beat(&mut self) -> Result<()> {
        let Some(h) = self.heartbeat().cloned() else {
            self.last_heartbeat = Instant::now();
            return Ok(());
        };
        if let Some(q) = &h.action_query {
            self.sql()?
                .batch_execute(q)
                .await
                .map_err(|e| catalog::pg_error("heartbeat.action_query", e))?;
        }
        // After the query: a cancelled poll repeats the heartbeat instead of skipping it.
        self.last_heartbeat = Instant::now();
        let lag_bytes = self.received.saturating_sub(self.confirmed);
        let lag_secs = self
            .unconfirmed
            .front()
            .map_or(0, |&(_, t)| (now_ms() - t).max(0) / 1000);
        let behind = lag_secs as u64 > h.max_lag_secs;
        if behind {
            tracing::warn!(
                slot = %self.cfg.slot_name,
                lag_secs,
                lag_bytes,
                max_lag_secs = h.max_lag_secs,
                "postgres-cdc is behind: the oldest unconfirmed change is older than heartbeat.max_lag_secs"
            );
        } else {
            tracing::debug!(slot = %self.cfg.slot_name, lag_bytes, lag_secs, "heartbeat");
        }
        if let Some(st) = &self.status {
            st.set_unhealthy(
                behind
                    .then(|| {
                        format!(
                            "slot {} lags {lag_secs} s ({lag_bytes} bytes) behind the server, \
                     more than heartbeat.max_lag_secs ({})",
                            self.cfg.slot_name, h.max_lag_secs
                        )
                    })
                    .as_deref(),
            );
        }
        if let (true, Some(topic)) = (h.emit_events, &h.topic) {
            // Only between transactions with nothing pending: its position is then exact.
            if self.txn.is_none() && self.pending_rows() == 0 {
                let batch = heartbeat_batch(
                    &self.cfg.slot_name,
                    self.received,
                    self.confirmed,
                    lag_bytes,
                )?;
                let position = self.stream_position(self.last_commit_end, true);
                self.ready.push_back(SourceBatch {
                    batch,
                    position,
                    stream: Some(Arc::from("__heartbeat")),
                    topic: Some(Arc::from(topic.as_str())),
                });
            }
        }
        Ok(())
    }

    fn params(&self, replication: bool) -> Result<ConnectParams> {
        let tls = super::tls::client_config(self.cfg.sslmode, self.cfg.sslrootcert.as_deref())?
            .map(|c| (c, self.cfg.sslmode == super::config::SslMode::Prefer));
        Ok(ConnectParams {
            tls,
            replication,
            host: self.cfg.host.clone(),
            port: self.cfg.port,
            user: self.cfg.user.clone(),
            password: self.cfg.password.clone(),
            database: self.cfg.database.clone(),
            application_name: format!("rivven-connect:{}", self.cfg.slot_name),
            options: SESSION_OPTIONS.to_string(),
            connect_timeout: Duration::from_millis(self.cfg.connect_timeout_ms),
        })
    }

    fn sql(&self) -> Result<&Client> {
        self.sql
            .as_deref()
            .ok_or_else(|| Error::internal("postgres-cdc: used before open"))
    }

    fn repl(&mut self) -> Result<&mut ReplicationConnection> {
        self.repl
            .as_mut()
            .ok_or_else(|| Error::internal("postgres-cdc: replication connection not open"))
    }

    fn stream_name(schema: &str, table: &str) -> Arc<str> {
        Arc::from(format!("{schema}.{table}").as_str())
    }

    fn topic_for(&self, schema: &str, table: &str) -> Option<Arc<str>> {
        route(self.router.as_ref(), &self.cfg.database, schema, table)
    }

    /// The position of the next stream batch: its LSN and a new sequence number.
    fn stream_position(&mut self, lsn: u64, snapshot_done: bool) -> Position {
        self.emitted_seq += 1;
        let mut pos = Pos::new(lsn, snapshot_done);
        pos.seq = self.emitted_seq;
        pos.to_position()
    }

    /// Create the slot on the replication connection; returns (consistent point,
    /// exported snapshot name).
    async fn create_slot(&mut self, export: bool) -> Result<(u64, Option<String>)> {
        let slot = self.cfg.slot_name.clone();
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {}",
            quote_ident(&slot),
            if export {
                "EXPORT_SNAPSHOT"
            } else {
                "NOEXPORT_SNAPSHOT"
            }
        );
        let rows = self
            .repl()?
            .simple_query(&sql)
            .await
            .map_err(|e| e.into_error(&format!("create slot {slot}")))?;
        let row = rows
            .first()
            .ok_or_else(|| Error::internal("CREATE_REPLICATION_SLOT returned no row"))?;
        let cp = row
            .get(1)
            .and_then(|v| v.as_deref())
            .and_then(parse_lsn)
            .ok_or_else(|| Error::internal("CREATE_REPLICATION_SLOT: no consistent point"))?;
        tracing::info!(slot = %slot, consistent_point = %format_lsn(cp), "created replication slot");
        Ok((cp, row.get(2).cloned().flatten()))
    }

    async fn start_streaming(&mut self, from: u64) -> Result<()> {
        let cfg = self.cfg.clone();
        let binary = self.binary;
        self.streaming = start_replication_on(self.repl()?, &cfg, binary, from).await?;
        self.streaming_started(from);
        Ok(())
    }

    fn streaming_started(&mut self, from: u64) {
        self.last_commit_end = from;
        self.last_status = Instant::now();
        tracing::info!(slot = %self.cfg.slot_name, from = %format_lsn(from), "streaming changes");
    }

    /// Flush the accumulating relation's events into `ready` with position `lsn`.
    fn flush_current(&mut self, snapshot_done: bool) -> Result<()> {
        let Some(oid) = self.current.take() else {
            return Ok(());
        };
        let lsn = self.last_commit_end;
        let Some(c) = self.tables.get_mut(&oid) else {
            return Ok(());
        };
        let Some(batch) = c
            .events
            .finish()
            .map_err(|e| Error::internal(format!("build change events: {e}")))?
        else {
            return Ok(());
        };
        let (stream, topic) = (c.stream.clone(), c.topic.clone());
        let position = self.stream_position(lsn, snapshot_done);
        self.ready.push_back(SourceBatch {
            batch,
            position,
            stream: Some(stream),
            topic,
        });
        Ok(())
    }

    fn pending_rows(&self) -> usize {
        self.current
            .and_then(|oid| self.tables.get(&oid))
            .map_or(0, |c| c.events.len())
    }

    /// A logical decoding message: an event of its own, after the rows before it.
    /// `source.pos`, `txid` and commit time of a streamed event: its transaction's when
    /// it belongs to the open one (`in_txn`), else the last commit's position alone.
    fn origin(&self, in_txn: bool) -> (String, Option<i64>, Option<i64>) {
        match (&self.txn, in_txn) {
            (Some(t), true) => (
                format_lsn(t.final_lsn),
                Some(t.xid as i64),
                Some(t.commit_ms),
            ),
            _ => (format_lsn(self.last_commit_end), None, None),
        }
    }

    fn on_message(&mut self, transactional: bool, prefix: &str, content: &[u8]) -> Result<()> {
        if !self.cfg.messages
            || !(self.cfg.message_prefixes.is_empty()
                || self.cfg.message_prefixes.iter().any(|p| p == prefix))
        {
            return Ok(());
        }
        self.flush_current(true)?;
        let (pos, txid, ts) = self.origin(transactional);
        let src = SourceInfo::streamed(&pos, txid, ts);
        let batch =
            super::events::message_batch(&self.database, prefix, content, transactional, &src)
                .map_err(|e| Error::internal(format!("build message event: {e}")))?;
        let position = self.stream_position(self.last_commit_end, true);
        self.ready.push_back(SourceBatch {
            batch,
            position,
            stream: Some(Arc::from(super::events::MESSAGE_STREAM)),
            topic: None,
        });
        Ok(())
    }

    /// Handle one decoded message of the stream.
    fn handle(&mut self, msg: PgOutput, max_rows: usize) -> Result<()> {
        match msg {
            PgOutput::Begin {
                xid,
                commit_time_us,
                final_lsn,
            } => {
                let commit_ms = commit_time_us / 1000 + PG_EPOCH_MS;
                self.txn = Some(Txn {
                    xid,
                    commit_ms,
                    final_lsn,
                })
            }
            PgOutput::Commit { end_lsn, .. } => {
                if let Some(t) = self.txn.take() {
                    match self.unconfirmed.back_mut() {
                        Some(last) if t.commit_ms - last.1 < 1000 => last.0 = end_lsn,
                        _ => self.unconfirmed.push_back((end_lsn, t.commit_ms)),
                    }
                }
                self.last_commit_end = end_lsn;
                if self.pending_rows() >= max_rows {
                    self.flush_current(true)?;
                }
            }
            PgOutput::Relation { relation, .. } => self.on_relation(relation)?,
            PgOutput::Insert { rel, new, .. } => {
                self.push(rel, op::CREATE, None, Some(&new), None, max_rows)?
            }
            PgOutput::Update { rel, old, new, .. } => {
                let before = old.as_ref().map(|(_, v)| v.as_slice());
                let full = old
                    .as_ref()
                    .filter(|(kind, _)| *kind == b'O')
                    .map(|(_, v)| v.as_slice());
                self.push(rel, op::UPDATE, before, Some(&new), full, max_rows)?
            }
            PgOutput::Delete { rel, old, .. } => {
                self.push(rel, op::DELETE, Some(&old.1), None, None, max_rows)?
            }
            PgOutput::Truncate { rels, .. } => {
                for rel in rels {
                    self.push(rel, op::TRUNCATE, None, None, None, max_rows)?;
                }
            }
            PgOutput::Message {
                transactional,
                prefix,
                content,
                ..
            } => self.on_message(transactional, &prefix, &content)?,
            PgOutput::Type { .. } | PgOutput::Origin { .. } => {}
            PgOutput::StreamStart { .. }
            | PgOutput::StreamStop
            | PgOutput::StreamCommit { .. }
            | PgOutput::StreamAbort { .. } => {
                return Err(Error::internal(
                    "streamed transaction message outside the stream handler",
                ))
            }
        }
        Ok(())
    }

    /// Route a message: streamed (in-progress) transactions are buffered per top-level
    /// xid until their Stream Commit, then replayed as an ordinary transaction; a Stream
    /// Abort drops the transaction or one of its subtransactions.
    fn dispatch(&mut self, msg: PgOutput, max_rows: usize) -> Result<()> {
        match msg {
            PgOutput::StreamStart { xid, .. } => {
                self.stream_xid = Some(xid);
                self.streamed.entry(xid).or_default();
            }
            PgOutput::StreamStop => self.stream_xid = None,
            PgOutput::StreamAbort { xid, sub_xid } => {
                if sub_xid == xid {
                    self.streamed.remove(&xid);
                } else if let Some(buf) = self.streamed.get_mut(&xid) {
                    buf.retain(|(x, _)| *x != sub_xid);
                }
            }
            PgOutput::StreamCommit {
                xid,
                end_lsn,
                commit_time_us,
                ..
            } => {
                let buffered = self.streamed.remove(&xid).unwrap_or_default();
                self.handle(
                    PgOutput::Begin {
                        final_lsn: end_lsn,
                        commit_time_us,
                        xid,
                    },
                    max_rows,
                )?;
                for (_, m) in buffered {
                    self.handle(m, max_rows)?;
                }
                self.handle(
                    PgOutput::Commit {
                        commit_lsn: end_lsn,
                        end_lsn,
                        commit_time_us,
                    },
                    max_rows,
                )?;
            }
            other => match self.stream_xid {
                Some(top) => {
                    // Buffered in order, Relation messages too: the tuples before a DDL in
                    // the transaction must be read with the shape they were written in.
                    // Relation messages are tagged with the top-level xid, so a rolled-back
                    // subtransaction never drops one.
                    let sub = match &other {
                        PgOutput::Relation { .. } => top,
                        m => stream_message_xid(m).unwrap_or(top),
                    };
                    self.streamed.entry(top).or_default().push((sub, other));
                }
                None => self.handle(other, max_rows)?,
            },
        }
        Ok(())
    }

    fn on_relation(&mut self, relation: Relation) -> Result<()> {
        let oid = relation.oid;
        if !self.cfg.selects(&relation.namespace, &relation.name) {
            self.skipped.insert(oid);
            return Ok(());
        }
        self.skipped.remove(&oid);
        if let Some(existing) = self.tables.get(&oid) {
            if *existing.events.relation == relation {
                return Ok(());
            }
            // A new shape: what accumulated under the old one goes out first.
            if self.current == Some(oid) {
                self.flush_current(true)?;
            }
            tracing::info!(table = %format!("{}.{}", relation.namespace, relation.name), "table shape changed");
        }
        if self.binary && self.cfg.binary.fixed().is_none() {
            let without = self.without_binary_decoder(&relation);
            if !without.is_empty() {
                // binary: auto met a column it cannot decode: reconnect with text values
                // until past this change (recorded, so that a replay decides the same even
                // if the column is gone from the catalog by then).
                let until = self.txn.as_ref().map_or(self.received, |t| t.final_lsn);
                if let Some(marker) = self.text_values_marker() {
                    std::fs::create_dir_all(marker.parent().unwrap_or(&marker))
                        .and_then(|()| {
                            rivven_engine::topic::write_atomic(
                                &marker,
                                format_lsn(until).as_bytes(),
                            )
                        })
                        .map_err(|e| Error::io(format!("write {}", marker.display()), e))?;
                }
                self.interrupted = true;
                return Err(Error::connect(format!(
                    "postgres-cdc: {} have no binary decoder (binary: auto); reconnecting \
                     with text values",
                    without.join(", ")
                )));
            }
        }
        let keep = self.cfg.kept_columns(
            &relation.namespace,
            &relation.name,
            relation.columns.iter().map(|c| c.name.as_str()),
        );
        let topic = self.topic_for(&relation.namespace, &relation.name);
        let stream = Self::stream_name(&relation.namespace, &relation.name);
        let events = TableEvents::new(
            Arc::new(relation),
            keep,
            &self.catalog,
            self.database.clone(),
        );
        self.tables.insert(
            oid,
            Captured {
                events,
                topic,
                stream,
            },
        );
        Ok(())
    }

    fn push(
        &mut self,
        rel: u32,
        op: &str,
        before: Option<&[Value]>,
        after: Option<&[Value]>,
        old_row: Option<&[Value]>,
        max_rows: usize,
    ) -> Result<()> {
        if self.skipped.contains(&rel) {
            return Ok(());
        }
        if !self.tables.contains_key(&rel) {
            return Err(Error::internal(format!(
                "change for relation {rel} before its Relation message"
            )));
        }
        if self.current != Some(rel) {
            self.flush_current(true)?;
            self.current = Some(rel);
        }
        let (pos, txid, ts) = self.origin(true);
        let src = SourceInfo::streamed(&pos, txid, ts);
        let toast = self.toast.clone();
        let Some(Captured { events, topic, .. }) = self.tables.get_mut(&rel) else {
            return Ok(());
        };
        if let Err(e) = events.push(op, before, after, old_row, &src, &toast) {
            let Some(dlq) = self.dead_letter.clone() else {
                self.interrupted = true;
                return Err(Error::data(e));
            };
            // The rows before it go out (the partial row is cut off); this one goes to the
            // dead-letter topic with its raw values.
            let bound = topic.clone();
            let table = format!("{}.{}", events.relation.namespace, events.relation.name);
            let names: Vec<String> = events
                .relation
                .columns
                .iter()
                .map(|c| c.name.clone())
                .collect();
            self.flush_current(true)?;
            tracing::warn!(table = %table, pos = %pos, error = %e, dead_letter_topic = %dlq,
                "change sent to the dead-letter topic");
            let batch = dead_letter_batch(
                &e,
                bound.as_deref().unwrap_or(""),
                &table,
                op,
                &pos,
                [before, after].map(|v| v.map(|v| raw_json(&names, v))),
            )?;
            let position = self.stream_position(self.last_commit_end, true);
            self.ready.push_back(SourceBatch {
                batch,
                position,
                stream: Some(Arc::from("dead_letter")),
                topic: Some(dlq),
            });
            return Ok(());
        }
        if events.len() >= max_rows {
            // A large transaction: emit what we have; its position is the previous commit,
            // so a restart replays the transaction from its start (at-least-once).
            self.flush_current(true)?;
        }
        Ok(())
    }

    async fn send_status(&mut self, reply: bool) -> Result<()> {
        let (received, durable) = (self.received.max(self.durable), self.durable);
        self.repl()?
            .send_status(received, durable, reply)
            .await
            .map_err(|e| e.into_error("standby status update"))?;
        self.confirmed = durable;
        while self
            .unconfirmed
            .front()
            .is_some_and(|&(lsn, _)| lsn <= durable)
        {
            self.unconfirmed.pop_front();
        }
        self.last_status = Instant::now();
        self.report_slot();
        Ok(())
    }

    /// Next snapshot batch, or `None` once the snapshot is complete. Up to
    /// `snapshot.parallel_tables` tables are copied at once, each on its own session
    /// holding the same snapshot; their batches interleave (one stream per table).
    async fn poll_snapshot(&mut self, max_rows: usize) -> Result<Option<SourceBatch>> {
        loop {
            let snap = self
                .snapshot
                .as_mut()
                .ok_or_else(|| Error::internal("snapshot"))?;
            if let Some(h) = snap.finishing.as_mut() {
                let r = h
                    .await
                    .map_err(|e| Error::internal(format!("postgres-cdc snapshot end: {e}")));
                let snap = self
                    .snapshot
                    .take()
                    .ok_or_else(|| Error::internal("snapshot"))?;
                tracing::info!(rows = snap.rows, "snapshot complete");
                match r?? {
                    Some((repl, streaming)) => {
                        self.repl = Some(repl);
                        self.streaming = streaming;
                        self.streaming_started(snap.consistent_point);
                    }
                    None => self.finished = true,
                }
                return Ok(None);
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
                let job = CopyJob {
                    sql: self
                        .sql
                        .clone()
                        .ok_or_else(|| Error::internal("postgres-cdc: used before open"))?,
                    topic: route(
                        self.router.as_ref(),
                        &self.cfg.database,
                        &unit.schema,
                        &unit.table,
                    ),
                    cfg: self.cfg.clone(),
                    catalog: self.catalog.clone(),
                    database: self.database.clone(),
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
                let repl = self.repl.take();
                let sql = self
                    .sql
                    .clone()
                    .ok_or_else(|| Error::internal("postgres-cdc: used before open"))?;
                snap.finishing = Some(tokio::spawn(finish_snapshot(
                    conns,
                    repl,
                    sql,
                    self.cfg.clone(),
                    self.binary,
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
                        let snap = self
                            .snapshot
                            .as_mut()
                            .ok_or_else(|| Error::internal("snapshot"))?;
                        snap.workers[i].copy = None;
                        snap.tables_done.push(unit);
                        let all_done =
                            snap.pending.is_empty() && snap.workers.iter().all(|w| !w.busy());
                        snap.rows += batch.num_rows() as u64;
                        return Ok(Some(SourceBatch {
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
                            queue(&mut copy.events, &mut self.ready, &mut snap.rows)?;
                        }
                        copy.done += 1;
                        let Err(e) = copy.events.push_snapshot_row(&row, &src) else {
                            continue;
                        };
                        let Some(dlq) = self.dead_letter.clone() else {
                            self.interrupted = true;
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
                        queue(&mut copy.events, &mut self.ready, &mut snap.rows)?;
                        self.ready.push_back(SourceBatch {
                            batch: dead,
                            position: position.clone(),
                            stream: Some(Arc::from("dead_letter")),
                            topic: Some(dlq),
                        });
                    }
                    copy.carry.advance(consumed);
                    if let Some(out) = self.ready.pop_front() {
                        self.report_progress(i, false);
                        return Ok(Some(out));
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
                stream_name: PostgresCdcSource::stream_name(schema, table),
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
    let streaming = start_replication_on(&mut repl, &cfg, binary, consistent_point).await?;
    Ok(Some((repl, streaming)))
}

/// `START_REPLICATION` with pgoutput protocol 2 and streaming on PostgreSQL 14+ (when
/// `streaming` is set), else protocol 1. Returns whether streaming is on.
async fn start_replication_on(
    repl: &mut ReplicationConnection,
    cfg: &PostgresCdcConfig,
    binary: bool,
    from: u64,
) -> Result<bool> {
    let slot = &cfg.slot_name;
    let streaming = cfg.streaming && repl.server_major() >= 14;
    let mut options = vec![
        (
            "proto_version",
            if streaming { "2" } else { "1" }.to_string(),
        ),
        ("publication_names", quote_ident(&cfg.publication)),
    ];
    if streaming {
        options.push(("streaming", "on".to_string()));
    }
    if binary {
        options.push(("binary", "true".to_string()));
    }
    if cfg.messages {
        if repl.server_major() < 14 {
            return Err(Error::config(
                "messages: logical decoding messages need PostgreSQL 14 or newer",
            ));
        }
        options.push(("messages", "true".to_string()));
    }
    repl.start_replication(slot, from, &options)
        .await
        .map_err(|e| match e.code() {
            Some(sqlstate::OBJECT_IN_USE) => Error::connect(format!(
                "replication slot {slot} is in use by another process: {e}"
            )),
            _ => e.into_error(&format!("start replication on slot {slot}")),
        })?;
    Ok(streaming)
}

/// The topic of a table under `topic_routing`, if set.
fn route(
    router: Option<&rivven_engine::routing::TopicResolver>,
    database: &str,
    schema: &str,
    table: &str,
) -> Option<Arc<str>> {
    router.map(|r| Arc::from(r.resolve(database, schema, table).as_str()))
}

/// The (sub)transaction xid a streamed data message carries.
fn stream_message_xid(m: &PgOutput) -> Option<u32> {
    match m {
        PgOutput::Insert { xid, .. }
        | PgOutput::Update { xid, .. }
        | PgOutput::Delete { xid, .. }
        | PgOutput::Truncate { xid, .. }
        | PgOutput::Relation { xid, .. }
        | PgOutput::Type { xid, .. }
        | PgOutput::Message { xid, .. } => *xid,
        _ => None,
    }
}

/// One heartbeat event: `ts_ms`, `slot`, `received_lsn`, `confirmed_lsn`, `lag_bytes`.
fn heartbeat_batch(
    slot: &str,
    received: u64,
    confirmed: u64,
    lag_bytes: u64,
) -> Result<arrow::array::RecordBatch> {
    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts_ms", rivven_engine::batch::timestamp_ms_utc(), false),
        Field::new("slot", DataType::Utf8, false),
        Field::new("received_lsn", DataType::Utf8, false),
        Field::new("confirmed_lsn", DataType::Utf8, false),
        Field::new("lag_bytes", DataType::Int64, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(vec![now_ms()]).with_timezone("UTC")),
        Arc::new(StringArray::from(vec![slot])),
        Arc::new(StringArray::from(vec![format_lsn(received)])),
        Arc::new(StringArray::from(vec![format_lsn(confirmed)])),
        Arc::new(Int64Array::from(vec![lag_bytes as i64])),
    ];
    arrow::array::RecordBatch::try_new(schema, cols)
        .map_err(|e| Error::internal(format!("heartbeat event: {e}")))
}

/// Whether the snapshot selects a column as `::text`: text-shaped kinds this source
/// cannot render from their binary form (arrays, types without a binary decoder). Raw
/// string types (whose binary form is their exact text; a cast would strip `char(n)`
/// padding) and the scalars rendered here to PostgreSQL's text output (uuid, inet, jsonb,
/// enums, timetz, unconstrained numeric, ...) are read in binary, as pgoutput's binary
/// values are: the server then spends no time formatting them.
fn copies_as_text(type_oid: u32, typmod: i32, catalog: &TypeCatalog) -> bool {
    use super::types::Kind;
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

#[async_trait]
impl Source for PostgresCdcSource {
    async fn open(&mut self, position: Option<Position>) -> Result<()> {
        let pos = position.as_ref().map(Pos::from_position).transpose()?;
        let sql = catalog::connect(&self.cfg).await?;
        self.catalog = catalog::load_types(&sql).await?;
        catalog::ensure_publication(&sql, &self.cfg).await?;
        let slot = catalog::slot_state(&sql, &self.cfg).await?;
        if let Some((_, Some(status))) = &slot {
            if status == "lost" {
                return Err(Error::config(format!(
                    "replication slot {} is lost: the server removed WAL it still needed, so \
                     changes were missed. Recovery: drop the slot \
                     (SELECT pg_drop_replication_slot('{}')) and restart with snapshot_mode \
                     when_needed or initial to re-read the tables",
                    self.cfg.slot_name, self.cfg.slot_name
                )));
            }
        }
        let mode = self.cfg.snapshot_mode;
        let unfinished = pos.as_ref().is_some_and(|p| !p.snapshot_done);
        let snapshot = match mode {
            SnapshotMode::Never | SnapshotMode::NoData => false,
            SnapshotMode::Always => true,
            SnapshotMode::Initial | SnapshotMode::InitialOnly => pos.is_none() || unfinished,
            SnapshotMode::WhenNeeded => pos.is_none() || unfinished || slot.is_none(),
        };
        if mode == SnapshotMode::InitialOnly && pos.as_ref().is_some_and(|p| p.snapshot_done) {
            // Done before; a crash may have come between the last batch and the slot drop.
            if slot.is_some() {
                catalog::drop_slot(&sql, &self.cfg.slot_name).await?;
            }
            self.finished = true;
            self.sql = Some(Arc::new(sql));
            return Ok(());
        }
        if pos.is_some() && slot.is_none() && !snapshot {
            return Err(Error::state(format!(
                "replication slot {} does not exist but this pipeline has a stored position: \
                 changes made since were not retained. Recovery: set snapshot_mode \
                 when_needed to re-read the tables, or remove the pipeline's state to start over",
                self.cfg.slot_name
            )));
        }
        self.sql = Some(Arc::new(sql));
        let params = self.params(true)?;
        self.repl = Some(
            ReplicationConnection::connect(&params)
                .await
                .map_err(|e| e.into_error("replication connection"))?,
        );
        if let Some(st) = &self.status {
            st.set_unhealthy(None);
        }
        // Streaming resumes at the stored LSN unless a new slot replaces the old one (a
        // snapshot that is not the resumption of an interrupted one).
        let resumes_unfinished = pos.as_ref().is_some_and(|p| !p.snapshot_done);
        let keeps_slot = slot.is_some() && (!snapshot || resumes_unfinished);
        self.binary = self
            .decide_binary(pos.as_ref().filter(|_| keeps_slot).map(|p| p.lsn))
            .await?;
        self.report_slot();
        if snapshot {
            let resume = pos.as_ref().filter(|p| !p.snapshot_done && slot.is_some());
            let (cp, exported, tables_done) = match resume {
                Some(p) => {
                    // Resume an interrupted snapshot on its slot: finished tables are not
                    // read again. The exported snapshot died with the crash, so the rest is
                    // read at a newer one: changes to those tables since the consistent
                    // point may then appear twice (once as a row, once as a change).
                    tracing::warn!(
                        slot = %self.cfg.slot_name,
                        tables_done = ?p.tables_done,
                        "resuming an interrupted snapshot: finished tables are skipped; the \
                         others are read at a newer snapshot (at-least-once for their changes \
                         since the slot's consistent point)"
                    );
                    (p.lsn, None, p.tables_done.clone())
                }
                None => {
                    // A consistent snapshot needs a slot created with it: snapshot + stream
                    // then have neither gap nor overlap.
                    if slot.is_some() {
                        catalog::drop_slot(self.sql()?, &self.cfg.slot_name).await?;
                    }
                    let (cp, name) = self.create_slot(true).await?;
                    let name = name.ok_or_else(|| Error::internal("no exported snapshot name"))?;
                    (cp, Some(name), Vec::new())
                }
            };
            // Big tables are read in chunks of heap blocks (TID range scans, PostgreSQL
            // 14+); an interrupted attempt's finished tables and chunks are skipped.
            let tid_ranges = self.repl()?.server_major() >= 14;
            let mut units = Vec::new();
            for (schema, table) in catalog::publication_tables(self.sql()?, &self.cfg).await? {
                let estimate = catalog::size_estimate(self.sql()?, &schema, &table).await?;
                units.extend(plan_units(
                    &schema,
                    &table,
                    estimate,
                    if tid_ranges {
                        self.cfg.snapshot.chunk_rows
                    } else {
                        0
                    },
                    &tables_done,
                ));
            }
            let tables = units;
            let sessions = self.cfg.snapshot.parallel_tables.min(tables.len()).max(1);
            let begin = match &exported {
                Some(name) => format!(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                    name.replace('\'', "''")
                ),
                None => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_string(),
            };
            let mut workers = Vec::with_capacity(sessions);
            for _ in 0..sessions {
                let mut conn = ReplicationConnection::connect(&self.params(false)?)
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
                tables = tables.len(),
                sessions,
                consistent_point = %format_lsn(cp),
                "snapshot starting"
            );
            self.last_commit_end = cp;
            self.snapshot = Some(Snapshot {
                tables_done,
                progress: Default::default(),
                workers,
                consistent_point: cp,
                pending: tables.into(),
                rows: 0,
                turn: 0,
                finishing: None,
            });
        } else {
            let from = match (&slot, pos) {
                (None, _) => self.create_slot(false).await?.0,
                (Some(_), Some(p)) => p.lsn,
                (Some((confirmed, _)), None) => {
                    confirmed.as_deref().and_then(parse_lsn).unwrap_or(0)
                }
            };
            self.start_streaming(from).await?;
        }
        Ok(())
    }

    async fn poll(&mut self, max_rows: usize) -> Result<Option<SourceBatch>> {
        if self.interrupted {
            return Err(Error::connect(
                "postgres-cdc: a row failed to decode earlier; the source must be reopened",
            ));
        }
        if self.finished {
            return Ok(None);
        }
        if self.snapshot.is_some() {
            // Batches queued by the snapshot (rows around a dead-lettered one) go first.
            if let Some(b) = self.ready.pop_front() {
                return Ok(Some(b));
            }
            if let Some(b) = self.poll_snapshot(max_rows).await? {
                return Ok(Some(b));
            }
            if self.finished {
                return Ok(None);
            }
        }
        let status_every = Duration::from_millis(self.cfg.status_interval_ms);
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(Some(b));
            }
            if self.deferred.is_some() {
                self.catalog = catalog::load_types(self.sql()?).await?;
                if let Some(msg) = self.deferred.take() {
                    self.dispatch(msg, max_rows)?;
                }
                continue;
            }
            let committed_rows = self.txn.is_none() && self.pending_rows() > 0;
            if let Some(h) = self.heartbeat() {
                if self.txn.is_none()
                    && self.last_heartbeat.elapsed() >= Duration::from_secs(h.interval_secs)
                {
                    self.beat().await?;
                    continue;
                }
            }
            let next_beat = self.heartbeat().map_or(Duration::MAX, |h| {
                Duration::from_secs(h.interval_secs).saturating_sub(self.last_heartbeat.elapsed())
            });
            let wait = if committed_rows {
                Duration::ZERO
            } else {
                status_every
                    .saturating_sub(self.last_status.elapsed())
                    .min(next_beat)
            };
            let repl = self.repl()?;
            match tokio::time::timeout(wait, repl.recv()).await {
                Err(_) if committed_rows => self.flush_current(true)?,
                Err(_) => {
                    // Idle: nothing in flight for us, so everything received may be
                    // confirmed once what we emitted is durable.
                    if self.txn.is_none()
                        && self.pending_rows() == 0
                        && self.acked_seq >= self.emitted_seq
                    {
                        self.durable = self.durable.max(self.last_commit_end);
                    }
                    self.send_status(false).await?;
                }
                Ok(Err(e)) => return Err(e.into_error("replication stream")),
                Ok(Ok(ReplicationMessage::Keepalive { wal_end, reply, .. })) => {
                    self.received = self.received.max(wal_end);
                    if self.txn.is_none()
                        && self.pending_rows() == 0
                        && self.acked_seq >= self.emitted_seq
                    {
                        // Nothing of ours is pending: WAL up to here holds nothing we need.
                        self.last_commit_end = self.last_commit_end.max(wal_end);
                        self.durable = self.durable.max(wal_end);
                    }
                    if reply || self.last_status.elapsed() >= status_every {
                        self.send_status(reply).await?;
                    }
                }
                Ok(Ok(ReplicationMessage::XLogData { wal_end, data, .. })) => {
                    self.received = self.received.max(wal_end);
                    let msg = pgoutput::decode(data, self.stream_xid.is_some())
                        .map_err(|e| Error::data(e.to_string()))?;
                    if let PgOutput::Relation { relation, .. } = &msg {
                        if relation.columns.iter().any(|c| {
                            c.type_oid >= 16384
                                && !self.catalog.domains.contains_key(&c.type_oid)
                                && !self.catalog.arrays.contains_key(&c.type_oid)
                        }) {
                            // A type created since start-up may be a domain or an array:
                            // reload the catalog first (at the top of the loop, so that a
                            // cancelled poll keeps the message).
                            self.deferred = Some(msg);
                            continue;
                        }
                    }
                    self.dispatch(msg, max_rows)?;
                }
            }
        }
    }

    async fn commit(&mut self, position: &Position) -> Result<()> {
        let p = Pos::from_position(position)?;
        if !p.snapshot_done || self.snapshot.is_some() {
            return Ok(());
        }
        self.durable = self.durable.max(p.lsn);
        self.acked_seq = self.acked_seq.max(p.seq);
        if self.repl.is_some() && self.durable > self.confirmed {
            self.send_status(false).await?;
        }
        Ok(())
    }
}

/// The raw values of a tuple as a JSON object: text values as text, binary ones as
/// `\\x<hex>`, unchanged TOAST values as `null` under `"__unchanged_toast"`.
fn raw_json(names: &[String], values: &[Value]) -> String {
    let mut m = serde_json::Map::new();
    let mut unchanged = Vec::new();
    for (n, v) in names.iter().zip(values) {
        let j = match v {
            Value::Null => serde_json::Value::Null,
            Value::Unchanged => {
                unchanged.push(serde_json::Value::String(n.clone()));
                continue;
            }
            Value::Text(t) => serde_json::Value::String(String::from_utf8_lossy(t).into_owned()),
            Value::Binary(b) => serde_json::Value::String(format!(
                "\\x{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            )),
        };
        m.insert(n.clone(), j);
    }
    if !unchanged.is_empty() {
        m.insert(
            "__unchanged_toast".into(),
            serde_json::Value::Array(unchanged),
        );
    }
    serde_json::Value::Object(m).to_string()
}

/// One change that failed to decode, for the dead-letter topic: the `__dlq_*` columns of
/// every dead-letter row, then the change's table, op, position and raw images (JSON).
fn dead_letter_batch(
    error: &str,
    bound_for: &str,
    table: &str,
    op: &str,
    pos: &str,
    images: [Option<String>; 2],
) -> Result<arrow::array::RecordBatch> {
    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let text = |v: Option<&str>| Arc::new(StringArray::from(vec![v])) as arrow::array::ArrayRef;
    let [before, after] = images;
    let fields = [
        (rivven_engine::batch::DLQ_ERROR, false),
        (rivven_engine::batch::DLQ_TRANSFORM, false),
        (rivven_engine::batch::DLQ_TOPIC, false),
        ("table", false),
        ("op", false),
        ("pos", false),
        ("before", true),
        ("after", true),
    ];
    let schema = Arc::new(Schema::new(
        fields
            .iter()
            .map(|(n, null)| Field::new(*n, DataType::Utf8, *null))
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(
        schema,
        vec![
            text(Some(error)),
            text(Some("postgres-cdc decode")),
            text(Some(bound_for)),
            text(Some(table)),
            text(Some(op)),
            text(Some(pos)),
            text(before.as_deref()),
            text(after.as_deref()),
        ],
    )
    .map_err(|e| Error::internal(format!("dead-letter row: {e}")))
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
