//! The services this crate can start, and how each is named and overridden.

/// The services this crate can start, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Postgres,
    MariaDb,
    Tansu,
    S3,
    Azurite,
    Mosquitto,
    Nats,
    Python,
    IcebergRest,
    Moto,
    Browser,
}

impl Service {
    pub const ALL: [Service; 11] = [
        Service::Postgres,
        Service::MariaDb,
        Service::Tansu,
        Service::S3,
        Service::Azurite,
        Service::Mosquitto,
        Service::Nats,
        Service::Python,
        Service::IcebergRest,
        Service::Moto,
        Service::Browser,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Postgres => "postgres",
            Service::MariaDb => "mariadb",
            Service::Tansu => "tansu",
            Service::S3 => "s3",
            Service::Azurite => "azurite",
            Service::Mosquitto => "mosquitto",
            Service::Nats => "nats",
            Service::Python => "python",
            Service::IcebergRest => "iceberg-rest",
            Service::Moto => "moto",
            Service::Browser => "browser",
        }
    }

    pub fn from_name(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The environment variable that overrides where the service's binary is.
    pub fn binary_env(self) -> &'static str {
        match self {
            Service::Postgres => "RIVVEN_PG_BIN_DIR",
            Service::MariaDb => "RIVVEN_MARIADBD",
            Service::Tansu => "RIVVEN_TANSU",
            Service::S3 => "RIVVEN_S3S_FS",
            Service::Azurite => "RIVVEN_AZURITE_BLOB",
            Service::Mosquitto => "RIVVEN_MOSQUITTO",
            Service::Nats => "RIVVEN_NATS_SERVER",
            Service::Python => "RIVVEN_PYTHON",
            Service::IcebergRest => "RIVVEN_RUSTBERG",
            Service::Moto => "RIVVEN_MOTO_SERVER",
            Service::Browser => "RIVVEN_CHROMIUM",
        }
    }
}
