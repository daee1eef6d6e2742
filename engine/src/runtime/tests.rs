//! Runtime tests with an in-memory source and sink.

use super::*;
use crate::batch::{Position, SinkBatch, SourceBatch};
use crate::config::Validate;
use crate::connector::{Committed, Sink, Source, StreamInfo};
use crate::registry::{
    Category, ConnectorInfo, PipelineContext, Registry, SinkConnector, SourceConnector,
};
use crate::status::PipelineState;
use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Emits `0..total` in batches of 7; fails once (retryable or not) when reaching `fail_at`.
struct Counter {
    next: i64,
    total: i64,
    fail_at: Option<(i64, bool)>,
    failures: Arc<AtomicU64>,
}

#[async_trait]
impl Source for Counter {
    async fn open(&mut self, position: Option<Position>) -> Result<()> {
        self.next = position.and_then(|p| p.0.as_i64()).unwrap_or(0);
        Ok(())
    }

    async fn poll(&mut self, max_rows: usize) -> Result<Option<SourceBatch>> {
        if let Some((at, retryable)) = self.fail_at {
            if self.next >= at && self.failures.load(Ordering::SeqCst) == 0 {
                self.failures.fetch_add(1, Ordering::SeqCst);
                return Err(Error::connect("injected source failure").retryable(retryable));
            }
        }
        if self.next >= self.total {
            return Ok(None);
        }
        let end = (self.next + 7.min(max_rows as i64)).min(self.total);
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(self.next..end))],
        )?;
        self.next = end;
        Ok(Some(SourceBatch {
            batch,
            position: Position(serde_json::json!(end)),
            stream: None,
            topic: None,
        }))
    }

    async fn commit(&mut self, _: &Position) -> Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Shared2 {
    source_failures: Arc<AtomicU64>,
    sink_failures: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<i64>>>,
    /// A transactional sink's commit record: the offsets its flushed rows cover.
    own: Arc<Mutex<Vec<Committed>>>,
}

struct Factories {
    total: i64,
    source_fail_at: Option<(i64, bool)>,
    sink_fail_at: Option<i64>,
    /// The sink stores its offsets with its rows, and fails once right after the commit
    /// that holds this value, as a process killed before the group commit would.
    crash_after_own_commit_at: Option<i64>,
    /// The sink refuses rows whose value is a multiple of this (`take_rejected`), and
    /// the sink pipeline has a dead-letter topic `dlq` when `dead_letter` is set.
    reject_multiples_of: Option<i64>,
    dead_letter: bool,
    state: Arc<Shared2>,
}

fn info(name: &'static str) -> ConnectorInfo {
    ConnectorInfo {
        name,
        category: Category::Utility,
        description: "test",
        tags: &[],
    }
}

/// The test connectors take no keys.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoKeys {}

impl Validate for NoKeys {}

struct SourceF(Arc<Factories>);

#[async_trait]
impl SourceConnector for SourceF {
    type Config = NoKeys;
    fn info(&self) -> ConnectorInfo {
        info("counter")
    }
    async fn check(&self, _: &NoKeys) -> Result<String> {
        Ok(String::new())
    }
    async fn discover(&self, _: &NoKeys) -> Result<Vec<StreamInfo>> {
        Ok(Vec::new())
    }
    fn create(&self, _: &PipelineContext, _: NoKeys) -> Result<Box<dyn Source>> {
        let f = &self.0;
        Ok(Box::new(Counter {
            next: 0,
            total: f.total,
            fail_at: f.source_fail_at,
            failures: f.state.source_failures.clone(),
        }))
    }
}

/// Collects `v`; fails once when asked to write a batch containing `fail_at`.
struct Collect {
    fail_at: Option<i64>,
    failures: Arc<AtomicU64>,
    accepted: Vec<i64>,
    seen: Arc<Mutex<Vec<i64>>>,
    crash_after_own_commit_at: Option<i64>,
    own: Arc<Mutex<Vec<Committed>>>,
    next: Vec<Committed>,
    reject_multiples_of: Option<i64>,
    rejected: Vec<crate::connector::Rejected>,
}

#[async_trait]
impl Sink for Collect {
    async fn open(&mut self, _: &[Committed]) -> Result<Vec<Committed>> {
        Ok(self
            .own
            .lock()
            .map_err(|_| Error::internal("poisoned"))?
            .clone())
    }

    async fn write(&mut self, b: &SinkBatch) -> Result<()> {
        self.next
            .retain(|c| *c.topic != *b.topic || c.partition != b.partition);
        self.next.push(Committed {
            topic: b.topic.to_string(),
            partition: b.partition,
            offset: b.next_offset(),
        });
        let v = b
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .map(|a| a.values().to_vec())
            .unwrap_or_default();
        if let Some(at) = self.fail_at {
            if v.contains(&at) && self.failures.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(Error::connect("injected sink failure"));
            }
        }
        if let Some(n) = self.reject_multiples_of {
            let bad: Vec<u32> = (0..v.len() as u32)
                .filter(|&i| v[i as usize] % n == 0)
                .collect();
            if !bad.is_empty() {
                let rows = arrow::compute::take_record_batch(
                    &b.batch,
                    &arrow::array::UInt32Array::from(bad),
                )?;
                self.rejected.push(crate::connector::Rejected {
                    rows,
                    reason: format!("multiple of {n}"),
                });
            }
            self.accepted.extend(v.into_iter().filter(|x| x % n != 0));
            return Ok(());
        }
        self.accepted.extend(v);
        Ok(())
    }

    fn take_rejected(&mut self) -> Vec<crate::connector::Rejected> {
        std::mem::take(&mut self.rejected)
    }

    async fn flush(&mut self) -> Result<()> {
        let crash = self
            .crash_after_own_commit_at
            .is_some_and(|at| self.accepted.contains(&at))
            && self.failures.fetch_add(1, Ordering::SeqCst) == 0;
        self.seen
            .lock()
            .map_err(|_| Error::internal("poisoned"))?
            .append(&mut self.accepted);
        if self.crash_after_own_commit_at.is_some() {
            *self.own.lock().map_err(|_| Error::internal("poisoned"))? = self.next.clone();
        }
        if crash {
            return Err(Error::connect("injected crash after the sink's own commit"));
        }
        Ok(())
    }
}

struct SinkF(Arc<Factories>);

#[async_trait]
impl SinkConnector for SinkF {
    type Config = NoKeys;
    fn info(&self) -> ConnectorInfo {
        info("collect")
    }
    async fn check(&self, _: &NoKeys) -> Result<String> {
        Ok(String::new())
    }
    fn create(&self, _: &PipelineContext, _: NoKeys) -> Result<Box<dyn Sink>> {
        Ok(Box::new(Collect {
            fail_at: self.0.sink_fail_at,
            failures: self.0.state.sink_failures.clone(),
            accepted: Vec::new(),
            seen: self.0.state.seen.clone(),
            crash_after_own_commit_at: self.0.crash_after_own_commit_at,
            own: self.0.state.own.clone(),
            next: Vec::new(),
            reject_multiples_of: self.0.reject_multiples_of,
            rejected: Vec::new(),
        }))
    }
}

async fn run(
    f: Factories,
    dir: &std::path::Path,
) -> (RunReport, Arc<Shared2>, Arc<StatusRegistry>) {
    let state = f.state.clone();
    let dlq = if f.dead_letter {
        "    dead_letter_topic: dlq\n"
    } else {
        ""
    };
    let f = Arc::new(f);
    let mut registry = Registry::new();
    registry.register_source(SourceF(f.clone())).unwrap();
    registry.register_sink(SinkF(f)).unwrap();
    let yaml = format!(
        "version: \"1.0\"\nsources:\n  src:\n    connector: counter\n    topic: t\nsinks:\n  snk:\n    connector: collect\n    topics: [t]\n    consumer_group: g\n    start_offset: earliest\n{dlq}settings:\n  state_dir: {}\n  retry: {{initial_backoff_ms: 1, max_backoff_ms: 5}}\n  batch: {{linger_ms: 0}}\n",
        dir.display(),
    );
    let loaded = crate::config::load_str(&yaml, "p.yaml", dir.to_owned(), |_| None).unwrap();
    let pipelines = Pipelines::resolve(&loaded, &registry).unwrap();
    let rt = Runtime::new(&loaded, &pipelines).unwrap();
    let status = rt.status();
    let report = tokio::time::timeout(Duration::from_secs(30), rt.run())
        .await
        .unwrap()
        .unwrap();
    (report, state, status)
}

/// Every value in topic `t`, partition 0, in offset order.
async fn topic_values(dir: &std::path::Path) -> Vec<i64> {
    let log = EmbeddedLog::open(dir, crate::config::TopicSettings::default()).unwrap();
    let end = log.end_offset("t", 0).unwrap();
    let mut out = Vec::new();
    let mut from = 0;
    while from < end {
        for b in log.read("t", 0, from, 1 << 20).await.unwrap() {
            from = b.next_offset();
            out.extend(
                b.batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .iter(),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_restarts_and_resumes_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let f = Factories {
        total: 500,
        source_fail_at: Some((200, true)),
        sink_fail_at: None,
        crash_after_own_commit_at: None,
        reject_multiples_of: None,
        dead_letter: false,
        state: Default::default(),
    };
    let (report, state, status) = run(f, dir.path()).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(state.source_failures.load(Ordering::SeqCst), 1);
    assert_eq!(topic_values(dir.path()).await, (0..500).collect::<Vec<_>>());
    assert_eq!(*state.seen.lock().unwrap(), (0..500).collect::<Vec<_>>());
    let r = status.report();
    assert_eq!(r.pipelines[0].restarts, 1);
    assert_eq!(r.pipelines[0].state, PipelineState::Finished);
    assert!(r.pipelines[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("injected source failure"));
}

/// A sink that stores its offsets in its own commit and dies before the group commit is
/// resumed after that commit: no row is written twice, and the group catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_sink_resumes_after_its_own_commit() {
    let dir = tempfile::tempdir().unwrap();
    let f = Factories {
        total: 300,
        source_fail_at: None,
        sink_fail_at: None,
        crash_after_own_commit_at: Some(150),
        reject_multiples_of: None,
        dead_letter: false,
        state: Default::default(),
    };
    let (report, state, _) = run(f, dir.path()).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(state.sink_failures.load(Ordering::SeqCst), 1);
    assert_eq!(*state.seen.lock().unwrap(), (0..300).collect::<Vec<_>>());
    let log = EmbeddedLog::open(dir.path(), crate::config::TopicSettings::default()).unwrap();
    assert_eq!(log.groups().committed("g", "t", 0), Some(300));
}

/// Rows a sink refuses go to its dead-letter topic with the reason, and the rest goes on;
/// without a dead-letter topic they fail the sink with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_sink_refuses_go_to_its_dead_letter_topic() {
    let dir = tempfile::tempdir().unwrap();
    let f = Factories {
        total: 100,
        source_fail_at: None,
        sink_fail_at: None,
        crash_after_own_commit_at: None,
        reject_multiples_of: Some(10),
        dead_letter: true,
        state: Default::default(),
    };
    let (report, state, _) = run(f, dir.path()).await;
    assert!(report.failed.is_empty(), "{report:?}");
    let expected: Vec<i64> = (0..100).filter(|v| v % 10 != 0).collect();
    assert_eq!(*state.seen.lock().unwrap(), expected);
    let log = EmbeddedLog::open(dir.path(), crate::config::TopicSettings::default()).unwrap();
    assert_eq!(log.groups().committed("g", "t", 0), Some(100));
    let mut dead = Vec::new();
    for b in log.read("dlq", 0, 0, 1 << 20).await.unwrap() {
        let v = b
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let why = b
            .batch
            .column_by_name(crate::dead_letter::DLQ_ERROR)
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        let stage = b
            .batch
            .column_by_name(crate::dead_letter::DLQ_TRANSFORM)
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        for i in 0..v.len() {
            assert_eq!(why.value(i), "multiple of 10");
            assert_eq!(stage.value(i), "sink snk (collect)");
            dead.push(v.value(i));
        }
    }
    assert_eq!(dead, (0..100).step_by(10).collect::<Vec<i64>>());

    let dir = tempfile::tempdir().unwrap();
    let f = Factories {
        total: 100,
        source_fail_at: None,
        sink_fail_at: None,
        crash_after_own_commit_at: None,
        reject_multiples_of: Some(10),
        dead_letter: false,
        state: Default::default(),
    };
    let (report, _, status) = run(f, dir.path()).await;
    assert_eq!(report.failed, ["snk"]);
    let r = status.report();
    let sink = r.pipelines.iter().find(|p| p.name == "snk").unwrap();
    assert!(sink
        .last_error
        .as_deref()
        .unwrap()
        .contains("multiple of 10"));
}

/// Offsets past the end of the topic mean the sink was written from another log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_offsets_past_the_topic_end_fail_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(Shared2::default());
    *state.own.lock().unwrap() = vec![Committed {
        topic: "t".into(),
        partition: 0,
        offset: 1_000_000,
    }];
    let f = Factories {
        total: 30,
        source_fail_at: None,
        sink_fail_at: None,
        crash_after_own_commit_at: None,
        reject_multiples_of: None,
        dead_letter: false,
        state,
    };
    let (report, _, status) = run(f, dir.path()).await;
    assert_eq!(report.failed, ["snk"]);
    let r = status.report();
    let sink = r.pipelines.iter().find(|p| p.name == "snk").unwrap();
    let err = sink.last_error.as_deref().unwrap();
    assert!(err.contains("up to offset 1000000"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_failure_redelivers_from_committed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let f = Factories {
        total: 300,
        source_fail_at: None,
        sink_fail_at: Some(150),
        crash_after_own_commit_at: None,
        reject_multiples_of: None,
        dead_letter: false,
        state: Default::default(),
    };
    let (report, state, status) = run(f, dir.path()).await;
    assert!(report.failed.is_empty(), "{report:?}");
    let mut seen = state.seen.lock().unwrap().clone();
    // Accepted-but-unflushed rows of the failed sink were dropped with it, then re-delivered.
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..300).collect::<Vec<_>>());
    assert_eq!(status.report().pipelines[1].restarts, 1);
    let log = EmbeddedLog::open(dir.path(), crate::config::TopicSettings::default()).unwrap();
    assert_eq!(log.groups().committed("g", "t", 0), Some(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_error_fails_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let f = Factories {
        total: 100,
        source_fail_at: Some((50, false)),
        sink_fail_at: None,
        crash_after_own_commit_at: None,
        reject_multiples_of: None,
        dead_letter: false,
        state: Default::default(),
    };
    let (report, state, status) = run(f, dir.path()).await;
    assert_eq!(report.failed, vec!["src".to_owned()]);
    // The injected failure is a connect error: an external system's fault.
    assert_eq!(report.origins, vec![crate::error::Origin::External]);
    assert_eq!(report.exit_code(), 1);
    // What was durable before the failure still reached the sink.
    let in_topic = topic_values(dir.path()).await;
    assert_eq!(*state.seen.lock().unwrap(), in_topic);
    assert_eq!(status.report().pipelines[0].state, PipelineState::Failed);
}
