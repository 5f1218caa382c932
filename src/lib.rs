//! sersync2: a real-time, one-to-many directory mirroring daemon over rsync.
//!
//! inotify events flow one way: `watch` (kernel events, tree bookkeeping) → `filter`
//! (temp files, excludes) → `queue` (per-remote pending paths) → `pool` (workers running
//! `rsync`) → `failq` (what failed, as a replayable script). `app` wires them together.

pub mod app;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod failq;
pub mod filter;
pub mod plugin;
pub mod pool;
pub mod queue;
pub mod rsync;
pub mod schedule;
pub mod status;
pub mod watch;
