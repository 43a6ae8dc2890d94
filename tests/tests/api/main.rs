//! End-to-end tests over loopback HTTP. One binary: `cargo test -p geomatch-e2e`.

mod dispatch;
mod errors;
mod health;
#[macro_use]
mod ingest;
mod metrics;
mod people;
mod pricing;
mod services;
