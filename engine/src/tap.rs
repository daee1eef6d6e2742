//! Taps: live copies of the batches passing a pipeline stage, for readers that debug a
//! running pipeline (the Flight endpoint). A tap never slows or blocks the pipeline:
//! publishing is a check of the subscriber count when nobody listens, and otherwise a
//! non-blocking send of a cheap clone (Arrow buffers are shared) into each subscriber's
//! bounded queue of [`CAPACITY`] batches; a subscriber that falls behind loses the oldest
//! batches and is told how many (`RecvError::Lagged`).
//!
//! Stages: a source's `source` (as decoded, before its transforms), `transformed` (what
//! goes to the topic) and `dead_letter` (rows its transforms refused); a sink's `sink` (as
//! the sink receives them, after its transforms) and `dead_letter` (rows it or its
//! transforms refused). A tap is named `<pipeline>.<stage>`.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::broadcast;

/// Batches a subscriber may fall behind before it loses the oldest.
pub const CAPACITY: usize = 64;

/// A stage of a pipeline that can be tapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// A source's batches as decoded.
    Source,
    /// A source's batches after its transforms (what goes to the topic).
    Transformed,
    /// A sink's batches as the sink receives them (after the sink's transforms).
    Sink,
    /// Rows sent to the pipeline's dead-letter topic.
    DeadLetter,
}

impl Stage {
    /// The name in `<pipeline>.<stage>`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Transformed => "transformed",
            Stage::Sink => "sink",
            Stage::DeadLetter => "dead_letter",
        }
    }
}

/// One tap point: where a task publishes.
#[derive(Debug, Clone)]
pub struct TapPoint {
    tx: broadcast::Sender<RecordBatch>,
    /// The schema of the last batch published, so that a new subscriber learns it at once.
    schema: Arc<Mutex<Option<SchemaRef>>>,
}

impl TapPoint {
    /// Offer `batch` to the subscribers, if any; never waits.
    pub fn publish(&self, batch: &RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        if let Ok(mut s) = self.schema.lock() {
            if !s
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, batch.schema_ref()))
            {
                *s = Some(batch.schema());
            }
        }
        if self.tx.receiver_count() > 0 {
            // An error means the last subscriber left meanwhile: nothing to do.
            let _ = self.tx.send(batch.clone());
        }
    }
}

/// A subscription to a tap.
#[derive(Debug)]
pub struct Subscription {
    /// The batches published from now on.
    pub batches: broadcast::Receiver<RecordBatch>,
    /// The schema of the last batch published before, if any.
    pub schema: Option<SchemaRef>,
}

/// Every tap point of a process.
#[derive(Debug, Default)]
pub struct Taps {
    points: RwLock<BTreeMap<String, TapPoint>>,
}

impl Taps {
    /// The tap point `<pipeline>.<stage>`, created on first use.
    pub fn point(&self, pipeline: &str, stage: Stage) -> TapPoint {
        let name = format!("{pipeline}.{}", stage.name());
        if let Some(p) = self.points.read().ok().and_then(|m| m.get(&name).cloned()) {
            return p;
        }
        let mut points = match self.points.write() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        points
            .entry(name)
            .or_insert_with(|| TapPoint {
                tx: broadcast::channel(CAPACITY).0,
                schema: Arc::default(),
            })
            .clone()
    }

    /// The names of every tap point, sorted.
    pub fn names(&self) -> Vec<String> {
        self.points
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The schema of the last batch published at tap `name` (`Some(None)` before the
    /// first), or `None` when there is no such tap.
    pub fn schema(&self, name: &str) -> Option<Option<SchemaRef>> {
        let points = self.points.read().ok()?;
        let p = points.get(name)?;
        Some(p.schema.lock().ok().and_then(|s| s.clone()))
    }

    /// A new subscriber of the tap `name` (`<pipeline>.<stage>`), or `None` when there is
    /// no such tap.
    pub fn subscribe(&self, name: &str) -> Option<Subscription> {
        let points = self.points.read().ok()?;
        let p = points.get(name)?;
        Some(Subscription {
            batches: p.tx.subscribe(),
            schema: p.schema.lock().ok().and_then(|s| s.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use std::sync::Arc;

    fn batch(v: i64) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "v",
            Arc::new(Int64Array::from(vec![v])) as arrow::array::ArrayRef,
        )])
        .unwrap()
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_the_oldest_and_is_told_how_many() {
        let taps = Taps::default();
        let p = taps.point("gen", Stage::Source);
        p.publish(&batch(0)); // nobody listens: dropped at once
        let sub = taps.subscribe("gen.source").unwrap();
        assert_eq!(sub.schema, Some(batch(0).schema()));
        let mut rx = sub.batches;
        for v in 1..=(CAPACITY as i64 + 10) {
            p.publish(&batch(v)); // never waits
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("{other:?}"),
        }
        let next = rx.recv().await.unwrap();
        let v = next
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(v, 11);
        assert_eq!(taps.names(), ["gen.source"]);
        assert_eq!(taps.schema("gen.source"), Some(Some(batch(0).schema())));
        assert_eq!(taps.schema("gen.sink"), None);
        assert!(taps.subscribe("gen.sink").is_none());
    }
}
