//! `rivven-bench`: runs named scenarios and writes one JSON report per scenario.
//!
//! ```text
//! rivven-bench list
//! rivven-bench run [--out DIR] [--rows N] [--batch-rows N] [--dir DIR]
//!                  [--fsync always|interval|never] [SCENARIO ...]
//! ```
//! Build it with `--release` (`scripts/bench.sh` does): a debug build says so in its report.
//! Every figure carries the physical limit measured in the same run on the same bytes and
//! the ratio to it. Timing is reported, never asserted.

mod measure;
mod scenarios;

use anyhow::{bail, Context, Result};
use rivven_engine::config::FsyncPolicy;
use scenarios::Params;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub(crate) fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn usage() -> ! {
    eprintln!(
        "usage: rivven-bench list\n       rivven-bench run [--out DIR] [--rows N] [--batch-rows N] \
         [--dir DIR] [--fsync always|interval|never] [SCENARIO ...]"
    );
    std::process::exit(2)
}

fn main() -> Result<()> {
    // Warnings and errors (restarts, retries) on stderr; RUST_LOG overrides.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") => {
            for (name, desc) in scenarios::ALL {
                println!("{name:<22} {desc}");
            }
            Ok(())
        }
        Some("run") => run(&args[1..]),
        _ => usage(),
    }
}

fn run(args: &[String]) -> Result<()> {
    let mut out = PathBuf::from("bench-reports");
    let mut params = Params {
        rows: None,
        batch_rows: 8192,
        dir: std::env::temp_dir(),
        fsync: FsyncPolicy::Always,
    };
    let mut names = Vec::new();
    let mut flags = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            let v = it.next().cloned().unwrap_or_else(|| usage());
            flags.extend([a.clone(), v.clone()]);
            v
        };
        match a.as_str() {
            "--out" => out = value().into(),
            "--rows" => params.rows = Some(value().parse().context("--rows")?),
            "--batch-rows" => params.batch_rows = value().parse().context("--batch-rows")?,
            "--dir" => params.dir = value().into(),
            "--fsync" => {
                params.fsync = match value().as_str() {
                    "always" => FsyncPolicy::Always,
                    "interval" => FsyncPolicy::Interval,
                    "never" => FsyncPolicy::Never,
                    other => bail!("--fsync {other}: expected always, interval or never"),
                }
            }
            s if s.starts_with("--") => usage(),
            s => names.push(s.to_string()),
        }
    }
    if names.is_empty() {
        names = scenarios::ALL.iter().map(|(n, _)| n.to_string()).collect();
    }
    if names.len() > 1 {
        // One process per scenario, so that peak RSS and allocator state are its own.
        let exe = std::env::current_exe()?;
        for name in &names {
            let status = std::process::Command::new(&exe)
                .arg("run")
                .args(&flags)
                .arg(name)
                .status()?;
            if !status.success() {
                bail!("scenario {name} failed ({status})");
            }
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(name) = names.pop() {
        let report = rt.block_on(async {
            match name.as_str() {
                "log-append-read" => scenarios::log::run(&params).await,
                "datagen-topic-null" => scenarios::pipeline::run(&params).await,
                "pg-stream" => scenarios::postgres::stream(&params).await,
                "pg-snapshot" => scenarios::postgres::snapshot(&params).await,
                "pg-latency" => scenarios::latency::run(&params).await,
                "transform-chain" => scenarios::transforms::run(&params).await,
                "object-storage-parquet" => scenarios::storage::run(&params).await,
                #[cfg(feature = "lakehouse")]
                "lakehouse" => scenarios::lakehouse::run(&params).await,
                other => {
                    bail!("unknown scenario {other:?}; `rivven-bench list` shows the scenarios")
                }
            }
        })?;
        let path = report.write(&out)?;
        print!("{}", report.summary());
        println!("  report: {}", path.display());
    }
    Ok(())
}
