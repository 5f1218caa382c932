//! Running rsync and the remote `mv` as child processes, never through a shell: the
//! `Runner` the workers call, the children running (niced when long), and their end.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::outcome::{condense, Outcome, STDERR_READ};
use super::progress2::{Feed, Latest};
use super::view::command_in;
use crate::sys::process::{exits_within, wait_unreaped};
use crate::sys::{memfile, process};

/// Runs the commands a worker needs (rsync, and the remote `mv` of a rename over ssh).
/// The agent runs processes ([`Processes`]); the simulator (`sync::sim`) answers them
/// from its model of rsync, so the same worker code runs under both.
pub trait Runner: Send + Sync {
    fn run(
        &self,
        program: &OsStr,
        cwd: &Path,
        argv: &[OsString],
        stdin: &[u8],
        watch: Watch,
    ) -> Outcome;

    /// [`Runner::run`] of an rsync that writes its progress records on stdout (a full
    /// sync with [`super::progress2::OPTION`]): the latest figures go into `progress`
    /// while it runs. The simulator's calls write none: by default, [`Runner::run`].
    fn run_showing(
        &self,
        program: &OsStr,
        cwd: &Path,
        argv: &[OsString],
        stdin: &[u8],
        watch: Watch,
        progress: &Arc<Latest>,
    ) -> Outcome {
        let _ = progress;
        self.run(program, cwd, argv, stdin, watch)
    }
}

/// Runs each command as a child process, never through a shell.
///
/// No pipe to wait on: stdin comes from an anonymous file holding `stdin`, stderr goes
/// to another, whose tail is read after rsync exits. stdout goes nowhere, but for a
/// full sync's progress records ([`Runner::run_showing`]): a pipe that a thread of its
/// own drains as they come, so rsync never waits on it. Anything that keeps rsync from
/// starting (no temp file, fork refused under a process limit, too many open files) is
/// an ordinary failed run, status -1, with the OS error in `stderr`.
pub struct Processes;

impl Runner for Processes {
    fn run(
        &self,
        program: &OsStr,
        cwd: &Path,
        argv: &[OsString],
        stdin: &[u8],
        watch: Watch,
    ) -> Outcome {
        // rsync reads a tree: in its nosymfollow view ([`command_in`]); the remote
        // `mv` of a rename (ssh) reads nothing here.
        launch(program, cwd, argv, stdin, watch, program == "rsync", None)
    }

    fn run_showing(
        &self,
        program: &OsStr,
        cwd: &Path,
        argv: &[OsString],
        stdin: &[u8],
        watch: Watch,
        progress: &Arc<Latest>,
    ) -> Outcome {
        launch(program, cwd, argv, stdin, watch, true, Some(progress))
    }
}

/// What the worker does while its child runs, besides waiting.
#[derive(Debug, Clone, Copy)]
pub enum Watch {
    /// A push still running after this long is lowered (see [`LONG_PUSH`]).
    LowerAfter(Duration),
    /// A short command (the remote `mv` of a rename) still running after this long is
    /// killed: a hung remote must not hold the paths it names.
    KillAfter(Duration),
}

/// Runs `program argv` in `cwd` for [`Processes`]: `confined`, rsync in its view of
/// `cwd` ([`command_in`]); `progress`: its stdout read for progress records.
fn launch(
    program: &OsStr,
    cwd: &Path,
    argv: &[OsString],
    stdin: &[u8],
    watch: Watch,
    confined: bool,
    progress: Option<&Arc<Latest>>,
) -> Outcome {
    let started = Instant::now();
    let failed = |what: &str, e: std::io::Error| Outcome {
        status: if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            -1
        },
        stderr: format!("{what}: {e}"),
        elapsed: started.elapsed(),
    };
    let err_file = match memfile::create(c"rsync-stderr") {
        Ok(f) => f,
        Err(e) => return failed("cannot create a file for rsync's stderr", e),
    };
    let input = if stdin.is_empty() {
        Stdio::null()
    } else {
        match memfile::with_contents(c"rsync-stdin", stdin) {
            Ok(f) => Stdio::from(f),
            Err(e) => return failed("cannot create a file for rsync's stdin", e),
        }
    };
    let err_out = match err_file.try_clone() {
        Ok(f) => f,
        Err(e) => return failed("cannot create a file for rsync's stderr", e),
    };
    let cmd = if confined {
        command_in(cwd)
    } else {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd);
        Ok(cmd)
    };
    let mut cmd = match cmd {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                status: -1,
                stderr: format!("cannot run rsync in {}: {e}", cwd.display()),
                elapsed: started.elapsed(),
            }
        }
    };
    // Without a pipe and a thread to drain it (none left: a process or thread limit),
    // the call runs as any other, its records not read.
    let (out, reading) = match progress.map(read_progress) {
        Some(Ok((writer, reading))) => (Stdio::from(writer), Some(reading)),
        Some(Err(e)) => {
            log::debug!("rsync's progress not read: {e}");
            (Stdio::null(), None)
        }
        None => (Stdio::null(), None),
    };
    let child = cmd
        .args(argv)
        .stdin(input)
        .stdout(out)
        .stderr(err_out)
        .spawn();
    // The pipe's write end, kept by the command, closed here: the reader sees its end
    // when rsync's ends.
    drop(cmd);
    let mut child = match child {
        Ok(c) => c,
        Err(e) if !cwd.is_dir() => {
            // A missing working directory fails the spawn with ENOENT too: that is the
            // watch root gone, not rsync missing.
            return Outcome {
                status: -1,
                stderr: format!("cannot run rsync in {}: {e}", cwd.display()),
                elapsed: started.elapsed(),
            };
        }
        Err(e) => return failed(&format!("cannot run {}", program.to_string_lossy()), e),
    };
    let pid = child.id();
    running().push(pid);
    let killed = match watch {
        Watch::LowerAfter(after) => {
            if !exits_within(pid, after) {
                lower(pid, after);
            }
            None
        }
        Watch::KillAfter(after) => (!exits_within(pid, after)).then(|| {
            // `pid` is our unreaped child (in the registry).
            let _ = process::kill(pid, libc::SIGKILL);
            after
        }),
    };
    wait_unreaped(pid);
    // Still unreaped: its pid cannot have been reused while it was in the registry.
    running().retain(|p| *p != pid);
    let status = match child.wait() {
        Ok(s) => s.code().unwrap_or(-1),
        Err(_) => -1,
    };
    if let Some(done) = reading {
        // Its last records read. A process rsync started that kept the pipe open would
        // keep the thread (only it) waiting; the call does not wait for that.
        let _ = done.recv_timeout(Duration::from_secs(1));
    }
    let mut stderr = condense(&memfile::tail(&err_file, STDERR_READ));
    if let Some(after) = killed {
        stderr.push_str(&format!(
            "\n{} killed after {}s without an answer",
            program.to_string_lossy(),
            after.as_secs()
        ));
    }
    Outcome {
        status,
        stderr,
        elapsed: started.elapsed(),
    }
}

/// A pipe for rsync's stdout and a thread reading its progress records into
/// `progress` until the pipe's end (said on the returned channel); the write end for
/// the child.
fn read_progress(
    progress: &Arc<Latest>,
) -> std::io::Result<(std::io::PipeWriter, crossbeam_channel::Receiver<()>)> {
    let (mut reader, writer) = std::io::pipe()?;
    let (done, ended) = crossbeam_channel::bounded(1);
    let latest = Arc::clone(progress);
    std::thread::Builder::new()
        .name("rsync-progress".into())
        .spawn(move || {
            let mut feed = Feed::default();
            let mut buf = [0u8; 16 << 10];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if feed.push(&buf[..n]) {
                            if let Some(f) = feed.figures() {
                                latest.set(f.clone());
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        })?;
    Ok((writer, ended))
}

/// The pids of the rsync children running now (spawned, not yet reaped), so that the
/// stop can end them ([`terminate_running`]).
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn running() -> MutexGuard<'static, Vec<u32>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// A push still running after this long is a big one: it is lowered to
/// [`LONG_PUSH_NICE`], so that the short pushes started beside it (a small edit while a
/// 1 GB file travels) get the CPU first. Its own speed changes only while the CPU is
/// contended.
pub const LONG_PUSH: Duration = Duration::from_millis(200);

/// The CPU niceness of a push that has run longer than [`LONG_PUSH`].
pub const LONG_PUSH_NICE: libc::c_int = 10;

/// Lowers the CPU and I/O priority of child `pid`, a push that has run `after` already.
fn lower(pid: u32, after: Duration) {
    // Only rsync itself, which does the reading, checksums and compression. In ssh mode
    // the ssh it starts may become the master connection that every later push of the
    // remote shares: that one keeps its priority.
    // `pid` is our unreaped child, so it names no other process.
    let _ = process::set_nice(pid, LONG_PUSH_NICE);
    // The lowest best-effort I/O priority too (it matters where the disk's scheduler
    // honours it: bfq).
    let _ = process::lowest_io_priority(pid);
    log::debug!(
        "rsync (pid {pid}) still running after {after:?}: lowered to nice {LONG_PUSH_NICE}"
    );
}

/// How many rsync children are running now.
pub fn running_count() -> usize {
    running().len()
}

/// At a stop whose grace has ended: SIGTERM to every running rsync child, SIGKILL to
/// those still there after `grace`. Returns how many were signalled. Their work is
/// already in the fail log.
pub fn terminate_running(grace: Duration) -> usize {
    let signal_all = |signal: libc::c_int| {
        let pids = running();
        for &pid in pids.iter() {
            // `pid` is our child and not reaped (it is in the registry, and is
            // removed before it is reaped), so it names no other process.
            let _ = process::kill(pid, signal);
        }
        pids.len()
    };
    let n = signal_all(libc::SIGTERM);
    if n == 0 {
        return 0;
    }
    let deadline = Instant::now() + grace;
    while running_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20)); // polling the workers' registry
    }
    if signal_all(libc::SIGKILL) > 0 {
        let deadline = Instant::now() + grace;
        while running_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20)); // polling the workers' registry
        }
    }
    n
}
