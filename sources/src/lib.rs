//! Source connectors of rivven-connect, one module and one Cargo feature each.
//!
//! [`register`] adds every compiled-in source to a [`Registry`].

#[cfg(feature = "datagen")]
pub mod datagen;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "postgres-cdc")]
pub mod postgres_cdc;

use rivven_engine::registry::Registry;

/// Register every source connector compiled into this crate.
pub fn register(registry: &mut Registry) -> rivven_engine::Result<()> {
    #[cfg(feature = "datagen")]
    registry.register_source(datagen::Datagen)?;
    #[cfg(feature = "kafka")]
    for c in kafka::KafkaSourceConnector::all() {
        registry.register_source(c)?;
    }
    #[cfg(feature = "postgres-cdc")]
    registry.register_source(postgres_cdc::PostgresCdc)?;
    let _ = &registry;
    Ok(())
}
