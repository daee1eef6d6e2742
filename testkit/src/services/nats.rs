//! nats-server with JetStream.

use super::launch::{find_binary, launch, service_dir};
use super::service::Service;
use crate::process::free_port;
use crate::Unavailable;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// A private nats-server with JetStream (store in its temp dir).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Nats {
    pub host: String,
    pub port: u16,
}

impl Nats {
    pub fn start() -> Result<Nats, Unavailable> {
        let svc = Service::Nats;
        let binary = find_binary(svc, &["nats-server"])?;
        let dir = service_dir(svc)?;
        let port = free_port();
        let mut cmd = Command::new(&binary);
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("js"));
        launch(svc, cmd, libc::SIGTERM, &dir, || nats_info(port).is_ok())?;
        Ok(Nats {
            host: "127.0.0.1".into(),
            port,
        })
    }

    /// `nats://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.host, self.port)
    }
}

/// Read the server's INFO line (JSON) from a fresh connection.
pub fn nats_info(port: u16) -> std::io::Result<serde_json::Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n") {
        s.read_exact(&mut byte)?;
        buf.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&buf);
    let json = line
        .strip_prefix("INFO ")
        .ok_or_else(|| std::io::Error::other(format!("not an INFO line: {line}")))?;
    serde_json::from_str(json.trim()).map_err(std::io::Error::other)
}
