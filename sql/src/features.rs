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

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, StructArray, UInt32Array,
};
use arrow::compute::{cast, filter_record_batch, nullif, take_record_batch};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use rivven_engine::batch::{is_change_event_schema, op, META_KEY, META_NAMESPACE, META_STREAM};
use rivven_engine::config::FieldError;
use rivven_engine::connector::{PartitionChoice, Routed};
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::chain::{dead_letter_rows, push_kept, split_by, Ctx, Op, Step};
use crate::image::{self, path_column};
use crate::predicate::{FieldValue, Operation, PredicateConfig};
use crate::transforms::crypto::{Algorithm, EncryptField, KeySource};
use crate::transforms::{Names, Spec};
use crate::Result;

/// Where the block sits, relative to a source pipeline's key.
pub const PATH: &str = "config.cdc_features";

/// Environment variable of the default encryption key.
pub const DEFAULT_KEY_ENV: &str = "RIVVEN_ENCRYPTION_KEY";

/// The `cdc_features` block.
#[derive(Debug, Clone, Default, Deserialize)]
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

/// The feature steps, before and after the `transforms` list.
#[derive(Default)]
pub struct Plan {
    before: Vec<Step>,
    after: Vec<Step>,
}

impl Plan {
    /// The whole chain: features before, `list`, features after.
    pub fn around(self, list: Vec<Step>) -> Vec<Step> {
        self.before
            .into_iter()
            .chain(list)
            .chain(self.after)
            .collect()
    }
}

fn step(path: &str, name: &str, spec: Box<dyn Spec>) -> Step {
    Step::new(
        format!("{path}.{name}"),
        format!("cdc_features.{name}"),
        "",
        spec,
        None,
    )
}

/// Parse `cdc_features` (`null`: none) into steps; error paths start with `path`.
pub fn parse(value: &serde_yaml::Value, path: &str) -> std::result::Result<Plan, Vec<FieldError>> {
    if value.is_null() {
        return Ok(Plan::default());
    }
    let f: CdcFeatures = rivven_engine::registry::parse_value(value)
        .map_err(|e| e.into_iter().map(|e| e.under(path)).collect::<Vec<_>>())?;
    let mut errs = Vec::new();
    let mut plan = Plan::default();
    let mut add = |name: &str, spec: Option<Box<dyn Spec>>, after: bool| {
        let Some(spec) = spec else { return };
        let e = spec.validate();
        if !e.is_empty() {
            errs.extend(e.into_iter().map(|e| e.under(&format!("{path}.{name}"))));
            return;
        }
        let s = step(path, name, spec);
        if after {
            plan.after.push(s);
        } else {
            plan.before.push(s);
        }
    };
    add(
        "deduplication",
        f.deduplication
            .filter(|d| d.enabled)
            .map(|d| Box::new(d) as Box<dyn Spec>),
        false,
    );
    add(
        "encryption",
        f.encryption
            .filter(|e| e.enabled)
            .map(|e| Box::new(e.into_transform()) as Box<dyn Spec>),
        false,
    );
    add(
        "router",
        f.router
            .filter(|r| r.enabled)
            .map(|r| Box::new(r) as Box<dyn Spec>),
        true,
    );
    add(
        "tombstones",
        f.tombstones
            .filter(|t| t.enabled && t.emit_tombstone_after_delete)
            .map(|t| Box::new(t) as Box<dyn Spec>),
        true,
    );
    add(
        "partitioner",
        f.partitioner
            .filter(|p| p.enabled)
            .map(|p| Box::new(p) as Box<dyn Spec>),
        true,
    );
    if errs.is_empty() {
        Ok(plan)
    } else {
        Err(errs)
    }
}

/// Feature steps never carry a `predicate:`; a mask here is a bug.
fn no_predicate(mask: Option<&BooleanArray>) -> Result<()> {
    match mask {
        None => Ok(()),
        Some(_) => Err(rivven_engine::Error::internal(
            "cdc_features steps take no predicate",
        )),
    }
}

/// With an enabled partitioner: its partition count, and the router's destinations.
pub fn topic_layout(value: &serde_yaml::Value) -> Option<rivven_engine::registry::TopicLayout> {
    if value.is_null() {
        return None;
    }
    let f: CdcFeatures = rivven_engine::registry::parse_value(value).ok()?;
    let p = f.partitioner.filter(|p| p.enabled)?;
    let mut topics = Vec::new();
    if let Some(r) = f.router.filter(|r| r.enabled) {
        topics.extend(r.rules.into_iter().map(|r| r.destination));
        topics.extend(r.default_destination);
    }
    topics.dedup();
    Some(rivven_engine::registry::TopicLayout {
        partitions: p.num_partitions,
        topics,
    })
}

// ---------------------------------------------------------------------------------------
// deduplication

fn default_ttl() -> u64 {
    3600
}
fn default_max_entries() -> usize {
    100_000
}
fn default_bloom_n() -> u64 {
    100_000
}
fn default_bloom_fpp() -> f64 {
    0.01
}

/// `cdc_features.deduplication`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deduplication {
    /// Run it.
    #[serde(default)]
    pub enabled: bool,
    /// How long an event is remembered, in seconds.
    #[serde(default = "default_ttl", alias = "window_secs")]
    pub ttl_seconds: u64,
    /// How many distinct events are remembered.
    #[serde(default = "default_max_entries", alias = "lru_size")]
    pub max_entries: usize,
    /// Bloom filter size, in expected distinct events.
    #[serde(default = "default_bloom_n")]
    pub bloom_expected_insertions: u64,
    /// Bloom filter false-positive rate.
    #[serde(default = "default_bloom_fpp")]
    pub bloom_fpp: f64,
    /// Shared by the ops compiled for each schema.
    #[serde(skip)]
    state: Arc<Mutex<Option<DedupState>>>,
}

impl std::fmt::Debug for Deduplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deduplication")
            .field("enabled", &self.enabled)
            .field("ttl_seconds", &self.ttl_seconds)
            .field("max_entries", &self.max_entries)
            .field("bloom_expected_insertions", &self.bloom_expected_insertions)
            .field("bloom_fpp", &self.bloom_fpp)
            .finish()
    }
}

impl Spec for Deduplication {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.ttl_seconds == 0 || self.ttl_seconds > 365 * 86_400 {
            errs.push(FieldError::new("ttl_seconds", "between 1 and 31536000"));
        }
        if self.max_entries == 0 || self.max_entries > 100_000_000 {
            errs.push(FieldError::new("max_entries", "between 1 and 100000000"));
        }
        if self.bloom_expected_insertions == 0 || self.bloom_expected_insertions > 1_000_000_000 {
            errs.push(FieldError::new(
                "bloom_expected_insertions",
                "between 1 and 1000000000",
            ));
        }
        if !(self.bloom_fpp > 0.0 && self.bloom_fpp < 1.0) {
            errs.push(FieldError::new("bloom_fpp", "between 0 and 1, exclusive"));
        }
        errs
    }

    fn compile(&self, input: &SchemaRef) -> std::result::Result<Arc<dyn Op>, FieldError> {
        let skip = if is_change_event_schema(input) {
            "ts_ms"
        } else {
            "__ts_ms"
        };
        let columns: Vec<usize> = (0..input.fields().len())
            .filter(|&i| input.field(i).name() != skip)
            .collect();
        let sort_fields = columns
            .iter()
            .map(|&i| SortField::new(input.field(i).data_type().clone()))
            .collect();
        let converter = RowConverter::new(sort_fields).map_err(|e| {
            FieldError::new("", format!("cannot compare events of this schema: {e}"))
        })?;
        let mut prefix = Vec::new();
        if !is_change_event_schema(input) {
            for key in [META_NAMESPACE, META_STREAM] {
                prefix
                    .extend_from_slice(input.metadata().get(key).map_or(&[][..], |v| v.as_bytes()));
                prefix.push(0xff);
            }
        }
        let mut state = self
            .state
            .lock()
            .map_err(|_| FieldError::new("", "deduplication state poisoned"))?;
        if state.is_none() {
            *state = Some(DedupState::new(self));
        }
        let txn_paths = (is_change_event_schema(input)
            && image::path_type(input, "source.pos").is_some()
            && image::path_type(input, "source.txid").is_some())
        .then_some(["source.pos", "source.txid"]);
        Ok(Arc::new(DedupOp {
            schema: input.clone(),
            txn_paths,
            columns,
            converter,
            prefix,
            state: self.state.clone(),
        }))
    }
}

/// A bloom filter over 128-bit hashes (double hashing of the two halves).
struct Bloom {
    bits: Vec<u64>,
    k: u32,
    inserted: u64,
    capacity: u64,
}

impl Bloom {
    fn new(capacity: u64, fpp: f64) -> Self {
        let ln2 = std::f64::consts::LN_2;
        let m = ((-(capacity as f64) * fpp.ln()) / (ln2 * ln2))
            .ceil()
            .max(64.0) as u64;
        let k = ((m as f64 / capacity as f64) * ln2)
            .round()
            .clamp(1.0, 16.0) as u32;
        Self {
            bits: vec![0; m.div_ceil(64) as usize],
            k,
            inserted: 0,
            capacity,
        }
    }

    fn positions(&self, h: u128) -> impl Iterator<Item = usize> + '_ {
        let m = (self.bits.len() * 64) as u64;
        let (a, b) = (h as u64, ((h >> 64) as u64) | 1);
        (0..u64::from(self.k)).map(move |i| (a.wrapping_add(i.wrapping_mul(b)) % m) as usize)
    }

    fn maybe_contains(&self, h: u128) -> bool {
        self.positions(h)
            .all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }

    fn insert(&mut self, h: u128) {
        let ps: Vec<usize> = self.positions(h).collect();
        for p in ps {
            self.bits[p / 64] |= 1 << (p % 64);
        }
        self.inserted += 1;
    }

    fn clear(&mut self) {
        self.bits.iter_mut().for_each(|w| *w = 0);
        self.inserted = 0;
    }
}

/// What deduplication remembers: hash → first sighting, in sighting order.
struct DedupState {
    /// The transaction (`source.pos`, `source.txid`) of the last change event.
    txn: Option<u128>,
    /// How often each event hash occurred so far in that transaction: identical changes
    /// within one transaction (insert, delete, insert of the same row) are told apart by
    /// their ordinal, which a redelivery of the transaction reproduces.
    occurrences: HashMap<u128, u32>,
    bloom: Bloom,
    seen: HashMap<u128, Instant>,
    order: VecDeque<(u128, Instant)>,
    ttl: Duration,
    max: usize,
    dropped: u64,
}

impl DedupState {
    fn new(cfg: &Deduplication) -> Self {
        Self {
            // Room for twice what is remembered: a rebuild (from the remembered events)
            // then leaves half the filter free, so rebuilds stay rare.
            bloom: Bloom::new(
                cfg.bloom_expected_insertions
                    .max(2 * cfg.max_entries as u64),
                cfg.bloom_fpp,
            ),
            seen: HashMap::new(),
            txn: None,
            occurrences: HashMap::new(),
            order: VecDeque::new(),
            ttl: Duration::from_secs(cfg.ttl_seconds),
            max: cfg.max_entries,
            dropped: 0,
        }
    }

    /// Forget what expired or exceeds the size bound.
    fn evict(&mut self, now: Instant) {
        while let Some(&(h, at)) = self.order.front() {
            if self.order.len() <= self.max && now.duration_since(at) < self.ttl {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&h) == Some(&at) {
                self.seen.remove(&h);
            }
        }
    }

    /// Whether `h` is new (and remember it).
    fn first_sighting(&mut self, h: u128, now: Instant) -> bool {
        if self.bloom.maybe_contains(h) {
            if let Some(&at) = self.seen.get(&h) {
                if now.duration_since(at) < self.ttl {
                    return false;
                }
            }
        }
        self.seen.insert(h, now);
        self.order.push_back((h, now));
        if self.bloom.inserted >= self.bloom.capacity {
            // A full filter answers "maybe" too often: rebuild it from what is remembered.
            self.bloom.clear();
            let hs: Vec<u128> = self.seen.keys().copied().collect();
            for h in hs {
                self.bloom.insert(h);
            }
        }
        self.bloom.insert(h);
        true
    }
}

/// Row `i` of `a` as bytes (a NUL byte for null, which text values never are).
fn nullable_bytes(a: &StringArray, i: usize) -> &[u8] {
    if a.is_valid(i) {
        a.value(i).as_bytes()
    } else {
        b"\0"
    }
}

struct DedupOp {
    schema: SchemaRef,
    /// Change events: where the transaction is (`source.pos`, `source.txid`).
    txn_paths: Option<[&'static str; 2]>,
    columns: Vec<usize>,
    converter: RowConverter,
    prefix: Vec<u8>,
    state: Arc<Mutex<Option<DedupState>>>,
}

impl DedupOp {
    /// Rows to keep: not selected, or seen for the first time.
    fn keep(&self, batch: &RecordBatch, mask: Option<&BooleanArray>) -> Result<BooleanArray> {
        let cols: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = self.converter.convert_columns(&cols)?;
        let txn: Option<Vec<StringArray>> = match self.txn_paths {
            None => None,
            Some(paths) => Some(
                paths
                    .iter()
                    .map(|p| {
                        let c = path_column(batch, p)
                            .ok_or_else(|| rivven_engine::Error::internal(format!("no `{p}`")))?;
                        Ok(cast(&c, &DataType::Utf8)?.as_string::<i32>().clone())
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        let hash = |parts: &[&[u8]]| -> u128 {
            let mut hasher = blake3::Hasher::new();
            for p in parts {
                hasher.update(&(p.len() as u64).to_le_bytes());
                hasher.update(p);
            }
            let mut b = [0u8; 16];
            b.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
            u128::from_le_bytes(b)
        };
        let now = Instant::now();
        let mut guard = self
            .state
            .lock()
            .map_err(|_| rivven_engine::Error::internal("deduplication state poisoned"))?;
        let state = guard
            .as_mut()
            .ok_or_else(|| rivven_engine::Error::internal("deduplication state missing"))?;
        state.evict(now);
        let mut keep = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            if mask.is_some_and(|m| !m.value(i)) {
                keep.push(true);
                continue;
            }
            let mut id = hash(&[&self.prefix, rows.row(i).as_ref()]);
            if let Some(t) = &txn {
                let key = hash(&[nullable_bytes(&t[0], i), nullable_bytes(&t[1], i)]);
                if state.txn != Some(key) {
                    state.txn = Some(key);
                    state.occurrences.clear();
                }
                let k = state.occurrences.entry(id).or_insert(0);
                if *k > 0 {
                    let ordinal = k.to_le_bytes();
                    id = hash(&[&id.to_le_bytes(), &ordinal]);
                }
                *k += 1;
            }
            let new = state.first_sighting(id, now);
            if !new {
                state.dropped += 1;
            }
            keep.push(new);
        }
        let dropped = keep.iter().filter(|k| !**k).count();
        if dropped > 0 {
            tracing::debug!(
                dropped,
                total_dropped = state.dropped,
                "deduplication dropped repeated events"
            );
        }
        Ok(BooleanArray::from(keep))
    }
}

impl Op for DedupOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        let keep = self.keep(batch, None)?;
        Ok(filter_record_batch(batch, &keep)?)
    }

    fn apply(
        &self,
        input: Routed,
        mask: Option<&BooleanArray>,
        _: &Ctx<'_>,
        out: &mut Vec<Routed>,
    ) -> Result<()> {
        let keep = self.keep(&input.batch, mask)?;
        push_kept(input, &keep, out)
    }
}

// ---------------------------------------------------------------------------------------
// encryption

/// `cdc_features.encryption`: `encrypt_field` with a default key.
#[derive(Debug, Clone, Deserialize)]
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

// ---------------------------------------------------------------------------------------
// tombstones

fn yes() -> bool {
    true
}

/// What a tombstone's `before` holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TombstoneBehavior {
    /// The record key columns (the whole image when no key is declared).
    #[default]
    EmitWithKey,
    /// Nothing: `before` is null.
    EmitNull,
}

/// `cdc_features.tombstones`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tombstones {
    /// Run it.
    #[serde(default)]
    pub enabled: bool,
    /// Emit a tombstone after each delete (`false`: none are emitted).
    #[serde(default = "yes", alias = "after_delete")]
    pub emit_tombstone_after_delete: bool,
    /// What the tombstone's `before` holds.
    #[serde(default)]
    pub behavior: TombstoneBehavior,
}

impl Spec for Tombstones {
    fn compile(&self, input: &SchemaRef) -> std::result::Result<Arc<dyn Op>, FieldError> {
        let Some(image) = image::image_fields(input) else {
            return Err(FieldError::new(
                "",
                "tombstones need change events (`op`, `before`, `after`, `source`); these \
                 rows are flat (from the source, or flattened by a transform)",
            ));
        };
        let keys: Vec<String> = input
            .metadata()
            .get(META_KEY)
            .map(|k| {
                k.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let keep_child: Vec<bool> = image
            .iter()
            .map(|f| keys.is_empty() || keys.iter().any(|k| k == f.name()))
            .collect();
        let before_fields: Fields = image
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_nullable(true)))
            .collect::<Vec<FieldRef>>()
            .into();
        let fields: Vec<FieldRef> = input
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "op" => Arc::new(f.as_ref().clone().with_nullable(true)),
                // Both images get nullable children, so they keep one type (readers
                // combine them: `after`, else `before`).
                name @ ("before" | "after") if self.behavior == TombstoneBehavior::EmitWithKey => {
                    Arc::new(
                        Field::new(name, DataType::Struct(before_fields.clone()), true)
                            .with_metadata(f.metadata().clone()),
                    )
                }
                "before" | "after" => Arc::new(f.as_ref().clone().with_nullable(true)),
                _ => f.clone(),
            })
            .collect();
        Ok(Arc::new(TombstoneOp {
            schema: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
            behavior: self.behavior,
            keep_child,
        }))
    }
}

struct TombstoneOp {
    schema: SchemaRef,
    behavior: TombstoneBehavior,
    /// Which `before` children a tombstone keeps (`emit_with_key`).
    keep_child: Vec<bool>,
}

impl Op for TombstoneOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        let ops = cast(
            batch
                .column_by_name("op")
                .ok_or_else(|| rivven_engine::Error::internal("change event without `op`"))?,
            &DataType::Utf8,
        )?;
        let ops = ops.as_string::<i32>();
        // Every row, and a second copy of each delete: the tombstone.
        let mut index: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut tomb: Vec<bool> = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            index.push(i as u32);
            tomb.push(false);
            if ops.is_valid(i) && ops.value(i) == op::DELETE {
                index.push(i as u32);
                tomb.push(true);
            }
        }
        let taken = if index.len() == batch.num_rows() {
            batch.clone()
        } else {
            take_record_batch(batch, &UInt32Array::from(index))?
        };
        let tomb = BooleanArray::from(tomb);
        let columns = self
            .schema
            .fields()
            .iter()
            .zip(taken.columns())
            .map(|(f, c)| -> Result<ArrayRef> {
                let c = match f.name().as_str() {
                    "op" | "after" => nullif(c, &tomb)?,
                    "before" if self.behavior == TombstoneBehavior::EmitNull => nullif(c, &tomb)?,
                    "before" => self.key_only(c, &tomb, f.data_type())?,
                    _ => c.clone(),
                };
                crate::chain::retype(&c, f.data_type())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

impl TombstoneOp {
    /// `before` where tombstone rows keep only the key children.
    fn key_only(&self, before: &ArrayRef, tomb: &BooleanArray, to: &DataType) -> Result<ArrayRef> {
        let DataType::Struct(fields) = to else {
            return Err(rivven_engine::Error::internal("`before` is not a struct"));
        };
        let sa = before.as_struct();
        let children = sa
            .columns()
            .iter()
            .zip(&self.keep_child)
            .zip(fields.iter())
            .map(|((c, keep), f)| {
                let c = if *keep { c.clone() } else { nullif(c, tomb)? };
                crate::chain::retype(&c, f.data_type())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(StructArray::try_new(
            fields.clone(),
            children,
            sa.nulls().cloned(),
        )?))
    }
}

// ---------------------------------------------------------------------------------------
// router

/// What a routing rule tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionType {
    /// Every row.
    Always,
    /// The table name (`orders` or `public.orders`), exactly.
    Table,
    /// The table name, by anchored regex.
    TablePattern,
    /// The schema name, exactly.
    Schema,
    /// The operation: `insert`/`c`/`INSERT`, `update`, `delete`, `snapshot`, `truncate`;
    /// several comma-separated.
    Operation,
    /// `field=value` (compared as text; nested paths allowed).
    FieldEquals,
    /// The row has the field.
    FieldExists,
}

/// One routing rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// What the rule tests.
    pub condition_type: ConditionType,
    /// The value tested (all types but `always`).
    #[serde(default)]
    pub condition_value: Option<String>,
    /// Topic for matching rows.
    pub destination: String,
    /// Higher first; ties in list order.
    #[serde(default)]
    pub priority: i64,
}

impl RouteRule {
    /// The rule as a predicate.
    fn predicate(&self) -> std::result::Result<PredicateConfig, FieldError> {
        let value = || {
            self.condition_value
                .clone()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| FieldError::new("condition_value", "required for this condition"))
        };
        let mut p = PredicateConfig::default();
        match self.condition_type {
            ConditionType::Always => {}
            ConditionType::Table => p.table = Some(regex::escape(&value()?)),
            ConditionType::TablePattern => p.table = Some(value()?),
            ConditionType::Schema => p.schema = Some(regex::escape(&value()?)),
            ConditionType::Operation => {
                for o in value()?.split(',') {
                    let o = o.trim();
                    let parsed: Operation =
                        serde_yaml::from_value(serde_yaml::Value::String(o.to_owned()))
                            .or_else(|_| {
                                serde_yaml::from_value(serde_yaml::Value::String(o.to_lowercase()))
                            })
                            .map_err(|_| {
                                FieldError::new(
                                    "condition_value",
                                    format!(
                                "unknown operation `{o}`; use insert, update, delete, snapshot, \
                                 truncate (or c, u, d, r, t)"
                            ),
                                )
                            })?;
                    p.operations.push(parsed);
                }
            }
            ConditionType::FieldEquals => p.field_value = Some(FieldValue::Text(value()?)),
            ConditionType::FieldExists => p.field_exists = Some(value()?),
        }
        let errs = p.validate();
        if let Some(e) = errs.into_iter().next() {
            return Err(FieldError::new("condition_value", e.message));
        }
        Ok(p)
    }
}

/// `cdc_features.router`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Router {
    /// Run it.
    #[serde(default)]
    pub enabled: bool,
    /// Topic for rows no rule matches.
    #[serde(default)]
    pub default_destination: Option<String>,
    /// Topic for rows no rule matches, with the reason.
    #[serde(default)]
    pub dead_letter_queue: Option<String>,
    /// Drop rows no rule matches.
    #[serde(default)]
    pub drop_unroutable: bool,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<RouteRule>,
}

impl Router {
    /// Rule indices by priority (higher first, then list order).
    fn order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.rules.len()).collect();
        idx.sort_by_key(|&i| std::cmp::Reverse(self.rules[i].priority));
        idx
    }
}

impl Spec for Router {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.rules.is_empty() && self.default_destination.is_none() {
            errs.push(FieldError::new(
                "rules",
                "give at least one rule or a default_destination",
            ));
        }
        let unroutable = [
            self.default_destination.is_some(),
            self.dead_letter_queue.is_some(),
            self.drop_unroutable,
        ];
        if unroutable.iter().filter(|b| **b).count() > 1 {
            errs.push(FieldError::new(
                "default_destination",
                "default_destination, dead_letter_queue and drop_unroutable each decide where \
                 unmatched rows go; give at most one",
            ));
        }
        for (key, t) in [
            ("default_destination", &self.default_destination),
            ("dead_letter_queue", &self.dead_letter_queue),
        ] {
            if let Some(t) = t {
                if let Err(e) = rivven_engine::config::valid_name(t) {
                    errs.push(FieldError::new(key, format!("topic name `{t}` {e}")));
                }
            }
        }
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            if let Err(e) = r.predicate() {
                errs.push(e.under(&at));
            }
            if let Err(e) = rivven_engine::config::valid_name(&r.destination) {
                errs.push(FieldError::new(
                    format!("{at}.destination"),
                    format!("topic name `{}` {e}", r.destination),
                ));
            }
        }
        errs
    }

    fn compile(&self, input: &SchemaRef) -> std::result::Result<Arc<dyn Op>, FieldError> {
        let view = image::view_schema(input);
        let mut rules = Vec::new();
        for i in self.order() {
            let r = &self.rules[i];
            let p = r.predicate().map_err(|e| e.under(&format!("rules[{i}]")))?;
            let expr = p
                .compile(input, &view)
                .map_err(|e| FieldError::new(format!("rules[{i}]"), e.message))?;
            rules.push((
                expr,
                p.needs_view(),
                Arc::<str>::from(r.destination.as_str()),
            ));
        }
        let unmatched = match (&self.default_destination, &self.dead_letter_queue) {
            (Some(d), _) => Unmatched::To(d.as_str().into()),
            (None, Some(q)) => Unmatched::DeadLetter(q.as_str().into()),
            (None, None) if self.drop_unroutable => Unmatched::Drop,
            (None, None) => Unmatched::Keep,
        };
        Ok(Arc::new(RouterOp {
            schema: input.clone(),
            view,
            rules,
            unmatched,
        }))
    }
}

enum Unmatched {
    To(Arc<str>),
    DeadLetter(Arc<str>),
    Drop,
    Keep,
}

type Rule = (Arc<dyn PhysicalExpr>, bool, Arc<str>);

struct RouterOp {
    schema: SchemaRef,
    view: SchemaRef,
    rules: Vec<Rule>,
    unmatched: Unmatched,
}

/// Where the router sends one row.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Dest {
    Rule(usize),
    Unmatched,
}

impl Op for RouterOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        Ok(batch.clone())
    }

    fn apply(
        &self,
        input: Routed,
        mask: Option<&BooleanArray>,
        ctx: &Ctx<'_>,
        out: &mut Vec<Routed>,
    ) -> Result<()> {
        no_predicate(mask)?;
        let n = input.batch.num_rows();
        let needs_view = self.rules.iter().any(|r| r.1);
        let view = if needs_view {
            Some(image::view(&input.batch, &self.view)?)
        } else {
            None
        };
        let mut dest: Vec<Option<Dest>> = vec![None; n];
        let mut open = n;
        for (i, (expr, on_view, _)) in self.rules.iter().enumerate() {
            if open == 0 {
                break;
            }
            let target = match (&view, *on_view) {
                (Some(v), true) => v,
                _ => &input.batch,
            };
            let m = crate::expr::eval_mask(expr, target)?;
            for (row, d) in dest.iter_mut().enumerate() {
                if d.is_none() && m.value(row) {
                    *d = Some(Dest::Rule(i));
                    open -= 1;
                }
            }
        }
        let dest: Vec<Dest> = dest
            .into_iter()
            .map(|d| d.unwrap_or(Dest::Unmatched))
            .collect();
        for (d, batch) in split_by(&input.batch, dest)? {
            let piece = Routed {
                batch,
                ..input.clone()
            };
            match d {
                Dest::Rule(i) => out.push(Routed {
                    topic: Some(self.rules[i].2.clone()),
                    ..piece
                }),
                Dest::Unmatched => match &self.unmatched {
                    Unmatched::To(t) => out.push(Routed {
                        topic: Some(t.clone()),
                        ..piece
                    }),
                    Unmatched::Keep => out.push(piece),
                    Unmatched::Drop => {}
                    Unmatched::DeadLetter(q) => {
                        let err = rivven_engine::Error::data(
                            "no routing rule matched (cdc_features.router)",
                        );
                        out.push(dead_letter_rows(
                            &piece,
                            ctx.topic,
                            "cdc_features.router",
                            &err,
                            q,
                        )?);
                    }
                },
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// partitioner

/// How the partitioner chooses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Row by row, in turn.
    RoundRobin,
    /// By the record key (or `key_columns`).
    #[default]
    KeyHash,
    /// By table name.
    TableHash,
    /// By `schema.table`.
    FullTableHash,
    /// One partition per batch, in turn.
    Sticky,
}

fn default_partitions() -> u32 {
    16
}

/// `cdc_features.partitioner`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partitioner {
    /// Run it.
    #[serde(default)]
    pub enabled: bool,
    /// Partitions per topic.
    #[serde(default = "default_partitions")]
    pub num_partitions: u32,
    /// How rows are spread.
    #[serde(default)]
    pub strategy: Strategy,
    /// Key columns for `key_hash` (default: the record key).
    #[serde(default)]
    pub key_columns: Names,
    /// Next partition of `round_robin` / `sticky`.
    #[serde(skip)]
    turn: Arc<AtomicU64>,
}

impl Spec for Partitioner {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if !(1..=1000).contains(&self.num_partitions) {
            errs.push(FieldError::new("num_partitions", "between 1 and 1000"));
        }
        if !self.key_columns.is_empty() && self.strategy != Strategy::KeyHash {
            errs.push(FieldError::new(
                "key_columns",
                "only `strategy: key_hash` reads key columns",
            ));
        }
        errs
    }

    fn compile(&self, input: &SchemaRef) -> std::result::Result<Arc<dyn Op>, FieldError> {
        let view = image::view_schema(input);
        let change = is_change_event_schema(input);
        let meta = |k: &str| input.metadata().get(k).cloned().unwrap_or_default();
        let by = match self.strategy {
            Strategy::RoundRobin => By::RoundRobin,
            Strategy::Sticky => By::Sticky,
            Strategy::TableHash if change => By::Columns(vec!["source.table".into()]),
            Strategy::FullTableHash if change => {
                By::Columns(vec!["source.schema".into(), "source.table".into()])
            }
            Strategy::TableHash => By::Constant(fnv(&[Some(meta(META_STREAM).as_bytes())])),
            Strategy::FullTableHash => By::Constant(fnv(&[
                Some(meta(META_NAMESPACE).as_bytes()),
                Some(meta(META_STREAM).as_bytes()),
            ])),
            Strategy::KeyHash => {
                let keys: Vec<String> = if self.key_columns.is_empty() {
                    meta(META_KEY)
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                } else {
                    self.key_columns.to_vec()
                };
                if keys.is_empty() {
                    return Err(FieldError::new(
                        "key_columns",
                        "key_hash needs key columns: list them, or give the stream a record \
                         key (`value_to_key`)",
                    ));
                }
                for (i, k) in keys.iter().enumerate() {
                    let Some(ty) = image::path_type(&view, k) else {
                        return Err(FieldError::new(
                            format!("key_columns[{i}]"),
                            format!("no field `{k}` in the row"),
                        ));
                    };
                    if !arrow::compute::can_cast_types(&ty, &DataType::Utf8) {
                        return Err(FieldError::new(
                            format!("key_columns[{i}]"),
                            format!("cannot hash a {ty} value"),
                        ));
                    }
                }
                By::Columns(keys)
            }
        };
        Ok(Arc::new(PartitionOp {
            schema: input.clone(),
            view,
            of: self.num_partitions,
            by,
            turn: self.turn.clone(),
        }))
    }
}

enum By {
    RoundRobin,
    Sticky,
    Constant(u64),
    Columns(Vec<String>),
}

/// FNV-1a over length-prefixed values (`None`: null), stable everywhere.
fn fnv(values: &[Option<&[u8]>]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    for v in values {
        match v {
            None => feed(0),
            Some(bytes) => {
                feed(1);
                for b in (bytes.len() as u32).to_le_bytes() {
                    feed(b);
                }
                for &b in *bytes {
                    feed(b);
                }
            }
        }
    }
    h
}

struct PartitionOp {
    schema: SchemaRef,
    view: SchemaRef,
    of: u32,
    by: By,
    turn: Arc<AtomicU64>,
}

impl PartitionOp {
    /// The partition of every row. A tombstone (a change event with a null `op`, right
    /// after its delete) takes its delete's partition, whatever its key columns hold.
    fn partitions(&self, batch: &RecordBatch) -> Result<Vec<u32>> {
        let mut parts = self.spread(batch)?;
        if let Some(op) = batch.column_by_name("op").filter(|o| o.null_count() > 0) {
            for i in 1..parts.len() {
                if op.is_null(i) {
                    parts[i] = parts[i - 1];
                }
            }
        }
        Ok(parts)
    }

    fn spread(&self, batch: &RecordBatch) -> Result<Vec<u32>> {
        let n = batch.num_rows();
        let of = u64::from(self.of);
        Ok(match &self.by {
            By::Sticky => {
                let p = (self.turn.fetch_add(1, Ordering::Relaxed) % of) as u32;
                vec![p; n]
            }
            By::RoundRobin => {
                let start = self.turn.fetch_add(n as u64, Ordering::Relaxed);
                (0..n as u64).map(|i| ((start + i) % of) as u32).collect()
            }
            By::Constant(h) => vec![(h % of) as u32; n],
            By::Columns(paths) => {
                let view = image::view(batch, &self.view)?;
                let texts = paths
                    .iter()
                    .map(|p| {
                        let col = path_column(&view, p).ok_or_else(|| {
                            rivven_engine::Error::internal(format!("no field `{p}`"))
                        })?;
                        let t = cast(&col, &DataType::Utf8)?;
                        Ok(t.as_string::<i32>().clone())
                    })
                    .collect::<Result<Vec<StringArray>>>()?;
                (0..n)
                    .map(|i| {
                        let vals: Vec<Option<&[u8]>> = texts
                            .iter()
                            .map(|t| t.is_valid(i).then(|| t.value(i).as_bytes()))
                            .collect();
                        (fnv(&vals) % of) as u32
                    })
                    .collect()
            }
        })
    }
}

impl Op for PartitionOp {
    fn output_schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn map(&self, batch: &RecordBatch, _: &Ctx<'_>) -> Result<RecordBatch> {
        Ok(batch.clone())
    }

    fn apply(
        &self,
        input: Routed,
        mask: Option<&BooleanArray>,
        _: &Ctx<'_>,
        out: &mut Vec<Routed>,
    ) -> Result<()> {
        no_predicate(mask)?;
        for (p, batch) in split_by(&input.batch, self.partitions(&input.batch)?)? {
            out.push(Routed {
                batch,
                partition: Some(PartitionChoice {
                    partition: p,
                    of: self.of,
                }),
                ..input.clone()
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bloom_has_no_false_negatives_and_few_false_positives() {
        let mut b = Bloom::new(10_000, 0.01);
        for i in 0..10_000u128 {
            b.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
        }
        for i in 0..10_000u128 {
            assert!(b.maybe_contains(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)));
        }
        let fp = (10_000..110_000u128)
            .filter(|i| b.maybe_contains(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
            .count();
        assert!(fp < 2_000, "{fp} false positives in 100000");
    }

    #[test]
    fn dedup_state_forgets_by_size_and_age() {
        let cfg: Deduplication =
            serde_yaml::from_str("{ enabled: true, ttl_seconds: 10, max_entries: 2 }").unwrap();
        let mut s = DedupState::new(&cfg);
        let t0 = Instant::now();
        assert!(s.first_sighting(1, t0));
        assert!(!s.first_sighting(1, t0));
        assert!(s.first_sighting(2, t0));
        assert!(s.first_sighting(3, t0));
        s.evict(t0);
        assert!(
            s.first_sighting(1, t0),
            "1 was the oldest of three; max_entries is 2"
        );
        let later = t0 + Duration::from_secs(11);
        s.evict(later);
        assert!(s.first_sighting(3, later), "3 expired after ttl_seconds");
    }

    #[test]
    fn fnv_is_stable() {
        // Partitions must not move between releases or machines.
        assert_eq!(fnv(&[Some(b"42")]) % 16, fnv(&[Some(b"42")]) % 16);
        assert_eq!(fnv(&[]), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv(&[Some(b"a"), None]), fnv(&[None, Some(b"a")]));
    }
}
