//! The `datagen` source: generates batches straight into Arrow builders.

use super::config::DatagenConfig;
use super::patterns::{fields, Rng, RowBuilders};
use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, Int64Builder, RecordBatch, StringArray,
    StringBuilder, StructArray, TimestampMillisecondArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use async_trait::async_trait;
use rivven_engine::batch::now_ms;
use rivven_engine::batch::{self, Position, SourceBatch};
use rivven_engine::connector::Source;
use rivven_engine::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

const ROW_SALT: u64 = 1;
const OP_SALT: u64 = 2;

/// Rows alive in CDC mode: key → version, with O(1) random pick and removal.
#[derive(Debug, Default)]
struct LiveSet {
    keys: Vec<u64>,
    index: HashMap<u64, (usize, u32)>,
    next_key: u64,
}

/// One CDC event's shape.
#[derive(Debug, Clone, Copy)]
enum CdcOp {
    Insert { key: u64 },
    Update { key: u64, old: u32, new: u32 },
    Delete { key: u64, old: u32 },
}

impl LiveSet {
    /// Decide event `i` and apply it. Deterministic given `(seed, i)` and the set's history.
    fn step(&mut self, seed: u64, i: u64) -> CdcOp {
        let mut r = Rng::at(seed, i, OP_SALT);
        let roll = r.below(100);
        if self.keys.is_empty() || roll < 60 {
            let key = self.next_key;
            self.next_key += 1;
            self.index.insert(key, (self.keys.len(), 0));
            self.keys.push(key);
            return CdcOp::Insert { key };
        }
        let idx = r.below(self.keys.len() as u64) as usize;
        let key = self.keys[idx];
        let old = self.index.get(&key).map_or(0, |e| e.1);
        if roll < 90 {
            self.index.insert(key, (idx, old + 1));
            CdcOp::Update {
                key,
                old,
                new: old + 1,
            }
        } else {
            self.keys.swap_remove(idx);
            self.index.remove(&key);
            if let Some(&moved) = self.keys.get(idx) {
                if let Some(e) = self.index.get_mut(&moved) {
                    e.0 = idx;
                }
            }
            CdcOp::Delete { key, old }
        }
    }
}

/// The datagen source.
pub struct DatagenSource {
    cfg: DatagenConfig,
    seed: u64,
    next: u64,
    live: LiveSet,
    schema: SchemaRef,
    custom: Vec<(Field, serde_yaml::Value)>,
    rate_start: Option<(Instant, u64)>,
    stream: Arc<str>,
}

/// The custom constant columns: name, Arrow field and value.
fn custom_columns(cfg: &DatagenConfig) -> Vec<(Field, serde_yaml::Value)> {
    cfg.custom_fields
        .iter()
        .map(|(name, v)| {
            let dt = match v {
                serde_yaml::Value::Bool(_) => DataType::Boolean,
                serde_yaml::Value::Number(n) if n.is_i64() || n.is_u64() => DataType::Int64,
                serde_yaml::Value::Number(_) => DataType::Float64,
                _ => DataType::Utf8,
            };
            (Field::new(name, dt, true), v.clone())
        })
        .collect()
}

fn constant_column(field: &Field, v: &serde_yaml::Value, n: usize) -> ArrayRef {
    match (field.data_type(), v) {
        (DataType::Boolean, serde_yaml::Value::Bool(b)) => {
            Arc::new(BooleanArray::from(vec![*b; n]))
        }
        (DataType::Int64, serde_yaml::Value::Number(x)) => {
            Arc::new(Int64Array::from(vec![x.as_i64().unwrap_or(i64::MAX); n]))
        }
        (DataType::Float64, serde_yaml::Value::Number(x)) => {
            Arc::new(Float64Array::from(vec![x.as_f64().unwrap_or(f64::NAN); n]))
        }
        (_, serde_yaml::Value::String(s)) => Arc::new(StringArray::from(vec![s.as_str(); n])),
        (_, serde_yaml::Value::Null) => Arc::new(StringArray::from(vec![None::<&str>; n])),
        (_, other) => {
            let text = serde_json::to_string(other).unwrap_or_default();
            Arc::new(StringArray::from(vec![text.as_str(); n]))
        }
    }
}

/// The schema a config produces (also the answer to `discover`).
pub(crate) fn schema_for(cfg: &DatagenConfig) -> SchemaRef {
    let custom = custom_columns(cfg);
    let mut metadata = HashMap::from([(batch::META_STREAM.to_owned(), cfg.stream_name.clone())]);
    if let Some(ns) = &cfg.namespace {
        metadata.insert(batch::META_NAMESPACE.to_owned(), ns.clone());
    }
    let extras = |fields: &mut Vec<Field>| {
        if cfg.include_sequence {
            fields.push(Field::new("sequence", DataType::Int64, false));
        }
        if cfg.include_timestamp {
            fields.push(Field::new("timestamp", batch::timestamp_ms_utc(), false));
        }
    };
    if cfg.cdc_mode {
        let mut row = fields(cfg.pattern, true);
        row.extend(custom.iter().map(|(f, _)| f.clone()));
        let base = batch::change_event_schema(Fields::from(row));
        let mut all: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
        extras(&mut all);
        Arc::new(Schema::new_with_metadata(all, metadata))
    } else {
        let mut all = fields(cfg.pattern, false);
        extras(&mut all);
        all.extend(custom.into_iter().map(|(f, _)| f));
        Arc::new(Schema::new_with_metadata(all, metadata))
    }
}

impl DatagenSource {
    /// A source for `cfg`; the seed is settled in [`Source::open`].
    pub fn new(cfg: DatagenConfig) -> Self {
        let schema = schema_for(&cfg);
        let custom = custom_columns(&cfg);
        let stream: Arc<str> = Arc::from(cfg.stream_name.as_str());
        Self {
            seed: 0,
            next: 0,
            live: LiveSet::default(),
            schema,
            custom,
            rate_start: None,
            stream,
            cfg,
        }
    }

    fn position(&self) -> Position {
        Position(serde_json::json!({ "seed": self.seed, "next": self.next }))
    }

    /// How many events may be generated now, or how long to wait for the next one.
    fn allowance(&mut self, max_rows: usize) -> Result<usize, std::time::Duration> {
        let remaining = match self.cfg.max_events {
            0 => u64::MAX,
            m => m.saturating_sub(self.next),
        };
        let mut n = (max_rows as u64).min(remaining);
        let eps = self.cfg.events_per_second;
        if eps > 0 {
            let (start, at) = *self.rate_start.get_or_insert((Instant::now(), self.next));
            let elapsed = start.elapsed().as_secs_f64();
            let due = at + (elapsed * eps as f64) as u64 + 1;
            let allowed = due.saturating_sub(self.next);
            if allowed == 0 {
                let next_at = (self.next - at) as f64 / eps as f64;
                return Err(std::time::Duration::from_secs_f64(
                    (next_at - elapsed).max(0.001),
                ));
            }
            n = n.min(allowed);
        }
        Ok(n as usize)
    }

    fn generate(&mut self, n: usize) -> Result<RecordBatch> {
        let first = self.next;
        let mut cols: Vec<ArrayRef> = Vec::new();
        if self.cfg.cdc_mode {
            let mut before = RowBuilders::new(self.cfg.pattern, n);
            let mut after = RowBuilders::new(self.cfg.pattern, n);
            let mut ops = StringBuilder::with_capacity(n, n);
            let mut before_valid = Vec::with_capacity(n);
            let mut after_valid = Vec::with_capacity(n);
            let mut pos = StringBuilder::with_capacity(n, n * 8);
            let mut txid = Int64Builder::with_capacity(n);
            for i in first..first + n as u64 {
                let op = self.live.step(self.seed, i);
                let (code, b, a) = match op {
                    CdcOp::Insert { key } => (batch::op::CREATE, None, Some((key, 0))),
                    CdcOp::Update { key, old, new } => {
                        (batch::op::UPDATE, Some((key, old)), Some((key, new)))
                    }
                    CdcOp::Delete { key, old } => (batch::op::DELETE, Some((key, old)), None),
                };
                ops.append_value(code);
                for (img, builders, valid) in [
                    (b, &mut before, &mut before_valid),
                    (a, &mut after, &mut after_valid),
                ] {
                    match img {
                        Some((key, version)) => {
                            builders.append(
                                key,
                                &mut Rng::at(self.seed, key, u64::from(version) << 8 | ROW_SALT),
                            );
                            valid.push(true);
                        }
                        None => {
                            builders.append_null();
                            valid.push(false);
                        }
                    }
                }
                pos.append_value(i.to_string());
                txid.append_value(i as i64);
            }
            let row_fields: Fields = match self
                .schema
                .field_with_name("after")
                .map(|f| f.data_type().clone())
            {
                Ok(DataType::Struct(f)) => f,
                _ => return Err(Error::internal("datagen cdc schema without `after` struct")),
            };
            let image = |b: &mut RowBuilders, valid: Vec<bool>| -> Result<ArrayRef> {
                let mut arrays = b.finish();
                arrays.extend(self.custom.iter().map(|(f, v)| constant_column(f, v, n)));
                Ok(Arc::new(StructArray::try_new(
                    row_fields.clone(),
                    arrays,
                    Some(NullBuffer::from(valid)),
                )?))
            };
            let ts = now_ms();
            let source_fields = batch::change_event_source_fields();
            let db = self
                .cfg
                .namespace
                .clone()
                .unwrap_or_else(|| "datagen".into());
            let source = StructArray::try_new(
                source_fields,
                vec![
                    Arc::new(StringArray::from(vec!["datagen"; n])),
                    Arc::new(StringArray::from(vec![db.as_str(); n])),
                    Arc::new(StringArray::from(vec![self.cfg.namespace.as_deref(); n])),
                    Arc::new(StringArray::from(vec![self.cfg.stream_name.as_str(); n])),
                    Arc::new(pos.finish()),
                    Arc::new(txid.finish()),
                    Arc::new(Int64Array::from(vec![ts; n])),
                    Arc::new(BooleanArray::from(vec![false; n])),
                ],
                None,
            )?;
            cols.push(Arc::new(ops.finish()));
            cols.push(image(&mut before, before_valid)?);
            cols.push(image(&mut after, after_valid)?);
            cols.push(Arc::new(source));
            cols.push(Arc::new(Int64Array::from(vec![ts; n])));
        } else {
            let mut rows = RowBuilders::new(self.cfg.pattern, n);
            for i in first..first + n as u64 {
                rows.append(i, &mut Rng::at(self.seed, i, ROW_SALT));
            }
            cols.extend(rows.finish());
        }
        if self.cfg.include_sequence {
            cols.push(Arc::new(Int64Array::from_iter_values(
                first as i64..(first + n as u64) as i64,
            )));
        }
        if self.cfg.include_timestamp {
            cols.push(Arc::new(
                TimestampMillisecondArray::from(vec![now_ms(); n]).with_timezone("UTC"),
            ));
        }
        if !self.cfg.cdc_mode {
            cols.extend(self.custom.iter().map(|(f, v)| constant_column(f, v, n)));
        }
        self.next += n as u64;
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }
}

#[async_trait]
impl Source for DatagenSource {
    async fn open(&mut self, position: Option<Position>) -> Result<()> {
        match position {
            Some(p) => {
                let seed = p.0.get("seed").and_then(|v| v.as_u64());
                let next = p.0.get("next").and_then(|v| v.as_u64());
                let (Some(seed), Some(next)) = (seed, next) else {
                    return Err(Error::state(format!(
                        "datagen position {} lacks `seed`/`next`",
                        p.0
                    )));
                };
                if let Some(cfg_seed) = self.cfg.seed {
                    if cfg_seed != seed {
                        return Err(Error::config(format!(
                            "config.seed is {cfg_seed} but the stored position was generated with seed {seed}; \
                             restore the seed or remove this source's state to start over"
                        )));
                    }
                }
                self.seed = seed;
                self.next = next;
            }
            None => {
                self.seed = self.cfg.seed.unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0x5eed, |d| d.as_nanos() as u64)
                });
                self.next = 0;
            }
        }
        // CDC mode: rebuild the live rows by replaying the op decisions (no row data).
        self.live = LiveSet::default();
        if self.cfg.cdc_mode {
            for i in 0..self.next {
                self.live.step(self.seed, i);
            }
        }
        self.rate_start = None;
        Ok(())
    }

    async fn poll(&mut self, max_rows: usize) -> Result<Option<SourceBatch>> {
        // Cancel-safe: state changes only after the last await.
        let n = loop {
            match self.allowance(max_rows) {
                Ok(0) => return Ok(None),
                Ok(n) => break n,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        };
        if self.cfg.events_per_second == 0 {
            tokio::task::yield_now().await;
        }
        let batch = self.generate(n)?;
        Ok(Some(SourceBatch {
            batch,
            position: self.position(),
            stream: Some(self.stream.clone()),
            topic: None,
        }))
    }

    async fn commit(&mut self, _position: &Position) -> Result<()> {
        // Nothing upstream to acknowledge.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datagen::patterns::Pattern;
    use arrow::array::Array;

    fn cfg(pattern: Pattern, cdc: bool) -> DatagenConfig {
        rivven_engine::config::parse(&serde_yaml::from_str(&format!(
            "{{pattern: {}, events_per_second: 0, seed: 7, cdc_mode: {cdc}, include_timestamp: false}}",
            serde_json::to_string(&pattern_name(pattern)).unwrap()
        )).unwrap())
        .unwrap()
    }

    fn pattern_name(p: Pattern) -> &'static str {
        match p {
            Pattern::Sequence => "sequence",
            Pattern::Random => "random",
            Pattern::Users => "users",
            Pattern::Orders => "orders",
            Pattern::Events => "events",
            Pattern::Metrics => "metrics",
            Pattern::KeyValue => "key_value",
        }
    }

    async fn take(src: &mut DatagenSource, n: usize, chunk: usize) -> Vec<RecordBatch> {
        let mut out = Vec::new();
        let mut got = 0;
        while got < n {
            let b = src.poll(chunk.min(n - got)).await.unwrap().unwrap();
            got += b.batch.num_rows();
            out.push(b.batch);
        }
        out
    }

    fn concat(b: &[RecordBatch]) -> RecordBatch {
        arrow::compute::concat_batches(&b[0].schema(), b).unwrap()
    }

    #[tokio::test]
    async fn same_seed_same_data_regardless_of_batching_and_restarts() {
        for pattern in [
            Pattern::Sequence,
            Pattern::Random,
            Pattern::Users,
            Pattern::Orders,
            Pattern::Events,
            Pattern::Metrics,
            Pattern::KeyValue,
        ] {
            for cdc in [false, true] {
                let mut a = DatagenSource::new(cfg(pattern, cdc));
                a.open(None).await.unwrap();
                let whole = concat(&take(&mut a, 500, 500).await);
                // Another run: small batches, a restart from the position at 137.
                let mut b = DatagenSource::new(cfg(pattern, cdc));
                b.open(None).await.unwrap();
                let mut parts = take(&mut b, 137, 50).await;
                let pos = b.position();
                let mut c = DatagenSource::new(cfg(pattern, cdc));
                c.open(Some(pos)).await.unwrap();
                parts.extend(take(&mut c, 363, 64).await);
                let split = concat(&parts);
                // ts_ms columns are wall clock; compare everything else.
                for name in whole.schema().fields().iter().map(|f| f.name().clone()) {
                    if name == "ts_ms" || name == "source" {
                        continue;
                    }
                    assert_eq!(
                        whole.column_by_name(&name),
                        split.column_by_name(&name),
                        "{pattern:?} cdc={cdc} {name}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn cdc_mix_and_images_are_consistent() {
        let mut s = DatagenSource::new(cfg(Pattern::Users, true));
        s.open(None).await.unwrap();
        let b = concat(&take(&mut s, 10_000, 1000).await);
        let ops = b
            .column_by_name("op")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let count = |c: &str| ops.iter().filter(|o| *o == Some(c)).count();
        let (c, u, d) = (count("c"), count("u"), count("d"));
        assert_eq!(c + u + d, 10_000);
        assert!((5700..6300).contains(&c), "inserts {c}");
        assert!((2700..3300).contains(&u), "updates {u}");
        assert!((800..1200).contains(&d), "deletes {d}");
        // Replay the images: every before image equals the row's previous after image.
        let before = b
            .column_by_name("before")
            .unwrap()
            .as_any()
            .downcast_ref::<StructArray>()
            .unwrap();
        let after = b
            .column_by_name("after")
            .unwrap()
            .as_any()
            .downcast_ref::<StructArray>()
            .unwrap();
        let ids = |s: &StructArray| {
            s.column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone()
        };
        let (bid, aid) = (ids(before), ids(after));
        let mut current: HashMap<i64, usize> = HashMap::new();
        for i in 0..b.num_rows() {
            match ops.value(i) {
                "c" => {
                    assert!(before.is_null(i) && after.is_valid(i));
                    assert!(
                        current.insert(aid.value(i), i).is_none(),
                        "insert of a live key"
                    );
                }
                "u" | "d" => {
                    let prev = current[&bid.value(i)];
                    assert_eq!(
                        before.slice(i, 1),
                        after.slice(prev, 1),
                        "before image of row {i}"
                    );
                    if ops.value(i) == "u" {
                        assert_eq!(aid.value(i), bid.value(i));
                        current.insert(aid.value(i), i);
                    } else {
                        assert!(after.is_null(i));
                        current.remove(&bid.value(i));
                    }
                }
                o => panic!("unexpected op {o}"),
            }
        }
    }

    #[tokio::test]
    async fn max_events_and_rate() {
        let mut c = cfg(Pattern::Sequence, false);
        c.max_events = 25;
        let mut s = DatagenSource::new(c);
        s.open(None).await.unwrap();
        let b = s.poll(100).await.unwrap().unwrap();
        assert_eq!(b.batch.num_rows(), 25);
        assert!(s.poll(100).await.unwrap().is_none());

        let mut c = cfg(Pattern::Sequence, false);
        c.events_per_second = 1000;
        let mut s = DatagenSource::new(c);
        s.open(None).await.unwrap();
        let first = s.poll(10_000).await.unwrap().unwrap().batch.num_rows();
        assert!(first <= 5, "rate limit lets a burst of {first} through");
    }
}
