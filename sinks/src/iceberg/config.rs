//! Configuration of the `iceberg` sink.

use crate::changes::MetadataColumns;
use crate::format::{ParquetCompression, ParquetOptions};
use rivven_engine::config::{FieldError, Validate};
use rivven_engine::secret::SecretString;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

fn yes() -> bool {
    true
}

fn default_namespace() -> String {
    "default".to_string()
}

fn default_batch_size() -> u64 {
    10_000
}

fn default_flush_interval() -> u64 {
    60
}

fn default_target_file_size() -> u64 {
    128
}

fn default_buckets() -> u32 {
    16
}

/// `iceberg` sink configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IcebergConfig {
    /// The catalog that holds the tables.
    pub catalog: CatalogConfig,
    /// Namespace of the table(s), dot-separated for nested namespaces (default `default`).
    /// May contain `{topic}` (the batch's topic, dots turned into underscores).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Table name. May contain `{topic}` (as in `namespace`) and `{table}` (the change
    /// event's `source.table`, or the `__table` column of unwrapped rows), so one sink
    /// writes one table per source table.
    pub table: String,
    /// Create the namespace and the table from the first batch's schema when they do not
    /// exist (default true); false: a missing table is an error.
    #[serde(default = "yes")]
    pub auto_create: bool,
    /// Rows per commit: a commit is made once this many have arrived (default 10000).
    #[serde(default = "default_batch_size")]
    pub batch_size: u64,
    /// Longest time, in seconds, that a row waits for its commit (default 60).
    #[serde(default = "default_flush_interval")]
    pub flush_interval_secs: u64,
    /// Size, in MiB, at which a data file is closed and the next one started (default 128).
    #[serde(default = "default_target_file_size")]
    pub target_file_size_mb: u64,
    /// Parquet page compression (default `snappy`).
    #[serde(default)]
    pub compression: ParquetCompression,
    /// Level for gzip, zstd and brotli.
    #[serde(default)]
    pub compression_level: Option<u32>,
    /// How bare column names in `partition_fields` are transformed when this sink creates
    /// a table: `identity` (default when `partition_fields` is set), `bucket`
    /// (`bucket[num_buckets]`), `time` (`day`) or `none` (no partitioning; then
    /// `partition_fields` must be empty).
    #[serde(default)]
    pub partitioning: Option<Partitioning>,
    /// The partition spec of a table this sink creates: column names, or Iceberg
    /// transforms of a column: `identity(c)`, `bucket[N](c)`, `truncate[W](c)`, `year(c)`,
    /// `month(c)`, `day(c)`, `hour(c)`. An existing table keeps its own spec.
    #[serde(default)]
    pub partition_fields: Vec<String>,
    /// Buckets of `partitioning: bucket` (default 16).
    #[serde(default)]
    pub num_buckets: Option<u32>,
    /// How rows become table data: `append` (default; every row is added), `upsert` (the
    /// last change per key replaces the key's row, deletes remove it: equality deletes
    /// and data files in one snapshot) or `overwrite` (each commit replaces the partitions
    /// its rows fall in; an unpartitioned table is replaced whole).
    #[serde(default)]
    pub commit_mode: CommitMode,
    /// Key of `upsert` (default: the table's identifier fields, else the primary key the
    /// source puts on the rows). A table this sink creates in `upsert` mode gets the key
    /// as its identifier fields (required columns).
    #[serde(default)]
    pub key_columns: Vec<String>,
    /// Change-event metadata kept as columns in `upsert` mode (default: none).
    #[serde(default)]
    pub metadata_columns: MetadataColumns,
    /// Table properties set when this sink creates a table.
    #[serde(default)]
    pub table_properties: BTreeMap<String, String>,
    /// S3 credentials and endpoint for the table files (`s3://` warehouses).
    #[serde(default)]
    pub s3: Option<IcebergS3>,
}

/// The catalog block: `type` and the block of that type.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Which catalog: `memory`, `sql`, `rest`, `glue` or `hive`.
    #[serde(rename = "type")]
    pub kind: CatalogKind,
    /// Name the catalog is known by (default `rivven`); for `sql` catalogs it is the
    /// `catalog_name` column, which readers such as pyiceberg's `SqlCatalog` must match.
    #[serde(default)]
    pub name: Option<String>,
    /// `memory` catalog settings.
    #[serde(default)]
    pub memory: Option<MemoryCatalog>,
    /// `sql` catalog settings.
    #[serde(default)]
    pub sql: Option<SqlCatalog>,
    /// `rest` catalog settings.
    #[serde(default)]
    pub rest: Option<RestCatalog>,
    /// `glue` catalog settings.
    #[serde(default)]
    pub glue: Option<GlueCatalog>,
    /// `hive` catalog settings.
    #[serde(default)]
    pub hive: Option<HiveCatalog>,
}

impl CatalogConfig {
    /// The catalog's name.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("rivven")
    }
}

/// Catalog types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKind {
    /// A file warehouse with no catalog service: tables live under
    /// `<warehouse>/<namespace>/<table>` and are found again from their newest metadata
    /// file on start.
    Memory,
    /// A JDBC-style catalog in a SQL database (SQLite or PostgreSQL), the layout of
    /// Iceberg's `JdbcCatalog` and pyiceberg's `SqlCatalog`.
    Sql,
    /// An Iceberg REST catalog.
    Rest,
    /// AWS Glue Data Catalog.
    Glue,
    /// Hive Metastore.
    Hive,
}

/// `memory` catalog settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryCatalog {
    /// Warehouse location: a local directory or `file://` URL.
    pub warehouse: String,
}

/// `sql` catalog settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlCatalog {
    /// Database URL: `sqlite:///path/catalog.db` or `postgres://user:pass@host/db`.
    /// Passwords belong in `${VAR}` substitutions: the URL is never logged.
    pub uri: SecretString,
    /// Warehouse location for new tables: a local directory, `file://` or `s3://` URL.
    pub warehouse: String,
}

/// `rest` catalog settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestCatalog {
    /// Catalog endpoint, e.g. `http://polaris:8181/api/catalog`.
    pub uri: String,
    /// Warehouse name or location, as the catalog expects it.
    #[serde(default)]
    pub warehouse: Option<String>,
    /// OAuth2 client credentials `client_id:client_secret`, exchanged for a token.
    #[serde(default)]
    pub credential: Option<SecretString>,
    /// A bearer token used as is.
    #[serde(default)]
    pub token: Option<SecretString>,
    /// OAuth2 token endpoint (default: the catalog's `v1/oauth/tokens`).
    #[serde(default)]
    pub oauth2_server_uri: Option<String>,
    /// OAuth2 scope (default `catalog`).
    #[serde(default)]
    pub scope: Option<String>,
    /// Further catalog properties, passed as given (e.g. `header.X-Iceberg-Access-Delegation`).
    #[serde(default)]
    pub extra_properties: BTreeMap<String, String>,
}

/// `glue` catalog settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlueCatalog {
    /// Warehouse location for new tables (`s3://bucket/path`).
    pub warehouse: String,
    /// AWS region.
    #[serde(default)]
    pub region: Option<String>,
    /// Glue endpoint override (e.g. a local emulator).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Glue catalog id (default: the account's).
    #[serde(default)]
    pub catalog_id: Option<String>,
    /// Access key id (default: the AWS environment and profile chain).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key.
    #[serde(default)]
    pub secret_access_key: Option<SecretString>,
    /// Session token.
    #[serde(default)]
    pub session_token: Option<SecretString>,
    /// AWS profile name.
    #[serde(default)]
    pub profile: Option<String>,
}

/// `hive` catalog settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HiveCatalog {
    /// Metastore Thrift address, `host:port` or `thrift://host:port` (buffered transport).
    pub uri: String,
    /// Warehouse location for new tables.
    pub warehouse: String,
}

/// S3 settings of the table files.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IcebergS3 {
    /// AWS region.
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override (MinIO, s3s, LocalStack).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible servers need.
    #[serde(default)]
    pub path_style_access: bool,
    /// Access key id (default: the AWS environment and profile chain).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key.
    #[serde(default)]
    pub secret_access_key: Option<SecretString>,
    /// Session token.
    #[serde(default)]
    pub session_token: Option<SecretString>,
}

impl IcebergS3 {
    /// These settings as Iceberg FileIO properties (`s3.*`).
    pub fn file_io_props(&self) -> Vec<(String, String)> {
        let fields = [
            ("s3.region", self.region.clone()),
            ("s3.endpoint", self.endpoint.clone()),
            (
                "s3.path-style-access",
                Some(self.path_style_access.to_string()),
            ),
            ("s3.access-key-id", self.access_key_id.clone()),
            (
                "s3.secret-access-key",
                self.secret_access_key
                    .as_ref()
                    .map(|s| s.expose().to_string()),
            ),
            (
                "s3.session-token",
                self.session_token.as_ref().map(|s| s.expose().to_string()),
            ),
        ];
        fields
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect()
    }
}

/// Shorthand transforms for bare `partition_fields` names (the spec's `partitioning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Partitioning {
    /// Unpartitioned.
    None,
    /// `identity(c)`.
    Identity,
    /// `bucket[num_buckets](c)`.
    Bucket,
    /// `day(c)`.
    Time,
}

/// How rows become table data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CommitMode {
    /// Every row is appended.
    #[default]
    Append,
    /// Rows replace those with the same identifier fields.
    Upsert,
    /// The partitions written are replaced.
    Overwrite,
}

/// One partition field: a transform of a source column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionField {
    /// Source column.
    pub column: String,
    /// Iceberg transform name as Iceberg spells it: `identity`, `bucket[16]`, `day`, ….
    pub transform: String,
}

impl IcebergConfig {
    /// The Parquet writer properties.
    pub fn writer_properties(&self) -> Result<parquet::file::properties::WriterProperties, String> {
        ParquetOptions {
            compression: self.compression,
            compression_level: self.compression_level,
            ..ParquetOptions::default()
        }
        .properties()
    }

    /// `partition_fields` parsed, with bare names transformed as `partitioning` says.
    pub fn partition_spec(&self) -> Result<Vec<PartitionField>, String> {
        let bare = match self.partitioning {
            Some(Partitioning::None) if !self.partition_fields.is_empty() => {
                return Err("partitioning: none with partition_fields set".to_string())
            }
            Some(Partitioning::None) => return Ok(Vec::new()),
            None | Some(Partitioning::Identity) => "identity".to_string(),
            Some(Partitioning::Bucket) => {
                format!(
                    "bucket[{}]",
                    self.num_buckets.unwrap_or_else(default_buckets)
                )
            }
            Some(Partitioning::Time) => "day".to_string(),
        };
        self.partition_fields
            .iter()
            .map(|f| parse_partition_field(f, &bare))
            .collect()
    }

    /// Where table files go: the warehouse of the catalog's block, when it names one.
    fn warehouse(&self) -> Option<&str> {
        let c = &self.catalog;
        match c.kind {
            CatalogKind::Memory => c.memory.as_ref().map(|m| m.warehouse.as_str()),
            CatalogKind::Sql => c.sql.as_ref().map(|s| s.warehouse.as_str()),
            CatalogKind::Rest => c.rest.as_ref().and_then(|r| r.warehouse.as_deref()),
            CatalogKind::Glue => c.glue.as_ref().map(|g| g.warehouse.as_str()),
            CatalogKind::Hive => c.hive.as_ref().map(|h| h.warehouse.as_str()),
        }
    }
}

/// `c`, `identity(c)`, `bucket[N](c)`, `truncate[W](c)`, `year(c)`, `month(c)`, `day(c)`,
/// `hour(c)`; a bare name gets `bare`.
fn parse_partition_field(s: &str, bare: &str) -> Result<PartitionField, String> {
    let s = s.trim();
    let Some((transform, rest)) = s.split_once('(') else {
        if s.is_empty() || s.contains([')', '[', ']']) {
            return Err(format!("`{s}` is not a column name or transform"));
        }
        return Ok(PartitionField {
            column: s.to_string(),
            transform: bare.to_string(),
        });
    };
    let column = rest
        .strip_suffix(')')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| format!("`{s}`: expected transform(column)"))?;
    let transform = transform.trim().to_ascii_lowercase();
    let ok = match transform.split_once('[') {
        Some((name @ ("bucket" | "truncate"), n)) => n
            .strip_suffix(']')
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n > 0 && !name.is_empty()),
        Some(_) => false,
        None => matches!(
            transform.as_str(),
            "identity" | "year" | "month" | "day" | "hour"
        ),
    };
    if !ok {
        return Err(format!(
            "`{s}`: transform must be identity, bucket[N], truncate[W], year, month, day or hour"
        ));
    }
    Ok(PartitionField {
        column: column.to_string(),
        transform,
    })
}

/// `{topic}` and `{table}` are the only placeholders; anything else in braces is a typo.
fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`{t}`: unclosed `{{`"))?;
        match &after[..end] {
            "topic" | "table" => {}
            other => {
                return Err(format!(
                    "`{t}`: unknown placeholder `{{{other}}}` (only {{topic}} and {{table}})"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

impl Validate for IcebergConfig {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let c = &self.catalog;
        let blocks = [
            ("memory", c.memory.is_some(), CatalogKind::Memory),
            ("sql", c.sql.is_some(), CatalogKind::Sql),
            ("rest", c.rest.is_some(), CatalogKind::Rest),
            ("glue", c.glue.is_some(), CatalogKind::Glue),
            ("hive", c.hive.is_some(), CatalogKind::Hive),
        ];
        for (key, set, kind) in blocks {
            if set && c.kind != kind {
                errs.push(FieldError::new(
                    format!("catalog.{key}"),
                    format!("applies to catalog type {key} only"),
                ));
            }
            if !set && c.kind == kind {
                errs.push(FieldError::new(
                    format!("catalog.{key}"),
                    format!("catalog type {key} needs a catalog.{key} block"),
                ));
            }
        }
        if c.name().trim().is_empty() {
            errs.push(FieldError::new("catalog.name", "must not be empty"));
        }
        if let Some(r) = &c.rest {
            if r.credential.is_some() && r.token.is_some() {
                errs.push(FieldError::new(
                    "catalog.rest.token",
                    "set credential or token, not both",
                ));
            }
            if let Some(cred) = &r.credential {
                if !cred.expose().contains(':') {
                    errs.push(FieldError::new(
                        "catalog.rest.credential",
                        "expected client_id:client_secret",
                    ));
                }
            }
        }
        if let Some(s) = &c.sql {
            let uri = s.uri.expose();
            if !(uri.starts_with("sqlite:") || uri.starts_with("postgres")) {
                errs.push(FieldError::new(
                    "catalog.sql.uri",
                    "a sqlite: or postgres:// URL",
                ));
            }
        }
        if let Some(h) = &c.hive {
            if hive_address(&h.uri).is_none() {
                errs.push(FieldError::new(
                    "catalog.hive.uri",
                    "host:port of the metastore's Thrift API (optionally thrift://host:port)",
                ));
            }
        }
        if c.kind == CatalogKind::Hive && self.namespace.contains('.') {
            errs.push(FieldError::new(
                "namespace",
                "a Hive Metastore database: one level, no dots",
            ));
        }
        if let Some(w) = self.warehouse() {
            let scheme = w.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, None | Some("file" | "s3" | "s3a")) {
                errs.push(FieldError::new(
                    format!("catalog.{}.warehouse", c.kind.name()),
                    "a local directory, file:// or s3:// URL",
                ));
            }
        }
        if self.namespace.trim().is_empty() || self.namespace.split('.').any(str::is_empty) {
            errs.push(FieldError::new(
                "namespace",
                "dot-separated non-empty names",
            ));
        } else if let Err(e) = check_template(&self.namespace) {
            errs.push(FieldError::new("namespace", e));
        } else if self.namespace.contains("{table}") {
            errs.push(FieldError::new(
                "namespace",
                "may use {topic}, not {table}: the tables a restart must look at are found \
                 from the topics",
            ));
        }
        if self.table.trim().is_empty() || self.table.contains('.') {
            errs.push(FieldError::new("table", "a table name without dots"));
        } else if let Err(e) = check_template(&self.table) {
            errs.push(FieldError::new("table", e));
        }
        if self.batch_size == 0 {
            errs.push(FieldError::new("batch_size", "at least 1"));
        }
        if self.flush_interval_secs == 0 || self.flush_interval_secs > 86_400 {
            errs.push(FieldError::new(
                "flush_interval_secs",
                "between 1 and 86400",
            ));
        }
        if self.target_file_size_mb == 0 {
            errs.push(FieldError::new("target_file_size_mb", "at least 1"));
        }
        match (self.num_buckets, self.partitioning) {
            (Some(0), _) => errs.push(FieldError::new("num_buckets", "at least 1")),
            (Some(_), p) if p != Some(Partitioning::Bucket) => errs.push(FieldError::new(
                "num_buckets",
                "applies to partitioning: bucket only",
            )),
            _ => {}
        }
        if let Some(m) = &c.memory {
            if m.warehouse.contains("://") && !m.warehouse.starts_with("file://") {
                errs.push(FieldError::new(
                    "catalog.memory.warehouse",
                    "a local directory (the memory catalog finds its tables on local disk)",
                ));
            }
        }
        if let Err(e) = self.writer_properties() {
            errs.push(FieldError::new("compression_level", e));
        }
        if let Err(e) = self.partition_spec() {
            errs.push(FieldError::new("partition_fields", e));
        }
        if self.commit_mode != CommitMode::Upsert {
            if !self.key_columns.is_empty() {
                errs.push(FieldError::new(
                    "key_columns",
                    "applies to commit_mode: upsert only",
                ));
            }
            if !self.metadata_columns.is_empty() {
                errs.push(FieldError::new(
                    "metadata_columns",
                    "applies to commit_mode: upsert only (append and overwrite write the rows \
                     as they are)",
                ));
            }
        }
        for p in self.metadata_columns.problems() {
            errs.push(FieldError::new("metadata_columns", p));
        }
        if self.key_columns.iter().any(|c| c.is_empty()) {
            errs.push(FieldError::new("key_columns", "empty column name"));
        }
        if self.commit_mode == CommitMode::Upsert && !self.key_columns.is_empty() {
            if let Ok(spec) = self.partition_spec() {
                for p in spec {
                    if !self.key_columns.contains(&p.column) {
                        errs.push(FieldError::new(
                            "partition_fields",
                            format!(
                                "`{}` is not a key column: with commit_mode upsert a row's \
                                 partition must follow from its key, or an update that moves \
                                 it would leave the old row in its old partition",
                                p.column
                            ),
                        ));
                    }
                }
            }
        }
        if self.s3.is_some()
            && !self
                .warehouse()
                .is_some_and(|w| w.starts_with("s3://") || w.starts_with("s3a://"))
            && c.kind != CatalogKind::Rest
        {
            errs.push(FieldError::new("s3", "applies to s3:// warehouses only"));
        }
        errs
    }
}

/// The `host:port` of a Hive Metastore URI (`host:port` or `thrift://host:port`).
pub fn hive_address(uri: &str) -> Option<&str> {
    let a = uri
        .strip_prefix("thrift://")
        .unwrap_or(uri)
        .trim_end_matches('/');
    let (host, port) = a.rsplit_once(':')?;
    (!host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok()).then_some(a)
}

impl CatalogKind {
    /// The name as written in `catalog.type` (and as the key of its block).
    pub fn name(self) -> &'static str {
        match self {
            CatalogKind::Memory => "memory",
            CatalogKind::Sql => "sql",
            CatalogKind::Rest => "rest",
            CatalogKind::Glue => "glue",
            CatalogKind::Hive => "hive",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_fields_parse_into_iceberg_transforms() {
        let f = |s: &str| parse_partition_field(s, "identity");
        assert_eq!(f("region").unwrap().transform, "identity");
        assert_eq!(f("bucket[16](id)").unwrap().transform, "bucket[16]");
        assert_eq!(f("bucket[16](id)").unwrap().column, "id");
        assert_eq!(f("Day( ts )").unwrap().column, "ts");
        assert_eq!(f("truncate[4](name)").unwrap().transform, "truncate[4]");
        assert!(f("bucket[0](id)").is_err());
        assert!(f("bucket(id)").is_err());
        assert!(f("week(ts)").is_err());
        assert!(f("day()").is_err());
        assert!(f("x)").is_err());
    }

    fn problems(yaml: &str) -> Vec<String> {
        let base = "catalog: {type: memory, memory: {warehouse: /tmp/w}}\ntable: t\n";
        let cfg: IcebergConfig = serde_yaml::from_str(&format!("{base}{yaml}")).unwrap();
        cfg.validate().into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn upsert_keys_and_partitions_are_checked() {
        assert!(problems("commit_mode: upsert\nkey_columns: [id]\n").is_empty());
        assert!(problems("commit_mode: overwrite\npartition_fields: [day]\n").is_empty());
        assert_eq!(problems("key_columns: [id]\n"), ["key_columns"]);
        assert_eq!(
            problems("commit_mode: overwrite\nmetadata_columns: {op: op}\n"),
            ["metadata_columns"]
        );
        // A partition that does not follow from the key.
        assert_eq!(
            problems("commit_mode: upsert\nkey_columns: [id]\npartition_fields: [region]\n"),
            ["partition_fields"]
        );
        assert!(problems(
            "commit_mode: upsert\nkey_columns: [id]\npartition_fields: ['bucket[8](id)']\n"
        )
        .is_empty());
    }

    #[test]
    fn hive_uris_are_host_and_port() {
        assert_eq!(hive_address("thrift://hms:9083"), Some("hms:9083"));
        assert_eq!(hive_address("10.0.0.1:9083"), Some("10.0.0.1:9083"));
        assert_eq!(hive_address("http://hms:9083"), None);
        assert_eq!(hive_address("hms"), None);
        assert_eq!(hive_address("hms:port"), None);
        let hive = "catalog: {type: hive, hive: {uri: 'hms:9083', warehouse: /w}}\ntable: t\n";
        let cfg: IcebergConfig = serde_yaml::from_str(hive).unwrap();
        assert!(cfg.validate().is_empty());
        let cfg: IcebergConfig = serde_yaml::from_str(&format!("{hive}namespace: a.b\n")).unwrap();
        assert_eq!(
            cfg.validate()
                .into_iter()
                .map(|e| e.path)
                .collect::<Vec<_>>(),
            ["namespace"]
        );
    }

    #[test]
    fn templates_name_only_topic_and_table() {
        assert!(check_template("{topic}_{table}").is_ok());
        assert!(check_template("plain").is_ok());
        assert!(check_template("{tpoic}").unwrap_err().contains("{tpoic}"));
        assert!(check_template("{topic").is_err());
    }
}
