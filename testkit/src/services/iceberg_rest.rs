//! rustberg, an Apache Iceberg REST catalog server (crates.io), with a file warehouse.

use super::launch::{find_binary, launch, service_dir};
use super::service::Service;
use crate::process::{free_port, wait_for_port};
use crate::Unavailable;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A private rustberg server: the Iceberg REST protocol over plain HTTP on loopback, no
/// authentication (its `--dev --no-auth` mode), catalog state in a redb file and tables
/// under `warehouse`. Tests share it: each uses its own namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IcebergRest {
    /// `http://127.0.0.1:<port>`, the catalog's `uri`.
    pub uri: String,
    pub port: u16,
    /// The server's warehouse directory (where new tables go).
    pub warehouse: PathBuf,
}

impl IcebergRest {
    pub fn start() -> Result<IcebergRest, Unavailable> {
        let svc = Service::IcebergRest;
        let binary = find_binary(svc, &["rustberg"])?;
        let dir = service_dir(svc)?;
        let warehouse = dir.join("warehouse");
        let port = free_port();
        let mut cmd = Command::new(&binary);
        cmd.args(["--dev", "--no-auth", "--insecure-http"])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--catalog-url")
            .arg(format!("file://{}", dir.join("catalog").display()))
            .arg("--warehouse")
            .arg(format!("file://{}", warehouse.display()))
            .env("RUST_LOG", "warn");
        launch(svc, cmd, libc::SIGTERM, &dir, || {
            wait_for_port(port, Duration::from_millis(100))
        })?;
        Ok(IcebergRest {
            uri: format!("http://127.0.0.1:{port}"),
            port,
            warehouse,
        })
    }
}
