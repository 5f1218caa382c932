//! The status document ([`Status`]), served on `<host hostip port start="true">` as
//! `GET /status` (JSON) and `GET /metrics` (Prometheus text), and over the control
//! socket to `sersync2 --status` ([`render`] for people, the JSON for scripts,
//! [`exit_code`] for monitors). Times are unix seconds (`*_unix`) and RFC 3339 in UTC.
//!
//! A tiny HTTP/1.0 server on std's TcpListener, bounded so that it can never stop sync
//! or eat the host's memory: one thread polls the listener and every connection; at most
//! [`MAX_CONNECTIONS`] are open (more are closed as soon as they are accepted), a request
//! head over [`MAX_HEAD`] bytes gets a 431, and each connection has one deadline from
//! accept to answer ([`REQUEST_DEADLINE`]), not one per read. `accept` failing for lack
//! of descriptors or memory pauses accepting (100 ms doubling to 1 s) instead of spinning.
//! It never touches the sync path beyond reading counters. It is unauthenticated: a
//! `hostip` other than loopback is warned about at start.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::host_port;
use crate::sync::Snapshot;
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
}

/// A push running this long is named in the text report: a big transfer, or a remote
/// that accepts connections and stopped answering (rsync's I/O timeout ends that call).
pub const LONG_PUSH: f64 = 10.0;

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A unix time in RFC 3339, UTC, to the second (`2026-12-06T05:32:26Z`).
pub fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map_or_else(
            || format!("unix time {unix}"),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
}

/// A remote's state for people and monitors: `failing`, else `level` when nothing waits,
/// runs or is owed and its lag is 0, else `catching up`.
pub fn remote_state(failing: bool, pending: usize, owed: usize, lag_seconds: f64) -> &'static str {
    if failing {
        "failing"
    } else if pending == 0 && owed == 0 && lag_seconds == 0.0 {
        "level"
    } else {
        "catching up"
    }
}

/// `--status`'s exit status (the monitoring-plugin convention): 0 when every remote is
/// level or catching up and every watch root is the directory watched, 1 when a remote
/// is failing or a root is missing or replaced (nothing is pushed from it).
pub fn exit_code(s: &Status) -> u8 {
    let failing = s.remotes.iter().any(|r| r.failing);
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
                unix(std::time::SystemTime::now()).saturating_sub(snap.uptime.as_secs()),
            ),
            watches,
            watch_unit: "directories".to_owned(),
            fail_log: FailLogStatus {
                path: snap.fail_log.display().to_string(),
                entries: snap.fail_log_entries,
                unknown_entries: snap.unknown_entries,
            },
            last_full_sync: snap.last_full_sync.map(|f| FullSync {
                ended_unix: unix(f.ended),
                ended: rfc3339(unix(f.ended)),
                ok: f.ok,
                seconds: f.seconds,
                remote: f.remote,
            }),
            remotes: snap
                .remotes
                .into_iter()
                .map(|r| RemoteStatus {
                    state: remote_state(r.failing, r.pending, r.owed, r.lag.as_secs_f64())
                        .to_owned(),
                    remote: r.remote,
                    root: r.root.display().to_string(),
                    pushed: r.pushed,
                    failed: r.failed,
                    queued: r.queued,
                    failing: r.failing,
                    failing_since_unix: r.failing_since.map(unix),
                    failing_since: r.failing_since.map(|t| rfc3339(unix(t))),
                    owed: r.owed,
                    next_retry_unix: r.next_retry.map(unix),
                    next_retry: r.next_retry.map(|t| rfc3339(unix(t))),
                    last_error: r.last_error,
                    last_error_at: r.last_error_at.map(crate::sync::cause::rfc3339),
                    lag_seconds: r.lag.as_secs_f64(),
                    pending: r.pending,
                    longest_push_seconds: r.longest_push.as_secs_f64(),
                    full_sync_since: r.full_sync_since.map(|t| rfc3339(unix(t))),
                })
                .collect(),
            roots: Vec::new(),
            verify: Vec::new(),
        }
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
                at_unix: unix(v.at),
                at: rfc3339(unix(v.at)),
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
                since: unix_secs(r.since),
                state_since: rfc3339(unix_secs(r.since)),
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
            })
            .collect();
        self
    }
}

fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Where the server gets a fresh status document for each request.
pub type Source = Arc<dyn Fn() -> Status + Send + Sync>;

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of a snapshot.
pub fn metrics(s: &Status) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, rows: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in rows {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    gauge(
        "sersync2_uptime_seconds",
        "Seconds since start.",
        "gauge",
        vec![(String::new(), s.uptime_seconds.to_string())],
    );
    gauge(
        "sersync2_watches",
        "Directories watched.",
        "gauge",
        vec![(String::new(), s.watches.to_string())],
    );
    gauge(
        "sersync2_fail_log_entries",
        "Entries owed in the fail log.",
        "gauge",
        vec![(String::new(), s.fail_log.entries.to_string())],
    );
    gauge(
        "sersync2_fail_log_unknown_entries",
        "Fail log entries for a root or remote the config does not name (never run).",
        "gauge",
        vec![(String::new(), s.fail_log.unknown_entries.to_string())],
    );
    let per = |f: &dyn Fn(&RemoteStatus) -> String| -> Vec<(String, String)> {
        s.remotes
            .iter()
            .map(|r| {
                (
                    format!(
                        "{{remote=\"{}\",root=\"{}\"}}",
                        label(&r.remote),
                        label(&r.root)
                    ),
                    f(r),
                )
            })
            .collect()
    };
    gauge(
        "sersync2_pushed_paths_total",
        "Paths pushed successfully.",
        "counter",
        per(&|r| r.pushed.to_string()),
    );
    gauge(
        "sersync2_failed_calls_total",
        "rsync calls that failed after retries.",
        "counter",
        per(&|r| r.failed.to_string()),
    );
    gauge(
        "sersync2_queued_paths",
        "Paths waiting to be pushed.",
        "gauge",
        per(&|r| r.queued.to_string()),
    );
    gauge(
        "sersync2_remote_failing",
        "1 while the remote has failed and not been level since.",
        "gauge",
        per(&|r| u8::from(r.failing).to_string()),
    );
    gauge(
        "sersync2_remote_owed_entries",
        "Fail-log entries owed to the remote.",
        "gauge",
        per(&|r| r.owed.to_string()),
    );
    gauge(
        "sersync2_remote_lag_seconds",
        "Age of the oldest change not on the remote yet (waiting, in flight or owed); 0 when level.",
        "gauge",
        per(&|r| format!("{:.3}", r.lag_seconds)),
    );
    gauge(
        "sersync2_remote_longest_push_seconds",
        "How long the push running longest to the remote has run; 0 when none runs.",
        "gauge",
        per(&|r| format!("{:.3}", r.longest_push_seconds)),
    );
    gauge(
        "sersync2_remote_pending_paths",
        "Entries waiting or in flight for the remote.",
        "gauge",
        per(&|r| r.pending.to_string()),
    );
    let some = |rows: Vec<(String, String)>| -> Vec<(String, String)> {
        rows.into_iter().filter(|(_, v)| !v.is_empty()).collect()
    };
    gauge(
        "sersync2_remote_failing_since_timestamp_seconds",
        "When the remote started failing (only while it fails).",
        "gauge",
        some(per(&|r| {
            r.failing_since_unix
                .map_or(String::new(), |t| t.to_string())
        })),
    );
    gauge(
        "sersync2_remote_next_retry_timestamp_seconds",
        "When what the remote owes is next tried again (only while a retry is scheduled).",
        "gauge",
        some(per(&|r| {
            r.next_retry_unix.map_or(String::new(), |t| t.to_string())
        })),
    );
    if !s.roots.is_empty() {
        gauge(
            "sersync2_root_ok",
            "1 while the directory at the watch root's path is the one watched.",
            "gauge",
            s.roots
                .iter()
                .map(|r| {
                    (
                        format!("{{root=\"{}\"}}", label(&r.path)),
                        u8::from(r.state == "ok").to_string(),
                    )
                })
                .collect(),
        );
    }
    if !s.verify.is_empty() {
        let per_verified = |f: &dyn Fn(&VerifyStatus) -> String| -> Vec<(String, String)> {
            s.verify
                .iter()
                .map(|v| {
                    (
                        format!(
                            "{{remote=\"{}\",root=\"{}\"}}",
                            label(&v.remote),
                            label(&v.root)
                        ),
                        f(v),
                    )
                })
                .collect()
        };
        gauge(
            "sersync2_verify_differing_paths",
            "Paths not level at the last verification (differing, missing and extra); -1 if \
             the remote could not be checked.",
            "gauge",
            per_verified(&|v| match v.error {
                Some(_) => "-1".to_owned(),
                None => (v.differing + v.missing + v.extra).to_string(),
            }),
        );
        gauge(
            "sersync2_verify_last_timestamp_seconds",
            "When the remote was last verified.",
            "gauge",
            per_verified(&|v| v.at_unix.to_string()),
        );
    }
    if let Some(f) = &s.last_full_sync {
        gauge(
            "sersync2_last_full_sync_timestamp_seconds",
            "When the last full sync ended.",
            "gauge",
            vec![(String::new(), f.ended_unix.to_string())],
        );
        gauge(
            "sersync2_last_full_sync_success",
            "1 if the last full sync succeeded.",
            "gauge",
            vec![(String::new(), u8::from(f.ok).to_string())],
        );
        gauge(
            "sersync2_last_full_sync_duration_seconds",
            "How long the last full sync took.",
            "gauge",
            vec![(String::new(), format!("{:.3}", f.seconds))],
        );
    }
    out
}

/// Most connections open at once; any more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest request head (request line and headers); a longer one gets a 431.
pub const MAX_HEAD: usize = 8 * 1024;
/// One deadline per connection, from accept to the last byte of the answer (not per
/// read): a client that trickles its request is cut off when it passes.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Input read and thrown away after the answer, so that a client still sending gets a
/// clean close rather than a reset that can destroy the answer; more and we just close.
const DRAIN_LIMIT: usize = 64 * 1024;
/// Pause after `accept` fails for lack of resources (EMFILE and the like): doubles up
/// to [`BACKOFF_MAX`] while it keeps failing, instead of spinning on a readable listener.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Connections accepted per wake-up, so a flood cannot starve the open ones.
const ACCEPTS_PER_WAKE: usize = 256;

/// Serves /status and /metrics until the process exits, on one thread with a bounded
/// set of descriptors: the listener plus at most [`MAX_CONNECTIONS`]. If that thread
/// cannot be started, the agent runs on without the endpoint (logged).
///
/// With `stop`, it serves until that is raised (a config reload); the handle joins the
/// thread, after which the listener is closed.
pub fn serve(
    listener: TcpListener,
    source: Source,
    stop: Option<Arc<crate::sys::Stop>>,
) -> Option<std::thread::JoinHandle<()>> {
    if !ready(&listener) {
        return None;
    }
    let spawned = std::thread::Builder::new()
        .name("status".into())
        .spawn(move || Server::new(listener, source, stop).run());
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            log::error!("status endpoint off: cannot start its thread ({e}); syncing goes on");
            None
        }
    }
}

/// First pause before binding again after the status address could not be bound; it
/// doubles up to [`BIND_RETRY_MAX`].
pub const BIND_RETRY_FIRST: Duration = Duration::from_secs(5);
pub const BIND_RETRY_MAX: Duration = Duration::from_secs(60);

/// Serves on `listener`, or, without one, on `host:port` once it can be bound. A bind
/// that fails (another process holds the port, the address is gone) never stops sync:
/// it is logged with the address and the reason, and the status thread binds again,
/// [`BIND_RETRY_FIRST`] doubling to [`BIND_RETRY_MAX`], until it succeeds or `stop`
/// is raised.
pub fn listen(
    host: &str,
    port: u16,
    listener: Option<TcpListener>,
    source: Source,
    stop: Arc<crate::sys::Stop>,
) -> Option<std::thread::JoinHandle<()>> {
    let at = host_port(host, port);
    let first = match listener {
        Some(l) => Ok(l),
        None => TcpListener::bind((host, port)),
    };
    let error = match first {
        Ok(l) => {
            log::info!("status on http://{at}/status and /metrics");
            return serve(l, source, Some(stop));
        }
        Err(e) => e,
    };
    log::error!(
        "cannot listen for status on {at} ({error}); syncing goes on without the \
         endpoint; binding again in {}s, then up to every {}s (free the port or change \
         <host port>)",
        BIND_RETRY_FIRST.as_secs(),
        BIND_RETRY_MAX.as_secs()
    );
    let host = host.to_owned();
    let spawned = std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            let mut pause = BIND_RETRY_FIRST;
            let mut last = error.to_string();
            loop {
                if stop.wait_timeout(pause) {
                    return;
                }
                match TcpListener::bind((host.as_str(), port)) {
                    Ok(l) => {
                        if ready(&l) {
                            log::info!("status on http://{at}/status and /metrics (bound now)");
                            Server::new(l, source, Some(stop)).run();
                        }
                        return;
                    }
                    Err(e) if e.to_string() != last => {
                        log::error!("cannot listen for status on {at} ({e}); retrying");
                        last = e.to_string();
                    }
                    Err(e) => log::debug!("status on {at}: still cannot bind ({e})"),
                }
                pause = (pause * 2).min(BIND_RETRY_MAX);
            }
        });
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            log::error!(
                "status endpoint off: cannot start its thread ({e}); syncing goes on; \
                 send SIGHUP to try again"
            );
            None
        }
    }
}

/// Warns about a listener others can reach and makes it non-blocking; false if it
/// cannot be used (logged).
fn ready(listener: &TcpListener) -> bool {
    if let Ok(addr) = listener.local_addr() {
        if !is_loopback(addr.ip()) {
            log::warn!(
                "status endpoint on {addr} is unauthenticated: anyone who can reach it can read \
                 the status and metrics; bind <host hostip> to 127.0.0.1 unless that is intended"
            );
        }
    }
    if let Err(e) = listener.set_nonblocking(true) {
        log::error!("status endpoint off: cannot make its listener non-blocking ({e})");
        return false;
    }
    true
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// Where one connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the request head.
    Reading,
    /// Writing the answer.
    Writing,
    /// Answer sent and our side shut: discarding input until the client closes.
    Draining,
}

struct Conn {
    stream: TcpStream,
    deadline: Instant,
    phase: Phase,
    head: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    drained: usize,
}

/// Whether a connection stays open after handling its readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Keep,
    Close,
}

impl Conn {
    fn new(stream: TcpStream, now: Instant) -> Conn {
        Conn {
            stream,
            deadline: now + REQUEST_DEADLINE,
            phase: Phase::Reading,
            head: Vec::new(),
            out: Vec::new(),
            sent: 0,
            drained: 0,
        }
    }

    fn events(&self) -> libc::c_short {
        match self.phase {
            Phase::Reading | Phase::Draining => libc::POLLIN,
            Phase::Writing => libc::POLLOUT,
        }
    }

    /// The descriptor is ready (or in error): move on as far as it goes without blocking.
    fn ready(&mut self, source: &Source) -> Step {
        match self.phase {
            Phase::Reading => self.read_head(source),
            Phase::Writing => self.flush(),
            Phase::Draining => self.drain(),
        }
    }

    fn read_head(&mut self, source: &Source) -> Step {
        let mut buf = [0u8; 4096];
        loop {
            // Never hold more than one byte past the cap: that byte says "too long".
            let room = (MAX_HEAD + 1 - self.head.len()).min(buf.len());
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    // The client shut its side: answer a complete request line anyway.
                    if !self.head.contains(&b'\n') {
                        return Step::Close;
                    }
                    self.out = respond(&self.head, source);
                    self.phase = Phase::Writing;
                    return self.flush();
                }
                Ok(n) => {
                    let from = self.head.len().saturating_sub(3);
                    self.head.extend_from_slice(&buf[..n]);
                    let end = head_end(&self.head, from).filter(|&end| end <= MAX_HEAD);
                    if let Some(end) = end {
                        self.head.truncate(end);
                        self.out = respond(&self.head, source);
                    } else if self.head.len() > MAX_HEAD {
                        self.out = plain(
                            "431 Request Header Fields Too Large",
                            &format!("request head over {MAX_HEAD} bytes\n"),
                        );
                    } else {
                        continue;
                    }
                    self.head = Vec::new();
                    self.phase = Phase::Writing;
                    return self.flush();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Keep,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Step::Close,
            }
        }
    }

    fn flush(&mut self) -> Step {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Step::Close,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Keep,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Step::Close,
            }
        }
        self.out = Vec::new();
        if self.stream.shutdown(Shutdown::Write).is_err() {
            return Step::Close;
        }
        self.phase = Phase::Draining;
        self.drain()
    }

    fn drain(&mut self) -> Step {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Step::Close,
                Ok(n) => {
                    self.drained += n;
                    if self.drained > DRAIN_LIMIT {
                        return Step::Close;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Keep,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Step::Close,
            }
        }
    }

    /// The deadline passed: one best-effort 408 to a client still sending, then close.
    fn expire(&mut self) {
        if self.phase == Phase::Reading {
            let _ = self.stream.write(&plain(
                "408 Request Timeout",
                "request not complete in time\n",
            ));
        }
    }
}

/// Where the head ends (after its blank line), searching from `from`.
fn head_end(head: &[u8], from: usize) -> Option<usize> {
    (from..head.len()).find_map(|i| {
        if head[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if head[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// The listener and its open connections: one thread, one `poll` over all of them.
struct Server {
    listener: TcpListener,
    source: Source,
    conns: Vec<Conn>,
    /// While accepting is paused after a resource error: until when, and the next pause.
    paused_until: Option<Instant>,
    backoff: Duration,
    /// Raised: close everything and end the thread.
    stop: Option<Arc<crate::sys::Stop>>,
}

impl Server {
    fn new(listener: TcpListener, source: Source, stop: Option<Arc<crate::sys::Stop>>) -> Server {
        Server {
            listener,
            source,
            stop,
            conns: Vec::with_capacity(MAX_CONNECTIONS),
            paused_until: None,
            backoff: BACKOFF_FIRST,
        }
    }

    fn run(mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(MAX_CONNECTIONS + 1);
        loop {
            let now = Instant::now();
            self.conns.retain_mut(|c| {
                if now >= c.deadline {
                    c.expire();
                    false
                } else {
                    true
                }
            });
            if self.paused_until.is_some_and(|t| now >= t) {
                self.paused_until = None;
            }
            let listening = self.paused_until.is_none();
            fds.clear();
            fds.push(libc::pollfd {
                // A negative descriptor is skipped by poll: that is the pause.
                fd: if listening {
                    self.listener.as_raw_fd()
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            });
            for c in &self.conns {
                fds.push(libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events: c.events(),
                    revents: 0,
                });
            }
            // Last, after the connections' entries (their order is the conns' order).
            if let Some(stop) = &self.stop {
                fds.push(libc::pollfd {
                    fd: stop.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let wake = self
                .conns
                .iter()
                .map(|c| c.deadline)
                .chain(self.paused_until)
                .min();
            let timeout = wake.map_or(-1, |t| {
                // Round up so we never wake just before a deadline and spin.
                let ms = t.saturating_duration_since(now).as_micros().div_ceil(1000);
                ms.min(i32::MAX as u128) as i32
            });
            // SAFETY: fds is a valid, initialised array of fds.len() pollfd structs that
            // lives across the call; the length fits nfds_t (at most MAX_CONNECTIONS + 2).
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != ErrorKind::Interrupted {
                    log::warn!("status endpoint: poll failed ({e}); retrying in {BACKOFF_MAX:?}");
                    std::thread::sleep(BACKOFF_MAX); // back-off after a failed poll, not a sync
                }
                continue;
            }
            if self.stop.is_some() && fds.last().is_some_and(|p| p.revents != 0) {
                return;
            }
            let mut ready = fds[1..].iter().map(|p| p.revents);
            let source = &self.source;
            self.conns.retain_mut(|c| match ready.next() {
                Some(0) | None => true,
                Some(_) => c.ready(source) == Step::Keep,
            });
            if listening && fds[0].revents != 0 {
                self.accept();
            }
        }
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_WAKE {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.backoff = BACKOFF_FIRST;
                    // Over the cap the connection is dropped (closed) at once.
                    if self.conns.len() < MAX_CONNECTIONS && stream.set_nonblocking(true).is_ok() {
                        self.conns.push(Conn::new(stream, Instant::now()));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM...: the listener stays readable, so
                    // stop polling it for a while instead of spinning.
                    if self.backoff == BACKOFF_FIRST {
                        log::warn!(
                            "status endpoint: cannot accept ({e}); pausing it, up to {BACKOFF_MAX:?} at a time"
                        );
                    }
                    self.paused_until = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    return;
                }
            }
        }
    }
}

fn plain(code: &str, body: &str) -> Vec<u8> {
    reply(code, "text/plain", body)
}

fn reply(code: &str, kind: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.0 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The whole answer to a request head.
fn respond(head: &[u8], source: &Source) -> Vec<u8> {
    let head = String::from_utf8_lossy(head);
    let request = head.lines().next().unwrap_or("");
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (code, kind, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/status") => {
            let s = source();
            let body = serde_json::to_string_pretty(&s)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            ("200 OK", "application/json", body)
        }
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics(&source())),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /status or /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    reply(code, kind, &body)
}

/// Largest answer `--status` reads; a longer one is not a sersync2 status.
pub const MAX_ANSWER: usize = 1024 * 1024;
/// One deadline for `--status`, from connect to the last byte of the answer.
pub const QUERY_DEADLINE: Duration = Duration::from_secs(5);

/// `sersync2 --status`: fetch /status from the running instance. Whatever answers on the
/// port is untrusted: one deadline for the whole exchange, at most [`MAX_ANSWER`] bytes.
pub fn query(host: &str, port: u16) -> Result<Status, String> {
    query_within(host, port, QUERY_DEADLINE)
}

fn query_within(host: &str, port: u16, deadline: Duration) -> Result<Status, String> {
    let at = host_port(host, port);
    let started = Instant::now();
    let no_answer = || {
        format!(
            "no answer from {at} within {} s; is the sersync2 instance of this \
             config listening there?",
            deadline.as_secs()
        )
    };
    let left = || {
        deadline
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
    };
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {at}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {host}"))?;
    let mut conn =
        TcpStream::connect_timeout(&addr, left().ok_or_else(no_answer)?).map_err(|e| {
            match e.kind() {
                ErrorKind::TimedOut | ErrorKind::WouldBlock => no_answer(),
                _ => format!(
                    "no sersync2 status endpoint at {at} ({e}); is the agent running \
                 with <host start=\"true\">?"
                ),
            }
        })?;
    let timed_out =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock);
    conn.set_write_timeout(Some(left().ok_or_else(no_answer)?))
        .map_err(|e| e.to_string())?;
    conn.write_all(format!("GET /status HTTP/1.0\r\nHost: {at}\r\n\r\n").as_bytes())
        .map_err(|e| {
            if timed_out(&e) {
                no_answer()
            } else {
                format!("cannot ask {at}: {e}")
            }
        })?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        conn.set_read_timeout(Some(left().ok_or_else(no_answer)?))
            .map_err(|e| e.to_string())?;
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.len() > MAX_ANSWER {
                    return Err(format!(
                        "answer from {at} too large (over {} KiB): not a sersync2 \
                         status endpoint",
                        MAX_ANSWER / 1024
                    ));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => return Err(no_answer()),
            Err(e) => return Err(format!("cannot read the answer from {at}: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).map_err(|e| format!("unexpected answer from {at}: {e}"))
}

/// `s` with every control character escaped (`\u{1b}`), so that an answer cannot
/// drive the terminal it is printed on.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `12 directories watched`, `1 filesystem mark (fanotify)`: the count with what it
/// counts.
fn watched(n: usize, unit: &str) -> String {
    match unit {
        "directories" => format!("{n} director{} watched", if n == 1 { "y" } else { "ies" }),
        "filesystem marks" => format!(
            "{n} filesystem mark{} (fanotify: no per-directory watches)",
            if n == 1 { "" } else { "s" }
        ),
        "" => format!("{n} watches"),
        other => format!("{n} watches ({})", printable(other)),
    }
}

/// A person's view of a status snapshot.
pub fn render(s: &Status) -> String {
    // Every string came over the network: no control character reaches the terminal.
    let p = printable;
    let started = if s.started.is_empty() {
        String::new()
    } else {
        format!(" (since {})", p(&s.started))
    };
    let mut out = format!(
        "sersync2 {} (pid {}), config {}\nup {}s{started}, {}, fail log {} ({} entr{} owed)\n",
        p(&s.version),
        s.pid,
        p(&s.config),
        s.uptime_seconds,
        watched(s.watches, &s.watch_unit),
        p(&s.fail_log.path),
        s.fail_log.entries,
        if s.fail_log.entries == 1 { "y" } else { "ies" }
    );
    if s.fail_log.unknown_entries > 0 {
        out.push_str(&format!(
            "  of which {} for a root or remote not in the config: kept, never run \
             (drop with --replay --drop-unknown)\n",
            s.fail_log.unknown_entries
        ));
    }
    match &s.last_full_sync {
        Some(f) => out.push_str(&format!(
            "last full sync: {} to {} in {:.1}s (ended {})\n",
            if f.ok { "succeeded" } else { "FAILED" },
            p(&f.remote),
            f.seconds,
            rfc3339(f.ended_unix)
        )),
        None => out.push_str("last full sync: none yet\n"),
    }
    for r in &s.remotes {
        let owed = if r.owed > 0 {
            format!(
                "owes {} entr{}, ",
                r.owed,
                if r.owed == 1 { "y" } else { "ies" }
            )
        } else {
            String::new()
        };
        let retry = r
            .next_retry_unix
            .map_or(String::new(), |t| format!("next retry at {}, ", rfc3339(t)));
        out.push_str(&format!(
            "  {:<30} pushed {:>8}  failed {:>5}  queued {:>6}  lag {:>7.1}s  {}\n",
            p(&r.remote),
            r.pushed,
            r.failed,
            r.queued,
            r.lag_seconds,
            if r.failing {
                format!(
                    "FAILING since {} ({owed}{retry}last error{}: {})",
                    r.failing_since_unix.map_or_else(|| "?".to_owned(), rfc3339),
                    r.last_error_at
                        .as_deref()
                        .map_or(String::new(), |at| format!(" at {}", p(at))),
                    p(r.last_error.as_deref().unwrap_or(""))
                )
            } else {
                let long = (r.longest_push_seconds >= LONG_PUSH).then(|| {
                    format!(
                        "a push running for {:.0}s (a big transfer, or the remote stopped \
                         answering), ",
                        r.longest_push_seconds
                    )
                });
                let full = r
                    .full_sync_since
                    .as_deref()
                    .map(|at| format!("full sync running since {}, ", p(at)));
                let notes = format!(
                    "{}{}{owed}",
                    full.unwrap_or_default(),
                    long.unwrap_or_default()
                );
                let state = remote_state(false, r.pending, r.owed, r.lag_seconds);
                if notes.is_empty() {
                    format!("ok ({state})")
                } else {
                    format!("ok ({state}), {}", notes.trim_end_matches(", "))
                }
            }
        ));
    }
    for v in &s.verify {
        out.push_str(&format!(
            "verified {} at {}: {}\n",
            p(&v.remote),
            rfc3339(v.at_unix),
            match (&v.error, v.level) {
                (Some(e), _) => format!("could not be checked: {e}"),
                (None, true) => "level".to_owned(),
                (None, false) => format!(
                    "{} differing, {} missing, {} extra ({})",
                    v.differing,
                    v.missing,
                    v.extra,
                    v.paths.join(", ")
                ),
            }
        ));
    }
    for r in &s.roots {
        if r.state != "ok" {
            out.push_str(&format!(
                "watch root {} is {} (since {}): nothing is pushed from it until a directory is back there\n",
                p(&r.path),
                p(&r.state),
                rfc3339(r.since)
            ));
        }
        if r.rewalks > 0 {
            out.push_str(&format!(
                "watch root {}: {} directories could not be listed (too many open files or \
                 out of memory?) and wait to be walked again; their contents are pushed then\n",
                r.path, r.rewalks
            ));
        }
        for m in &r.mounts {
            if let Some(note) = m.note.as_deref().map(p) {
                out.push_str(&format!(
                    "mount {}/{} ({}): {note}\n",
                    p(&r.path),
                    p(&m.path),
                    p(&m.fstype)
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Arc::new(|| Status {
            version: "test".into(),
            config: "c.xml".into(),
            pid: 1,
            uptime_seconds: 0,
            started: String::new(),
            watches: 0,
            watch_unit: "directories".into(),
            fail_log: FailLogStatus {
                path: "f".into(),
                entries: 0,
                unknown_entries: 0,
            },
            last_full_sync: None,
            remotes: Vec::new(),
            roots: Vec::new(),
            verify: Vec::new(),
        })
    }

    #[test]
    fn verify_results_are_in_metrics_and_the_report() {
        use crate::sync::verify::Verified;
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let v = |remote: &str, differing, error: Option<&str>| Verified {
            remote: remote.into(),
            root: "/www".into(),
            at,
            differing,
            missing: 1,
            extra: 0,
            first: vec!["missing a".into()],
            error: error.map(str::to_owned),
        };
        let s =
            source()().with_verify(vec![v("h::a", 2, None), v("h::b", 0, Some("rsync exit 5"))]);
        let m = metrics(&s);
        assert!(
            m.contains("sersync2_verify_differing_paths{remote=\"h::a\",root=\"/www\"} 3\n"),
            "{m}"
        );
        assert!(
            m.contains("sersync2_verify_differing_paths{remote=\"h::b\",root=\"/www\"} -1\n"),
            "{m}"
        );
        assert!(
            m.contains(
                "sersync2_verify_last_timestamp_seconds{remote=\"h::a\",root=\"/www\"} 1700000000\n"
            ),
            "{m}"
        );
        assert!(!s.verify[0].level && !s.verify[1].level);
        let r = render(&s);
        assert!(r.contains("verified h::a at 2023-11-14T22:13:20Z: 2 differing, 1 missing, 0 extra (missing a)"), "{r}");
        assert!(
            r.contains("verified h::b at 2023-11-14T22:13:20Z: could not be checked: rsync exit 5"),
            "{r}"
        );
        assert_eq!(s.verify[0].at, "2023-11-14T22:13:20Z");
        assert!(!metrics(&source()()).contains("sersync2_verify"));
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(u64::MAX), format!("unix time {}", u64::MAX));
    }

    fn remote(name: &str, failing: bool, pending: usize, lag: f64) -> RemoteStatus {
        RemoteStatus {
            remote: name.into(),
            root: "/w".into(),
            pushed: 0,
            failed: u64::from(failing),
            queued: pending,
            state: remote_state(failing, pending, 0, lag).into(),
            failing,
            failing_since_unix: failing.then_some(1_700_000_000),
            failing_since: None,
            owed: 0,
            next_retry_unix: failing.then_some(1_700_000_060),
            next_retry: None,
            last_error: failing.then(|| "rsync exited 10".to_owned()),
            last_error_at: None,
            lag_seconds: lag,
            pending,
            longest_push_seconds: 0.0,
            full_sync_since: None,
        }
    }

    // `--status` exited 0 while a remote was FAILING and printed unix times.
    #[test]
    fn the_exit_status_is_1_only_when_a_remote_fails_or_a_root_is_lost() {
        use crate::watch::{RootReport, RootState};
        let mut s = source()();
        assert_eq!(exit_code(&s), 0, "no remotes");
        s.remotes.push(remote("level::m", false, 0, 0.0));
        s.remotes.push(remote("busy::m", false, 40, 3.5));
        assert_eq!(exit_code(&s), 0, "level and catching up");
        assert_eq!(
            (s.remotes[0].state.as_str(), s.remotes[1].state.as_str()),
            ("level", "catching up")
        );
        let text = render(&s);
        assert!(
            text.contains("ok (level)") && text.contains("ok (catching up)"),
            "{text}"
        );
        s.remotes.push(remote("down::m", true, 2, 9.0));
        assert_eq!(exit_code(&s), 1, "one failing");
        assert_eq!(s.remotes[2].state, "failing");
        let text = render(&s);
        assert!(
            text.contains("FAILING since 2023-11-14T22:13:20Z (next retry at 2023-11-14T22:14:20Z, last error: rsync exited 10)"),
            "{text}"
        );
        assert!(!text.contains("unix time"), "{text}");
        s.remotes.pop();
        let s = s.with_roots(vec![RootReport {
            path: "/gone".into(),
            state: RootState::Missing,
            since: UNIX_EPOCH,
            mounts: Vec::new(),
            rewalks: 0,
        }]);
        assert_eq!(exit_code(&s), 1, "a root lost");
    }

    // `--status` said "1 directories watched" under fanotify, where the count is of
    // filesystem marks.
    #[test]
    fn the_watch_count_says_what_it_counts() {
        let s = source()();
        assert!(
            render(&s).contains("0 directories watched"),
            "{}",
            render(&s)
        );
        let mut s = s.with_watch_unit("filesystem marks");
        s.watches = 1;
        let text = render(&s);
        assert!(text.contains("1 filesystem mark (fanotify"), "{text}");
        assert!(!text.contains("directories watched"), "{text}");
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["watch_unit"], "filesystem marks");
    }

    #[test]
    fn roots_that_are_not_ok_and_mount_notes_are_shown() {
        use crate::watch::{MountNote, RootReport, RootState};
        let report = |path: &str, state| RootReport {
            path: path.into(),
            state,
            since: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            mounts: vec![MountNote {
                path: "share".into(),
                fstype: "nfs4".into(),
                watched: true,
                note: Some("a network filesystem".into()),
            }],
            rewalks: 0,
        };
        let s = source()().with_roots(vec![
            report("/www", RootState::Missing),
            report("/up", RootState::Ok),
        ]);
        assert_eq!(s.roots[0].state, "missing");
        assert_eq!(s.roots[0].since, 1_700_000_000);
        let text = render(&s);
        assert!(text.contains("watch root /www is missing"), "{text}");
        assert!(!text.contains("watch root /up"), "{text}");
        assert!(text.contains("mount /www/share (nfs4)"), "{text}");
        assert!(metrics(&s).contains("sersync2_root_ok{root=\"/www\"} 0"));
        assert!(metrics(&s).contains("sersync2_root_ok{root=\"/up\"} 1"));
    }

    #[test]
    fn directories_waiting_for_a_walk_again_are_shown() {
        use crate::watch::{RootReport, RootState};
        let s = source()().with_roots(vec![RootReport {
            path: "/busy".into(),
            state: RootState::Ok,
            since: UNIX_EPOCH,
            mounts: Vec::new(),
            rewalks: 3,
        }]);
        assert_eq!(s.roots[0].rewalks, 3);
        let text = render(&s);
        assert!(
            text.contains("watch root /busy: 3 directories could not be listed"),
            "{text}"
        );
    }

    fn server() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        serve(listener, source(), None);
        port
    }

    /// Sends `parts` one write each and returns what came back before the close.
    fn exchange(port: u16, parts: &[&[u8]]) -> String {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        for p in parts {
            c.write_all(p).expect("send");
        }
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn head_of(len: usize) -> Vec<u8> {
        let start = b"GET /status HTTP/1.0\r\nX-Pad: ";
        let mut h = start.to_vec();
        h.resize(len - 4, b'p');
        h.extend_from_slice(b"\r\n\r\n");
        h
    }

    #[test]
    fn head_end_finds_either_blank_line_from_where_it_is_told() {
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n\r\n", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\nA: b\r\n", 0), None);
        assert_eq!(head_end(b"ab\r\n\r\n", 2), Some(6));
    }

    #[test]
    fn a_head_of_exactly_the_cap_is_answered_one_byte_more_is_431() {
        let port = server();
        let at_cap = exchange(port, &[&head_of(MAX_HEAD)]);
        assert!(at_cap.starts_with("HTTP/1.0 200"), "{at_cap:.200}");
        let over = exchange(port, &[&head_of(MAX_HEAD + 1)]);
        assert!(over.starts_with("HTTP/1.0 431"), "{over:.200}");
    }

    #[test]
    fn a_request_in_many_pieces_is_answered_once_complete() {
        let port = server();
        let got = exchange(
            port,
            &[
                b"GE",
                b"T /metr",
                b"ics HTTP/1.0\r",
                b"\nHost: x\r\n",
                b"\r\n",
            ],
        );
        assert!(got.starts_with("HTTP/1.0 200"), "{got:.200}");
        assert!(got.contains("sersync2_uptime_seconds 0"), "{got}");
        let got = exchange(port, &[b"POST /status HTTP/1.0\r\n\r\n"]);
        assert!(got.starts_with("HTTP/1.0 405"), "{got:.200}");
    }

    /// A remote that accepts connections and stopped answering read "ok" until rsync's
    /// I/O timeout (120 s by default) ended its call.
    #[test]
    fn a_push_running_long_is_named_beside_ok() {
        let remote = |name: &str, secs: f64, owed: usize| RemoteStatus {
            remote: name.into(),
            root: "/w".into(),
            pushed: 3,
            failed: 0,
            queued: 1,
            state: String::new(),
            failing: false,
            failing_since_unix: None,
            failing_since: None,
            owed,
            next_retry_unix: None,
            next_retry: None,
            last_error: None,
            last_error_at: None,
            lag_seconds: secs,
            pending: 1,
            longest_push_seconds: secs,
            full_sync_since: None,
        };
        let mut s = source()();
        s.remotes.push(remote("hung::m", 45.2, 0));
        s.remotes.push(remote("busy::m", 12.0, 2));
        s.remotes.push(remote("quick::m", 0.4, 0));
        let text = render(&s);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.contains(name))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            line("hung::m").ends_with(
                "ok (catching up), a push running for 45s (a big transfer, or the remote stopped answering)"
            ),
            "{text}"
        );
        assert!(
            line("busy::m").ends_with(
                "running for 12s (a big transfer, or the remote stopped answering), owes 2 entries"
            ),
            "{text}"
        );
        assert!(line("quick::m").ends_with(" ok (catching up)"), "{text}");
        // A full sync running says so, and since when.
        let mut full = remote("full::m", 75.0, 0);
        full.full_sync_since = Some(rfc3339(1_700_000_000));
        s.remotes.push(full);
        let text = render(&s);
        let full = text
            .lines()
            .find(|l| l.contains("full::m"))
            .unwrap_or_default();
        assert!(
            full.ends_with(
                "ok (catching up), full sync running since 2023-11-14T22:13:20Z, a push running for 75s (a big transfer, or the remote stopped answering)"
            ),
            "{text}"
        );
        let m = metrics(&s);
        assert!(
            m.contains(
                "sersync2_remote_longest_push_seconds{remote=\"hung::m\",root=\"/w\"} 45.200"
            ),
            "{m}"
        );
    }

    #[test]
    fn status_client_escapes_control_characters_from_the_answer() {
        // --status printed attacker JSON with raw terminal escapes.
        let mut s = source()();
        s.config = "c.xml\x1b[2J\x1b]0;owned\x07".into();
        s.remotes.push(RemoteStatus {
            remote: "r\nFAKE LINE".into(),
            root: "/w".into(),
            pushed: 0,
            failed: 1,
            queued: 0,
            state: "failing".into(),
            failing: true,
            failing_since_unix: Some(1),
            failing_since: None,
            owed: 0,
            next_retry_unix: None,
            next_retry: None,
            last_error: Some("\x1b[31mred".into()),
            last_error_at: Some("2026-01-02T03:04:05Z\x1b[2J".into()),
            lag_seconds: 0.0,
            pending: 0,
            longest_push_seconds: 0.0,
            full_sync_since: None,
        });
        let text = render(&s);
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert!(text.contains("c.xml\\u{1b}[2J"), "{text}");
        assert!(
            text.contains("last error at 2026-01-02T03:04:05Z\\u{1b}[2J: \\u{1b}[31mred"),
            "{text}"
        );
        assert!(!text.lines().any(|l| l.starts_with("FAKE LINE")), "{text}");
    }

    #[test]
    fn status_client_gives_up_on_a_listener_that_never_answers() {
        // A listener that never answered gave "Resource temporarily unavailable" after 10 s.
        let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let started = Instant::now();
        let e = query_within("127.0.0.1", port, Duration::from_secs(1)).expect_err("no answer");
        assert!(
            e.contains(&format!("no answer from 127.0.0.1:{port} within 1 s")),
            "{e}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "one deadline for it all"
        );
    }

    #[test]
    fn status_client_refuses_an_answer_over_the_cap() {
        // A 200 MB answer was read whole (200 MB RSS).
        let big = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = big.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = big.accept() {
                let chunk = vec![b' '; 64 * 1024];
                let _ = c.write_all(b"HTTP/1.0 200 OK\r\n\r\n{");
                // Until the client hangs up (then the write fails).
                while c.write_all(&chunk).is_ok() {}
            }
        });
        let e = query("127.0.0.1", port).expect_err("too large");
        assert!(e.contains("too large"), "{e}");
    }
}
