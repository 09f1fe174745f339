//! Shared test support for the adapter tests.
pub mod moto;
