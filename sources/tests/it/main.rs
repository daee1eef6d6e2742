//! Integration tests of the source connectors against real services (rivven-testkit).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod postgres_cdc;
