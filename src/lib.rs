//! sersync2: a real-time, one-to-many directory mirroring daemon over rsync.
//!
//! Layers, each importing only from the ones before it (`tests/layers.rs` checks):
//! `sys` → `config` → `filter` → `watch` → `sync` → `plugin` → `service` → `modes`.
//! ARCHITECTURE.md tells how one event travels through them.
//!
//! `unsafe` code is only in `sys`, each block with the reason it is sound; the
//! compiler refuses it anywhere else.

#![deny(unsafe_code)]

pub mod cli;
mod config;

/// sersync2.xml(5): the config format's man page, from the list the parser accepts.
pub use config::schema::man_page as config_man_page;
mod filter;
pub mod modes;
mod plugin;
mod service;
mod sync;
#[allow(unsafe_code)]
mod sys;
mod watch;
