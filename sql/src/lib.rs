//! rivven-sql: the transform compiler of rivven-connect.
//!
//! A pipeline's `transforms:` list (single message transforms, predicates, SQL) is parsed
//! once, then compiled against each input schema into DataFusion physical expressions and
//! Arrow kernels, and evaluated per batch. Nothing runs per row except the row-shaped parts
//! of routers (choosing a destination), and compiled steps are cached per schema, so a
//! chain costs a few vectorised kernel calls per batch.
//!
//! ```yaml
//! transforms:
//!   - type: mask_field
//!     predicate: { table: users }
//!     config: { fields: [ssn], keep_last: 4 }
//!   - type: filter
//!     config: { condition: "status = active" }
//!   - type: extract_new_record_state
//!     config: { add_op: true, add_table: true }
//! ```
//!
//! - [`chain`]: steps, per-schema compilation, predicates (`CASE WHEN` merge or runs).
//! - [`predicate`]: `predicate:` keys.
//! - [`image`]: how transforms see flat and change-event batches.
//! - `transforms`: the built-in transforms (module docs of each list its keys).
//!
//! [`register`] installs the compiler in a connector registry.

pub mod chain;
pub mod expr;
pub mod image;
pub mod predicate;
mod transforms;
pub mod udf;

pub use transforms::KINDS;

use rivven_engine::config::FieldError;
use rivven_engine::connector::{StreamInfo, Transform};
use rivven_engine::registry::{Registry, TransformFactory};
use serde::Deserialize;
use std::sync::Arc;

/// Results with the engine's error type.
pub type Result<T, E = rivven_engine::Error> = std::result::Result<T, E>;

/// One entry of a `transforms:` list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    predicate: Option<predicate::PredicateConfig>,
    #[serde(default)]
    config: serde_yaml::Value,
}

/// Parse and validate a `transforms:` list into steps. Error paths are relative to the list.
pub fn parse(list: &serde_yaml::Value) -> std::result::Result<Vec<chain::Step>, Vec<FieldError>> {
    let items: Vec<serde_yaml::Value> = match list {
        serde_yaml::Value::Null => return Ok(Vec::new()),
        serde_yaml::Value::Sequence(s) => s.clone(),
        _ => return Err(vec![FieldError::new("", "expected a list of transforms")]),
    };
    let mut steps = Vec::new();
    let mut errs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("[{i}]");
        let raw: RawStep = match rivven_engine::registry::parse_value(item) {
            Ok(r) => r,
            Err(e) => {
                errs.extend(e.into_iter().map(|e| e.under(&at)));
                continue;
            }
        };
        let mut step_errs = Vec::new();
        if let Some(p) = &raw.predicate {
            step_errs.extend(
                p.validate()
                    .into_iter()
                    .map(|e| e.under(&format!("{at}.predicate"))),
            );
        }
        match transforms::parse(&raw.kind, &raw.config) {
            Ok(spec) if step_errs.is_empty() => steps.push(chain::Step::new(
                i,
                raw.kind.clone(),
                spec,
                raw.predicate.clone(),
            )),
            Ok(_) => {}
            Err(e) if !transforms::KINDS.contains(&raw.kind.as_str()) => {
                step_errs.extend(
                    e.into_iter()
                        .map(|e| FieldError::new(format!("{at}.type"), e.message)),
                );
            }
            Err(e) => step_errs.extend(e.into_iter().map(|e| e.under(&format!("{at}.config")))),
        }
        errs.extend(step_errs);
    }
    if errs.is_empty() {
        Ok(steps)
    } else {
        Err(errs)
    }
}

/// Compile `steps` in order against `schema`; the first error, with its path relative to
/// the list, or the output schema.
pub fn check_schema(
    steps: &[chain::Step],
    schema: &arrow::datatypes::SchemaRef,
) -> std::result::Result<arrow::datatypes::SchemaRef, FieldError> {
    let mut schema = schema.clone();
    for step in steps {
        let (_, out) = step
            .compile_for(&schema)
            .map_err(|e| e.under(&format!("[{}]", step.index)))?;
        schema = out;
    }
    Ok(schema)
}

/// The built-in [`TransformFactory`].
#[derive(Debug, Default, Clone, Copy)]
pub struct SqlTransforms;

impl TransformFactory for SqlTransforms {
    fn validate(&self, transforms: &serde_yaml::Value) -> Vec<FieldError> {
        parse(transforms).err().unwrap_or_default()
    }

    fn check_streams(
        &self,
        transforms: &serde_yaml::Value,
        streams: &[StreamInfo],
    ) -> Vec<FieldError> {
        let steps = match parse(transforms) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let mut errs = Vec::new();
        for s in streams {
            if let Err(mut e) = check_schema(&steps, &s.schema) {
                let stream = match &s.namespace {
                    Some(ns) => format!("{ns}.{}", s.name),
                    None => s.name.clone(),
                };
                e.message = format!("{} (stream `{stream}`)", e.message);
                errs.push(e);
            }
        }
        errs
    }

    fn create(&self, transforms: &serde_yaml::Value) -> Result<Box<dyn Transform>> {
        let steps = parse(transforms).map_err(|errs| {
            rivven_engine::Error::config(
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        Ok(Box::new(chain::Chain::new(steps)))
    }
}

/// Install the transform compiler in `registry`.
pub fn register(registry: &mut Registry) {
    registry.set_transforms(Arc::new(SqlTransforms));
}
