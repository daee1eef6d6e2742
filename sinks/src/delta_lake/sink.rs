//! The `delta-lake` sink: buffers batches and commits them to a Delta table, with the
//! consumer offsets they cover as `txn` actions of the same commit.

use super::config::DeltaLakeConfig;
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
use rivven_engine::connector::{Committed, FlushWhen, Sink};
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
        } else if !dir.exists() {
            return deltalake::DeltaTableBuilder::from_url(url)
                .and_then(|b| b.build())
                .map_err(delta_err("open the table"));
        }
    }
    DeltaTable::try_from_url_with_storage_options(url, cfg.storage_options())
        .await
        .map_err(delta_err("open the table"))
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
        self.buffered.push(relaxed(&b.batch)?);
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
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
            .with_commit_properties(
                CommitProperties::default().with_application_transactions(txns),
            );
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
        self.status.set_detail(
            "delta",
            serde_json::json!({"table_version": version, "last_commit_rows": rows,
                               "last_commit_ms": started.elapsed().as_millis() as u64}),
        );
        Ok(())
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
