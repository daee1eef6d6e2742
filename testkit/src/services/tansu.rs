//! tansu, a Kafka-protocol broker with in-memory storage.

use super::launch::{find_binary, launch, service_dir};
use super::service::Service;
use crate::process::free_port;
use crate::Unavailable;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A private tansu broker (Kafka protocol) with in-memory storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tansu {
    pub host: String,
    pub port: u16,
    pub binary: PathBuf,
}

impl Tansu {
    pub fn start() -> Result<Tansu, Unavailable> {
        let svc = Service::Tansu;
        let binary = find_binary(svc, &["tansu"])?;
        let dir = service_dir(svc)?;
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let mut cmd = Command::new(&binary);
        cmd.arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .args(["--cluster-id", "rivven-test"])
            .env("RUST_LOG", "warn");
        launch(svc, cmd, libc::SIGTERM, &dir, || {
            kafka_api_versions(port).is_ok()
        })?;
        Ok(Tansu {
            host: "127.0.0.1".into(),
            port,
            binary,
        })
    }

    /// A private tansu on a port of its own that advertises `127.0.0.1:advertised` to
    /// clients (where a test puts a TLS proxy: tansu 0.6's CLI cannot enable its own TLS,
    /// as clap refuses `--cert` together with `--key`), requiring SASL when
    /// `authentication`. Never shared through the services file.
    pub fn start_private(advertised: u16, authentication: bool) -> Result<Tansu, Unavailable> {
        let svc = Service::Tansu;
        let binary = find_binary(svc, &["tansu"])?;
        let dir = service_dir(svc)?;
        let port = free_port();
        let mut cmd = Command::new(&binary);
        cmd.arg("broker")
            .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{advertised}"),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .args(["--cluster-id", "rivven-test-private"])
            .env("RUST_LOG", "warn");
        if authentication {
            cmd.arg("--authentication");
        }
        launch(svc, cmd, libc::SIGTERM, &dir, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(Tansu {
            host: "127.0.0.1".into(),
            port,
            binary,
        })
    }

    /// `127.0.0.1:port`, for a Kafka client's bootstrap servers.
    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Send a Kafka ApiVersions v0 request and return the number of API keys the broker lists.
pub fn kafka_api_versions(port: u16) -> std::io::Result<usize> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let client = b"rivven-testkit";
    let mut body = Vec::new();
    body.extend(18i16.to_be_bytes()); // api_key: ApiVersions
    body.extend(0i16.to_be_bytes()); // api_version
    body.extend(7i32.to_be_bytes()); // correlation_id
    body.extend((client.len() as i16).to_be_bytes());
    body.extend(client);
    s.write_all(&(body.len() as i32).to_be_bytes())?;
    s.write_all(&body)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut resp = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    s.read_exact(&mut resp)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "short ApiVersions");
    if resp.len() < 10 || resp[..4] != 7i32.to_be_bytes() {
        return Err(bad());
    }
    let error = i16::from_be_bytes([resp[4], resp[5]]);
    if error != 0 {
        return Err(std::io::Error::other(format!("ApiVersions error {error}")));
    }
    Ok(i32::from_be_bytes([resp[6], resp[7], resp[8], resp[9]]).max(0) as usize)
}
