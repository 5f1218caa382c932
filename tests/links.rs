//! A user who can write in the watched tree swaps a directory for a link to a directory
//! only root can read, a few milliseconds after writing a file in it: `mkdir up/rN; echo
//! x > up/rN/f; mv up/rN up/rN.away; ln -s /root-only up/rN`. The push of `up/rN/f`
//! (or of a renamed directory) must never read through that link, whatever the timing:
//! rsync reads the tree through a `nosymfollow` mount. A fanotify mark on the remotes'
//! filesystem reads every file written there as it is closed, so content that was sent
//! and replaced a moment later is caught too. Run on both watchers (scripts/test.sh runs
//! this module again on fanotify) and both transports.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::support::*;

/// The root-only file's content: nothing else written during the test holds it.
const SECRET: &[u8] = b"ROOT-ONLY-CONTENT-4d1c9e\n";
/// What the attacker writes in each of its own files.
const OWN: &[u8] = b"x\n";
const ROUNDS: usize = 300;
const RENAME_ROUNDS: usize = 100;

/// What the remotes' filesystem saw written, file by file, while the attack ran.
#[derive(Debug, Default)]
struct Seen {
    /// Files under a remote that held the root-only content (their path when closed).
    secret: Vec<String>,
    /// Files under a remote that held the attacker's own content: shows the monitor
    /// saw the pushes at all.
    own: usize,
    /// The kernel's queue overflowed: some writes were not seen.
    overflow: bool,
}

/// Reads every file closed after writing on the filesystem of the remotes, through the
/// descriptor fanotify hands over (content renamed or deleted a moment later is still
/// read).
struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Seen>>,
}

impl Monitor {
    fn start(remotes: Vec<PathBuf>) -> Monitor {
        // SAFETY: plain syscall; the returned fd is owned below.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
                (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint,
            )
        };
        assert!(
            fd >= 0,
            "fanotify_init: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh fd owned here only.
        let group = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = std::ffi::CString::new(remotes[0].as_os_str().as_encoded_bytes())
            .expect("a path without NUL");
        // SAFETY: valid fd and NUL-terminated path.
        let rc = unsafe {
            libc::fanotify_mark(
                group.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                libc::FAN_CLOSE_WRITE,
                libc::AT_FDCWD,
                path.as_ptr(),
            )
        };
        assert_eq!(rc, 0, "fanotify_mark: {}", std::io::Error::last_os_error());
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || read_events(&group, &remotes, &stopping));
        Monitor {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("the monitor thread"))
            .unwrap_or_default()
    }
}

fn read_events(group: &OwnedFd, remotes: &[PathBuf], stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    let mut buf = vec![0u8; 64 * 1024];
    let meta_len = std::mem::size_of::<libc::fanotify_event_metadata>();
    loop {
        // Stop only after a poll that found nothing more once the stop was asked.
        let stopping = stop.load(Ordering::SeqCst);
        let mut p = libc::pollfd {
            fd: group.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, 100) };
        if rc <= 0 {
            if stopping {
                return seen;
            }
            continue;
        }
        // SAFETY: reading into our own buffer.
        let n = unsafe { libc::read(group.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let Ok(n) = usize::try_from(n) else { continue };
        let mut at = 0;
        while at + meta_len <= n {
            // SAFETY: the kernel wrote whole event records; read_unaligned copes with any
            // alignment of the buffer.
            let m: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
            if m.event_len == 0 {
                break;
            }
            at += m.event_len as usize;
            if m.mask & libc::FAN_Q_OVERFLOW != 0 {
                seen.overflow = true;
            }
            if m.fd < 0 {
                continue;
            }
            // SAFETY: the kernel gave us this fd with the event.
            let file = fs::File::from(unsafe { OwnedFd::from_raw_fd(m.fd) });
            let Ok(path) = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) else {
                continue;
            };
            if !remotes.iter().any(|r| path.starts_with(r)) {
                continue;
            }
            let mut head = [0u8; 256];
            let got = file.read_at(&mut head, 0).unwrap_or(0);
            if &head[..got] == SECRET {
                seen.secret.push(path.display().to_string());
            } else if &head[..got] == OWN {
                seen.own += 1;
            }
        }
    }
}

/// The root-only directory: `secret` (0700, root) holds `f` with the root-only content.
fn prepare(dir: &Dir, src: &Path) -> PathBuf {
    let open = |p: &Path, mode: u32| {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
    };
    open(dir.path(), 0o755);
    open(src, 0o755);
    let secret = dir.mkdir_p("secret");
    dir.write("secret/f", SECRET);
    open(&secret, 0o700);
    secret
}

/// The swap race, as the attacker: `rounds` times a fresh directory with a file of its
/// own, moved away and replaced by a link to `secret` right after the write.
const SWAP: &str = r#"cd "$1" || exit 1
i=0
while [ "$i" -lt "$2" ]; do
    i=$((i + 1))
    mkdir "r$i" && echo x > "r$i/f" && mv "r$i" "r$i.away" && ln -s "$3" "r$i" || exit 1
done
"#;

/// The renamed-directory race: each directory made earlier (`d1`..`dN`, synced) is
/// renamed, and the new name is at once moved away and replaced by a link to `secret`.
const RENAME: &str = r#"cd "$1" || exit 1
i=0
while [ "$i" -lt "$2" ]; do
    i=$((i + 1))
    mv "d$i" "e$i" && mv "e$i" "e$i.away" && ln -s "$3" "e$i" || exit 1
done
"#;

const MAKE_DIRS: &str = r#"cd "$1" || exit 1
i=0
while [ "$i" -lt "$2" ]; do
    i=$((i + 1))
    mkdir "d$i" && echo x > "d$i/f" || exit 1
done
"#;

fn as_attacker(attacker: &User, script: &str, up: &Path, rounds: usize, secret: &Path) {
    let out = attacker
        .command("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(up)
        .arg(rounds.to_string())
        .arg(secret)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run sh as the attacker");
    assert!(
        out.status.success(),
        "the attacker's loop failed: {}",
        text(&out)
    );
}

/// Both races against one running agent; `remotes` are the directories the remotes
/// write to, `logs` their logs for a failure's message.
fn race(
    dir: &Dir,
    src: &Path,
    agent: &mut Agent,
    attacker: &User,
    secret: &Path,
    remotes: &[PathBuf],
    logs: &dyn Fn() -> String,
) {
    // The attacker's directory, made while the agent watches.
    let up = src.join("up");
    fs::create_dir(&up).expect("mkdir up");
    std::os::unix::fs::chown(&up, Some(attacker.uid), Some(attacker.gid)).expect("chown up");
    wait_mirrored(agent, src, remotes, "before the attack", DEADLINE, logs);
    as_attacker(attacker, MAKE_DIRS, &up, RENAME_ROUNDS, secret);
    wait_mirrored(
        agent,
        src,
        remotes,
        "the directories to rename",
        DEADLINE,
        logs,
    );
    let synced = wait_synced(dir, 60);
    assert_eq!(synced.status.code(), Some(0), "{}", text(&synced));

    let monitor = Monitor::start(remotes.to_vec());
    as_attacker(attacker, SWAP, &up, ROUNDS, secret);
    as_attacker(attacker, RENAME, &up, RENAME_ROUNDS, secret);
    // Once nothing is owed, what reached the remotes is known.
    let synced = wait_synced(dir, 120);
    let seen = monitor.finish();
    let log = agent.log();
    let context = || {
        format!(
            "{seen:?}\n--- agent log (tail) ---\n{}\n{}",
            tail(&log, 40),
            logs()
        )
    };
    assert!(!seen.overflow, "the monitor missed events: {}", context());
    assert!(
        seen.secret.is_empty(),
        "{} root-only file(s) reached a remote: {}",
        seen.secret.len(),
        context()
    );
    assert!(
        seen.own > 0,
        "the monitor saw no push at all: {}",
        context()
    );
    assert_eq!(
        synced.status.code(),
        Some(0),
        "{}\n{}",
        text(&synced),
        context()
    );
    wait_mirrored(agent, src, remotes, "after the attack", DEADLINE, logs);
    // The links of the tree are on the remotes as links, pointing where they point here.
    for remote in remotes {
        for link in [format!("r{ROUNDS}"), format!("e{RENAME_ROUNDS}")] {
            let at = remote.join("up").join(&link);
            assert_eq!(
                fs::read_link(&at).ok().as_deref(),
                Some(secret),
                "{} is not the tree's link: {}",
                at.display(),
                context()
            );
        }
    }
}

// The push of `up/rN/f` read through `up/rN` after the user had swapped it for a link to
// a root-only directory, and sent the root-only `f`; the listing of a renamed directory
// did the same. Daemon transport.
#[test]
fn a_swapped_link_is_never_followed_over_the_daemon() {
    let Some(attacker) = User::create("swp") else {
        return;
    };
    let s = setup!();
    let secret = prepare(&s.dir, &s.src);
    let mut agent = s.agent(&[]);
    race(
        &s.dir,
        &s.src,
        &mut agent,
        &attacker,
        &secret,
        &s.remotes(),
        &|| s.logs(),
    );
    agent.stop();
}

// The same over ssh (the rename travels as a remote `mv` or plain).
#[test]
fn a_swapped_link_is_never_followed_over_ssh() {
    let Some(attacker) = User::create("sws") else {
        return;
    };
    let dir = test_dir!();
    let src = dir.mkdir_p("src");
    let secret = prepare(&dir, &src);
    let sshd = Sshd::start();
    let conf = Conf::ssh(&src, &sshd, &dir.join("fail.sh"));
    let mut agent = Agent::start(&dir, &conf, &[]);
    race(
        &dir,
        &src,
        &mut agent,
        &attacker,
        &secret,
        &[sshd.dest_dir()],
        &|| format!("--- sshd log ---\n{}", tail(&sshd.log(), 40)),
    );
    agent.stop();
}

// Every rsync the agent starts that reads a tree must come from `rsync::command_in`
// (confined, or plain where the guard cannot work); only `rsync --version` may start
// it otherwise. A new
// `Command::new("rsync")` elsewhere would read the tree following links again.
#[test]
fn rsync_is_started_only_through_the_confined_command() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read src").flatten() {
            let p = e.path();
            if p.is_dir() {
                // The simulator is test-only (`#[cfg(test)] mod sim`): its differential
                // test runs real rsync on purpose.
                if !p.ends_with("sync/sim") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs")
                && p.file_name().is_some_and(|n| n != "tests.rs")
            {
                let text = crate::layers::strip_tests(&fs::read_to_string(&p).expect("read"));
                let rel = p
                    .strip_prefix(&src)
                    .expect("under src")
                    .display()
                    .to_string();
                for _ in text.matches("Command::new(\"rsync\")") {
                    found.push(rel.clone());
                }
            }
        }
    }
    found.sort();
    let rsync = fs::read_to_string(src.join("sync/rsync/view.rs")).expect("read view.rs");
    // In sync/rsync/view.rs (the nosymfollow view): command_in where the guard cannot
    // work, and the helper after it entered the view (exec_in_view).
    assert_eq!(
        found,
        [
            "sync/rsync/view.rs",
            "sync/rsync/view.rs",
            "sync/version.rs"
        ],
        "rsync started outside rsync::command_in and its helper, and the version check"
    );
    let helper = rsync
        .split("pub fn exec_in_view(")
        .nth(1)
        .expect("rsync::exec_in_view");
    let enter = helper
        .find("nosymfollow::enter_here(")
        .expect("the helper enters the view");
    let start = helper
        .find("Command::new(\"rsync\")")
        .expect("the helper starts rsync");
    assert!(
        enter < start,
        "the helper enters the view before it starts rsync"
    );
    let command_in = rsync
        .split("pub fn command_in(")
        .nth(1)
        .expect("rsync::command_in");
    let body = &command_in[..command_in.find("\n}\n").expect("its end")];
    assert!(
        body.contains("Command::new(\"/proc/self/exe\")") && body.contains(".arg(IN_VIEW)"),
        "command_in starts rsync through the helper that confines it:\n{body}"
    );
}

// The helper the agent starts rsync through: it becomes rsync in the view, and says why
// when it cannot (the exit status then counts as a failed push, retried).
#[test]
fn the_rsync_helper_runs_rsync_in_the_view_or_says_why_not() {
    let dir = test_dir!();
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(sersync_bin())
            .arg("--rsync-in-view")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run sersync2 --rsync-in-view")
    };
    let bad = run(&["/only-one".as_ref()]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    // A view that cannot be made: the root is missing.
    let missing = dir.join("missing");
    let view = dir.mkdir_p("view");
    let out = run(&[
        missing.as_os_str(),
        view.as_os_str(),
        "--".as_ref(),
        "--version".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot make the nosymfollow view"),
        "{}",
        text(&out)
    );
    // As root on Linux 5.12+: rsync runs, in the view.
    let root = dir.mkdir_p("tree");
    let out = run(&[
        root.as_os_str(),
        view.as_os_str(),
        "--".as_ref(),
        "--version".as_ref(),
    ]);
    if out.status.code() == Some(126) {
        eprintln!("skipped: {}", text(&out));
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rsync"),
        "{}",
        text(&out)
    );
    assert_eq!(
        fs::read_dir(&view).expect("view").count(),
        0,
        "nothing left outside"
    );
}
