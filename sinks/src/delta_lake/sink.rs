//! The `delta-lake` sink: buffers batches and commits them to a Delta table, with the
//! consumer offsets they cover as `txn` actions of the same commit.

use super::config::{DeltaLakeConfig, WriteMode};
use crate::changes::{self, DELETE_FLAG};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use async_trait::async_trait;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use parquet::file::properties::WriterProperties;
use rivven_engine::batch::SinkBatch;
use rivven_engine::connector::{Committed, FlushWhen, Rejected, Sink};
use rivven_engine::status::PipelineStatus;
use rivven_engine::{Error, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `txn` application id of one sink and topic partition. Two sinks with different
/// names can write one table: each has its own ids.
pub fn app_id(sink: &str, topic: &str, partition: u32) -> String {
    format!("rivven-connect/{sink}/{topic}/{partition}")
}

/// A Delta error as ours: commit conflicts, I/O and object-store errors are retryable
/// (the runtime re-delivers from the committed offsets); schema and data errors are not.
pub(super) fn delta_err(context: &str) -> impl Fn(DeltaTableError) -> Error + '_ {
    move |e| {
        let retryable = matches!(
            e,
            DeltaTableError::ObjectStore { .. }
                | DeltaTableError::Io { .. }
                | DeltaTableError::Transaction { .. }
                | DeltaTableError::VersionAlreadyExists(_)
        );
        let msg = format!("delta-lake: {context}: {e}");
        if retryable {
            Error::connect(msg)
        } else {
            Error::data(msg).retryable(false)
        }
    }
}

/// `t` with every field, at every depth, nullable: Delta columns are nullable, and delta-rs
/// compares nullability when it checks a batch against the table.
fn relaxed_type(t: &DataType) -> DataType {
    let field = |f: &FieldRef| -> FieldRef {
        Arc::new(
            Field::new(f.name(), relaxed_type(f.data_type()), true)
                .with_metadata(f.metadata().clone()),
        )
    };
    match t {
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect()),
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
        DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
        other => other.clone(),
    }
}

/// `batch` with a relaxed schema (see [`relaxed_type`]) and no schema-level metadata (the
/// topic log's), its columns cast where a nested type changed.
fn relaxed(batch: &RecordBatch) -> Result<RecordBatch> {
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        let t = relaxed_type(f.data_type());
        columns.push(if &t == c.data_type() {
            c.clone()
        } else {
            arrow::compute::cast(c, &t)?
        });
        fields.push(Field::new(f.name(), t, true).with_metadata(f.metadata().clone()));
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The table at `cfg.table_uri`: loaded, or, when there is none yet, an unloaded handle
/// that a write creates. A missing local directory is created when `create_dir`, else
/// reported as no table.
pub(super) async fn open_table(cfg: &DeltaLakeConfig, create_dir: bool) -> Result<DeltaTable> {
    let url = cfg.url().map_err(Error::config)?;
    if url.scheme() == "file" {
        let dir = url
            .to_file_path()
            .map_err(|()| Error::config(format!("delta-lake: {url} is not a local path")))?;
        if create_dir {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("delta-lake: create {}", dir.display()), e))?;
        }
        // No log yet: an unloaded handle, without delta-rs logging a failed load.
        if !dir.join("_delta_log").exists() {
            return deltalake::DeltaTableBuilder::from_url(url)
                .and_then(|b| b.build())
                .map_err(delta_err("open the table"));
        }
    }
    DeltaTable::try_from_url_with_storage_options(url, cfg.storage_options())
        .await
        .map_err(delta_err("open the table"))
}

/// One batch of table rows for an upsert: rows (with the delete flag), their key, and the
/// topic partition and offset after them.
struct Change {
    rows: RecordBatch,
    key: Vec<String>,
    at: (String, u32, u64),
}

/// `name` quoted as a SQL identifier (dots and capitals kept as they are).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `name` quoted as a SQL identifier of the merge expressions, under `alias`.
fn qualified(alias: &str, name: &str) -> String {
    format!("{alias}.{}", quoted(name))
}

/// Writes batches into one Delta table.
pub struct DeltaLakeSink {
    cfg: DeltaLakeConfig,
    /// Built once from `compression` (validated with the config).
    props: WriterProperties,
    name: String,
    status: Arc<PipelineStatus>,
    table: Option<DeltaTable>,
    buffered: Vec<RecordBatch>,
    /// `upsert` mode: table rows with their key and the offset after them, in order.
    changes: Vec<Change>,
    /// Rows refused since the runtime last asked (see [`Sink::take_rejected`]).
    rejected: Vec<Rejected>,
    /// Data commits and rows committed by this process.
    commits: u64,
    rows_committed: u64,
    /// This sink's commits since its last OPTIMIZE and VACUUM.
    since_optimize: u64,
    since_vacuum: u64,
    rows: u64,
    first_at: Option<Instant>,
    /// Offset after the last buffered row, per topic partition.
    next: BTreeMap<(String, u32), u64>,
}

impl DeltaLakeSink {
    /// A sink named `name` (the pipeline's name: part of its `txn` application ids).
    pub fn new(cfg: DeltaLakeConfig, name: &str, status: Arc<PipelineStatus>) -> Result<Self> {
        Ok(DeltaLakeSink {
            props: cfg.writer_properties().map_err(Error::config)?,
            cfg,
            name: name.to_string(),
            status,
            table: None,
            buffered: Vec::new(),
            changes: Vec::new(),
            rejected: Vec::new(),
            commits: 0,
            rows_committed: 0,
            since_optimize: 0,
            since_vacuum: 0,
            rows: 0,
            first_at: None,
            next: BTreeMap::new(),
        })
    }

    /// The table, loaded (or, when it does not exist, an unloaded handle that a write
    /// creates).
    async fn load(&mut self) -> Result<&mut DeltaTable> {
        if self.table.is_none() {
            let table = open_table(&self.cfg, self.cfg.auto_create_table).await?;
            if table.version().is_none() && !self.cfg.auto_create_table {
                return Err(Error::config(format!(
                    "delta-lake: no Delta table at {} and auto_create_table is false",
                    self.cfg.table_uri
                )));
            }
            self.table = Some(table);
        }
        self.table
            .as_mut()
            .ok_or_else(|| Error::internal("delta-lake: table not loaded"))
    }
}

impl DeltaLakeSink {
    /// Commit properties of every data commit: the offsets as `txn` actions and the
    /// conflict retries.
    fn commit_properties(&self, txns: Vec<Transaction>) -> CommitProperties {
        CommitProperties::default()
            .with_application_transactions(txns)
            .with_max_retries(self.cfg.commit_retries as usize)
    }

    /// Table properties of a table this sink creates.
    fn table_configuration(&self) -> Vec<(String, Option<String>)> {
        self.cfg
            .checkpoint_interval
            .map(|n| ("delta.checkpointInterval".to_string(), Some(n.to_string())))
            .into_iter()
            .collect()
    }

    /// Record a data commit of `rows` rows at `version` that took `ms`: status and gauges.
    fn committed(&mut self, rows: u64, version: u64, ms: u64) {
        self.commits += 1;
        self.rows_committed += rows;
        self.status.set_detail(
            "delta",
            serde_json::json!({"table_version": version, "last_commit_rows": rows,
                               "last_commit_ms": ms, "commits": self.commits,
                               "rows": self.rows_committed}),
        );
        for (name, value) in [
            ("delta_commits", self.commits as f64),
            ("delta_rows_written", self.rows_committed as f64),
            ("delta_table_version", version as f64),
            ("delta_last_commit_ms", ms as f64),
        ] {
            self.status.set_gauge(name, &[], value);
        }
    }

    /// After a data commit: OPTIMIZE and VACUUM when their commit counts are due. They are
    /// upkeep, not delivery: a failure is logged and shown in `status`, and the rows stay
    /// committed.
    async fn maintain(&mut self) {
        self.since_optimize += 1;
        self.since_vacuum += 1;
        let optimize = self
            .cfg
            .optimize_every_commits
            .is_some_and(|n| self.since_optimize >= n);
        let vacuum = self
            .cfg
            .vacuum_every_commits
            .is_some_and(|n| self.since_vacuum >= n);
        if !optimize && !vacuum {
            return;
        }
        let Some(mut table) = self.table.take() else {
            return;
        };
        if optimize {
            self.since_optimize = 0;
            let target = std::num::NonZeroU64::new(self.cfg.optimize_target_size_mb << 20)
                .unwrap_or(std::num::NonZeroU64::MIN);
            match table.clone().optimize().with_target_size(target).await {
                Ok((t, m)) => {
                    tracing::info!(sink = %self.name, removed = m.num_files_removed,
                                   added = m.num_files_added, "delta-lake optimize");
                    self.status.set_detail(
                        "delta_optimize",
                        serde_json::json!({"files_removed": m.num_files_removed,
                                           "files_added": m.num_files_added}),
                    );
                    table = t;
                }
                Err(e) => {
                    tracing::warn!(sink = %self.name, error = %e, "delta-lake optimize failed");
                    self.status.set_detail(
                        "delta_optimize",
                        serde_json::json!({"error": e.to_string()}),
                    );
                }
            }
        }
        if vacuum {
            self.since_vacuum = 0;
            let hours = i64::try_from(self.cfg.vacuum_retention_hours).unwrap_or(i64::MAX);
            let run = table
                .clone()
                .vacuum()
                .with_retention_period(chrono::Duration::hours(hours))
                // The retention is the user's explicit choice.
                .with_enforce_retention_duration(false)
                .await;
            match run {
                Ok((t, m)) => {
                    tracing::info!(sink = %self.name, deleted = m.files_deleted.len(), "delta-lake vacuum");
                    self.status.set_detail(
                        "delta_vacuum",
                        serde_json::json!({"files_deleted": m.files_deleted.len()}),
                    );
                    table = t;
                }
                Err(e) => {
                    tracing::warn!(sink = %self.name, error = %e, "delta-lake vacuum failed");
                    self.status
                        .set_detail("delta_vacuum", serde_json::json!({"error": e.to_string()}));
                }
            }
        }
        self.table = Some(table);
    }

    /// `upsert` mode: one MERGE per run of buffered changes with one schema and key, each
    /// carrying the offsets of its rows as `txn` actions.
    async fn flush_changes(&mut self) -> Result<()> {
        let items = std::mem::take(&mut self.changes);
        self.rows = 0;
        self.first_at = None;
        if items.is_empty() {
            return Ok(());
        }
        let keyed = items
            .into_iter()
            .map(|c| ((c.rows.schema(), c.key.clone()), c))
            .collect();
        for ((schema, key), run) in changes::runs(keyed) {
            let started = Instant::now();
            let ats: Vec<(String, u32, u64)> = run.iter().map(|c| c.at.clone()).collect();
            let batches: Vec<RecordBatch> = run.into_iter().map(|c| c.rows).collect();
            let rows = arrow::compute::concat_batches(&schema, &batches)?;
            let rows = changes::dedupe(&rows, &key)?;
            let txns: Vec<Transaction> = changes::offsets_of(&ats)
                .into_iter()
                .map(|((topic, partition), offset)| {
                    Transaction::new(app_id(&self.name, &topic, partition), offset as i64)
                })
                .collect();
            let n = rows.num_rows();
            let version = self.merge(rows, &key, txns).await?;
            let ms = started.elapsed().as_millis() as u64;
            tracing::debug!(sink = %self.name, rows = n, version, ms, "delta-lake merge");
            self.committed(n as u64, version, ms);
        }
        Ok(())
    }

    /// Apply table rows (last column: the delete flag) to the table in one commit: a MERGE
    /// on `key`, or, while the table does not exist yet, a write of the rows not deleted.
    async fn merge(
        &mut self,
        rows: RecordBatch,
        key: &[String],
        txns: Vec<Transaction>,
    ) -> Result<u64> {
        self.load().await?;
        let table = self
            .table
            .take()
            .ok_or_else(|| Error::internal("delta-lake: table not loaded"))?;
        let commit = self.commit_properties(txns);
        let configuration = self.table_configuration();
        let n = rows.num_columns();
        let columns: Vec<String> = rows.schema().fields()[..n - 1]
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let table = if table.version().is_none() {
            let deleted = rows
                .column(n - 1)
                .as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .ok_or_else(|| Error::internal("delta-lake: delete flag missing"))?;
            let kept = arrow::compute::filter_record_batch(&rows, &arrow::compute::not(deleted)?)?;
            let kept = kept.project(&(0..n - 1).collect::<Vec<_>>())?;
            let mut write = table
                .write(vec![kept])
                .with_save_mode(SaveMode::Append)
                .with_writer_properties(self.props.clone())
                .with_configuration(configuration)
                .with_commit_properties(commit);
            if !self.cfg.partition_columns.is_empty() {
                write = write.with_partition_columns(self.cfg.partition_columns.clone());
            }
            write.await.map_err(delta_err("create the table"))?
        } else {
            let ctx = deltalake::datafusion::prelude::SessionContext::new();
            let source = ctx
                .read_batch(rows)
                .map_err(|e| Error::internal(format!("delta-lake: merge source: {e}")))?;
            let on = key
                .iter()
                .map(|k| format!("{} = {}", qualified("target", k), qualified("source", k)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let flag = qualified("source", DELETE_FLAG);
            let (table, _metrics) = table
                .merge(source, on)
                .with_source_alias("source")
                .with_target_alias("target")
                .with_merge_schema(self.cfg.merge_schema)
                .with_writer_properties(self.props.clone())
                .with_commit_properties(commit)
                .when_matched_delete(|d| d.predicate(flag.clone()))
                .and_then(|m| {
                    m.when_matched_update(|u| {
                        columns
                            .iter()
                            .fold(u, |u, c| u.update(c.as_str(), qualified("source", c)))
                    })
                })
                .and_then(|m| {
                    m.when_not_matched_insert(|i| {
                        columns
                            .iter()
                            .fold(i.predicate(format!("NOT {flag}")), |i, c| {
                                i.set(quoted(c), qualified("source", c))
                            })
                    })
                })
                .map_err(delta_err("plan the merge"))?
                .await
                .map_err(delta_err("merge"))?;
            table
        };
        let version = table.version().unwrap_or_default();
        self.table = Some(table);
        self.maintain().await;
        Ok(version)
    }
}

#[async_trait]
impl Sink for DeltaLakeSink {
    async fn open(&mut self, committed: &[Committed]) -> Result<Vec<Committed>> {
        self.table = None;
        let name = self.name.clone();
        let table = self.load().await?;
        if table.version().is_none() {
            return Ok(Vec::new());
        }
        let snapshot = table.snapshot().map_err(delta_err("read the table"))?;
        let log = table.log_store();
        let mut own = Vec::new();
        for c in committed {
            let id = app_id(&name, &c.topic, c.partition);
            let version = snapshot
                .transaction_version(log.as_ref(), &id)
                .await
                .map_err(delta_err("read the table's transactions"))?;
            if let Some(v) = version {
                own.push(Committed {
                    topic: c.topic.clone(),
                    partition: c.partition,
                    offset: u64::try_from(v).map_err(|_| {
                        Error::state(format!("delta-lake: txn `{id}` has version {v}"))
                    })?,
                });
            }
        }
        Ok(own)
    }

    async fn write(&mut self, b: &SinkBatch) -> Result<()> {
        self.next
            .insert((b.topic.to_string(), b.partition), b.next_offset());
        if b.batch.num_rows() == 0 {
            return Ok(());
        }
        self.first_at.get_or_insert_with(Instant::now);
        self.rows += b.batch.num_rows() as u64;
        match self.cfg.write_mode {
            WriteMode::Append => self.buffered.push(relaxed(&b.batch)?),
            WriteMode::Upsert => {
                // Keys come from the source's schema metadata, which `relaxed` drops.
                let key = changes::key_columns(&b.batch, &self.cfg.key_columns)?;
                let out = changes::table_rows(&b.batch, &key, &self.cfg.metadata_columns)?;
                if let Some((rows, reason)) = out.refused {
                    self.rejected.push(Rejected {
                        rows,
                        reason: format!("delta-lake: {reason}"),
                    });
                }
                if out.rows.num_rows() > 0 {
                    self.changes.push(Change {
                        rows: relaxed(&out.rows)?,
                        key,
                        at: (b.topic.to_string(), b.partition, b.next_offset()),
                    });
                }
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.cfg.write_mode == WriteMode::Upsert {
            return self.flush_changes().await;
        }
        if self.buffered.is_empty() {
            // Nothing to write: the group's offsets cover rows that never reach the table.
            return Ok(());
        }
        let started = Instant::now();
        let txns: Vec<Transaction> = self
            .next
            .iter()
            .map(|((topic, partition), offset)| {
                Transaction::new(app_id(&self.name, topic, *partition), *offset as i64)
            })
            .collect();
        let props = self.props.clone();
        let partition_columns = self.cfg.partition_columns.clone();
        let merge = self.cfg.merge_schema;
        let batches = std::mem::take(&mut self.buffered);
        let rows = std::mem::take(&mut self.rows);
        self.first_at = None;
        self.load().await?;
        let table = self
            .table
            .take()
            .ok_or_else(|| Error::internal("delta-lake: table not loaded"))?;
        let mut write = table
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_writer_properties(props)
            .with_configuration(self.table_configuration())
            .with_commit_properties(self.commit_properties(txns));
        if !partition_columns.is_empty() {
            write = write.with_partition_columns(partition_columns);
        }
        if merge {
            write = write.with_schema_mode(SchemaMode::Merge);
        }
        // On failure the table handle is dropped and reloaded by the next attempt, which
        // starts from the committed offsets.
        let table = write.await.map_err(delta_err("commit"))?;
        let version = table.version().unwrap_or_default();
        self.table = Some(table);
        tracing::debug!(
            sink = %self.name,
            rows,
            version,
            ms = started.elapsed().as_millis() as u64,
            "delta-lake commit"
        );
        self.committed(rows, version, started.elapsed().as_millis() as u64);
        self.maintain().await;
        Ok(())
    }

    fn take_rejected(&mut self) -> Vec<Rejected> {
        std::mem::take(&mut self.rejected)
    }

    fn flush_when(&self) -> FlushWhen {
        if self.rows >= self.cfg.batch_size {
            return FlushWhen::Now;
        }
        match self.first_at {
            Some(t) => FlushWhen::At(t + Duration::from_secs(self.cfg.flush_interval_secs)),
            None => FlushWhen::Idle,
        }
    }
}
