//! The status document as people read it (`sersync2 --status` without `--json`). Every
//! string in it came over the network or a socket: no control character is printed as is.

use super::model::{remote_state, RemoteStatus, Status, LONG_PUSH};
use crate::sync::ledger::held_words;
use crate::sys::time::rfc3339;

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

/// What the brake on mass deletes holds for `r` and how to let it go, while it holds
/// something.
fn held_deletes(r: &RemoteStatus, config: &str) -> Option<String> {
    let p = printable;
    r.held_since.as_ref().map(|since| {
        format!(
            "DELETES HELD since {} by the brake on mass deletes ({}; the remote keeps \
             them): release with `sersync2 --release-deletes -o {}`, or drop them with \
             `sersync2 --discard-deletes -o {}`",
            p(since),
            held_words(r.held_deletes as u64, r.held_full),
            p(config),
            p(config),
        )
    })
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
            } else if let Some(secs) = r.stalled_push_seconds {
                format!(
                    "STALLED: a push running for {secs:.0}s (the remote stopped answering, or \
                     a transfer that long; rsync's I/O timeout ends a call that gets no \
                     answer){}{}",
                    if owed.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", owed.trim_end_matches(", "))
                    },
                    if r.held_since.is_some() {
                        format!(
                            ", {} held by the brake on mass deletes",
                            held_words(r.held_deletes as u64, r.held_full)
                        )
                    } else {
                        String::new()
                    }
                )
            } else if r.paused {
                // Deletes the brake holds are not among those waiting: said apart.
                let held = held_deletes(r, &s.config);
                format!(
                    "PAUSED: {} waiting, {}{}nothing is pushed to it until sersync2 \
                     --resume{}",
                    r.queued,
                    if held.is_some() {
                        format!("{} held, ", held_words(r.held_deletes as u64, r.held_full))
                    } else {
                        String::new()
                    },
                    if owed.is_empty() {
                        String::new()
                    } else {
                        owed.replace(", ", "; ")
                    },
                    held.map_or(String::new(), |h| format!("; {h}"))
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
                let state = remote_state(false, false, r.pending, r.owed, r.lag_seconds);
                if let Some(held) = held_deletes(r, &s.config) {
                    format!(
                        "{held}{}",
                        if notes.is_empty() {
                            String::new()
                        } else {
                            format!("; {}", notes.trim_end_matches(", "))
                        }
                    )
                } else if notes.is_empty() {
                    format!("ok ({state})")
                } else {
                    format!("ok ({state}), {}", notes.trim_end_matches(", "))
                }
            }
        ));
    }
    for r in &s.progress {
        out.push_str(&format!("in progress: {}\n", p(&r.line)));
    }
    if let Some(pl) = &s.plugin {
        out.push_str(&format!(
            "plugin {} (mode {}): {} run(s), {} failed",
            p(&pl.name),
            p(&pl.mode),
            pl.runs,
            pl.failed
        ));
        if pl.dropped > 0 {
            out.push_str(&format!(
                ", {} path(s) dropped (it could not keep up)",
                pl.dropped
            ));
        }
        if let Some(last) = &pl.last_failure {
            out.push_str(&format!(
                "; last failure{}: {}",
                pl.last_failure_at
                    .as_deref()
                    .map_or(String::new(), |at| format!(" at {}", p(at))),
                p(last)
            ));
        }
        out.push('\n');
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
        if r.skipped_paths > 0 {
            out.push_str(&format!(
                "watch root {}: {} path(s) not mirrorable: {} (last: {}); see the log\n",
                p(&r.path),
                r.skipped_paths,
                p(r.skipped_reason
                    .as_deref()
                    .unwrap_or("longer than rsync's limit")),
                p(r.skipped_last.as_deref().unwrap_or("?"))
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
