//! Measuring one phase: wall time, CPU seconds (all threads), peak RSS; and the report a
//! scenario writes.

use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// CPU seconds (user + system, all threads) used by this process so far.
#[allow(unsafe_code)]
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zero-initialised struct we pass; no other precondition.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Peak resident set size since the last [`reset_peak_rss`], in bytes (`VmHWM`).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Reset the kernel's peak-RSS counter to the current RSS (Linux `clear_refs` = 5), so
/// each phase reports its own peak.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A running measurement.
pub struct Probe {
    t0: Instant,
    cpu0: f64,
}

/// What a measured phase cost.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
}

impl Probe {
    pub fn start() -> Self {
        reset_peak_rss();
        Self {
            t0: Instant::now(),
            cpu0: cpu_seconds(),
        }
    }

    pub fn stop(self) -> Sample {
        Sample {
            seconds: self.t0.elapsed().as_secs_f64(),
            cpu_seconds: cpu_seconds() - self.cpu0,
            peak_rss_mib: mib(peak_rss_bytes()),
        }
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// The reference a figure is compared with: the same bytes through the bare mechanism.
#[derive(Debug, Clone, Serialize)]
pub struct Limit {
    /// What was measured, e.g. "raw sequential write of the same bytes + fsync".
    pub name: String,
    pub seconds: f64,
    pub mib_per_s: f64,
    pub rows_per_s: f64,
}

/// One figure of a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
    pub mib_per_s: f64,
    pub cpu_seconds: f64,
    /// Throughput per CPU second: MiB per second of CPU used (all threads).
    pub mib_per_cpu_s: f64,
    pub peak_rss_mib: f64,
    /// The physical limit measured in the same run on the same data, if any.
    pub limit: Option<Limit>,
    /// `mib_per_s / limit.mib_per_s`.
    pub ratio_to_limit: Option<f64>,
    /// Latency figures: percentiles of the rows' latencies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// Latency figures: the floor measured in the same run, and what it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_limit: Option<(String, Latency)>,
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// The percentiles of `ms` (nearest rank).
    pub fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| -> f64 {
            if ms.is_empty() {
                return 0.0;
            }
            let i = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
            round(ms[i], 2)
        };
        Self {
            samples: ms.len() as u64,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: ms.last().map_or(0.0, |m| round(*m, 2)),
        }
    }
}

impl Figure {
    pub fn new(name: &str, rows: u64, bytes: u64, s: Sample) -> Self {
        let secs = s.seconds.max(1e-9);
        Self {
            name: name.to_string(),
            rows,
            bytes,
            seconds: round(s.seconds, 4),
            rows_per_s: round(rows as f64 / secs, 0),
            mib_per_s: round(mib(bytes) / secs, 1),
            cpu_seconds: round(s.cpu_seconds, 3),
            mib_per_cpu_s: round(mib(bytes) / s.cpu_seconds.max(1e-9), 1),
            peak_rss_mib: round(s.peak_rss_mib, 1),
            limit: None,
            ratio_to_limit: None,
            latency: None,
            latency_limit: None,
        }
    }

    /// Attach the rows' latency and the floor it is compared with.
    pub fn with_latency(mut self, latency: Latency, floor_name: &str, floor: Latency) -> Self {
        self.latency = Some(latency);
        self.latency_limit = Some((floor_name.to_string(), floor));
        self
    }

    /// Attach the limit measured for the same `bytes`/`rows` in `seconds`.
    pub fn against(mut self, name: &str, seconds: f64) -> Self {
        let secs = seconds.max(1e-9);
        let limit = Limit {
            name: name.to_string(),
            seconds: round(seconds, 4),
            mib_per_s: round(mib(self.bytes) / secs, 1),
            rows_per_s: round(self.rows as f64 / secs, 0),
        };
        self.ratio_to_limit = Some(round(
            (mib(self.bytes) / self.seconds.max(1e-9)) / (mib(self.bytes) / secs),
            3,
        ));
        self.limit = Some(limit);
        self
    }
}

/// The JSON report of one scenario run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub unix_time: u64,
    pub machine: Machine,
    pub params: serde_json::Value,
    pub figures: Vec<Figure>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
    pub profile: &'static str,
}

impl Machine {
    pub fn here() -> Self {
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            profile: if cfg!(debug_assertions) {
                "debug (figures are not representative; use --release)"
            } else {
                "release"
            },
        }
    }
}

impl Report {
    pub fn write(&self, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.json", self.scenario));
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)?;
        Ok(path)
    }

    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let mut s = format!("{}:\n", self.scenario);
        for f in &self.figures {
            s.push_str(&format!(
                "  {:<28} {:>12.0} rows/s {:>9.1} MiB/s  cpu {:>7.2}s  rss {:>7.1} MiB",
                f.name, f.rows_per_s, f.mib_per_s, f.cpu_seconds, f.peak_rss_mib
            ));
            if let Some(l) = &f.latency {
                s.push_str(&format!(
                    "  latency p50 {} ms, p99 {} ms, p999 {} ms, max {} ms",
                    l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
                ));
                if let Some((name, floor)) = &f.latency_limit {
                    s.push_str(&format!(" (floor: {name}: p50 {} ms)", floor.p50_ms));
                }
            }
            if let (Some(l), Some(r)) = (&f.limit, f.ratio_to_limit) {
                s.push_str(&format!(
                    "  ratio {r:.3} to {:.1} MiB/s ({})",
                    l.mib_per_s, l.name
                ));
            }
            s.push('\n');
        }
        s
    }
}
