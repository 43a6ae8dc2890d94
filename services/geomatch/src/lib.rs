//! The geomatch server: mounts the services' routes behind one middleware stack and runs
//! them until a stop signal.
//!
//! # Layout
//! - [`cli`]: `geomatch serve [--config FILE] [--service all|location-ingest|matching|eta-pricing]`.
//! - [`startup`]: [`Application`], the composition root: builds the shared pieces
//!   (`geomatch_common::Deps`), asks each selected service for its part (routes, OpenAPI,
//!   background tasks), wires the services through ports, binds the listener, and runs
//!   with graceful shutdown. `main` and the end-to-end tests both go through it.
//!
//! Configuration, errors, telemetry, metrics, health, the clock and the service seam live
//! in `geomatch-common`; each service's front door (`build`) lives in its own crate
//! (`location-ingest`, `matching`, `eta-pricing`).

pub mod cli;
pub mod startup;

pub use startup::{Application, Services};
