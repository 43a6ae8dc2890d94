//! End-to-end tests over loopback HTTP. One binary: `cargo test -p geomatch-e2e`.

#[macro_use]
mod modes;

mod dispatch;
mod errors;
mod health;
mod ingest;
mod metrics;
mod people;
mod pricing;
mod services;
mod structure;
