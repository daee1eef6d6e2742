//! Predicates: which rows a transform applies to.
//!
//! ```yaml
//! predicate:
//!   tables: ["public\\.users", "orders"]   # anchored regexes, matched against `table` and `schema.table`
//!   schemas: [public]                      # anchored regexes
//!   operations: [insert, update]           # insert, update, delete, snapshot, truncate
//!   field_exists: email                    # the row has this field (a schema property)
//!   field_value: { field: status, value: active }   # or "status=active"
//!   negate: false                          # invert the whole predicate
//! ```
//!
//! Every condition given must hold (AND). The predicate compiles into one boolean DataFusion
//! expression; a transform then applies to the rows where it is true and passes the others
//! through unchanged. Change events take table and schema from `source`, the operation from
//! `op`; flat batches take them from the schema's stream metadata and an `__op` column
//! (written by `extract_new_record_state` with `add_op`).

use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{lit, Expr};
use datafusion::physical_expr::PhysicalExpr;
use rivven_engine::batch::{is_change_event_schema, op, META_NAMESPACE, META_STREAM};
use rivven_engine::config::{FieldError, Validate};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use crate::expr;

/// An operation a predicate selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// `c`.
    #[serde(alias = "create", alias = "c", alias = "INSERT")]
    Insert,
    /// `u`.
    #[serde(alias = "u", alias = "UPDATE")]
    Update,
    /// `d`.
    #[serde(alias = "d", alias = "DELETE")]
    Delete,
    /// `r`.
    #[serde(alias = "read", alias = "r", alias = "SNAPSHOT")]
    Snapshot,
    /// `t`.
    #[serde(alias = "t", alias = "TRUNCATE")]
    Truncate,
}

impl Operation {
    /// The change-event op code.
    pub fn code(self) -> &'static str {
        match self {
            Operation::Insert => op::CREATE,
            Operation::Update => op::UPDATE,
            Operation::Delete => op::DELETE,
            Operation::Snapshot => op::READ,
            Operation::Truncate => op::TRUNCATE,
        }
    }
}

/// `field_value`: a field equal to a value (compared as text).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FieldValue {
    /// `{ field: status, value: active }`.
    Map {
        /// Field path.
        field: String,
        /// Value, compared with the field's text form.
        #[schemars(with = "crate::field_list::Scalar")]
        value: serde_yaml::Value,
    },
    /// `"status=active"`.
    Text(String),
}

impl FieldValue {
    fn parts(&self) -> Option<(String, String)> {
        match self {
            FieldValue::Map { field, value } => Some((field.clone(), yaml_text(value))),
            FieldValue::Text(t) => {
                let (f, v) = t.split_once('=')?;
                Some((f.trim().to_owned(), v.trim().to_owned()))
            }
        }
    }
}

/// A scalar YAML value as text (`true`, `42`, `active`).
pub fn yaml_text(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Null => String::new(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// The `predicate:` of a transform.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PredicateConfig {
    /// One table regex.
    #[serde(default)]
    pub table: Option<String>,
    /// Table regexes (any matches).
    #[serde(default)]
    pub tables: Vec<String>,
    /// One schema regex.
    #[serde(default)]
    pub schema: Option<String>,
    /// Schema regexes (any matches).
    #[serde(default)]
    pub schemas: Vec<String>,
    /// Operations (any matches).
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// The row has this field.
    #[serde(default)]
    pub field_exists: Option<String>,
    /// A field equals a value.
    #[serde(default)]
    pub field_value: Option<FieldValue>,
    /// Invert the predicate.
    #[serde(default)]
    pub negate: bool,
}

impl Validate for PredicateConfig {
    /// Checks without a schema: the regexes compile, `field_value` has a `=`.
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let lists = [
            ("table", self.table.iter().cloned().collect::<Vec<_>>()),
            ("tables", self.tables.clone()),
            ("schema", self.schema.iter().cloned().collect()),
            ("schemas", self.schemas.clone()),
        ];
        for (key, res) in lists {
            for (i, re) in res.iter().enumerate() {
                if let Err(e) = regex::Regex::new(&anchored(re)) {
                    let path = if key.ends_with('s') {
                        format!("{key}[{i}]")
                    } else {
                        key.to_owned()
                    };
                    errs.push(FieldError::new(path, format!("invalid regex: {e}")));
                }
            }
        }
        if let Some(fv) = &self.field_value {
            if fv.parts().is_none() {
                errs.push(FieldError::new(
                    "field_value",
                    "expected `field=value` or `{ field: ..., value: ... }`",
                ));
            }
        }
        errs
    }
}

fn anchored(re: &str) -> String {
    format!("^(?:{re})$")
}

impl PredicateConfig {
    fn tables(&self) -> Vec<String> {
        self.table.iter().chain(&self.tables).cloned().collect()
    }

    fn schemas(&self) -> Vec<String> {
        self.schema.iter().chain(&self.schemas).cloned().collect()
    }

    /// Whether evaluation needs the row view (it reads a field).
    pub fn needs_view(&self) -> bool {
        self.field_value.is_some()
    }

    /// Compile against the batch schema (`schema`) and its view schema (`view`): the
    /// predicate is evaluated on the view when [`Self::needs_view`], else on the batch.
    pub fn compile(
        &self,
        schema: &SchemaRef,
        view: &SchemaRef,
    ) -> std::result::Result<Arc<dyn PhysicalExpr>, FieldError> {
        let target = if self.needs_view() { view } else { schema };
        let change = is_change_event_schema(schema);
        let mut conds: Vec<Expr> = Vec::new();
        let text = |e: Expr| {
            Expr::Cast(datafusion::logical_expr::Cast::new(
                Box::new(e),
                arrow::datatypes::DataType::Utf8,
            ))
        };
        let re_any = |subject: Expr, res: &[String]| -> Expr {
            res.iter()
                .map(|re| {
                    datafusion::functions::regex::expr_fn::regexp_like(
                        subject.clone(),
                        lit(anchored(re)),
                        None,
                    )
                })
                .reduce(Expr::or)
                .unwrap_or(lit(false))
        };
        let meta_any = |key: &str, res: &[String], also: Option<String>| -> bool {
            let Some(v) = schema.metadata().get(key) else {
                return false;
            };
            res.iter().any(|re| {
                regex::Regex::new(&anchored(re))
                    .is_ok_and(|r| r.is_match(v) || also.as_ref().is_some_and(|a| r.is_match(a)))
            })
        };
        let src = |name: &str| -> Expr {
            let path = if target.field_with_name("source").is_ok() {
                format!("source.{name}")
            } else {
                name.to_owned()
            };
            expr::field(&path, target).unwrap_or(lit(ScalarValue::Utf8(None)))
        };
        let tables = self.tables();
        if !tables.is_empty() {
            if change {
                let qualified = datafusion::functions::string::expr_fn::concat(vec![
                    src("schema"),
                    lit("."),
                    src("table"),
                ]);
                conds.push(re_any(src("table"), &tables).or(re_any(qualified, &tables)));
            } else {
                let qualified = match (
                    schema.metadata().get(META_NAMESPACE),
                    schema.metadata().get(META_STREAM),
                ) {
                    (Some(ns), Some(t)) => Some(format!("{ns}.{t}")),
                    _ => None,
                };
                conds.push(lit(meta_any(META_STREAM, &tables, qualified)));
            }
        }
        let schemas = self.schemas();
        if !schemas.is_empty() {
            if change {
                conds.push(re_any(src("schema"), &schemas));
            } else {
                conds.push(lit(meta_any(META_NAMESPACE, &schemas, None)));
            }
        }
        if !self.operations.is_empty() {
            let op_col = if change { "op" } else { "__op" };
            match expr::field(op_col, target) {
                Ok(col) => {
                    let codes: Vec<Expr> = self.operations.iter().map(|o| lit(o.code())).collect();
                    conds.push(text(col).in_list(codes, false));
                }
                Err(_) => conds.push(lit(false)),
            }
        }
        if let Some(f) = &self.field_exists {
            conds.push(lit(expr::has_field(f, view)));
        }
        if let Some(fv) = &self.field_value {
            let (f, v) = fv.parts().unwrap_or_default();
            match expr::field(&f, view) {
                Ok(col) => conds.push(text(col).eq(lit(v))),
                Err(_) => conds.push(lit(false)),
            }
        }
        let mut all = conds.into_iter().reduce(Expr::and).unwrap_or(lit(true));
        // Null (unknown) counts as false before negation, so `negate` selects exactly the
        // rows the plain predicate does not.
        all = Expr::IsTrue(Box::new(all));
        if self.negate {
            all = Expr::Not(Box::new(all));
        }
        expr::physical(all, target).map_err(|e| FieldError::new("", e))
    }
}
