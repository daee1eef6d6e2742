//! A cluster client: bootstrap, metadata (brokers, partitions, leaders), and the requests
//! rivven-connect needs, each sent to the broker that must answer it (the partition's
//! leader, the group's coordinator). Requests that fail with a retriable error code
//! (leadership moved, topic not yet known) refresh the metadata and are retried with
//! backoff, up to [`ClientConfig::retries`] times.

use crate::conn::{code_name, code_retriable, ConnOptions, Connection};
use crate::sasl::Credentials;
use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, FetchRequest, FindCoordinatorRequest, GroupId,
    InitProducerIdRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetFetchRequest, ProduceRequest, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rivven_engine::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// How to reach a cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Client id sent with every request (visible in broker logs and quotas).
    pub client_id: String,
    /// Longest wait for a connection or an answer.
    pub request_timeout: Duration,
    /// Retries of a request that failed with a retriable error.
    pub retries: u32,
    /// First backoff between retries; doubled per retry up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest backoff between retries.
    pub retry_max: Duration,
    /// TLS (verifying the brokers' certificates and names), if any.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// SASL credentials, if any.
    pub sasl: Option<Credentials>,
}

impl ClientConfig {
    /// Defaults for `brokers`: 30 s timeout, 5 retries from 100 ms to 10 s.
    pub fn new(brokers: Vec<String>) -> Self {
        ClientConfig {
            brokers,
            client_id: "rivven-connect".to_string(),
            request_timeout: Duration::from_secs(30),
            retries: 5,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            tls: None,
            sasl: None,
        }
    }
}

/// Where offsets are looked up by [`Client::list_offset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetAt {
    /// The first offset still in the log.
    Earliest,
    /// The offset the next record will get.
    Latest,
    /// The first offset whose timestamp is at or after this time (ms since the epoch);
    /// the latest offset when there is none.
    Time(i64),
}

/// Records of one partition read by [`Client::fetch`].
#[derive(Debug, Default)]
pub struct Fetched {
    /// The records at or after the requested offset, in offset order.
    pub records: Vec<kafka_protocol::records::Record>,
    /// The offset to fetch next (after the last record returned, or after skipped control
    /// records; the requested offset when nothing came).
    pub next_offset: i64,
}

type Shared = Arc<Mutex<Connection>>;

#[derive(Debug, Default)]
struct Meta {
    /// Broker id → `host:port`.
    brokers: HashMap<i32, String>,
    /// Topic → leader broker id per partition (index = partition).
    topics: HashMap<String, Vec<i32>>,
}

/// A client of one cluster. Cheap to share behind an `Arc`; requests to one broker are
/// sent one at a time over its connection.
pub struct Client {
    cfg: ClientConfig,
    meta: Mutex<Meta>,
    conns: Mutex<HashMap<i32, Shared>>,
    /// A connection to any broker, for metadata and cluster-wide requests.
    any: Mutex<Option<Shared>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("brokers", &self.cfg.brokers)
            .finish()
    }
}

fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

impl Client {
    /// Connect to the first reachable bootstrap broker and read the cluster's brokers.
    pub async fn connect(cfg: ClientConfig) -> Result<Self> {
        if cfg.brokers.is_empty() {
            return Err(Error::config("kafka: no brokers given"));
        }
        let client = Client {
            cfg,
            meta: Mutex::new(Meta::default()),
            conns: Mutex::new(HashMap::new()),
            any: Mutex::new(None),
        };
        client.refresh(&[]).await?;
        Ok(client)
    }

    fn conn_options(&self) -> ConnOptions {
        ConnOptions {
            client_id: self.cfg.client_id.clone(),
            timeout: self.cfg.request_timeout,
            tls: self.cfg.tls.clone(),
            sasl: self.cfg.sasl.clone(),
        }
    }

    async fn any(&self) -> Result<Shared> {
        let mut any = self.any.lock().await;
        if let Some(c) = any.as_ref() {
            return Ok(c.clone());
        }
        let mut last = None;
        for addr in &self.cfg.brokers {
            match Connection::connect(addr, &self.conn_options()).await {
                Ok(c) => {
                    let c = Arc::new(Mutex::new(c));
                    *any = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::config("kafka: no brokers given")))
    }

    /// Forget a connection that failed, so the next request reconnects.
    async fn drop_conn(&self, id: Option<i32>) {
        match id {
            Some(id) => {
                self.conns.lock().await.remove(&id);
            }
            None => *self.any.lock().await = None,
        }
    }

    /// Send `req` over `conn` (broker `id`; `None`: the bootstrap connection). A failed
    /// exchange (connection lost, timeout, a frame that does not decode) forgets the
    /// connection: its framing can no longer be trusted. Broker error codes inside a
    /// response are the caller's to check.
    async fn call<R: kafka_protocol::protocol::Request>(
        &self,
        id: Option<i32>,
        conn: &Shared,
        req: &R,
    ) -> Result<R::Response> {
        let r = conn.lock().await.send(req).await;
        if r.is_err() {
            self.drop_conn(id).await;
        }
        r
    }

    async fn broker(&self, id: i32) -> Result<Shared> {
        if let Some(c) = self.conns.lock().await.get(&id) {
            return Ok(c.clone());
        }
        let addr = self.meta.lock().await.brokers.get(&id).cloned();
        let addr = match addr {
            Some(a) => a,
            None => {
                self.refresh(&[]).await?;
                self.meta
                    .lock()
                    .await
                    .brokers
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| {
                        Error::connect(format!("kafka: broker {id} is not in the metadata"))
                            .retryable(true)
                    })?
            }
        };
        let c = Connection::connect(&addr, &self.conn_options()).await?;
        let c = Arc::new(Mutex::new(c));
        self.conns.lock().await.insert(id, c.clone());
        Ok(c)
    }

    /// Read the brokers and the partitions of `topics` (none: brokers only).
    pub async fn refresh(&self, topics: &[String]) -> Result<()> {
        let conn = self.any().await?;
        let req = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        let resp = self.call(None, &conn, &req).await?;
        let mut meta = self.meta.lock().await;
        for b in resp.brokers {
            meta.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        for t in resp.topics {
            let Some(name) = t.name else { continue };
            let name = name.0.to_string();
            if t.error_code != 0 {
                meta.topics.remove(&name);
                continue;
            }
            let mut leaders = vec![-1; t.partitions.len()];
            for p in t.partitions {
                if let Some(slot) = usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| leaders.get_mut(i))
                {
                    *slot = p.leader_id.0;
                }
            }
            meta.topics.insert(name, leaders);
        }
        Ok(())
    }

    /// The names of every topic of the cluster (internal ones excluded).
    pub async fn topics(&self) -> Result<Vec<String>> {
        let conn = self.any().await?;
        let req = MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false);
        let resp = self.call(None, &conn, &req).await?;
        Ok(resp
            .topics
            .into_iter()
            .filter(|t| t.error_code == 0 && !t.is_internal)
            .filter_map(|t| t.name.map(|n| n.0.to_string()))
            .collect())
    }

    /// The partition count of `topic`, `None` when it does not exist.
    pub async fn partitions(&self, topic: &str) -> Result<Option<usize>> {
        if let Some(p) = self.meta.lock().await.topics.get(topic) {
            return Ok(Some(p.len()));
        }
        self.refresh(&[topic.to_string()]).await?;
        Ok(self.meta.lock().await.topics.get(topic).map(Vec::len))
    }

    /// Create `topic` with `partitions` partitions (replication: the broker's default)
    /// and `configs` unless it exists; its partition count either way.
    pub async fn ensure_topic(
        &self,
        topic: &str,
        partitions: u32,
        configs: &[(&str, &str)],
    ) -> Result<usize> {
        if let Some(n) = self.partitions(topic).await? {
            return Ok(n);
        }
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(i32::try_from(partitions).unwrap_or(i32::MAX))
                .with_replication_factor(-1)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.to_string()))
                                .with_value(Some(StrBytes::from_string(v.to_string())))
                        })
                        .collect(),
                )]);
        let conn = self.any().await?;
        let resp = self.call(None, &conn, &req).await?;
        for t in &resp.topics {
            // TOPIC_ALREADY_EXISTS (36): created meanwhile by someone else.
            if t.error_code != 0 && t.error_code != 36 {
                return Err(Error::connect(format!(
                    "kafka: cannot create topic {topic}: {}{}",
                    code_name(t.error_code),
                    t.error_message
                        .as_ref()
                        .map(|m| format!(": {}", m.as_str()))
                        .unwrap_or_default()
                )));
            }
        }
        // The new topic's leaders may take a moment to appear in the metadata.
        for attempt in 0..50u32 {
            self.refresh(&[topic.to_string()]).await?;
            if let Some(p) = self.meta.lock().await.topics.get(topic) {
                if p.iter().all(|l| *l >= 0) {
                    return Ok(p.len());
                }
            }
            tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt.min(10) + 1))).await;
        }
        Err(Error::connect(format!(
            "kafka: topic {topic} was created but has no leaders yet"
        ))
        .retryable(true))
    }

    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.cfg.request_timeout.as_millis()).unwrap_or(i32::MAX)
    }

    async fn leader(&self, topic: &str, partition: i32) -> Result<i32> {
        for _ in 0..2 {
            let known = self.meta.lock().await.topics.get(topic).and_then(|p| {
                usize::try_from(partition)
                    .ok()
                    .and_then(|i| p.get(i))
                    .copied()
            });
            match known {
                Some(l) if l >= 0 => return Ok(l),
                _ => self.refresh(&[topic.to_string()]).await?,
            }
        }
        Err(Error::connect(format!(
            "kafka: no leader for {topic}/{partition} (unknown topic or partition)"
        ))
        .retryable(true))
    }

    /// Run `op` with retries: a retriable failure (connection lost, leadership moved)
    /// refreshes the metadata, waits and tries again.
    async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut wait = self.cfg.retry_initial;
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.cfg.retries => {
                    attempt += 1;
                    tracing::debug!(%what, attempt, error = %e, "kafka: retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.cfg.retry_max);
                    let _ = self.refresh(&[]).await;
                    self.meta.lock().await.topics.clear();
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn on_leader<T, F, Fut>(&self, topic: &str, partition: i32, f: F) -> Result<T>
    where
        F: FnOnce(Shared) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let id = self.leader(topic, partition).await?;
        let conn = self.broker(id).await?;
        let r = f(conn).await;
        if matches!(&r, Err(e) if e.kind() == rivven_engine::ErrorKind::Connect) {
            self.drop_conn(Some(id)).await;
        }
        r
    }

    /// Append record batches (see [`crate::records::encode`]) to partitions of `topic`,
    /// one request per leader; the base offset of each, in the order given. `acks`: 0, 1
    /// or -1 (all in-sync replicas). With `acks: 0` the broker does not answer and the
    /// offsets are -1.
    pub async fn produce(
        &self,
        topic: &str,
        batches: &[(i32, Bytes)],
        acks: i16,
    ) -> Result<Vec<i64>> {
        let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, (p, _)) in batches.iter().enumerate() {
            let leader = self.leader(topic, *p).await?;
            by_leader.entry(leader).or_default().push(i);
        }
        let mut out = vec![-1i64; batches.len()];
        for (_, idx) in by_leader {
            let part: Vec<(i32, Bytes)> = idx.iter().map(|&i| batches[i].clone()).collect();
            let offsets = self
                .retrying("produce", || self.produce_to_leader(topic, &part, acks))
                .await?;
            for (k, &i) in idx.iter().enumerate() {
                out[i] = offsets[k];
            }
        }
        Ok(out)
    }

    async fn produce_to_leader(
        &self,
        topic: &str,
        batches: &[(i32, Bytes)],
        acks: i16,
    ) -> Result<Vec<i64>> {
        let first = batches.first().map(|b| b.0).unwrap_or(0);
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(self.timeout_ms())
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(
                    batches
                        .iter()
                        .map(|(p, b)| {
                            PartitionProduceData::default()
                                .with_index(*p)
                                .with_records(Some(b.clone()))
                        })
                        .collect(),
                )]);
        if acks == 0 {
            // The broker does not answer: nothing is known of the offsets.
            self.on_leader(topic, first, |conn| async move {
                conn.lock().await.send_oneway(&req).await
            })
            .await?;
            return Ok(vec![-1; batches.len()]);
        }
        let resp = self
            .on_leader(topic, first, |conn| async move {
                conn.lock().await.send(&req).await
            })
            .await?;
        let mut out = Vec::with_capacity(batches.len());
        for (p, _) in batches {
            let r = resp
                .responses
                .iter()
                .flat_map(|t| t.partition_responses.iter())
                .find(|r| r.index == *p)
                .ok_or_else(|| {
                    Error::connect(format!("kafka: no produce answer for {topic}/{p}"))
                })?;
            // DUPLICATE_SEQUENCE_NUMBER: an idempotent batch the broker already has (this
            // is a retry of a request whose answer was lost); it is written once.
            if r.error_code != 0 && r.error_code != 46 {
                let msg = r
                    .error_message
                    .as_ref()
                    .map(|m| format!(": {}", m.as_str()))
                    .unwrap_or_default();
                return Err(Error::connect(format!(
                    "kafka: produce to {topic}/{p} failed: {}{msg}",
                    code_name(r.error_code)
                ))
                .retryable(code_retriable(r.error_code)));
            }
            out.push(r.base_offset);
        }
        Ok(out)
    }

    /// Read records of `topic`/`partition` from `offset`, at most about `max_bytes`,
    /// waiting up to `max_wait` for at least one byte.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<Fetched> {
        let mut got = self
            .fetch_many(
                &[(topic.to_string(), partition, offset)],
                max_bytes,
                max_wait,
            )
            .await?;
        Ok(got.pop().map(|g| g.2).unwrap_or_default())
    }

    /// Read records of several partitions (topic, partition, offset), at most about
    /// `max_bytes` each: one request per leader, each waiting up to `max_wait` for at
    /// least one byte. The answers in the order asked.
    pub async fn fetch_many(
        &self,
        wanted: &[(String, i32, i64)],
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<Vec<(String, i32, Fetched)>> {
        self.retrying("fetch", || async {
            let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
            for (i, (t, p, _)) in wanted.iter().enumerate() {
                by_leader
                    .entry(self.leader(t, *p).await?)
                    .or_default()
                    .push(i);
            }
            let mut out: Vec<Option<Fetched>> = (0..wanted.len()).map(|_| None).collect();
            for (leader, idx) in by_leader {
                let asked: Vec<&(String, i32, i64)> = idx.iter().map(|&i| &wanted[i]).collect();
                let got = self.fetch_from(leader, &asked, max_bytes, max_wait).await?;
                for (k, f) in idx.into_iter().zip(got) {
                    out[k] = Some(f);
                }
            }
            Ok(wanted
                .iter()
                .zip(out)
                .map(|((t, p, _), f)| (t.clone(), *p, f.unwrap_or_default()))
                .collect())
        })
        .await
    }

    async fn fetch_from(
        &self,
        leader: i32,
        asked: &[&(String, i32, i64)],
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<Vec<Fetched>> {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for (t, p, o) in asked {
            let part = FetchPartition::default()
                .with_partition(*p)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(*o)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(max_bytes);
            match topics.iter_mut().find(|f| f.topic.0.as_str() == t.as_str()) {
                Some(f) => f.partitions.push(part),
                None => topics.push(
                    FetchTopic::default()
                        .with_topic(topic_name(t))
                        .with_partitions(vec![part]),
                ),
            }
        }
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX))
            .with_min_bytes(1)
            .with_max_bytes(max_bytes.saturating_mul(i32::try_from(asked.len()).unwrap_or(1)))
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(topics);
        let conn = self.broker(leader).await?;
        let resp = conn.lock().await.send(&req).await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                if e.kind() == rivven_engine::ErrorKind::Connect {
                    self.drop_conn(Some(leader)).await;
                }
                return Err(e);
            }
        };
        if resp.error_code != 0 {
            return Err(Error::connect(format!(
                "kafka: fetch failed: {}",
                code_name(resp.error_code)
            ))
            .retryable(code_retriable(resp.error_code)));
        }
        let mut out = Vec::with_capacity(asked.len());
        for (topic, partition, offset) in asked {
            let p = resp
                .responses
                .iter()
                .filter(|t| t.topic.0.as_str() == topic.as_str())
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == *partition)
                .ok_or_else(|| {
                    Error::connect(format!("kafka: no fetch answer for {topic}/{partition}"))
                })?;
            if p.error_code != 0 {
                // OFFSET_OUT_OF_RANGE (1) is not retriable: the caller decides.
                return Err(Error::connect(format!(
                    "kafka: fetch from {topic}/{partition} at offset {offset} failed: {}",
                    code_name(p.error_code)
                ))
                .retryable(code_retriable(p.error_code)));
            }
            let mut fetched = Fetched {
                records: Vec::new(),
                next_offset: *offset,
            };
            if let Some(bytes) = p.records.clone() {
                let (records, next) = crate::records::decode(bytes, *offset)?;
                fetched.records = records;
                fetched.next_offset = next.max(*offset);
            }
            out.push(fetched);
        }
        Ok(out)
    }

    /// The offset of `topic`/`partition` at `at`.
    pub async fn list_offset(&self, topic: &str, partition: i32, at: OffsetAt) -> Result<i64> {
        let ts = match at {
            OffsetAt::Earliest => -2,
            OffsetAt::Latest => -1,
            OffsetAt::Time(ms) => ms,
        };
        let off = self
            .retrying("list offsets", || async {
                let req = ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(vec![ListOffsetsTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(vec![ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(ts)])]);
                let resp = self
                    .on_leader(topic, partition, |conn| async move {
                        conn.lock().await.send(&req).await
                    })
                    .await?;
                let p = resp
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == partition)
                    .ok_or_else(|| {
                        Error::connect(format!("kafka: no offsets answer for {topic}/{partition}"))
                    })?;
                if p.error_code != 0 {
                    return Err(Error::connect(format!(
                        "kafka: list offsets of {topic}/{partition}: {}",
                        code_name(p.error_code)
                    ))
                    .retryable(code_retriable(p.error_code)));
                }
                Ok(p.offset)
            })
            .await?;
        if off < 0 {
            // No record at or after the time: start at the end.
            return Box::pin(self.list_offset(topic, partition, OffsetAt::Latest)).await;
        }
        Ok(off)
    }

    /// A new idempotent producer identity (InitProducerId without a transactional id):
    /// producer id and epoch.
    pub async fn init_producer_id(&self) -> Result<(i64, i16)> {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(-1)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        self.retrying("init producer id", || async {
            let conn = self.any().await?;
            let resp = self.call(None, &conn, &req).await?;
            if resp.error_code != 0 {
                return Err(Error::connect(format!(
                    "kafka: no producer id: {}",
                    code_name(resp.error_code)
                ))
                .retryable(code_retriable(resp.error_code)));
            }
            Ok((resp.producer_id.0, resp.producer_epoch))
        })
        .await
    }

    async fn coordinator(&self, group: &str) -> Result<(i32, Shared)> {
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0);
        let conn = self.any().await?;
        let resp = self.call(None, &conn, &req).await?;
        if resp.error_code != 0 {
            return Err(Error::connect(format!(
                "kafka: no coordinator for group {group}: {}",
                code_name(resp.error_code)
            ))
            .retryable(code_retriable(resp.error_code)));
        }
        let id = resp.node_id.0;
        let addr = format!("{}:{}", resp.host.as_str(), resp.port);
        self.meta.lock().await.brokers.entry(id).or_insert(addr);
        Ok((id, self.broker(id).await?))
    }

    /// Commit `offsets` (topic, partition, next offset to read) for `group` as a
    /// standalone consumer (no group membership: generation -1).
    pub async fn commit_offsets(&self, group: &str, offsets: &[(String, i32, i64)]) -> Result<()> {
        let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for (t, p, o) in offsets {
            by_topic.entry(t.as_str()).or_default().push((*p, *o));
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::new())
            .with_retention_time_ms(-1)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(topic_name(t))
                            .with_partitions(
                                ps.into_iter()
                                    .map(|(p, o)| {
                                        OffsetCommitRequestPartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(o)
                                            .with_committed_leader_epoch(-1)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        self.retrying("commit offsets", || async {
            let (id, conn) = self.coordinator(group).await?;
            let resp = self.call(Some(id), &conn, &req).await?;
            for t in &resp.topics {
                for p in &t.partitions {
                    if p.error_code != 0 {
                        return Err(Error::connect(format!(
                            "kafka: committing offsets of group {group} ({}/{}): {}",
                            t.name.0.as_str(),
                            p.partition_index,
                            code_name(p.error_code)
                        ))
                        .retryable(code_retriable(p.error_code)));
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// The offsets `group` committed for `partitions` of `topic` (absent: none).
    pub async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>> {
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(topic_name(topic))
                .with_partition_indexes(partitions.to_vec())]));
        self.retrying("fetch offsets", || async {
            let (id, conn) = self.coordinator(group).await?;
            let resp = self.call(Some(id), &conn, &req).await?;
            if resp.error_code != 0 {
                return Err(Error::connect(format!(
                    "kafka: reading offsets of group {group}: {}",
                    code_name(resp.error_code)
                ))
                .retryable(code_retriable(resp.error_code)));
            }
            Ok(resp
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .filter(|p| p.error_code == 0 && p.committed_offset >= 0)
                .map(|p| (p.partition_index, p.committed_offset))
                .collect())
        })
        .await
    }
}
