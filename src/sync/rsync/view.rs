//! The nosymfollow view every rsync that reads a tree runs in (`sys::nosymfollow`):
//! whether it can be made here, and the command that enters it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::sys::{fsafe, nosymfollow};

/// The answer of [`link_guard`] once known for this process.
static LINK_GUARD: OnceLock<Result<(), Unguarded>> = OnceLock::new();

/// Why rsync cannot read the trees through the nosymfollow view ([`link_guard`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unguarded {
    /// Not root: no mounts (`user` as `fsafe::describe_user` writes it).
    #[error("the agent runs as {user}, not as root; it needs root (CAP_SYS_ADMIN)")]
    NotRoot { user: String },
    /// The mount point cannot be made (`why`: the error).
    #[error("no mount point: {why}")]
    NoMountPoint { why: String },
    /// The kernel cannot make the view here (`why`: the error with what would help).
    #[error("{why}")]
    Unsupported { why: String },
}

/// Where rsync sees the watch root in its own mount namespace: an empty directory in
/// root's own `/run/sersync2` (nobody else can replace it), shared by every instance
/// (each mount is private to one rsync). rsync's messages name paths below it.
pub const VIEW: &str = "/run/sersync2/view";

/// Can rsync read the trees through a view that follows no symbolic link (a private
/// `nosymfollow` bind mount of the watch root at [`VIEW`], see `sys::nosymfollow`)?
/// Tried once per process, on `root`. `Err` (why not) when it cannot work here: not
/// root, no CAP_SYS_ADMIN, or a kernel before 5.12; rsync then runs as before
/// ([`guarded`] warns once). A failure that may pass (the root missing just now, no
/// memory) is not remembered and answers `Ok`: the runs stay confined, and fail and are
/// retried until it works.
pub fn link_guard(root: &Path) -> Result<(), Unguarded> {
    if let Some(known) = LINK_GUARD.get() {
        return known.clone();
    }
    let uid = fsafe::euid();
    if uid != 0 {
        // Mounts need CAP_SYS_ADMIN, and the mount point lives in root's /run/sersync2.
        return LINK_GUARD
            .get_or_init(|| {
                Err(Unguarded::NotRoot {
                    user: fsafe::describe_user(uid),
                })
            })
            .clone();
    }
    let view = Path::new(VIEW);
    // Its parent first, as the lock directory is made (0755, root's own).
    let made = view
        .parent()
        .map_or(Ok(PathBuf::new()), |p| fsafe::private_dir(p, 0o755))
        .and_then(|_| fsafe::private_dir(view, 0o755));
    if let Err(e) = made {
        let why = Unguarded::NoMountPoint { why: e.to_string() };
        return if fsafe::is_refused(&e) {
            // Something only root can have put there: said, and tried again next time.
            Err(why)
        } else if e.kind() == std::io::ErrorKind::PermissionDenied {
            LINK_GUARD.get_or_init(|| Err(why)).clone()
        } else {
            // Passing (no space, /run read-only for now): the runs fail and are retried.
            Ok(())
        };
    }
    match nosymfollow::probe(root, view) {
        Ok(()) => LINK_GUARD.get_or_init(|| Ok(())).clone(),
        Err(e) if nosymfollow::is_unsupported(&e) => LINK_GUARD
            .get_or_init(|| {
                Err(Unguarded::Unsupported {
                    why: unguarded_reason(&e),
                })
            })
            .clone(),
        Err(e) => {
            log::debug!("the nosymfollow view of {} failed now: {e}", root.display());
            Ok(())
        }
    }
}

/// Why the nosymfollow view is impossible, with what would make it work.
fn unguarded_reason(e: &nosymfollow::SetupError) -> String {
    let hint = match e.errno {
        libc::ENOSYS => "it needs Linux 5.12 or later",
        libc::EPERM | libc::EACCES => "it needs CAP_SYS_ADMIN: run the agent as root",
        _ => "it needs Linux 5.12 or later and CAP_SYS_ADMIN",
    };
    format!("{e}; {hint}")
}

/// The one warning of an agent whose rsync follows links in the tree.
pub fn unguarded_warning(why: &str) -> String {
    format!(
        "rsync reads the watch roots without the nosymfollow guard ({why}): a user who can \
         write in a tree can swap a directory for a link while a push waits, and rsync then \
         sends what the link points to, as this user can read it"
    )
}

/// [`link_guard`], with one warning per process when rsync must read the trees without
/// it (at start, or at the first push).
pub fn guarded(root: &Path) -> bool {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    match link_guard(root) {
        Ok(()) => true,
        Err(why) => {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log::warn!("{}", unguarded_warning(&why.to_string()));
            }
            false
        }
    }
}

/// `rsync`, ready to run in `cwd` (its arguments to be added): where [`link_guard`]
/// allows it, confined to a view of `cwd` that follows no symbolic link. Used by every
/// rsync that reads a tree.
///
/// The view is made by a fresh copy of this program (`/proc/self/exe` [`IN_VIEW`] ROOT
/// VIEW `--`, see [`exec_in_view`]), which sets it up in itself and becomes rsync: the
/// agent spawns it without forking (posix_spawn), as it spawns rsync otherwise. A hook
/// run between fork and exec in the agent itself would fork the whole agent for every
/// call, whose page tables grow with the tree (6 ms more per call at 120 MB).
pub fn command_in(cwd: &Path) -> std::io::Result<Command> {
    if !guarded(cwd) {
        let mut cmd = Command::new("rsync");
        cmd.current_dir(cwd);
        return Ok(cmd);
    }
    let view = Path::new(VIEW);
    if !view.is_dir() {
        // Removed while the agent runs: made again (checked as at start), else the
        // spawn says what is missing instead of failing on a bare ENOENT.
        fsafe::private_dir(view, 0o755).map_err(|e| {
            std::io::Error::new(e.kind(), format!("no mount point for rsync's view: {e}"))
        })?;
    }
    let mut cmd = Command::new("/proc/self/exe");
    cmd.current_dir(cwd)
        .arg(IN_VIEW)
        .arg(cwd)
        .arg(view)
        .arg("--");
    Ok(cmd)
}

/// The first argument that makes `sersync2` the helper of [`command_in`] (not an option
/// of its command line: `main` looks for it before parsing).
pub const IN_VIEW: &str = "--rsync-in-view";

/// The helper of [`command_in`]: `args` are ROOT VIEW `--` and rsync's arguments. Sets up
/// the nosymfollow view of ROOT at VIEW in this process and becomes `rsync ARGS`; returns
/// only when that failed, with the exit status to leave with (its reason on stderr):
/// 126 when the view could not be made, 127 when rsync is not found.
pub fn exec_in_view(args: &[OsString]) -> u8 {
    let [root, view, dashes, rsync_args @ ..] = args else {
        eprintln!("sersync2: {IN_VIEW} ROOT VIEW -- RSYNC-ARGS...");
        return 2;
    };
    if dashes != "--" {
        eprintln!("sersync2: {IN_VIEW} ROOT VIEW -- RSYNC-ARGS...");
        return 2;
    }
    if let Err(e) = nosymfollow::enter_here(Path::new(root), Path::new(view)) {
        eprintln!(
            "sersync2: cannot make the nosymfollow view of {} at {}: {e}",
            Path::new(root).display(),
            Path::new(view).display()
        );
        return 126;
    }
    use std::os::unix::process::CommandExt;
    let e = Command::new("rsync").args(rsync_args).exec();
    eprintln!("sersync2: cannot run rsync: {e}");
    if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}
