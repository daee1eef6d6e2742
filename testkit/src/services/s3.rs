//! s3s-fs, an S3 server that checks SigV4 signatures.

use super::launch::{find_binary, launch, random_secret, run, service_dir};
use super::service::Service;
use crate::process::{free_port, wait_for_port};
use crate::Unavailable;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A private s3s-fs server: path-style S3 over HTTP, SigV4 checked against one key pair,
/// objects stored as files under `root`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct S3 {
    pub endpoint: String,
    pub port: u16,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// The directory where the server stores buckets (one sub-directory each).
    pub root: PathBuf,
}

impl S3 {
    pub fn start() -> Result<S3, Unavailable> {
        let svc = Service::S3;
        let binary = find_binary(svc, &["s3s-fs"])?;
        let dir = service_dir(svc)?;
        let root = dir.join("data");
        std::fs::create_dir_all(&root).map_err(|e| Unavailable::new(svc.name(), e.to_string()))?;
        let port = free_port();
        let access_key = format!("AK{}", &random_secret()[..18]).to_uppercase();
        let secret_key = random_secret();
        let mut cmd = Command::new(&binary);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", &access_key, "--secret-key", &secret_key])
            .arg(&root)
            .env("RUST_LOG", "warn");
        launch(svc, cmd, libc::SIGTERM, &dir, || {
            wait_for_port(port, Duration::from_millis(100))
        })?;
        Ok(S3 {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            region: "us-east-1".into(),
            access_key,
            secret_key,
            root,
        })
    }

    /// Create a bucket (a name from [`crate::unique_name`] with `_` turned into `-`).
    pub fn create_bucket(&self, name: &str) -> Result<String, String> {
        let name = name.replace('_', "-");
        match self.curl("PUT", &format!("/{name}"), None, &self.secret_key)? {
            (200, _) => Ok(name),
            (code, body) => Err(format!("create bucket {name}: HTTP {code}: {body}")),
        }
    }

    /// A SigV4-signed request with `curl --aws-sigv4` (payload sent unsigned, as S3 allows);
    /// returns (HTTP status, body).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        body: Option<&Path>,
        secret_key: &str,
    ) -> Result<(u16, String), String> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-X", method, "-w", "\n%{http_code}"])
            .args(["--aws-sigv4", &format!("aws:amz:{}:s3", self.region)])
            .args(["--user", &format!("{}:{secret_key}", self.access_key)])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]);
        if let Some(b) = body {
            cmd.arg("--data-binary").arg(format!("@{}", b.display()));
        }
        cmd.arg(format!("{}{path}", self.endpoint));
        let out = run(&mut cmd)?;
        let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
        let code: u16 = code.parse().map_err(|_| format!("curl output: {out}"))?;
        Ok((code, body.to_string()))
    }
}
