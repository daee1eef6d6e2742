//! A PostgreSQL replication connection (`replication=database`) speaking the frontend/
//! backend protocol 3.0 directly: startup, authentication (SCRAM-SHA-256, MD5, cleartext),
//! simple queries (`IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT`), and
//! the CopyBoth stream of `START_REPLICATION` with standby status updates.
//!
//! tokio-postgres cannot open replication connections, and a replication stream needs
//! explicit control of what is acknowledged, so this is written here. Reads are
//! cancel-safe: bytes accumulate in a buffer and a message is taken out only when whole.

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use rivven_engine::Error;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Something to speak the protocol over (TCP, or TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct ConnectParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<rivven_engine::secret::SecretString>,
    pub database: String,
    pub application_name: String,
    /// Startup `options` (e.g. `-c TimeZone=UTC`).
    pub options: String,
    /// A replication (walsender) session, or an ordinary one (snapshot reads).
    pub replication: bool,
    /// TLS: the rustls configuration, and whether a server without TLS is accepted
    /// (`sslmode=prefer`). `None`: plain TCP.
    pub tls: Option<(std::sync::Arc<rustls::ClientConfig>, bool)>,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// An error the server sent (`ErrorResponse`), with its SQLSTATE.
#[derive(Debug, Clone)]
pub struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " (detail: {d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// SQLSTATEs the connector reacts to.
pub mod sqlstate {
    /// The slot is active for another PID.
    pub const OBJECT_IN_USE: &str = "55006";
    /// The slot does not exist.
    pub const UNDEFINED_OBJECT: &str = "42704";
    /// The slot already exists.
    pub const DUPLICATE_OBJECT: &str = "42710";
    /// Authentication failed.
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
}

/// What went wrong on a connection.
#[derive(Debug)]
pub enum ConnError {
    Io(std::io::Error),
    Server(ServerError),
    Protocol(String),
    /// TLS negotiation or certificate verification failed.
    Tls(String),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "I/O: {e}"),
            ConnError::Server(e) => write!(f, "{e}"),
            ConnError::Protocol(m) => write!(f, "protocol: {m}"),
            ConnError::Tls(m) => write!(f, "TLS: {m}"),
        }
    }
}

impl ConnError {
    pub fn code(&self) -> Option<&str> {
        match self {
            ConnError::Server(e) => Some(&e.code),
            _ => None,
        }
    }

    /// Into an engine error: I/O and most server errors are retryable; authentication and
    /// protocol errors are not.
    pub fn into_error(self, context: &str) -> Error {
        let msg = format!("{context}: {self}");
        match &self {
            ConnError::Io(_) => Error::connect(msg),
            ConnError::Server(e)
                if e.code.starts_with("28") || e.code == sqlstate::UNDEFINED_OBJECT =>
            {
                Error::config(msg)
            }
            ConnError::Server(_) => Error::connect(msg),
            ConnError::Protocol(_) => Error::internal(msg),
            ConnError::Tls(_) => Error::config(msg),
        }
    }
}

impl From<std::io::Error> for ConnError {
    fn from(e: std::io::Error) -> Self {
        ConnError::Io(e)
    }
}

pub type ConnResult<T> = std::result::Result<T, ConnError>;

fn protocol(msg: impl Into<String>) -> ConnError {
    ConnError::Protocol(msg.into())
}

/// Largest backend message accepted (a row or a WAL record is far below this).
const MAX_MESSAGE: usize = 1 << 30;

/// One backend message: its tag and body (without the length).
#[derive(Debug)]
pub struct Message {
    pub tag: u8,
    pub body: Bytes,
}

/// A message of the replication stream.
#[derive(Debug)]
pub enum ReplicationMessage {
    /// WAL data: a pgoutput message starting at `wal_start`.
    XLogData {
        wal_start: u64,
        wal_end: u64,
        server_time_us: i64,
        data: Bytes,
    },
    /// The server's keepalive; `reply` asks for a status update now.
    Keepalive {
        wal_end: u64,
        server_time_us: i64,
        reply: bool,
    },
}

/// A replication connection.
pub struct ReplicationConnection {
    io: Box<dyn Io>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Server parameters (`server_version`, ...).
    pub params: Vec<(String, String)>,
    /// An error a COPY OUT reported, returned once its ReadyForQuery arrives.
    copy_error: Option<ServerError>,
}

impl std::fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConnection")
            .finish_non_exhaustive()
    }
}

/// Microseconds since 2000-01-01, PostgreSQL's epoch.
pub fn pg_now_us() -> i64 {
    const PG_EPOCH_OFFSET_S: i64 = 946_684_800;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_micros() as i64) - PG_EPOCH_OFFSET_S * 1_000_000
}

impl ReplicationConnection {
    /// Connect over plain TCP and authenticate.
    pub async fn connect(p: &ConnectParams) -> ConnResult<Self> {
        let tcp = tokio::time::timeout(
            p.connect_timeout,
            TcpStream::connect((p.host.as_str(), p.port)),
        )
        .await
        .map_err(|_| {
            ConnError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect to {}:{} timed out", p.host, p.port),
            ))
        })??;
        tcp.set_nodelay(true)?;
        let Some((config, allow_plain)) = &p.tls else {
            return Self::start(Box::new(tcp), p).await;
        };
        // SSLRequest: the server answers one byte, `S` (go ahead) or `N`.
        let mut tcp = tcp;
        let mut req = BytesMut::new();
        frontend::ssl_request(&mut req);
        tcp.write_all(&req).await?;
        let answer = tcp.read_u8().await?;
        match answer {
            b'S' => {
                let name = rustls::pki_types::ServerName::try_from(p.host.clone())
                    .map_err(|e| protocol(format!("TLS server name {:?}: {e}", p.host)))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ConnError::Tls(e.to_string()))?;
                Self::start(Box::new(tls), p).await
            }
            b'N' if *allow_plain => Self::start(Box::new(tcp), p).await,
            b'N' => Err(ConnError::Tls(
                "the server does not support TLS (sslmode requires it)".into(),
            )),
            other => Err(protocol(format!("unexpected SSLRequest answer {other}"))),
        }
    }

    /// Run the startup and authentication exchange over `io`.
    pub async fn start(io: Box<dyn Io>, p: &ConnectParams) -> ConnResult<Self> {
        let mut c = Self {
            io,
            rbuf: BytesMut::with_capacity(64 << 10),
            wbuf: BytesMut::with_capacity(1024),
            params: Vec::new(),
            copy_error: None,
        };
        let mut startup = vec![
            ("user", p.user.as_str()),
            ("database", p.database.as_str()),
            ("client_encoding", "UTF8"),
            ("application_name", p.application_name.as_str()),
            ("options", p.options.as_str()),
        ];
        if p.replication {
            startup.push(("replication", "database"));
        }
        frontend::startup_message(startup, &mut c.wbuf)?;
        c.flush().await?;
        let password = p.password.as_ref().map(|s| s.expose().as_bytes().to_vec());
        let need_password = || {
            password
                .clone()
                .ok_or_else(|| protocol("the server asks for a password and none is configured"))
        };
        loop {
            let m = c.read_message().await?;
            match m.tag {
                b'R' => {
                    let mut b = m.body.clone();
                    if b.len() < 4 {
                        return Err(protocol("short authentication message"));
                    }
                    let kind = b.get_i32();
                    match kind {
                        0 => {} // AuthenticationOk
                        3 => {
                            let pw = need_password()?;
                            frontend::password_message(&pw, &mut c.wbuf)?;
                            c.flush().await?;
                        }
                        5 => {
                            let pw = need_password()?;
                            if b.len() < 4 {
                                return Err(protocol("short MD5 salt"));
                            }
                            let mut salt = [0u8; 4];
                            b.copy_to_slice(&mut salt);
                            let hash = postgres_protocol::authentication::md5_hash(
                                p.user.as_bytes(),
                                &pw,
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut c.wbuf)?;
                            c.flush().await?;
                        }
                        10 => {
                            let pw = need_password()?;
                            c.scram(&pw, &b).await?;
                        }
                        other => {
                            return Err(protocol(format!(
                                "unsupported authentication method {other}"
                            )))
                        }
                    }
                }
                b'S' => {
                    let mut parts = m.body.split(|&x| x == 0);
                    let k = parts.next().unwrap_or_default();
                    let v = parts.next().unwrap_or_default();
                    c.params.push((
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    ));
                }
                b'K' | b'N' => {}
                b'Z' => return Ok(c),
                b'E' => return Err(ConnError::Server(parse_error(&m.body))),
                t => {
                    return Err(protocol(format!(
                        "unexpected message {:?} at startup",
                        t as char
                    )))
                }
            }
        }
    }

    async fn scram(&mut self, password: &[u8], mechanisms: &[u8]) -> ConnResult<()> {
        let offers_scram = mechanisms
            .split(|&x| x == 0)
            .any(|m| m == SCRAM_SHA_256.as_bytes());
        if !offers_scram {
            return Err(protocol("the server offers no SASL mechanism we support"));
        }
        let mut scram = ScramSha256::new(password, ChannelBinding::unsupported());
        frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut self.wbuf)?;
        self.flush().await?;
        let m = self.expect_auth().await?;
        if m.0 != 11 {
            return Err(protocol(format!("expected SASLContinue, got {}", m.0)));
        }
        scram.update(&m.1)?;
        frontend::sasl_response(scram.message(), &mut self.wbuf)?;
        self.flush().await?;
        let m = self.expect_auth().await?;
        if m.0 != 12 {
            return Err(protocol(format!("expected SASLFinal, got {}", m.0)));
        }
        scram.finish(&m.1)?;
        Ok(())
    }

    async fn expect_auth(&mut self) -> ConnResult<(i32, Bytes)> {
        let m = self.read_message().await?;
        match m.tag {
            b'R' if m.body.len() >= 4 => {
                let mut b = m.body;
                let kind = b.get_i32();
                Ok((kind, b))
            }
            b'E' => Err(ConnError::Server(parse_error(&m.body))),
            t => Err(protocol(format!(
                "unexpected message {:?} during SASL",
                t as char
            ))),
        }
    }

    /// The server's major version (`server_version` 15.4 → 15), 0 if unknown.
    pub fn server_major(&self) -> u32 {
        self.param("server_version")
            .and_then(|v| v.split(['.', ' ']).next()?.parse().ok())
            .unwrap_or(0)
    }

    /// A server parameter reported at startup.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Write out the buffered frontend messages. Cancel-safe: bytes not yet written stay
    /// buffered and go out first on the next flush, so frames are never torn.
    async fn flush(&mut self) -> ConnResult<()> {
        while !self.wbuf.is_empty() {
            let n = self.io.write_buf(&mut self.wbuf).await?;
            if n == 0 {
                return Err(ConnError::Io(std::io::ErrorKind::WriteZero.into()));
            }
        }
        self.io.flush().await?;
        Ok(())
    }

    /// The next whole backend message. Cancel-safe.
    /// The length (after the tag byte) of the message at the front of the read buffer,
    /// once its header is there; complete when the buffer holds more than that.
    fn frame_len(&self) -> ConnResult<Option<usize>> {
        if self.rbuf.len() < 5 {
            return Ok(None);
        }
        let len =
            u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]) as usize;
        if !(4..=MAX_MESSAGE).contains(&len) {
            return Err(protocol(format!("bad message length {len}")));
        }
        Ok(Some(len))
    }

    pub async fn read_message(&mut self) -> ConnResult<Message> {
        loop {
            if let Some(len) = self.frame_len()? {
                if self.rbuf.len() > len {
                    let mut frame = self.rbuf.split_to(1 + len);
                    let tag = frame[0];
                    frame.advance(5);
                    return Ok(Message {
                        tag,
                        body: frame.freeze(),
                    });
                }
                self.fill(1 + len - self.rbuf.len()).await?;
            } else {
                self.fill(8192).await?;
            }
        }
    }

    /// Read more into the read buffer, with room for at least `room` bytes. Cancel-safe.
    async fn fill(&mut self, room: usize) -> ConnResult<()> {
        self.rbuf.reserve(room);
        if self.io.read_buf(&mut self.rbuf).await? == 0 {
            return Err(ConnError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        Ok(())
    }

    /// Run a simple query; rows come back as text (`None` = NULL). Errors carry SQLSTATE.
    pub async fn simple_query(&mut self, sql: &str) -> ConnResult<Vec<Vec<Option<String>>>> {
        frontend::query(sql, &mut self.wbuf)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let m = self.read_message().await?;
            match m.tag {
                b'D' => rows.push(parse_data_row(&m.body)?),
                b'T' | b'C' | b'I' | b'N' | b'S' => {}
                b'E' => error = Some(parse_error(&m.body)),
                b'Z' => {
                    return match error {
                        Some(e) => Err(ConnError::Server(e)),
                        None => Ok(rows),
                    }
                }
                t => {
                    return Err(protocol(format!(
                        "unexpected message {:?} in a simple query",
                        t as char
                    )))
                }
            }
        }
    }

    /// Start `COPY ... TO STDOUT`; returns once the server is in CopyOut mode. Then call
    /// [`Self::copy_data_into`] until it returns `false`.
    pub async fn copy_out(&mut self, sql: &str) -> ConnResult<()> {
        frontend::query(sql, &mut self.wbuf)?;
        self.flush().await?;
        loop {
            let m = self.read_message().await?;
            match m.tag {
                b'H' => return Ok(()),
                b'N' => {}
                b'E' => {
                    let e = parse_error(&m.body);
                    self.drain_to_ready().await?;
                    return Err(ConnError::Server(e));
                }
                t => {
                    return Err(protocol(format!(
                        "unexpected message {:?} after COPY",
                        t as char
                    )))
                }
            }
        }
    }

    /// Append the payloads of every CopyData message of a COPY OUT already received to
    /// `out`, waiting for the first one: `Ok(true)`; `Ok(false)` once the COPY completed
    /// and the connection is ready again. One call per network read instead of one per
    /// row. Cancel-safe: `out` grows only after the last await.
    pub async fn copy_data_into(&mut self, out: &mut BytesMut) -> ConnResult<bool> {
        let mut got = false;
        loop {
            // A complete message at the front of the buffer: (tag, length after the tag).
            let complete = self
                .frame_len()?
                .filter(|&len| self.rbuf.len() > len)
                .map(|len| (self.rbuf[0], len));
            match complete {
                Some((b'd', len)) => {
                    out.extend_from_slice(&self.rbuf[5..1 + len]);
                    self.rbuf.advance(1 + len);
                    got = true;
                }
                // Data first; other messages on the next call.
                _ if got => return Ok(true),
                Some(_) => {
                    // Complete, so this does not wait.
                    let m = self.read_message().await?;
                    match m.tag {
                        b'c' | b'C' | b'N' => {}
                        b'Z' => {
                            return match self.copy_error.take() {
                                Some(e) => Err(ConnError::Server(e)),
                                None => Ok(false),
                            };
                        }
                        b'E' => self.copy_error = Some(parse_error(&m.body)),
                        t => {
                            return Err(protocol(format!(
                                "unexpected message {:?} in COPY OUT",
                                t as char
                            )))
                        }
                    }
                }
                None => self.fill(64 << 10).await?,
            }
        }
    }

    /// Read up to ReadyForQuery, so the connection stays usable after an error.
    async fn drain_to_ready(&mut self) -> ConnResult<()> {
        while self.read_message().await?.tag != b'Z' {}
        Ok(())
    }

    /// `START_REPLICATION SLOT <slot> LOGICAL <lsn> (<options>)`; returns once the server
    /// has entered CopyBoth mode.
    pub async fn start_replication(
        &mut self,
        slot: &str,
        start_lsn: u64,
        options: &[(&str, String)],
    ) -> ConnResult<()> {
        let opts = options
            .iter()
            .map(|(k, v)| format!("\"{k}\" '{}'", v.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} ({opts})",
            quote_ident(slot),
            format_lsn(start_lsn)
        );
        frontend::query(&sql, &mut self.wbuf)?;
        self.flush().await?;
        loop {
            let m = self.read_message().await?;
            match m.tag {
                b'W' => return Ok(()),
                b'N' => {}
                b'E' => {
                    let e = parse_error(&m.body);
                    self.drain_to_ready().await?;
                    return Err(ConnError::Server(e));
                }
                t => {
                    return Err(protocol(format!(
                        "unexpected message {:?} after START_REPLICATION",
                        t as char
                    )))
                }
            }
        }
    }

    /// The next message of the replication stream. Cancel-safe.
    pub async fn recv(&mut self) -> ConnResult<ReplicationMessage> {
        loop {
            let m = self.read_message().await?;
            match m.tag {
                b'd' => {
                    let mut b = m.body;
                    if b.is_empty() {
                        return Err(protocol("empty CopyData"));
                    }
                    match b.get_u8() {
                        b'w' if b.len() >= 24 => {
                            let wal_start = b.get_u64();
                            let wal_end = b.get_u64();
                            let server_time_us = b.get_i64();
                            return Ok(ReplicationMessage::XLogData {
                                wal_start,
                                wal_end,
                                server_time_us,
                                data: b,
                            });
                        }
                        b'k' if b.len() >= 17 => {
                            let wal_end = b.get_u64();
                            let server_time_us = b.get_i64();
                            let reply = b.get_u8() == 1;
                            return Ok(ReplicationMessage::Keepalive {
                                wal_end,
                                server_time_us,
                                reply,
                            });
                        }
                        t => {
                            return Err(protocol(format!(
                                "unexpected CopyData message {:?}",
                                t as char
                            )))
                        }
                    }
                }
                b'N' => {}
                b'E' => return Err(ConnError::Server(parse_error(&m.body))),
                b'c' => return Err(protocol("the server ended the replication stream")),
                t => {
                    return Err(protocol(format!(
                        "unexpected message {:?} in the replication stream",
                        t as char
                    )))
                }
            }
        }
    }

    /// Send a standby status update: `written` received, `flushed` durable downstream
    /// (the slot's `confirmed_flush_lsn` advances to it), `applied` = `flushed`.
    pub async fn send_status(&mut self, written: u64, flushed: u64, reply: bool) -> ConnResult<()> {
        let mut body = BytesMut::with_capacity(34);
        body.extend_from_slice(b"r");
        body.extend_from_slice(&written.to_be_bytes());
        body.extend_from_slice(&flushed.to_be_bytes());
        body.extend_from_slice(&flushed.to_be_bytes());
        body.extend_from_slice(&pg_now_us().to_be_bytes());
        body.extend_from_slice(&[u8::from(reply)]);
        frontend::CopyData::new(&body[..])?.write(&mut self.wbuf);
        self.flush().await
    }
}

fn parse_data_row(body: &[u8]) -> ConnResult<Vec<Option<String>>> {
    let mut b = body;
    if b.len() < 2 {
        return Err(protocol("short DataRow"));
    }
    let n = b.get_i16();
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if b.len() < 4 {
            return Err(protocol("short DataRow"));
        }
        let len = b.get_i32();
        if len < 0 {
            row.push(None);
        } else {
            let len = len as usize;
            if b.len() < len {
                return Err(protocol("short DataRow"));
            }
            row.push(Some(String::from_utf8_lossy(&b[..len]).into_owned()));
            b.advance(len);
        }
    }
    Ok(row)
}

/// Decode an `ErrorResponse` / `NoticeResponse` body.
pub fn parse_error(body: &[u8]) -> ServerError {
    let mut e = ServerError {
        severity: "ERROR".into(),
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    for field in body.split(|&x| x == 0) {
        let Some((&t, v)) = field.split_first() else {
            continue;
        };
        let v = String::from_utf8_lossy(v).into_owned();
        match t {
            b'V' => e.severity = v,
            b'C' => e.code = v,
            b'M' => e.message = v,
            b'D' => e.detail = Some(v),
            b'H' => e.hint = Some(v),
            _ => {}
        }
    }
    e
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `X/Y` hex form of an LSN.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Parse `X/Y` into an LSN.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips() {
        for lsn in [0u64, 1, 0x16B3748, 0x1_0000_0000, u64::MAX >> 1] {
            assert_eq!(parse_lsn(&format_lsn(lsn)), Some(lsn));
        }
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn error_fields() {
        let e = parse_error(b"SERROR\0VERROR\0C55006\0Mreplication slot \"s\" is active\0\0");
        assert_eq!(e.code, "55006");
        assert!(e.to_string().contains("is active"));
    }
}
