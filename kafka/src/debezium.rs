//! Change events in Debezium's record layout (Kafka Connect's JSON converter with
//! `schemas.enable=false`), so consumers written for Debezium topics read ours unchanged.
//!
//! For each change-event row (see `rivven_engine::batch::change_event_schema`):
//!
//! - **value**: `{"before", "after", "source", "op", "ts_ms", "transaction": null}`, the
//!   row images with Debezium's default value representations (below) and `source` with
//!   Debezium's field names for the connector (PostgreSQL: `version`, `connector`, `name`,
//!   `ts_ms`, `snapshot`, `db`, `sequence`, `schema`, `table`, `txId`, `lsn`, `xmin`);
//! - **key**: the key columns (the batch's `rivven.key` metadata) as a JSON object, taken
//!   from `after`, or from `before` for deletes; no key when the table has none;
//! - a **tombstone** (same key, no value) after each delete, when asked, so compacted
//!   topics drop the deleted key.
//!
//! Values as Debezium writes them by default: timestamps without zone as integers since
//! the epoch in their own unit (`io.debezium.time.MicroTimestamp` for microseconds),
//! timestamps with zone as ISO-8601 text (`ZonedTimestamp`), dates as days since the epoch
//! (`io.debezium.time.Date`), times as integers of their unit (`MicroTime`), bytes as
//! base64 text, decimals by `decimal_handling`: `precise` (Kafka Connect `Decimal`: the
//! unscaled two's-complement big-endian bytes, base64), `double` or `string`.

use crate::json::rows as json_values;
use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, ListArray, NullArray, RecordBatch, StringArray,
    StringBuilder, StructArray,
};
use arrow::datatypes::{DataType, Field, Fields, Schema};
use base64::Engine;
use bytes::Bytes;
use rivven_engine::batch::{is_change_event_schema, META_KEY};
use rivven_engine::{Error, Result};
use std::sync::Arc;

/// How decimals are written (Debezium's `decimal.handling.mode`).
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
pub enum DecimalHandling {
    /// Kafka Connect's `Decimal`: the unscaled value's two's-complement big-endian
    /// bytes, base64 (exact; the scale is in the column's type).
    #[default]
    Precise,
    /// A JSON number (double precision).
    Double,
    /// The decimal as text.
    String,
}

/// Settings of the Debezium layout.
#[derive(Debug, Clone)]
pub struct DebeziumOptions {
    /// `source.name`: Debezium's logical server name (its `topic.prefix`).
    pub server_name: String,
    /// Write a tombstone after each delete.
    pub tombstones: bool,
    /// How decimals are written.
    pub decimal_handling: DecimalHandling,
}

/// How rows become records.
#[derive(Debug, Clone, Default)]
pub enum Envelope {
    /// The row as one JSON object (or the `value_column`), the key from `key_column`.
    #[default]
    Plain,
    /// Debezium's layout; rows that are not change events are refused.
    Debezium(DebeziumOptions),
    /// Debezium's layout for change events, `Plain` for other rows.
    Auto(DebeziumOptions),
}

impl Envelope {
    /// The Debezium settings to encode `schema`'s rows with, if any.
    pub fn debezium_for(&self, schema: &Schema) -> Option<&DebeziumOptions> {
        match self {
            Envelope::Plain => None,
            Envelope::Debezium(d) => Some(d),
            Envelope::Auto(d) => is_change_event_schema(schema).then_some(d),
        }
    }
}

/// The records of one batch in Debezium's layout, one per row.
#[derive(Debug)]
pub struct Encoded {
    /// Record keys (`None`: the table has no key, or a truncate).
    pub keys: Vec<Option<Bytes>>,
    /// Record values.
    pub values: Vec<Option<Bytes>>,
    /// Whether a tombstone follows the row's record.
    pub tombstone_after: Vec<bool>,
}

/// `batch` (change events) in Debezium's layout; an error naming what is missing when
/// it is not a change-event batch.
pub fn encode(batch: &RecordBatch, opts: &DebeziumOptions) -> Result<Encoded> {
    let schema = batch.schema();
    if !is_change_event_schema(&schema) {
        return Err(Error::data(
            "kafka: `envelope: debezium` needs change events (op, before, after, source \
             columns); these rows are flat: use `envelope: plain`",
        )
        .retryable(false));
    }
    let col = |name: &str| -> Result<ArrayRef> {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| Error::data(format!("kafka: change events without `{name}`")))
    };
    let n = batch.num_rows();
    let op = arrow::compute::cast(&col("op")?, &DataType::Utf8)?;
    let before = col("before")?;
    let after = col("after")?;
    let ts_ms = arrow::compute::cast(&col("ts_ms")?, &DataType::Int64)?;
    let source = debezium_source(col("source")?.as_struct(), &ts_ms, &opts.server_name)?;
    let dec = opts.decimal_handling;
    let value_fields = vec![
        Field::new("before", to_debezium_type(before.data_type(), dec), true),
        Field::new("after", to_debezium_type(after.data_type(), dec), true),
        Field::new("source", source.data_type().clone(), false),
        Field::new("op", DataType::Utf8, false),
        Field::new("ts_ms", DataType::Int64, false),
        Field::new("transaction", DataType::Null, true),
    ];
    let values = RecordBatch::try_new(
        Arc::new(Schema::new(value_fields)),
        vec![
            to_debezium(&before, dec)?,
            to_debezium(&after, dec)?,
            Arc::new(source),
            op.clone(),
            ts_ms,
            Arc::new(NullArray::new(n)),
        ],
    )?;
    let values: Vec<Option<Bytes>> = json_values(&values)?.into_iter().map(Some).collect();

    let key_names: Vec<&str> = schema
        .metadata()
        .get(META_KEY)
        .map(|k| {
            k.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let keys = if key_names.is_empty() {
        vec![None; n]
    } else {
        let key = key_struct(before.as_struct(), after.as_struct(), &key_names)?;
        let key = to_debezium(&(Arc::new(key) as ArrayRef), dec)?;
        let key = key.as_struct();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(key.fields().clone())),
            key.columns().to_vec(),
        )?;
        let json = json_values(&batch)?;
        let ops = op.as_string::<i32>();
        // A truncate names no row: no key.
        json.into_iter()
            .enumerate()
            .map(|(i, k)| (ops.value(i) != "t").then_some(k))
            .collect()
    };
    let ops = op.as_string::<i32>();
    let tombstone_after = (0..n)
        .map(|i| opts.tombstones && ops.value(i) == "d" && keys[i].is_some())
        .collect();
    Ok(Encoded {
        keys,
        values,
        tombstone_after,
    })
}

/// The key columns, from `after` where there is one, else from `before`.
fn key_struct(before: &StructArray, after: &StructArray, names: &[&str]) -> Result<StructArray> {
    let has_after = arrow::compute::is_not_null(after)?;
    let mut fields = Vec::with_capacity(names.len());
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        let (Some(a), Some(b)) = (after.column_by_name(name), before.column_by_name(name)) else {
            return Err(Error::data(format!(
                "kafka: key column `{name}` is not a column of the row images"
            ))
            .retryable(false));
        };
        columns.push(arrow::compute::kernels::zip::zip(&has_after, a, b)?);
        fields.push(Field::new(*name, a.data_type().clone(), true));
    }
    Ok(StructArray::try_new(Fields::from(fields), columns, None)?)
}

/// `source` with Debezium's names: PostgreSQL's layout for `postgresql` events, and for
/// others the common fields with the position as `pos` text.
fn debezium_source(src: &StructArray, ts_ms: &ArrayRef, server: &str) -> Result<StructArray> {
    let n = src.len();
    let text = |name: &str| -> ArrayRef {
        src.column_by_name(name)
            .and_then(|c| arrow::compute::cast(c, &DataType::Utf8).ok())
            .unwrap_or_else(|| Arc::new(StringArray::new_null(n)))
    };
    let int = |name: &str| -> ArrayRef {
        src.column_by_name(name)
            .and_then(|c| arrow::compute::cast(c, &DataType::Int64).ok())
            .unwrap_or_else(|| Arc::new(Int64Array::new_null(n)))
    };
    let constant = |v: &str| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * v.len());
        (0..n).for_each(|_| b.append_value(v));
        Arc::new(b.finish())
    };
    let connector = text("connector");
    let connector_name = connector
        .as_string::<i32>()
        .iter()
        .flatten()
        .next()
        .unwrap_or("")
        .to_string();
    // Commit time, or the event's time where the source had none (snapshot rows).
    let src_ts = int("ts_ms");
    let has_ts = arrow::compute::is_not_null(&src_ts)?;
    let commit_ts = arrow::compute::kernels::zip::zip(&has_ts, &src_ts, ts_ms)?;
    let snapshot: ArrayRef = match src.column_by_name("snapshot") {
        Some(c) => {
            let c = arrow::compute::cast(c, &DataType::Boolean)?;
            Arc::new(
                c.as_boolean()
                    .iter()
                    .map(|s| Some(if s == Some(true) { "true" } else { "false" }))
                    .collect::<StringArray>(),
            )
        }
        None => constant("false"),
    };
    let version = constant(concat!("rivven-connect ", env!("CARGO_PKG_VERSION")));
    let mut fields = vec![
        Field::new("version", DataType::Utf8, false),
        Field::new("connector", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, false),
        Field::new("ts_ms", DataType::Int64, true),
        Field::new("snapshot", DataType::Utf8, true),
        Field::new("db", DataType::Utf8, true),
    ];
    let mut columns = vec![
        version,
        connector,
        constant(server),
        commit_ts,
        snapshot,
        text("db"),
    ];
    if connector_name == "postgresql" {
        let pos = text("pos");
        let lsn: Int64Array = pos
            .as_string::<i32>()
            .iter()
            .map(|p| p.and_then(parse_lsn))
            .collect();
        fields.extend([
            Field::new("sequence", DataType::Utf8, true),
            Field::new("schema", DataType::Utf8, true),
            Field::new("table", DataType::Utf8, true),
            Field::new("txId", DataType::Int64, true),
            Field::new("lsn", DataType::Int64, true),
            Field::new("xmin", DataType::Int64, true),
        ]);
        columns.extend([
            Arc::new(StringArray::new_null(n)) as ArrayRef,
            text("schema"),
            text("table"),
            int("txid"),
            Arc::new(lsn),
            // xmin: not tracked (Debezium writes null unless xmin.fetch.interval.ms is set).
            Arc::new(Int64Array::new_null(n)),
        ]);
    } else {
        fields.extend([
            Field::new("schema", DataType::Utf8, true),
            Field::new("table", DataType::Utf8, true),
            Field::new("txId", DataType::Int64, true),
            Field::new("pos", DataType::Utf8, true),
        ]);
        columns.extend([text("schema"), text("table"), int("txid"), text("pos")]);
    }
    Ok(StructArray::try_new(Fields::from(fields), columns, None)?)
}

/// A PostgreSQL LSN `X/Y` as the integer Debezium writes.
fn parse_lsn(s: &str) -> Option<i64> {
    let (hi, lo) = s.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    i64::try_from((hi << 32) | lo).ok()
}

/// The type `to_debezium` turns `t` into.
fn to_debezium_type(t: &DataType, dec: DecimalHandling) -> DataType {
    match t {
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| {
                    Field::new(
                        f.name(),
                        to_debezium_type(f.data_type(), dec),
                        f.is_nullable(),
                    )
                })
                .collect(),
        ),
        DataType::List(f) => DataType::List(Arc::new(Field::new(
            f.name(),
            to_debezium_type(f.data_type(), dec),
            f.is_nullable(),
        ))),
        DataType::Dictionary(_, v) => to_debezium_type(v, dec),
        DataType::Timestamp(_, None) | DataType::Time64(_) => DataType::Int64,
        DataType::Date32 | DataType::Date64 | DataType::Time32(_) => DataType::Int32,
        DataType::Decimal128(..) | DataType::Decimal256(..) => match dec {
            DecimalHandling::Double => DataType::Float64,
            _ => DataType::Utf8,
        },
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => DataType::Utf8,
        other => other.clone(),
    }
}

/// `a` with Debezium's value representations (see the module docs).
fn to_debezium(a: &ArrayRef, dec: DecimalHandling) -> Result<ArrayRef> {
    Ok(match a.data_type() {
        DataType::Struct(_) => {
            let s = a.as_struct();
            let columns = s
                .columns()
                .iter()
                .map(|c| to_debezium(c, dec))
                .collect::<Result<Vec<_>>>()?;
            let fields: Fields = s
                .fields()
                .iter()
                .zip(&columns)
                .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), f.is_nullable()))
                .collect();
            if fields.is_empty() {
                Arc::new(StructArray::new_empty_fields(s.len(), s.nulls().cloned()))
            } else {
                Arc::new(StructArray::try_new(fields, columns, s.nulls().cloned())?)
            }
        }
        DataType::List(f) => {
            let l = a.as_list::<i32>();
            let values = to_debezium(l.values(), dec)?;
            let field = Arc::new(Field::new(
                f.name(),
                values.data_type().clone(),
                f.is_nullable(),
            ));
            Arc::new(ListArray::try_new(
                field,
                l.offsets().clone(),
                values,
                l.nulls().cloned(),
            )?)
        }
        DataType::Dictionary(_, v) => to_debezium(&arrow::compute::cast(a, v)?, dec)?,
        DataType::Timestamp(_, None) | DataType::Time64(_) => {
            arrow::compute::cast(a, &DataType::Int64)?
        }
        DataType::Date64 => arrow::compute::cast(
            &arrow::compute::cast(a, &DataType::Date32)?,
            &DataType::Int32,
        )?,
        DataType::Date32 | DataType::Time32(_) => arrow::compute::cast(a, &DataType::Int32)?,
        DataType::Decimal128(..) | DataType::Decimal256(..) => match dec {
            DecimalHandling::Double => arrow::compute::cast(a, &DataType::Float64)?,
            DecimalHandling::String => arrow::compute::cast(a, &DataType::Utf8)?,
            DecimalHandling::Precise => Arc::new(precise_decimals(a)),
        },
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            let b = arrow::compute::cast(a, &DataType::Binary)?;
            let b = b.as_binary::<i32>();
            let engine = base64::engine::general_purpose::STANDARD;
            Arc::new(
                b.iter()
                    .map(|v| v.map(|v| engine.encode(v)))
                    .collect::<StringArray>(),
            )
        }
        _ => a.clone(),
    })
}

/// Decimals as Kafka Connect's `Decimal` in JSON: the unscaled value's minimal
/// two's-complement big-endian bytes, base64.
fn precise_decimals(a: &ArrayRef) -> StringArray {
    let engine = base64::engine::general_purpose::STANDARD;
    let minimal = |be: &[u8]| -> String {
        // Drop leading bytes that only repeat the sign.
        let mut start = 0;
        while start + 1 < be.len() {
            let (b, next) = (be[start], be[start + 1]);
            if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
                start += 1;
            } else {
                break;
            }
        }
        engine.encode(&be[start..])
    };
    match a.data_type() {
        DataType::Decimal128(..) => a
            .as_primitive::<arrow::datatypes::Decimal128Type>()
            .iter()
            .map(|v| v.map(|v| minimal(&v.to_be_bytes())))
            .collect(),
        _ => a
            .as_primitive::<arrow::datatypes::Decimal256Type>()
            .iter()
            .map(|v| v.map(|v| minimal(&v.to_be_bytes())))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Decimal128Array;

    #[test]
    fn lsns_are_written_as_debezium_integers() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B_3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("snapshot"), None);
    }

    #[test]
    fn precise_decimals_are_minimal_twos_complement_big_endian() {
        let a: ArrayRef = Arc::new(
            Decimal128Array::from(vec![Some(12345), Some(-1), Some(128), None, Some(0)])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        );
        let s = precise_decimals(&a);
        let e = base64::engine::general_purpose::STANDARD;
        assert_eq!(s.value(0), e.encode([0x30, 0x39]));
        assert_eq!(s.value(1), e.encode([0xff]));
        assert_eq!(s.value(2), e.encode([0x00, 0x80]));
        assert!(s.is_null(3));
        assert_eq!(s.value(4), e.encode([0x00]));
    }
}
