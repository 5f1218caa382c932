//! The status document ([`Status`]), served on `<host hostip port start="true">` as
//! `GET /status` (JSON) and `GET /metrics` (Prometheus text), and over the control
//! socket to `sersync2 --status` ([`render`] for people, the JSON for scripts,
//! [`exit_code`] for monitors). Times are unix seconds (`*_unix`) and RFC 3339 in UTC.
//!
//! One file per job: `model.rs` the document and how it is made from a sync snapshot,
//! `metrics.rs` its Prometheus text, `report.rs` its text for people, `server.rs` the
//! HTTP endpoint, `client.rs` the `--status` query over HTTP.

mod client;
mod metrics;
mod model;
mod report;
mod server;
#[cfg(test)]
mod tests;

pub use client::query;
pub use model::{exit_code, PluginStatus, Status};
pub use report::{printable, render};
pub use server::{listen, serve, Source};
