//! The pgoutput stream after the snapshot: starting it (`START_REPLICATION` options),
//! assembling transactions (protocol 2's streamed in-progress transactions included),
//! tracking relations (a table's shape and where its batches go), and turning changes
//! into change-event batches in commit order.
//!
//! [`Stream`] consumes decoded pgoutput messages and queues batches; the source reads the
//! replication connection and drains the queue. Every queued batch carries the end LSN of
//! the last complete commit and a sequence number from [`Acks`], so that the source
//! confirms a position to the server only once everything emitted up to it is durable.

use super::acks::Acks;
use super::config::PostgresCdcConfig;
use super::conn::{format_lsn, quote_ident, sqlstate, ReplicationConnection};
use super::dead_letter::{dead_letter_batch, raw_json};
use super::events::{SourceInfo, TableEvents, ToastPolicy};
use super::pgoutput::{PgOutput, Relation, Value};
use super::position::Pos;
use super::types::TypeCatalog;
use arrow::array::RecordBatch;
use rivven_engine::batch::{op, SourceBatch};
use rivven_engine::routing::TopicResolver;
use rivven_engine::{Error, Result};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Milliseconds between the PostgreSQL epoch (2000-01-01) and the Unix epoch.
const PG_EPOCH_MS: i64 = 946_684_800_000;

/// The stream name of a table: `schema.table`.
pub(super) fn stream_name(schema: &str, table: &str) -> Arc<str> {
    Arc::from(format!("{schema}.{table}").as_str())
}

/// The topic of a table under `topic_routing`, if set.
pub(super) fn route(
    router: Option<&TopicResolver>,
    database: &str,
    schema: &str,
    table: &str,
) -> Option<Arc<str>> {
    router.map(|r| Arc::from(r.resolve(database, schema, table).as_str()))
}

/// The file recording that `binary: auto` fell back to text values until an LSN.
pub(super) fn text_values_marker(state_dir: &Path) -> PathBuf {
    state_dir.join("text-values-until")
}

/// The kept columns of `relation` (`schema.table.column`) whose binary values this source
/// cannot decode.
pub(super) fn without_binary_decoder(
    cfg: &PostgresCdcConfig,
    catalog: &TypeCatalog,
    relation: &Relation,
) -> Vec<String> {
    let keep = cfg.kept_columns(
        &relation.namespace,
        &relation.name,
        relation.columns.iter().map(|c| c.name.as_str()),
    );
    keep.into_iter()
        .map(|i| &relation.columns[i])
        .filter(|c| super::binary::decoder(c.type_oid, c.type_modifier, catalog).is_err())
        .map(|c| format!("{}.{}.{}", relation.namespace, relation.name, c.name))
        .collect()
}

/// `START_REPLICATION` with pgoutput protocol 2 and streaming on PostgreSQL 14+ (when
/// `streaming` is set), else protocol 1. Returns whether streaming is on.
pub(super) async fn start_replication(
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

/// A captured table of the stream: its events and where they go.
struct Captured {
    events: TableEvents,
    topic: Option<Arc<str>>,
    stream: Arc<str>,
}

/// The transaction being read.
struct Txn {
    xid: u32,
    /// The transaction's commit LSN (`source.pos`).
    final_lsn: u64,
    commit_ms: i64,
}

/// See the module docs.
pub(super) struct Stream {
    cfg: PostgresCdcConfig,
    router: Option<TopicResolver>,
    database: Arc<str>,
    toast: ToastPolicy,
    /// The server's types, for decoding; reloaded by the source when a relation uses a
    /// type created since.
    pub catalog: TypeCatalog,
    /// Topic for changes that fail to decode (`None`: a failure stops the source).
    dead_letter: Option<Arc<str>>,
    /// Whether pgoutput sends binary values.
    pub binary: bool,
    /// Where `binary: auto` records a fallback to text values (absent outside a runtime).
    state_dir: Option<PathBuf>,
    /// LSN and acknowledgement bookkeeping.
    pub acks: Acks,
    /// Captured relations (by OID) and their accumulating events.
    tables: HashMap<u32, Captured>,
    /// Relations seen in the stream and not captured.
    skipped: HashSet<u32>,
    /// The relation whose events are accumulating (one at a time, to keep order).
    current: Option<u32>,
    txn: Option<Txn>,
    /// The top-level xid of the open Stream Start block, if any.
    stream_xid: Option<u32>,
    /// Buffered messages of in-progress streamed transactions: top-level xid →
    /// (subtransaction xid, message), in arrival order.
    streamed: HashMap<u32, Vec<(u32, PgOutput)>>,
    ready: VecDeque<SourceBatch>,
    /// Set when a change failed to decode mid-way (builders hold a partial row), or
    /// values must switch to text: the source must be reopened.
    pub interrupted: bool,
}

impl Stream {
    /// A stream of the tables `cfg` selects.
    pub fn new(
        cfg: PostgresCdcConfig,
        dead_letter: Option<Arc<str>>,
        state_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            router: cfg.resolver(),
            database: Arc::from(cfg.database.as_str()),
            toast: ToastPolicy {
                placeholder: cfg.unavailable_value_placeholder.clone(),
            },
            cfg,
            catalog: TypeCatalog::default(),
            dead_letter,
            binary: false,
            state_dir,
            acks: Acks::default(),
            tables: HashMap::new(),
            skipped: HashSet::new(),
            current: None,
            txn: None,
            stream_xid: None,
            streamed: HashMap::new(),
            ready: VecDeque::new(),
            interrupted: false,
        }
    }

    /// Streaming starts after `from`.
    pub fn start(&mut self, from: u64) {
        self.acks.start(from);
        tracing::info!(slot = %self.cfg.slot_name, from = %format_lsn(from), "streaming changes");
    }

    /// The next queued batch.
    pub fn next_ready(&mut self) -> Option<SourceBatch> {
        self.ready.pop_front()
    }

    /// Whether a transaction is being read.
    pub fn in_txn(&self) -> bool {
        self.txn.is_some()
    }

    /// Whether a protocol 2 Stream Start block is open (its messages carry an xid).
    pub fn in_stream_block(&self) -> bool {
        self.stream_xid.is_some()
    }

    /// Rows of committed transactions wait to be queued.
    pub fn has_committed_rows(&self) -> bool {
        self.txn.is_none() && self.pending_rows() > 0
    }

    /// Nothing of ours is in flight in the stream: no open transaction, no pending rows.
    pub fn idle(&self) -> bool {
        self.txn.is_none() && self.pending_rows() == 0
    }

    /// Queue `batch` as its own event at the position of the last commit (a heartbeat
    /// between transactions, say).
    pub fn emit(&mut self, batch: RecordBatch, stream: &str, topic: Option<Arc<str>>) {
        let position = self.position();
        self.ready.push_back(SourceBatch {
            batch,
            position,
            stream: Some(Arc::from(stream)),
            topic,
        });
    }

    /// The position of the next batch: the last commit's end LSN and a new sequence
    /// number.
    fn position(&mut self) -> rivven_engine::batch::Position {
        let mut pos = Pos::new(self.acks.decoded(), true);
        pos.seq = self.acks.next_seq();
        pos.to_position()
    }

    fn pending_rows(&self) -> usize {
        self.current
            .and_then(|oid| self.tables.get(&oid))
            .map_or(0, |c| c.events.len())
    }

    /// Queue the accumulating relation's events at the last commit's position.
    pub fn flush_current(&mut self) -> Result<()> {
        let Some(oid) = self.current.take() else {
            return Ok(());
        };
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
        let position = self.position();
        self.ready.push_back(SourceBatch {
            batch,
            position,
            stream: Some(stream),
            topic,
        });
        Ok(())
    }

    /// `source.pos`, `txid` and commit time of a streamed event: its transaction's when
    /// it belongs to the open one (`in_txn`), else the last commit's position alone.
    fn origin(&self, in_txn: bool) -> (String, Option<i64>, Option<i64>) {
        match (&self.txn, in_txn) {
            (Some(t), true) => (
                format_lsn(t.final_lsn),
                Some(t.xid as i64),
                Some(t.commit_ms),
            ),
            _ => (format_lsn(self.acks.decoded()), None, None),
        }
    }

    /// A logical decoding message: an event of its own, after the rows before it.
    fn on_message(&mut self, transactional: bool, prefix: &str, content: &[u8]) -> Result<()> {
        if !self.cfg.messages
            || !(self.cfg.message_prefixes.is_empty()
                || self.cfg.message_prefixes.iter().any(|p| p == prefix))
        {
            return Ok(());
        }
        self.flush_current()?;
        let (pos, txid, ts) = self.origin(transactional);
        let src = SourceInfo::streamed(&pos, txid, ts);
        let batch =
            super::events::message_batch(&self.database, prefix, content, transactional, &src)
                .map_err(|e| Error::internal(format!("build message event: {e}")))?;
        self.emit(batch, super::events::MESSAGE_STREAM, None);
        Ok(())
    }

    /// Route a message: streamed (in-progress) transactions are buffered per top-level
    /// xid until their Stream Commit, then replayed as an ordinary transaction; a Stream
    /// Abort drops the transaction or one of its subtransactions.
    pub fn dispatch(&mut self, msg: PgOutput, max_rows: usize) -> Result<()> {
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

    /// Handle one message of an ordinary (or replayed streamed) transaction.
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
                let commit_ms = self.txn.take().map(|t| t.commit_ms);
                self.acks.commit_decoded(end_lsn, commit_ms);
                if self.pending_rows() >= max_rows {
                    self.flush_current()?;
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
                self.flush_current()?;
            }
            tracing::info!(table = %format!("{}.{}", relation.namespace, relation.name), "table shape changed");
        }
        if self.binary && self.cfg.binary.fixed().is_none() {
            let without = without_binary_decoder(&self.cfg, &self.catalog, &relation);
            if !without.is_empty() {
                // binary: auto met a column it cannot decode: reconnect with text values
                // until past this change (recorded, so that a replay decides the same even
                // if the column is gone from the catalog by then).
                let until = self
                    .txn
                    .as_ref()
                    .map_or(self.acks.received(), |t| t.final_lsn);
                if let Some(marker) = self.state_dir.as_deref().map(text_values_marker) {
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
        let topic = route(
            self.router.as_ref(),
            &self.cfg.database,
            &relation.namespace,
            &relation.name,
        );
        let stream = stream_name(&relation.namespace, &relation.name);
        let events = TableEvents::new(
            Arc::new(relation),
            keep,
            &self.catalog,
            self.database.clone(),
            self.cfg.temporal_infinity,
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
            self.flush_current()?;
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
            self.flush_current()?;
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
            self.emit(batch, "dead_letter", Some(dlq));
            return Ok(());
        }
        if events.len() >= max_rows {
            // A large transaction: emit what we have; its position is the previous commit,
            // so a restart replays the transaction from its start (at-least-once).
            self.flush_current()?;
        }
        Ok(())
    }
}
