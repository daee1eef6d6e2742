//! `cdc_features.deduplication`: drops an event identical to one seen recently (see
//! [`crate::features`] for the user-facing description).

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use rivven_engine::batch::{is_change_event_schema, META_NAMESPACE, META_STREAM};
use rivven_engine::config::{FieldError, Validate};
use rivven_engine::connector::Routed;
use rivven_engine::Result;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::image::{self, path_column};
use crate::op::{fresh_copy, push_kept, Ctx, Op, Spec};

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
#[derive(Clone, Deserialize, JsonSchema)]
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

impl Validate for Deduplication {
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
}

impl Spec for Deduplication {
    /// A new chain starts with no remembered events.
    fn fresh(&self) -> Option<Arc<dyn Spec>> {
        fresh_copy(self, |s| s.state = Default::default())
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
            spec: self.clone(),
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
    /// The settings, and the state shared with the ops of other schemas of the chain
    /// (created by the first batch, so that `check` allocates no filter).
    spec: Deduplication,
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
            .spec
            .state
            .lock()
            .map_err(|_| rivven_engine::Error::internal("deduplication state poisoned"))?;
        let state = guard.get_or_insert_with(|| DedupState::new(&self.spec));
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
}
