//! The status document in the Prometheus text exposition format (`GET /metrics`).

use super::model::{RemoteStatus, Status, VerifyStatus};

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
        "sersync2_remote_paused",
        "1 while the operator has paused the remote (sersync2 --pause): nothing is pushed to it.",
        "gauge",
        per(&|r| u8::from(r.paused).to_string()),
    );
    gauge(
        "sersync2_remote_owed_entries",
        "Fail-log entries owed to the remote.",
        "gauge",
        per(&|r| r.owed.to_string()),
    );
    gauge(
        "sersync2_remote_held_delete_paths",
        "Deletes the brake on mass deletes holds for the remote (until released or discarded).",
        "gauge",
        per(&|r| r.held_deletes.to_string()),
    );
    gauge(
        "sersync2_remote_deletes_held",
        "1 while the brake on mass deletes holds deletes (or a full sync) for the remote.",
        "gauge",
        per(&|r| u8::from(r.held_since.is_some()).to_string()),
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
    if let Some(p) = &s.plugin {
        let labels = format!(
            "{{plugin=\"{}\",mode=\"{}\"}}",
            label(&p.name),
            label(&p.mode)
        );
        gauge(
            "sersync2_plugin_runs_total",
            "Runs of the switched-on plugin (per file, or per push in batch mode).",
            "counter",
            vec![(labels.clone(), p.runs.to_string())],
        );
        gauge(
            "sersync2_plugin_failures_total",
            "Plugin runs that failed (non-zero exit, not started, killed); sync goes on.",
            "counter",
            vec![(labels.clone(), p.failed.to_string())],
        );
        gauge(
            "sersync2_plugin_dropped_paths_total",
            "Paths dropped for the plugin while too many waited for it.",
            "counter",
            vec![(labels, p.dropped.to_string())],
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
