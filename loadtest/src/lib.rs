//! geomatch-loadtest: an open-loop load generator for location-ingest, run as its own
//! process against a geomatch server on this machine (loopback only), and the Redis GEO
//! peer on the same workload. `loadtest/run.sh` runs the whole issue #3 benchmark.
//!
//! # Method
//! Requests are released at a constant rate by a pacer thread, whatever the server does;
//! each carries its scheduled time and latency is measured from it (no coordinated
//! omission: time a request spends waiting for a free connection, or behind a slow
//! server, counts). Latencies go into HDR histograms; a run reports throughput achieved
//! over the measured window, p50/p90/p99/p99.9/max, and replies by status or cause.
//!
//! # Layout
//! - [`target`]: the loopback-only targets (HTTP server, Redis).
//! - [`fleet`]: the simulated drivers: a pure function of (driver, time), so separate runs
//!   continue the same tracks; `seq` is the scheduled time in µs.
//! - [`pacer`]: the constant-rate schedule, on its own thread.
//! - [`record`]: per-connection recorders, merged at the end, and the printed figures.
//! - [`http`]: `put` and `batch` over hyper's HTTP/1.1 client, one request in flight per
//!   keep-alive connection.
//! - [`ws`]: `ws`, one WebSocket per driver (tokio-tungstenite), frame → ack latency.
//! - [`geoadd`]: pipelined `GEOADD` into Redis over a minimal RESP client.
//! - [`city`]: the matching benchmark: a moving fleet, riders at a constant rate, agents
//!   answering offers; request → first offer, match rate, pickup ETA, invariants.

pub mod city;
pub mod fleet;
pub mod geoadd;
pub mod http;
pub mod pacer;
pub mod record;
pub mod target;
pub mod ws;
