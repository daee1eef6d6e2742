//! The connector registry: connector name → factory, with catalogue metadata and the JSON
//! Schema of each connector's `config`.
//!
//! Built-in connectors are registered by one explicit function per crate
//! (`rivven_sources::register`, `rivven_sinks::register`); a third-party crate joins the same
//! way, by calling [`Registry::register_source`] / [`Registry::register_sink`] before handing
//! the registry to the CLI.

use crate::config::{FieldError, TransformSpec};
use crate::connector::{Sink, Source, StreamInfo, Transform};
use crate::error::{Error, Result};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Top-level connector category, as listed by `rivven-connect spec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Databases (CDC, query-based).
    Database,
    /// Message queues and streams.
    Messaging,
    /// Object storage.
    Storage,
    /// Lakehouse table formats.
    Lakehouse,
    /// Data warehouses.
    Warehouse,
    /// Generators, debugging, HTTP.
    Utility,
}

/// Catalogue entry of a connector.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectorInfo {
    /// The name used in `connector:`.
    pub name: &'static str,
    /// Category.
    pub category: Category,
    /// One-line description.
    pub description: &'static str,
    /// Search tags.
    pub tags: &'static [&'static str],
}

/// What a connector's own validation knows about its config type.
pub trait ValidateConfig {
    /// Semantic checks beyond the types; paths relative to the connector's `config`.
    fn validate(&self) -> Vec<FieldError> {
        Vec::new()
    }
}

/// Identity of a running pipeline, handed to factories.
#[derive(Debug, Clone)]
pub struct PipelineContext {
    /// The pipeline's name (the key under `sources:` or `sinks:`).
    pub name: String,
    /// The pipeline's live status: connectors report their own gauges and details here
    /// (`set_gauge`, `set_detail`), shown in `/metrics` and `/status`.
    pub status: std::sync::Arc<crate::status::PipelineStatus>,
    /// A directory private to this pipeline (`<state_dir>/sources/<name>.d` or
    /// `<state_dir>/sinks/<name>`), for connector state that must survive restarts next to
    /// the topic log and consumer offsets. Created on demand by the connector.
    pub state_dir: std::path::PathBuf,
    /// The pipeline's `dead_letter_topic`: sources send records they cannot decode there
    /// (with the reason) instead of failing. `None`: such a record fails the pipeline.
    pub dead_letter_topic: Option<String>,
}

/// Creates sources of one connector type.
#[async_trait]
pub trait SourceFactory: Send + Sync {
    /// Catalogue metadata.
    fn info(&self) -> ConnectorInfo;
    /// JSON Schema of the connector's `config`.
    fn config_schema(&self) -> schemars::Schema;
    /// Validate `config` without I/O; paths are relative to `config`.
    fn validate(&self, config: &serde_yaml::Value) -> Vec<FieldError>;
    /// Test connectivity; returns a one-line description of what was reached.
    async fn check(&self, config: &serde_yaml::Value) -> Result<String>;
    /// The streams this source would produce, with their Arrow schemas.
    async fn discover(&self, config: &serde_yaml::Value) -> Result<Vec<StreamInfo>>;
    /// A new source instance.
    fn create(&self, ctx: &PipelineContext, config: &serde_yaml::Value) -> Result<Box<dyn Source>>;
}

/// Creates sinks of one connector type.
#[async_trait]
pub trait SinkFactory: Send + Sync {
    /// Catalogue metadata.
    fn info(&self) -> ConnectorInfo;
    /// JSON Schema of the connector's `config`.
    fn config_schema(&self) -> schemars::Schema;
    /// Validate `config` without I/O; paths are relative to `config`.
    fn validate(&self, config: &serde_yaml::Value) -> Vec<FieldError>;
    /// Test connectivity; returns a one-line description of what was reached.
    async fn check(&self, config: &serde_yaml::Value) -> Result<String>;
    /// A new sink instance.
    fn create(&self, ctx: &PipelineContext, config: &serde_yaml::Value) -> Result<Box<dyn Sink>>;
}

/// Compiles a pipeline's transforms (the `rivven-sql` crate provides the built-in one):
/// the `transforms` list, a source's `config.cdc_features` and the dead-letter topic. Paths
/// in returned errors are relative to the pipeline's key (`config.transforms[0].config.fields`,
/// `config.cdc_features.router.rules[1]`).
pub trait TransformFactory: Send + Sync {
    /// Validate without I/O and without knowing the data's schema.
    fn validate(&self, spec: &TransformSpec) -> Vec<FieldError>;
    /// Validate against the streams a source discovered (fields named by transforms exist,
    /// SQL compiles against the schema).
    fn check_streams(&self, spec: &TransformSpec, streams: &[StreamInfo]) -> Vec<FieldError>;
    /// A compiled chain for one pipeline instance.
    fn create(&self, spec: &TransformSpec) -> Result<Box<dyn Transform>>;
    /// When the chain chooses partitions: how many it spreads rows over, and the topics it
    /// is known to write besides the pipeline's own (router destinations). The runtime
    /// creates those topics with that many partitions before sinks subscribe to them.
    fn topic_layout(&self, spec: &TransformSpec) -> Option<TopicLayout> {
        let _ = spec;
        None
    }
}

/// See [`TransformFactory::topic_layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLayout {
    /// Partitions per topic.
    pub partitions: u32,
    /// Topics written besides the pipeline's own.
    pub topics: Vec<String>,
}

/// Name → factory.
#[derive(Default, Clone)]
pub struct Registry {
    sources: BTreeMap<&'static str, Arc<dyn SourceFactory>>,
    sinks: BTreeMap<&'static str, Arc<dyn SinkFactory>>,
    transforms: Option<Arc<dyn TransformFactory>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sources", &self.source_names())
            .field("sinks", &self.sink_names())
            .field("transforms", &self.transforms.is_some())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a source factory. Fails if the name is taken.
    pub fn register_source(&mut self, factory: Arc<dyn SourceFactory>) -> Result<()> {
        let name = factory.info().name;
        if self.sources.contains_key(name) {
            return Err(Error::internal(format!(
                "source connector `{name}` registered twice"
            )));
        }
        self.sources.insert(name, factory);
        Ok(())
    }

    /// Add a sink factory. Fails if the name is taken.
    pub fn register_sink(&mut self, factory: Arc<dyn SinkFactory>) -> Result<()> {
        let name = factory.info().name;
        if self.sinks.contains_key(name) {
            return Err(Error::internal(format!(
                "sink connector `{name}` registered twice"
            )));
        }
        self.sinks.insert(name, factory);
        Ok(())
    }

    /// Install the transform compiler used for every pipeline's `transforms` list.
    pub fn set_transforms(&mut self, factory: Arc<dyn TransformFactory>) {
        self.transforms = Some(factory);
    }

    /// The transform compiler, if one is installed.
    pub fn transforms(&self) -> Option<&Arc<dyn TransformFactory>> {
        self.transforms.as_ref()
    }

    /// Validate a pipeline's transforms (none: nothing to check). Paths are relative to
    /// the pipeline's key.
    pub fn validate_transforms(&self, spec: &TransformSpec) -> Vec<FieldError> {
        if spec.is_empty() {
            return Vec::new();
        }
        match &self.transforms {
            Some(f) => f.validate(spec),
            None => vec![FieldError::new(
                spec.list_path,
                "transforms are not available in this build (no transform compiler registered)",
            )],
        }
    }

    /// See [`TransformFactory::topic_layout`] (`None` without a transform compiler).
    pub fn topic_layout(&self, spec: &TransformSpec) -> Option<TopicLayout> {
        self.transforms.as_ref()?.topic_layout(spec)
    }

    /// A compiled transform chain, or `None` when there is nothing to compile.
    pub fn create_transforms(&self, spec: &TransformSpec) -> Result<Option<Box<dyn Transform>>> {
        if spec.is_empty() {
            return Ok(None);
        }
        match &self.transforms {
            Some(f) => f.create(spec).map(Some),
            None => Err(Error::config(
                "transforms are not available in this build (no transform compiler registered)",
            )),
        }
    }

    /// The source factory called `name`.
    pub fn source(&self, name: &str) -> Option<&Arc<dyn SourceFactory>> {
        self.sources.get(name)
    }

    /// The sink factory called `name`.
    pub fn sink(&self, name: &str) -> Option<&Arc<dyn SinkFactory>> {
        self.sinks.get(name)
    }

    /// Registered source names, sorted.
    pub fn source_names(&self) -> Vec<&'static str> {
        self.sources.keys().copied().collect()
    }

    /// Registered sink names, sorted.
    pub fn sink_names(&self) -> Vec<&'static str> {
        self.sinks.keys().copied().collect()
    }

    /// Every source factory.
    pub fn sources(&self) -> impl Iterator<Item = &Arc<dyn SourceFactory>> {
        self.sources.values()
    }

    /// Every sink factory.
    pub fn sinks(&self) -> impl Iterator<Item = &Arc<dyn SinkFactory>> {
        self.sinks.values()
    }
}

/// Deserialize a YAML value into `T`, reporting errors with their key path. A missing
/// (`null`) value is read as an empty mapping, so connectors with all-default configs may
/// omit `config:`.
pub fn parse_value<T: DeserializeOwned>(value: &serde_yaml::Value) -> Result<T, Vec<FieldError>> {
    let value = if value.is_null() {
        serde_yaml::Value::Mapping(Default::default())
    } else {
        value.clone()
    };
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        let message = e.inner().to_string();
        // For an unknown key, point at the key itself.
        if let Some(rest) = message.strip_prefix("unknown field `") {
            if let Some(key) = rest.split('`').next() {
                if !path.ends_with(key) {
                    path = if path.is_empty() {
                        key.to_owned()
                    } else {
                        format!("{path}.{key}")
                    };
                }
            }
        }
        vec![FieldError::new(path, message)]
    })
}

/// Parse and validate a connector config: [`parse_value`] then [`ValidateConfig::validate`].
pub fn parse_config<T: DeserializeOwned + ValidateConfig>(
    value: &serde_yaml::Value,
) -> Result<T, Vec<FieldError>> {
    let cfg = parse_value::<T>(value)?;
    let errs = cfg.validate();
    if errs.is_empty() {
        Ok(cfg)
    } else {
        Err(errs)
    }
}

/// Parse a connector config for `create`/`check`, turning field errors into one
/// configuration [`Error`] (the loader reports them with positions before this runs).
pub fn config_or_error<T: DeserializeOwned + ValidateConfig>(
    value: &serde_yaml::Value,
) -> Result<T> {
    parse_config(value).map_err(|errs| config_error(&errs))
}

/// Field errors as one configuration [`Error`] (for `create`/`check`, after the loader has
/// reported them with positions).
pub fn config_error(errs: &[FieldError]) -> Error {
    Error::config(
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    )
}
