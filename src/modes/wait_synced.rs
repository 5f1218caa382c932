//! `--wait-synced`: a barrier for deploy scripts. It returns 0 once every change made
//! before the call has reached every remote (or the `--remote` ones), 1 when the
//! `--timeout` passes first (naming the remotes behind and by how much), 2 on usage
//! errors.
//!
//! The command line asks the running instance over its control socket
//! (`wait-synced {"timeout_seconds":..,"remotes":[..]}`); the instance answers when the
//! barrier is passed or the timeout is over ([`serve`]). Exact, not a sleep: for each
//! watch root of the remotes asked about, the agent creates and at once deletes a sync
//! cookie (`<root>/.sersync2-cookie-<pid>-<32 random hex digits>`, never pushed, kept out
//! of full syncs). The name cannot be guessed, and the file is created with `O_EXCL`: a
//! name someone planted in the root (a user who can write there) is never taken for the
//! cookie, and the agent just draws another name, so planted names neither block the
//! barrier nor pass it early.
//! inotify keeps the order of one instance's events, so once the filter thread meets the
//! cookie every earlier event of that root is queued, and the queue records each
//! remote's checkpoint then (`Queue::cookies_seen`). The barrier is passed for a remote
//! when nothing waiting, in flight or owed to it carries a change at or before its
//! checkpoint: a path changed again after the call does not hold it back once its
//! earlier change was pushed; a failed push holds it until the path is pushed. A cookie
//! not seen within [`COOKIE_AGAIN`] (its event lost to a queue overflow, or the root not
//! watched) is made again under a new name. A paused remote (`--pause`) holds the barrier
//! like any other that has not had the changes: it waits, and at the timeout says that
//! the remote is paused.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{runtime, usage, Exit};
use crate::cli::Args;
use crate::filter::COOKIE_PREFIX;
use crate::service::{control, daemon};
use crate::sync::{Mirror, RemoteId};
use crate::sys::random_u64;

/// The control command.
pub const COMMAND: &str = "wait-synced";

/// A cookie not seen in this time is made again under a new name.
pub const COOKIE_AGAIN: Duration = Duration::from_secs(2);

/// `--timeout` when none is given.
pub const DEFAULT_TIMEOUT: u64 = 60;

/// How long "forever" (`--timeout 0`) is.
const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What the command line asks.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    /// 0 waits for ever.
    timeout_seconds: u64,
    /// Remote labels (`host::module`, `host:dir`); empty means every remote.
    #[serde(default)]
    remotes: Vec<String>,
}

/// One watch root's cookie, while the barrier waits for it.
struct Cookie {
    root: PathBuf,
    name: Option<Vec<u8>>,
    made: Instant,
    /// Each remote's checkpoint, once the filter thread met the cookie.
    marks: Option<Vec<(RemoteId, u64)>>,
    error: Option<String>,
    /// Since when the root is gone (not at its path, or not the directory watched),
    /// while it is.
    gone_since: Option<Instant>,
}

/// A watch root gone this long ends the wait at once, saying so: nothing is pushed from
/// it until a directory is back at its path and watched, so the barrier cannot pass
/// (shorter gaps, a root moved aside and another moved in, are waited for).
pub const ROOT_GONE_GRACE: Duration = COOKIE_AGAIN;

/// Why the barrier cannot pass while the root is gone, for the answer.
fn root_gone(why: &str) -> String {
    format!(
        "{why}: nothing is pushed from it until a directory is back at its path and watched \
         again, so the changes made before this call cannot reach the remotes; make the \
         directory again (or put the right one back) and run --wait-synced again"
    )
}

/// A fresh cookie name: the pid (for people) and 128 random bits (nobody can plant it
/// ahead).
fn cookie_name(random: (u64, u64)) -> Vec<u8> {
    format!(
        "{COOKIE_PREFIX}{}-{:016x}{:016x}",
        std::process::id(),
        random.0,
        random.1
    )
    .into_bytes()
}

/// How many names are tried when each is taken already (only planted names are).
const COOKIE_TRIES: usize = 8;

/// Creates a cookie in `root` under a fresh name and deletes it at once; its events are
/// what counts. `expect` is told each name before its file is made (so its event is not
/// missed) and `forget` each name whose file someone else had made: a name taken is
/// never used, another is drawn. Returns the name of the cookie made.
fn make_cookie(
    root: &Path,
    mut draw: impl FnMut() -> (u64, u64),
    expect: impl Fn(&[u8]),
    forget: impl Fn(&[u8]),
) -> std::io::Result<Vec<u8>> {
    let mut tries = 0;
    loop {
        let name = cookie_name(draw());
        expect(&name);
        let path = root.join(std::ffi::OsStr::from_bytes(&name));
        let made = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        match made {
            Ok(_) => {
                std::fs::remove_file(&path)?;
                return Ok(name);
            }
            Err(e) => {
                forget(&name);
                tries += 1;
                if e.kind() != std::io::ErrorKind::AlreadyExists || tries >= COOKIE_TRIES {
                    return Err(e);
                }
            }
        }
    }
}

fn refused(message: String) -> Value {
    json!({ "ok": false, "command": COMMAND, "usage": true, "error": message })
}

/// The running instance's side: waits for the barrier (or the timeout) and answers.
pub fn serve(mirror: &Mirror, body: &str) -> Value {
    let req: Request = match serde_json::from_str(body) {
        Ok(r) => r,
        Err(e) => return refused(format!("bad {COMMAND} request ({e})")),
    };
    let targets = mirror.targets();
    let selected: Vec<RemoteId> = if req.remotes.is_empty() {
        mirror.all()
    } else {
        let known: BTreeSet<String> = targets.iter().map(|t| t.label()).collect();
        if let Some(bad) = req.remotes.iter().find(|r| !known.contains(*r)) {
            return refused(format!(
                "no remote {bad:?} in this instance's config; its remotes are: {}",
                known.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        mirror
            .all()
            .into_iter()
            .filter(|t| req.remotes.contains(&targets[t.index()].label()))
            .collect()
    };
    let started = Instant::now();
    let until = match req.timeout_seconds {
        0 => started.checked_add(FOREVER),
        s => started.checked_add(Duration::from_secs(s)),
    }
    .unwrap_or(started + Duration::from_secs(DEFAULT_TIMEOUT));
    let mut cookies: Vec<Cookie> = Vec::new();
    for t in &selected {
        let root = &targets[t.index()].root;
        if !cookies.iter().any(|c| &c.root == root) {
            cookies.push(Cookie {
                root: root.clone(),
                name: None,
                made: started,
                marks: None,
                error: None,
                gone_since: None,
            });
        }
    }
    // Any remote of a root gives its health.
    let health = |root: &Path| -> Option<String> {
        let t = selected.iter().find(|t| targets[t.index()].root == root)?;
        mirror.root_unsafe(*t)
    };
    let mut gone: Option<String> = None;
    let queue = mirror.queue();
    let mut synced = vec![false; targets.len()];
    let mut closed = false;
    loop {
        let now = Instant::now();
        for c in cookies.iter_mut().filter(|c| c.marks.is_none()) {
            if (c.name.is_some() || c.error.is_some()) && now < c.made + COOKIE_AGAIN {
                continue;
            }
            if let Some(old) = c.name.take() {
                queue.forget_cookie(&old);
            }
            let made = make_cookie(
                &c.root,
                || (random_u64(), random_u64()),
                |n| queue.expect_cookie(n),
                |n| queue.forget_cookie(n),
            );
            match made {
                Ok(name) => {
                    c.name = Some(name);
                    c.error = None;
                    c.gone_since = None;
                }
                Err(e) => {
                    // Not there, or not the directory watched: the root is gone.
                    let lost = health(&c.root).or_else(|| {
                        (e.kind() == std::io::ErrorKind::NotFound)
                            .then(|| format!("the watch root {} does not exist", c.root.display()))
                    });
                    match lost {
                        Some(why) => {
                            let since = *c.gone_since.get_or_insert(now);
                            c.error = Some(root_gone(&why));
                            if now.duration_since(since) >= ROOT_GONE_GRACE {
                                gone = c.error.clone();
                            }
                        }
                        None => {
                            c.gone_since = None;
                            c.error = Some(format!(
                                "cannot create the sync cookie in {}: {e}; the agent's user \
                                 must be able to create a file there",
                                c.root.display()
                            ))
                        }
                    }
                }
            }
            c.made = now;
        }
        if gone.is_some() {
            break;
        }
        let wake = cookies
            .iter()
            .filter(|c| c.marks.is_none())
            .map(|c| c.made + COOKIE_AGAIN)
            .fold(until, Instant::min);
        let done = queue.wait_for(wake, |v| {
            closed = v.closed();
            for c in cookies.iter_mut().filter(|c| c.marks.is_none()) {
                if let Some(m) = c.name.as_deref().and_then(|n| v.cookie(n)) {
                    c.marks = Some(m.to_vec());
                }
            }
            for &t in &selected {
                let root = &targets[t.index()].root;
                synced[t.index()] = cookies
                    .iter()
                    .filter(|c| &c.root == root)
                    .filter_map(|c| c.marks.as_ref())
                    .flatten()
                    .find(|(r, _)| *r == t)
                    .is_some_and(|&(_, seq)| v.passed(t, seq));
            }
            closed || selected.iter().all(|t| synced[t.index()])
        });
        if done || Instant::now() >= until {
            break;
        }
    }
    for name in cookies.iter().filter_map(|c| c.name.as_deref()) {
        queue.forget_cookie(name);
    }
    let snap = mirror.snapshot();
    let all = selected.iter().all(|t| synced[t.index()]);
    let remotes: Vec<Value> = selected
        .iter()
        .filter_map(|t| {
            let r = snap.remotes.get(t.index())?;
            Some(json!({
                "remote": r.remote,
                "root": r.root.display().to_string(),
                "synced": synced[t.index()],
                "pending": r.pending,
                "owed": r.owed,
                "lag_seconds": r.lag.as_secs_f64(),
                "failing": r.failing,
                "paused": r.paused,
                "held_deletes": r.held_deletes,
                "held_full": r.held_full,
                "deletes_held": r.held_since.is_some(),
                "last_error": r.last_error,
            }))
        })
        .collect();
    let roots: Vec<Value> = cookies
        .iter()
        .map(|c| {
            json!({
                "root": c.root.display().to_string(),
                "cookie_seen": c.marks.is_some(),
                "error": c.error,
            })
        })
        .collect();
    let mut v = json!({
        "ok": all && !closed,
        "command": COMMAND,
        "pid": std::process::id(),
        "timed_out": !all && !closed,
        "waited_seconds": started.elapsed().as_secs_f64(),
        "remotes": remotes,
        "roots": roots,
    });
    if closed && !all {
        v["error"] = json!(
            "the instance is stopping or reloading its config; run --wait-synced again once it runs"
        );
    } else if let (Some(why), false) = (gone, all) {
        v["timed_out"] = json!(false);
        v["error"] = json!(why);
    }
    v
}

/// `sersync2 --wait-synced -o FILE [--timeout SECONDS] [--remote LABEL ...]`. The
/// instance is found from the config's path (`daemon::lock_file`), with or without the
/// `--pid-file` it was started with; the config itself is not read.
pub fn wait_synced(args: &Args) -> Result<u8, Exit> {
    let timeout = args.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let started = Instant::now();
    let deadline = (timeout > 0).then(|| started + Duration::from_secs(timeout));
    // A reload closes the control socket for a moment and answers a wait in progress
    // with "reloading": within the timeout (and for at most RELOAD_GRACE without any
    // socket), ask again rather than fail.
    let mut missing_until = started + RELOAD_GRACE;
    let pid_file = daemon::lock_file(&args.config);
    let socket = control::socket_path(&pid_file);
    loop {
        let now = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(now).as_secs().max(1));
        let request = format!(
            "{COMMAND} {}",
            json!(Request {
                timeout_seconds: left.unwrap_or(0),
                remotes: args.remote.clone(),
            })
        );
        if request.len() >= control::MAX_REQUEST {
            return Err(usage(anyhow!(
                "--remote: the labels are too long together (over {} bytes); ask for fewer \
                 remotes at a time",
                control::MAX_REQUEST
            )));
        }
        // The instance answers when its own wait ends; a margin on top.
        let wait = match left {
            None => FOREVER,
            Some(s) => Duration::from_secs(s + 30),
        };
        let in_time = deadline.is_none_or(|d| Instant::now() < d);
        match control::ask(&socket, &request, wait) {
            Err(control::AskError::Missing(_))
                if in_time
                    && (Instant::now() < missing_until
                        || (started.elapsed() < RELOAD_WAIT_MAX
                            && daemon::InstanceLock::running(&pid_file).is_ok())) =>
            {
                // The socket comes back after a reload; while the instance still holds
                // its lock, a reload that waits for a long push is still under way.
                std::thread::sleep(RETRY_PAUSE);
            }
            // The connection closed before an answer: a reload in progress (the socket
            // goes away next, and comes back), at any time of a long wait.
            Err(control::AskError::Closed(_)) if in_time => {
                missing_until = Instant::now() + RELOAD_GRACE;
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(e) => {
                return Err(match e {
                    control::AskError::Missing(e)
                        if daemon::InstanceLock::running(&pid_file).is_ok() =>
                    {
                        runtime(anyhow!(
                            "the instance holding {} (pid {}) did not answer on {} within the \
                             timeout ({e}): it may be reloading and waiting for a push to a \
                             remote that hangs; ask again, or see its log",
                            pid_file.display(),
                            daemon::InstanceLock::holder(&pid_file)
                                .map_or_else(|| "?".to_owned(), |p| p.to_string()),
                            socket.display()
                        ))
                    }
                    control::AskError::Missing(e) => runtime(anyhow!(
                        "no running sersync2 answers on {} ({e}): start the agent for {}; \
                         nothing can be synced while none runs",
                        socket.display(),
                        args.config.display()
                    )),
                    control::AskError::Refused(e) => {
                        runtime(anyhow!("refusing the control socket: {e}"))
                    }
                    control::AskError::Closed(m) | control::AskError::Failed(m) => {
                        runtime(anyhow!(
                            "asking the running instance over {} failed: {m}",
                            socket.display()
                        ))
                    }
                })
            }
            Ok(answer) => {
                let reloading = answer["ok"].as_bool() != Some(true)
                    && (answer["starting"].as_bool() == Some(true)
                        || answer["error"]
                            .as_str()
                            .is_some_and(|e| e.contains("stopping or reloading")));
                if reloading && deadline.is_none_or(|d| Instant::now() < d) {
                    std::thread::sleep(RETRY_PAUSE);
                    continue;
                }
                return report(&answer, timeout);
            }
        }
    }
}

/// How long `--wait-synced` asks again while no socket answers (a reload in progress).
const RELOAD_GRACE: Duration = Duration::from_secs(10);

/// How long `--wait-synced` asks again, at most, while the socket is away but the
/// instance holds its lock (a reload waiting for a push to a remote that hangs: rsync's
/// I/O timeout ends that push).
const RELOAD_WAIT_MAX: Duration = Duration::from_secs(300);

/// The pause between two such asks.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Prints the answer; 0 when every remote asked about is level.
fn report(answer: &Value, timeout: u64) -> Result<u8, Exit> {
    let remotes = answer["remotes"].as_array().cloned().unwrap_or_default();
    if answer["ok"].as_bool() == Some(true) {
        println!(
            "synced: every change made before the call is on {} remote(s) (waited {:.2}s)",
            remotes.len(),
            answer["waited_seconds"].as_f64().unwrap_or(0.0)
        );
        return Ok(0);
    }
    if let Some(e) = answer.get("error").and_then(Value::as_str) {
        if answer["usage"].as_bool() == Some(true) {
            return Err(usage(anyhow!("{e}")));
        }
        if remotes.is_empty() {
            return Err(runtime(anyhow!("the running instance refused: {e}")));
        }
    }
    let mut behind = Vec::new();
    for r in &remotes {
        if r["synced"].as_bool() == Some(true) {
            continue;
        }
        let name = r["remote"].as_str().unwrap_or("?");
        let mut line = format!(
            "behind: {name} ({}): {} pending, {} owed, lag {:.1}s",
            r["root"].as_str().unwrap_or("?"),
            r["pending"].as_u64().unwrap_or(0),
            r["owed"].as_u64().unwrap_or(0),
            r["lag_seconds"].as_f64().unwrap_or(0.0)
        );
        if r["failing"].as_bool() == Some(true) {
            line.push_str(&format!(
                ", failing: {}",
                r["last_error"].as_str().unwrap_or("(no error recorded)")
            ));
        }
        if r["paused"].as_bool() == Some(true) {
            line.push_str(", paused: nothing is pushed to it until sersync2 --resume");
        }
        if r["deletes_held"].as_bool() == Some(true) {
            line.push_str(&format!(
                ", deletes held by the brake on mass deletes ({}): sersync2 \
                 --release-deletes or --discard-deletes",
                crate::sync::ledger::held_words(
                    r["held_deletes"].as_u64().unwrap_or(0),
                    r["held_full"].as_bool() == Some(true)
                )
            ));
        }
        println!("{line}");
        behind.push(name.to_owned());
    }
    for root in answer["roots"].as_array().into_iter().flatten() {
        if root["cookie_seen"].as_bool() == Some(true) {
            continue;
        }
        let path = root["root"].as_str().unwrap_or("?");
        match root["error"].as_str() {
            Some(e) => println!("watch root {path}: {e}"),
            None => println!(
                "watch root {path}: its events were not read in time (is it watched? see \
                 --status)"
            ),
        }
    }
    if let Some(e) = answer.get("error").and_then(Value::as_str) {
        return Err(runtime(anyhow!("{e}")));
    }
    Err(runtime(anyhow!(
        "not synced within {timeout}s: {} behind; the agent keeps pushing, see --status",
        behind.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn cookie_names_cannot_be_guessed() {
        let a = cookie_name((1, 2));
        let b = cookie_name((random_u64(), random_u64()));
        let c = cookie_name((random_u64(), random_u64()));
        assert_ne!(b, c);
        let text = String::from_utf8(a).expect("ascii");
        let pid = std::process::id();
        assert_eq!(
            text,
            format!("{COOKIE_PREFIX}{pid}-00000000000000010000000000000002")
        );
        assert!(crate::filter::is_cookie(&b));
    }

    // A user who planted `.sersync2-cookie-<pid>-<n>` for the next names made every
    // --wait-synced time out ("File exists"): a planted name is now skipped, never used.
    #[test]
    fn a_planted_cookie_name_is_skipped_for_a_fresh_one() {
        let d = tempfile::tempdir().expect("tempdir");
        let planted = cookie_name((7, 7));
        std::fs::write(d.path().join(std::ffi::OsStr::from_bytes(&planted)), b"x").expect("plant");
        let draws = RefCell::new(vec![(8, 8), (7, 7)]);
        let expected = RefCell::new(Vec::new());
        let forgotten = RefCell::new(Vec::new());
        let made = make_cookie(
            d.path(),
            || draws.borrow_mut().pop().expect("a draw"),
            |n| expected.borrow_mut().push(n.to_vec()),
            |n| forgotten.borrow_mut().push(n.to_vec()),
        )
        .expect("a fresh name");
        assert_eq!(made, cookie_name((8, 8)));
        assert_eq!(*expected.borrow(), [planted.clone(), made.clone()]);
        assert_eq!(
            *forgotten.borrow(),
            std::slice::from_ref(&planted),
            "the planted name is not awaited"
        );
        assert!(
            d.path()
                .join(std::ffi::OsStr::from_bytes(&planted))
                .exists(),
            "the planted file is left alone"
        );
        assert!(
            !d.path().join(std::ffi::OsStr::from_bytes(&made)).exists(),
            "the cookie is deleted at once"
        );
        // Every name taken: an error after a few tries, not a loop.
        let err = make_cookie(d.path(), || (7, 7), |_| {}, |_| {}).expect_err("all taken");
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    }
}
