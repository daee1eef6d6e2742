//! PostgreSQL types → Arrow types, and column builders that decode PostgreSQL's text
//! output straight into Arrow buffers.
//!
//! The replication session pins the output formats (`DateStyle=ISO`, `TimeZone=UTC`,
//! `IntervalStyle=iso_8601`, `extra_float_digits=3`, `bytea_output=hex`), so each value has
//! one text form to parse. The snapshot reads with the same settings.
//!
//! | PostgreSQL | Arrow |
//! |---|---|
//! | `bool` | Boolean |
//! | `int2` / `int4` / `int8` | Int16 / Int32 / Int64 |
//! | `oid` | UInt32 |
//! | `float4` / `float8` | Float32 / Float64 (NaN and ±Infinity kept) |
//! | `numeric(p,s)`, p ≤ 38 / p ≤ 76 | Decimal128(p,s) / Decimal256(p,s) |
//! | `numeric` without precision, `money` | Utf8, PostgreSQL's exact text |
//! | `text`, `varchar`, `bpchar`, `name`, `"char"`, `citext`, enums | Utf8 |
//! | `bytea` | Binary |
//! | `date` | Date32 |
//! | `time` | Time64(µs) |
//! | `timetz` | Utf8 (`HH:MM:SS[.ffffff]+TZ`, exact) |
//! | `timestamp` | Timestamp(µs) |
//! | `timestamptz` | Timestamp(µs, "UTC") |
//! | `interval` | Interval(MonthDayNano) |
//! | `uuid`, `inet`, `cidr`, `macaddr`, `bit`, `varbit`, `xml`, ranges, other types | Utf8 |
//! | `json`, `jsonb` | Utf8 with the `arrow.json` extension name |
//! | arrays of the above | List of the element type, nested once per declared dimension |
//! | domains | their base type |
//!
//! Values with no Arrow equivalent have a documented representation, so that values a
//! real schema holds never stop a pipeline:
//! - `date`, `timestamp`, `timestamptz` `infinity` / `-infinity`: the largest / smallest
//!   value of the Arrow type (`i32::MAX` / `-i32::MAX` days, `i64::MAX` / `-i64::MAX` µs;
//!   DuckDB reads them as its own `infinity`), or null with `temporal_infinity: null`;
//! - `numeric` NaN (and ±Infinity) in a Decimal column: null;
//! - arrays: a column declared with N dimensions (`int[][]`: 2) is a List nested N deep;
//!   a value with another number of dimensions than declared is a data error naming the
//!   column (dead-letter topic, or a stopped source), never reshaped.

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder,
    IntervalMonthDayNanoBuilder, ListArray, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder, UInt32Builder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, IntervalMonthDayNano, TimeUnit};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

use super::values::{
    infinity, not_a_number, numeric_binary, numeric_binary_i128, parse_array, parse_bytea,
    parse_date, parse_decimal, parse_float, parse_interval, parse_time, parse_timestamp,
    PG_EPOCH_DAYS, PG_EPOCH_MICROS,
};

/// What `infinity` and `-infinity` dates and timestamps become.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemporalInfinity {
    /// The largest / smallest value of the column's Arrow type: `i32::MAX` / `-i32::MAX`
    /// days for `date`, `i64::MAX` / `-i64::MAX` microseconds for `timestamp` and
    /// `timestamptz` (DuckDB reads them as `infinity` / `-infinity`).
    #[default]
    Sentinel,
    /// Null.
    Null,
}

impl TemporalInfinity {
    /// The Date32 value for `infinity` (`positive`) or `-infinity`; `None`: null.
    pub fn date(self, positive: bool) -> Option<i32> {
        match self {
            TemporalInfinity::Sentinel if positive => Some(i32::MAX),
            TemporalInfinity::Sentinel => Some(-i32::MAX),
            TemporalInfinity::Null => None,
        }
    }

    /// The Timestamp(µs) value for `infinity` (`positive`) or `-infinity`; `None`: null.
    pub fn timestamp(self, positive: bool) -> Option<i64> {
        match self {
            TemporalInfinity::Sentinel if positive => Some(i64::MAX),
            TemporalInfinity::Sentinel => Some(-i64::MAX),
            TemporalInfinity::Null => None,
        }
    }
}

/// PostgreSQL type OIDs this module knows.
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// Array type OID → element type OID, for the built-in array types.
pub fn builtin_array_element(array_oid: u32) -> Option<u32> {
    Some(match array_oid {
        1000 => oid::BOOL,
        1001 => oid::BYTEA,
        1002 => oid::CHAR,
        1003 => oid::NAME,
        1005 => oid::INT2,
        1007 => oid::INT4,
        1009 => oid::TEXT,
        1014 => oid::BPCHAR,
        1015 => oid::VARCHAR,
        1016 => oid::INT8,
        1021 => oid::FLOAT4,
        1022 => oid::FLOAT8,
        1028 => oid::OID,
        1115 => oid::TIMESTAMP,
        1182 => oid::DATE,
        1183 => oid::TIME,
        1185 => oid::TIMESTAMPTZ,
        1187 => oid::INTERVAL,
        1231 => oid::NUMERIC,
        1270 => oid::TIMETZ,
        199 => oid::JSON,
        2951 => oid::UUID,
        3807 => oid::JSONB,
        // inet, cidr, macaddr arrays: text elements
        1041 | 651 | 1040 => oid::TEXT,
        _ => return None,
    })
}

/// What the catalog says about non-built-in types: domains resolve to their base type,
/// arrays to their element, everything else (enums, composites, ranges) is text.
#[derive(Debug, Default, Clone)]
pub struct TypeCatalog {
    /// domain oid → (base type oid, base typmod)
    pub domains: HashMap<u32, (u32, i32)>,
    /// array type oid → element type oid (user-defined element types)
    pub arrays: HashMap<u32, u32>,
    /// enum type oids (their binary form is their label's text)
    pub enums: std::collections::HashSet<u32>,
}

/// The Arrow shape of one PostgreSQL column.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Bool,
    I16,
    I32,
    I64,
    U32,
    F32,
    F64,
    Decimal128(u8, i8),
    Decimal256(u8, i8),
    Text,
    Json,
    Bytes,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    List(Box<Kind>),
}

impl Kind {
    /// The kind of a column of type `type_oid` with modifier `typmod`, declared with
    /// `dims` array dimensions (`pg_attribute.attndims`; 0 and 1 both mean one): an array
    /// type is a List nested once per dimension.
    pub fn of_column(type_oid: u32, typmod: i32, dims: u8, catalog: &TypeCatalog) -> Kind {
        let mut kind = Kind::of(type_oid, typmod, catalog);
        if matches!(kind, Kind::List(_)) {
            for _ in 1..dims {
                kind = Kind::List(Box::new(kind));
            }
        }
        kind
    }

    /// The kind of a column of type `type_oid` with modifier `typmod` (arrays: one
    /// dimension).
    pub fn of(type_oid: u32, typmod: i32, catalog: &TypeCatalog) -> Kind {
        if let Some(&(base, base_mod)) = catalog.domains.get(&type_oid) {
            let m = if typmod >= 0 { typmod } else { base_mod };
            return Kind::of(base, m, catalog);
        }
        if let Some(elem) =
            builtin_array_element(type_oid).or(catalog.arrays.get(&type_oid).copied())
        {
            return Kind::List(Box::new(Kind::of(elem, typmod, catalog)));
        }
        match type_oid {
            oid::BOOL => Kind::Bool,
            oid::INT2 => Kind::I16,
            oid::INT4 => Kind::I32,
            oid::INT8 => Kind::I64,
            oid::OID => Kind::U32,
            oid::FLOAT4 => Kind::F32,
            oid::FLOAT8 => Kind::F64,
            oid::NUMERIC if typmod >= 4 => {
                let precision = ((typmod - 4) >> 16) & 0xffff;
                let scale = (((typmod - 4) & 0x7ff) ^ 1024) - 1024;
                // Scales outside what Arrow decimals hold (PostgreSQL allows -1000..1000)
                // keep the exact text.
                match (precision, i8::try_from(scale)) {
                    (1..=38, Ok(s)) if i32::from(s) <= precision => {
                        Kind::Decimal128(precision as u8, s)
                    }
                    (39..=76, Ok(s)) if i32::from(s) <= precision => {
                        Kind::Decimal256(precision as u8, s)
                    }
                    _ => Kind::Text,
                }
            }
            oid::JSON | oid::JSONB => Kind::Json,
            oid::BYTEA => Kind::Bytes,
            oid::DATE => Kind::Date,
            oid::TIME => Kind::Time,
            oid::TIMESTAMP => Kind::Timestamp,
            oid::TIMESTAMPTZ => Kind::TimestampTz,
            oid::INTERVAL => Kind::Interval,
            _ => Kind::Text,
        }
    }

    pub fn data_type(&self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::I16 => DataType::Int16,
            Kind::I32 => DataType::Int32,
            Kind::I64 => DataType::Int64,
            Kind::U32 => DataType::UInt32,
            Kind::F32 => DataType::Float32,
            Kind::F64 => DataType::Float64,
            Kind::Decimal128(p, s) => DataType::Decimal128(*p, *s),
            Kind::Decimal256(p, s) => DataType::Decimal256(*p, *s),
            Kind::Text | Kind::Json => DataType::Utf8,
            Kind::Bytes => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::Time => DataType::Time64(TimeUnit::Microsecond),
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::Interval => DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
            Kind::List(e) => DataType::List(Arc::new(e.field("item"))),
        }
    }

    /// A nullable field of this kind.
    pub fn field(&self, name: &str) -> Field {
        let f = Field::new(name, self.data_type(), true);
        if *self == Kind::Json {
            f.with_metadata(HashMap::from([(
                "ARROW:extension:name".to_string(),
                "arrow.json".to_string(),
            )]))
        } else {
            f
        }
    }
}

/// An Arrow builder for one column, fed PostgreSQL text values.
pub enum Column {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U32(UInt32Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Decimal128(Decimal128Builder, u8, i8),
    Decimal256(Decimal256Builder, u8, i8),
    /// Text; `true`: the text is JSON (`json`, `jsonb`).
    Text(StringBuilder, bool),
    Bytes(BinaryBuilder),
    Date(Date32Builder, TemporalInfinity),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder, bool, TemporalInfinity),
    Interval(IntervalMonthDayNanoBuilder),
    List {
        field: Arc<Field>,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        child: Box<Column>,
    },
}

impl std::fmt::Debug for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Column")
    }
}

impl Column {
    /// A builder for `kind`; `infinity` says what infinite dates and timestamps become.
    pub fn new(kind: &Kind, capacity: usize, infinity: TemporalInfinity) -> Column {
        match kind {
            Kind::Bool => Column::Bool(BooleanBuilder::with_capacity(capacity)),
            Kind::I16 => Column::I16(Int16Builder::with_capacity(capacity)),
            Kind::I32 => Column::I32(Int32Builder::with_capacity(capacity)),
            Kind::I64 => Column::I64(Int64Builder::with_capacity(capacity)),
            Kind::U32 => Column::U32(UInt32Builder::with_capacity(capacity)),
            Kind::F32 => Column::F32(Float32Builder::with_capacity(capacity)),
            Kind::F64 => Column::F64(Float64Builder::with_capacity(capacity)),
            Kind::Decimal128(p, s) => Column::Decimal128(
                Decimal128Builder::with_capacity(capacity)
                    .with_data_type(DataType::Decimal128(*p, *s)),
                *p,
                *s,
            ),
            Kind::Decimal256(p, s) => Column::Decimal256(
                Decimal256Builder::with_capacity(capacity)
                    .with_data_type(DataType::Decimal256(*p, *s)),
                *p,
                *s,
            ),
            Kind::Text | Kind::Json => Column::Text(
                StringBuilder::with_capacity(capacity, capacity * 16),
                *kind == Kind::Json,
            ),
            Kind::Bytes => Column::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            Kind::Date => Column::Date(Date32Builder::with_capacity(capacity), infinity),
            Kind::Time => Column::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            Kind::Timestamp => Column::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity),
                false,
                infinity,
            ),
            Kind::TimestampTz => Column::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
                true,
                infinity,
            ),
            Kind::Interval => {
                Column::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity))
            }
            Kind::List(e) => {
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                Column::List {
                    field: Arc::new(e.field("item")),
                    offsets,
                    nulls: NullBufferBuilder::new(capacity),
                    child: Box::new(Column::new(e, capacity * 4, infinity)),
                }
            }
        }
    }

    pub fn append_null(&mut self) {
        match self {
            Column::Bool(b) => b.append_null(),
            Column::I16(b) => b.append_null(),
            Column::I32(b) => b.append_null(),
            Column::I64(b) => b.append_null(),
            Column::U32(b) => b.append_null(),
            Column::F32(b) => b.append_null(),
            Column::F64(b) => b.append_null(),
            Column::Decimal128(b, ..) => b.append_null(),
            Column::Decimal256(b, ..) => b.append_null(),
            Column::Text(b, _) => b.append_null(),
            Column::Bytes(b) => b.append_null(),
            Column::Date(b, _) => b.append_null(),
            Column::Time(b) => b.append_null(),
            Column::Timestamp(b, ..) => b.append_null(),
            Column::Interval(b) => b.append_null(),
            Column::List { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    /// Whether the column can hold an arbitrary placeholder text (unchanged TOAST values).
    pub fn takes_placeholder(&self) -> bool {
        matches!(self, Column::Text(..) | Column::Bytes(_))
    }

    /// Append a placeholder for a value the server did not send (in a JSON column, as a
    /// JSON string, so that the column still holds JSON).
    pub fn append_placeholder(&mut self, placeholder: &str) {
        match self {
            Column::Text(b, false) => b.append_value(placeholder),
            Column::Text(b, true) => {
                b.append_value(serde_json::Value::from(placeholder).to_string())
            }
            Column::Bytes(b) => b.append_value(placeholder.as_bytes()),
            other => other.append_null(),
        }
    }

    /// Parse PostgreSQL's text output of one value and append it.
    pub fn append_text(&mut self, v: &[u8]) -> Result<(), String> {
        let s = simdutf8::basic::from_utf8(v).map_err(|_| "value is not UTF-8".to_string())?;
        match self {
            Column::Bool(b) => b.append_value(match s {
                "t" | "true" => true,
                "f" | "false" => false,
                _ => return Err(format!("bad boolean {s:?}")),
            }),
            Column::I16(b) => b.append_value(s.parse().map_err(|_| format!("bad int2 {s:?}"))?),
            Column::I32(b) => b.append_value(s.parse().map_err(|_| format!("bad int4 {s:?}"))?),
            Column::I64(b) => b.append_value(s.parse().map_err(|_| format!("bad int8 {s:?}"))?),
            Column::U32(b) => b.append_value(s.parse().map_err(|_| format!("bad oid {s:?}"))?),
            Column::F32(b) => b.append_value(parse_float(s)? as f32),
            Column::F64(b) => b.append_value(parse_float(s)?),
            Column::Decimal128(b, _, _) if not_a_number(s) => b.append_null(),
            Column::Decimal256(b, _, _) if not_a_number(s) => b.append_null(),
            Column::Decimal128(b, p, sc) => {
                let v = parse_decimal(s, *p, *sc)?;
                b.append_value(
                    v.to_i128()
                        .ok_or_else(|| format!("{s} exceeds precision"))?,
                )
            }
            Column::Decimal256(b, p, sc) => b.append_value(parse_decimal(s, *p, *sc)?),
            Column::Text(b, _) => b.append_value(s),
            Column::Bytes(b) => b.append_value(parse_bytea(s)?),
            Column::Date(b, inf) => match infinity(s) {
                Some(positive) => b.append_option(inf.date(positive)),
                None => b.append_value(parse_date(s)?),
            },
            Column::Time(b) => b.append_value(parse_time(s)?),
            Column::Timestamp(b, tz, inf) => match infinity(s) {
                Some(positive) => b.append_option(inf.timestamp(positive)),
                None => b.append_value(parse_timestamp(s, *tz)?),
            },
            Column::Interval(b) => b.append_value(parse_interval(s)?),
            Column::List { .. } => {
                let array = parse_array(s)?;
                self.append_array(&array.dims, &mut array.items.into_iter(), &mut |c, v| {
                    c.append_text(v.as_bytes())
                })?
            }
        }
        Ok(())
    }

    /// How many lists deep this column is (0: not a list).
    pub fn list_depth(&self) -> usize {
        match self {
            Column::List { child, .. } => 1 + child.list_depth(),
            _ => 0,
        }
    }

    /// Append one array value, given its dimensions (none for an empty array) and its
    /// elements in row-major order, to this list column, whose depth must be the number
    /// of dimensions. `leaf` appends one non-null element to the innermost column.
    pub fn append_array<T>(
        &mut self,
        dims: &[usize],
        items: &mut impl Iterator<Item = Option<T>>,
        leaf: &mut impl FnMut(&mut Column, T) -> Result<(), String>,
    ) -> Result<(), String> {
        let depth = self.list_depth();
        if !dims.is_empty() && dims.len() != depth {
            return Err(format!(
                "a {}-dimensional array in a column declared with {depth} (declare the \
                 column's dimensions, e.g. `int[][]` for two)",
                dims.len()
            ));
        }
        self.append_level(dims, items, leaf)
    }

    fn append_level<T>(
        &mut self,
        dims: &[usize],
        items: &mut impl Iterator<Item = Option<T>>,
        leaf: &mut impl FnMut(&mut Column, T) -> Result<(), String>,
    ) -> Result<(), String> {
        let Column::List {
            offsets,
            nulls,
            child,
            ..
        } = self
        else {
            return Err("array value for a column that is not a list".into());
        };
        let n = dims.first().copied().unwrap_or(0);
        for _ in 0..n {
            if dims.len() > 1 {
                child.append_level(&dims[1..], items, leaf)?;
            } else {
                match items.next().ok_or("array shorter than its dimensions")? {
                    None => child.append_null(),
                    Some(v) => leaf(child, v)?,
                }
            }
        }
        let last = offsets.last().copied().unwrap_or(0);
        let end = i32::try_from(n)
            .ok()
            .and_then(|n| last.checked_add(n))
            .ok_or("too many array elements in one batch")?;
        offsets.push(end);
        nulls.append_non_null();
        Ok(())
    }

    /// Decode one value in PostgreSQL's binary send format and append it. Text-shaped
    /// kinds (Text, Json, List) take the UTF-8 text form: the snapshot selects those
    /// columns as `::text` (except raw string types, whose binary form is their text).
    pub fn append_binary(&mut self, v: &[u8]) -> Result<(), String> {
        fn be<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], String> {
            v.try_into()
                .map_err(|_| format!("binary {what}: {} bytes, expected {N}", v.len()))
        }
        match self {
            Column::Bool(b) => b.append_value(be::<1>(v, "bool")?[0] != 0),
            Column::I16(b) => b.append_value(i16::from_be_bytes(be(v, "int2")?)),
            Column::I32(b) => b.append_value(i32::from_be_bytes(be(v, "int4")?)),
            Column::I64(b) => b.append_value(i64::from_be_bytes(be(v, "int8")?)),
            Column::U32(b) => b.append_value(u32::from_be_bytes(be(v, "oid")?)),
            Column::F32(b) => b.append_value(f32::from_be_bytes(be(v, "float4")?)),
            Column::F64(b) => b.append_value(f64::from_be_bytes(be(v, "float8")?)),
            Column::Decimal128(b, p, s) => b.append_option(numeric_binary_i128(v, *p, *s)?),
            Column::Decimal256(b, p, s) => b.append_option(numeric_binary(v, *p, *s)?),
            Column::Text(b, _) => {
                b.append_value(simdutf8::basic::from_utf8(v).map_err(|_| "text is not UTF-8")?)
            }
            Column::Bytes(b) => b.append_value(v),
            Column::Date(b, inf) => match i32::from_be_bytes(be(v, "date")?) {
                i32::MAX => b.append_option(inf.date(true)),
                i32::MIN => b.append_option(inf.date(false)),
                d => b.append_value(d.checked_add(PG_EPOCH_DAYS).ok_or("date out of range")?),
            },
            Column::Time(b) => b.append_value(i64::from_be_bytes(be(v, "time")?)),
            Column::Timestamp(b, _, inf) => match i64::from_be_bytes(be(v, "timestamp")?) {
                i64::MAX => b.append_option(inf.timestamp(true)),
                i64::MIN => b.append_option(inf.timestamp(false)),
                t => b.append_value(t.checked_add(PG_EPOCH_MICROS).ok_or(
                    "timestamp beyond Arrow's microsecond timestamps (they end in year 294247)",
                )?),
            },
            Column::Interval(b) => {
                let raw: [u8; 16] = be(v, "interval")?;
                let micros = i64::from_be_bytes(raw[0..8].try_into().map_err(|_| "interval")?);
                let days = i32::from_be_bytes(raw[8..12].try_into().map_err(|_| "interval")?);
                let months = i32::from_be_bytes(raw[12..16].try_into().map_err(|_| "interval")?);
                b.append_value(IntervalMonthDayNano::new(
                    months,
                    days,
                    micros.checked_mul(1000).ok_or("interval out of range")?,
                ))
            }
            Column::List { .. } => return self.append_text(v),
        }
        Ok(())
    }

    /// Finish into an array (the builder is reset and can be reused).
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Bool(b) => Arc::new(b.finish()),
            Column::I16(b) => Arc::new(b.finish()),
            Column::I32(b) => Arc::new(b.finish()),
            Column::I64(b) => Arc::new(b.finish()),
            Column::U32(b) => Arc::new(b.finish()),
            Column::F32(b) => Arc::new(b.finish()),
            Column::F64(b) => Arc::new(b.finish()),
            Column::Decimal128(b, ..) => Arc::new(b.finish()),
            Column::Decimal256(b, ..) => Arc::new(b.finish()),
            Column::Text(b, _) => Arc::new(b.finish()),
            Column::Bytes(b) => Arc::new(b.finish()),
            Column::Date(b, _) => Arc::new(b.finish()),
            Column::Time(b) => Arc::new(b.finish()),
            Column::Timestamp(b, ..) => Arc::new(b.finish()),
            Column::Interval(b) => Arc::new(b.finish()),
            Column::List {
                field,
                offsets,
                nulls,
                child,
            } => {
                let values = child.finish();
                let offs = std::mem::replace(offsets, vec![0]);
                Arc::new(ListArray::new(
                    field.clone(),
                    OffsetBuffer::new(offs.into()),
                    values,
                    nulls.finish(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Decimal128Type, Int32Type};

    #[test]
    fn numeric_typmod_to_decimal() {
        // numeric(10,2): typmod = ((10 << 16) | 2) + 4
        let cat = TypeCatalog::default();
        assert_eq!(
            Kind::of(oid::NUMERIC, ((10 << 16) | 2) + 4, &cat),
            Kind::Decimal128(10, 2)
        );
        assert_eq!(
            Kind::of(oid::NUMERIC, ((50 << 16) | 5) + 4, &cat),
            Kind::Decimal256(50, 5)
        );
        assert_eq!(Kind::of(oid::NUMERIC, -1, &cat), Kind::Text);
        assert_eq!(Kind::of(1007, -1, &cat), Kind::List(Box::new(Kind::I32)));
        // scale 1000 does not fit an Arrow decimal: exact text.
        assert_eq!(
            Kind::of(oid::NUMERIC, ((10 << 16) | 1000) + 4, &cat),
            Kind::Text
        );
        // int[][]: a list of lists; dimensions do not nest scalars.
        assert_eq!(
            Kind::of_column(1007, -1, 2, &cat),
            Kind::List(Box::new(Kind::List(Box::new(Kind::I32))))
        );
        assert_eq!(Kind::of_column(1007, -1, 0, &cat), Kind::of(1007, -1, &cat));
        assert_eq!(Kind::of_column(oid::INT4, -1, 2, &cat), Kind::I32);
    }

    #[test]
    fn decimals_parse_exactly() {
        let mut c = Column::new(&Kind::Decimal128(10, 2), 4, TemporalInfinity::Sentinel);
        for v in ["123.45", "-0.5", "0", "99999999.99"] {
            c.append_text(v.as_bytes()).unwrap();
        }
        assert!(c.append_text(b"1.234").is_err());
        c.append_text(b"NaN").unwrap(); // not a number: null
        assert!(c.append_text(b"123456789.00").is_err());
        let a = c.finish();
        let a = a.as_primitive::<Decimal128Type>();
        assert_eq!(a.values().to_vec(), vec![12345, -50, 0, 9999999999, 0]);
        assert!(a.is_null(4));
    }

    #[test]
    fn arrays() {
        let mut c = Column::new(
            &Kind::List(Box::new(Kind::I32)),
            2,
            TemporalInfinity::Sentinel,
        );
        c.append_text(b"{1,NULL,3}").unwrap();
        c.append_null();
        c.append_text(b"{}").unwrap();
        let a = c.finish();
        let l = a.as_list::<i32>();
        assert_eq!(l.len(), 3);
        assert!(l.is_null(1));
        assert_eq!(l.value(0).as_primitive::<Int32Type>().len(), 3);
        assert_eq!(l.value(2).len(), 0);
    }

    #[test]
    fn a_json_column_gets_its_toast_placeholder_as_json() {
        let mut c = Column::new(&Kind::Json, 2, TemporalInfinity::Sentinel);
        c.append_placeholder("__debezium_unavailable_value");
        let mut t = Column::new(&Kind::Text, 2, TemporalInfinity::Sentinel);
        t.append_placeholder("__debezium_unavailable_value");
        assert_eq!(
            c.finish().as_string::<i32>().value(0),
            "\"__debezium_unavailable_value\""
        );
        assert_eq!(
            t.finish().as_string::<i32>().value(0),
            "__debezium_unavailable_value"
        );
    }

    #[test]
    fn multi_dimensional_arrays_nest_as_declared() {
        let kind = Kind::List(Box::new(Kind::List(Box::new(Kind::I32))));
        let mut c = Column::new(&kind, 2, TemporalInfinity::Sentinel);
        c.append_text(b"{{1,2,3},{4,NULL,6}}").unwrap();
        c.append_text(b"{}").unwrap();
        // A value whose dimensions differ from the declared ones is refused whole.
        let e = c.append_text(b"{1,2}").unwrap_err();
        assert!(
            e.contains("1-dimensional array in a column declared with 2"),
            "{e}"
        );
        let a = c.finish();
        let outer = a.as_list::<i32>();
        assert_eq!(outer.len(), 2);
        let rows = outer.value(0);
        let rows = rows.as_list::<i32>();
        assert_eq!(rows.len(), 2);
        let second = rows.value(1);
        let second = second.as_primitive::<Int32Type>();
        assert_eq!(
            (second.value(0), second.is_null(1), second.value(2)),
            (4, true, 6)
        );
        assert_eq!(outer.value(1).len(), 0);
    }

    #[test]
    fn infinite_dates_and_timestamps_become_sentinels_or_null() {
        use arrow::datatypes::{Date32Type, TimestampMicrosecondType};
        for (policy, date, ts) in [
            (
                TemporalInfinity::Sentinel,
                [Some(i32::MAX), Some(-i32::MAX)],
                [Some(i64::MAX), Some(-i64::MAX)],
            ),
            (TemporalInfinity::Null, [None, None], [None, None]),
        ] {
            let mut d = Column::new(&Kind::Date, 4, policy);
            let mut t = Column::new(&Kind::TimestampTz, 4, policy);
            d.append_text(b"infinity").unwrap();
            d.append_binary(&i32::MIN.to_be_bytes()).unwrap();
            t.append_binary(&i64::MAX.to_be_bytes()).unwrap();
            t.append_text(b"-infinity").unwrap();
            let d = d.finish();
            let t = t.finish();
            let d: Vec<Option<i32>> = d.as_primitive::<Date32Type>().iter().collect();
            let t: Vec<Option<i64>> = t
                .as_primitive::<TimestampMicrosecondType>()
                .iter()
                .collect();
            assert_eq!((d, t), (date.to_vec(), ts.to_vec()), "{policy:?}");
        }
    }
}
