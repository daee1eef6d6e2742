//! The `hive` catalog: iceberg-catalog-hms (0.10) for namespaces, table lookups and table
//! creation, wrapped so that commits work: iceberg-catalog-hms 0.10 answers every table
//! update with "not supported". A commit here writes the new metadata file, then moves
//! the Hive table's `metadata_location` parameter to it with the metastore's
//! `alter_table`, after reading the table and checking that the parameter still names the
//! base file. The Hive Metastore API before Hive 4 has no conditional alter, so two writers
//! racing between that read and the alter can lose one commit: give each table one writer.
//!
//! Not tested against a Hive Metastore (none runs here): the configuration and the errors
//! of an unreachable metastore are.

use hive_metastore::{ThriftHiveMetastoreClient, ThriftHiveMetastoreClientBuilder};
use iceberg::table::Table;
use iceberg::{
    Catalog, CatalogBuilder, Error, ErrorKind, Namespace, NamespaceIdent, Result, TableCommit,
    TableCreation, TableIdent,
};
use iceberg_catalog_hms::{HmsCatalog, HmsCatalogBuilder};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;
use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use volo_thrift::MaybeException;

/// The Hive table parameter that points at the current metadata file.
const METADATA_LOCATION: &str = "metadata_location";
const PREVIOUS_METADATA_LOCATION: &str = "previous_metadata_location";

/// iceberg-catalog-hms plus a metastore client of our own for commits.
pub struct HiveCatalog {
    inner: HmsCatalog,
    client: ThriftHiveMetastoreClient,
    /// `host:port`, named in errors.
    address: String,
}

impl std::fmt::Debug for HiveCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HiveCatalog").finish_non_exhaustive()
    }
}

fn thrift_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("hive metastore: {what}: {e:?}"),
    )
}

impl HiveCatalog {
    /// Connect to the metastore at `uri` (`host:port`, buffered transport) with the
    /// catalog properties `props` (warehouse, FileIO settings).
    pub async fn connect(
        name: &str,
        uri: &str,
        mut props: HashMap<String, String>,
        factory: Arc<OpenDalResolvingStorageFactory>,
    ) -> Result<HiveCatalog> {
        let address = uri
            .to_socket_addrs()
            .map_err(|e| {
                Error::new(
                    ErrorKind::DataInvalid,
                    format!("catalog.hive.uri `{uri}` is not a reachable host:port: {e}"),
                )
            })?
            .next()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::DataInvalid,
                    format!("catalog.hive.uri `{uri}` resolves to no address"),
                )
            })?;
        props.insert("uri".into(), uri.to_string());
        let inner = HmsCatalogBuilder::default()
            .with_storage_factory(factory)
            .load(name, props)
            .await?;
        let client = ThriftHiveMetastoreClientBuilder::new("hms")
            .address(address)
            .make_codec(volo_thrift::codec::default::DefaultMakeCodec::buffered())
            .build();
        Ok(HiveCatalog {
            inner,
            client,
            address: uri.to_string(),
        })
    }

    /// `r` with the metastore's address in its error.
    fn at<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| e.with_context("metastore", &self.address))
    }

    /// Point `ident` at metadata file `new` if it still points at `base`. `false`: it no
    /// longer does (another writer committed).
    pub async fn swap(&self, ident: &TableIdent, base: &str, new: &str) -> Result<bool> {
        let [db] = ident.namespace().as_ref().as_slice() else {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!(
                    "hive namespaces have one level, not {:?}",
                    ident.namespace()
                ),
            ));
        };
        let mut table = match self
            .client
            .get_table(db.clone().into(), ident.name().to_string().into())
            .await
            .map_err(|e| thrift_err("get_table", e))?
        {
            MaybeException::Ok(t) => t,
            MaybeException::Exception(e) => return Err(thrift_err("get_table", e)),
        };
        let parameters = table.parameters.get_or_insert_with(Default::default);
        if parameters.get(METADATA_LOCATION).map(|v| v.as_str()) != Some(base) {
            return Ok(false);
        }
        parameters.insert(METADATA_LOCATION.into(), new.to_string().into());
        parameters.insert(PREVIOUS_METADATA_LOCATION.into(), base.to_string().into());
        match self
            .client
            .alter_table(db.clone().into(), ident.name().to_string().into(), table)
            .await
            .map_err(|e| thrift_err("alter_table", e))?
        {
            MaybeException::Ok(()) => Ok(true),
            MaybeException::Exception(e) => Err(thrift_err("alter_table", e)),
        }
    }
}

#[async_trait::async_trait]
impl Catalog for HiveCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>> {
        self.at(self.inner.list_namespaces(parent).await)
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<Namespace> {
        self.at(self.inner.create_namespace(namespace, properties).await)
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> Result<Namespace> {
        self.at(self.inner.get_namespace(namespace).await)
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> Result<bool> {
        self.at(self.inner.namespace_exists(namespace).await)
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        self.at(self.inner.update_namespace(namespace, properties).await)
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        self.at(self.inner.drop_namespace(namespace).await)
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.at(self.inner.list_tables(namespace).await)
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<Table> {
        self.at(self.inner.create_table(namespace, creation).await)
    }

    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        self.at(self.inner.load_table(table).await)
    }

    async fn drop_table(&self, table: &TableIdent) -> Result<()> {
        self.at(self.inner.drop_table(table).await)
    }

    async fn purge_table(&self, table: &TableIdent) -> Result<()> {
        self.at(self.inner.purge_table(table).await)
    }

    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        self.at(self.inner.table_exists(table).await)
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        self.at(self.inner.rename_table(src, dest).await)
    }

    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> Result<Table> {
        self.at(self.inner.register_table(table, metadata_location).await)
    }

    /// Stage the commit on the table as the metastore has it now, then swap.
    async fn update_table(&self, mut commit: TableCommit) -> Result<Table> {
        let ident = commit.identifier().clone();
        let table = self.inner.load_table(&ident).await?;
        let (base, new) =
            super::catalog::stage(&table, commit.take_requirements(), commit.take_updates())
                .await?;
        if !self.swap(&ident, &base, &new).await? {
            return Err(Error::new(
                ErrorKind::CatalogCommitConflicts,
                format!("commit to {ident} conflicted with another writer's"),
            )
            .with_retryable(true));
        }
        self.at(self.inner.load_table(&ident).await)
    }
}
