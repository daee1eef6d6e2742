//! Scalar functions of our own, registered in the planning session: single-pass kernels for
//! transforms whose SQL spelling would build several intermediate arrays per batch.

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::DataType;
use datafusion::common::{exec_err, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use std::any::Any;
use std::sync::Arc;

/// `rivven_mask_last(text, n, mask_char)`: every character but the last `n` replaced by
/// `mask_char` (the `keep_last` form of `mask_field`); null stays null.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MaskLast {
    signature: Signature,
}

impl MaskLast {
    /// The function's name in SQL.
    pub const NAME: &'static str = "rivven_mask_last";

    /// The UDF.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::from(MaskLast {
            signature: Signature::exact(
                vec![DataType::Utf8, DataType::Int64, DataType::Utf8],
                Volatility::Immutable,
            ),
        })
    }
}

impl ScalarUDFImpl for MaskLast {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        Self::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value, n, mask] = args.args.as_slice() else {
            return exec_err!("{} takes 3 arguments", Self::NAME);
        };
        let (ColumnarValue::Scalar(ScalarValue::Int64(Some(n))), ColumnarValue::Scalar(mask)) =
            (n, mask)
        else {
            return exec_err!("{}: n and mask_char must be constants", Self::NAME);
        };
        let Some(mask) = mask.try_as_str().flatten() else {
            return exec_err!("{}: mask_char must be text", Self::NAME);
        };
        let keep = usize::try_from(*n).unwrap_or(0);
        let input = value.to_array(args.number_rows)?;
        let text = input.as_string::<i32>();
        // Values and offsets are written directly: one memset for the mask run and one
        // copy for the kept tail per value.
        let mask = mask.as_bytes();
        let mut values: Vec<u8> = Vec::with_capacity(text.value_data().len() * mask.len().max(1));
        let mut offsets: Vec<i32> = Vec::with_capacity(text.len() + 1);
        offsets.push(0);
        for i in 0..text.len() {
            if text.is_valid(i) {
                let s = text.value(i);
                let (hide, tail) = if s.is_ascii() {
                    let hide = s.len().saturating_sub(keep);
                    (hide, hide)
                } else {
                    let hide = s.chars().count().saturating_sub(keep);
                    let tail = s.char_indices().nth(hide).map_or(s.len(), |(b, _)| b);
                    (hide, tail)
                };
                if let [byte] = mask {
                    values.resize(values.len() + hide, *byte);
                } else {
                    for _ in 0..hide {
                        values.extend_from_slice(mask);
                    }
                }
                values.extend_from_slice(&s.as_bytes()[tail..]);
            }
            let end = i32::try_from(values.len()).map_err(|_| {
                DataFusionError::Execution(format!("{}: output over 2 GiB", Self::NAME))
            })?;
            offsets.push(end);
        }
        let out = StringArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Buffer::from_vec(values),
            text.nulls().cloned(),
        )?;
        let out: ArrayRef = Arc::new(out);
        Ok(ColumnarValue::Array(out))
    }
}

/// `now()` / `current_timestamp` evaluated per batch. DataFusion's own `now()` is folded to
/// one constant when an expression is compiled, and we compile once per schema: a pipeline
/// running for days would stamp every row with its start time. This one is volatile, so it
/// is never folded, and returns the wall-clock time of each evaluation (one value per
/// batch), as `Timestamp(ns, "+00:00")` like DataFusion's.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Now {
    signature: Signature,
    aliases: Vec<String>,
}

impl Now {
    /// The UDF, replacing DataFusion's `now` and `current_timestamp` when registered.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::from(Now {
            signature: Signature::nullary(Volatility::Volatile),
            aliases: vec!["current_timestamp".into()],
        })
    }
}

impl ScalarUDFImpl for Now {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "now"
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(
            arrow::datatypes::TimeUnit::Nanosecond,
            Some("+00:00".into()),
        ))
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| DataFusionError::Execution(e.to_string()))?
            .as_nanos();
        let ns = i64::try_from(ns).map_err(|e| DataFusionError::Execution(e.to_string()))?;
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(
            Some(ns),
            Some("+00:00".into()),
        )))
    }
}

/// `current_date` / `today()` and `current_time` per batch, for the same reason as
/// [`Now`]: DataFusion folds its own into the compile time. UTC, like `now()`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Clock {
    signature: Signature,
    name: &'static str,
    aliases: Vec<String>,
}

impl Clock {
    /// `current_date` (alias `today`): `Date32`.
    pub fn current_date() -> ScalarUDF {
        ScalarUDF::from(Clock {
            signature: Signature::nullary(Volatility::Volatile),
            name: "current_date",
            aliases: vec!["today".into()],
        })
    }

    /// `current_time`: `Time64(ns)`.
    pub fn current_time() -> ScalarUDF {
        ScalarUDF::from(Clock {
            signature: Signature::nullary(Volatility::Volatile),
            name: "current_time",
            aliases: Vec::new(),
        })
    }
}

impl ScalarUDFImpl for Clock {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.name
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(match self.name {
            "current_date" => DataType::Date32,
            _ => DataType::Time64(arrow::datatypes::TimeUnit::Nanosecond),
        })
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| DataFusionError::Execution(e.to_string()))?
            .as_nanos();
        const DAY: u128 = 86_400_000_000_000;
        Ok(ColumnarValue::Scalar(match self.name {
            "current_date" => ScalarValue::Date32(Some(
                i32::try_from(ns / DAY).map_err(|e| DataFusionError::Execution(e.to_string()))?,
            )),
            _ => ScalarValue::Time64Nanosecond(Some(
                i64::try_from(ns % DAY).map_err(|e| DataFusionError::Execution(e.to_string()))?,
            )),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    #[test]
    fn masks_all_but_the_last_characters() {
        let input = StringArray::from(vec![Some("alice@x.io"), Some("äöü€ab"), Some("ab"), None]);
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Array(Arc::new(input)),
                ColumnarValue::Scalar(ScalarValue::Int64(Some(3))),
                ColumnarValue::Scalar(ScalarValue::Utf8(Some("*".into()))),
            ],
            arg_fields: vec![
                Arc::new(Field::new("v", DataType::Utf8, true)),
                Arc::new(Field::new("n", DataType::Int64, false)),
                Arc::new(Field::new("c", DataType::Utf8, false)),
            ],
            number_rows: 4,
            return_field: Arc::new(Field::new("r", DataType::Utf8, true)),
            config_options: Arc::new(Default::default()),
        };
        let ColumnarValue::Array(out) = MaskLast::udf().invoke_with_args(args).unwrap() else {
            panic!("array expected");
        };
        let out = out.as_string::<i32>();
        let got: Vec<Option<&str>> = out.iter().collect();
        assert_eq!(got, [Some("*******.io"), Some("***€ab"), Some("ab"), None]);
    }
}
