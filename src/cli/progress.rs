//! Snapshot progress bars of `run` on a terminal: while standard error is a TTY, one bar
//! per table of each source's snapshot (rows copied of the estimate, from the status the
//! connector reports), redrawn a few times a second; log lines print above the bars. Off a
//! terminal (a file, a pipe, a container log) nothing is drawn.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rivven_engine::status::{PipelineKind, StatusRegistry};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The bars, once `show` draws them; log lines go through [`LogWriter`] around them.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Standard error for the log: a line is printed above the bars while they are drawn.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(bars) = BARS.get() {
            // indicatif panics when the terminal refuses a redraw: log to plain stderr then.
            let around = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                bars.suspend(|| std::io::stderr().write(buf))
            }));
            if let Ok(written) = around {
                return written;
            }
        }
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Draw snapshot progress bars until `stop`, if standard error is a terminal and is not
/// where a `stdout` sink prints rows (`prints_rows`: one is configured).
pub async fn show(status: Arc<StatusRegistry>, stop: CancellationToken, prints_rows: bool) {
    if !std::io::stderr().is_terminal() || (prints_rows && std::io::stdout().is_terminal()) {
        return;
    }
    let multi = BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
    let counted = ProgressStyle::with_template(
        "{prefix:.bold} [{bar:40.cyan/blue}] {human_pos}/~{human_len} rows ({percent}%) {per_sec} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let uncounted =
        ProgressStyle::with_template("{prefix:.bold} {spinner} {human_pos} rows {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut bars: BTreeMap<(String, String), ProgressBar> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        for p in status.report().pipelines {
            if p.kind != PipelineKind::Source {
                continue;
            }
            let Some(tables) = p
                .details
                .as_ref()
                .and_then(|d| d.get("snapshot"))
                .and_then(|s| s.get("tables"))
                .and_then(|t| t.as_object())
            else {
                continue;
            };
            for (table, t) in tables {
                let rows = t["rows"].as_u64().unwrap_or(0);
                let estimate = t["estimated"].as_i64().filter(|e| *e > 0).map(|e| e as u64);
                let finished = t["finished"].as_bool().unwrap_or(false);
                let bar = bars
                    .entry((p.name.clone(), table.clone()))
                    .or_insert_with(|| {
                        let bar = multi.add(ProgressBar::new(estimate.unwrap_or(0)));
                        bar.set_style(if estimate.is_some() {
                            counted.clone()
                        } else {
                            uncounted.clone()
                        });
                        bar.set_prefix(format!("{} {table}", p.name));
                        bar
                    });
                if bar.is_finished() {
                    continue;
                }
                if let Some(e) = estimate {
                    // Estimates come from statistics: never let the bar run past its end.
                    bar.set_length(e.max(rows));
                }
                bar.set_position(rows);
                if finished {
                    bar.set_length(rows);
                    bar.finish_with_message("done");
                }
            }
        }
    }
    for bar in bars.values() {
        if !bar.is_finished() {
            bar.abandon();
        }
    }
    // Later log lines print plainly.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        multi.set_draw_target(ProgressDrawTarget::hidden())
    }));
}
