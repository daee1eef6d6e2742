//! What every pipeline task shares: the runtime's state, how a task ends, the parsed
//! transforms it builds chains from, and restarts with exponential backoff.

use crate::config::{RetrySettings, Settings};
use crate::error::Result;
use crate::topic::EmbeddedLog;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How a pipeline task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEnd {
    /// Source exhausted / sink caught up after all sources finished.
    Finished,
    /// Stopped by shutdown.
    Stopped,
    /// Failed permanently.
    Failed,
    /// Ended on request (the health monitor's auto-recovery): start a new attempt at once,
    /// without counting a failure.
    Restart,
}

/// State shared by every task.
pub(crate) struct Shared {
    pub settings: Settings,
    pub state_dir: PathBuf,
    pub log: EmbeddedLog,
    pub cancel: CancellationToken,
    /// Live copies of the batches at each pipeline stage.
    pub taps: Arc<crate::tap::Taps>,
    /// Topics already warned about for a partition-count mismatch.
    pub mismatch_warned: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Shared {
    /// True the first time it is asked about `topic`.
    pub(crate) fn first_mismatch(&self, topic: &str) -> bool {
        self.mismatch_warned
            .lock()
            .map(|mut s| s.insert(topic.to_owned()))
            .unwrap_or(false)
    }
}

/// A pipeline's parsed transforms, from which every attempt builds a fresh chain.
#[derive(Clone, Default)]
pub(crate) struct Transforms(pub(crate) Option<Arc<dyn crate::registry::TransformPlan>>);

impl Transforms {
    /// See [`crate::registry::TransformPlan::topic_layout`].
    pub(crate) fn topic_layout(&self) -> Option<crate::registry::TopicLayout> {
        self.0.as_ref()?.topic_layout()
    }

    /// A new chain (`None`: no transforms).
    pub(crate) fn create(&self) -> Result<Option<Box<dyn crate::connector::Transform>>> {
        self.0.as_ref().map(|p| p.create()).transpose()
    }
}

/// Exponential backoff: `initial * 2^failures`, capped at `max`.
pub(crate) fn backoff(retry: &RetrySettings, failures: u32) -> Duration {
    let ms = retry
        .initial_backoff_ms
        .saturating_mul(1u64 << failures.min(30));
    Duration::from_millis(ms.min(retry.max_backoff_ms))
}

/// Run a pipeline: call `attempt` until it ends without error, restarting it after an
/// exponential backoff when it fails with a retryable error. `attempt` returns how it ended
/// and whether it made progress (a durable batch), which resets the failure count.
/// A non-retryable error or `max_retries` consecutive failures fail the pipeline.
pub(crate) async fn supervise<F, Fut>(
    status: &crate::status::PipelineStatus,
    shared: &Shared,
    mut attempt: F,
) -> TaskEnd
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (Result<TaskEnd>, bool)>,
{
    use crate::status::PipelineState;
    let what = match status.kind {
        crate::status::PipelineKind::Source => "source",
        crate::status::PipelineKind::Sink => "sink",
    };
    let mut failures = 0u32;
    loop {
        status.set_state(PipelineState::Starting);
        let (result, progressed) = attempt().await;
        let e = match result {
            Ok(end) => {
                let (state, msg) = match end {
                    TaskEnd::Finished => (PipelineState::Finished, "finished"),
                    TaskEnd::Stopped => (PipelineState::Stopped, "stopped"),
                    TaskEnd::Failed => (PipelineState::Failed, "failed"),
                    TaskEnd::Restart => {
                        tracing::warn!(pipeline = %status.name, "{what} restarting on request");
                        status.restarted();
                        continue;
                    }
                };
                status.set_state(state);
                tracing::info!(pipeline = %status.name, "{what} {msg}");
                return end;
            }
            Err(e) => e,
        };
        status.record_error(&e);
        if progressed {
            failures = 0;
        }
        if !e.is_retryable() || failures >= shared.settings.retry.max_retries {
            tracing::error!(pipeline = %status.name, error = %e, retries = failures, "{what} failed");
            status.set_state(PipelineState::Failed);
            return TaskEnd::Failed;
        }
        let wait = backoff(&shared.settings.retry, failures);
        failures += 1;
        tracing::warn!(pipeline = %status.name, error = %e, backoff_ms = wait.as_millis() as u64, "{what} failed; restarting");
        status.set_state(PipelineState::Restarting);
        status.restarted();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.cancel.cancelled() => {
                status.set_state(PipelineState::Stopped);
                return TaskEnd::Stopped;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let r = RetrySettings {
            max_retries: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
        };
        let ms: Vec<u128> = (0..6).map(|f| backoff(&r, f).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
    }
}
