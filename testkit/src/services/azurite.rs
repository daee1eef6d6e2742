//! Azurite, the Azure Blob Storage emulator (npm).

use super::launch::{find_binary, launch, service_dir};
use super::service::Service;
use crate::process::{free_port, wait_for_port};
use crate::Unavailable;
use serde::{Deserialize, Serialize};
use std::process::Command;
use std::time::Duration;

/// Azurite's Blob service, with the emulator's well-known account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Azurite {
    /// `http://127.0.0.1:<port>`: the value for `AZURITE_BLOB_STORAGE_URL`.
    pub blob_url: String,
    pub port: u16,
    pub account: String,
    pub key: String,
}

impl Azurite {
    pub fn start() -> Result<Azurite, Unavailable> {
        let svc = Service::Azurite;
        let binary = find_binary(svc, &["azurite-blob"])?;
        let dir = service_dir(svc)?;
        let port = free_port();
        let mut cmd = Command::new(&binary);
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir.join("data"))
            .args(["--silent", "--skipApiVersionCheck", "--loose"]);
        // Azurite's graceful stop waits for idle keep-alive connections; its data is a
        // throwaway temp dir, so it is stopped with SIGKILL.
        launch(svc, cmd, libc::SIGKILL, &dir, || {
            wait_for_port(port, Duration::from_millis(100))
        })?;
        Ok(Azurite {
            blob_url: format!("http://127.0.0.1:{port}"),
            port,
            account: "devstoreaccount1".into(),
            // The emulator's published development key (not a secret).
            key: "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==".into(),
        })
    }

    /// A connection string for Azure SDKs.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={}/{};",
            self.account, self.key, self.blob_url, self.account
        )
    }
}
