//! The connector registry: connector name → factory, with catalogue metadata and the JSON
//! Schema of each connector's `config`.
//!
//! A connector is a type implementing [`SourceConnector`] or [`SinkConnector`]: a typed
//! `Config` (deserialized and validated once, when the file is loaded) and `check`,
//! `discover`, `create` over it. The registry erases those types behind [`SourceFactory`] /
//! [`SinkFactory`], whose `configure` is the single parse; what it returns
//! ([`ConfiguredSource`], [`ConfiguredSink`]) is what `check` and the runtime use.
//!
//! Built-in connectors are registered by one explicit function per crate
//! (`rivven_sources::register`, `rivven_sinks::register`); a third-party crate joins the same
//! way, by calling [`Registry::register_source`] / [`Registry::register_sink`] before handing
//! the registry to the CLI. `docs/adding-a-connector.md` walks through one.

use crate::config::{FieldError, TransformSpec, Validate};
use crate::connector::{Sink, Source, StreamInfo, Transform};
use crate::error::{Error, Result};
use async_trait::async_trait;
use schemars::JsonSchema;
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

/// A source connector: its typed `config:` and what it does with one.
///
/// The registry deserializes a pipeline's `config:` into [`SourceConnector::Config`] once,
/// when the file is loaded, and runs [`Validate::validate`] on it (errors carry key paths,
/// which the loader locates in the file). Every later call receives that typed value: a
/// connector never sees YAML. Register one with [`Registry::register_source`].
///
/// `check` and `discover` may do I/O (connect, list tables) but must not change anything
/// outside the process; `create` must not do I/O (the runtime calls it again on every
/// restart, then [`Source::open`](crate::connector::Source::open)).
#[async_trait]
pub trait SourceConnector: Send + Sync + 'static {
    /// The `config:` block. Its JSON Schema is what `rivven-connect spec <name>` prints and
    /// what the connector's docs page is checked against.
    type Config: DeserializeOwned + JsonSchema + Validate + Clone + Send + Sync + 'static;

    /// Catalogue metadata.
    fn info(&self) -> ConnectorInfo;

    /// Checks that need the connector as well as the config. Pure, like
    /// [`Validate::validate`], which runs first. Default: none.
    fn validate(&self, config: &Self::Config) -> Vec<FieldError> {
        let _ = config;
        Vec::new()
    }

    /// Test connectivity and prerequisites; a one-line description of what was reached.
    async fn check(&self, config: &Self::Config) -> Result<String>;

    /// The streams this source would produce, with their Arrow schemas.
    async fn discover(&self, config: &Self::Config) -> Result<Vec<StreamInfo>>;

    /// A new source instance, for one attempt of the pipeline.
    fn create(&self, ctx: &PipelineContext, config: Self::Config) -> Result<Box<dyn Source>>;
}

/// A sink connector: its typed `config:` and what it does with one. See
/// [`SourceConnector`] for when each method is called.
#[async_trait]
pub trait SinkConnector: Send + Sync + 'static {
    /// The `config:` block.
    type Config: DeserializeOwned + JsonSchema + Validate + Clone + Send + Sync + 'static;

    /// Catalogue metadata.
    fn info(&self) -> ConnectorInfo;

    /// Checks that need the connector as well as the config (a connector name implying a
    /// provider, say). Pure, like [`Validate::validate`], which runs first. Default: none.
    fn validate(&self, config: &Self::Config) -> Vec<FieldError> {
        let _ = config;
        Vec::new()
    }

    /// Test connectivity and permissions; a one-line description of what was reached.
    async fn check(&self, config: &Self::Config) -> Result<String>;

    /// A new sink instance, for one attempt of the pipeline.
    fn create(&self, ctx: &PipelineContext, config: Self::Config) -> Result<Box<dyn Sink>>;
}

/// A source connector as the registry holds it: types erased, config still to be parsed.
/// Every [`SourceConnector`] is one (see [`Registry::register_source`]); implement this
/// directly only for a connector whose config is not a Rust type.
pub trait SourceFactory: Send + Sync {
    /// Catalogue metadata.
    fn info(&self) -> ConnectorInfo;
    /// JSON Schema of the connector's `config`.
    fn config_schema(&self) -> schemars::Schema;
    /// Parse and validate `config` (the one time it is parsed); errors are relative to
    /// `config`.
    fn configure(
        &self,
        config: &serde_yaml::Value,
    ) -> Result<Arc<dyn ConfiguredSource>, Vec<FieldError>>;
}

/// A sink connector as the registry holds it. See [`SourceFactory`].
pub trait SinkFactory: Send + Sync {
    /// Catalogue metadata.
    fn info(&self) -> ConnectorInfo;
    /// JSON Schema of the connector's `config`.
    fn config_schema(&self) -> schemars::Schema;
    /// Parse and validate `config`; errors are relative to `config`.
    fn configure(
        &self,
        config: &serde_yaml::Value,
    ) -> Result<Arc<dyn ConfiguredSink>, Vec<FieldError>>;
}

/// A source connector with its parsed, valid config: what `check`, `discover` and the
/// runtime hold.
#[async_trait]
pub trait ConfiguredSource: Send + Sync {
    /// See [`SourceConnector::check`].
    async fn check(&self) -> Result<String>;
    /// See [`SourceConnector::discover`].
    async fn discover(&self) -> Result<Vec<StreamInfo>>;
    /// See [`SourceConnector::create`].
    fn create(&self, ctx: &PipelineContext) -> Result<Box<dyn Source>>;
}

/// A sink connector with its parsed, valid config.
#[async_trait]
pub trait ConfiguredSink: Send + Sync {
    /// See [`SinkConnector::check`].
    async fn check(&self) -> Result<String>;
    /// See [`SinkConnector::create`].
    fn create(&self, ctx: &PipelineContext) -> Result<Box<dyn Sink>>;
}

/// The single parse of a connector config: deserialize, [`Validate`], then the
/// connector's own `checks`.
fn parse_checked<T: DeserializeOwned + Validate>(
    value: &serde_yaml::Value,
    checks: impl FnOnce(&T) -> Vec<FieldError>,
) -> Result<T, Vec<FieldError>> {
    let config = crate::config::parse::<T>(value)?;
    let errs = checks(&config);
    if errs.is_empty() {
        Ok(config)
    } else {
        Err(errs)
    }
}

/// The one erasure of typed connectors: `Typed(connector)` is the registry's factory, and
/// `Typed((connector, config))` what it configures.
struct Typed<T>(T);

impl<C: SourceConnector> SourceFactory for Typed<Arc<C>> {
    fn info(&self) -> ConnectorInfo {
        self.0.info()
    }

    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(C::Config)
    }

    fn configure(
        &self,
        config: &serde_yaml::Value,
    ) -> Result<Arc<dyn ConfiguredSource>, Vec<FieldError>> {
        let config = parse_checked(config, |c| self.0.validate(c))?;
        Ok(Arc::new(Typed((self.0.clone(), config))))
    }
}

#[async_trait]
impl<C: SourceConnector> ConfiguredSource for Typed<(Arc<C>, C::Config)> {
    async fn check(&self) -> Result<String> {
        self.0 .0.check(&self.0 .1).await
    }

    async fn discover(&self) -> Result<Vec<StreamInfo>> {
        self.0 .0.discover(&self.0 .1).await
    }

    fn create(&self, ctx: &PipelineContext) -> Result<Box<dyn Source>> {
        self.0 .0.create(ctx, self.0 .1.clone())
    }
}

impl<C: SinkConnector> SinkFactory for Typed<Arc<C>> {
    fn info(&self) -> ConnectorInfo {
        self.0.info()
    }

    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(C::Config)
    }

    fn configure(
        &self,
        config: &serde_yaml::Value,
    ) -> Result<Arc<dyn ConfiguredSink>, Vec<FieldError>> {
        let config = parse_checked(config, |c| self.0.validate(c))?;
        Ok(Arc::new(Typed((self.0.clone(), config))))
    }
}

#[async_trait]
impl<C: SinkConnector> ConfiguredSink for Typed<(Arc<C>, C::Config)> {
    async fn check(&self) -> Result<String> {
        self.0 .0.check(&self.0 .1).await
    }

    fn create(&self, ctx: &PipelineContext) -> Result<Box<dyn Sink>> {
        self.0 .0.create(ctx, self.0 .1.clone())
    }
}

/// Compiles a pipeline's transforms (the `rivven-sql` crate provides the built-in one):
/// the `transforms` list, a source's `config.cdc_features` and the dead-letter topic.
pub trait TransformFactory: Send + Sync {
    /// Parse and validate everything in `spec` (the one time it is parsed), without I/O
    /// and without knowing the data's schema. Paths in errors are relative to the
    /// pipeline's key (`config.transforms[0].config.fields`,
    /// `config.cdc_features.router.rules[1]`).
    fn plan(&self, spec: &TransformSpec) -> Result<Arc<dyn TransformPlan>, Vec<FieldError>>;

    /// Every transform type, in the order the docs list them.
    fn kinds(&self) -> Vec<TransformInfo>;

    /// JSON Schema of the `config` of transform `kind` or one of its aliases (`None`: no
    /// such type). `cdc_features` names a source's `config.cdc_features` block.
    fn config_schema(&self, kind: &str) -> Option<schemars::Schema>;
}

/// Catalogue entry of a transform type, as listed by `rivven-connect spec --transform`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TransformInfo {
    /// The name used in `type:`.
    pub name: &'static str,
    /// Other names accepted for it.
    pub aliases: &'static [&'static str],
    /// What it does, in one line.
    pub description: &'static str,
}

/// A pipeline's parsed transforms: what `check` compiles against discovered schemas and
/// what the runtime builds a fresh chain from on every attempt.
pub trait TransformPlan: Send + Sync {
    /// Compile against the streams a source discovered (fields named by transforms exist,
    /// SQL compiles against the schema); paths relative to the pipeline's key.
    fn check_streams(&self, streams: &[StreamInfo]) -> Vec<FieldError>;
    /// A new chain, with empty state and caches.
    fn create(&self) -> Result<Box<dyn Transform>>;
    /// When the chain chooses partitions: how many it spreads rows over, and the topics it
    /// is known to write besides the pipeline's own (router destinations). The runtime
    /// creates those topics with that many partitions before sinks subscribe to them.
    fn topic_layout(&self) -> Option<TopicLayout> {
        None
    }
}

/// See [`TransformPlan::topic_layout`].
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

/// The message for a pipeline with transforms in a build without a compiler.
const NO_TRANSFORMS: &str =
    "transforms are not available in this build (no transform compiler registered)";

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a source connector. Fails if its name is taken.
    pub fn register_source<C: SourceConnector>(&mut self, connector: C) -> Result<()> {
        self.register_source_factory(Arc::new(Typed(Arc::new(connector))))
    }

    /// Add a sink connector. Fails if its name is taken.
    pub fn register_sink<C: SinkConnector>(&mut self, connector: C) -> Result<()> {
        self.register_sink_factory(Arc::new(Typed(Arc::new(connector))))
    }

    /// Add a source factory that is not a [`SourceConnector`]. Fails if the name is taken.
    pub fn register_source_factory(&mut self, factory: Arc<dyn SourceFactory>) -> Result<()> {
        let name = factory.info().name;
        if self.sources.contains_key(name) {
            return Err(Error::internal(format!(
                "source connector `{name}` registered twice"
            )));
        }
        self.sources.insert(name, factory);
        Ok(())
    }

    /// Add a sink factory that is not a [`SinkConnector`]. Fails if the name is taken.
    pub fn register_sink_factory(&mut self, factory: Arc<dyn SinkFactory>) -> Result<()> {
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

    /// Parse a pipeline's transforms (`None`: nothing to compile). Paths are relative to
    /// the pipeline's key.
    pub fn plan_transforms(
        &self,
        spec: &TransformSpec,
    ) -> Result<Option<Arc<dyn TransformPlan>>, Vec<FieldError>> {
        if spec.is_empty() {
            return Ok(None);
        }
        match &self.transforms {
            Some(f) => f.plan(spec).map(Some),
            None => Err(vec![FieldError::new(spec.list_path, NO_TRANSFORMS)]),
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
