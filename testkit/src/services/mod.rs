//! One module per service: how to find its binary, start it privately, reach it, and run
//! the small administrative steps tests need (create a database, a bucket, ...).

mod azurite;
mod browser;
mod certs;
mod file;
mod iceberg_rest;
mod launch;
mod mariadb;
mod mosquitto;
mod moto;
mod nats;
mod postgres;
mod python;
mod s3;
mod service;
mod tansu;

pub use azurite::Azurite;
pub use browser::Browser;
pub use certs::make_certs;
pub use file::{
    azurite, browser, iceberg_rest, mariadb, mosquitto, moto, nats, postgres, python, s3, tansu,
    ServiceFile,
};
pub use iceberg_rest::IcebergRest;
pub use mariadb::MariaDb;
pub use mosquitto::{mqtt_connect, Mosquitto};
pub use moto::Moto;
pub use nats::{nats_info, Nats};
pub use postgres::{Postgres, TempDatabase};
pub use python::{Python, DUCKDB_LAKEHOUSE, PYTHON_READERS};
pub use s3::S3;
pub use service::Service;
pub use tansu::{kafka_api_versions, Tansu};
