//! Column generators of each pattern, appending straight into Arrow builders.
//!
//! Every value is a pure function of `(seed, key, version)` through a counter-based
//! generator, so the data does not depend on batch boundaries or restarts.

use arrow::array::{
    ArrayRef, BooleanBuilder, Decimal128Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

/// What rows look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// `value`: 0, 1, 2, ...
    #[default]
    Sequence,
    /// `id`, `value`, `count`, `flag`, `label`: random values.
    Random,
    /// `id`, `name`, `email`, `age`, `country`, `active`, `created_at`.
    Users,
    /// `order_id`, `customer_id`, `product`, `quantity`, `unit_price`, `total`, `status`,
    /// `created_at`.
    Orders,
    /// `event_id`, `event_type` (page_view, click, ...), `user_id`, `session_id`, `page`,
    /// `duration_ms`.
    Events,
    /// `metric`, `host`, `region`, `value`.
    Metrics,
    /// `key`, `value`.
    KeyValue,
}

/// SplitMix64: a counter-based generator; `at(seed, a, b)` is independent per `(a, b)`.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    pub fn at(seed: u64, a: u64, b: u64) -> Self {
        Rng(mix(seed
            ^ mix(
                a.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ mix(b.wrapping_add(0x632b_e59b_d9b4_e019))
            )))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger",
    "Radia", "Tim",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Liskov",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
];
const COUNTRIES: &[&str] = &["DE", "US", "FR", "GB", "JP", "BR", "IN", "CA", "NL", "SE"];
const PRODUCTS: &[&str] = &[
    "keyboard", "mouse", "monitor", "laptop", "headset", "webcam", "dock", "cable", "chair", "desk",
];
const STATUSES: &[&str] = &["pending", "paid", "shipped", "delivered", "cancelled"];
const EVENT_TYPES: &[&str] = &[
    "page_view",
    "click",
    "scroll",
    "add_to_cart",
    "purchase",
    "signup",
    "logout",
];
const PAGES: &[&str] = &[
    "/",
    "/products",
    "/cart",
    "/checkout",
    "/account",
    "/search",
    "/help",
];
const METRICS: &[&str] = &[
    "cpu_usage",
    "memory_usage",
    "disk_io",
    "network_in",
    "network_out",
    "request_latency_ms",
];
const REGIONS: &[&str] = &["eu-central-1", "us-east-1", "us-west-2", "ap-northeast-1"];
const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
];

/// 2024-01-01T00:00:00Z in ms: generated `created_at` values fall in the year after it.
const EPOCH_2024_MS: i64 = 1_704_067_200_000;
const YEAR_MS: i64 = 365 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Gen {
    Key,
    KeyUuid,
    KeyText(&'static str),
    Uuid,
    Int(i64, i64),
    Int32(i32, i32),
    Float(f64, f64),
    Bool(u64),
    Pick(&'static [&'static str]),
    FullName,
    Email,
    CreatedAt,
    PriceCents(i64, i64),
    TotalCents,
    Host,
    Word,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ColumnDef {
    pub name: &'static str,
    pub gen: Gen,
}

const fn c(name: &'static str, gen: Gen) -> ColumnDef {
    ColumnDef { name, gen }
}

/// The columns of a pattern, key column first.
pub(crate) fn columns(p: Pattern) -> Vec<ColumnDef> {
    match p {
        Pattern::Sequence => vec![c("value", Gen::Key)],
        Pattern::Random => vec![
            c("id", Gen::KeyUuid),
            c("value", Gen::Float(0.0, 1000.0)),
            c("count", Gen::Int(0, 1_000_000)),
            c("flag", Gen::Bool(50)),
            c("label", Gen::Word),
        ],
        Pattern::Users => vec![
            c("id", Gen::Key),
            c("name", Gen::FullName),
            c("email", Gen::Email),
            c("age", Gen::Int32(18, 90)),
            c("country", Gen::Pick(COUNTRIES)),
            c("active", Gen::Bool(85)),
            c("created_at", Gen::CreatedAt),
        ],
        Pattern::Orders => vec![
            c("order_id", Gen::Key),
            c("customer_id", Gen::Int(1, 10_000)),
            c("product", Gen::Pick(PRODUCTS)),
            c("quantity", Gen::Int32(1, 10)),
            c("unit_price", Gen::PriceCents(199, 199_999)),
            c("total", Gen::TotalCents),
            c("status", Gen::Pick(STATUSES)),
            c("created_at", Gen::CreatedAt),
        ],
        Pattern::Events => vec![
            c("event_id", Gen::KeyUuid),
            c("event_type", Gen::Pick(EVENT_TYPES)),
            c("user_id", Gen::Int(1, 50_000)),
            c("session_id", Gen::Uuid),
            c("page", Gen::Pick(PAGES)),
            c("duration_ms", Gen::Int(1, 120_000)),
        ],
        Pattern::Metrics => vec![
            c("metric", Gen::Pick(METRICS)),
            c("host", Gen::Host),
            c("region", Gen::Pick(REGIONS)),
            c("value", Gen::Float(0.0, 100.0)),
        ],
        Pattern::KeyValue => vec![c("key", Gen::KeyText("key-")), c("value", Gen::Word)],
    }
}

fn data_type(g: Gen) -> DataType {
    match g {
        Gen::Key | Gen::Int(..) => DataType::Int64,
        Gen::Int32(..) => DataType::Int32,
        Gen::Float(..) => DataType::Float64,
        Gen::Bool(_) => DataType::Boolean,
        Gen::CreatedAt => rivven_engine::batch::timestamp_ms_utc(),
        Gen::PriceCents(..) => DataType::Decimal128(10, 2),
        Gen::TotalCents => DataType::Decimal128(12, 2),
        _ => DataType::Utf8,
    }
}

/// Arrow fields of the pattern's columns.
pub(crate) fn fields(p: Pattern, nullable: bool) -> Vec<Field> {
    columns(p)
        .iter()
        .map(|c| Field::new(c.name, data_type(c.gen), nullable))
        .collect()
}

enum ColBuilder {
    I64(Int64Builder),
    I32(Int32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
    Ts(TimestampMillisecondBuilder),
    Dec(Decimal128Builder),
}

/// Builders for one pattern's columns.
pub(crate) struct RowBuilders {
    cols: Vec<(ColumnDef, ColBuilder)>,
}

/// Per-row values later columns derive from.
#[derive(Default)]
struct RowCtx {
    first: usize,
    last: usize,
    quantity: i64,
    price_cents: i64,
}

fn uuid_from(r: &mut Rng) -> String {
    let a = r.next_u64();
    let b = r.next_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

impl RowBuilders {
    pub fn new(p: Pattern, capacity: usize) -> Self {
        let cols = columns(p)
            .into_iter()
            .map(|def| {
                let b = match data_type(def.gen) {
                    DataType::Int64 => ColBuilder::I64(Int64Builder::with_capacity(capacity)),
                    DataType::Int32 => ColBuilder::I32(Int32Builder::with_capacity(capacity)),
                    DataType::Float64 => ColBuilder::F64(Float64Builder::with_capacity(capacity)),
                    DataType::Boolean => ColBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
                    DataType::Timestamp(..) => ColBuilder::Ts(
                        TimestampMillisecondBuilder::with_capacity(capacity).with_timezone("UTC"),
                    ),
                    DataType::Decimal128(p, s) => ColBuilder::Dec(
                        Decimal128Builder::with_capacity(capacity)
                            .with_data_type(DataType::Decimal128(p, s)),
                    ),
                    _ => ColBuilder::Str(StringBuilder::with_capacity(capacity, capacity * 16)),
                };
                (def, b)
            })
            .collect();
        Self { cols }
    }

    /// Append the row with identity `key`, drawing its other values from `rng`.
    pub fn append(&mut self, key: u64, rng: &mut Rng) {
        let mut ctx = RowCtx::default();
        let mut key_rng = Rng::at(key, 0x006b_6579, 0);
        for (def, b) in &mut self.cols {
            match (def.gen, b) {
                (Gen::Key, ColBuilder::I64(b)) => b.append_value(key as i64),
                (Gen::KeyUuid, ColBuilder::Str(b)) => b.append_value(uuid_from(&mut key_rng)),
                (Gen::KeyText(prefix), ColBuilder::Str(b)) => {
                    b.append_value(format!("{prefix}{key}"))
                }
                (Gen::Uuid, ColBuilder::Str(b)) => b.append_value(uuid_from(rng)),
                (Gen::Int(lo, hi), ColBuilder::I64(b)) => b.append_value(rng.range(lo, hi)),
                (Gen::Int32(lo, hi), ColBuilder::I32(b)) => {
                    let v = rng.range(i64::from(lo), i64::from(hi));
                    ctx.quantity = v;
                    b.append_value(v as i32)
                }
                (Gen::Float(lo, hi), ColBuilder::F64(b)) => {
                    let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    b.append_value(((lo + unit * (hi - lo)) * 100.0).round() / 100.0)
                }
                (Gen::Bool(pct), ColBuilder::Bool(b)) => b.append_value(rng.below(100) < pct),
                (Gen::Pick(items), ColBuilder::Str(b)) => b.append_value(rng.pick(items)),
                (Gen::Word, ColBuilder::Str(b)) => b.append_value(rng.pick(WORDS)),
                (Gen::FullName, ColBuilder::Str(b)) => {
                    ctx.first = rng.below(FIRST.len() as u64) as usize;
                    ctx.last = rng.below(LAST.len() as u64) as usize;
                    b.append_value(format!("{} {}", FIRST[ctx.first], LAST[ctx.last]))
                }
                (Gen::Email, ColBuilder::Str(b)) => b.append_value(format!(
                    "{}.{}{}@example.com",
                    FIRST[ctx.first].to_lowercase(),
                    LAST[ctx.last].to_lowercase(),
                    key
                )),
                (Gen::CreatedAt, ColBuilder::Ts(b)) => {
                    b.append_value(EPOCH_2024_MS + rng.below(YEAR_MS as u64) as i64)
                }
                (Gen::PriceCents(lo, hi), ColBuilder::Dec(b)) => {
                    ctx.price_cents = rng.range(lo, hi);
                    b.append_value(i128::from(ctx.price_cents))
                }
                (Gen::TotalCents, ColBuilder::Dec(b)) => {
                    b.append_value(i128::from(ctx.price_cents * ctx.quantity))
                }
                (Gen::Host, ColBuilder::Str(b)) => {
                    b.append_value(format!("host-{:02}", rng.below(20)))
                }
                (_, b) => append_null(b),
            }
        }
    }

    /// Append a null in every column (the struct slot itself is null).
    pub fn append_null(&mut self) {
        for (_, b) in &mut self.cols {
            append_null(b);
        }
    }

    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.cols
            .iter_mut()
            .map(|(_, b)| -> ArrayRef {
                match b {
                    ColBuilder::I64(b) => Arc::new(b.finish()),
                    ColBuilder::I32(b) => Arc::new(b.finish()),
                    ColBuilder::F64(b) => Arc::new(b.finish()),
                    ColBuilder::Bool(b) => Arc::new(b.finish()),
                    ColBuilder::Str(b) => Arc::new(b.finish()),
                    ColBuilder::Ts(b) => Arc::new(b.finish()),
                    ColBuilder::Dec(b) => Arc::new(b.finish()),
                }
            })
            .collect()
    }
}

fn append_null(b: &mut ColBuilder) {
    match b {
        ColBuilder::I64(b) => b.append_null(),
        ColBuilder::I32(b) => b.append_null(),
        ColBuilder::F64(b) => b.append_null(),
        ColBuilder::Bool(b) => b.append_null(),
        ColBuilder::Str(b) => b.append_null(),
        ColBuilder::Ts(b) => b.append_null(),
        ColBuilder::Dec(b) => b.append_null(),
    }
}
