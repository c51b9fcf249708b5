//! KnowTon coordinator.
pub mod credentials;
pub mod secrets;
pub mod store;
