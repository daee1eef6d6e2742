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
//! | one-dimensional arrays of the above | List of the element type |
//! | domains | their base type |
//!
//! `numeric` NaN or ±Infinity in a Decimal column, dates and timestamps of ±infinity, and
//! multi-dimensional arrays cannot be represented: they are data errors naming the
//! column, never a silently wrong value.

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder,
    IntervalMonthDayNanoBuilder, ListArray, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder, UInt32Builder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{i256, DataType, Field, IntervalMonthDayNano, TimeUnit};
use std::collections::HashMap;
use std::sync::Arc;

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
    /// The kind of a column of type `type_oid` with modifier `typmod`.
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
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder, bool),
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
    pub fn new(kind: &Kind, capacity: usize) -> Column {
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
            Kind::Text | Kind::Json => {
                Column::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            Kind::Bytes => Column::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            Kind::Date => Column::Date(Date32Builder::with_capacity(capacity)),
            Kind::Time => Column::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            Kind::Timestamp => {
                Column::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity), false)
            }
            Kind::TimestampTz => Column::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
                true,
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
                    child: Box::new(Column::new(e, capacity * 4)),
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
            Column::Text(b) => b.append_null(),
            Column::Bytes(b) => b.append_null(),
            Column::Date(b) => b.append_null(),
            Column::Time(b) => b.append_null(),
            Column::Timestamp(b, _) => b.append_null(),
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
        matches!(self, Column::Text(_) | Column::Bytes(_))
    }

    /// Append a placeholder for a value the server did not send.
    pub fn append_placeholder(&mut self, placeholder: &str) {
        match self {
            Column::Text(b) => b.append_value(placeholder),
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
            Column::Decimal128(b, p, sc) => {
                let v = parse_decimal(s, *p, *sc)?;
                b.append_value(
                    v.to_i128()
                        .ok_or_else(|| format!("{s} exceeds precision"))?,
                )
            }
            Column::Decimal256(b, p, sc) => b.append_value(parse_decimal(s, *p, *sc)?),
            Column::Text(b) => b.append_value(s),
            Column::Bytes(b) => b.append_value(parse_bytea(s)?),
            Column::Date(b) => b.append_value(parse_date(s)?),
            Column::Time(b) => b.append_value(parse_time(s)?),
            Column::Timestamp(b, tz) => b.append_value(parse_timestamp(s, *tz)?),
            Column::Interval(b) => b.append_value(parse_interval(s)?),
            Column::List {
                offsets,
                nulls,
                child,
                ..
            } => {
                let items = parse_array(s)?;
                for item in &items {
                    match item {
                        None => child.append_null(),
                        Some(t) => child.append_text(t.as_bytes())?,
                    }
                }
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last + items.len() as i32);
                nulls.append_non_null();
            }
        }
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
            Column::Decimal128(b, p, s) => b.append_value(numeric_binary_i128(v, *p, *s)?),
            Column::Decimal256(b, p, s) => b.append_value(numeric_binary(v, *p, *s)?),
            Column::Text(b) => {
                b.append_value(simdutf8::basic::from_utf8(v).map_err(|_| "text is not UTF-8")?)
            }
            Column::Bytes(b) => b.append_value(v),
            Column::Date(b) => {
                let d = i32::from_be_bytes(be(v, "date")?);
                if d == i32::MAX || d == i32::MIN {
                    return Err("date ±infinity cannot be represented".into());
                }
                b.append_value(d.checked_add(PG_EPOCH_DAYS).ok_or("date out of range")?)
            }
            Column::Time(b) => b.append_value(i64::from_be_bytes(be(v, "time")?)),
            Column::Timestamp(b, _) => {
                let t = i64::from_be_bytes(be(v, "timestamp")?);
                if t == i64::MAX || t == i64::MIN {
                    return Err("timestamp ±infinity cannot be represented".into());
                }
                b.append_value(
                    t.checked_add(PG_EPOCH_MICROS)
                        .ok_or("timestamp out of range")?,
                )
            }
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
            Column::Text(b) => Arc::new(b.finish()),
            Column::Bytes(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Time(b) => Arc::new(b.finish()),
            Column::Timestamp(b, _) => Arc::new(b.finish()),
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

fn parse_float(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| format!("bad float {s:?}")),
    }
}

/// `-123.4500` → unscaled integer at `scale`, checked against `precision`.
fn parse_decimal(s: &str, precision: u8, scale: i8) -> Result<i256, String> {
    if matches!(s, "NaN" | "Infinity" | "-Infinity") {
        return Err(format!(
            "numeric {s} cannot be stored in Decimal({precision},{scale})"
        ));
    }
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let scale_u = scale.max(0) as usize;
    if frac.len() > scale_u {
        return Err(format!(
            "numeric {s} has more than {scale} fractional digits"
        ));
    }
    let mut v = i256::ZERO;
    let ten = i256::from_i128(10);
    let mut count = 0usize;
    for c in int
        .chars()
        .chain(frac.chars())
        .chain(std::iter::repeat_n('0', scale_u - frac.len()))
    {
        let d = c.to_digit(10).ok_or_else(|| format!("bad numeric {s:?}"))?;
        v = v
            .checked_mul(ten)
            .and_then(|x| x.checked_add(i256::from_i128(d as i128)))
            .ok_or_else(|| format!("numeric {s} overflows"))?;
        if count > 0 || d != 0 {
            count += 1;
        }
    }
    if scale < 0 {
        // A negative scale stores multiples of 10^-scale: `12300` at scale -2 is 123.
        let div = ten
            .checked_pow(u32::from(scale.unsigned_abs()))
            .ok_or_else(|| format!("numeric scale {scale}"))?;
        if v.checked_rem(div) != Some(i256::ZERO) {
            return Err(format!("numeric {s} is not a multiple of 10^{}", -scale));
        }
        v = v.checked_div(div).ok_or_else(|| format!("numeric {s}"))?;
        count = count.saturating_sub(scale.unsigned_abs() as usize);
    }
    if count > precision as usize {
        return Err(format!("numeric {s} exceeds precision {precision}"));
    }
    Ok(if neg { v.wrapping_neg() } else { v })
}

/// `\x0aff` (hex output) → bytes.
fn parse_bytea(s: &str) -> Result<Vec<u8>, String> {
    let hex = s
        .strip_prefix("\\x")
        .ok_or_else(|| "bytea not in hex output format".to_string())?;
    if hex.len() % 2 != 0 {
        return Err("odd-length bytea hex".into());
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let d = |c: u8| {
                (c as char)
                    .to_digit(16)
                    .ok_or_else(|| "bad bytea hex".to_string())
            };
            Ok((d(pair[0])? * 16 + d(pair[1])?) as u8)
        })
        .collect()
}

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;
/// Days and microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A binary `numeric` (base-10000 digits) as an unscaled integer at `scale`, checked
/// against `precision`.
/// The header of a binary numeric: (digit count, weight, negative), after checking the
/// length and that it is a finite number.
fn numeric_header(v: &[u8]) -> Result<(usize, i32, bool), String> {
    if v.len() < 8 {
        return Err("short binary numeric".into());
    }
    let word = |i: usize| u16::from_be_bytes([v[2 * i], v[2 * i + 1]]);
    let ndigits = word(0) as usize;
    if v.len() != 8 + 2 * ndigits {
        return Err("binary numeric length mismatch".into());
    }
    match word(2) {
        0x0000 => Ok((ndigits, word(1) as i16 as i32, false)),
        0x4000 => Ok((ndigits, word(1) as i16 as i32, true)),
        0xC000 => Err("numeric NaN cannot be stored in a Decimal column".into()),
        _ => Err("numeric ±Infinity cannot be stored in a Decimal column".into()),
    }
}

/// 10^0 ..= 10^38: every power a Decimal128 needs.
const POW10_I128: [i128; 39] = {
    let mut t = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// [`numeric_binary`] for Decimal128 columns (precision <= 38) in i128 arithmetic, with
/// the same results: a value that overflows i128 exceeds any such precision, and is
/// reported so.
fn numeric_binary_i128(v: &[u8], precision: u8, scale: i8) -> Result<i128, String> {
    let (ndigits, weight, negative) = numeric_header(v)?;
    let exceeds = || format!("numeric exceeds precision {precision}");
    let scale = i32::from(scale);
    let mut acc: i128 = 0;
    for i in 0..ndigits {
        let digit = i128::from(u16::from_be_bytes([v[8 + 2 * i], v[9 + 2 * i]]));
        // This digit's place, in decimal digits after applying the scale.
        let exp = 4 * (weight - i as i32) + scale;
        let term = if exp >= 0 {
            let p = POW10_I128.get(exp as usize).ok_or_else(exceeds)?;
            digit.checked_mul(*p).ok_or_else(exceeds)?
        } else {
            match POW10_I128.get((-exp) as usize) {
                Some(div) if digit % div == 0 => digit / div,
                None if digit == 0 => 0,
                _ => return Err(format!("numeric has more than {scale} fractional digits")),
            }
        };
        acc = acc.checked_add(term).ok_or_else(exceeds)?;
    }
    let limit = POW10_I128
        .get(usize::from(precision))
        .ok_or("numeric precision")?;
    if acc >= *limit {
        return Err(exceeds());
    }
    Ok(if negative { -acc } else { acc })
}

fn numeric_binary(v: &[u8], precision: u8, scale: i8) -> Result<i256, String> {
    let (ndigits, weight, negative) = numeric_header(v)?;
    let word = |i: usize| u16::from_be_bytes([v[2 * i], v[2 * i + 1]]);
    let ten = i256::from_i128(10);
    let scale = i32::from(scale);
    let mut acc = i256::ZERO;
    for i in 0..ndigits {
        let digit = i256::from_i128(i128::from(word(4 + i)));
        // This digit's place, in decimal digits after applying the scale.
        let exp = 4 * (weight - i as i32) + scale;
        let term = if exp >= 0 {
            digit
                .checked_mul(ten.checked_pow(exp as u32).ok_or("numeric overflows")?)
                .ok_or("numeric overflows")?
        } else {
            let div = ten.checked_pow((-exp) as u32).ok_or("numeric overflows")?;
            if digit.checked_rem(div) != Some(i256::ZERO) {
                return Err(format!("numeric has more than {scale} fractional digits"));
            }
            digit.checked_div(div).ok_or("numeric overflows")?
        };
        acc = acc.checked_add(term).ok_or("numeric overflows")?;
    }
    let limit = ten
        .checked_pow(u32::from(precision))
        .ok_or("numeric precision")?;
    if acc >= limit {
        return Err(format!("numeric exceeds precision {precision}"));
    }
    Ok(if negative { acc.wrapping_neg() } else { acc })
}

fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i32> {
    let date = chrono::NaiveDate::from_ymd_opt(y as i32, m, d)?;
    Some(chrono::Datelike::num_days_from_ce(&date) - UNIX_EPOCH_DAYS_FROM_CE)
}

/// `YYYY-MM-DD[ BC]` → days since 1970-01-01.
fn parse_date(s: &str) -> Result<i32, String> {
    if s == "infinity" || s == "-infinity" {
        return Err(format!("date {s} cannot be represented"));
    }
    let (body, bc) = match s.strip_suffix(" BC") {
        Some(b) => (b, true),
        None => (s, false),
    };
    let mut it = body.splitn(3, '-');
    let bad = || format!("bad date {s:?}");
    let y: i64 = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let m: u32 = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let d: u32 = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let y = if bc { 1 - y } else { y };
    days_from_civil(y, m, d).ok_or_else(bad)
}

/// `HH:MM:SS[.ffffff]` → microseconds since midnight (24:00:00 allowed).
fn parse_time(s: &str) -> Result<i64, String> {
    let bad = || format!("bad time {s:?}");
    let mut it = s.splitn(3, ':');
    let h: i64 = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let m: i64 = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let sec = it.next().ok_or_else(bad)?;
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    Ok((h * 3600 + m * 60 + whole) * 1_000_000 + frac_micros(frac).ok_or_else(bad)?)
}

fn frac_micros(frac: &str) -> Option<i64> {
    if frac.is_empty() {
        return Some(0);
    }
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = frac.parse().ok()?;
    Some(v * 10i64.pow(6 - frac.len() as u32))
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]][ BC]` → µs since the Unix epoch (UTC
/// for `timestamptz`, whose session time zone is UTC).
fn parse_timestamp(s: &str, with_tz: bool) -> Result<i64, String> {
    if s == "infinity" || s == "-infinity" {
        return Err(format!("timestamp {s} cannot be represented"));
    }
    let bad = || format!("bad timestamp {s:?}");
    let (body, bc) = match s.strip_suffix(" BC") {
        Some(b) => (b, true),
        None => (s, false),
    };
    let (date, rest) = body.split_once(' ').ok_or_else(bad)?;
    let date = if bc {
        format!("{date} BC")
    } else {
        date.to_string()
    };
    let days = parse_date(&date)? as i64;
    let (time, offset_s) = if with_tz {
        let pos = rest.rfind(['+', '-']).ok_or_else(bad)?;
        let (t, off) = rest.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let mut parts = off[1..].split(':');
        let h: i64 = parts.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
        let m: i64 = parts
            .next()
            .map_or(Some(0), |x| x.parse().ok())
            .ok_or_else(bad)?;
        let sec: i64 = parts
            .next()
            .map_or(Some(0), |x| x.parse().ok())
            .ok_or_else(bad)?;
        (t, sign * (h * 3600 + m * 60 + sec))
    } else {
        (rest, 0)
    };
    let micros = parse_time(time)?;
    Ok(days * 86_400_000_000 + micros - offset_s * 1_000_000)
}

/// ISO 8601 interval (`IntervalStyle=iso_8601`): `P1Y2M3DT4H5M6.5S`, components may be
/// negative; `PT0S` for zero.
fn parse_interval(s: &str) -> Result<IntervalMonthDayNano, String> {
    let bad = || format!("bad interval {s:?}");
    let body = s.strip_prefix('P').ok_or_else(bad)?;
    let (date, time) = body.split_once('T').unwrap_or((body, ""));
    let (mut months, mut days, mut nanos) = (0i64, 0i64, 0i64);
    let mut num = String::new();
    // `acc += unit × next number`, with overflow an error rather than a wrapped value.
    let add = |acc: &mut i64, num: &mut String, unit: i64| -> Result<(), String> {
        let v = take(num).ok_or_else(bad)?;
        *acc = v
            .checked_mul(unit)
            .and_then(|x| acc.checked_add(x))
            .ok_or_else(|| format!("interval {s:?} out of range"))?;
        Ok(())
    };
    for c in date.chars() {
        match c {
            'Y' => add(&mut months, &mut num, 12)?,
            'M' => add(&mut months, &mut num, 1)?,
            'W' => add(&mut days, &mut num, 7)?,
            'D' => add(&mut days, &mut num, 1)?,
            _ => num.push(c),
        }
    }
    for c in time.chars() {
        match c {
            'H' => add(&mut nanos, &mut num, 3_600_000_000_000)?,
            'M' => add(&mut nanos, &mut num, 60_000_000_000)?,
            'S' => {
                let (neg, t) = match num.strip_prefix('-') {
                    Some(t) => (true, t.to_string()),
                    None => (false, num.clone()),
                };
                num.clear();
                let (w, f) = t.split_once('.').unwrap_or((&t, ""));
                let w: i64 = w.parse().map_err(|_| bad())?;
                let v = w
                    .checked_mul(1_000_000_000)
                    .and_then(|x| x.checked_add(frac_micros(f)? * 1000))
                    .ok_or_else(bad)?;
                nanos = nanos
                    .checked_add(if neg { -v } else { v })
                    .ok_or_else(|| format!("interval {s:?} out of range"))?;
            }
            _ => num.push(c),
        }
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(IntervalMonthDayNano::new(
        i32::try_from(months).map_err(|_| bad())?,
        i32::try_from(days).map_err(|_| bad())?,
        nanos,
    ))
}

fn take(num: &mut String) -> Option<i64> {
    let v = num.parse().ok();
    num.clear();
    v
}

/// Parse a one-dimensional array literal `{a,"b c",NULL}` into its elements' text.
fn parse_array(s: &str) -> Result<Vec<Option<String>>, String> {
    let bad = |why: &str| format!("array {s:?}: {why}");
    let s = match s.find('=') {
        // `[0:2]={...}`: explicit bounds; keep the elements.
        Some(i) if s.starts_with('[') => &s[i + 1..],
        _ => s,
    };
    let inner = s
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .ok_or_else(|| bad("not an array literal"))?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        match chars.peek() {
            Some('{') => return Err(bad("multi-dimensional arrays are not supported")),
            Some('"') => {
                chars.next();
                let mut v = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => v.push(chars.next().ok_or_else(|| bad("dangling escape"))?),
                        Some('"') => break,
                        Some(c) => v.push(c),
                        None => return Err(bad("unterminated quote")),
                    }
                }
                out.push(Some(v));
            }
            _ => {
                let mut v = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                out.push(if v == "NULL" { None } else { Some(v) });
            }
        }
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(c) => return Err(bad(&format!("unexpected {c:?}"))),
        }
    }
    Ok(out)
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
    }

    #[test]
    fn decimals_parse_exactly() {
        let mut c = Column::new(&Kind::Decimal128(10, 2), 4);
        for v in ["123.45", "-0.5", "0", "99999999.99"] {
            c.append_text(v.as_bytes()).unwrap();
        }
        assert!(c.append_text(b"1.234").is_err());
        assert!(c.append_text(b"NaN").is_err());
        assert!(c.append_text(b"123456789.00").is_err());
        let a = c.finish();
        let a = a.as_primitive::<Decimal128Type>();
        assert_eq!(a.values().to_vec(), vec![12345, -50, 0, 9999999999]);
    }

    #[test]
    fn temporal_values() {
        assert_eq!(parse_date("1970-01-02").unwrap(), 1);
        assert_eq!(
            parse_date("0001-01-01 BC").unwrap(),
            parse_date("0000-01-01").unwrap()
        );
        assert_eq!(parse_time("01:02:03.5").unwrap(), 3_723_500_000);
        assert_eq!(
            parse_timestamp("1970-01-01 00:00:01.000001+00", true).unwrap(),
            1_000_001
        );
        assert_eq!(parse_timestamp("1970-01-01 02:00:00+02", true).unwrap(), 0);
        assert_eq!(
            parse_timestamp("1970-01-01 00:00:00-05:30", true).unwrap(),
            19_800_000_000
        );
        assert!(parse_timestamp("infinity", false).is_err());
        let i = parse_interval("P1Y2M3DT4H5M6.5S").unwrap();
        assert_eq!((i.months, i.days), (14, 3));
        assert_eq!(
            i.nanoseconds,
            ((4 * 60 + 5) * 60 + 6) * 1_000_000_000 + 500_000_000
        );
        let n = parse_interval("P-1DT-0.000001S").unwrap();
        assert_eq!((n.days, n.nanoseconds), (-1, -1000));
        assert_eq!(
            parse_interval("PT0S").unwrap(),
            IntervalMonthDayNano::new(0, 0, 0)
        );
    }

    #[test]
    fn interval_overflow_is_an_error() {
        assert!(parse_interval("PT9999999999H").is_err());
        assert!(parse_interval("P99999999999Y").is_err());
    }

    #[test]
    fn arrays() {
        assert_eq!(
            parse_array(r#"{a,"b,c",NULL,"NULL","q\"x"}"#).unwrap(),
            vec![
                Some("a".into()),
                Some("b,c".into()),
                None,
                Some("NULL".into()),
                Some("q\"x".into())
            ]
        );
        assert!(parse_array("{{1,2},{3,4}}").is_err());
        let mut c = Column::new(&Kind::List(Box::new(Kind::I32)), 2);
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
    fn negative_scale_numeric_text() {
        // numeric(5,-2): 12300 is stored as 123 × 10^2.
        assert_eq!(parse_decimal("12300", 5, -2).unwrap(), i256::from_i128(123));
        assert!(parse_decimal("12345", 5, -2).is_err());
        let cat = TypeCatalog::default();
        // scale 1000 does not fit an Arrow decimal: exact text.
        assert_eq!(
            Kind::of(oid::NUMERIC, ((10 << 16) | 1000) + 4, &cat),
            Kind::Text
        );
    }

    #[test]
    fn binary_numeric() {
        // 12345.678 = digits [1, 2345, 6780], weight 1, dscale 3
        let mut v = Vec::new();
        for w in [3u16, 1, 0x4000, 3, 1, 2345, 6780] {
            v.extend(w.to_be_bytes());
        }
        assert_eq!(
            numeric_binary(&v, 12, 3).unwrap(),
            i256::from_i128(-12_345_678)
        );
        assert!(
            numeric_binary(&v, 12, 2).is_err(),
            "too many fractional digits"
        );
        assert!(numeric_binary(&v, 7, 3).is_err(), "exceeds precision");
        let nan: Vec<u8> = [0u16, 0, 0xC000, 0]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert!(numeric_binary(&nan, 10, 2).is_err());
        let zero: Vec<u8> = [0u16, 0, 0, 2]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(numeric_binary(&zero, 10, 2).unwrap(), i256::ZERO);
    }

    /// The i128 decoder of Decimal128 columns agrees with the i256 one (both fail alike).
    #[test]
    fn binary_numeric_i128_matches_i256() {
        let enc =
            |words: &[u16]| -> Vec<u8> { words.iter().flat_map(|w| w.to_be_bytes()).collect() };
        let cases: Vec<Vec<u8>> = vec![
            enc(&[3, 1, 0x4000, 3, 1, 2345, 6780]), // -12345.678
            enc(&[0, 0, 0, 2]),                     // 0
            enc(&[1, -1i16 as u16, 0, 2, 5000]),    // 0.5
            enc(&[1, -2i16 as u16, 0, 4, 1]),       // 0.00000001
            enc(&[2, 9, 0, 0, 9999, 9999]),         // 9999 9999 * 10^32 (~10^40)
            enc(&[
                10, 9, 0x4000, 0, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999,
            ]),
            enc(&[1, 3, 0, 0, 12]),  // 12 * 10^12
            enc(&[0, 0, 0xC000, 0]), // NaN
            enc(&[0, 0, 0xD000, 0]), // Infinity
            enc(&[2, 0, 0]),         // short
        ];
        for v in &cases {
            for (p, sc) in [
                (12u8, 3i8),
                (38, 0),
                (38, 10),
                (10, 2),
                (1, 0),
                (5, -2),
                (38, 38),
            ] {
                let wide = numeric_binary(v, p, sc).map(|x| x.to_i128().unwrap());
                let narrow = numeric_binary_i128(v, p, sc);
                match wide {
                    Ok(_) => assert_eq!(narrow, wide, "{v:?} ({p}, {sc})"),
                    Err(_) => assert!(narrow.is_err(), "{v:?} ({p}, {sc}): {narrow:?}"),
                }
            }
        }
    }

    #[test]
    fn bytea_hex() {
        assert_eq!(parse_bytea("\\x00ff10").unwrap(), vec![0, 255, 16]);
        assert!(parse_bytea("abc").is_err());
    }
}
