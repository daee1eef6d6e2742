//! The rivven-connect engine.
//!
//! Data is an Arrow [`arrow::array::RecordBatch`] from the moment a source decodes it until
//! a sink encodes it. This crate holds what every connector and the CLI share:
//! - [`batch`]: the batch model and the canonical change-event schema;
//! - [`connector`]: the [`Source`](connector::Source), [`Transform`](connector::Transform)
//!   and [`Sink`](connector::Sink) traits and their delivery contracts;
//! - [`registry`]: the typed connector traits ([`SourceConnector`](registry::SourceConnector),
//!   [`SinkConnector`](registry::SinkConnector)) and connector name → factory, with
//!   catalogue metadata and config schemas;
//! - [`pipelines`]: a loaded file resolved against the registry (each config parsed once);
//! - [`config`]: the pipeline YAML, `${VAR}` substitution, validation with key paths and
//!   line:column positions;
//! - [`topic`]: the embedded topic log (Arrow IPC segments, partitions, retention,
//!   consumer groups);
//! - [`runtime`]: one task per source and per sink, bounded queues, micro-batching,
//!   restarts with backoff, graceful drain;
//! - [`status`]: pipeline status and metrics, served over HTTP.

pub mod batch;
pub mod config;
pub mod connector;
pub mod dead_letter;
pub mod error;
pub mod health;
pub mod pipelines;
pub mod redact;
pub mod registry;
pub mod routing;
pub mod runtime;
pub mod secret;
pub mod status;
pub mod tap;
pub mod topic;

pub use error::{Error, ErrorKind, Origin, Result};

/// `docs/adding-a-connector.md`: its Rust example is compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../docs/adding-a-connector.md")]
pub struct AddingAConnectorDoc;
