//! Routers: `regex_router`, `content_router`, `timestamp_router`. A router computes a
//! destination per row and splits the batch with the `take` kernel, one output per
//! destination, in order of first appearance; rows keep their order within each output.
//! Rows a predicate does not select keep their current destination.

use arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use rivven_engine::batch::is_change_event_schema;
use rivven_engine::config::{FieldError, Validate};
use rivven_engine::connector::Routed;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::envelope::epoch_ms;
use super::time::chrono_format;
use crate::image::{self, path_column, path_type};
use crate::op::Spec;
use crate::op::{split_by, Ctx, Op, Route};
use rivven_engine::Result;

/// Split `input` by per-row destinations (`None`: keep the current one).
fn split(input: Routed, dest: Vec<Option<Arc<str>>>, out: &mut Vec<Routed>) -> Result<()> {
    for (d, batch) in split_by(&input.batch, dest)? {
        out.push(Routed {
            batch,
            topic: d.or_else(|| input.topic.clone()),
            ..input.clone()
        });
    }
    Ok(())
}

/// Rows the mask does not select keep their destination.
fn masked(dest: &mut [Option<Arc<str>>], mask: Option<&BooleanArray>) {
    if let Some(m) = mask {
        for (i, d) in dest.iter_mut().enumerate() {
            if !m.value(i) {
                *d = None;
            }
        }
    }
}

/// `regex_router`: rename the destination topic. When `regex` matches the whole topic name,
/// the topic becomes `replacement`, where `$1`, `${name}` refer to capture groups.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegexRouter {
    /// Pattern matched against the whole topic name.
    pub regex: String,
    /// New topic name.
    pub replacement: String,
}

impl Validate for RegexRouter {
    fn validate(&self) -> Vec<FieldError> {
        match regex::Regex::new(&format!("^(?:{})$", self.regex)) {
            Ok(_) => Vec::new(),
            Err(e) => vec![FieldError::new("regex", format!("invalid regex: {e}"))],
        }
    }
}

impl Spec for RegexRouter {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let re = regex::Regex::new(&format!("^(?:{})$", self.regex))
            .map_err(|e| FieldError::new("regex", e.to_string()))?;
        Ok(Arc::new(RegexOp {
            schema: input.clone(),
            re,
            replacement: self.replacement.clone(),
        }))
    }
}

struct RegexOp {
    schema: SchemaRef,
    re: regex::Regex,
    replacement: String,
}

impl Route for RegexOp {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn route(
        &self,
        input: Routed,
        mask: Option<&BooleanArray>,
        ctx: &Ctx<'_>,
        out: &mut Vec<Routed>,
    ) -> Result<()> {
        let topic = input.topic.as_deref().unwrap_or(ctx.topic);
        if !self.re.is_match(topic) {
            out.push(input);
            return Ok(());
        }
        let new: Arc<str> = self.re.replace(topic, self.replacement.as_str()).into();
        let mut dest = vec![Some(new); input.batch.num_rows()];
        masked(&mut dest, mask);
        split(input, dest, out)
    }
}

/// `content_router`: choose the topic by a field's value. `routes` maps exact values to
/// topics; `patterns` maps anchored regexes to topics (tried in order after `routes`); rows
/// that match neither go to `default_topic`, or keep their topic.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentRouter {
    /// Field whose text selects the route (nested paths allowed).
    pub field: String,
    /// Value → topic.
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    /// Regex → topic, in order.
    #[serde(default)]
    pub patterns: Vec<PatternRoute>,
    /// Topic for rows no route matches.
    #[serde(default)]
    pub default_topic: Option<String>,
}

/// One `patterns` entry.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatternRoute {
    /// Anchored regex over the field's text.
    pub pattern: String,
    /// Destination topic.
    pub topic: String,
}

impl Validate for ContentRouter {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.routes.is_empty() && self.patterns.is_empty() && self.default_topic.is_none() {
            errs.push(FieldError::new(
                "routes",
                "give `routes`, `patterns` or `default_topic`",
            ));
        }
        for (i, p) in self.patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(&format!("^(?:{})$", p.pattern)) {
                errs.push(FieldError::new(
                    format!("patterns[{i}].pattern"),
                    format!("invalid regex: {e}"),
                ));
            }
        }
        errs
    }
}

impl Spec for ContentRouter {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let view = image::view_schema(input);
        if path_type(&view, &self.field).is_none() {
            return Err(FieldError::new(
                "field",
                format!("no field `{}` in the row", self.field),
            ));
        }
        let patterns = self
            .patterns
            .iter()
            .map(|p| {
                regex::Regex::new(&format!("^(?:{})$", p.pattern))
                    .map(|r| (r, Arc::<str>::from(p.topic.as_str())))
                    .map_err(|e| FieldError::new("patterns", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(ContentOp {
            schema: input.clone(),
            view,
            field: self.field.clone(),
            routes: self
                .routes
                .iter()
                .map(|(k, v)| (k.clone(), Arc::<str>::from(v.as_str())))
                .collect(),
            patterns,
            default: self.default_topic.as_deref().map(Arc::from),
        }))
    }
}

struct ContentOp {
    schema: SchemaRef,
    view: SchemaRef,
    field: String,
    routes: std::collections::HashMap<String, Arc<str>>,
    patterns: Vec<(regex::Regex, Arc<str>)>,
    default: Option<Arc<str>>,
}

impl Route for ContentOp {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn route(
        &self,
        input: Routed,
        mask: Option<&BooleanArray>,
        _: &Ctx<'_>,
        out: &mut Vec<Routed>,
    ) -> Result<()> {
        let view = image::view(&input.batch, &self.view)?;
        let col = path_column(&view, &self.field)
            .ok_or_else(|| rivven_engine::Error::internal(format!("no field `{}`", self.field)))?;
        let text: ArrayRef = cast(&col, &DataType::Utf8)?;
        let text = text
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| rivven_engine::Error::internal("text cast"))?;
        let mut dest: Vec<Option<Arc<str>>> = (0..text.len())
            .map(|i| {
                if text.is_null(i) {
                    return self.default.clone();
                }
                let v = text.value(i);
                self.routes
                    .get(v)
                    .cloned()
                    .or_else(|| {
                        self.patterns
                            .iter()
                            .find(|(r, _)| r.is_match(v))
                            .map(|(_, t)| t.clone())
                    })
                    .or_else(|| self.default.clone())
            })
            .collect();
        masked(&mut dest, mask);
        split(input, dest, out)
    }
}

fn default_topic_format() -> String {
    "${topic}-${timestamp}".into()
}

fn default_timestamp_format() -> String {
    "yyyyMMdd".into()
}

/// `timestamp_router`: the topic becomes `topic_format` with `${topic}` and `${timestamp}`
/// replaced, the timestamp formatted with `timestamp_format` (Java pattern, or chrono with
/// `%`). The time is `field` when given, else the record timestamp (`ts_ms` of change
/// events, `__ts_ms` of flat rows), else the processing time; all in UTC.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimestampRouter {
    /// Topic template.
    #[serde(default = "default_topic_format", alias = "topic.format")]
    pub topic_format: String,
    /// Date pattern.
    #[serde(default = "default_timestamp_format", alias = "timestamp.format")]
    pub timestamp_format: String,
    /// Row field holding the time.
    #[serde(default)]
    pub field: Option<String>,
}

impl Validate for TimestampRouter {
    fn validate(&self) -> Vec<FieldError> {
        match chrono_format(&self.timestamp_format) {
            Ok(_) => Vec::new(),
            Err(e) => vec![FieldError::new("timestamp_format", e)],
        }
    }
}

impl Spec for TimestampRouter {
    fn compile(&self, input: &SchemaRef) -> Result<Arc<dyn Op>, FieldError> {
        let view = image::view_schema(input);
        let field = match &self.field {
            Some(f) => {
                if path_type(&view, f).is_none() {
                    return Err(FieldError::new(
                        "field",
                        format!("no field `{f}` in the row"),
                    ));
                }
                Some(f.clone())
            }
            None if is_change_event_schema(input) => Some("ts_ms".to_owned()),
            None if input.field_with_name("__ts_ms").is_ok() => Some("__ts_ms".to_owned()),
            None => None,
        };
        Ok(Arc::new(TimestampRouteOp {
            schema: input.clone(),
            view,
            field,
            topic_format: self.topic_format.clone(),
            format: chrono_format(&self.timestamp_format)
                .map_err(|e| FieldError::new("timestamp_format", e))?,
        }))
    }
}

struct TimestampRouteOp {
    schema: SchemaRef,
    view: SchemaRef,
    field: Option<String>,
    topic_format: String,
    format: String,
}

impl Route for TimestampRouteOp {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn route(
        &self,
        input: Routed,
        mask: Option<&BooleanArray>,
        ctx: &Ctx<'_>,
        out: &mut Vec<Routed>,
    ) -> Result<()> {
        let n = input.batch.num_rows();
        let times: Vec<Option<i64>> = match &self.field {
            Some(f) => {
                let view = image::view(&input.batch, &self.view)?;
                let col = path_column(&view, f)
                    .ok_or_else(|| rivven_engine::Error::internal(format!("no field `{f}`")))?;
                epoch_ms(&col)?.iter().collect()
            }
            None => vec![Some(rivven_engine::batch::now_ms()); n],
        };
        let topic = input.topic.as_deref().unwrap_or(ctx.topic).to_owned();
        let mut cache: std::collections::HashMap<i64, Arc<str>> = Default::default();
        let mut dest: Vec<Option<Arc<str>>> = Vec::with_capacity(n);
        for t in times {
            let Some(ms) = t else {
                dest.push(None);
                continue;
            };
            // Rows of one batch share few distinct formatted values; format once per second
            // (per millisecond when the pattern shows fractions).
            let key = if self.format.contains('f') {
                ms
            } else {
                ms.div_euclid(1000)
            };
            let d = match cache.get(&key) {
                Some(d) => d.clone(),
                None => {
                    let when = chrono::DateTime::from_timestamp_millis(ms).ok_or_else(|| {
                        rivven_engine::Error::data(format!("timestamp {ms} ms is out of range"))
                    })?;
                    let stamp = when.format(&self.format).to_string();
                    let d: Arc<str> = self
                        .topic_format
                        .replace("${topic}", &topic)
                        .replace("${timestamp}", &stamp)
                        .into();
                    cache.insert(key, d.clone());
                    d
                }
            };
            dest.push(Some(d));
        }
        masked(&mut dest, mask);
        split(input, dest, out)
    }
}
