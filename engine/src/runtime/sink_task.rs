//! One sink pipeline: topic reader → bounded queue → sink → flush → commit offsets.

use super::queue::{bounded, QueueSender};
use super::task::{supervise, Shared, TaskEnd, Transforms};
use crate::batch::{batch_bytes, SinkBatch};
use crate::config::StartOffset;
use crate::connector::{Committed, FlushWhen};
use crate::error::{Error, Result};
use crate::registry::PipelineContext;
use crate::status::{PipelineState, PipelineStatus};
use crate::tap::TapPoint;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Largest read from one partition at a time.
const READ_BYTES: usize = 8 << 20;

pub(super) struct SinkPipeline {
    /// The resolved pipeline.
    pub spec: crate::pipelines::SinkPipeline,
    pub transforms: Transforms,
    pub status: Arc<PipelineStatus>,
    /// Where copies of the batches the sink receives are published (see [`crate::tap`]).
    pub tap_sink: TapPoint,
    /// Where copies of the rows sent to the dead-letter topic are published.
    pub tap_dead_letter: TapPoint,
}

type Offsets = BTreeMap<(String, u32), u64>;

/// Resolve and pin the group's starting offsets: committed ones are kept; partitions without
/// one start per `start_offset`, and that start is committed at once, so that a crash before
/// the first batch does not move a `latest` start past records appended meanwhile.
pub(super) fn resolve_start(p: &SinkPipeline, shared: &Shared) -> Result<()> {
    let groups = shared.log.groups();
    let mut fresh = Vec::new();
    for topic in &p.spec.topics {
        shared.log.ensure_topic(topic)?;
        for part in 0..shared.log.partitions(topic)? {
            if groups
                .committed(&p.spec.consumer_group, topic, part)
                .is_some()
            {
                continue;
            }
            let offset = match p.spec.start_offset {
                StartOffset::Earliest => shared.log.start_offset(topic, part)?,
                StartOffset::Latest => shared.log.end_offset(topic, part)?,
                StartOffset::Timestamp(ts) => shared.log.offset_for_timestamp(topic, part, ts)?,
            };
            fresh.push((topic.clone(), part, offset));
        }
    }
    groups.commit(&p.spec.consumer_group, fresh)
}

fn committed(p: &SinkPipeline, shared: &Shared) -> Result<Offsets> {
    let mut out = Offsets::new();
    for topic in &p.spec.topics {
        for part in 0..shared.log.partitions(topic)? {
            let off = shared
                .log
                .groups()
                .committed(&p.spec.consumer_group, topic, part)
                .ok_or_else(|| {
                    Error::state(format!(
                        "group `{}` has no offset for {topic}/{part}",
                        p.spec.consumer_group
                    ))
                })?;
            out.insert((topic.clone(), part), off);
        }
    }
    Ok(out)
}

/// Move `start` to the offsets a sink's own commits cover where they are ahead (see
/// [`crate::connector::Sink::open`]), and commit those for the group at once, so a restart
/// before the next flush resumes there too.
fn resume_after_own_commits(
    p: &SinkPipeline,
    shared: &Shared,
    start: &mut Offsets,
    own: &[Committed],
) -> Result<()> {
    let mut ahead = Vec::new();
    for c in own {
        let key = (c.topic.clone(), c.partition);
        let Some(&from) = start.get(&key) else {
            continue; // not assigned to this sink any more
        };
        if c.offset <= from {
            continue;
        }
        let end = shared.log.end_offset(&c.topic, c.partition)?;
        if c.offset > end {
            return Err(Error::state(format!(
                "sink `{}` has committed rows of {}/{} up to offset {}, but the topic ends at \
                 {end}: the topic log is not the one this sink was written from",
                p.spec.name, c.topic, c.partition, c.offset
            )));
        }
        tracing::info!(
            sink = %p.spec.name,
            topic = %c.topic,
            partition = c.partition,
            from,
            to = c.offset,
            "the sink's own commit is ahead of the group's offset; resuming after it"
        );
        start.insert(key, c.offset);
        ahead.push((c.topic.clone(), c.partition, c.offset));
    }
    if !ahead.is_empty() {
        shared.log.groups().commit(&p.spec.consumer_group, ahead)?;
    }
    Ok(())
}

fn lag(offsets: &Offsets, shared: &Shared) -> u64 {
    offsets
        .iter()
        .map(|((t, p), off)| {
            shared
                .log
                .end_offset(t, *p)
                .unwrap_or(*off)
                .saturating_sub(*off)
        })
        .sum()
}

pub(super) async fn run(
    p: SinkPipeline,
    shared: Arc<Shared>,
    sources_done: watch::Receiver<bool>,
) -> TaskEnd {
    supervise(&p.status, &shared, || async {
        let (r, progressed) = attempt(&p, &shared, sources_done.clone()).await;
        let end = r.map(|caught_up| {
            if caught_up {
                TaskEnd::Finished
            } else {
                TaskEnd::Stopped
            }
        });
        (end, progressed)
    })
    .await
}

/// One attempt. `Ok(true)`: finished (caught up, sources done); `Ok(false)`: stopped.
async fn attempt(
    p: &SinkPipeline,
    shared: &Arc<Shared>,
    sources_done: watch::Receiver<bool>,
) -> (Result<bool>, bool) {
    let mut start = match committed(p, shared) {
        Ok(o) => o,
        Err(e) => return (Err(e), false),
    };
    let ctx = PipelineContext {
        name: p.spec.name.clone(),
        status: p.status.clone(),
        state_dir: shared.state_dir.join("sinks").join(&p.spec.name),
        dead_letter_topic: None,
    };
    let mut sink = match p.spec.connector.create(&ctx) {
        Ok(s) => s,
        Err(e) => return (Err(e), false),
    };
    let committed: Vec<Committed> = start
        .iter()
        .map(|((topic, partition), offset)| Committed {
            topic: topic.clone(),
            partition: *partition,
            offset: *offset,
        })
        .collect();
    let own = match sink.open(&committed).await {
        Ok(own) => own,
        Err(e) => return (Err(e), false),
    };
    if let Err(e) = resume_after_own_commits(p, shared, &mut start, &own) {
        return (Err(e), false);
    }
    let mut transforms = match p.transforms.create() {
        Ok(t) => t,
        Err(e) => return (Err(e), false),
    };
    p.status.set_lag(lag(&start, shared));
    p.status.set_state(PipelineState::Running);
    let q = &shared.settings.queue;
    let (tx, mut rx) = bounded::<SinkBatch>(q.max_rows, q.max_bytes);
    let stop_reader = shared.cancel.child_token();
    let reader = tokio::spawn(reader(
        start.clone(),
        tx,
        shared.clone(),
        stop_reader.clone(),
        sources_done,
        (p.status.clone(), p.spec.consumer_group.clone()),
    ));

    let commit_every = Duration::from_millis(shared.settings.commit_interval_ms);
    let mut done = start;
    let mut pending = false;
    let mut last_flush = Instant::now();
    let mut progressed = false;
    // Batches already taken from the topic are always written and flushed, even on shutdown:
    // the loop ends only when the reader has stopped and the queue is empty.
    let result: Result<()> = loop {
        let deadline = match sink.flush_when() {
            FlushWhen::Idle => last_flush
                .checked_add(commit_every)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            FlushWhen::Now => Instant::now(),
            FlushWhen::At(t) => t,
        };
        let item = tokio::select! {
            item = rx.recv() => Some(item),
            _ = tokio::time::sleep_until(deadline.into()), if pending => None,
        };
        if let Some(item) = item {
            let Some(b) = item else { break Ok(()) };
            let next = b.next_offset();
            let key = (b.topic.to_string(), b.partition);
            if let Err(e) = write(sink.as_mut(), &mut transforms, b, p, shared).await {
                break Err(e);
            }
            done.insert(key, next);
            pending = true;
            let due = match sink.flush_when() {
                FlushWhen::Idle => rx.is_empty() || last_flush.elapsed() >= commit_every,
                FlushWhen::Now => true,
                FlushWhen::At(t) => Instant::now() >= t,
            };
            if !due {
                continue;
            }
        }
        if let Err(e) = make_durable(sink.as_mut(), p, &done, shared).await {
            break Err(e);
        }
        // Progress is what became durable: an attempt that writes but never flushes does
        // not reset the restart budget.
        progressed = true;
        pending = false;
        last_flush = Instant::now();
    };
    stop_reader.cancel();
    let read = match reader.await {
        Ok(r) => r,
        Err(e) => Err(Error::internal(format!("topic reader panicked: {e}"))),
    };
    if let Err(e) = result {
        return (Err(e), progressed);
    }
    if pending {
        if let Err(e) = make_durable(sink.as_mut(), p, &done, shared).await {
            return (Err(e), progressed);
        }
        progressed = true;
    }
    match read {
        Ok(finished) => (Ok(finished), progressed),
        Err(e) => (Err(e), progressed),
    }
}

/// Transform one topic batch and hand the pieces to the sink. Rows a filter dropped are
/// simply not written; the caller still advances the offsets past them. Rows a transform
/// failed on, and rows the sink refused, are appended to the dead-letter topic (durably,
/// before the offsets can move past them).
async fn write(
    sink: &mut dyn crate::connector::Sink,
    chain: &mut Option<Box<dyn crate::connector::Transform>>,
    b: SinkBatch,
    p: &SinkPipeline,
    shared: &Shared,
) -> Result<()> {
    let Some(chain) = chain.as_deref_mut() else {
        return write_piece(sink, &b, p, shared).await;
    };
    for r in chain.apply(b.batch.clone(), &b.topic)? {
        if r.batch.num_rows() == 0 {
            continue;
        }
        if r.dead_letter {
            let topic = r
                .topic
                .as_deref()
                .ok_or_else(|| Error::internal("dead-letter rows without a topic"))?;
            p.tap_dead_letter.publish(&r.batch);
            append_dead_letters(shared, topic, b.partition, &r.batch).await?;
            continue;
        }
        let piece = SinkBatch {
            batch: r.batch,
            route: r.topic,
            ..b.clone()
        };
        write_piece(sink, &piece, p, shared).await?;
    }
    Ok(())
}

/// Append dead-letter rows read from `partition` to `topic` (created when missing), on the
/// partition of the same number modulo the topic's partitions, durably.
async fn append_dead_letters(
    shared: &Shared,
    topic: &str,
    partition: u32,
    rows: &arrow::array::RecordBatch,
) -> Result<()> {
    shared.log.ensure_topic(topic)?;
    let partition = partition % shared.log.partitions(topic)?.max(1);
    shared.log.append(topic, partition, rows, None).await?;
    Ok(())
}

/// Hand one batch to the sink; rows it refuses go to the dead-letter topic, or fail the
/// batch with the sink's reason when there is none.
async fn write_piece(
    sink: &mut dyn crate::connector::Sink,
    piece: &SinkBatch,
    p: &SinkPipeline,
    shared: &Shared,
) -> Result<()> {
    p.tap_sink.publish(&piece.batch);
    sink.write(piece).await?;
    let rejected = sink.take_rejected();
    let refused: usize = rejected.iter().map(|r| r.rows.num_rows()).sum();
    // Bytes are counted as received; rows as written.
    p.status.add(
        piece.batch.num_rows().saturating_sub(refused) as u64,
        batch_bytes(&piece.batch) as u64,
    );
    for r in rejected {
        let stage = format!("sink {} ({})", p.spec.name, p.spec.connector_name);
        let Some(topic) = p.spec.dead_letter_topic.as_deref() else {
            return Err(Error::data(format!("{stage}: {}", r.reason)).retryable(false));
        };
        let rows = crate::dead_letter::rows(&r.rows, &r.reason, &stage, &piece.topic)?;
        p.tap_dead_letter.publish(&rows);
        append_dead_letters(shared, topic, piece.partition, &rows).await?;
        tracing::warn!(sink = %p.spec.name, rows = rows.num_rows(), topic, reason = %r.reason,
                       "rows refused by the sink went to the dead-letter topic");
    }
    Ok(())
}

/// Flush the sink, then commit `done` for the group and refresh the lag: offsets advance
/// only after the sink reports everything written so far durable.
async fn make_durable(
    sink: &mut dyn crate::connector::Sink,
    p: &SinkPipeline,
    done: &Offsets,
    shared: &Shared,
) -> Result<()> {
    let started = Instant::now();
    sink.flush().await?;
    p.status.observe_flush(started.elapsed());
    let offsets = done.iter().map(|((t, part), o)| (t.clone(), *part, *o));
    shared
        .log
        .groups()
        .commit(&p.spec.consumer_group, offsets)?;
    p.status.set_lag(lag(done, shared));
    Ok(())
}

/// Reads assigned partitions from `offsets` on and queues the batches. Returns `Ok(true)`
/// when every source is done and every partition has been read to its end, `Ok(false)` when
/// stopped.
async fn reader(
    mut offsets: Offsets,
    tx: QueueSender<SinkBatch>,
    shared: Arc<Shared>,
    stop: tokio_util::sync::CancellationToken,
    mut sources_done: watch::Receiver<bool>,
    (status, group): (Arc<crate::status::PipelineStatus>, String),
) -> Result<bool> {
    let start = offsets.clone();
    let mut appended = shared.log.subscribe();
    loop {
        // Observe the done flag *before* reading, so "done and nothing left" is reliable.
        let done = *sources_done.borrow_and_update();
        appended.borrow_and_update();
        let mut got_any = false;
        let keys: Vec<(String, u32)> = offsets.keys().cloned().collect();
        for (topic, part) in keys {
            if stop.is_cancelled() {
                return Ok(false);
            }
            let from = offsets[&(topic.clone(), part)];
            let batches = shared.log.read(&topic, part, from, READ_BYTES).await?;
            for b in batches {
                got_any = true;
                offsets.insert((topic.clone(), part), b.next_offset());
                let (rows, bytes) = (b.batch.num_rows(), batch_bytes(&b.batch));
                tokio::select! {
                    r = tx.send(b, rows, bytes) => if r.is_err() { return Ok(false) },
                    _ = stop.cancelled() => return Ok(false),
                }
            }
        }
        if got_any {
            // New records: the lag grew (it shrinks when a flush commits).
            let durable: Offsets = start
                .iter()
                .map(|((t, part), from)| {
                    let committed = shared.log.groups().committed(&group, t, *part);
                    ((t.clone(), *part), committed.unwrap_or(*from).max(*from))
                })
                .collect();
            status.set_lag(lag(&durable, &shared));
            continue;
        }
        if done {
            return Ok(true);
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(false),
            _ = appended.changed() => {}
            _ = sources_done.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
