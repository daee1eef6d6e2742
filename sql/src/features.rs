//! A source's `cdc_features` block: production features that wrap the `transforms` list.
//!
//! ```yaml
//! config:
//!   cdc_features:
//!     deduplication: { enabled: true, ttl_seconds: 3600, max_entries: 100000 }
//!     encryption:    { enabled: true, fields: [ssn, credit_card] }
//!     tombstones:    { enabled: true, emit_tombstone_after_delete: true }
//!     router:
//!       enabled: true
//!       default_destination: cdc.default
//!       dead_letter_queue: cdc.dlq
//!       rules:
//!         - { condition_type: table, condition_value: orders, destination: cdc.orders, priority: 10 }
//!     partitioner: { enabled: true, num_partitions: 16, strategy: key_hash, key_columns: [id] }
//! ```
//!
//! Each feature is a chain step; they run in this order around the `transforms` list:
//! deduplication → encryption → *transforms* → router → tombstones → partitioner. So
//! duplicates are dropped before any work, no transform sees a plaintext field that is
//! encrypted, routing sees the final rows, a tombstone follows its delete to the delete's
//! topic, and the partitioner puts it in the delete's partition. A feature runs only with
//! `enabled: true`.
//!
//! - **deduplication**: drops an event identical to one seen within `ttl_seconds`
//!   (`window_secs`), remembering the newest `max_entries` (`lru_size`) distinct events, oldest
//!   forgotten first. An event's identity is a 128-bit BLAKE3 hash of all its columns except
//!   the processing time (`ts_ms` of change events, `__ts_ms` of flat rows), with the stream
//!   name for flat rows; identical change events within one transaction (`source.pos`,
//!   `source.txid`: an insert, delete and re-insert of the same row) are told apart by
//!   their ordinal, which a redelivery of the transaction reproduces. A bloom filter
//!   (`bloom_expected_insertions`, `bloom_fpp`; sized for at least twice `max_entries`)
//!   answers "never seen" without a table lookup; an event is dropped only on an exact hash
//!   match, never on a bloom hit alone. Memory: about 48 bytes per remembered event. The
//!   memory belongs to one attempt of the pipeline: a restart or a retry after an error
//!   starts empty (it cannot know which remembered events reached the topic), so it
//!   catches duplicates the source delivers within an attempt.
//! - **encryption**: `encrypt_field` on `fields`, with `algorithm` and `keys` / `active_key` as
//!   there; without `keys`, one key with id `default` from the environment variable
//!   `RIVVEN_ENCRYPTION_KEY`.
//! - **tombstones**: after every delete, a tombstone row for compacted topics: `op` null,
//!   `after` null, `source` and `ts_ms` of the delete, and `before` holding only the record
//!   key columns (`behavior: emit_with_key`, the default; the whole image when the stream has
//!   no declared key) or null (`emit_null`). With tombstones on, `op` and the fields of
//!   both images are nullable. They need change events: a `transforms` list that
//!   flattens rows (`extract_new_record_state`) cannot be combined with them.
//! - **router**: the first rule (highest `priority`, then list order) whose condition holds
//!   sends a row to its `destination`. Rows no rule matches go to `default_destination`;
//!   without one they are dropped (`drop_unroutable`), sent to `dead_letter_queue` with the
//!   reason (`__dlq_*` columns), or keep their topic.
//! - **partitioner**: spreads rows over `num_partitions` partitions of their topic (the
//!   pipeline's topic and the router's destinations are created with that many at start; on
//!   a topic that already has another count, rows go to partition `n % count`, so each key
//!   still maps to one partition): `key_hash` (the record key, or
//!   `key_columns`), `table_hash` (table name), `full_table_hash` (`schema.table`),
//!   `round_robin` (row by row), `sticky` (batch by batch). Hashes are FNV-1a over the
//!   values' text, stable across restarts and machines. Rows keep their order within each
//!   partition; only `key_hash`, `table_hash` and `full_table_hash` keep every key's (table's)
//!   events in one partition, so only they keep per-key order.

use rivven_engine::config::{FieldError, Validate};
use rivven_engine::registry::TopicLayout;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use crate::chain::Step;
use crate::field_list::Names;
use crate::op::Spec;
use crate::transforms::crypto::{Algorithm, EncryptField, KeySource};
use crate::transforms::dedup::Deduplication;
use crate::transforms::event_router::Router;
use crate::transforms::partitioner::Partitioner;
use crate::transforms::tombstones::Tombstones;

/// Where the block sits, relative to a source pipeline's key.
pub const PATH: &str = "config.cdc_features";

/// Environment variable of the default encryption key.
pub const DEFAULT_KEY_ENV: &str = "RIVVEN_ENCRYPTION_KEY";

/// The `cdc_features` block.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CdcFeatures {
    /// Drop repeated events.
    #[serde(default)]
    pub deduplication: Option<Deduplication>,
    /// Encrypt fields.
    #[serde(default)]
    pub encryption: Option<Encryption>,
    /// Tombstones after deletes.
    #[serde(default)]
    pub tombstones: Option<Tombstones>,
    /// Route events by rules.
    #[serde(default)]
    pub router: Option<Router>,
    /// Choose partitions.
    #[serde(default)]
    pub partitioner: Option<Partitioner>,
}

/// Each enabled block is validated by its own transform (when the pipeline is resolved,
/// with paths under its key).
impl Validate for CdcFeatures {}

/// The feature steps, before and after the `transforms` list, and the topics they write.
#[derive(Default)]
pub struct Features {
    before: Vec<Step>,
    after: Vec<Step>,
    layout: Option<TopicLayout>,
}

impl Features {
    /// The whole chain: features before, `list`, features after.
    pub fn around(self, list: Vec<Step>) -> Vec<Step> {
        self.before
            .into_iter()
            .chain(list)
            .chain(self.after)
            .collect()
    }

    /// With an enabled partitioner: its partition count, and the router's destinations.
    pub fn topic_layout(&self) -> Option<TopicLayout> {
        self.layout.clone()
    }
}

/// Parse `cdc_features` (`null`: none) into steps; error paths start with `path`.
pub fn parse(value: &serde_yaml::Value, path: &str) -> Result<Features, Vec<FieldError>> {
    if value.is_null() {
        return Ok(Features::default());
    }
    let f: CdcFeatures = rivven_engine::config::parse(value)
        .map_err(|e| e.into_iter().map(|e| e.under(path)).collect::<Vec<_>>())?;
    let layout = f.partitioner.as_ref().filter(|p| p.enabled).map(|p| {
        let mut topics = Vec::new();
        if let Some(r) = f.router.as_ref().filter(|r| r.enabled) {
            topics.extend(r.rules.iter().map(|r| r.destination.clone()));
            topics.extend(r.default_destination.clone());
        }
        topics.dedup();
        TopicLayout {
            partitions: p.num_partitions,
            topics,
        }
    });
    let mut errs = Vec::new();
    let mut features = Features {
        layout,
        ..Features::default()
    };
    let mut add = |name: &str, spec: Option<Arc<dyn Spec>>, after: bool| {
        let Some(spec) = spec else { return };
        let e = spec.validate();
        if !e.is_empty() {
            errs.extend(e.into_iter().map(|e| e.under(&format!("{path}.{name}"))));
            return;
        }
        let s = Step::new(
            format!("{path}.{name}"),
            format!("cdc_features.{name}"),
            "",
            spec,
            None,
        );
        if after {
            features.after.push(s);
        } else {
            features.before.push(s);
        }
    };
    add(
        "deduplication",
        f.deduplication
            .filter(|d| d.enabled)
            .map(|d| Arc::new(d) as Arc<dyn Spec>),
        false,
    );
    add(
        "encryption",
        f.encryption
            .filter(|e| e.enabled)
            .map(|e| Arc::new(e.into_transform()) as Arc<dyn Spec>),
        false,
    );
    add(
        "router",
        f.router
            .filter(|r| r.enabled)
            .map(|r| Arc::new(r) as Arc<dyn Spec>),
        true,
    );
    add(
        "tombstones",
        f.tombstones
            .filter(|t| t.enabled && t.emit_tombstone_after_delete)
            .map(|t| Arc::new(t) as Arc<dyn Spec>),
        true,
    );
    add(
        "partitioner",
        f.partitioner
            .filter(|p| p.enabled)
            .map(|p| Arc::new(p) as Arc<dyn Spec>),
        true,
    );
    if errs.is_empty() {
        Ok(features)
    } else {
        Err(errs)
    }
}

/// `cdc_features.encryption`: `encrypt_field` with a default key.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// Run it.
    #[serde(default)]
    pub enabled: bool,
    /// Fields to encrypt.
    #[serde(default)]
    pub fields: Names,
    /// Cipher for new data.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Keys (default: id `default` from `RIVVEN_ENCRYPTION_KEY`).
    #[serde(default)]
    pub keys: Option<Vec<KeySource>>,
    /// The key that encrypts new data (default: the first).
    #[serde(default)]
    pub active_key: Option<String>,
}

impl Encryption {
    fn into_transform(self) -> EncryptField {
        EncryptField {
            fields: self.fields,
            algorithm: self.algorithm,
            keys: self.keys.unwrap_or_else(|| {
                vec![KeySource {
                    id: "default".into(),
                    env: Some(DEFAULT_KEY_ENV.into()),
                    file: None,
                }]
            }),
            active_key: self.active_key,
        }
    }
}
