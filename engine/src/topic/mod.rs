//! The embedded topic log: the default topic store when no `broker` is configured.
//!
//! Layout under `settings.state_dir`:
//! ```text
//! topics/<topic>/topic.json                 {"partitions": N}
//! topics/<topic>/<partition>/<base>.log     segment files (see `segment`)
//! groups/<group>.json                       committed consumer offsets
//! ```
//! Guarantees:
//! - An append is acknowledged (its future resolves) only after the frame is written and,
//!   with `fsync: always`, fsynced. After kill -9 every acknowledged append is read back.
//! - Each frame is CRC-checked; recovery cuts the active segment at the first invalid frame,
//!   so a torn append is never read back (it was never acknowledged).
//! - A source's resume position is stored *in the frame* that carries its batch, so the
//!   batch and its position become durable together: after a crash a source resumes exactly
//!   after its last durable batch, adding no duplicates to the topic.
//! - Offsets are per partition, one per row, dense and increasing from 0. Retention removes
//!   whole sealed segments (never the active one) by size and by age.

mod constant;
mod fsutil;
mod groups;
mod segment;

pub use fsutil::{sync_dir, write_atomic};
pub use groups::GroupOffsets;

use crate::batch::now_ms;
use crate::batch::{Position, SinkBatch};
use crate::config::{FsyncPolicy, TopicSettings};
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use segment::{FrameEntry, Segment};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

/// A source's position as recorded with one of its batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceMark {
    /// The source pipeline's name.
    pub source: String,
    /// The source's batch sequence number; increases with every append, across restarts.
    pub seq: u64,
    /// Resume position after this batch.
    pub position: Position,
}

/// One batch for [`EmbeddedLog::append_all`].
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub batch: &'a RecordBatch,
    /// The source position this batch carries, if any.
    pub mark: Option<&'a SourceMark>,
}

/// One partition's on-disk state.
#[derive(Debug)]
struct Partition {
    dir: PathBuf,
    segments: Vec<Segment>,
    next_offset: u64,
    dirty: bool,
    marks: HashMap<String, SourceMark>,
    /// Set when a failed run could not be cut off again: appending after it could leave
    /// stale frames reachable, so the partition refuses appends until it is reopened.
    broken: Option<String>,
}

fn lock_err<T>(_: T) -> Error {
    Error::internal("topic log lock poisoned")
}

impl Partition {
    fn open(dir: &Path) -> Result<(Self, u64)> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let mut bases: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("list {}", dir.display()), e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        bases.sort_unstable();
        let mut segments = Vec::new();
        let mut marks = HashMap::new();
        let mut truncated = 0;
        let last = bases.len().saturating_sub(1);
        for (i, base) in bases.iter().enumerate() {
            let path = segment::segment_path(dir, *base);
            let scan = segment::scan_segment(&path, *base, i == last)
                .map_err(|e| Error::io(format!("open segment {}", path.display()), e))?;
            for meta in &scan.metas {
                if let Ok(m) = serde_json::from_slice::<SourceMark>(meta) {
                    let newer = marks
                        .get(&m.source)
                        .is_none_or(|old: &SourceMark| old.seq < m.seq);
                    if newer {
                        marks.insert(m.source.clone(), m);
                    }
                }
            }
            truncated += scan.truncated;
            segments.push(scan.segment);
        }
        if segments.is_empty() {
            segments
                .push(segment::create_segment(dir, 0).map_err(|e| Error::io("create segment", e))?);
        }
        let next_offset = segments
            .last()
            .map(|s| s.frames.last().map_or(s.base, FrameEntry::end_offset))
            .unwrap_or(0);
        Ok((
            Self {
                dir: dir.to_owned(),
                segments,
                next_offset,
                dirty: false,
                marks,
                broken: None,
            },
            truncated,
        ))
    }

    fn start_offset(&self) -> u64 {
        self.segments.first().map_or(self.next_offset, |s| s.base)
    }

    fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Write a run of frames in order and make them durable together: under
    /// `fsync: always`, one fsync for the run (group commit). Readers, who take the
    /// partition's lock, never see a frame of the run before that fsync. On any error the
    /// whole run is cut off again, so the next append starts at a frame boundary. A run is
    /// written into one segment: the segment may roll before it, never inside it (callers
    /// keep runs near `segment_bytes`). Returns each frame's base offset.
    fn append(
        &mut self,
        frames: Vec<(segment::PreparedFrame, u32, i64)>,
        settings: &TopicSettings,
    ) -> Result<Vec<u64>> {
        use std::os::unix::fs::FileExt;
        if let Some(why) = &self.broken {
            return Err(Error::internal(format!(
                "partition {} refuses appends until reopened: {why}",
                self.dir.display()
            ))
            .retryable(false));
        }
        if let Some(active) = self.segments.last() {
            if active.size >= settings.segment_bytes && !active.frames.is_empty() {
                self.roll(settings)?;
            }
        }
        let seg = self
            .segments
            .last_mut()
            .ok_or_else(|| Error::internal("partition without segment"))?;
        let (size0, frames0, offset0) = (seg.size, seg.frames.len(), self.next_offset);
        let mut bases = Vec::with_capacity(frames.len());
        let mut written = Ok(());
        for (prepared, count, ts) in frames {
            let base = self.next_offset;
            let frame = segment::seal_frame(prepared, base);
            if let Err(e) = seg.file.write_all_at(&frame, seg.size) {
                written = Err(Error::io(format!("append to {}", seg.path.display()), e));
                break;
            }
            seg.frames.push(FrameEntry {
                offset: base,
                count,
                pos: seg.size,
                len: frame.len() as u32,
                append_time_ms: ts,
            });
            seg.size += frame.len() as u64;
            self.next_offset = base + u64::from(count);
            segment::recycle(frame);
            bases.push(base);
        }
        if written.is_ok() {
            if settings.fsync == FsyncPolicy::Always {
                written = seg
                    .file
                    .sync_data()
                    .map_err(|e| Error::io(format!("fsync {}", seg.path.display()), e));
            } else {
                self.dirty = true;
            }
        }
        if let Err(e) = written {
            seg.frames.truncate(frames0);
            seg.size = size0;
            self.next_offset = offset0;
            if let Err(cut) = seg.file.set_len(size0) {
                self.broken = Some(format!("cutting off a failed append: {cut}"));
            }
            return Err(e);
        }
        Ok(bases)
    }

    fn roll(&mut self, settings: &TopicSettings) -> Result<()> {
        if let Some(active) = self.segments.last() {
            active
                .file
                .sync_all()
                .map_err(|e| Error::io("fsync sealed segment", e))?;
        }
        let seg = segment::create_segment(&self.dir, self.next_offset)
            .map_err(|e| Error::io("create segment", e))?;
        self.segments.push(seg);
        self.dirty = false;
        self.enforce_retention(settings, now_ms())
    }

    fn enforce_retention(&mut self, settings: &TopicSettings, now: i64) -> Result<()> {
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let newest_ts = oldest.frames.last().map_or(i64::MIN, |f| f.append_time_ms);
            let too_old = settings
                .retention_ms
                .is_some_and(|r| newest_ts < now - r as i64);
            let too_big = settings.retention_bytes.is_some_and(|r| self.size() > r);
            if !(too_old || too_big) {
                break;
            }
            let seg = self.segments.remove(0);
            std::fs::remove_file(&seg.path)
                .map_err(|e| Error::io(format!("delete {}", seg.path.display()), e))?;
            tracing::debug!(segment = %seg.path.display(), "retention deleted segment");
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if self.dirty {
            if let Some(seg) = self.segments.last() {
                seg.file.sync_data().map_err(|e| Error::io("fsync", e))?;
            }
            self.dirty = false;
        }
        Ok(())
    }

    /// Frames holding offsets `>= from`, up to about `max_bytes`, with their files.
    fn frames_from(&self, from: u64, max_bytes: usize) -> Vec<(Arc<std::fs::File>, FrameEntry)> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let first_seg = self
            .segments
            .partition_point(|s| s.base <= from)
            .saturating_sub(1);
        for seg in &self.segments[first_seg..] {
            let start = seg.frames.partition_point(|f| f.end_offset() <= from);
            for f in &seg.frames[start..] {
                if !out.is_empty() && bytes + f.len as usize > max_bytes {
                    return out;
                }
                bytes += f.len as usize;
                out.push((seg.file.clone(), *f));
            }
        }
        out
    }
}

/// One topic's partitions.
#[derive(Debug)]
struct Topic {
    partitions: Vec<Mutex<Partition>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicMeta {
    partitions: u32,
}

/// The embedded topic log. Cheap to clone; all clones share one state.
#[derive(Debug, Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    settings: TopicSettings,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    groups: GroupOffsets,
    /// Bumped after every append; readers wait on it.
    appended: watch::Sender<u64>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("blocking task failed: {e}")))?
}

impl EmbeddedLog {
    /// Open (or create) the log under `state_dir`, recovering every existing topic.
    pub fn open(state_dir: &Path, settings: TopicSettings) -> Result<Self> {
        let dir = state_dir.join("topics");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let groups = GroupOffsets::open(&state_dir.join("groups"))?;
        let log = Self {
            inner: Arc::new(Inner {
                dir: dir.clone(),
                settings,
                topics: RwLock::new(HashMap::new()),
                groups,
                appended: watch::channel(0).0,
            }),
        };
        let entries =
            std::fs::read_dir(&dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().join("topic.json").exists() {
                log.load_topic(&name)?;
            }
        }
        Ok(log)
    }

    /// The topic settings in force.
    pub fn settings(&self) -> &TopicSettings {
        &self.inner.settings
    }

    fn load_topic(&self, name: &str) -> Result<Arc<Topic>> {
        let tdir = self.inner.dir.join(name);
        let meta_path = tdir.join("topic.json");
        let meta: TopicMeta = serde_json::from_slice(
            &std::fs::read(&meta_path)
                .map_err(|e| Error::io(format!("read {}", meta_path.display()), e))?,
        )
        .map_err(|e| Error::state(format!("{}: {e}", meta_path.display())))?;
        let mut partitions = Vec::new();
        for p in 0..meta.partitions {
            let (part, truncated) = Partition::open(&tdir.join(p.to_string()))?;
            if truncated > 0 {
                tracing::warn!(
                    topic = name,
                    partition = p,
                    bytes = truncated,
                    "cut a torn, unacknowledged tail from the log"
                );
            }
            partitions.push(Mutex::new(part));
        }
        let topic = Arc::new(Topic { partitions });
        self.inner
            .topics
            .write()
            .map_err(lock_err)?
            .insert(name.to_owned(), topic.clone());
        Ok(topic)
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.inner
            .topics
            .read()
            .map_err(lock_err)?
            .get(name)
            .cloned()
            .ok_or_else(|| {
                Error::config(format!(
                    "topic `{name}` does not exist (settings.topic.auto_create is false)"
                ))
            })
    }

    /// Whether a topic exists.
    pub fn has_topic(&self, name: &str) -> bool {
        self.inner.topics.read().is_ok_and(|t| t.contains_key(name))
    }

    /// Ensure `name` exists, creating it with the default partition count when
    /// `settings.topic.auto_create` allows.
    pub fn ensure_topic(&self, name: &str) -> Result<()> {
        if self.has_topic(name) {
            return Ok(());
        }
        if !self.inner.settings.auto_create {
            return Err(Error::config(format!(
                "topic `{name}` does not exist and settings.topic.auto_create is false"
            )));
        }
        self.create_topic(name, self.inner.settings.default_partitions)
    }

    /// Create a topic with `partitions` partitions (no-op if it exists).
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        crate::config::valid_name(name)
            .map_err(|e| Error::config(format!("topic name `{name}` {e}")))?;
        let mut topics = self.inner.topics.write().map_err(lock_err)?;
        if topics.contains_key(name) {
            return Ok(());
        }
        let tdir = self.inner.dir.join(name);
        let mut parts = Vec::new();
        for p in 0..partitions {
            parts.push(Mutex::new(Partition::open(&tdir.join(p.to_string()))?.0));
        }
        let meta = serde_json::to_vec(&TopicMeta { partitions })
            .map_err(|e| Error::internal(e.to_string()))?;
        write_atomic(&tdir.join("topic.json"), &meta)
            .map_err(|e| Error::io("write topic.json", e))?;
        topics.insert(name.to_owned(), Arc::new(Topic { partitions: parts }));
        tracing::info!(topic = name, partitions, "created topic");
        Ok(())
    }

    /// Number of partitions of a topic.
    pub fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.topic(topic)?.partitions.len() as u32)
    }

    /// Names of all topics.
    pub fn topic_names(&self) -> Vec<String> {
        self.inner
            .topics
            .read()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Append a batch to a partition, with the source position it carries. Resolves once
    /// the frame is durable under the fsync policy; returns the batch's first offset.
    pub async fn append(
        &self,
        topic: &str,
        partition: u32,
        batch: &RecordBatch,
        mark: Option<&SourceMark>,
    ) -> Result<u64> {
        let bases = self
            .append_all(&[Append {
                topic,
                partition,
                batch,
                mark,
            }])
            .await?;
        bases
            .first()
            .copied()
            .ok_or_else(|| Error::internal("append wrote no frame"))
    }

    /// Append batches in order, each with the source position it carries, and make them
    /// durable together: consecutive batches for one partition are written as one run with
    /// one fsync under `fsync: always` (group commit), and no reader sees them before.
    /// Resolves once every frame is durable under the fsync policy; returns each batch's
    /// first offset. On error, the run that failed is not in the log (earlier runs are).
    pub async fn append_all(&self, items: &[Append<'_>]) -> Result<Vec<u64>> {
        struct Run {
            topic: Arc<Topic>,
            partition: u32,
            frames: Vec<(segment::PreparedFrame, u32, i64)>,
            marks: Vec<SourceMark>,
        }
        let mut runs: Vec<Run> = Vec::new();
        let mut previous: Option<(&str, u32)> = None;
        // A run ends at about a segment's size, so that segments roll near `segment_bytes`.
        let mut run_bytes = 0u64;
        for item in items {
            if item.batch.num_rows() == 0 {
                return Err(Error::internal("empty batches are not appended"));
            }
            let count = u32::try_from(item.batch.num_rows())
                .map_err(|_| Error::internal("batch too large"))?;
            let meta = match item.mark {
                Some(m) => serde_json::to_vec(m).map_err(|e| Error::internal(e.to_string()))?,
                None => Vec::new(),
            };
            let ts = now_ms();
            let prepared = segment::prepare_frame(item.batch, count, ts, &meta)?;
            if previous != Some((item.topic, item.partition))
                || run_bytes >= self.inner.settings.segment_bytes
            {
                run_bytes = 0;
                runs.push(Run {
                    topic: self.topic(item.topic)?,
                    partition: item.partition,
                    frames: Vec::new(),
                    marks: Vec::new(),
                });
                previous = Some((item.topic, item.partition));
            }
            let run = runs.last_mut().ok_or_else(|| Error::internal("no run"))?;
            run_bytes += prepared.len() as u64;
            run.frames.push((prepared, count, ts));
            run.marks.extend(item.mark.cloned());
        }
        let settings = self.inner.settings.clone();
        let bases = blocking(move || {
            let mut bases = Vec::new();
            for run in runs {
                let p = run
                    .topic
                    .partitions
                    .get(run.partition as usize)
                    .ok_or_else(|| {
                        Error::internal(format!("partition {} out of range", run.partition))
                    })?;
                let mut p = p.lock().map_err(lock_err)?;
                bases.extend(p.append(run.frames, &settings)?);
                for m in run.marks {
                    p.marks.insert(m.source.clone(), m);
                }
            }
            Ok(bases)
        })
        .await;
        // Readers are woken even after an error: the runs before it are in the log.
        self.inner.appended.send_modify(|n| *n = n.wrapping_add(1));
        bases
    }

    /// The newest position recorded in any topic for source `source`.
    pub fn source_mark(&self, source: &str) -> Option<SourceMark> {
        let topics = self.inner.topics.read().ok()?;
        let mut best: Option<SourceMark> = None;
        for t in topics.values() {
            for p in &t.partitions {
                let Ok(p) = p.lock() else { continue };
                if let Some(m) = p.marks.get(source) {
                    if best.as_ref().is_none_or(|b| b.seq < m.seq) {
                        best = Some(m.clone());
                    }
                }
            }
        }
        best
    }

    fn with_partition<T>(
        &self,
        topic: &str,
        partition: u32,
        f: impl FnOnce(&Partition) -> T,
    ) -> Result<T> {
        let t = self.topic(topic)?;
        let p = t.partitions.get(partition as usize).ok_or_else(|| {
            Error::internal(format!("partition {partition} of `{topic}` out of range"))
        })?;
        let p = p.lock().map_err(lock_err)?;
        Ok(f(&p))
    }

    /// The oldest retained offset of a partition.
    pub fn start_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        self.with_partition(topic, partition, Partition::start_offset)
    }

    /// The offset the next append will get (one past the last record).
    pub fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        self.with_partition(topic, partition, |p| p.next_offset)
    }

    /// The first offset appended at or after `ts_ms` (the end offset if none).
    pub fn offset_for_timestamp(&self, topic: &str, partition: u32, ts_ms: i64) -> Result<u64> {
        self.with_partition(topic, partition, |p| {
            p.segments
                .iter()
                .flat_map(|s| s.frames.iter())
                .find(|f| f.append_time_ms >= ts_ms)
                .map_or(p.next_offset, |f| f.offset)
        })
    }

    /// Bytes stored in the frames holding offsets `from..to` of a partition: what a
    /// [`read`](Self::read) of that range reads from the segment files (it reads whole
    /// frames).
    pub fn stored_bytes(&self, topic: &str, partition: u32, from: u64, to: u64) -> Result<u64> {
        self.with_partition(topic, partition, |p| {
            // Segments and their frames are in offset order: find the first frame that
            // ends after `from`, then add up to `to`.
            let first_seg = p
                .segments
                .partition_point(|s| s.base <= from)
                .saturating_sub(1);
            let mut bytes = 0;
            for seg in &p.segments[first_seg..] {
                let start = seg.frames.partition_point(|f| f.end_offset() <= from);
                for f in &seg.frames[start..] {
                    if f.offset >= to {
                        return bytes;
                    }
                    bytes += u64::from(f.len);
                }
            }
            bytes
        })
    }

    /// A receiver that changes whenever anything is appended to any topic.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.appended.subscribe()
    }

    /// Read batches holding offsets `>= from`, about `max_bytes` worth (at least one frame
    /// if any is available), counted both as stored and as decoded (a frame with constant
    /// columns decodes to more than it stores). The first batch is sliced so that it starts
    /// exactly at `from`. If `from` is below the retained start (retention deleted it),
    /// reading starts at the retained start and a warning is logged.
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<SinkBatch>> {
        let start = self.start_offset(topic, partition)?;
        let from = if from < start {
            tracing::warn!(
                topic,
                partition,
                from,
                start,
                "offset below retained start: records were deleted by retention"
            );
            start
        } else {
            from
        };
        let frames = self.with_partition(topic, partition, |p| p.frames_from(from, max_bytes))?;
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let topic_name: Arc<str> = Arc::from(topic);
        blocking(move || {
            let mut out = Vec::with_capacity(frames.len());
            let mut decoded_bytes = 0usize;
            for (file, entry) in frames {
                if !out.is_empty() && decoded_bytes >= max_bytes {
                    break;
                }
                let body = segment::read_frame(&file, &entry).map_err(|e| {
                    Error::io(
                        format!("read {topic_name}/{partition} at offset {}", entry.offset),
                        e,
                    )
                    .retryable(false)
                })?;
                let decoded = body
                    .decode()
                    .map(|(fb, batch)| ((fb.offset, fb.append_time_ms), batch));
                // The batch owns copies of its buffers: the frame buffer can be reused.
                body.recycle();
                let ((offset, append_time_ms), mut batch) = decoded.map_err(|e| {
                    Error::data(format!(
                        "decode {topic_name}/{partition} at offset {}: {e}",
                        entry.offset
                    ))
                })?;
                decoded_bytes += batch.get_array_memory_size();
                let fb = (offset, append_time_ms);
                let mut first = fb.0;
                if from > first {
                    let skip = (from - first) as usize;
                    batch = batch.slice(skip, batch.num_rows() - skip);
                    first = from;
                }
                out.push(SinkBatch {
                    end_offset: first + batch.num_rows() as u64,
                    batch,
                    topic: topic_name.clone(),
                    partition,
                    first_offset: first,
                    append_time_ms: fb.1,
                    route: None,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Run `f` on every partition of every topic.
    fn for_each_partition(&self, mut f: impl FnMut(&mut Partition) -> Result<()>) -> Result<()> {
        let topics: Vec<Arc<Topic>> = self
            .inner
            .topics
            .read()
            .map_err(lock_err)?
            .values()
            .cloned()
            .collect();
        for t in topics {
            for p in &t.partitions {
                f(&mut *p.lock().map_err(lock_err)?)?;
            }
        }
        Ok(())
    }

    /// fsync every partition with unsynced appends (`fsync: interval | never` at shutdown).
    pub fn sync_all(&self) -> Result<()> {
        self.for_each_partition(Partition::sync)
    }

    /// Apply retention to every partition now (also applied whenever a segment is sealed).
    pub fn enforce_retention(&self) -> Result<()> {
        let now = now_ms();
        self.for_each_partition(|p| p.enforce_retention(&self.inner.settings, now))
    }

    /// Committed consumer offsets.
    pub fn groups(&self) -> &GroupOffsets {
        &self.inner.groups
    }
}

#[cfg(test)]
mod tests;
