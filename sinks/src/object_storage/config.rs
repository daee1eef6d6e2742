//! Configuration of the object-storage sinks (`object-storage`, `s3`, `gcs`, `azure-blob`).

use crate::format::{AvroOptions, Compression, CsvOptions, Format, FormatOptions, ParquetOptions};
use rivven_engine::config::{FieldError, Validate};
use rivven_engine::secret::SecretString;
use schemars::JsonSchema;
use serde::Deserialize;

/// Where objects are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Amazon S3 and S3-compatible servers (MinIO, R2, Ceph).
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
    /// A local (or mounted) directory.
    Local,
}

impl Provider {
    /// The name used in config keys and messages.
    pub fn name(self) -> &'static str {
        match self {
            Provider::S3 => "s3",
            Provider::Gcs => "gcs",
            Provider::Azure => "azure",
            Provider::Local => "local",
        }
    }
}

/// How objects are grouped into directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Partitioning {
    /// `<prefix><topic>/`.
    #[default]
    None,
    /// `<prefix><topic>/dt=YYYY-MM-DD/`.
    #[serde(alias = "daily")]
    Day,
    /// `<prefix><topic>/dt=YYYY-MM-DD/hour=HH/`.
    #[serde(alias = "hourly")]
    Hour,
    /// `<prefix><topic>/<field>=<value>/...` for each of `partition_fields`.
    Field,
}

/// `s3:` options.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    /// AWS region (default: from the environment, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// Custom endpoint (MinIO, R2, Ceph), e.g. `http://127.0.0.1:9000`.
    #[serde(default, alias = "endpoint")]
    pub endpoint_url: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`, default true); false for virtual-hosted
    /// style (`bucket.endpoint/key`).
    #[serde(default = "yes", alias = "path_style")]
    pub force_path_style: bool,
    /// Static access key id; without it the default AWS credential chain is used
    /// (environment, web identity, ECS/EC2 instance metadata).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Static secret access key (with `access_key_id`).
    #[serde(default)]
    pub secret_access_key: Option<SecretString>,
    /// Session token for temporary credentials.
    #[serde(default)]
    pub session_token: Option<SecretString>,
    /// Allow plain HTTP (default: true when `endpoint_url` starts with `http://`).
    #[serde(default)]
    pub allow_http: Option<bool>,
}

/// `gcs:` options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GcsOptions {
    /// Service-account JSON file.
    #[serde(default, alias = "service_account_path")]
    pub credentials_file: Option<String>,
    /// Use Application Default Credentials when no `credentials_file` is given (default
    /// true).
    #[serde(default = "yes")]
    pub use_adc: bool,
    /// Custom endpoint (a GCS emulator).
    #[serde(default, alias = "endpoint")]
    pub endpoint_url: Option<String>,
}

impl Default for GcsOptions {
    fn default() -> Self {
        GcsOptions {
            credentials_file: None,
            use_adc: true,
            endpoint_url: None,
        }
    }
}

/// `azure:` options.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AzureOptions {
    /// Storage account name.
    #[serde(default, alias = "account")]
    pub account_name: Option<String>,
    /// Shared account key; without a key or SAS token, the default Azure credential chain
    /// (environment, managed identity, workload identity) is used.
    #[serde(default)]
    pub access_key: Option<SecretString>,
    /// SAS token (query string).
    #[serde(default)]
    pub sas_token: Option<SecretString>,
    /// Custom endpoint, e.g. `https://<account>.blob.core.windows.net`.
    #[serde(default, alias = "endpoint")]
    pub endpoint_url: Option<String>,
    /// Use the Azurite emulator (its well-known account and key unless given; the address
    /// comes from `AZURITE_BLOB_STORAGE_URL`, default `http://127.0.0.1:10000`).
    #[serde(default)]
    pub use_emulator: bool,
}

/// `local:` options.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalOptions {
    /// The directory objects are written under.
    #[serde(alias = "path")]
    pub root: String,
}

fn yes() -> bool {
    true
}

/// `key: value` options in `object_store`'s configuration keys: the one mapping of these
/// blocks, used for the object-storage sinks' stores and handed to delta-rs as its
/// storage options.
pub type StoreOptions = Vec<(&'static str, String)>;

fn allow_http(endpoint: Option<&String>, explicit: Option<bool>) -> Option<String> {
    explicit
        .or(endpoint.map(|ep| ep.starts_with("http://")))
        .map(|h| h.to_string())
}

impl S3Options {
    /// These options as `object_store` configuration keys (see [`StoreOptions`]).
    pub fn store_options(&self) -> StoreOptions {
        let mut o = vec![(
            "aws_virtual_hosted_style_request",
            (!self.force_path_style).to_string(),
        )];
        let fields = [
            ("aws_region", self.region.clone()),
            ("aws_endpoint", self.endpoint_url.clone()),
            (
                "aws_allow_http",
                allow_http(self.endpoint_url.as_ref(), self.allow_http),
            ),
            ("aws_access_key_id", self.access_key_id.clone()),
            (
                "aws_secret_access_key",
                self.secret_access_key
                    .as_ref()
                    .map(|k| k.expose().to_string()),
            ),
            (
                "aws_session_token",
                self.session_token.as_ref().map(|t| t.expose().to_string()),
            ),
        ];
        o.extend(fields.into_iter().filter_map(|(k, v)| Some((k, v?))));
        o
    }
}

impl GcsOptions {
    /// These options as `object_store` configuration keys (see [`StoreOptions`]);
    /// `use_adc` is not one: it decides whether the environment is read at all.
    pub fn store_options(&self) -> StoreOptions {
        let fields = [
            ("google_service_account", self.credentials_file.clone()),
            ("google_base_url", self.endpoint_url.clone()),
            ("allow_http", allow_http(self.endpoint_url.as_ref(), None)),
        ];
        fields
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect()
    }
}

impl AzureOptions {
    /// These options as `object_store` configuration keys (see [`StoreOptions`]).
    pub fn store_options(&self) -> StoreOptions {
        let fields = [
            ("azure_storage_account_name", self.account_name.clone()),
            (
                "azure_storage_account_key",
                self.access_key.as_ref().map(|k| k.expose().to_string()),
            ),
            (
                "azure_storage_sas_key",
                self.sas_token.as_ref().map(|s| s.expose().to_string()),
            ),
            ("azure_storage_endpoint", self.endpoint_url.clone()),
            ("allow_http", allow_http(self.endpoint_url.as_ref(), None)),
            (
                "azure_storage_use_emulator",
                Some(self.use_emulator.to_string()),
            ),
        ];
        fields
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect()
    }
}

fn default_batch_size() -> u64 {
    1000
}

fn default_max_file_bytes() -> u64 {
    128 << 20
}

fn default_flush_interval() -> u64 {
    60
}

fn default_part_size() -> u64 {
    8 << 20
}

/// The longest file age limit accepted (one year).
const MAX_FLUSH_INTERVAL_SECS: u64 = 365 * 86_400;

fn default_open_files() -> usize {
    64
}

fn default_concurrency() -> usize {
    4
}

/// Configuration shared by `object-storage`, `s3`, `gcs` and `azure-blob`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectStorageConfig {
    /// `s3`, `gcs`, `azure` or `local` (required by `object-storage`; implied by the other
    /// connector names).
    #[serde(default)]
    pub provider: Option<Provider>,
    /// Bucket (S3, GCS) or container (Azure).
    #[serde(default, alias = "container")]
    pub bucket: Option<String>,
    /// Key prefix, e.g. `events/`.
    #[serde(default)]
    pub prefix: String,
    /// `jsonl`, `json`, `csv`, `parquet` or `avro` (default `jsonl`; `json` for `s3`).
    #[serde(default)]
    pub format: Option<Format>,
    /// Output compression of text formats: `none`, `gzip`, `zstd`, `snappy`, `lz4`.
    #[serde(default)]
    pub compression: Compression,
    /// `none`, `day` (`daily`), `hour` (`hourly`) or `field`.
    #[serde(default)]
    pub partitioning: Partitioning,
    /// Columns (dotted paths into structs, e.g. `after.region`) that name directories with
    /// `partitioning: field`.
    #[serde(default)]
    pub partition_fields: Vec<String>,
    /// Column whose time (timestamp, date, or epoch milliseconds) picks the day/hour
    /// directory; default: the time each row was appended to the topic.
    #[serde(default)]
    pub timestamp_field: Option<String>,
    /// Rows per file before it is rolled (default 1000).
    #[serde(default = "default_batch_size")]
    pub batch_size: u64,
    /// Bytes per file before it is rolled (default 128 MiB).
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Seconds a file stays open before it is rolled (default 60).
    #[serde(default = "default_flush_interval", alias = "flush_interval_seconds")]
    pub flush_interval_secs: u64,
    /// Multipart part size in bytes (default 8 MiB; at least 5 MiB for cloud providers).
    /// Files larger than one part are uploaded in parts while being written.
    #[serde(default = "default_part_size")]
    pub part_size_bytes: u64,
    /// Parts and objects uploaded at once (default 4).
    #[serde(default = "default_concurrency")]
    pub max_concurrent_uploads: usize,
    /// Files open at once (default 64; one per directory and topic partition). Opening one
    /// more closes the oldest and flushes, which bounds memory with many partitions.
    #[serde(default = "default_open_files")]
    pub max_open_files: usize,
    /// Parquet options (`format: parquet`).
    #[serde(default)]
    pub parquet: Option<ParquetOptions>,
    /// Avro options (`format: avro`).
    #[serde(default)]
    pub avro: Option<AvroOptions>,
    /// CSV options (`format: csv`).
    #[serde(default)]
    pub csv: Option<CsvOptions>,
    /// S3 options.
    #[serde(default)]
    pub s3: Option<S3Options>,
    /// GCS options.
    #[serde(default)]
    pub gcs: Option<GcsOptions>,
    /// Azure options.
    #[serde(default)]
    pub azure: Option<AzureOptions>,
    /// Local directory options.
    #[serde(default)]
    pub local: Option<LocalOptions>,
    /// Flat form of `s3.region` (the `s3` connector's typed config).
    #[serde(default)]
    pub region: Option<String>,
    /// Flat form of `s3.endpoint_url` / `gcs.endpoint_url` / `azure.endpoint_url`.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Flat form of `gcs.credentials_file`.
    #[serde(default)]
    pub credentials_file: Option<String>,
    /// Flat form of `gcs.use_adc`.
    #[serde(default)]
    pub use_adc: Option<bool>,
    /// Flat form of `azure.account_name`.
    #[serde(default)]
    pub account_name: Option<String>,
}

/// A config resolved for one connector name: provider fixed, flat keys folded into the
/// provider block, defaults applied.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The provider.
    pub provider: Provider,
    /// The raw config (provider blocks filled in).
    pub config: ObjectStorageConfig,
    /// The format options.
    pub format: FormatOptions,
}

/// Every check depends on the provider, which the connector name may imply: they run in
/// [`ObjectStorageConfig::resolve`], called by the connector's own `validate`.
impl Validate for ObjectStorageConfig {}

impl ObjectStorageConfig {
    /// Resolve for connector `connector` (whose name may imply the provider), or list what
    /// is wrong, with paths relative to `config`.
    pub fn resolve(mut self, connector: &str) -> Result<Resolved, Vec<FieldError>> {
        let mut errs = Vec::new();
        let implied = match connector {
            "s3" => Some(Provider::S3),
            "gcs" => Some(Provider::Gcs),
            "azure-blob" => Some(Provider::Azure),
            _ => None,
        };
        let provider = match (implied, self.provider) {
            (Some(i), Some(p)) if i != p => {
                errs.push(FieldError::new(
                    "provider",
                    format!(
                        "connector `{connector}` writes to {}; remove `provider` or use \
                         `connector: object-storage`",
                        i.name()
                    ),
                ));
                i
            }
            (Some(i), _) => i,
            (None, Some(p)) => p,
            (None, None) => {
                errs.push(FieldError::new(
                    "provider",
                    "required: one of s3, gcs, azure, local",
                ));
                return Err(errs);
            }
        };
        self.fold_flat_keys(provider, &mut errs);
        // Only the chosen provider's block may be present.
        for (key, present) in [
            ("s3", self.s3.is_some()),
            ("gcs", self.gcs.is_some()),
            ("azure", self.azure.is_some()),
            ("local", self.local.is_some()),
        ] {
            if present && key != provider.name() {
                errs.push(FieldError::new(
                    key,
                    format!("applies to provider {key}, not {}", provider.name()),
                ));
            }
        }
        match provider {
            Provider::Local => {
                if self.bucket.is_some() {
                    errs.push(FieldError::new(
                        "bucket",
                        "not used by the local provider; set local.root",
                    ));
                }
                match &self.local {
                    Some(l) if !l.root.is_empty() => {}
                    _ => errs.push(FieldError::new("local.root", "required for provider local")),
                }
            }
            _ => {
                if self.bucket.as_deref().is_none_or(str::is_empty) {
                    let what = if provider == Provider::Azure {
                        "container"
                    } else {
                        "bucket"
                    };
                    errs.push(FieldError::new(
                        what,
                        format!("required for provider {}", provider.name()),
                    ));
                }
                if self.part_size_bytes < 5 << 20 {
                    errs.push(FieldError::new(
                        "part_size_bytes",
                        "must be at least 5242880 (5 MiB) for cloud object stores",
                    ));
                } else if self.max_file_bytes / self.part_size_bytes >= 10_000 {
                    errs.push(FieldError::new(
                        "max_file_bytes",
                        "needs more than 10000 parts of part_size_bytes, the multipart limit of \
                         cloud object stores; lower it or raise part_size_bytes",
                    ));
                }
            }
        }
        if let Some(g) = &self.gcs {
            if !g.use_adc && g.credentials_file.is_none() && g.endpoint_url.is_none() {
                errs.push(FieldError::new(
                    "gcs.use_adc",
                    "false without gcs.credentials_file leaves no credentials",
                ));
            }
        }
        if let Some(a) = &self.azure {
            if a.use_emulator && a.endpoint_url.is_some() {
                errs.push(FieldError::new(
                    "azure.endpoint_url",
                    "not used with use_emulator; the emulator address comes from \
                     AZURITE_BLOB_STORAGE_URL",
                ));
            }
            if !a.use_emulator && a.account_name.is_none() {
                errs.push(FieldError::new(
                    "azure.account_name",
                    "required for provider azure",
                ));
            }
        }
        let format = self.format.unwrap_or(if connector == "s3" {
            Format::Json
        } else {
            Format::Jsonl
        });
        if !format.is_text() && self.compression != Compression::None {
            errs.push(FieldError::new(
                "compression",
                format!(
                    "applies to jsonl, json and csv; {} compresses internally (use {})",
                    format.name(),
                    if format == Format::Parquet {
                        "parquet.compression"
                    } else {
                        "avro.codec"
                    }
                ),
            ));
        }
        for (key, present, owner) in [
            ("parquet", self.parquet.is_some(), Format::Parquet),
            ("avro", self.avro.is_some(), Format::Avro),
            ("csv", self.csv.is_some(), Format::Csv),
        ] {
            if present && format != owner {
                errs.push(FieldError::new(
                    key,
                    format!("applies to format {key}, but format is {}", format.name()),
                ));
            }
        }
        if let Some(p) = &self.parquet {
            if let Err(m) = p.properties() {
                errs.push(FieldError::new("parquet", m));
            }
        }
        match self.partitioning {
            Partitioning::Field if self.partition_fields.is_empty() => errs.push(FieldError::new(
                "partition_fields",
                "required with partitioning: field (list at least one column)",
            )),
            Partitioning::Field => {}
            _ if !self.partition_fields.is_empty() => errs.push(FieldError::new(
                "partition_fields",
                "applies to partitioning: field",
            )),
            _ => {}
        }
        if self.timestamp_field.is_some()
            && !matches!(self.partitioning, Partitioning::Day | Partitioning::Hour)
        {
            errs.push(FieldError::new(
                "timestamp_field",
                "applies to partitioning: day or hour",
            ));
        }
        if self.flush_interval_secs > MAX_FLUSH_INTERVAL_SECS {
            errs.push(FieldError::new(
                "flush_interval_secs",
                format!("at most {MAX_FLUSH_INTERVAL_SECS} (one year)"),
            ));
        }
        for (key, v) in [
            ("batch_size", self.batch_size),
            ("max_file_bytes", self.max_file_bytes),
            ("flush_interval_secs", self.flush_interval_secs),
            ("part_size_bytes", self.part_size_bytes),
            ("max_concurrent_uploads", self.max_concurrent_uploads as u64),
            ("max_open_files", self.max_open_files as u64),
        ] {
            if v == 0 {
                errs.push(FieldError::new(key, "must be at least 1"));
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let format = FormatOptions {
            format,
            compression: self.compression,
            parquet: self.parquet.clone().unwrap_or_default(),
            avro: self.avro.clone().unwrap_or_default(),
            csv: self.csv.clone().unwrap_or_default(),
        };
        Ok(Resolved {
            provider,
            config: self,
            format,
        })
    }

    /// Move the typed connectors' flat keys into the provider block.
    fn fold_flat_keys(&mut self, provider: Provider, errs: &mut Vec<FieldError>) {
        fn put<T>(slot: &mut Option<T>, v: Option<T>, key: &str, errs: &mut Vec<FieldError>) {
            if let Some(v) = v {
                if slot.is_some() {
                    errs.push(FieldError::new(
                        key,
                        "given both flat and inside the provider block; keep one",
                    ));
                } else {
                    *slot = Some(v);
                }
            }
        }
        let wrong = |key: &str, errs: &mut Vec<FieldError>| {
            errs.push(FieldError::new(
                key,
                format!("does not apply to provider {}", provider.name()),
            ))
        };
        let region = self.region.take();
        let endpoint = self.endpoint_url.take();
        let creds = self.credentials_file.take();
        let adc = self.use_adc.take();
        let account = self.account_name.take();
        match provider {
            Provider::S3 => {
                let s3 = self.s3.get_or_insert_with(S3Options::default_path_style);
                put(&mut s3.region, region.clone(), "region", errs);
                put(&mut s3.endpoint_url, endpoint, "endpoint_url", errs);
            }
            Provider::Gcs => {
                let gcs = self.gcs.get_or_insert_with(GcsOptions::default);
                put(
                    &mut gcs.credentials_file,
                    creds.clone(),
                    "credentials_file",
                    errs,
                );
                put(
                    &mut gcs.endpoint_url,
                    endpoint.clone(),
                    "endpoint_url",
                    errs,
                );
                if let Some(a) = adc {
                    gcs.use_adc = a;
                }
            }
            Provider::Azure => {
                let az = self.azure.get_or_insert_with(AzureOptions::default);
                put(&mut az.account_name, account.clone(), "account_name", errs);
                put(&mut az.endpoint_url, endpoint.clone(), "endpoint_url", errs);
            }
            Provider::Local => {
                if endpoint.is_some() {
                    wrong("endpoint_url", errs);
                }
            }
        }
        if provider != Provider::S3 && region.is_some() {
            wrong("region", errs);
        }
        if provider != Provider::Gcs {
            if creds.is_some() {
                wrong("credentials_file", errs);
            }
            if adc.is_some() {
                wrong("use_adc", errs);
            }
        }
        if provider != Provider::Azure && account.is_some() {
            wrong("account_name", errs);
        }
    }
}

impl S3Options {
    fn default_path_style() -> Self {
        S3Options {
            force_path_style: true,
            ..S3Options::default()
        }
    }
}
