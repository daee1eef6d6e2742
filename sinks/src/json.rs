//! How batches become JSON, for every sink that writes it (stdout, the `jsonl` and `json`
//! formats): arrow-json's encoders, with two choices of ours.
//!
//! - Columns tagged with the `arrow.json` extension (PostgreSQL `json`/`jsonb`) are written
//!   as the JSON they hold, not as a quoted string.
//! - Non-finite floats are written as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`,
//!   as PostgreSQL's `row_to_json` writes them (JSON has no number for them; arrow-json
//!   would write `null`, which cannot be told from a missing value).

use arrow::array::{Array, AsArray, StringArray};
use arrow::datatypes::{DataType, FieldRef, Float16Type, Float32Type, Float64Type};
use arrow::error::ArrowError;
use arrow::json::writer::{make_encoder, Encoder, EncoderFactory, EncoderOptions, NullableEncoder};
use std::sync::{Arc, LazyLock};

/// The encoder factory every JSON writer of the sinks uses (see the module docs).
pub fn encoders() -> Arc<dyn EncoderFactory> {
    Arc::new(Encoders)
}

/// Options with no factory: arrow-json's own encoders, for finite floats.
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
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                let finite = make_encoder(field, array, &PLAIN)?;
                Ok(Some(NullableEncoder::new(
                    Box::new(Float { array, finite }),
                    nulls,
                )))
            }
            _ => Ok(None),
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

/// A float: finite values as arrow-json writes them, others as PostgreSQL's strings.
struct Float<'a> {
    array: &'a dyn Array,
    finite: NullableEncoder<'a>,
}

impl Float<'_> {
    fn value(&self, idx: usize) -> f64 {
        match self.array.data_type() {
            DataType::Float16 => self.array.as_primitive::<Float16Type>().value(idx).to_f64(),
            DataType::Float32 => f64::from(self.array.as_primitive::<Float32Type>().value(idx)),
            _ => self.array.as_primitive::<Float64Type>().value(idx),
        }
    }
}

impl Encoder for Float<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let v = self.value(idx);
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
