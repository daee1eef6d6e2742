//! One connection to one broker: Kafka's framing (a 4-byte big-endian length, then a
//! request header and body), one request in flight at a time, API versions negotiated
//! once on connect.
//!
//! Every message is a `kafka-protocol` type encoded at the version both sides support:
//! the lower of this client's ceiling for the API ([`ceiling`]) and the broker's maximum.

use crate::sasl::{Conversation, Credentials};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use rivven_engine::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;

type Reader = BufReader<Box<dyn AsyncRead + Unpin + Send>>;
type Writer = BufWriter<Box<dyn AsyncWrite + Unpin + Send>>;

/// How connections are made: identity, timeout, TLS and SASL.
#[derive(Clone)]
pub struct ConnOptions {
    /// Client id sent with every request.
    pub client_id: String,
    /// Longest wait for a connection or an answer.
    pub timeout: Duration,
    /// TLS, verifying the broker's certificate and name.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// SASL authentication after connecting.
    pub sasl: Option<Credentials>,
}

impl std::fmt::Debug for ConnOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnOptions")
            .field("client_id", &self.client_id)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl.as_ref().map(|c| c.mechanism))
            .finish()
    }
}

/// Largest response frame accepted (a fetch is bounded by its `max_bytes`, far below).
const MAX_FRAME: usize = 256 * 1024 * 1024;

/// The highest version of each API this client speaks. Produce and Fetch stop at their
/// last versions without tagged fields (kafka-protocol refuses tansu 0.6's Fetch v12
/// answers: "Tag 0 is not valid for version 12"); the offsets APIs before the versions
/// that name topics by id only; FindCoordinator before the batched form.
pub(crate) fn ceiling(key: ApiKey) -> i16 {
    match key {
        ApiKey::Produce => 8,
        ApiKey::Fetch => 11,
        ApiKey::ListOffsets => 7,
        ApiKey::Metadata => 12,
        ApiKey::OffsetCommit => 8,
        ApiKey::OffsetFetch => 7,
        ApiKey::FindCoordinator => 3,
        ApiKey::CreateTopics => 7,
        ApiKey::InitProducerId => 4,
        ApiKey::ApiVersions => 3,
        ApiKey::SaslHandshake => 1,
        ApiKey::SaslAuthenticate => 1,
        _ => 0,
    }
}

/// The lowest version this client accepts: record batches (magic 2) need Produce 3 and
/// Fetch 4.
fn floor(key: ApiKey) -> i16 {
    match key {
        ApiKey::Produce => 3,
        ApiKey::Fetch => 4,
        ApiKey::ListOffsets => 1,
        ApiKey::Metadata => 1,
        ApiKey::OffsetCommit => 2,
        ApiKey::OffsetFetch => 1,
        // v0 would carry the SASL bytes outside Kafka's framing.
        ApiKey::SaslHandshake => 1,
        _ => 0,
    }
}

/// A connection to one broker.
pub struct Connection {
    addr: String,
    reader: Reader,
    writer: Writer,
    correlation: i32,
    client_id: StrBytes,
    /// API key → the broker's highest version.
    versions: HashMap<i16, (i16, i16)>,
    timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Connection {
    /// Connect to `addr` (`host:port`) (TLS when `opts` says so), ask for the broker's API
    /// versions, and authenticate (SASL) when `opts` says so.
    pub async fn connect(addr: &str, opts: &ConnOptions) -> Result<Self> {
        let timeout = opts.timeout;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                Error::connect(format!(
                    "kafka: connecting to {addr} timed out after {timeout:?}"
                ))
                .retryable(true)
            })?
            .map_err(|e| {
                Error::connect(format!("kafka: cannot connect to {addr}: {e}")).retryable(true)
            })?;
        let _ = stream.set_nodelay(true);
        let (r, w): (
            Box<dyn AsyncRead + Unpin + Send>,
            Box<dyn AsyncWrite + Unpin + Send>,
        ) = match &opts.tls {
            None => {
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
            Some(cfg) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name =
                    rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
                        Error::config(format!("kafka: `{host}` is not a TLS server name: {e}"))
                    })?;
                let tls = tokio::time::timeout(
                    timeout,
                    tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, stream),
                )
                .await
                .map_err(|_| {
                    Error::connect(format!("kafka: TLS handshake with {addr} timed out"))
                        .retryable(true)
                })?
                .map_err(|e| {
                    Error::connect(format!("kafka: TLS handshake with {addr} failed: {e}"))
                })?;
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w))
            }
        };
        let client_id = opts.client_id.as_str();
        let mut conn = Connection {
            addr: addr.to_string(),
            reader: BufReader::with_capacity(256 * 1024, r),
            writer: BufWriter::with_capacity(256 * 1024, w),
            correlation: 0,
            client_id: StrBytes::from_string(client_id.to_string()),
            versions: HashMap::new(),
            timeout,
        };
        // ApiVersions v0..3 all list the versions; v3 is flexible. Brokers answer an
        // unsupported version with a v0 body, so ask at v2 (every broker since 2.0).
        let resp: ApiVersionsResponse = conn.send_at(&ApiVersionsRequest::default(), 2).await?;
        if resp.error_code != 0 {
            return Err(Error::connect(format!(
                "kafka: {addr} refused ApiVersions: {}",
                code_name(resp.error_code)
            )));
        }
        conn.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if let Some(creds) = &opts.sasl {
            conn.authenticate(creds).await?;
        }
        Ok(conn)
    }

    /// Run the SASL exchange of `creds`.
    async fn authenticate(&mut self, creds: &Credentials) -> Result<()> {
        let mech = creds.mechanism.name();
        let hs = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mech));
        let resp = self.send(&hs).await?;
        if resp.error_code != 0 {
            let offered: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(Error::connect(format!(
                "kafka: {} does not offer SASL {mech} (it offers {}): {}",
                self.addr,
                offered.join(", "),
                code_name(resp.error_code)
            ))
            .retryable(false));
        }
        let (mut conversation, mut msg) = Conversation::start(creds)?;
        loop {
            let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(msg));
            let resp = self.send(&req).await?;
            if resp.error_code != 0 {
                return Err(Error::connect(format!(
                    "kafka: SASL {mech} authentication of `{}` at {} failed: {}{}",
                    creds.username,
                    self.addr,
                    code_name(resp.error_code),
                    resp.error_message
                        .as_ref()
                        .map(|m| format!(": {}", m.as_str()))
                        .unwrap_or_default()
                ))
                .retryable(false));
            }
            match conversation.next(&resp.auth_bytes)? {
                Some(next) => msg = next,
                None => return Ok(()),
            }
        }
    }

    /// The version of `key` to use with this broker, or why there is none.
    pub fn version(&self, key: ApiKey) -> Result<i16> {
        let (min, max) = self.versions.get(&(key as i16)).copied().ok_or_else(|| {
            Error::connect(format!(
                "kafka: broker {} does not support {key:?}",
                self.addr
            ))
        })?;
        let v = max.min(ceiling(key));
        if v < floor(key).max(min) {
            return Err(Error::connect(format!(
                "kafka: broker {} supports {key:?} v{min}..v{max}; this client needs v{}..v{}",
                self.addr,
                floor(key),
                ceiling(key)
            )));
        }
        Ok(v)
    }

    /// Send `req` at the negotiated version and wait for its response.
    pub async fn send<R: Request>(&mut self, req: &R) -> Result<R::Response> {
        let key = ApiKey::try_from(R::KEY)
            .map_err(|_| Error::internal(format!("kafka: unknown API key {}", R::KEY)))?;
        let v = self.version(key)?;
        self.send_at(req, v).await
    }

    /// Send `req` at version `v` and wait for its response.
    pub async fn send_at<R: Request>(&mut self, req: &R, v: i16) -> Result<R::Response> {
        let addr = self.addr.clone();
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.exchange(req, v)).await {
            Ok(r) => r,
            Err(_) => Err(Error::connect(format!(
                "kafka: {addr} did not answer {} within {timeout:?}",
                api_name(R::KEY)
            ))
            .retryable(true)),
        }
    }

    /// Send `req` at the negotiated version without waiting for an answer (a produce
    /// request with `acks: 0`, which the broker does not answer).
    pub async fn send_oneway<R: Request>(&mut self, req: &R) -> Result<()> {
        let key = ApiKey::try_from(R::KEY)
            .map_err(|_| Error::internal(format!("kafka: unknown API key {}", R::KEY)))?;
        let v = self.version(key)?;
        self.write_request(req, v).await.map(|_| ())
    }

    async fn exchange<R: Request>(&mut self, req: &R, v: i16) -> Result<R::Response> {
        let id = self.write_request(req, v).await?;
        self.read_response::<R>(id, v).await
    }

    /// Write one request; its correlation id.
    async fn write_request<R: Request>(&mut self, req: &R, v: i16) -> Result<i32> {
        self.correlation = self.correlation.wrapping_add(1);
        let id = self.correlation;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(v)
            .with_correlation_id(id)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(
            4 + header.compute_size(R::header_version(v)).unwrap_or(32)
                + req.compute_size(v).unwrap_or(1024),
        );
        buf.put_i32(0);
        let enc = |e: String| Error::internal(format!("kafka: encode {}: {e}", api_name(R::KEY)));
        header
            .encode(&mut buf, R::header_version(v))
            .map_err(|e| enc(e.to_string()))?;
        req.encode(&mut buf, v).map_err(|e| enc(e.to_string()))?;
        let len = i32::try_from(buf.len() - 4)
            .map_err(|_| Error::data("kafka: request larger than 2 GiB"))?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let io = |e: std::io::Error| {
            Error::connect(format!("kafka: connection to {} failed: {e}", self.addr))
                .retryable(true)
        };
        self.writer.write_all(&buf).await.map_err(io)?;
        self.writer.flush().await.map_err(io)?;
        Ok(id)
    }

    /// Read the response to request `id`.
    async fn read_response<R: Request>(&mut self, id: i32, v: i16) -> Result<R::Response> {
        let io = |e: std::io::Error| {
            Error::connect(format!("kafka: connection to {} failed: {e}", self.addr))
                .retryable(true)
        };
        let mut frame = loop {
            let len = self.reader.read_i32().await.map_err(io)?;
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= MAX_FRAME && *l >= 4)
                .ok_or_else(|| {
                    Error::connect(format!("kafka: {} sent a frame of {len} bytes", self.addr))
                })?;
            let mut frame = vec![0u8; len];
            self.reader.read_exact(&mut frame).await.map_err(io)?;
            // The correlation id leads every response header version.
            let got = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
            let behind = id.wrapping_sub(got);
            if got != id && (1..1024).contains(&behind) {
                // The answer to an earlier request whose caller stopped waiting (its
                // future was dropped): answers come in order, so skip it.
                tracing::debug!(addr = %self.addr, got, want = id, "kafka: skipping an abandoned answer");
                continue;
            }
            break Bytes::from(frame);
        };
        let dec = |e: String| {
            Error::connect(format!(
                "kafka: cannot decode the {} response of {}: {e}",
                api_name(R::KEY),
                self.addr
            ))
        };
        let rh = ResponseHeader::decode(
            &mut frame,
            <R::Response as HeaderVersion>::header_version(v),
        )
        .map_err(|e| dec(e.to_string()))?;
        if rh.correlation_id != id {
            return Err(Error::connect(format!(
                "kafka: {} answered request {} to request {id}",
                self.addr, rh.correlation_id
            )));
        }
        let resp = R::Response::decode(&mut frame, v).map_err(|e| dec(e.to_string()))?;
        if frame.has_remaining() {
            tracing::trace!(
                left = frame.remaining(),
                api = R::KEY,
                "kafka: response bytes left"
            );
        }
        Ok(resp)
    }
}

/// The name of an API key, for errors.
pub(crate) fn api_name(key: i16) -> String {
    ApiKey::try_from(key)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| format!("API {key}"))
}

/// The name of a Kafka error code (`NOT_LEADER_OR_FOLLOWER (6)`).
pub fn code_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        Some(e) => format!("{e} ({code})"),
        None => format!("error code {code}"),
    }
}

/// Whether a Kafka error code is worth a retry after refreshing metadata.
pub fn code_retriable(code: i16) -> bool {
    kafka_protocol::ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable())
}
