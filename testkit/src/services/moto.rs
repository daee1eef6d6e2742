//! moto's server mode (PyPI `moto[server]`): AWS Glue and S3 on one local endpoint.

use super::launch::{is_executable, launch, service_dir};
use super::service::Service;
use crate::process::{free_port, wait_for_port};
use crate::{cache_dir, Unavailable};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A private moto server: every AWS service moto mocks (the tests use Glue and S3) at
/// `endpoint`, state in memory, any credentials accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Moto {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub port: u16,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

impl Moto {
    pub fn start() -> Result<Moto, Unavailable> {
        let svc = Service::Moto;
        let binary = match std::env::var_os(svc.binary_env()) {
            Some(p) => PathBuf::from(p),
            None => cache_dir().join("venv/bin/moto_server"),
        };
        if !is_executable(&binary) {
            return Err(Unavailable::new(
                svc.name(),
                format!(
                    "{} not found (scripts/install-tools.sh installs moto[server] into the \
                     venv; or set {})",
                    binary.display(),
                    svc.binary_env()
                ),
            ));
        }
        let dir = service_dir(svc)?;
        let port = free_port();
        let mut cmd = Command::new(&binary);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        launch(svc, cmd, libc::SIGTERM, &dir, || {
            wait_for_port(port, Duration::from_millis(100))
        })?;
        Ok(Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            region: "us-east-1".into(),
            access_key: "testing".into(),
            secret_key: "testing".into(),
        })
    }
}
