//! A pipeline's transforms, parsed once: the `transforms:` list and the source's
//! `cdc_features` as [`Step`]s, checked against discovered schemas, and built into a fresh
//! [`Chain`] for every attempt of the pipeline.

use arrow::datatypes::SchemaRef;
use rivven_engine::config::{errors_to_error, parse_value, FieldError, TransformSpec, Validate};
use rivven_engine::connector::{StreamInfo, Transform};
use rivven_engine::registry::{TopicLayout, TransformFactory, TransformInfo, TransformPlan};
use rivven_engine::Result;
use serde::Deserialize;
use std::sync::Arc;

use crate::chain::{Chain, Step};
use crate::features;
use crate::predicate::PredicateConfig;
use crate::transforms;

/// One entry of a `transforms:` list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    predicate: Option<PredicateConfig>,
    #[serde(default)]
    config: serde_yaml::Value,
}

/// Parse and validate a `transforms:` list into steps. Error paths are relative to the
/// list's parent: `list_path` (`transforms`, `config.transforms`, or `""` for paths relative
/// to the list itself).
pub fn parse_list(list: &serde_yaml::Value, list_path: &str) -> Result<Vec<Step>, Vec<FieldError>> {
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
        let raw: RawStep = match parse_value(item) {
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
            Ok(spec) if step_errs.is_empty() => steps.push(Step::new(
                at.clone(),
                format!("transforms[{i}] ({})", raw.kind),
                "config",
                spec,
                raw.predicate.clone(),
            )),
            Ok(_) => {}
            Err(e) if transforms::find(&raw.kind).is_none() => {
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
/// the pipeline, or the output schema.
pub fn check_schema(steps: &[Step], schema: &SchemaRef) -> Result<SchemaRef, FieldError> {
    let mut schema = schema.clone();
    for step in steps {
        let (_, out) = step.compile_for(&schema).map_err(|e| e.under(&step.path))?;
        schema = out;
    }
    Ok(schema)
}

/// Everything a pipeline asks for, parsed: the `cdc_features` steps around the
/// `transforms` list (see [`features`]) and the dead-letter topic.
pub struct SqlPlan {
    steps: Vec<Step>,
    dead_letter: Option<Arc<str>>,
    layout: Option<TopicLayout>,
}

impl SqlPlan {
    /// Parse and validate `spec`; error paths are relative to the pipeline's key.
    pub fn new(spec: &TransformSpec) -> Result<Self, Vec<FieldError>> {
        let list = parse_list(&spec.list, spec.list_path);
        let features = features::parse(&spec.features, features::PATH);
        match (list, features) {
            (Ok(list), Ok(features)) => Ok(Self {
                layout: features.topic_layout(),
                steps: features.around(list),
                dead_letter: spec.dead_letter_topic.as_deref().map(Arc::from),
            }),
            (list, features) => Err(list
                .err()
                .unwrap_or_default()
                .into_iter()
                .chain(features.err().unwrap_or_default())
                .collect()),
        }
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// A new chain (see [`TransformPlan::create`]), as its concrete type.
    pub fn chain(&self) -> Chain {
        Chain::new(self.steps.clone(), self.dead_letter.clone())
    }
}

impl TransformPlan for SqlPlan {
    fn check_streams(&self, streams: &[StreamInfo]) -> Vec<FieldError> {
        let mut errs = Vec::new();
        for s in streams {
            if let Err(mut e) = check_schema(&self.steps, &s.schema) {
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

    fn create(&self) -> Result<Box<dyn Transform>> {
        Ok(Box::new(self.chain()))
    }

    fn topic_layout(&self) -> Option<TopicLayout> {
        self.layout.clone()
    }
}

/// The built-in [`TransformFactory`].
#[derive(Debug, Default, Clone, Copy)]
pub struct SqlTransforms;

impl SqlTransforms {
    /// The plan of a bare `transforms:` list (tests, benchmarks); error paths are relative
    /// to the list.
    pub fn plan_list(&self, list: &serde_yaml::Value) -> Result<SqlPlan, Vec<FieldError>> {
        SqlPlan::new(&TransformSpec {
            list: list.clone(),
            ..TransformSpec::default()
        })
    }

    /// A chain for a bare `transforms:` list (tests, benchmarks).
    pub fn create_list(&self, list: &serde_yaml::Value) -> Result<Box<dyn Transform>> {
        let plan = self.plan_list(list).map_err(|e| errors_to_error(&e))?;
        plan.create()
    }
}

impl TransformFactory for SqlTransforms {
    fn plan(&self, spec: &TransformSpec) -> Result<Arc<dyn TransformPlan>, Vec<FieldError>> {
        Ok(Arc::new(SqlPlan::new(spec)?))
    }

    fn kinds(&self) -> Vec<TransformInfo> {
        transforms::KINDS
            .iter()
            .map(|k| TransformInfo {
                name: k.name,
                aliases: k.aliases,
                description: k.description,
            })
            .collect()
    }

    fn config_schema(&self, kind: &str) -> Option<schemars::Schema> {
        if kind == "cdc_features" {
            return Some(schemars::schema_for!(features::CdcFeatures));
        }
        transforms::find(kind).map(transforms::Kind::config_schema)
    }
}
