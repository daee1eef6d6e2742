//! Sink connectors of rivven-connect, one module and one Cargo feature each.
//!
//! [`register`] adds every compiled-in sink to a [`Registry`].

#[cfg(any(feature = "delta-lake", feature = "iceberg"))]
pub mod changes;
#[cfg(feature = "delta-lake")]
pub mod delta_lake;
#[cfg(feature = "format")]
pub mod format;
#[cfg(feature = "iceberg")]
pub mod iceberg;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "object-storage")]
pub mod object_storage;
pub mod render;
#[cfg(feature = "stdout")]
pub mod stdout;

use rivven_engine::registry::Registry;

/// Register every sink connector compiled into this crate.
pub fn register(registry: &mut Registry) -> rivven_engine::Result<()> {
    #[cfg(feature = "stdout")]
    registry.register_sink(stdout::Stdout)?;
    #[cfg(feature = "object-storage")]
    for c in object_storage::ObjectStorage::all() {
        registry.register_sink(c)?;
    }
    #[cfg(feature = "delta-lake")]
    registry.register_sink(delta_lake::DeltaLake)?;
    #[cfg(feature = "iceberg")]
    registry.register_sink(iceberg::Iceberg)?;
    #[cfg(feature = "kafka")]
    for c in kafka::KafkaSinkConnector::all() {
        registry.register_sink(c)?;
    }
    let _ = &registry;
    Ok(())
}
