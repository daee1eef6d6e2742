//! rivven-sql integration tests: golden tests of every transform and predicate (input batch
//! → expected batch, pretty-printed, in `tests/golden/`), and config errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod golden;
mod support;
