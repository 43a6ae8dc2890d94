//! The geomatch server: mounts the services' routes behind one middleware stack and runs
//! them until a stop signal.
//!
//! # Layout
//! - [`cli`]: `geomatch serve [--config FILE] [--service all|location-ingest|matching|eta-pricing]`.
//! - [`startup`]: [`Application`]: builds the shared state (index, metrics, readiness),
//!   binds the listener, and runs with graceful shutdown. `main` and the end-to-end tests
//!   both go through it.
//!
//! Configuration, errors, telemetry, metrics and health live in `geomatch-common`; each
//! service's routes live in its own crate (`location-ingest`, `matching`, `eta-pricing`).

pub mod cli;
pub mod startup;

pub use startup::{Application, Services};
