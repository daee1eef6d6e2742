//! The histograms of `/metrics` (the `prometheus` crate's), observed by the runtime as
//! batches move:
//!
//! | histogram | labels | observed |
//! |---|---|---|
//! | `rivven_connect_batch_rows` | pipeline, kind, connector | rows of each batch a source appends or a sink writes |
//! | `rivven_connect_sink_flush_duration_seconds` | pipeline, connector | each sink flush (what makes written rows durable) |
//! | `rivven_connect_commit_to_durable_seconds` | pipeline, connector | per change event: from its upstream commit (`source.ts_ms`) to its durable append to the topic |

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use prometheus::{Histogram, HistogramOpts, HistogramVec, Registry};

/// Labels of every pipeline series.
pub(super) const PIPELINE: [&str; 3] = ["pipeline", "kind", "connector"];

/// The histograms of a process.
#[derive(Debug, Clone)]
pub(super) struct Histograms {
    pub(super) registry: Registry,
    batch_rows: Option<HistogramVec>,
    flush: Option<HistogramVec>,
    commit_to_durable: Option<HistogramVec>,
}

impl Histograms {
    pub(super) fn new() -> Histograms {
        let registry = Registry::new();
        let vec = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .and_then(|h| registry.register(Box::new(h.clone())).map(|()| h));
            // Names, labels and buckets are fixed: this fails only on a bug.
            h.map_err(|e| tracing::error!(histogram = name, error = %e, "histogram not exported"))
                .ok()
        };
        let batch_rows = vec(
            "rivven_connect_batch_rows",
            "Rows per batch appended by a source or written by a sink.",
            &PIPELINE,
            vec![1.0, 10.0, 100.0, 1000.0, 4096.0, 8192.0, 16384.0, 65536.0],
        );
        let flush = vec(
            "rivven_connect_sink_flush_duration_seconds",
            "Duration of sink flushes (making written rows durable).",
            &["pipeline", "connector"],
            prometheus::exponential_buckets(0.001, 4.0, 10).unwrap_or_default(),
        );
        let commit_to_durable = vec(
            "rivven_connect_commit_to_durable_seconds",
            "Per change event: seconds from its upstream commit (source.ts_ms) to its \
             durable append to the topic.",
            &["pipeline", "connector"],
            vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                1800.0,
            ],
        );
        Histograms {
            registry,
            batch_rows,
            flush,
            commit_to_durable,
        }
    }

    /// The histograms of one pipeline; `kind` is `source` or `sink`.
    pub(super) fn pipeline(&self, name: &str, kind: &str, connector: &str) -> Observed {
        let (k, sink) = (kind, kind == "sink");
        Observed {
            batch_rows: self
                .batch_rows
                .as_ref()
                .map(|h| h.with_label_values(&[name, k, connector])),
            flush: self
                .flush
                .as_ref()
                .filter(|_| sink)
                .map(|h| h.with_label_values(&[name, connector])),
            commit_to_durable: self
                .commit_to_durable
                .as_ref()
                .filter(|_| !sink)
                .map(|h| h.with_label_values(&[name, connector])),
        }
    }
}

/// The commit times (`source.ts_ms`) of a batch of change events; `None` for a batch
/// that is not one.
pub fn commit_times(batch: &RecordBatch) -> Option<ArrayRef> {
    let ts = batch
        .column_by_name("source")?
        .as_struct_opt()?
        .column_by_name("ts_ms")?;
    ts.as_primitive_opt::<Int64Type>().map(|_| ts.clone())
}

/// One pipeline's histograms.
#[derive(Debug)]
pub(super) struct Observed {
    pub(super) batch_rows: Option<Histogram>,
    pub(super) flush: Option<Histogram>,
    pub(super) commit_to_durable: Option<Histogram>,
}

impl Observed {
    /// Observe, for each commit time (ms since the epoch; nulls skipped), the time from
    /// that commit to `now_ms`; the longest, in milliseconds.
    pub(super) fn commit_latencies(&self, times: &ArrayRef, now_ms: i64) -> Option<u64> {
        let h = self.commit_to_durable.as_ref()?;
        let ts = times.as_primitive_opt::<Int64Type>()?;
        let local = h.local();
        let mut longest = None;
        for (i, v) in ts.values().iter().enumerate() {
            if ts.is_valid(i) {
                let ms = (now_ms - v).max(0);
                local.observe(ms as f64 / 1000.0);
                longest = longest.max(Some(ms as u64));
            }
        }
        local.flush();
        longest
    }
}
