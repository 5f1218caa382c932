//! The status endpoint on `<host hostip port start="true">`: `GET /status` (JSON) and
//! `GET /metrics` (Prometheus text), and `sersync2 --status`, which reads it for a person.
//!
//! A tiny HTTP/1.0 server on std's TcpListener: one short-lived thread per request is
//! plenty for a monitoring scrape, and it never touches the sync path beyond reading
//! counters.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::sync::Snapshot;

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub config: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    pub watches: usize,
    pub fail_log: FailLogStatus,
    pub last_full_sync: Option<FullSync>,
    pub remotes: Vec<RemoteStatus>,
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
    pub failing: bool,
    pub last_error: Option<String>,
}

impl Status {
    /// The status document for a sync snapshot.
    pub fn new(snap: Snapshot, watches: usize, config: &str) -> Status {
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            config: config.to_owned(),
            pid: std::process::id(),
            uptime_seconds: snap.uptime.as_secs(),
            watches,
            fail_log: FailLogStatus {
                path: snap.fail_log.display().to_string(),
                entries: snap.fail_log_entries,
                unknown_entries: snap.unknown_entries,
            },
            last_full_sync: snap.last_full_sync.map(|f| FullSync {
                ended_unix: f
                    .ended
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                ok: f.ok,
                seconds: f.seconds,
                remote: f.remote,
            }),
            remotes: snap
                .remotes
                .into_iter()
                .map(|r| RemoteStatus {
                    remote: r.remote,
                    root: r.root.display().to_string(),
                    pushed: r.pushed,
                    failed: r.failed,
                    queued: r.queued,
                    failing: r.failing,
                    last_error: r.last_error,
                })
                .collect(),
        }
    }
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
        "sersync_uptime_seconds",
        "Seconds since start.",
        "gauge",
        vec![(String::new(), s.uptime_seconds.to_string())],
    );
    gauge(
        "sersync_watches",
        "Directories watched.",
        "gauge",
        vec![(String::new(), s.watches.to_string())],
    );
    gauge(
        "sersync_fail_log_entries",
        "Entries owed in the fail log.",
        "gauge",
        vec![(String::new(), s.fail_log.entries.to_string())],
    );
    gauge(
        "sersync_fail_log_unknown_entries",
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
        "sersync_pushed_total",
        "Paths pushed successfully.",
        "counter",
        per(&|r| r.pushed.to_string()),
    );
    gauge(
        "sersync_failed_total",
        "rsync calls that failed after retries.",
        "counter",
        per(&|r| r.failed.to_string()),
    );
    gauge(
        "sersync_queued",
        "Paths waiting to be pushed.",
        "gauge",
        per(&|r| r.queued.to_string()),
    );
    gauge(
        "sersync_remote_failing",
        "1 while the last call to the remote failed.",
        "gauge",
        per(&|r| u8::from(r.failing).to_string()),
    );
    if let Some(f) = &s.last_full_sync {
        gauge(
            "sersync_last_full_sync_timestamp_seconds",
            "When the last full sync ended.",
            "gauge",
            vec![(String::new(), f.ended_unix.to_string())],
        );
        gauge(
            "sersync_last_full_sync_success",
            "1 if the last full sync succeeded.",
            "gauge",
            vec![(String::new(), u8::from(f.ok).to_string())],
        );
        gauge(
            "sersync_last_full_sync_duration_seconds",
            "How long the last full sync took.",
            "gauge",
            vec![(String::new(), format!("{:.3}", f.seconds))],
        );
    }
    out
}

/// Serves /status and /metrics until the process exits. A thread that cannot be
/// started (the process or thread limit) is logged: the endpoint, or that one request,
/// is lost, the agent goes on.
pub fn serve(listener: TcpListener, source: Source) {
    let spawned = std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let source = Arc::clone(&source);
                let one = std::thread::Builder::new()
                    .name("status-req".into())
                    .spawn(move || {
                        let _ = answer(conn, &source);
                    });
                if let Err(e) = one {
                    log::warn!("status: cannot start a thread for a request, dropped: {e}");
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("status: cannot start the server thread, the endpoint is off: {e}");
    }
}

fn answer(mut conn: TcpStream, source: &Source) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Read the headers too: closing with unread input makes the kernel send a reset,
    // which can destroy the answer before the client has read it.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && line.trim_end() != "" {
        line.clear();
    }
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
    write!(
        conn,
        "HTTP/1.0 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `sersync2 --status`: fetch /status from the running instance and print it.
pub fn query(host: &str, port: u16) -> Result<Status, String> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {host}"))?;
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("no sersync2 status endpoint at {host}:{port} ({e}); is the agent running with <host start=\"true\">?"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(conn, "GET /status HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    conn.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).map_err(|e| format!("unexpected answer from {host}:{port}: {e}"))
}

/// A person's view of a status snapshot.
pub fn render(s: &Status) -> String {
    let mut out = format!(
        "sersync2 {} (pid {}), config {}\nup {}s, {} directories watched, fail log {} ({} entr{} owed)\n",
        s.version,
        s.pid,
        s.config,
        s.uptime_seconds,
        s.watches,
        s.fail_log.path,
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
            "last full sync: {} to {} in {:.1}s (ended at unix time {})\n",
            if f.ok { "succeeded" } else { "FAILED" },
            f.remote,
            f.seconds,
            f.ended_unix
        )),
        None => out.push_str("last full sync: none yet\n"),
    }
    for r in &s.remotes {
        out.push_str(&format!(
            "  {:<30} pushed {:>8}  failed {:>5}  queued {:>6}  {}\n",
            r.remote,
            r.pushed,
            r.failed,
            r.queued,
            if r.failing {
                format!("FAILING: {}", r.last_error.as_deref().unwrap_or(""))
            } else {
                "ok".to_owned()
            }
        ));
    }
    out
}
