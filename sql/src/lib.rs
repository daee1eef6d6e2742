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
//! - [`features`]: a source's `cdc_features` block (deduplication, encryption, tombstones,
//!   event router, partitioner) as steps around the list.
//! - `transforms`: the built-in transforms (module docs of each list its keys).
//!
//! [`register`] installs the compiler in a connector registry.

pub mod chain;
pub mod expr;
pub mod features;
pub mod image;
pub mod predicate;
mod transforms;
pub mod udf;

pub use transforms::KINDS;

use rivven_engine::config::{FieldError, TransformSpec};
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

/// Parse and validate a `transforms:` list into steps. Error paths are relative to the
/// list's parent: `list_path` (`transforms`, `config.transforms`, or `""` for paths relative
/// to the list itself).
pub fn parse_list(
    list: &serde_yaml::Value,
    list_path: &str,
) -> std::result::Result<Vec<chain::Step>, Vec<FieldError>> {
    let items: Vec<serde_yaml::Value> = match list {
        serde_yaml::Value::Null => return Ok(Vec::new()),
        serde_yaml::Value::Sequence(s) => s.clone(),
        _ => {
            return Err(vec![FieldError::new(
                list_path,
                "expected a list of transforms",
            )])
        }
    };
    let mut steps = Vec::new();
    let mut errs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = FieldError::new(format!("[{i}]"), "").under(list_path).path;
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
                at.clone(),
                format!("transforms[{i}] ({})", raw.kind),
                "config",
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

/// Parse and validate everything a pipeline asks for: `cdc_features` steps before and
/// after the `transforms` list (see [`features`]). Error paths are relative to the
/// pipeline's key.
pub fn parse(spec: &TransformSpec) -> std::result::Result<Vec<chain::Step>, Vec<FieldError>> {
    let list = parse_list(&spec.list, spec.list_path);
    let plan = features::parse(&spec.features, features::PATH);
    match (list, plan) {
        (Ok(list), Ok(plan)) => Ok(plan.around(list)),
        (list, plan) => Err(list
            .err()
            .unwrap_or_default()
            .into_iter()
            .chain(plan.err().unwrap_or_default())
            .collect()),
    }
}

/// Compile `steps` in order against `schema`; the first error, with its path relative to
/// the pipeline, or the output schema.
pub fn check_schema(
    steps: &[chain::Step],
    schema: &arrow::datatypes::SchemaRef,
) -> std::result::Result<arrow::datatypes::SchemaRef, FieldError> {
    let mut schema = schema.clone();
    for step in steps {
        let (_, out) = step.compile_for(&schema).map_err(|e| e.under(&step.path))?;
        schema = out;
    }
    Ok(schema)
}

/// The built-in [`TransformFactory`].
#[derive(Debug, Default, Clone, Copy)]
pub struct SqlTransforms;

impl SqlTransforms {
    /// A chain for a bare `transforms:` list (tests, benchmarks); error paths are relative
    /// to the list.
    pub fn create_list(&self, list: &serde_yaml::Value) -> Result<Box<dyn Transform>> {
        self.create(&TransformSpec {
            list: list.clone(),
            ..TransformSpec::default()
        })
    }

    /// Validate a bare `transforms:` list; error paths are relative to the list.
    pub fn validate_list(&self, list: &serde_yaml::Value) -> Vec<FieldError> {
        self.validate(&TransformSpec {
            list: list.clone(),
            ..TransformSpec::default()
        })
    }
}

impl TransformFactory for SqlTransforms {
    fn validate(&self, spec: &TransformSpec) -> Vec<FieldError> {
        parse(spec).err().unwrap_or_default()
    }

    fn check_streams(&self, spec: &TransformSpec, streams: &[StreamInfo]) -> Vec<FieldError> {
        let steps = match parse(spec) {
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

    fn topic_layout(&self, spec: &TransformSpec) -> Option<rivven_engine::registry::TopicLayout> {
        features::topic_layout(&spec.features)
    }

    fn create(&self, spec: &TransformSpec) -> Result<Box<dyn Transform>> {
        let steps = parse(spec).map_err(|errs| {
            rivven_engine::Error::config(
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        Ok(Box::new(chain::Chain::new(
            steps,
            spec.dead_letter_topic.as_deref().map(Arc::from),
        )))
    }
}

/// Install the transform compiler in `registry`.
pub fn register(registry: &mut Registry) {
    registry.set_transforms(Arc::new(SqlTransforms));
}
