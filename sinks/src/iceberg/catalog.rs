//! The catalog a sink writes through, built from its `catalog` block, and the table
//! lookups the sink needs (load, or create with namespace), plus [`Tables::commit`]: the
//! metadata commit of the snapshots the sink builds itself (see [`super::commit`]), applied
//! per catalog with the optimistic check each catalog uses for its own commits.

use super::config::{CatalogKind, IcebergConfig};
use iceberg::memory::{MemoryCatalogBuilder, MEMORY_CATALOG_WAREHOUSE};
use iceberg::table::Table;
use iceberg::{
    Catalog, CatalogBuilder, MetadataLocation, NamespaceIdent, TableIdent, TableRequirement,
    TableUpdate,
};
use iceberg_catalog_glue::GlueCatalogBuilder;
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_sql::SqlCatalogBuilder;
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;
use rivven_engine::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// An Iceberg error as ours: catalog conflicts, unavailability and I/O are retryable (the
/// runtime re-delivers from the committed offsets); data and schema errors are not.
pub(super) fn ice_err(context: impl std::fmt::Display) -> impl Fn(iceberg::Error) -> Error {
    move |e| {
        use iceberg::ErrorKind as K;
        let msg = format!("iceberg: {context}: {e}");
        match e.kind() {
            K::CatalogCommitConflicts | K::Unexpected => Error::connect(msg),
            K::DataInvalid | K::FeatureUnsupported | K::PreconditionFailed => {
                Error::data(msg).retryable(false)
            }
            _ if e.retryable() => Error::connect(msg),
            _ => Error::data(msg).retryable(false),
        }
    }
}

/// A warehouse as a URL: local paths become absolute `file://` URLs.
pub(super) fn warehouse_url(w: &str) -> Result<String> {
    if w.contains("://") {
        return Ok(w.trim_end_matches('/').to_string());
    }
    let path = std::path::absolute(w).map_err(|e| Error::io(format!("iceberg: {w}"), e))?;
    Ok(format!(
        "file://{}",
        path.to_string_lossy().trim_end_matches('/')
    ))
}

/// The local directory of a `file://` URL (or plain path), if it is one.
fn local_dir(w: &str) -> Option<PathBuf> {
    match w.split_once("://") {
        None => Some(PathBuf::from(w)),
        Some(("file", p)) => Some(PathBuf::from(p)),
        Some(_) => None,
    }
}

/// The catalog handle plus what the `memory` catalog needs to find tables again.
pub struct Tables {
    catalog: Arc<dyn Catalog>,
    /// For `memory`: the warehouse directory, searched for a table's newest metadata.
    file_warehouse: Option<PathBuf>,
    /// How [`Tables::commit`] reaches the catalog.
    pointer: Pointer,
}

/// Where a catalog keeps the pointer to a table's current metadata file, for
/// [`Tables::commit`].
enum Pointer {
    /// The in-process catalog: re-registered at the new metadata file.
    Memory,
    /// The `iceberg_tables` row of a SQL catalog, swapped if it still names the base file.
    Sql {
        pool: sqlx::AnyPool,
        catalog: String,
        dollar: bool,
        /// The connection URL, blanked out of errors (it may hold a password).
        uri: rivven_engine::secret::SecretString,
    },
    /// The Glue table's `metadata_location` parameter, updated at the version read.
    Glue {
        client: aws_sdk_glue::Client,
        catalog_id: Option<String>,
    },
    /// The REST catalog's commit endpoint, which checks the requirements itself.
    Rest(Box<super::rest::RestCommits>),
    /// The Hive Metastore table's `metadata_location` parameter.
    Hive(Arc<super::hive::HiveCatalog>),
}

/// Check `requirements` against `table`, apply `updates` to its metadata and write the
/// result as the next metadata file: `(base metadata file, new metadata file)`. The
/// catalog then points the table at the new file if it still points at the base.
pub(super) async fn stage(
    table: &Table,
    requirements: Vec<TableRequirement>,
    updates: Vec<TableUpdate>,
) -> iceberg::Result<(String, String)> {
    let base = table.metadata_location_result()?.to_string();
    for r in &requirements {
        r.check(Some(table.metadata()))?;
    }
    let mut builder = table.metadata().clone().into_builder(Some(base.clone()));
    for u in updates {
        builder = u.apply(builder)?;
    }
    let metadata = builder.build()?.metadata;
    let location = MetadataLocation::from_str(&base)?
        .with_next_version()
        .with_new_metadata(&metadata);
    metadata.write_to(table.file_io(), &location).await?;
    Ok((base, location.to_string()))
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables").finish_non_exhaustive()
    }
}

impl Tables {
    /// Connect to the catalog `cfg` names. Local warehouse directories are created when
    /// `create_dirs` (not by `check`).
    pub async fn connect(cfg: &IcebergConfig, create_dirs: bool) -> Result<Tables> {
        let c = &cfg.catalog;
        let factory = Arc::new(OpenDalResolvingStorageFactory::new());
        let mut props: HashMap<String, String> =
            cfg.s3.iter().flat_map(|s| s.file_io_props()).collect();
        let missing = |key: &str| Error::config(format!("iceberg: catalog.{key} is missing"));
        let mut file_warehouse = None;
        let pointer;
        let catalog: Arc<dyn Catalog> = match c.kind {
            CatalogKind::Memory => {
                let m = c.memory.as_ref().ok_or_else(|| missing("memory"))?;
                let url = warehouse_url(&m.warehouse)?;
                let dir = local_dir(&url).ok_or_else(|| {
                    Error::config("iceberg: catalog.memory.warehouse must be a local directory")
                })?;
                ensure_dir(&dir, create_dirs)?;
                file_warehouse = Some(dir);
                props.insert(MEMORY_CATALOG_WAREHOUSE.to_string(), url);
                pointer = Pointer::Memory;
                Arc::new(
                    MemoryCatalogBuilder::default()
                        .with_storage_factory(factory)
                        .load(c.name(), props)
                        .await
                        .map_err(ice_err("open the memory catalog"))?,
                )
            }
            CatalogKind::Sql => {
                let s = c.sql.as_ref().ok_or_else(|| missing("sql"))?;
                let url = warehouse_url(&s.warehouse)?;
                if let Some(dir) = local_dir(&url) {
                    ensure_dir(&dir, create_dirs)?;
                }
                let uri = s.uri.expose().to_string();
                if let Some(path) = sqlite_file(&uri) {
                    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                        ensure_dir(parent, create_dirs)?;
                    }
                }
                // sqlx opens a missing SQLite file only with mode=rwc.
                let uri = if uri.starts_with("sqlite:") && !uri.contains("mode=") {
                    let sep = if uri.contains('?') { '&' } else { '?' };
                    format!("{uri}{sep}mode=rwc")
                } else {
                    uri
                };
                let bind = if uri.starts_with("sqlite:") {
                    "QMark"
                } else {
                    "DollarNumeric"
                };
                let connect_err = |e: &dyn std::fmt::Display| {
                    // The URL may hold a password: the error names the catalog only.
                    Error::connect(format!(
                        "iceberg: connect to the sql catalog `{}`: {}",
                        c.name(),
                        redact(&e.to_string(), s.uri.expose())
                    ))
                };
                sqlx::any::install_default_drivers();
                let pool = sqlx::any::AnyPoolOptions::new()
                    .max_connections(2)
                    .connect_lazy(&uri)
                    .map_err(|e| connect_err(&e))?;
                pointer = Pointer::Sql {
                    pool,
                    catalog: c.name().to_string(),
                    dollar: bind == "DollarNumeric",
                    uri: s.uri.clone(),
                };
                props.insert("uri".into(), uri);
                props.insert("warehouse".into(), url);
                props.insert("sql_bind_style".into(), bind.into());
                Arc::new(
                    SqlCatalogBuilder::default()
                        .with_storage_factory(factory)
                        .load(c.name(), props)
                        .await
                        .map_err(|e| connect_err(&e))?,
                )
            }
            CatalogKind::Rest => {
                let r = c.rest.as_ref().ok_or_else(|| missing("rest"))?;
                props.extend(r.extra_properties.clone());
                props.insert("uri".into(), r.uri.clone());
                let optional = [
                    ("warehouse", r.warehouse.clone()),
                    (
                        "credential",
                        r.credential.as_ref().map(|s| s.expose().to_string()),
                    ),
                    ("token", r.token.as_ref().map(|s| s.expose().to_string())),
                    ("oauth2-server-uri", r.oauth2_server_uri.clone()),
                    ("scope", r.scope.clone()),
                ];
                props.extend(
                    optional
                        .into_iter()
                        .filter_map(|(k, v)| Some((k.to_string(), v?))),
                );
                pointer = Pointer::Rest(Box::new(super::rest::RestCommits::new(r)?));
                Arc::new(
                    RestCatalogBuilder::default()
                        .with_storage_factory(factory)
                        .load(c.name(), props)
                        .await
                        .map_err(ice_err(format_args!("connect to {}", r.uri)))?,
                )
            }
            CatalogKind::Glue => {
                let g = c.glue.as_ref().ok_or_else(|| missing("glue"))?;
                let optional = [
                    ("warehouse", Some(warehouse_url(&g.warehouse)?)),
                    ("uri", g.endpoint_url.clone()),
                    ("catalog_id", g.catalog_id.clone()),
                    ("region_name", g.region.clone()),
                    ("aws_access_key_id", g.access_key_id.clone()),
                    (
                        "aws_secret_access_key",
                        g.secret_access_key.as_ref().map(|s| s.expose().to_string()),
                    ),
                    (
                        "aws_session_token",
                        g.session_token.as_ref().map(|s| s.expose().to_string()),
                    ),
                    ("profile_name", g.profile.clone()),
                ];
                for (k, v) in optional {
                    if let Some(v) = v {
                        props.entry(k.to_string()).or_insert(v);
                    }
                }
                pointer = Pointer::Glue {
                    client: glue_client(g).await,
                    catalog_id: g.catalog_id.clone(),
                };
                Arc::new(
                    GlueCatalogBuilder::default()
                        .with_storage_factory(factory)
                        .load(c.name(), props)
                        .await
                        .map_err(ice_err("connect to Glue"))?,
                )
            }
            CatalogKind::Hive => {
                let h = c.hive.as_ref().ok_or_else(|| missing("hive"))?;
                props.insert("warehouse".into(), warehouse_url(&h.warehouse)?);
                let hive = Arc::new(
                    super::hive::HiveCatalog::connect(
                        c.name(),
                        super::config::hive_address(&h.uri).unwrap_or(&h.uri),
                        props,
                        factory,
                    )
                    .await
                    .map_err(ice_err(format_args!(
                        "connect to the Hive Metastore {}",
                        h.uri
                    )))?,
                );
                pointer = Pointer::Hive(hive.clone());
                hive
            }
        };
        Ok(Tables {
            catalog,
            file_warehouse,
            pointer,
        })
    }

    /// Commit `updates` to `table` (as loaded before the snapshot was built) when
    /// `requirements` hold, and return the table as committed. A concurrent commit to the
    /// table fails this one as a retryable conflict; nothing is half-applied (a metadata
    /// file written for a commit that loses is never referenced).
    pub async fn commit(
        &self,
        table: &Table,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<Table> {
        let ident = table.identifier();
        if let Pointer::Rest(rest) = &self.pointer {
            rest.commit(ident, requirements, updates).await?;
        } else {
            let (base, new) = stage(table, requirements, updates)
                .await
                .map_err(ice_err(format_args!("commit to {ident}")))?;
            self.swap(ident, &base, &new).await?;
        }
        self.load(ident)
            .await?
            .ok_or_else(|| Error::state(format!("iceberg: {ident} vanished after a commit")))
    }

    /// Point `ident` at metadata file `new` if it still points at `base`.
    async fn swap(&self, ident: &TableIdent, base: &str, new: &str) -> Result<()> {
        let conflict = || {
            Error::connect(format!(
                "iceberg: commit to {ident} conflicted with another writer's; retrying from \
                 the committed offsets"
            ))
        };
        match &self.pointer {
            Pointer::Memory => {
                let current = self
                    .catalog
                    .load_table(ident)
                    .await
                    .map_err(ice_err(format_args!("load {ident}")))?;
                if current.metadata_location() != Some(base) {
                    return Err(conflict());
                }
                self.catalog
                    .drop_table(ident)
                    .await
                    .map_err(ice_err(format_args!("re-register {ident}")))?;
                self.catalog
                    .register_table(ident, new.to_string())
                    .await
                    .map_err(ice_err(format_args!("re-register {ident}")))?;
            }
            Pointer::Sql {
                pool,
                catalog,
                dollar,
                uri,
            } => {
                let p = |i: usize| if *dollar { format!("${i}") } else { "?".into() };
                let sql = format!(
                    "UPDATE iceberg_tables SET metadata_location = {}, \
                     previous_metadata_location = {} WHERE catalog_name = {} \
                     AND table_namespace = {} AND table_name = {} AND metadata_location = {}",
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    p(5),
                    p(6)
                );
                let done = sqlx::query(&sql)
                    .bind(new)
                    .bind(base)
                    .bind(catalog.as_str())
                    .bind(ident.namespace().join("."))
                    .bind(ident.name())
                    .bind(base)
                    .execute(pool)
                    .await
                    .map_err(|e| {
                        Error::connect(format!(
                            "iceberg: commit to {ident} in the sql catalog: {}",
                            redact(&e.to_string(), uri.expose())
                        ))
                    })?;
                if done.rows_affected() != 1 {
                    return Err(conflict());
                }
            }
            Pointer::Glue { client, catalog_id } => {
                glue_swap(client, catalog_id.as_deref(), ident, base, new)
                    .await?
                    .then_some(())
                    .ok_or_else(conflict)?;
            }
            Pointer::Hive(hive) => {
                hive.swap(ident, base, new)
                    .await
                    .map_err(ice_err(format_args!("commit to {ident}")))?
                    .then_some(())
                    .ok_or_else(conflict)?;
            }
            Pointer::Rest(_) => return Err(Error::internal("iceberg: REST commits post updates")),
        }
        Ok(())
    }

    /// The catalog.
    pub fn catalog(&self) -> &dyn Catalog {
        self.catalog.as_ref()
    }

    /// The table `ident`, or `None` when the catalog has none by that name. A `memory`
    /// catalog first registers the newest metadata file found under the warehouse.
    pub async fn load(&self, ident: &TableIdent) -> Result<Option<iceberg::table::Table>> {
        // Some catalogs answer "no such namespace" rather than "no".
        let exists = self
            .catalog
            .namespace_exists(ident.namespace())
            .await
            .map_err(ice_err(format_args!("look up {ident}")))?
            && self
                .catalog
                .table_exists(ident)
                .await
                .map_err(ice_err(format_args!("look up {ident}")))?;
        if exists {
            let t = self
                .catalog
                .load_table(ident)
                .await
                .map_err(ice_err(format_args!("load {ident}")))?;
            return Ok(Some(t));
        }
        let Some(dir) = &self.file_warehouse else {
            return Ok(None);
        };
        let mut table_dir = dir.clone();
        table_dir.extend(ident.namespace().iter());
        table_dir.push(ident.name());
        let Some(metadata) = newest_metadata(&table_dir.join("metadata"))? else {
            return Ok(None);
        };
        self.ensure_namespace(ident.namespace()).await?;
        let t = self
            .catalog
            .register_table(ident, format!("file://{}", metadata.display()))
            .await
            .map_err(ice_err(format_args!("register {ident}")))?;
        Ok(Some(t))
    }

    /// Create `namespace` when it does not exist.
    pub async fn ensure_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        let exists = self
            .catalog
            .namespace_exists(namespace)
            .await
            .map_err(ice_err(format_args!("look up namespace {namespace:?}")))?;
        if !exists {
            match self
                .catalog
                .create_namespace(namespace, HashMap::new())
                .await
            {
                Ok(_) => {}
                // Created meanwhile by another writer.
                Err(e) if e.kind() == iceberg::ErrorKind::NamespaceAlreadyExists => {}
                Err(e) => return Err(ice_err(format_args!("create namespace {namespace:?}"))(e)),
            }
        }
        Ok(())
    }
}

/// A Glue client configured as iceberg-catalog-glue configures its own from the same keys.
async fn glue_client(g: &super::config::GlueCatalog) -> aws_sdk_glue::Client {
    use aws_config::BehaviorVersion;
    let mut config = aws_config::defaults(BehaviorVersion::latest());
    if let Some(e) = &g.endpoint_url {
        config = config.endpoint_url(e);
    }
    if let Some(r) = &g.region {
        config = config.region(aws_config::Region::new(r.clone()));
    }
    if let Some(p) = &g.profile {
        config = config.profile_name(p);
    }
    if let (Some(id), Some(secret)) = (&g.access_key_id, &g.secret_access_key) {
        config = config.credentials_provider(aws_sdk_glue::config::Credentials::new(
            id,
            secret.expose(),
            g.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "rivven-connect",
        ));
    }
    aws_sdk_glue::Client::new(&config.load().await)
}

/// Set the Glue table's `metadata_location` to `new` if it is `base`, at the table version
/// read (Glue refuses an update at a stale version). `false`: another writer moved it.
async fn glue_swap(
    client: &aws_sdk_glue::Client,
    catalog_id: Option<&str>,
    ident: &TableIdent,
    base: &str,
    new: &str,
) -> Result<bool> {
    use aws_sdk_glue::types::TableInput;
    let database = ident.namespace().join(".");
    let glue_err = |e: &dyn std::fmt::Display| {
        Error::connect(format!("iceberg: commit to {ident} in Glue: {e}"))
    };
    let got = client
        .get_table()
        .set_catalog_id(catalog_id.map(str::to_string))
        .database_name(&database)
        .name(ident.name())
        .send()
        .await
        .map_err(|e| glue_err(&aws_sdk_glue::error::DisplayErrorContext(e)))?;
    let t = got
        .table()
        .ok_or_else(|| Error::state(format!("iceberg: Glue has no table {ident}")))?;
    let mut parameters = t.parameters().cloned().unwrap_or_default();
    if parameters.get("metadata_location").map(String::as_str) != Some(base) {
        return Ok(false);
    }
    parameters.insert("metadata_location".into(), new.to_string());
    parameters.insert("previous_metadata_location".into(), base.to_string());
    let input = TableInput::builder()
        .name(t.name())
        .set_description(t.description().map(str::to_string))
        .set_owner(t.owner().map(str::to_string))
        .set_table_type(t.table_type().map(str::to_string))
        .set_storage_descriptor(t.storage_descriptor().cloned())
        .set_partition_keys(Some(t.partition_keys().to_vec()))
        .set_parameters(Some(parameters))
        .build()
        .map_err(|e| glue_err(&e))?;
    let sent = client
        .update_table()
        .set_catalog_id(catalog_id.map(str::to_string))
        .database_name(&database)
        .table_input(input)
        .set_version_id(t.version_id().map(str::to_string))
        .skip_archive(true)
        .send()
        .await;
    match sent {
        Ok(_) => Ok(true),
        Err(e) => match e.into_service_error() {
            aws_sdk_glue::operation::update_table::UpdateTableError::ConcurrentModificationException(_) => Ok(false),
            e => Err(glue_err(&aws_sdk_glue::error::DisplayErrorContext(e))),
        },
    }
}

/// The database file of a `sqlite:` catalog URL.
pub(super) fn sqlite_file(uri: &str) -> Option<PathBuf> {
    let path = uri
        .strip_prefix("sqlite://")
        .or(uri.strip_prefix("sqlite:"))?;
    Some(PathBuf::from(path.split('?').next().unwrap_or(path)))
}

fn ensure_dir(dir: &Path, create: bool) -> Result<()> {
    if create {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("iceberg: create {}", dir.display()), e))?;
    }
    Ok(())
}

/// `msg` with `secret` (and its password, if it is a URL with one in its user info or a
/// `password` query parameter, as given and percent-decoded) blanked out.
fn redact(msg: &str, secret: &str) -> String {
    let mut out = msg.replace(secret, "<redacted>");
    if let Ok(u) = url::Url::parse(secret) {
        // The password as written (percent-encoded) and as decoded.
        let mut passwords: Vec<String> = u.password().map(str::to_string).into_iter().collect();
        for pair in u.query().unwrap_or("").split('&') {
            if let Some((k, v)) = pair.split_once('=') {
                if k.eq_ignore_ascii_case("password") {
                    passwords.push(v.to_string());
                }
            }
        }
        let decoded: Vec<String> = passwords
            .iter()
            .filter_map(|p| {
                let pair = format!("p={p}");
                url::form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            })
            .collect();
        for p in passwords
            .into_iter()
            .chain(decoded)
            .filter(|p| !p.is_empty())
        {
            out = out.replace(&p, "<redacted>");
        }
    }
    out
}

/// The metadata file with the highest version (`NNNNN-<uuid>.metadata.json`) in `dir`.
fn newest_metadata(dir: &Path) -> Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("iceberg: list {}", dir.display()), e)),
    };
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("iceberg: list {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(".metadata.json") && !name.ends_with(".metadata.json.gz") {
            continue;
        }
        let Some(version) = name
            .split_once('-')
            .and_then(|(v, _)| v.parse::<u64>().ok())
        else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| version > *b) {
            best = Some((version, entry.path()));
        }
    }
    Ok(best.map(|(_, p)| p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_metadata_is_the_highest_version() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "00000-a.metadata.json",
            "00002-c.metadata.json",
            "00001-b.metadata.json",
            "snap-1.avro",
        ] {
            std::fs::write(dir.path().join(name), "{}").unwrap();
        }
        let newest = newest_metadata(dir.path()).unwrap().unwrap();
        assert!(newest.ends_with("00002-c.metadata.json"));
        assert!(newest_metadata(&dir.path().join("missing"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn redact_hides_the_url_and_its_password() {
        let uri = "postgres://u:hunter2@127.0.0.1/db";
        let msg = format!("failed: {uri}; password hunter2 rejected");
        let r = redact(&msg, uri);
        assert!(!r.contains("hunter2"), "{r}");
        let uri = "postgres://127.0.0.1/db?user=u&password=s%3Acret";
        let r = redact("auth failed for s:cret and s%3Acret", uri);
        assert!(!r.contains("cret"), "{r}");
    }
}
