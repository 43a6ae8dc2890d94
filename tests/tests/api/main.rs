//! End-to-end tests over loopback HTTP. One binary: `cargo test -p geomatch-e2e`.

// Test and benchmark code may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

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
