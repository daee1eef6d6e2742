//! The `postgres-cdc` source: opens the sessions, decides between snapshot and stream,
//! reads the replication connection and hands batches to the runtime; confirms positions
//! to the server once they are durable downstream.
//!
//! The work itself is in the sibling modules: [`super::snapshot`] reads the tables,
//! [`super::stream`] assembles transactions into batches, [`super::acks`] keeps the LSN
//! bookkeeping, [`super::heartbeat`] runs heartbeats.

use super::catalog::{self, SESSION_OPTIONS};
use super::config::{PostgresCdcConfig, SnapshotMode};
use super::conn::{
    format_lsn, parse_lsn, quote_ident, ConnectParams, ReplicationConnection, ReplicationMessage,
};
use super::heartbeat::{self, Heartbeat};
use super::pgoutput::{self, PgOutput};
use super::position::Pos;
use super::snapshot::{self, Polled, Snapshot};
use super::stream::{self, Stream};
use super::types::Kind;
use async_trait::async_trait;
use rivven_engine::batch::{Position, SourceBatch};
use rivven_engine::connector::Source;
use rivven_engine::status::PipelineStatus;
use rivven_engine::{Error, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The `postgres-cdc` source. See the module docs of [`super`] for guarantees.
pub struct PostgresCdcSource {
    cfg: PostgresCdcConfig,
    /// The pipeline's status, for slot lag and snapshot progress (absent when the source
    /// runs outside a runtime, as in benchmarks).
    status: Option<Arc<PipelineStatus>>,
    /// Topic for changes that fail to decode (`None`: a failure stops the source).
    dead_letter: Option<Arc<str>>,
    /// The pipeline's state directory: `binary: auto` records a fallback to text values
    /// there (absent outside a runtime).
    state_dir: Option<std::path::PathBuf>,
    sql: Option<Arc<Client>>,
    repl: Option<ReplicationConnection>,
    stream: Stream,
    snapshot: Option<Snapshot>,
    heartbeat: Option<Heartbeat>,
    /// A Relation message held back while the type catalog is reloaded (`true`) or its
    /// array columns' declared dimensions are looked up.
    deferred: Option<(PgOutput, bool)>,
    /// Whether protocol 2 streaming was negotiated.
    streaming: bool,
    last_status: Instant,
    finished: bool,
}

impl std::fmt::Debug for PostgresCdcSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCdcSource")
            .field("slot", &self.cfg.slot_name)
            .field("decoded", &format_lsn(self.stream.acks.decoded()))
            .finish_non_exhaustive()
    }
}

impl PostgresCdcSource {
    pub fn new(cfg: PostgresCdcConfig) -> Self {
        Self {
            stream: Stream::new(cfg.clone(), None, None),
            heartbeat: Heartbeat::new(cfg.heartbeat.as_ref()),
            cfg,
            status: None,
            dead_letter: None,
            state_dir: None,
            sql: None,
            repl: None,
            snapshot: None,
            deferred: None,
            streaming: false,
            last_status: Instant::now(),
            finished: false,
        }
    }

    /// Keep per-pipeline state (the `binary: auto` fallback marker) under `dir`.
    pub fn with_state_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.state_dir = Some(dir);
        self
    }

    /// Report slot lag and snapshot progress to the pipeline's status.
    pub fn with_status(mut self, status: Arc<PipelineStatus>) -> Self {
        self.status = Some(status);
        self
    }

    /// Send changes that fail to decode to `topic` (with the reason and the raw values)
    /// instead of stopping; the rows around them go on.
    pub fn with_dead_letter(mut self, topic: Option<String>) -> Self {
        self.dead_letter = topic.map(Arc::from);
        self
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
        if let Some(marker) = self.state_dir.as_deref().map(stream::text_values_marker) {
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
            without.extend(stream::without_binary_decoder(
                &self.cfg,
                &self.stream.catalog,
                &relation,
            ));
        }
        if !without.is_empty() {
            tracing::info!(columns = ?without,
                "binary: auto: text values, these columns have no binary decoder");
        }
        Ok(without.is_empty())
    }

    fn report_slot(&self) {
        let Some(st) = &self.status else { return };
        let acks = &self.stream.acks;
        st.set_gauge(
            "postgres_slot_lag_bytes",
            &[("slot", &self.cfg.slot_name)],
            acks.lag_bytes() as f64,
        );
        st.set_detail(
            "slot",
            serde_json::json!({
                "name": self.cfg.slot_name,
                "received_lsn": format_lsn(acks.received()),
                "confirmed_lsn": format_lsn(acks.confirmed()),
                "lag_bytes": acks.lag_bytes(),
                "protocol_streaming": self.streaming,
                "binary_values": self.stream.binary,
            }),
        );
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
        let binary = self.stream.binary;
        self.streaming = stream::start_replication(self.repl()?, &cfg, binary, from).await?;
        self.streaming_started(from);
        Ok(())
    }

    fn streaming_started(&mut self, from: u64) {
        self.stream.start(from);
        self.last_status = Instant::now();
    }

    /// Tell the server what was received and what is durable.
    async fn send_status(&mut self, reply: bool) -> Result<()> {
        let (written, flushed) = self.stream.acks.status();
        self.repl()?
            .send_status(written, flushed, reply)
            .await
            .map_err(|e| e.into_error("standby status update"))?;
        self.stream.acks.confirm(flushed);
        self.last_status = Instant::now();
        self.report_slot();
        Ok(())
    }

    /// Start the snapshot at `consistent_point`, sessions importing `exported`.
    async fn begin_snapshot(
        &mut self,
        consistent_point: u64,
        exported: Option<String>,
        tables_done: Vec<String>,
    ) -> Result<()> {
        let env = snapshot::Env {
            sql: self
                .sql
                .clone()
                .ok_or_else(|| Error::internal("postgres-cdc: used before open"))?,
            cfg: self.cfg.clone(),
            catalog: self.stream.catalog.clone(),
            database: Arc::from(self.cfg.database.as_str()),
            router: self.cfg.resolver(),
            dead_letter: self.dead_letter.clone(),
            status: self.status.clone(),
            binary: self.stream.binary,
        };
        let repl = self
            .repl
            .take()
            .ok_or_else(|| Error::internal("postgres-cdc: replication connection not open"))?;
        let session = self.params(false)?;
        self.stream.acks.start(consistent_point);
        self.snapshot = Some(
            Snapshot::begin(
                env,
                repl,
                &session,
                consistent_point,
                exported.as_deref(),
                tables_done,
            )
            .await?,
        );
        Ok(())
    }
}

#[async_trait]
impl Source for PostgresCdcSource {
    async fn open(&mut self, position: Option<Position>) -> Result<()> {
        let pos = position.as_ref().map(Pos::from_position).transpose()?;
        let sql = catalog::connect(&self.cfg).await?;
        self.stream = Stream::new(
            self.cfg.clone(),
            self.dead_letter.clone(),
            self.state_dir.clone(),
        );
        self.stream.catalog = catalog::load_types(&sql).await?;
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
        let snapshot = snapshot::needed(mode, pos.as_ref(), slot.is_some());
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
        self.stream.binary = self
            .decide_binary(pos.as_ref().filter(|_| keeps_slot).map(|p| p.lsn))
            .await?;
        self.report_slot();
        if snapshot {
            match pos.filter(|p| !p.snapshot_done && slot.is_some()) {
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
                    self.begin_snapshot(p.lsn, None, p.tables_done).await?;
                }
                None => {
                    // A consistent snapshot needs a slot created with it: snapshot + stream
                    // then have neither gap nor overlap.
                    if slot.is_some() {
                        catalog::drop_slot(self.sql()?, &self.cfg.slot_name).await?;
                    }
                    let (cp, name) = self.create_slot(true).await?;
                    let name = name.ok_or_else(|| Error::internal("no exported snapshot name"))?;
                    self.begin_snapshot(cp, Some(name), Vec::new()).await?;
                }
            }
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
        if self.stream.interrupted || self.snapshot.as_ref().is_some_and(|s| s.interrupted) {
            return Err(Error::connect(
                "postgres-cdc: a row failed to decode earlier; the source must be reopened",
            ));
        }
        if self.finished {
            return Ok(None);
        }
        if let Some(snap) = self.snapshot.as_mut() {
            // Batches queued by the snapshot (rows around a dead-lettered one) go first.
            if let Some(b) = snap.ready.pop_front() {
                return Ok(Some(b));
            }
            match snap.poll(max_rows).await? {
                Polled::Batch(b) => return Ok(Some(b)),
                Polled::Streaming {
                    repl,
                    streaming,
                    from,
                } => {
                    self.snapshot = None;
                    self.repl = Some(repl);
                    self.streaming = streaming;
                    self.streaming_started(from);
                }
                Polled::Finished => {
                    self.snapshot = None;
                    self.finished = true;
                    return Ok(None);
                }
            }
        }
        let status_every = Duration::from_millis(self.cfg.status_interval_ms);
        loop {
            if let Some(b) = self.stream.next_ready() {
                return Ok(Some(b));
            }
            if let Some((msg, reload)) = &self.deferred {
                // Each step is repeated, not skipped, if this poll is cancelled meanwhile.
                let (oid, selected) = match msg {
                    PgOutput::Relation { relation, .. } => (
                        relation.oid,
                        self.cfg.selects(&relation.namespace, &relation.name),
                    ),
                    _ => (0, false),
                };
                if *reload {
                    self.stream.catalog = catalog::load_types(self.sql()?).await?;
                    if let Some(d) = self.deferred.as_mut() {
                        d.1 = false;
                    }
                    continue;
                }
                // pgoutput does not send declared array dimensions (`int[][]`).
                let dims = if selected {
                    catalog::array_dims(self.sql()?, oid).await?
                } else {
                    Default::default()
                };
                if let Some((mut msg, _)) = self.deferred.take() {
                    if let PgOutput::Relation { relation, .. } = &mut msg {
                        for c in &mut relation.columns {
                            c.dims = dims.get(&c.name).copied().unwrap_or(0);
                        }
                    }
                    self.stream.dispatch(msg, max_rows)?;
                }
                continue;
            }
            let committed_rows = self.stream.has_committed_rows();
            let next_beat = match &mut self.heartbeat {
                Some(h) if !self.stream.in_txn() && h.due_in().is_zero() => {
                    let sql = self
                        .sql
                        .as_ref()
                        .ok_or_else(|| Error::internal("postgres-cdc: used before open"))?;
                    let event = h
                        .beat(
                            sql,
                            &self.cfg.slot_name,
                            &self.stream.acks,
                            self.status.as_deref(),
                        )
                        .await?;
                    // Only between transactions with nothing pending: its position is
                    // then exact.
                    if let (Some((batch, topic)), true) = (event, self.stream.idle()) {
                        self.stream.emit(batch, heartbeat::STREAM, Some(topic));
                    }
                    continue;
                }
                // Inside a transaction the heartbeat waits for its end: it must not shorten
                // the wait for the transaction's next message.
                Some(h) if !self.stream.in_txn() => h.due_in(),
                _ => Duration::MAX,
            };
            let wait = if committed_rows {
                Duration::ZERO
            } else {
                status_every
                    .saturating_sub(self.last_status.elapsed())
                    .min(next_beat)
            };
            let repl = self.repl()?;
            match tokio::time::timeout(wait, repl.recv()).await {
                Err(_) if committed_rows => self.stream.flush_current()?,
                Err(_) => {
                    // Idle: nothing in flight for us, so everything received may be
                    // confirmed once what we emitted is durable.
                    let idle = self.stream.idle();
                    self.stream.acks.idle(idle);
                    self.send_status(false).await?;
                }
                Ok(Err(e)) => return Err(e.into_error("replication stream")),
                Ok(Ok(ReplicationMessage::Keepalive { wal_end, reply, .. })) => {
                    let idle = self.stream.idle();
                    self.stream.acks.keepalive(wal_end, idle);
                    if reply || self.last_status.elapsed() >= status_every {
                        self.send_status(reply).await?;
                    }
                }
                Ok(Ok(ReplicationMessage::XLogData { wal_end, data, .. })) => {
                    self.stream.acks.receive(wal_end);
                    let msg = pgoutput::decode(data, self.stream.in_stream_block())
                        .map_err(|e| Error::data(e.to_string()))?;
                    if let PgOutput::Relation { relation, .. } = &msg {
                        let catalog = &self.stream.catalog;
                        // A type created since start-up may be a domain or an array: the
                        // catalog is reloaded first. A captured table with array columns
                        // needs their declared dimensions. Both at the top of the loop, so
                        // that a cancelled poll keeps the message.
                        let reload = relation.columns.iter().any(|c| {
                            c.type_oid >= 16384
                                && !catalog.domains.contains_key(&c.type_oid)
                                && !catalog.arrays.contains_key(&c.type_oid)
                        });
                        let arrays = self.cfg.selects(&relation.namespace, &relation.name)
                            && relation.columns.iter().any(|c| {
                                c.type_oid >= 16384
                                    || matches!(
                                        Kind::of(c.type_oid, c.type_modifier, catalog),
                                        Kind::List(_)
                                    )
                            });
                        if reload || arrays {
                            self.deferred = Some((msg, reload));
                            continue;
                        }
                    }
                    self.stream.dispatch(msg, max_rows)?;
                }
            }
        }
    }

    async fn commit(&mut self, position: &Position) -> Result<()> {
        let p = Pos::from_position(position)?;
        if !p.snapshot_done || self.snapshot.is_some() {
            return Ok(());
        }
        self.stream.acks.acknowledge(p.lsn, p.seq);
        if self.repl.is_some() && self.stream.acks.behind() {
            self.send_status(false).await?;
        }
        Ok(())
    }
}
