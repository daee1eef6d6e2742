//! Time transforms: `timestamp_converter` and `timezone_converter` (alias
//! `convert_timezone`), and the date-pattern translation they share with
//! `timestamp_router`.

use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::logical_expr::{cast, lit, Expr};
use rivven_engine::config::{FieldError, Validate};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use super::project::{col, Builder};
use crate::field_list::{require_fields, Names};
use crate::op::Op;
use crate::op::Spec;

/// Translate a date pattern to a chrono format. `iso8601` (or empty) is ISO 8601 with
/// milliseconds; a pattern containing `%` is already chrono; otherwise it is a Java
/// `SimpleDateFormat` pattern (`yyyy-MM-dd HH:mm:ss.SSS`, `'T'` for literals), as Kafka
/// Connect's transforms take.
pub fn chrono_format(pattern: &str) -> Result<String, String> {
    match pattern.trim() {
        "" | "iso8601" | "ISO8601" | "iso" => return Ok("%Y-%m-%dT%H:%M:%S%.3fZ".into()),
        p if p.contains('%') => return Ok(p.to_owned()),
        _ => {}
    }
    let mut out = String::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '\'' {
                out.push(chars[j]);
                j += 1;
            }
            if j == i + 1 && j < chars.len() {
                out.push('\'');
            }
            i = j + 1;
            continue;
        }
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        let piece = match (c, n) {
            ('y', 2) => "%y",
            ('y', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', _) => "%I",
            ('m', _) => "%M",
            ('s', _) => "%S",
            ('S', _) => "%3f",
            ('a', _) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('D', _) => "%j",
            ('Z', _) => "%z",
            ('X', _) => "%:z",
            ('z', _) => "%Z",
            (c, _) if c.is_ascii_alphabetic() => {
                return Err(format!("unsupported pattern letter `{c}` in `{pattern}`"))
            }
            (c, _) => {
                for _ in 0..n {
                    if c == '%' {
                        out.push_str("%%");
                    } else {
                        out.push(c);
                    }
                }
                i += n;
                continue;
            }
        };
        out.push_str(piece);
        i += n;
    }
    Ok(out)
}

/// Units of epoch numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Seconds.
    Seconds,
    /// Milliseconds (default).
    #[default]
    Milliseconds,
    /// Microseconds.
    Microseconds,
    /// Nanoseconds.
    Nanoseconds,
}

impl Precision {
    fn unit(self) -> TimeUnit {
        match self {
            Precision::Seconds => TimeUnit::Second,
            Precision::Milliseconds => TimeUnit::Millisecond,
            Precision::Microseconds => TimeUnit::Microsecond,
            Precision::Nanoseconds => TimeUnit::Nanosecond,
        }
    }
}

/// What `timestamp_converter` produces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    /// Text in `format` (default ISO 8601).
    #[default]
    #[serde(alias = "String")]
    String,
    /// Epoch number in `unix_precision`.
    #[serde(alias = "Unix")]
    Unix,
    /// A date.
    #[serde(alias = "Date")]
    Date,
    /// A time of day (microseconds).
    #[serde(alias = "Time")]
    Time,
    /// A timestamp (UTC, millisecond precision unless the input is finer).
    #[serde(alias = "Timestamp")]
    Timestamp,
}

/// `timestamp_converter`: convert time fields between timestamps, dates, times, epoch
/// numbers and text. Inputs may be timestamps, dates, epoch numbers (`unix_precision`) or
/// text (parsed with `format`, or as RFC 3339 when no pattern is given).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimestampConverter {
    /// Fields to convert.
    #[serde(default)]
    pub fields: Names,
    /// One field (Kafka Connect's `field`).
    #[serde(default)]
    pub field: Option<String>,
    /// Output type (default `string`).
    #[serde(default, alias = "target.type")]
    pub target_type: TargetType,
    /// Date pattern for text (default `iso8601`).
    #[serde(default)]
    pub format: Option<String>,
    /// Unit of epoch numbers, in and out.
    #[serde(default, alias = "unix.precision")]
    pub unix_precision: Precision,
}

impl TimestampConverter {
    fn names(&self) -> Vec<String> {
        self.field
            .iter()
            .chain(self.fields.iter())
            .cloned()
            .collect()
    }
}

impl Validate for TimestampConverter {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.names().is_empty() {
            errs.push(FieldError::new("fields", "list at least one field"));
        }
        if let Some(f) = &self.format {
            if let Err(e) = chrono_format(f) {
                errs.push(FieldError::new("format", e));
            }
        }
        errs
    }
}

impl Spec for TimestampConverter {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let mut b = Builder::new(input)?;
        let names = self.names();
        require_fields("fields", &names, b.row())?;
        let fmt = chrono_format(self.format.as_deref().unwrap_or("iso8601"))
            .map_err(|e| FieldError::new("format", e))?;
        let unit = self.unix_precision.unit();
        for (i, name) in names.iter().enumerate() {
            let key = format!("fields[{i}]");
            let ty = b
                .row()
                .field_with_name(name)
                .map(|f| f.data_type().clone())
                .unwrap_or(DataType::Null);
            // Normalise the input to a UTC timestamp.
            let ts_ms = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
            let ts: Expr = match &ty {
                DataType::Timestamp(u, None) => {
                    cast(col(name), DataType::Timestamp(*u, Some("UTC".into())))
                }
                DataType::Timestamp(..) => col(name),
                DataType::Date32 | DataType::Date64 => cast(col(name), ts_ms.clone()),
                t if t.is_integer() => cast(
                    cast(col(name), DataType::Int64),
                    DataType::Timestamp(unit, Some("UTC".into())),
                ),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => match &self.format {
                    Some(_) => datafusion::functions::datetime::expr_fn::to_timestamp_millis(vec![
                        col(name),
                        lit(fmt.clone()),
                    ]),
                    None => cast(col(name), ts_ms.clone()),
                },
                other => {
                    return Err(FieldError::new(
                        key,
                        format!(
                            "`{name}` is {other}; expected a timestamp, date, epoch number or text"
                        ),
                    ))
                }
            };
            let out: Expr = match self.target_type {
                TargetType::String => datafusion::functions::datetime::expr_fn::to_char(
                    cast(ts, ts_ms.clone()),
                    lit(fmt.clone()),
                ),
                TargetType::Unix => cast(
                    cast(ts, DataType::Timestamp(unit, Some("UTC".into()))),
                    DataType::Int64,
                ),
                TargetType::Date => cast(ts, DataType::Date32),
                TargetType::Time => cast(
                    cast(ts, DataType::Timestamp(TimeUnit::Microsecond, None)),
                    DataType::Time64(TimeUnit::Microsecond),
                ),
                TargetType::Timestamp => match &ty {
                    DataType::Timestamp(..) => ts,
                    _ => cast(ts, ts_ms.clone()),
                },
            };
            let v = b.compile(&key, out)?;
            b.set(name, v);
        }
        Ok(b.build(input))
    }
}

/// `timezone_converter` (alias `convert_timezone`): timestamps are shown in
/// `target_timezone` (the instant does not change; the Arrow type's zone does). Timestamps
/// without a zone are read as `source_timezone` (default UTC). With no `fields`, every
/// timestamp field of the row converts.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimezoneConverter {
    /// IANA zone name (`Europe/Berlin`) or offset (`+02:00`).
    #[serde(alias = "converted.timezone", alias = "timezone")]
    pub target_timezone: String,
    /// Zone of timestamps that have none.
    #[serde(default)]
    pub source_timezone: Option<String>,
    /// Fields to convert (default: every timestamp field).
    #[serde(default)]
    pub fields: Names,
}

fn valid_tz(tz: &str) -> Result<(), String> {
    tz.parse::<arrow::array::timezone::Tz>()
        .map(|_| ())
        .map_err(|e| format!("unknown time zone `{tz}`: {e}"))
}

impl Validate for TimezoneConverter {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Err(e) = valid_tz(&self.target_timezone) {
            errs.push(FieldError::new("target_timezone", e));
        }
        if let Some(tz) = &self.source_timezone {
            if let Err(e) = valid_tz(tz) {
                errs.push(FieldError::new("source_timezone", e));
            }
        }
        errs
    }
}

impl Spec for TimezoneConverter {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let mut b = Builder::new(input)?;
        require_fields("fields", &self.fields, b.row())?;
        let names: Vec<String> = if self.fields.is_empty() {
            b.row()
                .fields()
                .iter()
                .filter(|f| matches!(f.data_type(), DataType::Timestamp(..)))
                .map(|f| f.name().clone())
                .collect()
        } else {
            self.fields.to_vec()
        };
        let target: Arc<str> = self.target_timezone.as_str().into();
        let source: Arc<str> = self.source_timezone.as_deref().unwrap_or("UTC").into();
        for (i, name) in names.iter().enumerate() {
            let ty = b
                .row()
                .field_with_name(name)
                .map(|f| f.data_type().clone())
                .unwrap_or(DataType::Null);
            let e = match ty {
                DataType::Timestamp(u, Some(_)) => {
                    cast(col(name), DataType::Timestamp(u, Some(target.clone())))
                }
                DataType::Timestamp(u, None) => cast(
                    cast(col(name), DataType::Timestamp(u, Some(source.clone()))),
                    DataType::Timestamp(u, Some(target.clone())),
                ),
                other => {
                    return Err(FieldError::new(
                        format!("fields[{i}]"),
                        format!("`{name}` is {other}, not a timestamp"),
                    ))
                }
            };
            let v = b.compile(&format!("fields[{i}]"), e)?;
            b.set(name, v);
        }
        Ok(b.build(input))
    }
}

#[cfg(test)]
mod tests {
    use super::chrono_format;

    #[test]
    fn java_patterns_translate() {
        assert_eq!(chrono_format("yyyyMMdd").unwrap(), "%Y%m%d");
        assert_eq!(
            chrono_format("yyyy-MM-dd'T'HH:mm:ss.SSS").unwrap(),
            "%Y-%m-%dT%H:%M:%S.%3f"
        );
        assert_eq!(chrono_format("%Y/%m").unwrap(), "%Y/%m");
        assert!(chrono_format("yyyyQ").is_err());
    }
}
