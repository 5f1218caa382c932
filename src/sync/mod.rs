//! Making remotes equal to the tree: targets, the one job type, the pending set per
//! remote, rsync argument vectors and runs, the fail log, and the workers.
//!
//! Changes come in through [`intake`] (the filter thread: temp names, excludes, event
//! switches, merging into the pending sets) and leave through the workers in
//! [`workers`]; what fails goes to the fail log in [`faillog`] and is tried again on
//! the [`backoff`] schedule ([`recovery`]). [`version`] checks the rsync on PATH.

pub mod backoff;
pub mod bisect;
pub mod cause;
pub mod faillog;
pub mod index;
pub mod intake;
pub mod job;
pub mod ledger;
pub mod links;
pub mod lockorder;
pub mod progress;
pub mod queue;
pub mod recovery;
pub mod rsync;
#[cfg(test)]
mod sim;
pub mod verify;
pub mod version;
pub mod workers;

pub use faillog::FailLog;
pub use job::{Job, RemoteId};
pub use queue::Queue;
pub use rsync::Target;
pub use workers::{AfterPush, Mirror, Snapshot};

use crate::config::Config;

/// One target per (watch root, remote), in config order.
pub fn targets(config: &Config) -> Vec<Target> {
    let full_excludes = config
        .crontab
        .as_ref()
        .map(|c| c.excludes.clone())
        .unwrap_or_default();
    let filter_globs = crate::filter::Excludes::new(config.excludes.clone()).rsync_globs();
    config
        .roots
        .iter()
        .flat_map(|root| {
            let full_excludes = full_excludes.clone();
            let filter_globs = filter_globs.clone();
            root.remotes.iter().map(move |remote| Target {
                root: root.path.clone(),
                remote: remote.clone(),
                opts: config.rsync.clone(),
                delete: config.events.delete,
                full_excludes: full_excludes.clone(),
                filter_globs: filter_globs.clone(),
                own: Vec::new(),
                ssh_control: None,
            })
        })
        .collect()
}
