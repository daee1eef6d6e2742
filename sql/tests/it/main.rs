//! rivven-sql integration tests: golden tests of every transform and predicate (input batch
//! → expected batch, pretty-printed, in `tests/golden/`), and config errors.

mod golden;
mod support;
