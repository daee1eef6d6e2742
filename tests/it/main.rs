//! End-to-end tests of the `rivven-connect` binary (one test binary for the crate).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod blob;
mod cli;
mod crash;
#[cfg(feature = "lakehouse")]
mod delta_lake;
mod docs;
mod flight;
mod flight_sql;
mod health;
#[cfg(feature = "lakehouse")]
mod iceberg;
mod kafka;
#[cfg(feature = "lakehouse")]
mod lakehouse_cdc;
mod object_storage;
mod postgres;
mod status_page;
mod support;
mod taps;
mod transforms;
