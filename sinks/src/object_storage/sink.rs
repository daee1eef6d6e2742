//! The object-storage sink: batches → open files per directory and topic partition →
//! committed objects → consumer offsets.

use super::config::Resolved;
use super::layout::{Group, Layout};
use super::store::{Backend, Staging};
use crate::format::{FileEncoder, FormatWriter};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use rivven_engine::batch::SinkBatch;
use rivven_engine::connector::{Committed, FlushWhen, Sink};
use rivven_engine::status::PipelineStatus;
use rivven_engine::topic::{sync_dir, write_atomic};
use rivven_engine::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When a file is rolled.
#[derive(Debug, Clone, Copy)]
struct Limits {
    rows: u64,
    bytes: u64,
    age: Duration,
    concurrency: usize,
    open_files: usize,
}

/// Files are kept apart per directory and per topic partition (one partition's rows stay
/// in offset order within a file).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileKey {
    dir: String,
    topic: Arc<str>,
    partition: u32,
}

struct OpenFile {
    name: String,
    schema: SchemaRef,
    encoder: Box<dyn FileEncoder>,
    staging: Box<dyn Staging>,
    rows: u64,
    opened: Instant,
}

/// A finished file waiting for the next flush to become visible.
struct Sealed {
    name: String,
    topic: Arc<str>,
    partition: u32,
    rows: u64,
    opened: Instant,
    staging: Box<dyn Staging>,
}

/// What a flush is about to make visible, written to the state dir before any object of
/// the flush is committed. On start, files of a flush whose offsets were not committed are
/// deleted: their rows are delivered again and land in new files.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Journal {
    files: Vec<JournalFile>,
    /// Consumer offset per topic partition once this flush is committed.
    next: Vec<JournalOffset>,
}

#[derive(Debug, Serialize, Deserialize)]
struct JournalFile {
    name: String,
    topic: String,
    partition: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct JournalOffset {
    topic: String,
    partition: u32,
    offset: u64,
}

/// Writes batches as objects; see the module docs for the guarantees.
pub struct ObjectStorageSink {
    backend: Arc<dyn Backend>,
    writer: Arc<dyn FormatWriter>,
    layout: Layout,
    limits: Limits,
    open: HashMap<FileKey, OpenFile>,
    sealed: Vec<Sealed>,
    /// Consumer offset per topic partition after everything written since the last flush.
    next: BTreeMap<(Arc<str>, u32), u64>,
    /// Names used since the last flush (to suffix a second file with the same first offset).
    used: HashSet<String>,
    roll_now: bool,
    journal: PathBuf,
    status: Arc<PipelineStatus>,
    objects: u64,
    object_rows: u64,
}

impl ObjectStorageSink {
    /// A sink for a resolved config; `state_dir` holds its flush journal.
    pub fn new(
        r: &Resolved,
        backend: Arc<dyn Backend>,
        state_dir: PathBuf,
        status: Arc<PipelineStatus>,
    ) -> Self {
        let c = &r.config;
        let writer = crate::format::writer(&r.format);
        let layout = Layout::new(
            &c.prefix,
            c.partitioning,
            &c.partition_fields,
            c.timestamp_field.as_deref(),
            writer.extension(),
        );
        ObjectStorageSink {
            backend,
            writer,
            layout,
            limits: Limits {
                rows: c.batch_size,
                bytes: c.max_file_bytes,
                age: Duration::from_secs(c.flush_interval_secs),
                concurrency: c.max_concurrent_uploads,
                open_files: c.max_open_files,
            },
            open: HashMap::new(),
            sealed: Vec::new(),
            next: BTreeMap::new(),
            used: HashSet::new(),
            roll_now: false,
            journal: state_dir.join("flush-journal.json"),
            status,
            objects: 0,
            object_rows: 0,
        }
    }

    fn read_journal(&self) -> Result<Option<Journal>> {
        match std::fs::read(&self.journal) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| Error::state(format!("{}: {e}", self.journal.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", self.journal.display()), e)),
        }
    }

    fn write_journal(&self, j: &Journal) -> Result<()> {
        let data = serde_json::to_vec(j).map_err(|e| Error::internal(e.to_string()))?;
        write_atomic(&self.journal, &data)
            .map_err(|e| Error::io(format!("write {}", self.journal.display()), e))
    }

    /// Finish `f`'s encoding and queue it for the next flush.
    async fn seal(&mut self, key: &FileKey, mut f: OpenFile) -> Result<()> {
        let head = f.encoder.take();
        if !head.is_empty() {
            f.staging.append(head).await?;
        }
        let tail = f.encoder.finish()?;
        f.staging.append(tail).await?;
        self.sealed.push(Sealed {
            name: f.name,
            topic: key.topic.clone(),
            partition: key.partition,
            rows: f.rows,
            opened: f.opened,
            staging: f.staging,
        });
        Ok(())
    }

    /// Seal the longest-open file and ask for a flush: keeps at most `max_open_files` files
    /// (and their buffers) open.
    async fn seal_oldest(&mut self) -> Result<()> {
        let oldest = self
            .open
            .iter()
            .min_by_key(|(_, f)| f.opened)
            .map(|(k, _)| k.clone());
        if let Some(key) = oldest {
            if let Some(f) = self.open.remove(&key) {
                self.seal(&key, f).await?;
            }
        }
        self.roll_now = true;
        Ok(())
    }

    /// Start a file in `key.dir` whose first row has `offset`.
    fn start(&mut self, key: &FileKey, offset: u64, schema: SchemaRef) -> Result<OpenFile> {
        let mut seq = 0;
        let name = loop {
            let name = self
                .layout
                .object_name(&key.dir, &key.topic, key.partition, offset, seq);
            if self.used.insert(name.clone()) {
                break name;
            }
            seq += 1;
        };
        Ok(OpenFile {
            staging: self.backend.stage(&name)?,
            encoder: self.writer.open(schema.clone())?,
            name,
            schema,
            rows: 0,
            opened: Instant::now(),
        })
    }

    async fn write_group(&mut self, b: &SinkBatch, g: Group) -> Result<()> {
        let key = FileKey {
            dir: g.dir.clone(),
            topic: b.topic.clone(),
            partition: b.partition,
        };
        let schema = g.batch.schema();
        let total = g.batch.num_rows();
        let mut done = 0;
        while done < total {
            // A new schema starts a new file (one schema per file).
            if let Some(f) = self.open.remove(&key) {
                if f.schema.fields() == schema.fields() {
                    self.open.insert(key.clone(), f);
                } else {
                    self.seal(&key, f).await?;
                    self.roll_now = true;
                }
            }
            let mut f = match self.open.remove(&key) {
                Some(f) => f,
                None => {
                    if self.open.len() >= self.limits.open_files {
                        self.seal_oldest().await?;
                    }
                    self.start(&key, b.first_offset + g.source_row(done), schema.clone())?
                }
            };
            let n = (total - done).min((self.limits.rows - f.rows) as usize);
            let slice: RecordBatch = g.batch.slice(done, n);
            f.encoder.write(&slice)?;
            f.rows += n as u64;
            done += n;
            let out = f.encoder.take();
            if !out.is_empty() {
                f.staging.append(out).await?;
            }
            if f.rows >= self.limits.rows || f.encoder.size() >= self.limits.bytes {
                self.seal(&key, f).await?;
                self.roll_now = true;
            } else {
                self.open.insert(key.clone(), f);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for ObjectStorageSink {
    async fn open(&mut self, committed: &[Committed]) -> Result<Vec<Committed>> {
        self.backend.discard_staged().await?;
        let Some(journal) = self.read_journal()? else {
            return Ok(Vec::new());
        };
        let offset_of = |topic: &str, partition: u32| {
            committed
                .iter()
                .find(|c| c.topic == topic && c.partition == partition)
                .map(|c| c.offset)
        };
        let round_end = |topic: &str, partition: u32| {
            journal
                .next
                .iter()
                .find(|c| c.topic == topic && c.partition == partition)
                .map(|c| c.offset)
        };
        let mut removed = 0;
        for f in &journal.files {
            let (Some(have), Some(end)) = (
                offset_of(&f.topic, f.partition),
                round_end(&f.topic, f.partition),
            ) else {
                // Not assigned to this sink any more: keep the object.
                continue;
            };
            if have < end {
                self.backend.delete(&f.name).await?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(
                objects = removed,
                store = %self.backend.url(),
                "removed objects of a flush whose offsets were not committed; their rows are delivered again"
            );
        }
        match std::fs::remove_file(&self.journal) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("remove {}", self.journal.display()), e)),
        }
        if let Some(dir) = self.journal.parent() {
            sync_dir(dir).map_err(|e| Error::io(format!("sync {}", dir.display()), e))?;
        }
        // The journal discards uncommitted output instead of recording offsets.
        Ok(Vec::new())
    }

    async fn write(&mut self, b: &SinkBatch) -> Result<()> {
        self.next
            .insert((b.topic.clone(), b.partition), b.next_offset());
        if b.batch.num_rows() == 0 {
            return Ok(());
        }
        for g in self.layout.split(b)? {
            self.write_group(b, g).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let open: Vec<(FileKey, OpenFile)> = self.open.drain().collect();
        for (key, f) in open {
            self.seal(&key, f).await?;
        }
        self.roll_now = false;
        self.used.clear();
        let next = std::mem::take(&mut self.next);
        if self.sealed.is_empty() {
            return Ok(());
        }
        let sealed = std::mem::take(&mut self.sealed);
        let journal = Journal {
            files: sealed
                .iter()
                .map(|s| JournalFile {
                    name: s.name.clone(),
                    topic: s.topic.to_string(),
                    partition: s.partition,
                })
                .collect(),
            next: next
                .iter()
                .map(|((topic, partition), offset)| JournalOffset {
                    topic: topic.to_string(),
                    partition: *partition,
                    offset: *offset,
                })
                .collect(),
        };
        self.write_journal(&journal)?;
        let count = sealed.len() as u64;
        let rows: u64 = sealed.iter().map(|s| s.rows).sum();
        let last = sealed.last().map(|s| s.name.clone());
        // Every commit runs to its end before an error is returned: an abandoned request
        // could otherwise still complete after the next attempt has cleaned up its name.
        let results: Vec<Result<()>> = stream::iter(sealed.into_iter().map(|s| s.staging.commit()))
            .buffer_unordered(self.limits.concurrency)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        self.objects += count;
        self.object_rows += rows;
        self.status
            .set_gauge("object_storage_objects_written", &[], self.objects as f64);
        self.status
            .set_gauge("object_storage_rows_written", &[], self.object_rows as f64);
        if let Some(last) = last {
            self.status
                .set_detail("last_object", serde_json::Value::String(last));
        }
        Ok(())
    }

    fn flush_when(&self) -> FlushWhen {
        if self.roll_now {
            return FlushWhen::Now;
        }
        let oldest = self
            .open
            .values()
            .map(|f| f.opened)
            .chain(self.sealed.iter().map(|s| s.opened))
            .min();
        match oldest {
            Some(t) => FlushWhen::At(t + self.limits.age),
            None => FlushWhen::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_storage::config::ObjectStorageConfig;
    use arrow::array::{ArrayRef, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use rivven_engine::status::{PipelineKind, StatusRegistry};

    fn sink(root: &std::path::Path, state: &std::path::Path) -> ObjectStorageSink {
        sink_with(root, state, "batch_size: 3")
    }

    fn sink_with(
        root: &std::path::Path,
        state: &std::path::Path,
        extra: &str,
    ) -> ObjectStorageSink {
        let yaml = format!(
            "{{provider: local, local: {{root: {}}}, format: csv, {extra}}}",
            root.display()
        );
        let cfg: ObjectStorageConfig = serde_yaml::from_str(&yaml).unwrap();
        let r = cfg.resolve("object-storage").unwrap();
        let backend = super::super::store::backend(&r, "t").unwrap();
        let status = StatusRegistry::default().add("t", PipelineKind::Sink, "object-storage");
        ObjectStorageSink::new(&r, backend, state.to_path_buf(), status)
    }

    fn batch(first: u64, n: i64) -> SinkBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let col = Int64Array::from_iter_values(first as i64..first as i64 + n);
        SinkBatch {
            batch: RecordBatch::try_new(schema, vec![Arc::new(col) as ArrayRef]).unwrap(),
            topic: Arc::from("t"),
            partition: 0,
            first_offset: first,
            end_offset: first + n as u64,
            append_time_ms: 0,
            route: None,
        }
    }

    fn names(root: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.join("t"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn committed(offset: u64) -> Vec<Committed> {
        vec![Committed {
            topic: "t".into(),
            partition: 0,
            offset,
        }]
    }

    #[tokio::test]
    async fn rolls_by_rows_and_names_files_by_first_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (root, state) = (dir.path().join("out"), dir.path().join("state"));
        let mut s = sink(&root, &state);
        s.open(&committed(0)).await.unwrap();
        s.write(&batch(0, 2)).await.unwrap();
        assert!(matches!(s.flush_when(), FlushWhen::At(_)));
        s.write(&batch(2, 5)).await.unwrap();
        assert_eq!(s.flush_when(), FlushWhen::Now, "a file reached batch_size");
        s.flush().await.unwrap();
        assert_eq!(s.flush_when(), FlushWhen::Idle);
        assert_eq!(
            names(&root),
            [
                "t+0+00000000000000000000.csv",
                "t+0+00000000000000000003.csv",
                "t+0+00000000000000000006.csv"
            ]
        );
        let last = std::fs::read_to_string(root.join("t/t+0+00000000000000000006.csv")).unwrap();
        assert_eq!(last, "v\n6\n");
    }

    #[tokio::test]
    async fn rolls_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (root, state) = (dir.path().join("out"), dir.path().join("state"));
        let mut s = sink_with(&root, &state, "max_file_bytes: 10");
        s.open(&committed(0)).await.unwrap();
        s.write(&batch(0, 2)).await.unwrap();
        assert!(matches!(s.flush_when(), FlushWhen::At(_)), "6 bytes so far");
        s.write(&batch(2, 2)).await.unwrap();
        assert_eq!(s.flush_when(), FlushWhen::Now, "past 10 bytes");
        s.flush().await.unwrap();
        assert_eq!(names(&root), ["t+0+00000000000000000000.csv"]);
    }

    #[tokio::test]
    async fn caps_open_files() {
        let dir = tempfile::tempdir().unwrap();
        let (root, state) = (dir.path().join("out"), dir.path().join("state"));
        let mut s = sink_with(
            &root,
            &state,
            "partitioning: field, partition_fields: [v], max_open_files: 2",
        );
        s.open(&committed(0)).await.unwrap();
        s.write(&batch(0, 2)).await.unwrap();
        assert_eq!((s.open.len(), s.sealed.len()), (2, 0));
        s.write(&batch(2, 1)).await.unwrap();
        assert_eq!(
            (s.open.len(), s.sealed.len()),
            (2, 1),
            "the oldest was sealed"
        );
        assert_eq!(s.flush_when(), FlushWhen::Now);
        s.flush().await.unwrap();
        assert_eq!(std::fs::read_dir(root.join("t")).unwrap().count(), 3);
    }

    /// A flush whose offsets were never committed is undone on the next start; one whose
    /// offsets were committed is kept.
    #[tokio::test]
    async fn uncommitted_flush_is_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (root, state) = (dir.path().join("out"), dir.path().join("state"));
        let mut s = sink(&root, &state);
        s.open(&committed(0)).await.unwrap();
        s.write(&batch(0, 3)).await.unwrap();
        s.flush().await.unwrap(); // the runtime commits offset 3 after this
        s.write(&batch(3, 2)).await.unwrap();
        s.flush().await.unwrap(); // ... and the process dies before committing 5
        drop(s);
        assert_eq!(names(&root).len(), 2);
        let mut s = sink(&root, &state);
        s.open(&committed(3)).await.unwrap();
        assert_eq!(names(&root), ["t+0+00000000000000000000.csv"]);
        // Re-delivery from offset 3 writes the rows again, once.
        s.write(&batch(3, 2)).await.unwrap();
        s.flush().await.unwrap();
        drop(s);
        let mut s = sink(&root, &state);
        s.open(&committed(5)).await.unwrap();
        assert_eq!(names(&root).len(), 2, "a committed flush is kept");
    }
}
