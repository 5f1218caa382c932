//! The status document: what `GET /status` and `--status` give, made from a sync
//! snapshot, the watch roots' reports and the last verifications; a remote's state and
//! `--status`'s exit status from it.

use serde::{Deserialize, Serialize};

use crate::sync::Snapshot;
use crate::sys::time::{rfc3339, unix_seconds};
use crate::watch::RootReport;

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub config: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    /// When the instance started (RFC 3339, UTC).
    #[serde(default)]
    pub started: String,
    pub watches: usize,
    /// What `watches` counts: `directories` (inotify), `filesystem marks` (fanotify), or
    /// `directories and filesystem marks` when roots use both.
    #[serde(default)]
    pub watch_unit: String,
    pub fail_log: FailLogStatus,
    pub last_full_sync: Option<FullSync>,
    pub remotes: Vec<RemoteStatus>,
    /// Each watch root: whether the directory at its path is the one watched.
    #[serde(default)]
    pub roots: Vec<RootStatus>,
    /// The last `<verify>` result per remote (those verified since the start).
    #[serde(default)]
    pub verify: Vec<VerifyStatus>,
    /// The long tasks running now (a catch-up walk, a full sync): what, since when, and
    /// for a walk the entries compared and changes found so far.
    #[serde(default)]
    pub progress: Vec<ProgressStatus>,
    /// The plugin switched on for live syncing, if any: its runs and failures.
    #[serde(default)]
    pub plugin: Option<PluginStatus>,
}

/// The switched-on plugin's runs since the start. Its failures never hold sync back:
/// they are counted and logged here, nothing is retried.
#[derive(Debug, Serialize, Deserialize)]
pub struct PluginStatus {
    /// `command`, `socket` or `refreshCDN`.
    pub name: String,
    /// `file` (once per changed file) or `batch` (the command plugin once per push).
    pub mode: String,
    pub runs: u64,
    /// Runs that failed: a non-zero exit, not started, killed at its timeout or by a
    /// signal (for socket and refreshCDN: a send or purge that failed).
    pub failed: u64,
    /// Paths dropped for it while too many waited (it could not keep up).
    pub dropped: u64,
    /// Paths waiting for it now.
    pub waiting: usize,
    /// The last failure as logged, and when (RFC 3339, UTC).
    pub last_failure: Option<String>,
    pub last_failure_at: Option<String>,
}

/// One long task running now (see `sync::progress`).
#[derive(Debug, Serialize, Deserialize)]
pub struct ProgressStatus {
    pub what: String,
    /// The remote it runs to (a full sync).
    #[serde(default)]
    pub remote: Option<String>,
    /// When it started (RFC 3339, UTC).
    pub since: String,
    pub seconds: f64,
    /// A walk: entries compared so far, per second, and changes found so far.
    pub entries: Option<u64>,
    pub per_second: Option<f64>,
    pub changes: Option<u64>,
    /// A full sync: rsync's own latest figures, once it wrote some.
    #[serde(default)]
    pub rsync: Option<RsyncProgress>,
    /// The line the log shows for it.
    pub line: String,
}

/// rsync's own progress of a full sync, as its `--info=progress2` records say it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RsyncProgress {
    /// Bytes transferred so far, as rsync writes them (`1,234,567`).
    pub transferred: String,
    /// The same as a number, when rsync wrote digits.
    pub bytes: Option<u64>,
    /// Of the total size of the files listed so far.
    pub percent: u32,
    /// As rsync writes it (`1.23MB/s`).
    pub rate: String,
    /// Files transferred so far, once one ended.
    pub files: Option<u64>,
    /// Files still to check of those listed so far, once a file ended.
    pub to_check: Option<u64>,
    pub listed: Option<u64>,
    /// Whether the file list was complete then (false: rsync still lists the tree).
    pub list_complete: Option<bool>,
}

/// One remote's last verification (`<verify>`).
#[derive(Debug, Serialize, Deserialize)]
pub struct VerifyStatus {
    pub remote: String,
    pub root: String,
    pub at_unix: u64,
    /// `at_unix` in RFC 3339.
    #[serde(default)]
    pub at: String,
    /// true when nothing differed.
    pub level: bool,
    pub differing: usize,
    pub missing: usize,
    pub extra: usize,
    /// The first few paths, `kind path`.
    pub paths: Vec<String>,
    /// Why the remote could not be checked.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RootStatus {
    pub path: String,
    /// `ok`, `missing` (removed or renamed away) or `replaced` (another directory is at
    /// the path, not watched yet).
    pub state: String,
    /// Since when (unix seconds) it is in this state.
    pub since: u64,
    /// `since` in RFC 3339.
    #[serde(default)]
    pub state_since: String,
    /// Filesystems mounted below it.
    #[serde(default)]
    pub mounts: Vec<MountStatus>,
    /// Directories that could not be listed or watched (too many open files, ...) and
    /// wait to be walked again; what they hold is pushed then.
    #[serde(default)]
    pub rewalks: usize,
    /// Paths below it too long for rsync (its 4096-byte limit, the directory it runs in
    /// included): never pushed, never owed, never waited for. Distinct paths met and
    /// still in the tree (past 256 of them, those beyond are counted since the start).
    #[serde(default)]
    pub skipped_paths: u64,
    /// Why they were left out, while any was.
    #[serde(default)]
    pub skipped_reason: Option<String>,
    /// The last one, shortened.
    #[serde(default)]
    pub skipped_last: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MountStatus {
    /// Relative to the root.
    pub path: String,
    pub fstype: String,
    pub watched: bool,
    pub note: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FailLogStatus {
    pub path: String,
    pub entries: usize,
    /// Of `entries`, those for a root or remote the config does not name: kept, never
    /// run; `sersync2 --replay --drop-unknown` drops them.
    #[serde(default)]
    pub unknown_entries: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FullSync {
    pub ended_unix: u64,
    /// `ended_unix` in RFC 3339.
    #[serde(default)]
    pub ended: String,
    pub ok: bool,
    pub seconds: f64,
    pub remote: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RemoteStatus {
    pub remote: String,
    pub root: String,
    pub pushed: u64,
    pub failed: u64,
    pub queued: usize,
    /// `level` (nothing waiting, in flight or owed), `catching up`, or `failing`.
    #[serde(default)]
    pub state: String,
    /// It has failed and not been level since.
    pub failing: bool,
    /// Since when (unix time), while failing.
    #[serde(default)]
    pub failing_since_unix: Option<u64>,
    /// `failing_since_unix` in RFC 3339.
    #[serde(default)]
    pub failing_since: Option<String>,
    /// Its fail-log entries (paths, a full sync counting as one).
    #[serde(default)]
    pub owed: usize,
    /// When what it owes is next tried again (unix time), if a retry is scheduled.
    #[serde(default)]
    pub next_retry_unix: Option<u64>,
    /// `next_retry_unix` in RFC 3339.
    #[serde(default)]
    pub next_retry: Option<String>,
    /// The last failed call's cause: rsync's exit, a hint for a common cause, and the
    /// end of what rsync and ssh said on stderr (control characters escaped). Kept
    /// after the remote is level again.
    pub last_error: Option<String>,
    /// When that call failed (RFC 3339, UTC).
    #[serde(default)]
    pub last_error_at: Option<String>,
    /// Age of the oldest change not on the remote yet (waiting, in flight or owed); 0
    /// when it is level.
    #[serde(default)]
    pub lag_seconds: f64,
    /// Entries waiting or in flight.
    #[serde(default)]
    pub pending: usize,
    /// How long the push running longest to it has run; 0 when none runs.
    #[serde(default)]
    pub longest_push_seconds: f64,
    /// Since when a full sync runs to it (RFC 3339, UTC), while one does; live changes
    /// are pushed beside it.
    #[serde(default)]
    pub full_sync_since: Option<String>,
    /// Deletes the brake on mass deletes holds for it: the remote keeps those entries
    /// until `sersync2 --release-deletes` pushes them or `--discard-deletes` drops them.
    #[serde(default)]
    pub held_deletes: usize,
    /// A full sync is held with them.
    #[serde(default)]
    pub held_full: bool,
    /// Since when (RFC 3339, UTC), while deletes are held.
    #[serde(default)]
    pub held_since: Option<String>,
    /// The operator paused it (`sersync2 --pause`): changes are read and queued for it
    /// (`queued`, `pending`), nothing is pushed to it until `sersync2 --resume`.
    #[serde(default)]
    pub paused: bool,
}

/// A remote's state while the brake on mass deletes holds deletes for it.
pub const HELD: &str = "deletes held";

/// A push running this long is named in the text report: a big transfer, or a remote
/// that accepts connections and stopped answering (rsync's I/O timeout ends that call).
pub const LONG_PUSH: f64 = 10.0;

/// A remote's state for people and monitors: `failing`, else `paused` while the
/// operator paused it, else `level` when nothing waits, runs or is owed and its lag is 0,
/// else `catching up`.
pub fn remote_state(
    failing: bool,
    paused: bool,
    pending: usize,
    owed: usize,
    lag_seconds: f64,
) -> &'static str {
    if failing {
        "failing"
    } else if paused {
        "paused"
    } else if pending == 0 && owed == 0 && lag_seconds == 0.0 {
        "level"
    } else {
        "catching up"
    }
}

/// `--status`'s exit status (the monitoring-plugin convention): 0 when every remote is
/// level or catching up and every watch root is the directory watched, 1 when a remote
/// is failing or holds deletes (they wait for the operator), or a root is missing or
/// replaced (nothing is pushed from it).
pub fn exit_code(s: &Status) -> u8 {
    let failing = s
        .remotes
        .iter()
        .any(|r| r.failing || r.held_since.is_some());
    let root_lost = s.roots.iter().any(|r| r.state != "ok");
    u8::from(failing || root_lost)
}

impl Status {
    /// The status document for a sync snapshot.
    pub fn new(snap: Snapshot, watches: usize, config: &str) -> Status {
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            config: config.to_owned(),
            pid: std::process::id(),
            uptime_seconds: snap.uptime.as_secs(),
            started: rfc3339(
                unix_seconds(std::time::SystemTime::now()).saturating_sub(snap.uptime.as_secs()),
            ),
            watches,
            watch_unit: "directories".to_owned(),
            fail_log: FailLogStatus {
                path: snap.fail_log.display().to_string(),
                entries: snap.fail_log_entries,
                unknown_entries: snap.unknown_entries,
            },
            last_full_sync: snap.last_full_sync.map(|f| FullSync {
                ended_unix: unix_seconds(f.ended),
                ended: rfc3339(unix_seconds(f.ended)),
                ok: f.ok,
                seconds: f.seconds,
                remote: f.remote,
            }),
            remotes: snap
                .remotes
                .into_iter()
                .map(|r| RemoteStatus {
                    state: if r.held_since.is_some() && !r.failing {
                        HELD.to_owned()
                    } else {
                        remote_state(r.failing, r.paused, r.pending, r.owed, r.lag.as_secs_f64())
                            .to_owned()
                    },
                    held_deletes: r.held_deletes,
                    held_full: r.held_full,
                    held_since: r.held_since.map(|t| rfc3339(unix_seconds(t))),
                    remote: r.remote,
                    root: r.root.display().to_string(),
                    pushed: r.pushed,
                    failed: r.failed,
                    queued: r.queued,
                    failing: r.failing,
                    failing_since_unix: r.failing_since.map(unix_seconds),
                    failing_since: r.failing_since.map(|t| rfc3339(unix_seconds(t))),
                    owed: r.owed,
                    next_retry_unix: r.next_retry.map(unix_seconds),
                    next_retry: r.next_retry.map(|t| rfc3339(unix_seconds(t))),
                    last_error: r.last_error,
                    last_error_at: r.last_error_at.map(|t| rfc3339(unix_seconds(t))),
                    lag_seconds: r.lag.as_secs_f64(),
                    pending: r.pending,
                    longest_push_seconds: r.longest_push.as_secs_f64(),
                    full_sync_since: r.full_sync_since.map(|t| rfc3339(unix_seconds(t))),
                    paused: r.paused,
                })
                .collect(),
            roots: Vec::new(),
            verify: Vec::new(),
            progress: Vec::new(),
            plugin: None,
        }
    }

    /// Adds the switched-on plugin's counts.
    pub fn with_plugin(mut self, plugin: Option<PluginStatus>) -> Status {
        self.plugin = plugin;
        self
    }

    /// Adds the long tasks running now.
    pub fn with_progress(mut self, running: Vec<crate::sync::progress::Report>) -> Status {
        self.progress = running
            .into_iter()
            .map(|r| ProgressStatus {
                line: r.line(),
                per_second: r.per_second(),
                since: rfc3339(unix_seconds(r.since)),
                rsync: r.rsync.map(|f| RsyncProgress {
                    transferred: f.transferred,
                    bytes: f.bytes,
                    percent: f.percent,
                    rate: f.rate,
                    files: f.files,
                    to_check: f.to_check.map(|c| c.0),
                    listed: f.to_check.map(|c| c.1),
                    list_complete: f.list_complete,
                }),
                remote: r.remote,
                what: r.what,
                seconds: r.seconds,
                entries: r.entries,
                changes: r.changes,
            })
            .collect();
        self
    }

    /// Says what `watches` counts (see [`Status::watch_unit`]).
    pub fn with_watch_unit(mut self, unit: &str) -> Status {
        unit.clone_into(&mut self.watch_unit);
        self
    }

    /// Adds the last verification of each remote.
    pub fn with_verify(mut self, verified: Vec<crate::sync::verify::Verified>) -> Status {
        self.verify = verified
            .into_iter()
            .map(|v| VerifyStatus {
                level: v.error.is_none() && v.total() == 0,
                remote: v.remote,
                root: v.root.display().to_string(),
                at_unix: unix_seconds(v.at),
                at: rfc3339(unix_seconds(v.at)),
                differing: v.differing,
                missing: v.missing,
                extra: v.extra,
                paths: v.first,
                error: v.error,
            })
            .collect();
        self
    }

    /// Adds the watch roots' state.
    pub fn with_roots(mut self, roots: Vec<RootReport>) -> Status {
        self.roots = roots
            .into_iter()
            .map(|r| RootStatus {
                path: r.path.display().to_string(),
                state: r.state.as_str().to_owned(),
                since: unix_seconds(r.since),
                state_since: rfc3339(unix_seconds(r.since)),
                mounts: r
                    .mounts
                    .into_iter()
                    .map(|m| MountStatus {
                        path: m.path.display().to_string(),
                        fstype: m.fstype,
                        watched: m.watched,
                        note: m.note,
                    })
                    .collect(),
                rewalks: r.rewalks,
                skipped_paths: r.too_long.paths,
                skipped_reason: (r.too_long.paths > 0).then(crate::watch::too_long_reason),
                skipped_last: r.too_long.last,
            })
            .collect();
        self
    }
}
