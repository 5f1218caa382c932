//! sersync2: a real-time, one-to-many directory mirroring daemon over rsync.
//!
//! Layers, each importing only from the ones before it (`tests/layers.rs` checks):
//! `sys` → `config` → `filter` → `watch` → `sync` → `plugin` → `service` → `modes`.
//! ARCHITECTURE.md tells how one event travels through them.

pub mod cli;
mod config;
mod filter;
pub mod modes;
mod plugin;
mod service;
mod sync;
mod sys;
mod watch;
