//! Rows to Kafka records and back.
//!
//! **Out** ([`Encoder`]): one record per row. The value is the row as one JSON object
//! (every column except the `__kafka_*` metadata columns, nulls written as `null`),
//! written by arrow-json straight from the columns into one buffer that the records'
//! values are slices of; or the bytes of one `value_column`. The key, headers and
//! timestamp come from columns when configured. The partition is the `partition_column`'s
//! value, else the Java client's murmur2 hash of the key, else one partition per batch in
//! turn (sticky). With a Debezium `envelope`, keys and values follow Debezium's layout instead
//! (see [`crate::debezium`]), with a tombstone after each delete when asked.
//!
//! **In** ([`Decoder`]): a fetched run of records of one partition becomes one batch:
//! JSON values decoded by arrow-json into the declared schema, or into one inferred from
//! the records and widened when records bring new fields; or the raw value as one
//! `value` column (`string` / `bytes`). Records that do not decode are returned apart,
//! with the reason, for the dead-letter topic. With `metadata`, the key, topic,
//! partition, offset, timestamp and headers follow as `__kafka_*` columns.

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, Int32Array, Int64Array, MapBuilder,
    RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Record;
use rivven_engine::{Error, Result};
use std::sync::Arc;

/// Prefix of the metadata columns; such columns never go into a JSON value.
pub const META_PREFIX: &str = "__kafka_";
/// The record key (binary).
pub const KEY: &str = "__kafka_key";
/// The topic the record was read from.
pub const TOPIC: &str = "__kafka_topic";
/// Its partition.
pub const PARTITION: &str = "__kafka_partition";
/// Its offset.
pub const OFFSET: &str = "__kafka_offset";
/// Its timestamp (ms, UTC).
pub const TIMESTAMP: &str = "__kafka_timestamp";
/// Its headers (name → bytes).
pub const HEADERS: &str = "__kafka_headers";

/// How values are written and read.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// One JSON object per record.
    #[default]
    Json,
    /// The value as text (UTF-8), one `value` column.
    String,
    /// The value as bytes, one `value` column.
    Bytes,
}

/// Where [`Encoder`] takes a record's parts from.
#[derive(Debug, Clone, Default)]
pub struct EncodeOptions {
    /// Column whose value is the key (text, bytes, or any type as its text form).
    pub key_column: Option<String>,
    /// Column whose bytes are the whole value (text or binary) instead of the JSON row.
    pub value_column: Option<String>,
    /// Map column (text keys, text or binary values) of headers.
    pub headers_column: Option<String>,
    /// Timestamp or Int64 (ms) column of record timestamps.
    pub timestamp_column: Option<String>,
    /// Int column choosing the partition (modulo the partition count).
    pub partition_column: Option<String>,
    /// Whether change events are written in Debezium's layout (then `key_column` and
    /// `value_column` are not used).
    pub envelope: crate::debezium::Envelope,
}

/// Rows → records, see the module docs.
#[derive(Debug)]
pub struct Encoder {
    opts: EncodeOptions,
    next_sticky: usize,
}

impl Encoder {
    /// An encoder taking the parts from the columns `opts` names.
    pub fn new(opts: EncodeOptions) -> Self {
        Encoder {
            opts,
            next_sticky: 0,
        }
    }

    /// The records of `batch`, grouped by partition (of `partitions`), in row order
    /// within each. `default_ts`: the timestamp of rows without one.
    pub fn encode(
        &mut self,
        batch: &RecordBatch,
        partitions: usize,
        default_ts: i64,
    ) -> Result<Vec<(i32, Vec<Record>)>> {
        let n = batch.num_rows();
        let partitions = partitions.max(1);
        let column = |name: &Option<String>, what: &str| -> Result<Option<ArrayRef>> {
            match name {
                None => Ok(None),
                Some(c) => batch.column_by_name(c).cloned().map(Some).ok_or_else(|| {
                    Error::data(format!("kafka: the rows have no column `{c}` ({what})"))
                        .retryable(false)
                }),
            }
        };
        let (keys, values, tombstone_after) = match self.opts.envelope.debezium_for(&batch.schema())
        {
            Some(d) => {
                let e = crate::debezium::encode(batch, d)?;
                (Some(e.keys), e.values, Some(e.tombstone_after))
            }
            None => {
                let keys = match column(&self.opts.key_column, "key_column")? {
                    Some(c) => Some(bytes_of(&c, "key_column")?),
                    None => None,
                };
                let values: Vec<Option<Bytes>> =
                    match column(&self.opts.value_column, "value_column")? {
                        Some(c) => bytes_of(&c, "value_column")?,
                        None => json_values(batch)?.into_iter().map(Some).collect(),
                    };
                (keys, values, None)
            }
        };
        let headers = match column(&self.opts.headers_column, "headers_column")? {
            Some(c) => Some(headers_of(&c)?),
            None => None,
        };
        let stamps = match column(&self.opts.timestamp_column, "timestamp_column")? {
            Some(c) => Some(millis_of(&c)?),
            None => None,
        };
        let chosen = match column(&self.opts.partition_column, "partition_column")? {
            Some(c) => Some(arrow::compute::cast(&c, &DataType::Int64)?),
            None => None,
        };
        let sticky = self.next_sticky % partitions;
        self.next_sticky = self.next_sticky.wrapping_add(1);
        let mut out: Vec<Vec<Record>> = vec![Vec::new(); partitions];
        for i in 0..n {
            let key = keys.as_ref().and_then(|k| k[i].clone());
            let p = match (&chosen, &key) {
                (Some(c), _) if c.is_valid(i) => {
                    let v = c.as_primitive::<arrow::datatypes::Int64Type>().value(i);
                    v.rem_euclid(partitions as i64) as usize
                }
                (_, Some(k)) => (murmur2(k) & 0x7fff_ffff) as usize % partitions,
                _ => sticky,
            };
            let ts = stamps.as_ref().and_then(|s| s[i]).unwrap_or(default_ts);
            let h = headers.as_ref().map(|h| h[i].clone()).unwrap_or_default();
            if tombstone_after.as_ref().is_some_and(|t| t[i]) {
                out[p].push(crate::records::record(
                    key.clone(),
                    values[i].clone(),
                    ts,
                    h,
                ));
                out[p].push(crate::records::record(key, None, ts, Headers::new()));
            } else {
                out[p].push(crate::records::record(key, values[i].clone(), ts, h));
            }
        }
        Ok(out
            .into_iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(p, r)| (p as i32, r))
            .collect())
    }
}

/// Each row of `batch` (its non-metadata columns) as one JSON object.
fn json_values(batch: &RecordBatch) -> Result<Vec<Bytes>> {
    let keep: Vec<usize> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.name().starts_with(META_PREFIX))
        .map(|(i, _)| i)
        .collect();
    crate::json::rows(&batch.project(&keep)?)
}

/// The bytes of each value of `c`: text and binary as they are, other types as their
/// text form; nulls stay null. The values are slices of the column's own buffer (no copy
/// per row).
fn bytes_of(c: &ArrayRef, what: &str) -> Result<Vec<Option<Bytes>>> {
    let c = match c.data_type() {
        DataType::Binary => c.clone(),
        DataType::Utf8
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => arrow::compute::cast(c, &DataType::Binary)?,
        _ => arrow::compute::cast(
            &arrow::compute::cast(c, &DataType::Utf8).map_err(|e| {
                Error::data(format!("kafka: {what} cannot be written as bytes: {e}"))
                    .retryable(false)
            })?,
            &DataType::Binary,
        )?,
    };
    let c = c.as_binary::<i32>();
    let owner = Bytes::from_owner(Shared(c.values().clone()));
    let offsets = c.value_offsets();
    Ok((0..c.len())
        .map(|i| {
            c.is_valid(i)
                .then(|| owner.slice(offsets[i] as usize..offsets[i + 1] as usize))
        })
        .collect())
}

/// An Arrow buffer as the owner of `Bytes` slices.
struct Shared(arrow::buffer::Buffer);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

type Headers = IndexMap<StrBytes, Option<Bytes>>;

/// The headers of each row of a map column (text keys; text or binary values).
fn headers_of(c: &ArrayRef) -> Result<Vec<Headers>> {
    let bad = || {
        Error::data(format!(
            "kafka: headers_column must be a map of text to text or bytes, not {}",
            c.data_type()
        ))
        .retryable(false)
    };
    let DataType::Map(..) = c.data_type() else {
        return Err(bad());
    };
    let map = c.as_map();
    let keys = arrow::compute::cast(map.keys(), &DataType::Utf8).map_err(|_| bad())?;
    let keys = keys.as_string::<i32>();
    let values = bytes_of(map.values(), "headers_column")?;
    let offsets = map.value_offsets();
    Ok((0..c.len())
        .map(|i| {
            if c.is_null(i) {
                return Headers::new();
            }
            let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
            (a..b)
                .map(|j| {
                    (
                        StrBytes::from_string(keys.value(j).to_string()),
                        values[j].clone(),
                    )
                })
                .collect()
        })
        .collect())
}

/// Milliseconds since the epoch of each value of a timestamp or integer column.
fn millis_of(c: &ArrayRef) -> Result<Vec<Option<i64>>> {
    let ms = match c.data_type() {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => arrow::compute::cast(
            &arrow::compute::cast(c, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
            &DataType::Int64,
        )?,
        d if d.is_integer() => arrow::compute::cast(c, &DataType::Int64)?,
        d => {
            return Err(Error::data(format!(
                "kafka: timestamp_column must be a timestamp or integer (ms), not {d}"
            ))
            .retryable(false))
        }
    };
    Ok(ms
        .as_primitive::<arrow::datatypes::Int64Type>()
        .iter()
        .collect())
}

/// Kafka's murmur2 (the Java client's default partitioner hash).
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const SEED: u32 = 0x9747_b28c;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Records → rows, see the module docs.
#[derive(Debug)]
pub struct Decoder {
    format: ValueFormat,
    /// The value columns' schema (JSON), `None` until inferred.
    schema: Option<SchemaRef>,
    /// Whether new fields may widen `schema` (inferred, not declared).
    evolve: bool,
    metadata: bool,
}

/// What [`Decoder::decode`] made of a run of records.
#[derive(Debug)]
pub struct Decoded {
    /// The rows of the records that decoded.
    pub rows: Option<RecordBatch>,
    /// Records that did not, as dead-letter input rows (key, value as text or base64,
    /// partition, offset) with the reason of each.
    pub failed: Vec<(RecordBatch, String)>,
}

impl Decoder {
    /// A decoder of `format` values into `schema` (JSON only; `None`: inferred from the
    /// records and widened by new fields), with `__kafka_*` columns when `metadata`.
    pub fn new(format: ValueFormat, schema: Option<SchemaRef>, metadata: bool) -> Self {
        Decoder {
            format,
            evolve: schema.is_none(),
            schema,
            metadata,
        }
    }

    /// The rows of `records`, read from `topic`/`partition`.
    pub fn decode(&mut self, records: &[Record], topic: &str, partition: i32) -> Result<Decoded> {
        if records.is_empty() {
            return Ok(Decoded {
                rows: None,
                failed: Vec::new(),
            });
        }
        let (values, failed) = match self.format {
            ValueFormat::Json => self.json(records)?,
            ValueFormat::String => {
                let mut ok = Vec::new();
                let mut failed = Vec::new();
                let mut b = StringBuilder::new();
                for (i, r) in records.iter().enumerate() {
                    match r.value.as_deref().map(std::str::from_utf8) {
                        Some(Err(e)) => failed.push((i, format!("the value is not UTF-8: {e}"))),
                        Some(Ok(s)) => {
                            b.append_value(s);
                            ok.push(i);
                        }
                        None => {
                            b.append_null();
                            ok.push(i);
                        }
                    }
                }
                let col: ArrayRef = Arc::new(b.finish());
                let schema = Schema::new(vec![Field::new("value", DataType::Utf8, true)]);
                (
                    Some((RecordBatch::try_new(Arc::new(schema), vec![col])?, ok)),
                    failed,
                )
            }
            ValueFormat::Bytes => {
                let col: ArrayRef = Arc::new(BinaryArray::from_iter(
                    records.iter().map(|r| r.value.as_deref()),
                ));
                let schema = Schema::new(vec![Field::new("value", DataType::Binary, true)]);
                (
                    Some((
                        RecordBatch::try_new(Arc::new(schema), vec![col])?,
                        (0..records.len()).collect(),
                    )),
                    Vec::new(),
                )
            }
        };
        let rows = match values {
            Some((values, idx)) if !idx.is_empty() => {
                let chosen: Vec<&Record> = idx.iter().map(|&i| &records[i]).collect();
                Some(if self.metadata {
                    with_metadata(&values, &chosen, topic, partition)?
                } else {
                    values
                })
            }
            _ => None,
        };
        let failed = failed
            .into_iter()
            .map(|(i, why)| Ok((failed_row(&records[i], topic, partition)?, why)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Decoded { rows, failed })
    }

    /// JSON values: the rows of those that decode (with their record indices), and the
    /// indices of the others with the reason. The usual case costs one arrow-json pass;
    /// an inferred schema is re-inferred only when a strict pass finds fields it lacks.
    #[allow(clippy::type_complexity)]
    fn json(
        &mut self,
        records: &[Record],
    ) -> Result<(Option<(RecordBatch, Vec<usize>)>, Vec<(usize, String)>)> {
        // Tombstones (no value) are rows of nulls.
        let value = |i: usize| -> Bytes {
            records[i]
                .value
                .clone()
                .unwrap_or_else(|| Bytes::from_static(b"{}"))
        };
        let all: Vec<usize> = (0..records.len()).collect();
        if self.schema.is_none() {
            if let Ok(s) = infer(all.iter().map(|&i| value(i))) {
                self.widen(s);
            }
        }
        if let Some(schema) = self.schema.clone() {
            if let Ok(b) = read_json(&schema, all.iter().map(|&i| value(i)), self.evolve) {
                return Ok((Some((b, all)), Vec::new()));
            }
        }
        // Some record is not JSON, not an object, does not fit, or (inferred schema)
        // brings fields or types the schema lacks: record by record.
        let mut good = Vec::new();
        let mut failed = Vec::new();
        for &i in &all {
            let fits = match &self.schema {
                Some(s) => read_json(s, std::iter::once(value(i)), self.evolve).map(|_| ()),
                None => Err(Error::data("no schema yet")),
            };
            let outcome = match fits {
                Ok(()) => Ok(()),
                Err(e) if !self.evolve => Err(format!("the value does not decode: {e}")),
                Err(_) => match infer(std::iter::once(value(i))) {
                    Err(e) => Err(format!("the value is not a JSON object: {e}")),
                    Ok(found) => {
                        self.widen(found);
                        match &self.schema {
                            Some(s) => read_json(s, std::iter::once(value(i)), false)
                                .map(|_| ())
                                .map_err(|e| format!("the value does not decode: {e}")),
                            None => Err("no schema".to_string()),
                        }
                    }
                },
            };
            match outcome {
                Ok(()) => good.push(i),
                Err(why) => failed.push((i, why)),
            }
        }
        let (Some(schema), false) = (self.schema.clone(), good.is_empty()) else {
            return Ok((None, failed));
        };
        let b = read_json(&schema, good.iter().map(|&i| value(i)), false)?;
        Ok((Some((b, good)), failed))
    }

    /// Merge `found` into the inferred schema (new fields appended; a field's type widened
    /// where the two differ, to text when they do not agree).
    fn widen(&mut self, found: Schema) {
        let current = match &self.schema {
            None => {
                self.schema = Some(Arc::new(found));
                return;
            }
            Some(s) => s.clone(),
        };
        let mut fields: Vec<Field> = current
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut changed = false;
        for f in found.fields() {
            match fields.iter_mut().find(|g| g.name() == f.name()) {
                None => {
                    fields.push(f.as_ref().clone().with_nullable(true));
                    changed = true;
                }
                Some(g) if g.data_type() != f.data_type() => {
                    let wider = wider_type(g.data_type(), f.data_type());
                    if &wider != g.data_type() {
                        *g = Field::new(g.name(), wider, true);
                        changed = true;
                    }
                }
                Some(_) => {}
            }
        }
        if changed {
            tracing::info!(fields = ?fields.iter().map(|f| f.name()).collect::<Vec<_>>(), "kafka: value schema widened");
            self.schema = Some(Arc::new(Schema::new(fields)));
        }
    }
}

/// The type that holds values of both `a` and `b`.
fn wider_type(a: &DataType, b: &DataType) -> DataType {
    use DataType::*;
    match (a, b) {
        (a, b) if a == b => a.clone(),
        (Null, t) | (t, Null) => t.clone(),
        (Int64, Float64) | (Float64, Int64) => Float64,
        (Struct(x), Struct(y)) => {
            let mut fields: Vec<Field> = x.iter().map(|f| f.as_ref().clone()).collect();
            for f in y.iter() {
                match fields.iter_mut().find(|g| g.name() == f.name()) {
                    None => fields.push(f.as_ref().clone().with_nullable(true)),
                    Some(g) => {
                        let t = wider_type(g.data_type(), f.data_type());
                        *g = Field::new(g.name(), t, true);
                    }
                }
            }
            Struct(Fields::from(fields))
        }
        (List(x), List(y)) => List(Arc::new(Field::new(
            x.name(),
            wider_type(x.data_type(), y.data_type()),
            true,
        ))),
        _ => Utf8,
    }
}

/// The schema arrow-json infers from `values` (one JSON object each).
fn infer(values: impl Iterator<Item = Bytes>) -> Result<Schema> {
    let mut buf = Vec::new();
    for v in values {
        buf.extend_from_slice(&v);
        buf.push(b'\n');
    }
    let (schema, _) = arrow::json::reader::infer_json_schema(std::io::Cursor::new(buf), None)
        .map_err(|e| Error::data(format!("{e}")))?;
    Ok(schema)
}

/// `values` (JSON objects) decoded into `schema`. `strict`: a field not in the schema is
/// an error (an inferred schema must grow); otherwise such fields are ignored. Numbers
/// and booleans read into text columns as their text.
fn read_json(
    schema: &SchemaRef,
    values: impl Iterator<Item = Bytes>,
    strict: bool,
) -> Result<RecordBatch> {
    let values: Vec<Bytes> = values.collect();
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(values.len() + 1)
        .with_strict_mode(strict)
        .with_coerce_primitive(true)
        .build_decoder()?;
    let mut rows = 0usize;
    for v in values {
        let mut at = 0;
        while at < v.len() {
            let n = decoder.decode(&v[at..])?;
            if n == 0 {
                break;
            }
            at += n;
        }
        // Each value is one row; a value holding several would shift every later row.
        rows += 1;
        if decoder.len() != rows {
            return Err(Error::data(format!(
                "the value holds {} JSON values, not one object",
                decoder.len() + 1 - rows
            )));
        }
    }
    decoder.flush()?.ok_or_else(|| Error::data("no JSON value"))
}

/// `values` followed by the `__kafka_*` columns of `records`.
fn with_metadata(
    values: &RecordBatch,
    records: &[&Record],
    topic: &str,
    partition: i32,
) -> Result<RecordBatch> {
    let n = records.len();
    let mut fields: Vec<Field> = values
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols: Vec<ArrayRef> = values.columns().to_vec();
    let (f, c) = metadata_columns(records, topic, partition, n);
    fields.extend(f);
    cols.extend(c);
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

fn metadata_columns(
    records: &[&Record],
    topic: &str,
    partition: i32,
    n: usize,
) -> (Vec<Field>, Vec<ArrayRef>) {
    let mut headers = MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new());
    for r in records {
        for (k, v) in &r.headers {
            headers.keys().append_value(k.as_str());
            match v {
                Some(v) => headers.values().append_value(v),
                None => headers.values().append_null(),
            }
        }
        // Appending a row of the map always succeeds for matching key/value counts.
        let _ = headers.append(true);
    }
    let headers = headers.finish();
    let fields = vec![
        Field::new(KEY, DataType::Binary, true),
        Field::new(TOPIC, DataType::Utf8, false),
        Field::new(PARTITION, DataType::Int32, false),
        Field::new(OFFSET, DataType::Int64, false),
        Field::new(
            TIMESTAMP,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new(HEADERS, headers.data_type().clone(), false),
    ];
    let cols: Vec<ArrayRef> = vec![
        Arc::new(BinaryArray::from_iter(
            records.iter().map(|r| r.key.as_deref()),
        )),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(topic, n))),
        Arc::new(Int32Array::from_value(partition, n)),
        Arc::new(Int64Array::from_iter_values(
            records.iter().map(|r| r.offset),
        )),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(records.iter().map(|r| r.timestamp))
                .with_timezone("UTC"),
        ),
        Arc::new(headers),
    ];
    (fields, cols)
}

/// A record that failed to decode, as the dead-letter topic keeps it: its value (text
/// when UTF-8, else lossy) and the `__kafka_*` columns.
fn failed_row(r: &Record, topic: &str, partition: i32) -> Result<RecordBatch> {
    let value = r
        .value
        .as_deref()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let values = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("value", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec![value])) as ArrayRef],
    )?;
    with_metadata(&values, &[r], topic, partition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values of org.apache.kafka.common.utils.Utils.murmur2 (Kafka's own tests).
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    fn rec(offset: i64, value: &str) -> Record {
        let mut r = crate::records::record(
            Some(Bytes::from(format!("k{offset}"))),
            Some(Bytes::from(value.to_string())),
            1000 + offset,
            IndexMap::new(),
        );
        r.offset = offset;
        r
    }

    #[test]
    fn json_values_infer_widen_and_refuse_what_is_not_json() {
        let mut d = Decoder::new(ValueFormat::Json, None, true);
        let out = d
            .decode(
                &[
                    rec(0, r#"{"a": 1, "b": "x"}"#),
                    rec(1, "not json"),
                    rec(2, r#"{"a": 2}"#),
                ],
                "t",
                3,
            )
            .unwrap();
        let rows = out.rows.unwrap();
        assert_eq!(rows.num_rows(), 2);
        assert_eq!(out.failed.len(), 1);
        assert!(
            out.failed[0].1.contains("not a JSON object"),
            "{}",
            out.failed[0].1
        );
        let offsets = rows
            .column_by_name(OFFSET)
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(offsets.values().to_vec(), vec![0, 2]);
        // A new field widens the schema; the old rows' shape stays a prefix.
        let out = d
            .decode(&[rec(3, r#"{"a": 3, "c": true}"#)], "t", 3)
            .unwrap();
        let rows = out.rows.unwrap();
        let names: Vec<_> = rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(&names[..3], &["a", "b", "c"]);
    }

    #[test]
    fn rows_encode_as_json_with_keys_and_partitions() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new(KEY, DataType::Binary, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a\nb"), None])),
                Arc::new(BinaryArray::from(vec![Some(&b"x"[..]), None])),
            ],
        )
        .unwrap();
        let mut e = Encoder::new(EncodeOptions {
            key_column: Some("id".into()),
            ..Default::default()
        });
        let out = e.encode(&batch, 4, 7).unwrap();
        let all: Vec<&Record> = out.iter().flat_map(|(_, r)| r.iter()).collect();
        assert_eq!(all.len(), 2);
        let one = all
            .iter()
            .find(|r| r.key.as_deref() == Some(&b"1"[..]))
            .unwrap();
        assert_eq!(
            one.value.as_deref(),
            Some(&br#"{"id":1,"name":"a\nb"}"#[..])
        );
        assert_eq!(one.timestamp, 7);
        let p = out
            .iter()
            .find(|(_, r)| r.iter().any(|r| r.key.as_deref() == Some(&b"1"[..])))
            .unwrap()
            .0;
        assert_eq!(p as u32, (murmur2(b"1") & 0x7fff_ffff) % 4);
    }
}
