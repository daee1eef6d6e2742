//! Real services for tests and benchmarks, started privately on loopback.
//!
//! Every service runs on `127.0.0.1`, on a free port, with its data in a temp dir, and
//! is stopped by PID when the process that started it exits (an `atexit` hook, and
//! `PR_SET_PDEATHSIG` in case that process is killed). Nothing listens on a standard
//! port and nothing is shared with the machine's own services.
//!
//! Two ways to get a service:
//! - **Shared** — `scripts/test.sh` runs `rivven-services up`, which starts every service
//!   once and writes their addresses to a JSON file named by `RIVVEN_TEST_SERVICES`.
//!   Test binaries read that file and isolate themselves by creating their own
//!   databases, buckets and topics (see [`unique_name`]).
//! - **Private** — without `RIVVEN_TEST_SERVICES` (plain `cargo test`), the first test
//!   that asks for a service starts one for its test binary.
//!
//! A service that cannot be had is [`Unavailable`], naming the service and why. Tests use
//! [`require!`]: with `CI=true` it panics with that message; otherwise it prints
//! `skipped: ...` and returns from the test.
//!
//! Binaries are looked up in `$RIVVEN_CACHE/tools/bin` (where `scripts/install-tools.sh`
//! puts cargo-built tools), then `PATH`, then `/usr/sbin`; each can be overridden (see
//! [`Service::binary_env`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod process;
mod services;

pub use process::{free_port, stop_all, wait_for_port};
pub use services::{
    azurite, browser, iceberg_rest, mariadb, mosquitto, moto, nats, postgres, python, s3, tansu,
    Azurite, Browser, IcebergRest, MariaDb, Mosquitto, Moto, Nats, Postgres, Python, Service,
    ServiceFile, Tansu, TempDatabase, S3,
};
pub use services::{
    kafka_api_versions, make_certs, mqtt_connect, nats_info, DUCKDB_LAKEHOUSE, PYTHON_READERS,
};

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

/// Why a service cannot be used.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Unavailable {
    pub service: String,
    pub reason: String,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service {} unavailable: {} (install it with scripts/install-tools.sh)",
            self.service, self.reason
        )
    }
}

impl std::error::Error for Unavailable {}

impl Unavailable {
    pub(crate) fn new(service: &str, reason: impl Into<String>) -> Self {
        Self {
            service: service.to_string(),
            reason: reason.into(),
        }
    }
}

/// True when running in CI (`CI=true` or `CI=1`): a missing service is then a failure.
pub fn in_ci() -> bool {
    matches!(
        std::env::var("CI")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Ok("true") | Ok("1") | Ok("yes")
    )
}

/// Resolve a service for a test: `Some(service)`, or `None` after printing why it is
/// skipped. Panics with the service's name in CI.
pub fn require<T>(service: Result<T, Unavailable>) -> Option<T> {
    match service {
        Ok(s) => Some(s),
        Err(e) if in_ci() => panic!("{e} [CI=true: a missing service is a failure]"),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// `let pg = require!(rivven_testkit::postgres());` — the service, or return from the
/// test (skip) outside CI; panic naming the service in CI.
#[macro_export]
macro_rules! require {
    ($service:expr) => {
        match $crate::require($service) {
            Some(s) => s,
            None => return,
        }
    };
}

/// A name unique within this machine for this run: `<prefix>_<pid>_<n>`, lower case,
/// usable as a database, bucket (after `-` replacement), topic or slot name.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}_{}_{}",
        prefix.to_ascii_lowercase(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The shared cache outside the clone (`$RIVVEN_CACHE`, default `~/.cache/rivven`).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RIVVEN_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/rivven")
}
