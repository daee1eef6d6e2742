//! Field rewrites: `mask_field`, `insert_field`, `replace_field` / `rename_field`,
//! `set_null`, `cast`, `compute_field`. Each compiles into a projection over the row (see
//! [`super::project`]); change events get the same rewrite in `before` and `after`.

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{lit, Expr};
use rivven_engine::config::{FieldError, Validate};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::project::{col, Builder, Value};
use crate::field_list::{non_empty, require_fields, Names};
use crate::op::Op;
use crate::op::Spec;

/// A SQL identifier for `name` (double-quoted, quotes doubled).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal.
pub fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn is_text(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// Hash algorithms for `mask_field.hash` and `compute_field` (`operation: hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    /// SHA-256 (hex).
    Sha256,
    /// SHA-224 (hex).
    Sha224,
    /// SHA-384 (hex).
    Sha384,
    /// SHA-512 (hex).
    Sha512,
    /// MD5 (hex).
    Md5,
}

impl HashAlgorithm {
    /// SQL computing the hex digest of `arg` (text).
    pub fn sql(self, arg: &str) -> String {
        match self {
            HashAlgorithm::Md5 => format!("md5({arg})"),
            other => {
                let f = format!("{other:?}").to_lowercase();
                format!("encode({f}({arg}), 'hex')")
            }
        }
    }
}

/// `hash: true` (SHA-256) or an algorithm name.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum HashOption {
    /// `true`: SHA-256; `false`: no hashing.
    Flag(bool),
    /// A named algorithm.
    Algorithm(HashAlgorithm),
}

/// `mask_field`: hide sensitive values. Nulls stay null.
///
/// - default: text becomes `replacement` (default `****`); numbers become 0, booleans false;
/// - `replacement` on a non-text field turns it into text;
/// - `keep_last: N`: text keeps its last N characters, the rest becomes `mask_char` (`*`);
/// - `hash: true | sha256 | sha512 | md5 ...`: the hex digest of the value's text (stable,
///   so masked values still join).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskField {
    /// Fields to mask.
    pub fields: Names,
    /// Replacement text.
    #[serde(default)]
    pub replacement: Option<String>,
    /// Keep this many trailing characters.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Character used with `keep_last`.
    #[serde(default)]
    pub mask_char: Option<String>,
    /// Hash instead of replacing.
    #[serde(default)]
    pub hash: Option<HashOption>,
}

impl MaskField {
    fn algorithm(&self) -> Option<HashAlgorithm> {
        match self.hash {
            Some(HashOption::Flag(true)) => Some(HashAlgorithm::Sha256),
            Some(HashOption::Algorithm(a)) => Some(a),
            _ => None,
        }
    }
}

impl Validate for MaskField {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        errs.extend(non_empty("fields", &self.fields));
        let modes = [
            self.replacement.is_some(),
            self.keep_last.is_some(),
            self.algorithm().is_some(),
        ];
        if modes.iter().filter(|m| **m).count() > 1 {
            errs.push(FieldError::new(
                "",
                "choose one of `replacement`, `keep_last` and `hash`",
            ));
        }
        if let Some(c) = &self.mask_char {
            if c.chars().count() != 1 {
                errs.push(FieldError::new("mask_char", "must be one character"));
            }
        }
        errs
    }
}

impl Spec for MaskField {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let mut b = Builder::new(input)?;
        require_fields("fields", &self.fields, b.row())?;
        for (i, name) in self.fields.iter().enumerate() {
            let key = format!("fields[{i}]");
            let ty = b
                .row()
                .field_with_name(name)
                .map(|f| f.data_type().clone())
                .unwrap_or(DataType::Null);
            let x = ident(name);
            let sql = if let Some(alg) = self.algorithm() {
                alg.sql(&format!("CAST({x} AS VARCHAR)"))
            } else if let Some(n) = self.keep_last {
                let c = sql_str(self.mask_char.as_deref().unwrap_or("*"));
                let t = format!("CAST({x} AS VARCHAR)");
                format!(
                    "{}({t}, CAST({n} AS BIGINT), {c})",
                    crate::udf::MaskLast::NAME
                )
            } else if is_text(&ty) || self.replacement.is_some() {
                sql_str(self.replacement.as_deref().unwrap_or("****"))
            } else if ty.is_numeric() {
                format!("CAST(0 AS {})", sql_type_of(&ty).unwrap_or("DOUBLE"))
            } else if ty == DataType::Boolean {
                "false".into()
            } else {
                return Err(FieldError::new(
                    key,
                    format!("`{name}` is {ty}; give a `replacement` or use `hash`"),
                ));
            };
            let sql = format!("CASE WHEN {x} IS NULL THEN NULL ELSE {sql} END");
            let v = b.compile_sql(&key, &sql)?;
            b.set(name, v);
        }
        Ok(b.build(input))
    }
}

fn sql_type_of(ty: &DataType) -> Option<&'static str> {
    Some(match ty {
        DataType::Int8 => "TINYINT",
        DataType::Int16 => "SMALLINT",
        DataType::Int32 => "INT",
        DataType::Int64 => "BIGINT",
        DataType::UInt8 => "TINYINT UNSIGNED",
        DataType::UInt16 => "SMALLINT UNSIGNED",
        DataType::UInt32 => "INT UNSIGNED",
        DataType::UInt64 => "BIGINT UNSIGNED",
        DataType::Float32 => "REAL",
        DataType::Float64 => "DOUBLE",
        _ => return None,
    })
}

/// `insert_field`: add fields to every row: a static value, the processing timestamp, the
/// processing date.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InsertField {
    /// Name of the static field.
    #[serde(default)]
    pub static_field: Option<String>,
    /// Its value (text, number or boolean: the field gets that type).
    #[serde(default)]
    #[schemars(with = "Option<crate::field_list::Scalar>")]
    pub static_value: Option<serde_yaml::Value>,
    /// Name of a field holding the processing time (UTC, milliseconds).
    #[serde(default)]
    pub timestamp_field: Option<String>,
    /// Name of a field holding the processing date (UTC).
    #[serde(default)]
    pub date_field: Option<String>,
}

fn yaml_scalar(v: &serde_yaml::Value) -> Option<ScalarValue> {
    Some(match v {
        serde_yaml::Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        serde_yaml::Value::Number(n) => match n.as_i64() {
            Some(i) => ScalarValue::Int64(Some(i)),
            None => ScalarValue::Float64(n.as_f64()),
        },
        serde_yaml::Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        serde_yaml::Value::Null => ScalarValue::Utf8(None),
        _ => return None,
    })
}

impl Validate for InsertField {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.static_field.is_none()
            && self.timestamp_field.is_none()
            && self.date_field.is_none()
        {
            errs.push(FieldError::new(
                "",
                "give at least one of `static_field`, `timestamp_field`, `date_field`",
            ));
        }
        match (&self.static_field, &self.static_value) {
            (Some(_), None) => errs.push(FieldError::new(
                "static_value",
                "required with `static_field`",
            )),
            (None, Some(_)) => errs.push(FieldError::new(
                "static_field",
                "required with `static_value`",
            )),
            (Some(_), Some(v)) if yaml_scalar(v).is_none() => errs.push(FieldError::new(
                "static_value",
                "must be text, a number or a boolean",
            )),
            _ => {}
        }
        errs
    }
}

impl Spec for InsertField {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let mut b = Builder::new(input)?;
        let taken = |b: &Builder, key: &str, name: &str| {
            if b.has(name) {
                Err(FieldError::new(
                    key,
                    format!("the row already has a field `{name}`"),
                ))
            } else {
                Ok(())
            }
        };
        if let (Some(name), Some(v)) = (&self.static_field, &self.static_value) {
            taken(&b, "static_field", name)?;
            let scalar = yaml_scalar(v).unwrap_or(ScalarValue::Utf8(None));
            let v = b.compile("static_value", lit(scalar))?;
            b.set(name, v);
        }
        if let Some(name) = &self.timestamp_field {
            taken(&b, "timestamp_field", name)?;
            b.set(
                name,
                (Value::Now, rivven_engine::batch::timestamp_ms_utc(), false),
            );
        }
        if let Some(name) = &self.date_field {
            taken(&b, "date_field", name)?;
            b.set(name, (Value::Today, DataType::Date32, false));
        }
        Ok(b.build(input))
    }
}

/// Renames as a map (`{old: new}`) or a list of `old:new`.
#[derive(Debug, Clone, Default)]
pub struct Renames(pub Vec<(String, String)>);

impl JsonSchema for Renames {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FieldPairs".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Pairs of names: a map `{a: b}`, a list of `a:b`, or one text \
                            `a:b,c:d`.",
            "anyOf": [
                { "type": "object", "additionalProperties": { "type": "string" } },
                { "type": "array", "items": { "type": "string" } },
                { "type": "string" }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for Renames {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Map(BTreeMap<String, String>),
            List(Vec<String>),
            Text(String),
        }
        let pairs = |items: Vec<String>| -> Result<Vec<(String, String)>, D::Error> {
            items
                .iter()
                .map(|s| {
                    s.split_once(':')
                        .map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned()))
                        .ok_or_else(|| {
                            serde::de::Error::custom(format!("expected `old:new`, got `{s}`"))
                        })
                })
                .collect()
        };
        Ok(Renames(match Raw::deserialize(d)? {
            Raw::Map(m) => m.into_iter().collect(),
            Raw::List(l) => pairs(l)?,
            Raw::Text(t) => pairs(t.split(',').map(str::to_owned).collect())?,
        }))
    }
}

/// `replace_field` (alias `rename_field`): keep only `include`d fields, drop `exclude`d
/// ones, then rename.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceField {
    /// Renames, `{old: new}` or `["old:new"]`.
    #[serde(default)]
    pub renames: Renames,
    /// Keep only these fields.
    #[serde(default, alias = "whitelist")]
    pub include: Names,
    /// Drop these fields.
    #[serde(default, alias = "blacklist")]
    pub exclude: Names,
}

impl Validate for ReplaceField {
    fn validate(&self) -> Vec<FieldError> {
        if self.renames.0.is_empty() && self.include.is_empty() && self.exclude.is_empty() {
            return vec![FieldError::new(
                "",
                "give `renames`, `include` or `exclude`",
            )];
        }
        Vec::new()
    }
}

impl Spec for ReplaceField {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let mut b = Builder::new(input)?;
        require_fields("include", &self.include, b.row())?;
        require_fields("exclude", &self.exclude, b.row())?;
        let from: Vec<String> = self.renames.0.iter().map(|(a, _)| a.clone()).collect();
        require_fields("renames", &from, b.row())?;
        if !self.include.is_empty() {
            b.retain(|n| self.include.iter().any(|i| i == n));
        }
        b.retain(|n| !self.exclude.iter().any(|e| e == n));
        for (old, new) in &self.renames.0 {
            b.rename(old, new, "renames")?;
        }
        Ok(b.build(input))
    }
}

/// `set_null`: set fields to null, on every row or where `condition` (SQL over the row) is
/// true.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetNull {
    /// Fields to null.
    pub fields: Names,
    /// Only where this is true.
    #[serde(default)]
    pub condition: Option<String>,
}

impl Validate for SetNull {
    fn validate(&self) -> Vec<FieldError> {
        non_empty("fields", &self.fields)
    }
}

impl Spec for SetNull {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let mut b = Builder::new(input)?;
        require_fields("fields", &self.fields, b.row())?;
        for (i, name) in self.fields.iter().enumerate() {
            let sql = match &self.condition {
                Some(c) => format!("CASE WHEN ({c}) THEN NULL ELSE {} END", ident(name)),
                None => {
                    let ty = b
                        .row()
                        .field_with_name(name)
                        .map(|f| f.data_type().clone())
                        .unwrap_or(DataType::Null);
                    let (v, ..) = b.compile(
                        &format!("fields[{i}]"),
                        lit(ScalarValue::try_from(&ty).unwrap_or(ScalarValue::Null)),
                    )?;
                    b.set(name, (v, ty, true));
                    continue;
                }
            };
            let key = if self.condition.is_some() {
                "condition".to_owned()
            } else {
                format!("fields[{i}]")
            };
            let v = b.compile_sql(&key, &sql)?;
            b.set(name, (v.0, v.1, true));
        }
        Ok(b.build(input))
    }
}

/// Target types of `cast`: a SQL type name, or one of Kafka Connect's names (`int8`,
/// `int16`, `int32`, `int64`, `float32`, `float64`, `boolean`, `string`, `bytes`, `date`,
/// `timestamp`).
pub fn sql_type(name: &str) -> String {
    match name.trim().to_ascii_lowercase().as_str() {
        "int8" => "TINYINT".into(),
        "int16" => "SMALLINT".into(),
        "int32" | "int" | "integer" => "INT".into(),
        "int64" | "long" => "BIGINT".into(),
        "float32" | "float" => "REAL".into(),
        "float64" | "double" => "DOUBLE".into(),
        "boolean" | "bool" => "BOOLEAN".into(),
        "string" | "text" => "VARCHAR".into(),
        "bytes" | "binary" => "BYTEA".into(),
        "date" => "DATE".into(),
        "timestamp" => "TIMESTAMP".into(),
        _ => name.trim().to_owned(),
    }
}

/// `cast`: change field types. `spec: {amount: float64, id: string}` or
/// `spec: "amount:float64,id:string"`; a value that does not convert is a data error naming
/// the transform.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cast {
    /// Field → type.
    #[serde(alias = "fields")]
    pub spec: Renames,
}

impl Validate for Cast {
    fn validate(&self) -> Vec<FieldError> {
        if self.spec.0.is_empty() {
            return vec![FieldError::new("spec", "list at least one `field: type`")];
        }
        Vec::new()
    }
}

impl Spec for Cast {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let mut b = Builder::new(input)?;
        let names: Vec<String> = self.spec.0.iter().map(|(a, _)| a.clone()).collect();
        require_fields("spec", &names, b.row())?;
        for (name, ty) in &self.spec.0 {
            let sql = format!("CAST({} AS {})", ident(name), sql_type(ty));
            let v = b.compile_sql(&format!("spec.{name}"), &sql)?;
            b.set(name, v);
        }
        Ok(b.build(input))
    }
}

/// `compute_field` operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compute {
    /// Join the `fields`' text with `separator`.
    Concat,
    /// Hex digest of the `fields`' joined text (`algorithm`, default sha256).
    Hash,
    /// Upper-case text of the first field.
    Upper,
    /// Lower-case text of the first field.
    Lower,
    /// The first non-null of `fields`.
    Coalesce,
    /// A random UUID (v4) per row.
    Uuid,
    /// The processing timestamp.
    Timestamp,
    /// Any SQL expression over the row (`expression`).
    Expression,
}

/// `compute_field`: set `field` (new or replaced) to a value computed from the row.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComputeField {
    /// Target field.
    #[serde(alias = "target")]
    pub field: String,
    /// What to compute.
    pub operation: Compute,
    /// Source fields.
    #[serde(default, alias = "sources")]
    pub fields: Names,
    /// Separator for `concat` and `hash`.
    #[serde(default)]
    pub separator: Option<String>,
    /// Algorithm for `hash`.
    #[serde(default)]
    pub algorithm: Option<HashAlgorithm>,
    /// SQL for `expression`.
    #[serde(default)]
    pub expression: Option<String>,
}

impl Validate for ComputeField {
    fn validate(&self) -> Vec<FieldError> {
        let needs_fields = matches!(
            self.operation,
            Compute::Concat | Compute::Hash | Compute::Upper | Compute::Lower | Compute::Coalesce
        );
        let mut errs = Vec::new();
        if needs_fields && self.fields.is_empty() {
            errs.push(FieldError::new("fields", "list the source fields"));
        }
        if self.operation == Compute::Expression && self.expression.is_none() {
            errs.push(FieldError::new(
                "expression",
                "required with `operation: expression`",
            ));
        }
        errs
    }
}

impl Spec for ComputeField {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let mut b = Builder::new(input)?;
        require_fields("fields", &self.fields, b.row())?;
        let text: Vec<String> = self
            .fields
            .iter()
            .map(|f| format!("CAST({} AS VARCHAR)", ident(f)))
            .collect();
        let sep = sql_str(self.separator.as_deref().unwrap_or(""));
        let joined = format!("concat_ws({sep}, {})", text.join(", "));
        let v = match self.operation {
            Compute::Concat => b.compile_sql("fields", &joined)?,
            Compute::Hash => b.compile_sql(
                "fields",
                &self.algorithm.unwrap_or(HashAlgorithm::Sha256).sql(&joined),
            )?,
            Compute::Upper => b.compile_sql("fields", &format!("upper({})", text[0]))?,
            Compute::Lower => b.compile_sql("fields", &format!("lower({})", text[0]))?,
            Compute::Coalesce => {
                let args: Vec<Expr> = self.fields.iter().map(|f| col(f)).collect();
                b.compile(
                    "fields",
                    datafusion::functions::core::expr_fn::coalesce(args),
                )?
            }
            Compute::Uuid => b.compile_sql("operation", "uuid()")?,
            Compute::Timestamp => (Value::Now, rivven_engine::batch::timestamp_ms_utc(), false),
            Compute::Expression => {
                b.compile_sql("expression", self.expression.as_deref().unwrap_or("NULL"))?
            }
        };
        b.set(&self.field, v);
        Ok(b.build(input))
    }
}
