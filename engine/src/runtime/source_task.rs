//! One source pipeline: poll → micro-batch → bounded queue → topic writer → acknowledge.

use super::batcher::{Batcher, Next};
use super::queue::{bounded, QueueReceiver};
use super::task::{supervise, Shared, TaskEnd, Transforms};
use crate::batch::{batch_bytes, Position, SourceBatch};
use crate::connector::PartitionChoice;
use crate::error::{Error, Result};
use crate::registry::PipelineContext;
use crate::status::{PipelineState, PipelineStatus};
use crate::tap::TapPoint;
use crate::topic::{write_atomic, Append, SourceMark};
use arrow::array::RecordBatch;
use std::sync::Arc;
use tokio::sync::mpsc;

pub(super) struct SourcePipeline {
    /// The resolved pipeline.
    pub spec: crate::pipelines::SourcePipeline,
    pub transforms: Transforms,
    pub status: Arc<PipelineStatus>,
    pub taps: SourceTaps,
}

/// Where a source task publishes copies of its batches (see [`crate::tap`]).
pub(super) struct SourceTaps {
    pub source: TapPoint,
    pub transformed: TapPoint,
    pub dead_letter: TapPoint,
}

/// How one attempt ended without error.
enum Attempt {
    Exhausted,
    Cancelled,
    /// The health monitor asked for a restart.
    Restart,
}

/// The source's newest durable mark: from the topic log, or from the state file when the
/// log has none (a position-only advance, or retention removed the frames).
fn recover_mark(shared: &Shared, name: &str) -> Result<Option<SourceMark>> {
    let from_log = shared.log.source_mark(name);
    let path = shared
        .state_dir
        .join("sources")
        .join(format!("{name}.json"));
    let from_file = match std::fs::read(&path) {
        Ok(data) => Some(
            serde_json::from_slice::<SourceMark>(&data)
                .map_err(|e| Error::state(format!("{}: {e}", path.display())))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    Ok(match (from_log, from_file) {
        (Some(a), Some(b)) => Some(if a.seq >= b.seq { a } else { b }),
        (a, b) => a.or(b),
    })
}

/// Stable partition choice: FNV-1a of the stream name, so one stream keeps its order.
fn partition_for(key: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

pub(super) async fn run(p: SourcePipeline, shared: Arc<Shared>) -> TaskEnd {
    supervise(&p.status, &shared, || async {
        let (r, progressed) = attempt(&p, &shared).await;
        let end = r.map(|a| match a {
            Attempt::Exhausted => TaskEnd::Finished,
            Attempt::Cancelled => TaskEnd::Stopped,
            Attempt::Restart => TaskEnd::Restart,
        });
        (end, progressed)
    })
    .await
}

/// One attempt; returns whether any batch became durable.
async fn attempt(p: &SourcePipeline, shared: &Arc<Shared>) -> (Result<Attempt>, bool) {
    // The health monitor's auto-recovery ends this attempt (requests from now on count,
    // also while the source opens).
    let mut restart = p.status.restart_requests();
    restart.borrow_and_update();
    let mark = match recover_mark(shared, &p.spec.name) {
        Ok(m) => m,
        Err(e) => return (Err(e), false),
    };
    let ctx = PipelineContext {
        name: p.spec.name.clone(),
        status: p.status.clone(),
        state_dir: shared
            .state_dir
            .join("sources")
            .join(format!("{}.d", p.spec.name)),
        dead_letter_topic: p.spec.dead_letter_topic.clone(),
    };
    let mut source = match p.spec.connector.create(&ctx) {
        Ok(s) => s,
        Err(e) => return (Err(e), false),
    };
    let mut transforms = match p.transforms.create() {
        Ok(t) => t,
        Err(e) => return (Err(e), false),
    };
    let next_seq = mark.as_ref().map_or(0, |m| m.seq + 1);
    if let Some(m) = &mark {
        p.status.set_position(m.position.0.clone());
        tracing::info!(source = %p.spec.name, position = %m.position.0, "resuming after durable position");
    }
    tokio::select! {
        opened = source.open(mark.map(|m| m.position)) => {
            if let Err(e) = opened {
                return (Err(e), false);
            }
        }
        Ok(()) = restart.changed() => return (Ok(Attempt::Restart), false),
    }
    p.status.set_state(PipelineState::Running);

    let q = &shared.settings.queue;
    let (tx, rx) = bounded::<Piece>(q.max_rows, q.max_bytes);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Position>();
    let writer_failed = tokio_util::sync::CancellationToken::new();
    let writer = {
        let failed = writer_failed.clone();
        let w = writer(
            p.spec.name.clone(),
            p.spec.topic.clone(),
            next_seq,
            rx,
            ack_tx,
            shared.clone(),
            p.status.clone(),
        );
        tokio::spawn(async move {
            let r = w.await;
            if r.is_err() {
                failed.cancel();
            }
            r
        })
    };
    let mut batcher = Batcher::new(shared.settings.batch.clone());
    let mut progressed = false;

    enum Ev {
        Cancel,
        Restart,
        Ack(Position),
        Next(Result<Next>),
    }
    let outcome: Result<Attempt> = loop {
        let ev = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => Ev::Cancel,
            // The writer's error is collected after the loop.
            _ = writer_failed.cancelled() => Ev::Cancel,
            Some(pos) = ack_rx.recv() => Ev::Ack(pos),
            Ok(()) = restart.changed() => Ev::Restart,
            n = batcher.next(source.as_mut()) => Ev::Next(n),
        };
        match ev {
            Ev::Cancel => break Ok(Attempt::Cancelled),
            Ev::Restart => break Ok(Attempt::Restart),
            Ev::Ack(pos) => {
                progressed = true;
                if let Err(e) = source.commit(&pos).await {
                    break Err(e);
                }
            }
            Ev::Next(Err(e)) => break Err(e),
            Ev::Next(Ok(Next::Exhausted)) => break Ok(Attempt::Exhausted),
            Ev::Next(Ok(Next::Batch(b))) => {
                p.taps.source.publish(&b.batch);
                let commit_times = crate::status::commit_times(&b.batch);
                let mut pieces = match transform(
                    &mut transforms,
                    b,
                    &p.spec.topic,
                    p.spec.dead_letter_topic.as_deref(),
                ) {
                    Ok(pieces) => pieces,
                    Err(e) => break Err(e),
                };
                if let Some(last) = pieces.last_mut() {
                    last.commit_times = commit_times;
                }
                let mut sent = true;
                for piece in pieces {
                    let dead = p.spec.dead_letter_topic.is_some()
                        && piece.batch.topic.as_deref() == p.spec.dead_letter_topic.as_deref();
                    if dead {
                        p.taps.dead_letter.publish(&piece.batch.batch);
                    } else {
                        p.taps.transformed.publish(&piece.batch.batch);
                    }
                    let (rows, bytes) = (
                        piece.batch.batch.num_rows(),
                        batch_bytes(&piece.batch.batch),
                    );
                    // The writer only stops early on error; its result is collected below.
                    sent = tokio::select! {
                        r = tx.send(piece, rows, bytes) => r.is_ok(),
                        _ = shared.cancel.cancelled() => break,
                    };
                    if !sent {
                        break;
                    }
                }
                if !sent || shared.cancel.is_cancelled() {
                    break Ok(Attempt::Cancelled);
                }
            }
        }
    };
    // Drain: everything queued is written, then every durable position is acknowledged.
    drop(tx);
    let written = match writer.await {
        Ok(r) => r,
        Err(e) => Err(Error::internal(format!("topic writer panicked: {e}"))),
    };
    while let Ok(pos) = ack_rx.try_recv() {
        progressed = true;
        if let Err(e) = source.commit(&pos).await {
            return (Err(e), progressed);
        }
    }
    match (outcome, written) {
        (Err(e), _) | (Ok(_), Err(e)) => (Err(e), progressed),
        (Ok(a), Ok(())) => (Ok(a), progressed),
    }
}

/// A batch on its way to the topic. A transform may split one source batch into several
/// pieces; only the last carries the source position, so a crash between pieces replays the
/// batch instead of skipping the pieces not yet written.
struct Piece {
    batch: SourceBatch,
    marks: bool,
    partition: Option<PartitionChoice>,
    /// On the marking piece: the commit times (`source.ts_ms`) of the source batch's
    /// change events as decoded, before transforms could drop the `source` struct.
    commit_times: Option<arrow::array::ArrayRef>,
}

/// Run the pipeline's transforms over one source batch. Pieces keep the batch's stream (its
/// partition, hence its order); routers may change their topic. A batch whose rows were all
/// filtered out still carries its position, as a zero-row piece.
fn transform(
    chain: &mut Option<Box<dyn crate::connector::Transform>>,
    b: SourceBatch,
    default_topic: &str,
    dead_letter_topic: Option<&str>,
) -> Result<Vec<Piece>> {
    // The source's own dead-letter rows (records it could not decode) skip the chain.
    let is_dead_letter = dead_letter_topic.is_some() && b.topic.as_deref() == dead_letter_topic;
    let chain = chain.as_deref_mut().filter(|_| !is_dead_letter);
    let Some(chain) = chain else {
        return Ok(vec![Piece {
            batch: b,
            marks: true,
            partition: None,
            commit_times: None,
        }]);
    };
    let topic = b.topic.clone();
    let routed = chain.apply(b.batch.clone(), topic.as_deref().unwrap_or(default_topic))?;
    let mut pieces: Vec<Piece> = routed
        .into_iter()
        .filter(|r| r.batch.num_rows() > 0)
        .map(|r| Piece {
            batch: SourceBatch {
                batch: r.batch,
                position: b.position.clone(),
                stream: b.stream.clone(),
                topic: r.topic.or_else(|| topic.clone()),
            },
            marks: false,
            partition: r.partition,
            commit_times: None,
        })
        .collect();
    match pieces.last_mut() {
        Some(last) => last.marks = true,
        None => pieces.push(Piece {
            batch: SourceBatch {
                batch: RecordBatch::new_empty(b.batch.schema()),
                ..b
            },
            marks: true,
            partition: None,
            commit_times: None,
        }),
    }
    Ok(pieces)
}

/// Where one batch goes: to the partitioner's choice when one ran, else to the partition of
/// its stream (the pipeline's name when it has none).
fn destination<'a>(
    shared: &Shared,
    name: &str,
    default_topic: &'a str,
    piece: &'a Piece,
) -> Result<(&'a str, u32)> {
    let b = &piece.batch;
    let topic = b.topic.as_deref().unwrap_or(default_topic);
    let partition = match piece.partition {
        Some(c) => {
            if !shared.log.has_topic(topic) && shared.settings.topic.auto_create {
                shared.log.create_topic(topic, c.of)?;
            }
            shared.log.ensure_topic(topic)?;
            let parts = shared.log.partitions(topic)?;
            if parts != c.of && shared.first_mismatch(topic) {
                tracing::warn!(
                    topic,
                    partitions = parts,
                    num_partitions = c.of,
                    "topic existed with another partition count than the partitioner's; \
                     rows are spread over the topic's partitions (each key still maps to \
                     one partition)"
                );
            }
            c.partition % parts.max(1)
        }
        None => {
            shared.log.ensure_topic(topic)?;
            let parts = shared.log.partitions(topic)?;
            partition_for(b.stream.as_deref().unwrap_or(name), parts)
        }
    };
    Ok((topic, partition))
}

/// At most this many queued batches are appended under one fsync.
const MAX_GROUP: usize = 16;

/// Appends queued batches with their position marks; acknowledges each after it is durable.
/// Batches already queued when the writer is ready are appended together (group commit:
/// one fsync for them all under `fsync: always`), so a slow disk makes fewer, larger syncs
/// instead of holding the source back once per batch.
async fn writer(
    name: String,
    default_topic: String,
    mut seq: u64,
    mut rx: QueueReceiver<Piece>,
    acks: mpsc::UnboundedSender<Position>,
    shared: Arc<Shared>,
    status: Arc<PipelineStatus>,
) -> Result<()> {
    let state_file = shared
        .state_dir
        .join("sources")
        .join(format!("{name}.json"));
    let mut last_file_write = std::time::Instant::now();
    while let Some((first, room)) = rx.recv_holding_room().await {
        // The group keeps its room in the queue until it is durable, so the queue's bounds
        // still cap what the pipeline holds.
        let (mut group, mut rooms) = (vec![first], vec![room]);
        while group.len() < MAX_GROUP && !rx.is_empty() {
            match rx.recv_holding_room().await {
                Some((piece, room)) => {
                    group.push(piece);
                    rooms.push(room);
                }
                None => break,
            }
        }
        let marks: Vec<Option<SourceMark>> = group
            .iter()
            .map(|piece| {
                piece.marks.then(|| {
                    seq += 1;
                    SourceMark {
                        source: name.clone(),
                        seq: seq - 1,
                        position: piece.batch.position.clone(),
                    }
                })
            })
            .collect();
        let mut items = Vec::with_capacity(group.len());
        for (piece, mark) in group.iter().zip(&marks) {
            // Only a marking piece can be empty: its position advances without a frame.
            if piece.batch.batch.num_rows() > 0 {
                let (topic, partition) = destination(&shared, &name, &default_topic, piece)?;
                items.push(Append {
                    topic,
                    partition,
                    batch: &piece.batch.batch,
                    mark: mark.as_ref(),
                });
            }
        }
        if !items.is_empty() {
            shared.log.append_all(&items).await?;
        }
        let durable_ms = chrono::Utc::now().timestamp_millis();
        for item in &items {
            status.add(item.batch.num_rows() as u64, batch_bytes(item.batch) as u64);
        }
        for ts in group.iter().filter_map(|piece| piece.commit_times.as_ref()) {
            status.observe_durable(ts, durable_ms);
        }
        let position_only = group
            .iter()
            .any(|piece| piece.marks && piece.batch.batch.num_rows() == 0);
        let Some(last) = marks.iter().flatten().last() else {
            continue;
        };
        // The log holds the authoritative mark; the file covers position-only advances and
        // positions whose frames retention deleted. Written at most once per commit interval.
        let due =
            last_file_write.elapsed().as_millis() as u64 >= shared.settings.commit_interval_ms;
        if position_only || due {
            let data = serde_json::to_vec(last).map_err(|e| Error::internal(e.to_string()))?;
            let path = state_file.clone();
            tokio::task::spawn_blocking(move || write_atomic(&path, &data))
                .await
                .map_err(|e| Error::internal(e.to_string()))?
                .map_err(|e| Error::io("write source position", e))?;
            last_file_write = std::time::Instant::now();
        }
        status.set_position(last.position.0.clone());
        for mark in marks.into_iter().flatten() {
            let _ = acks.send(mark.position);
        }
        drop(rooms);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_choice_is_stable() {
        assert_eq!(super::partition_for("orders", 1), 0);
        let p = super::partition_for("orders", 8);
        assert_eq!(p, super::partition_for("orders", 8));
        assert!(p < 8);
    }
}
