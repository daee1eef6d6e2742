//! How batches become text, for every sink that writes it (stdout, the `jsonl`, `json` and
//! `csv` formats). Three choices of ours on top of arrow's writers:
//!
//! - Columns tagged with the `arrow.json` extension (PostgreSQL `json`/`jsonb`) are written
//!   as the JSON they hold, not as a quoted string.
//! - Non-finite floats are written as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`,
//!   as PostgreSQL's `row_to_json` writes them (JSON has no number for them; arrow-json
//!   would write `null`, which cannot be told from a missing value).
//! - The infinity sentinels of dates and timestamps (the largest and smallest value of the
//!   Arrow type, `i32::MAX` / `-i32::MAX` days and `i64::MAX` / `-i64::MAX` units; how the
//!   PostgreSQL source writes `infinity`) are written as `infinity` and `-infinity`, as
//!   PostgreSQL and DuckDB print them. Arrow's formatters cannot turn them into a calendar
//!   date and would print an error message instead.

use arrow::array::{
    Array, ArrayRef, AsArray, GenericListArray, OffsetSizeTrait, RecordBatch, StringArray,
    StructArray,
};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Field, FieldRef, Float16Type, Float32Type,
    Float64Type, Schema, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow::error::ArrowError;
use arrow::json::writer::{make_encoder, Encoder, EncoderFactory, EncoderOptions, NullableEncoder};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use std::sync::{Arc, LazyLock};

/// The encoder factory every JSON writer of the sinks uses (see the module docs).
pub fn encoders() -> Arc<dyn EncoderFactory> {
    Arc::new(Encoders)
}

/// Options with no factory: arrow-json's own encoders, for finite floats and dates.
static PLAIN: LazyLock<EncoderOptions> = LazyLock::new(EncoderOptions::default);

#[derive(Debug)]
struct Encoders;

impl EncoderFactory for Encoders {
    fn make_default_encoder<'a>(
        &self,
        field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let nulls = array.nulls().cloned();
        match array.data_type() {
            DataType::Utf8
                if field
                    .metadata()
                    .get("ARROW:extension:name")
                    .is_some_and(|n| n == "arrow.json") =>
            {
                let Some(text) = array.as_any().downcast_ref::<StringArray>() else {
                    return Ok(None);
                };
                Ok(Some(NullableEncoder::new(Box::new(RawJson(text)), nulls)))
            }
            _ => {
                if let Some(values) = Instants::of(array) {
                    let finite = make_encoder(field, array, &PLAIN)?;
                    return Ok(Some(NullableEncoder::new(
                        Box::new(Temporal { values, finite }),
                        nulls,
                    )));
                }
                if let Some(values) = Floats::of(array) {
                    let finite = make_encoder(field, array, &PLAIN)?;
                    return Ok(Some(NullableEncoder::new(
                        Box::new(Float { values, finite }),
                        nulls,
                    )));
                }
                Ok(None)
            }
        }
    }
}

/// A `json`/`jsonb` value: its text is the JSON.
struct RawJson<'a>(&'a StringArray);

impl Encoder for RawJson<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.value(idx).as_bytes());
    }
}

/// The values of a float array, read once per array (not per row).
#[derive(Clone, Copy)]
enum Floats<'a> {
    F16(&'a [<Float16Type as ArrowPrimitiveType>::Native]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl<'a> Floats<'a> {
    fn of(array: &'a dyn Array) -> Option<Self> {
        Some(match array.data_type() {
            DataType::Float16 => Floats::F16(array.as_primitive::<Float16Type>().values()),
            DataType::Float32 => Floats::F32(array.as_primitive::<Float32Type>().values()),
            DataType::Float64 => Floats::F64(array.as_primitive::<Float64Type>().values()),
            _ => return None,
        })
    }

    fn get(self, idx: usize) -> f64 {
        match self {
            Floats::F16(v) => v[idx].to_f64(),
            Floats::F32(v) => f64::from(v[idx]),
            Floats::F64(v) => v[idx],
        }
    }
}

/// A float: finite values as arrow-json writes them, others as PostgreSQL's strings.
struct Float<'a> {
    values: Floats<'a>,
    finite: NullableEncoder<'a>,
}

impl Encoder for Float<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let v = self.values.get(idx);
        if v.is_nan() {
            out.extend_from_slice(b"\"NaN\"");
        } else if v == f64::INFINITY {
            out.extend_from_slice(b"\"Infinity\"");
        } else if v == f64::NEG_INFINITY {
            out.extend_from_slice(b"\"-Infinity\"");
        } else {
            self.finite.encode(idx, out);
        }
    }
}

/// The values of a date or timestamp array, read once per array (not per row).
#[derive(Clone, Copy)]
enum Instants<'a> {
    /// Date32: days.
    Days(&'a [i32]),
    /// Timestamps of any unit.
    Units(&'a [i64]),
}

impl<'a> Instants<'a> {
    fn of(array: &'a dyn Array) -> Option<Self> {
        Some(match array.data_type() {
            DataType::Date32 => Instants::Days(array.as_primitive::<Date32Type>().values()),
            DataType::Timestamp(unit, _) => Instants::Units(match unit {
                TimeUnit::Second => array.as_primitive::<TimestampSecondType>().values(),
                TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().values(),
                TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().values(),
                TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().values(),
            }),
            _ => return None,
        })
    }

    /// Whether row `idx` holds an infinity sentinel: `Some(true)` for `infinity`,
    /// `Some(false)` for `-infinity`.
    fn infinity(self, idx: usize) -> Option<bool> {
        match self {
            Instants::Days(v) => match v[idx] {
                i32::MAX => Some(true),
                d if d == -i32::MAX => Some(false),
                _ => None,
            },
            Instants::Units(v) => match v[idx] {
                i64::MAX => Some(true),
                t if t == -i64::MAX => Some(false),
                _ => None,
            },
        }
    }
}

fn infinity_text(positive: bool) -> &'static str {
    if positive {
        "infinity"
    } else {
        "-infinity"
    }
}

/// A date or timestamp: infinity sentinels as strings, other values as arrow-json writes
/// them.
struct Temporal<'a> {
    values: Instants<'a>,
    finite: NullableEncoder<'a>,
}

impl Encoder for Temporal<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        match self.values.infinity(idx) {
            Some(p) => {
                out.push(b'"');
                out.extend_from_slice(infinity_text(p).as_bytes());
                out.push(b'"');
            }
            None => self.finite.encode(idx, out),
        }
    }
}

/// `batch` with every date or timestamp column (also inside structs and lists) that holds
/// an infinity sentinel turned into text, so that arrow's CSV and table writers print
/// `infinity` / `-infinity` rather than an error. Other columns are untouched; a batch
/// with no sentinel is returned as it is.
pub fn infinity_as_text(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let mut changed = false;
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        match texted(col)? {
            Some(text) => {
                changed = true;
                fields.push(retyped(field, text.data_type()));
                columns.push(text);
            }
            None => {
                fields.push(field.clone());
                columns.push(col.clone());
            }
        }
    }
    if !changed {
        return Ok(batch.clone());
    }
    let schema = Schema::new(fields).with_metadata(batch.schema().metadata().clone());
    RecordBatch::try_new(Arc::new(schema), columns)
}

fn retyped(field: &FieldRef, data_type: &DataType) -> FieldRef {
    Arc::new(Field::clone(field).with_data_type(data_type.clone()))
}

/// `col` with its sentinel-holding temporal parts as text, or `None` when it has none.
fn texted(col: &ArrayRef) -> Result<Option<ArrayRef>, ArrowError> {
    match col.data_type() {
        DataType::Date32 | DataType::Timestamp(..) => {
            let Some(values) = Instants::of(col.as_ref()) else {
                return Ok(None);
            };
            let any = (0..col.len()).any(|i| col.is_valid(i) && values.infinity(i).is_some());
            if !any {
                return Ok(None);
            }
            let fmt = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())?;
            let text: StringArray = (0..col.len())
                .map(|i| {
                    col.is_valid(i).then(|| match values.infinity(i) {
                        Some(p) => infinity_text(p).to_owned(),
                        None => fmt.value(i).to_string(),
                    })
                })
                .collect();
            Ok(Some(Arc::new(text)))
        }
        DataType::Struct(_) => {
            let s = col.as_struct();
            let mut changed = false;
            let mut fields = Vec::with_capacity(s.num_columns());
            let mut children = Vec::with_capacity(s.num_columns());
            for (f, c) in s.fields().iter().zip(s.columns()) {
                match texted(c)? {
                    Some(t) => {
                        changed = true;
                        fields.push(retyped(f, t.data_type()));
                        children.push(t);
                    }
                    None => {
                        fields.push(f.clone());
                        children.push(c.clone());
                    }
                }
            }
            if !changed {
                return Ok(None);
            }
            let out = StructArray::try_new(fields.into(), children, s.nulls().cloned())?;
            Ok(Some(Arc::new(out)))
        }
        DataType::List(_) => list(col.as_list::<i32>()),
        DataType::LargeList(_) => list(col.as_list::<i64>()),
        _ => Ok(None),
    }
}

fn list<O: OffsetSizeTrait>(l: &GenericListArray<O>) -> Result<Option<ArrayRef>, ArrowError> {
    let Some(values) = texted(l.values())? else {
        return Ok(None);
    };
    let (DataType::List(item) | DataType::LargeList(item)) = l.data_type() else {
        return Ok(None);
    };
    let out = GenericListArray::<O>::try_new(
        retyped(item, values.data_type()),
        l.offsets().clone(),
        values,
        l.nulls().cloned(),
    )?;
    Ok(Some(Arc::new(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, Float64Array, RecordBatch};
    use arrow::datatypes::{Field, Schema};
    use std::collections::HashMap;

    #[test]
    fn non_finite_floats_and_json_columns_as_postgres_writes_them() {
        let json = Field::new("doc", DataType::Utf8, true).with_metadata(HashMap::from([(
            "ARROW:extension:name".to_string(),
            "arrow.json".to_string(),
        )]));
        let schema = Arc::new(Schema::new(vec![
            Field::new("r", DataType::Float32, true),
            Field::new("d", DataType::Float64, true),
            json,
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float32Array::from(vec![
                    Some(f32::INFINITY),
                    Some(1.5),
                    None,
                ])),
                Arc::new(Float64Array::from(vec![
                    Some(f64::NAN),
                    Some(f64::NEG_INFINITY),
                    Some(1e300),
                ])),
                Arc::new(StringArray::from(vec![
                    Some(r#"{"a":[1]}"#),
                    None,
                    Some("2"),
                ])),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .with_encoder_factory(encoders())
            .build::<_, arrow::json::writer::LineDelimited>(&mut out);
        w.write(&batch).unwrap();
        w.finish().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"r\":\"Infinity\",\"d\":\"NaN\",\"doc\":{\"a\":[1]}}\n\
             {\"r\":1.5,\"d\":\"-Infinity\",\"doc\":null}\n\
             {\"r\":null,\"d\":1.0e300,\"doc\":2}\n"
        );
    }
}
