//! The Python venv of independent readers (pyarrow, duckdb, pyiceberg, deltalake, fastavro).

use super::launch::{is_executable, run};
use super::service::Service;
use crate::{cache_dir, Unavailable};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;

/// The modules the readers venv must import.
pub const PYTHON_READERS: [&str; 12] = [
    "pyarrow",
    "duckdb",
    "duckdb_extension_avro",
    "duckdb_extension_iceberg",
    "duckdb_extension_delta",
    "duckdb_extension_httpfs",
    "pyiceberg",
    "deltalake",
    "fastavro",
    "cramjam",
    "adbc_driver_flightsql",
    "confluent_kafka",
];

/// Python that defines `duck()`: a DuckDB connection with the `iceberg` and `delta`
/// extensions (and `avro`, which `iceberg` needs, and `httpfs` for tables on S3) loaded
/// from their offline wheels
/// (`duckdb-extension-*`, pinned to the venv's duckdb version), never downloaded.
pub const DUCKDB_LAKEHOUSE: &str = r#"
def duck():
    import duckdb, glob, importlib, os
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    for name in ("avro", "httpfs", "iceberg", "delta"):
        mod = importlib.import_module("duckdb_extension_" + name)
        path, = glob.glob(os.path.join(os.path.dirname(mod.__file__), "extensions", "*", name + ".duckdb_extension"))
        con.load_extension(path)
    con.sql("SET TimeZone = 'UTC'")
    # A slow query would draw a progress bar on stdout, where the tests read JSON.
    con.sql("SET enable_progress_bar = false")
    return con

def duck_rows(con, sql):
    rel = con.sql(sql)
    cols = rel.columns
    return [dict(zip(cols, r)) for r in rel.fetchall()]
"#;

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
