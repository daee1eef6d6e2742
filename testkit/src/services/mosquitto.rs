//! mosquitto, an MQTT broker.

use super::launch::{find_binary, launch, service_dir};
use super::service::Service;
use crate::process::free_port;
use crate::Unavailable;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// A private mosquitto broker (MQTT 3.1.1 / 5), anonymous, no persistence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mosquitto {
    pub host: String,
    pub port: u16,
}

impl Mosquitto {
    pub fn start() -> Result<Mosquitto, Unavailable> {
        let svc = Service::Mosquitto;
        let binary = find_binary(svc, &["mosquitto"])?;
        let dir = service_dir(svc)?;
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 log_dest stderr\nmax_queued_messages 100000\n"
            ),
        )
        .map_err(|e| Unavailable::new(svc.name(), e.to_string()))?;
        let mut cmd = Command::new(&binary);
        cmd.arg("-c").arg(&conf);
        launch(svc, cmd, libc::SIGTERM, &dir, || mqtt_connect(port).is_ok())?;
        Ok(Mosquitto {
            host: "127.0.0.1".into(),
            port,
        })
    }
}

/// MQTT 3.1.1 CONNECT with a clean session; returns the open stream after CONNACK 0.
pub fn mqtt_connect(port: u16) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let id = format!("rivven-testkit-{}", crate::unique_name("c"));
    let mut var = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    var.extend((id.len() as u16).to_be_bytes());
    var.extend(id.as_bytes());
    s.write_all(&[0x10, var.len() as u8])?;
    s.write_all(&var)?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack)?;
    if ack[0] != 0x20 || ack[3] != 0 {
        return Err(std::io::Error::other(format!("CONNACK {ack:?}")));
    }
    Ok(s)
}
