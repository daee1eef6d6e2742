//! rivven-connect: an Arrow-columnar, micro-batched engine for change data capture and data
//! movement. This crate is the binary's library: the CLI ([`cli`]) and the registry of
//! built-in connectors ([`builtin_registry`]). A third-party build adds its own factories to
//! the registry and calls [`cli::main`] with it.

pub mod cli;
pub mod flight;

pub use rivven_engine as engine;

/// A registry holding every connector compiled into this build, and the transform compiler.
pub fn builtin_registry() -> rivven_engine::Result<rivven_engine::registry::Registry> {
    let mut registry = rivven_engine::registry::Registry::new();
    rivven_sources::register(&mut registry)?;
    rivven_sinks::register(&mut registry)?;
    rivven_sql::register(&mut registry);
    Ok(registry)
}
