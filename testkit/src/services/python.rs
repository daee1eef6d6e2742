//! The Python venv of independent readers (pyarrow, duckdb, pyiceberg, deltalake, fastavro).

use super::launch::{is_executable, run};
use super::service::Service;
use crate::{cache_dir, Unavailable};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;

/// The modules the readers venv must import.
pub const PYTHON_READERS: [&str; 6] = [
    "pyarrow",
    "duckdb",
    "pyiceberg",
    "deltalake",
    "fastavro",
    "cramjam",
];

/// The Python interpreter of the readers venv (`$RIVVEN_CACHE/venv`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Python {
    pub python: PathBuf,
}

impl Python {
    pub fn find() -> Result<Python, Unavailable> {
        let svc = Service::Python;
        let python = match std::env::var_os(svc.binary_env()) {
            Some(p) => PathBuf::from(p),
            None => cache_dir().join("venv/bin/python"),
        };
        if !is_executable(&python) {
            return Err(Unavailable::new(
                svc.name(),
                format!(
                    "{} not found (or set {})",
                    python.display(),
                    svc.binary_env()
                ),
            ));
        }
        let py = Python { python };
        let imports = format!("import {}", PYTHON_READERS.join(", "));
        py.run(&imports, &[])
            .map_err(|e| Unavailable::new(svc.name(), e))?;
        Ok(py)
    }

    /// Run a Python script (`-c`) with arguments; returns stdout.
    pub fn run(&self, script: &str, args: &[&str]) -> Result<String, String> {
        run(Command::new(&self.python).arg("-c").arg(script).args(args))
    }
}
