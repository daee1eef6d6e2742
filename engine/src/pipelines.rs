//! A loaded configuration resolved against a connector registry: every pipeline's connector
//! config and transforms parsed and validated once, ready for `check`, `discover` and the
//! runtime.

use crate::config::{ConfigErrors, FieldError, LoadedConfig, SinkSpec, SourceSpec, StartOffset};
use crate::registry::{ConfiguredSink, ConfiguredSource, Registry, TransformPlan};
use std::sync::Arc;

/// Every pipeline of a file, resolved (disabled ones too: they are validated as well).
#[derive(Clone)]
pub struct Pipelines {
    /// Source pipelines, in name order.
    pub sources: Vec<SourcePipeline>,
    /// Sink pipelines, in name order.
    pub sinks: Vec<SinkPipeline>,
}

/// One source pipeline with its parsed connector config and transforms.
#[derive(Clone)]
pub struct SourcePipeline {
    /// The key under `sources:`.
    pub name: String,
    /// Connector name.
    pub connector_name: String,
    /// Destination topic.
    pub topic: String,
    /// Whether to run it.
    pub enabled: bool,
    /// `dead_letter_topic`.
    pub dead_letter_topic: Option<String>,
    /// The connector with its config.
    pub connector: Arc<dyn ConfiguredSource>,
    /// The parsed transforms (`None`: none).
    pub transforms: Option<Arc<dyn TransformPlan>>,
    /// `config.health` when given and enabled: the source's health is monitored.
    pub health: Option<crate::health::HealthSettings>,
}

/// One sink pipeline with its parsed connector config and transforms.
#[derive(Clone)]
pub struct SinkPipeline {
    /// The key under `sinks:`.
    pub name: String,
    /// Connector name.
    pub connector_name: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Consumer group.
    pub consumer_group: String,
    /// Where a new group starts.
    pub start_offset: StartOffset,
    /// Whether to run it.
    pub enabled: bool,
    /// The connector with its config.
    pub connector: Arc<dyn ConfiguredSink>,
    /// The parsed transforms (`None`: none).
    pub transforms: Option<Arc<dyn TransformPlan>>,
    /// Where rows that a transform fails on or the sink refuses go (`None`: they fail
    /// their batch).
    pub dead_letter_topic: Option<String>,
}

impl std::fmt::Debug for Pipelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |v: Vec<(&str, &str)>| {
            v.into_iter()
                .map(|(n, c)| format!("{n} ({c})"))
                .collect::<Vec<_>>()
        };
        f.debug_struct("Pipelines")
            .field(
                "sources",
                &names(
                    self.sources
                        .iter()
                        .map(|s| (s.name.as_str(), s.connector_name.as_str()))
                        .collect(),
                ),
            )
            .field(
                "sinks",
                &names(
                    self.sinks
                        .iter()
                        .map(|s| (s.name.as_str(), s.connector_name.as_str()))
                        .collect(),
                ),
            )
            .finish()
    }
}

impl Pipelines {
    /// Parse and validate every connector's `config` and every transform list of `loaded`
    /// against `registry`; all errors at once, located in the file.
    pub fn resolve(loaded: &LoadedConfig, registry: &Registry) -> Result<Self, ConfigErrors> {
        let mut errs = Vec::new();
        let mut sources = Vec::new();
        for (name, spec) in &loaded.config.sources {
            match resolve_source(registry, name, spec) {
                Ok(p) => sources.push(p),
                Err(e) => errs.extend(e),
            }
        }
        let mut sinks = Vec::new();
        for (name, spec) in &loaded.config.sinks {
            match resolve_sink(registry, name, spec) {
                Ok(p) => sinks.push(p),
                Err(e) => errs.extend(e),
            }
        }
        if errs.is_empty() {
            Ok(Pipelines { sources, sinks })
        } else {
            Err(ConfigErrors(
                errs.into_iter().map(|e| loaded.error_at(e)).collect(),
            ))
        }
    }
}

/// What every pipeline resolves to besides its own keys: the configured connector, the
/// parsed transforms and the dead-letter topic.
struct Resolved<C> {
    connector: C,
    transforms: Option<Arc<dyn TransformPlan>>,
    dead_letter_topic: Option<String>,
    health: Option<crate::health::HealthSettings>,
}

/// Resolve the connector part of a pipeline at `base` (`sources.<name>`): `configure` is
/// the factory's (`None`: no connector of that name; `kind` and `available` say so).
fn resolve<C>(
    registry: &Registry,
    base: &str,
    (kind, connector, available): (&str, &str, Vec<&str>),
    parts: Result<crate::config::ConnectorParts, FieldError>,
    configure: Option<impl FnOnce(&serde_yaml::Value) -> Result<C, Vec<FieldError>>>,
) -> Result<Resolved<C>, Vec<FieldError>> {
    let configure = configure.ok_or_else(|| {
        vec![FieldError::new(
            format!("{base}.connector"),
            format!(
                "unknown {kind} connector `{connector}`; available: {}",
                available.join(", ")
            ),
        )]
    })?;
    let parts = parts.map_err(|e| vec![e.under(base)])?;
    let config = configure(&parts.config).map_err(|e| under(e, &format!("{base}.config")));
    let transforms = registry
        .plan_transforms(&parts.transforms)
        .map_err(|e| under(e, base));
    let health = match &parts.health {
        None => Ok(None),
        Some(v) => crate::config::parse::<crate::health::HealthSettings>(v)
            .map(Some)
            .map_err(|e| under(e, &format!("{base}.config.health"))),
    };
    match (config, transforms, health) {
        (Ok(connector), Ok(transforms), Ok(health)) => Ok(Resolved {
            connector,
            transforms,
            dead_letter_topic: parts.transforms.dead_letter_topic,
            health,
        }),
        (a, b, c) => Err(a
            .err()
            .into_iter()
            .chain(b.err())
            .chain(c.err())
            .flatten()
            .collect()),
    }
}

fn resolve_source(
    registry: &Registry,
    name: &str,
    spec: &SourceSpec,
) -> Result<SourcePipeline, Vec<FieldError>> {
    let factory = registry.source(&spec.connector);
    let r = resolve(
        registry,
        &format!("sources.{name}"),
        ("source", &spec.connector, registry.source_names()),
        spec.parts(),
        factory.map(|f| |c: &serde_yaml::Value| f.configure(c)),
    )?;
    Ok(SourcePipeline {
        name: name.to_owned(),
        connector_name: spec.connector.clone(),
        topic: spec.topic.clone(),
        enabled: spec.enabled,
        dead_letter_topic: r.dead_letter_topic,
        connector: r.connector,
        transforms: r.transforms,
        health: r.health.filter(|h| h.enabled),
    })
}

fn resolve_sink(
    registry: &Registry,
    name: &str,
    spec: &SinkSpec,
) -> Result<SinkPipeline, Vec<FieldError>> {
    let factory = registry.sink(&spec.connector);
    let r = resolve(
        registry,
        &format!("sinks.{name}"),
        ("sink", &spec.connector, registry.sink_names()),
        spec.parts(),
        factory.map(|f| |c: &serde_yaml::Value| f.configure(c)),
    )?;
    Ok(SinkPipeline {
        name: name.to_owned(),
        connector_name: spec.connector.clone(),
        topics: spec.topics.clone(),
        consumer_group: spec.consumer_group.clone(),
        start_offset: spec.start_offset,
        enabled: spec.enabled,
        connector: r.connector,
        transforms: r.transforms,
        dead_letter_topic: r.dead_letter_topic,
    })
}

fn under(errs: Vec<FieldError>, prefix: &str) -> Vec<FieldError> {
    errs.into_iter().map(|e| e.under(prefix)).collect()
}
