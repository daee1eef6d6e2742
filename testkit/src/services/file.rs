//! The services file of `rivven-services up` (named by `RIVVEN_TEST_SERVICES`), and one
//! accessor per service: from that file when set, else started privately for this
//! process.

use super::azurite::Azurite;
use super::browser::Browser;
use super::iceberg_rest::IcebergRest;
use super::mariadb::MariaDb;
use super::mosquitto::Mosquitto;
use super::moto::Moto;
use super::nats::Nats;
use super::postgres::Postgres;
use super::python::Python;
use super::s3::S3;
use super::service::Service;
use super::tansu::Tansu;
use crate::Unavailable;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ServiceFile {
    pub postgres: Option<Postgres>,
    pub mariadb: Option<MariaDb>,
    pub tansu: Option<Tansu>,
    pub s3: Option<S3>,
    pub azurite: Option<Azurite>,
    pub mosquitto: Option<Mosquitto>,
    pub nats: Option<Nats>,
    pub python: Option<Python>,
    #[serde(default)]
    pub iceberg_rest: Option<IcebergRest>,
    #[serde(default)]
    pub moto: Option<Moto>,
    #[serde(default)]
    pub browser: Option<Browser>,
    pub unavailable: Vec<Unavailable>,
}

impl ServiceFile {
    /// Start `which` services; what cannot start is listed in `unavailable`.
    pub fn start(which: &[Service]) -> ServiceFile {
        let mut f = ServiceFile::default();
        for &s in which {
            let r = match s {
                Service::Postgres => Postgres::start().map(|v| f.postgres = Some(v)),
                Service::MariaDb => MariaDb::start().map(|v| f.mariadb = Some(v)),
                Service::Tansu => Tansu::start().map(|v| f.tansu = Some(v)),
                Service::S3 => S3::start().map(|v| f.s3 = Some(v)),
                Service::Azurite => Azurite::start().map(|v| f.azurite = Some(v)),
                Service::Mosquitto => Mosquitto::start().map(|v| f.mosquitto = Some(v)),
                Service::Nats => Nats::start().map(|v| f.nats = Some(v)),
                Service::Python => Python::find().map(|v| f.python = Some(v)),
                Service::IcebergRest => IcebergRest::start().map(|v| f.iceberg_rest = Some(v)),
                Service::Moto => Moto::start().map(|v| f.moto = Some(v)),
                Service::Browser => Browser::find().map(|v| f.browser = Some(v)),
            };
            if let Err(e) = r {
                f.unavailable.push(e);
            }
        }
        f
    }

    fn get<T: Clone>(
        &self,
        service: Service,
        pick: impl Fn(&ServiceFile) -> &Option<T>,
    ) -> Result<T, Unavailable> {
        if let Some(v) = pick(self) {
            return Ok(v.clone());
        }
        Err(self
            .unavailable
            .iter()
            .find(|u| u.service == service.name())
            .cloned()
            .unwrap_or_else(|| {
                Unavailable::new(
                    service.name(),
                    "not started by rivven-services (see RIVVEN_TEST_SERVICES)",
                )
            }))
    }
}

/// The shared services file, when `RIVVEN_TEST_SERVICES` names one.
fn shared() -> Option<&'static Result<ServiceFile, String>> {
    static FILE: OnceLock<Option<Result<ServiceFile, String>>> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::var_os("RIVVEN_TEST_SERVICES")?;
        let path = PathBuf::from(path);
        Some(
            std::fs::read(&path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|b| {
                    serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))
                }),
        )
    })
    .as_ref()
}

macro_rules! accessor {
    ($(#[$doc:meta])* $fn:ident, $ty:ident, $variant:ident, $field:ident, $start:expr) => {
        $(#[$doc])*
        pub fn $fn() -> Result<$ty, Unavailable> {
            if let Some(file) = shared() {
                return match file {
                    Ok(f) => f.get(Service::$variant, |f| &f.$field),
                    Err(e) => Err(Unavailable::new(Service::$variant.name(), e.clone())),
                };
            }
            static PRIVATE: OnceLock<Result<$ty, Unavailable>> = OnceLock::new();
            PRIVATE.get_or_init($start).clone()
        }
    };
}

accessor!(
    /// PostgreSQL 15 with `wal_level=logical` (shared, or started for this process).
    postgres, Postgres, Postgres, postgres, Postgres::start
);
accessor!(
    /// MariaDB with a ROW binlog and a replication user.
    mariadb, MariaDb, MariaDb, mariadb, MariaDb::start
);
accessor!(
    /// tansu, a Kafka-protocol broker with in-memory storage.
    tansu, Tansu, Tansu, tansu, Tansu::start
);
accessor!(
    /// s3s-fs, an S3-compatible server that checks SigV4 signatures.
    s3, S3, S3, s3, S3::start
);
accessor!(
    /// Azurite's Blob service (Azure Storage emulator, from npm).
    azurite, Azurite, Azurite, azurite, Azurite::start
);
accessor!(
    /// mosquitto, an MQTT broker.
    mosquitto, Mosquitto, Mosquitto, mosquitto, Mosquitto::start
);
accessor!(
    /// nats-server with JetStream.
    nats, Nats, Nats, nats, Nats::start
);
accessor!(
    /// The Python venv with independent readers (pyarrow, duckdb, pyiceberg, deltalake,
    /// fastavro).
    python, Python, Python, python, Python::find
);
accessor!(
    /// rustberg, an Iceberg REST catalog server with a file warehouse.
    iceberg_rest, IcebergRest, IcebergRest, iceberg_rest, IcebergRest::start
);
accessor!(
    /// moto's server: AWS Glue, S3 and more on one endpoint.
    moto, Moto, Moto, moto, Moto::start
);
accessor!(
    /// Debian's Chromium driven by playwright-core on Node.js, for page tests.
    browser, Browser, Browser, browser, Browser::find
);
