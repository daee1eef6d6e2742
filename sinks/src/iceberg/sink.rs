//! The `iceberg` sink: routes rows to their tables, buffers them, and commits each table's
//! rows as one snapshot whose summary carries the consumer offsets it covers: a fast
//! append (`append`), or a snapshot built in [`super::commit`] (`upsert`: equality
//! deletes of every key touched plus the keys' last rows; `overwrite`: the written
//! partitions replaced).

use super::catalog::{ice_err, Tables};
use super::commit::{self, Delta};
use super::config::{CatalogKind, CommitMode, IcebergConfig, PartitionField};
use super::files::{write_files, write_rows, Files, Streaming};
use super::schema;
use super::upsert::{key_field_ids, upsert_key, upsert_rows, without_flag};
use crate::changes;
use arrow::array::{Array, AsArray, RecordBatch, StructArray, UInt32Array};
use arrow::datatypes::DataType;
use async_trait::async_trait;
use iceberg::spec::{Transform, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{NamespaceIdent, TableCreation, TableIdent, TableRequirement, TableUpdate};
use parquet::file::properties::WriterProperties;
use rivven_engine::batch::SinkBatch;
use rivven_engine::connector::{Committed, FlushWhen, Rejected, Sink};
use rivven_engine::status::PipelineStatus;
use rivven_engine::{Error, ErrorKind, Result};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Snapshot summary key holding, for sink `sink`, the consumer offset after the last row
/// of `topic`/`partition` in the table. Two sinks with different names keep their own;
/// `/` appears in no sink or topic name, so keys of different sinks never overlap.
pub fn offset_key(sink: &str, topic: &str, partition: u32) -> String {
    format!("rivven-connect.offset/{sink}/{topic}/{partition}")
}

/// The offsets sink `sink` recorded in `table`: per topic partition, the value in the
/// newest snapshot of the current snapshot's ancestry (the table's main line) that
/// carries it. Snapshots rolled back or on other branches do not count.
fn recorded_offsets(table: &Table, sink: &str) -> HashMap<(String, u32), u64> {
    let prefix = format!("rivven-connect.offset/{sink}/");
    let metadata = table.metadata();
    let mut found: HashMap<(String, u32), u64> = HashMap::new();
    let mut next = metadata.current_snapshot_id();
    while let Some(id) = next {
        let Some(snap) = metadata.snapshot_by_id(id) else {
            break;
        };
        for (k, v) in &snap.summary().additional_properties {
            let Some(rest) = k.strip_prefix(&prefix) else {
                continue;
            };
            let Some((topic, partition)) = rest.rsplit_once('/') else {
                continue;
            };
            let (Ok(partition), Ok(offset)) = (partition.parse::<u32>(), v.parse::<u64>()) else {
                continue;
            };
            found
                .entry((topic.to_string(), partition))
                .or_insert(offset);
        }
        next = snap.parent_snapshot_id();
    }
    found
}

/// One table this sink writes: its handle, the offsets already in it, the rows waiting.
struct TableState {
    table: Option<Table>,
    /// Offsets recorded in the table by this sink: rows before them are already there.
    done: HashMap<(String, u32), u64>,
    buffered: Vec<RecordBatch>,
    /// `append`/`overwrite`: data files being written of rows that fit the table's schema
    /// as it is, taken before anything is buffered (see [`IcebergSink::write`]).
    streaming: Option<Streaming>,
    /// Columns the buffered rows bring that the table lacks, with their types.
    pending: HashMap<String, iceberg::spec::Type>,
    /// Offset after the last buffered row, per topic partition.
    next: BTreeMap<(String, u32), u64>,
    /// `upsert`: the key of the buffered rows (which end with the [`DELETE_FLAG`] column).
    key: Vec<String>,
    stats: TableStats,
}

#[derive(Default, serde::Serialize)]
struct TableStats {
    snapshot_id: Option<i64>,
    schema_id: Option<i32>,
    commits: u64,
    rows: u64,
    /// Equality delete rows written (`upsert`: one per key changed).
    delete_rows: u64,
    /// Data files an `overwrite` marked deleted.
    files_replaced: u64,
    files: u64,
    bytes: u64,
    last_commit_ms: u64,
    last_commit_files: u64,
}

/// Writes batches into Iceberg tables.
pub struct IcebergSink {
    cfg: IcebergConfig,
    props: WriterProperties,
    partition_spec: Vec<PartitionField>,
    name: String,
    status: Arc<PipelineStatus>,
    tables: Option<Tables>,
    states: BTreeMap<TableIdent, TableState>,
    /// Rows refused since the runtime last asked (see [`Sink::take_rejected`]).
    rejected: Vec<Rejected>,
    rows: u64,
    first_at: Option<Instant>,
}

impl IcebergSink {
    /// A sink named `name` (the pipeline's name: part of its snapshot summary keys).
    pub fn new(cfg: IcebergConfig, name: &str, status: Arc<PipelineStatus>) -> Result<Self> {
        Ok(IcebergSink {
            props: cfg.writer_properties().map_err(Error::config)?,
            partition_spec: cfg.partition_spec().map_err(Error::config)?,
            cfg,
            name: name.to_string(),
            status,
            tables: None,
            states: BTreeMap::new(),
            rejected: Vec::new(),
            rows: 0,
            first_at: None,
        })
    }

    async fn tables(&mut self) -> Result<&Tables> {
        if self.tables.is_none() {
            self.tables = Some(Tables::connect(&self.cfg, true).await?);
        }
        self.tables
            .as_ref()
            .ok_or_else(|| Error::internal("iceberg: catalog not connected"))
    }

    /// The state of `ident`, loading the table (if it exists) on first use.
    async fn state(&mut self, ident: &TableIdent) -> Result<&mut TableState> {
        if !self.states.contains_key(ident) {
            let table = self.tables().await?.load(ident).await?;
            let done = table
                .as_ref()
                .map(|t| recorded_offsets(t, &self.name))
                .unwrap_or_default();
            self.states.insert(
                ident.clone(),
                TableState {
                    table,
                    done,
                    buffered: Vec::new(),
                    streaming: None,
                    pending: HashMap::new(),
                    next: BTreeMap::new(),
                    key: Vec::new(),
                    stats: TableStats::default(),
                },
            );
        }
        self.states
            .get_mut(ident)
            .ok_or_else(|| Error::internal("iceberg: table state missing"))
    }

    fn publish_status(&self) {
        let tables: serde_json::Map<String, serde_json::Value> = self
            .states
            .iter()
            .map(|(id, s)| {
                (
                    id.to_string(),
                    serde_json::to_value(&s.stats).unwrap_or_default(),
                )
            })
            .collect();
        self.status
            .set_detail("iceberg", serde_json::json!({ "tables": tables }));
        for (id, st) in &self.states {
            let table = id.to_string();
            let labels = [("table", table.as_str())];
            let s = &st.stats;
            for (name, value) in [
                ("iceberg_commits", s.commits as f64),
                ("iceberg_rows_written", s.rows as f64),
                ("iceberg_delete_rows_written", s.delete_rows as f64),
                ("iceberg_files_replaced", s.files_replaced as f64),
                ("iceberg_files_written", s.files as f64),
                ("iceberg_bytes_written", s.bytes as f64),
                ("iceberg_last_commit_ms", s.last_commit_ms as f64),
                ("iceberg_schema_id", s.schema_id.map_or(-1.0, f64::from)),
            ] {
                self.status.set_gauge(name, &labels, value);
            }
        }
    }

    /// Commit the buffered rows of `ident`: schema update first when the rows bring new
    /// columns, then the data files in one append snapshot with the offsets they cover.
    async fn commit_table(&mut self, ident: &TableIdent) -> Result<()> {
        let started = Instant::now();
        let tables = match &self.tables {
            Some(t) => t,
            None => return Err(Error::internal("iceberg: catalog not connected")),
        };
        let state = self
            .states
            .get_mut(ident)
            .ok_or_else(|| Error::internal("iceberg: table state missing"))?;
        // The streamed rows' files first: written against the table's schema as it was,
        // which stays readable after the changes that the buffered rows bring.
        let streamed = match state.streaming.take() {
            Some(w) => w.finish().await?,
            None => Vec::new(),
        };
        if state.buffered.is_empty() && streamed.is_empty() {
            return Ok(());
        }
        let mut table = match state.table.take() {
            Some(t) => t,
            None => match (tables.load(ident).await?, state.buffered.first()) {
                (Some(t), _) => t,
                (None, Some(first)) => {
                    create_table(
                        tables,
                        &self.cfg,
                        &self.partition_spec,
                        ident,
                        &without_flag(first, &state.key)?,
                        &state.key,
                    )
                    .await?
                }
                (None, None) => {
                    return Err(Error::internal(format!(
                        "iceberg: table {ident} vanished while its rows were written"
                    )))
                }
            },
        };
        // What the rows ask of the table's schema, batch by batch against the table as it
        // evolves: wider column types (a schema of their own, committed as such), then new
        // columns (iceberg-rust's schema update), both before the rows' snapshot.
        for b in &state.buffered {
            let b = without_flag(b, &state.key)?;
            let ev = schema::evolution(&b.schema(), table.metadata().current_schema())?;
            if !ev.widen.is_empty() {
                let current = table.metadata().current_schema().clone();
                let wide = schema::widened(&current, &ev.widen)?;
                let requirements = vec![TableRequirement::CurrentSchemaIdMatch {
                    current_schema_id: current.schema_id(),
                }];
                let updates = vec![
                    TableUpdate::AddSchema { schema: wide },
                    TableUpdate::SetCurrentSchema { schema_id: -1 },
                ];
                table = tables.commit(&table, requirements, updates).await?;
                let columns: Vec<String> =
                    ev.widen.iter().map(|(p, t)| format!("{p}: {t}")).collect();
                tracing::info!(sink = %self.name, table = %ident, ?columns, "iceberg: columns widened");
            }
            if !ev.add.is_empty() {
                let added = ev.added;
                let tx = Transaction::new(&table);
                let mut action = tx.update_schema();
                for a in ev.add {
                    action = action.add_column(a);
                }
                let tx = action
                    .apply(tx)
                    .map_err(ice_err(format_args!("add columns {added:?} to {ident}")))?;
                table = tx
                    .commit(tables.catalog())
                    .await
                    .map_err(ice_err(format_args!("add columns {added:?} to {ident}")))?;
                tracing::info!(sink = %self.name, table = %ident, columns = ?added, "iceberg: columns added");
            }
        }
        let target = schema::table_arrow_schema(table.metadata().current_schema())?;
        let mut summary: HashMap<String, String> = state
            .next
            .iter()
            .map(|((topic, p), o)| (offset_key(&self.name, topic, *p), o.to_string()))
            .collect();
        summary.insert("rivven-connect.sink".to_string(), self.name.clone());
        let size = self.cfg.target_file_size_mb;
        let (files, deletes, replaced, table) = match self.cfg.commit_mode {
            CommitMode::Append => {
                let mut files = streamed;
                if !state.buffered.is_empty() {
                    files.extend(
                        write_rows(&table, &self.props, size, &state.buffered, &target).await?,
                    );
                }
                let tx = Transaction::new(&table);
                let tx = tx
                    .fast_append()
                    .add_data_files(files.clone())
                    .set_snapshot_properties(summary)
                    .apply(tx)
                    .map_err(ice_err(format_args!("append to {ident}")))?;
                let table = tx
                    .commit(tables.catalog())
                    .await
                    .map_err(ice_err(format_args!("commit to {ident}")))?;
                (files, Vec::new(), 0, table)
            }
            CommitMode::Overwrite => {
                let mut files = streamed;
                if !state.buffered.is_empty() {
                    files.extend(
                        write_rows(&table, &self.props, size, &state.buffered, &target).await?,
                    );
                }
                let delta = Delta {
                    data: files.clone(),
                    overwrite: true,
                    properties: summary,
                    ..Delta::default()
                };
                let prepared = commit::snapshot_updates(&table, delta).await?;
                let replaced = prepared.removed_data_files;
                let table = tables
                    .commit(&table, prepared.requirements, prepared.updates)
                    .await?;
                (files, Vec::new(), replaced, table)
            }
            CommitMode::Upsert => {
                let key = state.key.clone();
                let rows = upsert_rows(&state.buffered, &key, &target)?;
                let ids = key_field_ids(&table, &key)?;
                let keep = arrow::compute::not(rows.column(rows.num_columns() - 1).as_boolean())?;
                let all = rows.project(&(0..rows.num_columns() - 1).collect::<Vec<_>>())?;
                let live = arrow::compute::filter_record_batch(&all, &keep)?;
                let files = write_files(&table, &self.props, size, Files::Data, vec![live]).await?;
                let deletes =
                    write_files(&table, &self.props, size, Files::Deletes(ids), vec![all]).await?;
                let delta = Delta {
                    data: files.clone(),
                    deletes: deletes.clone(),
                    overwrite: false,
                    properties: summary,
                };
                let prepared = commit::snapshot_updates(&table, delta).await?;
                let table = tables
                    .commit(&table, prepared.requirements, prepared.updates)
                    .await?;
                (files, deletes, 0, table)
            }
        };
        let rows: u64 = files.iter().map(|f| f.record_count()).sum();
        let delete_rows: u64 = deletes.iter().map(|f| f.record_count()).sum();
        let bytes: u64 = files
            .iter()
            .chain(&deletes)
            .map(|f| f.file_size_in_bytes())
            .sum();
        let nfiles = (files.len() + deletes.len()) as u64;
        for (k, o) in std::mem::take(&mut state.next) {
            state.done.insert(k, o);
        }
        state.buffered.clear();
        state.pending.clear();
        let ms = started.elapsed().as_millis() as u64;
        let s = &mut state.stats;
        s.snapshot_id = table.metadata().current_snapshot_id();
        s.schema_id = Some(table.metadata().current_schema_id());
        s.commits += 1;
        s.rows += rows;
        s.delete_rows += delete_rows;
        s.files_replaced += replaced;
        s.files += nfiles;
        s.bytes += bytes;
        s.last_commit_ms = ms;
        s.last_commit_files = nfiles;
        tracing::debug!(sink = %self.name, table = %ident, rows, files = nfiles, ms, "iceberg commit");
        state.table = Some(table);
        Ok(())
    }

    /// The table(s) the rows of `b` go to, with the indices of those rows (`None`: all).
    fn route(&self, b: &SinkBatch) -> Result<Vec<(TableIdent, Option<Vec<u32>>)>> {
        let (namespace, name) = self.names(&b.topic)?;
        if !name.contains("{table}") {
            return Ok(vec![(TableIdent::new(namespace, name), None)]);
        }
        let mut groups = split_by_table(&b.batch)?;
        if groups.len() == 1 {
            if let Some(g) = groups.first_mut() {
                g.1 = None;
            }
        }
        Ok(groups
            .into_iter()
            .map(|(t, rows)| {
                (
                    TableIdent::new(namespace.clone(), name.replace("{table}", &t)),
                    rows,
                )
            })
            .collect())
    }

    /// The namespace and table name (still holding `{table}` if the template does) for
    /// `topic`.
    fn names(&self, topic: &str) -> Result<(NamespaceIdent, String)> {
        let topic = topic.replace('.', "_");
        let namespace = self.cfg.namespace.replace("{topic}", &topic);
        let namespace =
            NamespaceIdent::from_vec(namespace.split('.').map(str::to_string).collect())
                .map_err(|e| Error::config(format!("iceberg: namespace `{namespace}`: {e}")))?;
        Ok((namespace, self.cfg.table.replace("{topic}", &topic)))
    }
}

/// The row indices of `batch` grouped by source table: the `table` field of the `source`
/// struct (change events) or the `__table` column (unwrapped change events).
fn split_by_table(batch: &RecordBatch) -> Result<Vec<(String, Option<Vec<u32>>)>> {
    let column = if let Some(source) = batch.column_by_name("source") {
        source
            .as_any()
            .downcast_ref::<StructArray>()
            .and_then(|s| s.column_by_name("table"))
            .cloned()
    } else {
        batch.column_by_name("__table").cloned()
    };
    let column = column.ok_or_else(|| {
        Error::data(
            "iceberg: `table` uses {table}, but the rows have neither source.table nor __table",
        )
        .retryable(false)
    })?;
    let names = arrow::compute::cast(&column, &DataType::Utf8)?;
    let names = names.as_string::<i32>();
    let mut groups: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for i in 0..names.len() {
        if names.is_null(i) {
            return Err(Error::data(format!(
                "iceberg: row {i} has no source table for the {{table}} template"
            ))
            .retryable(false));
        }
        groups.entry(names.value(i)).or_default().push(i as u32);
    }
    Ok(groups
        .into_iter()
        .map(|(t, idx)| (t.to_string(), Some(idx)))
        .collect())
}

/// Create `ident` (and its namespace) with the schema of `first` and the configured
/// partition spec and properties.
async fn create_table(
    tables: &Tables,
    cfg: &IcebergConfig,
    partition: &[PartitionField],
    ident: &TableIdent,
    first: &RecordBatch,
    key: &[String],
) -> Result<Table> {
    if !cfg.auto_create {
        return Err(Error::config(format!(
            "iceberg: table {ident} does not exist and auto_create is false"
        )));
    }
    tables.ensure_namespace(ident.namespace()).await?;
    let schema = schema::new_table_schema(&first.schema(), key)?;
    let mut spec = UnboundPartitionSpec::builder();
    for p in partition {
        let source = schema.field_by_name(&p.column).ok_or_else(|| {
            Error::config(format!(
                "iceberg: partition_fields: no column `{}` in the rows of {ident}",
                p.column
            ))
        })?;
        let transform = Transform::from_str(&p.transform)
            .map_err(ice_err(format_args!("partition transform {}", p.transform)))?;
        spec = spec
            .add_partition_field(source.id, partition_field_name(p), transform)
            .map_err(ice_err(format_args!("partition field {}", p.column)))?;
    }
    let creation = TableCreation::builder()
        .name(ident.name().to_string())
        .schema(schema)
        .partition_spec(spec.build())
        .properties(cfg.table_properties.clone())
        .build();
    match tables
        .catalog()
        .create_table(ident.namespace(), creation)
        .await
    {
        Ok(t) => {
            tracing::info!(table = %ident, "iceberg: table created");
            Ok(t)
        }
        // Created meanwhile by another writer: use theirs.
        Err(e) if e.kind() == iceberg::ErrorKind::TableAlreadyExists => tables
            .load(ident)
            .await?
            .ok_or_else(|| Error::state(format!("iceberg: {ident} vanished after create"))),
        Err(e) => Err(ice_err(format_args!("create {ident}"))(e)),
    }
}

/// Iceberg's conventional partition field names: `c`, `c_bucket`, `c_trunc`, `c_day`, ….
fn partition_field_name(p: &PartitionField) -> String {
    let t = p.transform.split('[').next().unwrap_or("");
    match t {
        "identity" => p.column.clone(),
        "truncate" => format!("{}_trunc", p.column),
        other => format!("{}_{other}", p.column),
    }
}

#[async_trait]
impl Sink for IcebergSink {
    async fn open(&mut self, committed: &[Committed]) -> Result<Vec<Committed>> {
        self.states.clear();
        self.tables = None;
        // With {table} in the name, the tables are known only from the rows, and tables
        // that a crash kept from their first commit are unknown here: resuming ahead of
        // the group's offsets could skip their rows. The runtime re-delivers from the
        // group's offsets instead, and `write` skips, table by table (each loaded on its
        // first row), what each already holds.
        if self.cfg.table.contains("{table}") {
            self.publish_status();
            return Ok(Vec::new());
        }
        // Otherwise each topic writes one table, known now: resume after what it holds.
        let mut idents: Vec<TableIdent> = Vec::new();
        for c in committed {
            let (namespace, name) = self.names(&c.topic)?;
            idents.push(TableIdent::new(namespace, name));
        }
        idents.sort();
        idents.dedup();
        for id in &idents {
            self.state(id).await?;
        }
        self.publish_status();
        let mut own: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for s in self.states.values() {
            for (k, o) in &s.done {
                own.entry(k.clone())
                    .and_modify(|v| *v = (*v).min(*o))
                    .or_insert(*o);
            }
        }
        Ok(committed
            .iter()
            .filter_map(|c| {
                own.get(&(c.topic.clone(), c.partition)).map(|o| Committed {
                    topic: c.topic.clone(),
                    partition: c.partition,
                    offset: *o,
                })
            })
            .collect())
    }

    async fn write(&mut self, b: &SinkBatch) -> Result<()> {
        if b.batch.num_rows() == 0 {
            return Ok(());
        }
        let key = (b.topic.to_string(), b.partition);
        let glue = self.cfg.catalog.kind == CatalogKind::Glue;
        let upsert = self.cfg.commit_mode == CommitMode::Upsert;
        let key_columns = self.cfg.key_columns.clone();
        let metadata_columns = self.cfg.metadata_columns.clone();
        let mut refused = Vec::new();
        for (ident, idx) in self.route(b)? {
            self.state(&ident).await?;
            let state = self
                .states
                .get_mut(&ident)
                .ok_or_else(|| Error::internal("iceberg: table state missing"))?;
            // Rows this table already holds (a commit that the group's offsets missed)
            // are skipped. Recorded offsets are ends of topic batches, so a transformed
            // piece is either wholly before one or wholly after it; only untransformed
            // rows (row i at offset first_offset + i) can straddle one.
            let done = state.done.get(&key).copied().unwrap_or(0);
            if b.next_offset() <= done {
                continue;
            }
            let skip = if b.rows_are_offsets() {
                done.saturating_sub(b.first_offset)
            } else {
                0
            };
            let rows = match idx {
                None => b
                    .batch
                    .slice(skip as usize, b.batch.num_rows() - skip as usize),
                Some(idx) => {
                    let idx: Vec<u32> = idx.into_iter().filter(|i| u64::from(*i) >= skip).collect();
                    arrow::compute::take_record_batch(&b.batch, &UInt32Array::from(idx))?
                }
            };
            if rows.num_rows() == 0 {
                continue;
            }
            // Upsert: the rows as the table should hold them, last change per key, flagged
            // when deleted. Changes that cannot be applied (truncates, null keys) are
            // refused with the reason.
            let rows = if upsert {
                let key = upsert_key(&key_columns, state.table.as_ref(), &rows)?;
                if !state.key.is_empty() && state.key != key {
                    return Err(Error::config(format!(
                        "iceberg: rows for {ident} change key from ({}) to ({}) between commits",
                        state.key.join(", "),
                        key.join(", ")
                    )));
                }
                let out = changes::table_rows(&rows, &key, &metadata_columns)?;
                if let Some((r, reason)) = out.refused {
                    refused.push(Rejected {
                        rows: r,
                        reason: format!("iceberg: {reason} (table {ident})"),
                    });
                }
                state.key = key;
                if out.rows.num_rows() == 0 {
                    continue;
                }
                out.rows
            } else {
                rows
            };
            // Rows whose columns the table cannot take are refused here, with the reason,
            // so they never fail a commit.
            let table_schema = state
                .table
                .as_ref()
                .map(|t| t.metadata().current_schema().clone());
            match schema::check_rows(
                &without_flag(&rows, &state.key)?.schema(),
                table_schema.as_deref(),
                &state.pending,
                glue,
            ) {
                Ok(added) => state.pending.extend(added),
                Err(e) if e.kind() == ErrorKind::Data => {
                    self.rejected.push(Rejected {
                        rows,
                        reason: format!("{e} (table {ident})"),
                    });
                    continue;
                }
                Err(e) => return Err(e),
            }
            let n = rows.num_rows() as u64;
            self.first_at.get_or_insert_with(Instant::now);
            self.rows += n;
            state.next.insert(key.clone(), b.next_offset());
            // `append`/`overwrite`: rows that fit the table as it is (created for them when
            // missing) are written now by a task of their own, overlapping the encoding
            // with reading the topic. From the first rows that need a schema change on,
            // the commit's rows are buffered and written after the change.
            if !upsert && state.buffered.is_empty() {
                if state.table.is_none() {
                    let tables = self
                        .tables
                        .as_ref()
                        .ok_or_else(|| Error::internal("iceberg: catalog not connected"))?;
                    let table =
                        create_table(tables, &self.cfg, &self.partition_spec, &ident, &rows, &[])
                            .await?;
                    state.table = Some(table);
                }
                if let Some(table) = &state.table {
                    let current = table.metadata().current_schema();
                    if schema::evolution(&rows.schema(), current)?.is_empty() {
                        let writer = match &mut state.streaming {
                            Some(w) => w,
                            None => state.streaming.insert(Streaming::start(
                                table,
                                &self.props,
                                self.cfg.target_file_size_mb,
                            )?),
                        };
                        writer.write(&rows).await?;
                        continue;
                    }
                }
            }
            state.buffered.push(rows);
        }
        self.rejected.extend(refused);
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let idents: Vec<TableIdent> = self
            .states
            .iter()
            .filter(|(_, s)| !s.buffered.is_empty() || s.streaming.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        if idents.is_empty() {
            return Ok(());
        }
        self.tables().await?;
        let result = async {
            for id in &idents {
                self.commit_table(id).await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if result.is_err() {
            // The runtime re-delivers from the committed offsets: start over clean, with
            // the tables (and what they hold) reloaded on next use.
            self.states.clear();
            self.tables = None;
        }
        self.rows = 0;
        self.first_at = None;
        self.publish_status();
        result
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
