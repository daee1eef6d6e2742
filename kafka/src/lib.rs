//! The Kafka protocol client of rivven-connect, and the mapping between rows and records.
//!
//! Written on the `kafka-protocol` crate's message types and record batch codec, over
//! one plain TCP connection per broker:
//!
//! - [`conn`]: framing, API version negotiation, TLS (rustls), one request in flight per
//!   connection;
//! - [`sasl`]: SASL PLAIN and SCRAM-SHA-256/512 authentication;
//! - [`client`]: bootstrap and metadata, then produce, fetch, list offsets, create
//!   topics, and a group's committed offsets, each sent to the broker that must answer,
//!   retried with backoff after retriable errors;
//! - [`debezium`]: change events as Debezium's keys, values and tombstones;
//! - [`records`]: record batches (magic 2) with none, gzip, snappy, lz4 or zstd;
//! - [`settings`]: the connection keys both Kafka connectors share;
//! - [`codec`]: Arrow rows to records (JSON values written from the columns, keys,
//!   headers, timestamps, the Java client's partitioner) and records to rows.
//!
//! Why not rskafka: its connections and protocol types are private, so the requests it
//! lacks (group offsets, idempotent producers, group membership next) could not share
//! its connections; one client on `kafka-protocol` covers all of them.
//!
//! Not yet here: consumer group membership (JoinGroup/SyncGroup/Heartbeat).

pub mod client;
pub mod codec;
pub mod conn;
pub mod debezium;
mod json;
pub mod records;
pub mod sasl;
pub mod settings;

pub use client::{Client, ClientConfig, Fetched, OffsetAt};
pub use codec::{Decoded, Decoder, EncodeOptions, Encoder, ValueFormat};
pub use debezium::{DebeziumOptions, DecimalHandling, Envelope};
pub use kafka_protocol::records::Record;
pub use records::Codec;
