//! The sersync2 command line: the original's short flags, plus a few long options.

use std::path::PathBuf;

use clap::Parser;

#[cfg(any(test, feature = "man"))]
pub mod completions;
#[cfg(any(test, feature = "man"))]
pub mod man;

pub const AFTER_HELP: &str = "\
DESCRIPTION
    Watches each <localpath watch> of the config (fanotify as root, else inotify: see
    <watcher backend>) and pushes every change with `rsync -R` (run without a shell,
    cwd = the watch root) to each <remote>, in parallel. Waiting paths for one remote are carried by one rsync call; a lone change
    is pushed at once. Failed pushes are retried, then written to the fail log, which is
    replayed every <failLog timeToExecute> minutes and at start-up.

CONFIG FILE
    confxml.xml in sersync 2.5's format: every element and attribute in sersync2.xml(5).
    A name it does not list is an error naming the line and the nearest known name, at
    -t and at start: a typo would silently drop a remote. Check one with
    `sersync2 -t -o FILE`; `-t --probe` also asks each remote to answer.

EXIT STATUS
    0  stopped cleanly (SIGTERM/SIGINT); --test-config found the config valid (with
       --probe: and every remote answered); --replay left nothing owed; --wait-synced:
       every remote has every change made before the call; --verify found every remote
       level; --status: every remote is level, catching up or paused; --once: every
       remote was brought level; --pause, --resume: the running instance did it
    1  runtime failure: another instance holds this config's lock, watching could not
       start, -t --probe found a remote that does not answer (or refuses pushes: a
       read-only module), --replay left entries
       owed, --wait-synced timed out (or no instance runs the config), --verify found a
       remote that differs or could not be checked, --status: a remote is failing,
       stalled or holds deletes, a watch root is lost, or no instance answers,
       --once: something is left owed to
       a remote (kept in the fail log for the next run) or a watch root could not be
       read, --pause, --resume: no instance runs the config (or it refused);
       --pause: a push running at the pause still ran after 60 s
    2  bad flags or a bad config (the message names file, line and element), or a
       fail log, pid file, log file or program the agent refuses (see FILES); nothing
       was started

SIGNALS
    SIGTERM, SIGINT  stop reading events, let running pushes finish (up to 30 s), write
                     what is still queued to the fail log, exit 0
    SIGHUP           reopen the log file and reload the config: checked first (a bad
                     one is logged and the running one stays), then the pipeline
                     restarts with it; pending work goes through the fail log, nothing
                     is lost; -r is not repeated
    SIGUSR1          reopen the log file only (after logrotate moved it)

FILES
    ./confxml.xml                   default config (-o)
    /etc/sersync/<NAME>.xml         the config the unit sersync2@NAME runs (the
                                    package keeps the directory on purge if it holds
                                    a config)
    /run/sersync2/<config>.pid      instance lock with the pid, one per config, named
                                    from its absolute path, whatever --pid-file says
                                    (that file gets the pid too); when not root, in
                                    $XDG_RUNTIME_DIR/sersync2 if that is the user's own
                                    0700 directory, else in sersync2-<uid> (0700) under
                                    $TMPDIR or /tmp
    /run/sersync2/view              empty; each rsync (as root) sees the watch root
                                    there, in a private nosymfollow mount
    <config>.pid.sock               beside it, the running instance's control socket
                                    (mode 0600, its user and root only): --status,
                                    --replay, --wait-synced, --pause and --resume ask
                                    it, found from -o alone
    /var/log/sersync2/<config>.log  the log with -d, no --log-file and no syslog
                                    socket (said before the detach); when not root,
                                    in $XDG_STATE_HOME/sersync2 or
                                    ~/.local/state/sersync2
    /var/lib/sersync/               the package's directory (0700) for fail logs: a
                                    <failLog path> there keeps what is owed across
                                    reboots, unlike /tmp
    /var/log/sersync2/              the package's directory for --log-file; its
                                    logrotate snippet sends SIGUSR1 (reopen only)
    <failLog path>                  failed pushes as a runnable sh script, mode 0600.
                                    Read as data: only the directory, the ./paths and
                                    the destination of each command are kept, and the
                                    command is rebuilt from the config. Entries for a
                                    root or remote not in the config are kept, never
                                    run (--replay --drop-unknown drops them)
    <failLog path>.index            the warm-restart index: each root's tree as every
                                    remote was last sent it, read at a start without
                                    -r to push only what changed while stopped
    <failLog path>.index.journal    the index's journal: what each push began to change
                                    since the index's last checkpoint, read at a start
                                    after a kill
    The fail log, the pid file and the --log-file must be regular files owned by the
    agent's user and not writable by group or others (a link is refused), and the fail
    log's directory must not let others rename it (sticky if world-writable); else the
    start fails with exit 2 naming the file, its owner and mode. A fail log owned by
    another user (planted before the start) is the exception: it is renamed aside,
    unread, to <failLog path>.foreign-<time>-<random>, an error names both, and the agent
    starts with a fresh one. The command plugin's
    program (found on PATH when it has no /, and an interpreter's script) and the ssh
    command's program must be owned by root or the agent's user and not writable by
    group or others, as every directory above them; else -t, the start and a reload
    refuse the config. These files are never watched nor pushed, even inside a watch
    root (-t warns).

ENVIRONMENT
    RUST_LOG   log level: error, warn, info (default), debug
    RSYNC_RSH  remote shell for ssh mode when <ssh> sets no command=
    NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID
               set by systemd (Type=notify): READY, STATUS, RELOADING, STOPPING and
               WATCHDOG are reported there (sd_notify)
    JOURNAL_STREAM
               set by systemd: when it names stderr, each line starts with its
               priority (<3> error, <4> warning, <6> info, <7> debug), no timestamp
    SERSYNC2_SYSLOG_SOCKET
               with -d and no --log-file, logs go to syslog (facility daemon) through
               this datagram socket instead of /dev/log; where none answers, to the
               log file named in FILES";

/// sersync2: mirror a directory tree to several hosts in real time with rsync.
#[derive(Debug, Parser)]
#[command(name = "sersync2", version, about, after_help = AFTER_HELP)]
#[command(group = clap::ArgGroup::new("asks_remotes").args(["wait_synced", "pause", "resume"]))]
pub struct Args {
    /// Run as a daemon (detach from the terminal)
    #[arg(short = 'd')]
    pub daemon: bool,

    /// Push the whole tree to every remote once at start-up; live changes are pushed while
    /// it runs (and again after it), and its progress is logged every 5 s
    #[arg(short = 'r')]
    pub full_first: bool,

    /// Number of sync worker threads [default: two per remote, at least 10, at most 256]
    #[arg(short = 'n', value_name = "NUM",
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub workers: Option<u16>,

    /// Config file
    #[arg(short = 'o', value_name = "FILE", default_value = "./confxml.xml")]
    pub config: PathBuf,

    /// Run only one plugin module (command, socket, refreshCDN) over the tree, no rsync
    #[arg(short = 'm', value_name = "NAME")]
    pub module: Option<String>,

    /// Check the config, print the watches, remotes and rsync commands, and exit
    #[arg(short = 't', long = "test-config")]
    pub test_config: bool,

    /// With -t: also ask each remote to answer, changing nothing (an rsync listing of
    /// the module or directory with the push's options: host, module, user and password
    /// or ssh key, then a dry-run push, which a read-only module refuses); exit 1 if one
    /// does not answer or refuses pushes
    #[arg(long, requires = "test_config")]
    pub probe: bool,

    /// Replay the fail log once and exit: 0 if nothing is left owed. With an instance
    /// running, ask it to replay now (over its control socket) and report what is still owed.
    /// Entries for a root or remote the config does not name are never run; they are
    /// listed and kept
    #[arg(long)]
    pub replay: bool,

    /// With --replay: drop the fail log's entries for roots or remotes the config does
    /// not name (after reading the list --replay prints), and rewrite the log
    #[arg(long, requires = "replay")]
    pub drop_unknown: bool,

    /// Bring every remote level once and exit, without watching: what changed since the
    /// last run is found from the warm-restart index (a full sync where there is none,
    /// or with -r), then the fail log is replayed. Exit 0 only if every remote is level;
    /// 1 if anything is left owed (kept in the fail log for the next run) or another
    /// instance runs the config. For cron jobs and deploy pipelines
    #[arg(long, conflicts_with_all = ["replay", "status", "test_config", "module", "wait_synced", "verify", "daemon"])]
    pub once: bool,

    /// Print the running instance's status, asked over its control socket, and exit: 0
    /// when every remote is level, catching up or paused, 1 when one is failing, stalled or holds
    /// deletes (or a watch root is lost, or no instance runs the config)
    #[arg(long)]
    pub status: bool,

    /// Push the deletes the brake on mass deletes holds (<deleteBrake>), asking the
    /// running instance over its control socket; they reach the remotes now
    #[arg(long, conflicts_with_all = ["discard_deletes", "replay", "status", "test_config", "module", "wait_synced", "verify", "once"])]
    pub release_deletes: bool,

    /// Drop the deletes the brake on mass deletes holds, asking the running instance:
    /// the remotes keep those entries (a later full sync deletes them unless the source
    /// has them again)
    #[arg(long, conflicts_with_all = ["replay", "status", "test_config", "module", "wait_synced", "verify", "once"])]
    pub discard_deletes: bool,

    /// With --status: print the status document as JSON (as GET /status serves it)
    #[arg(long, requires = "status")]
    pub json: bool,

    /// Also write the pid to FILE, for service managers (the instance lock is the config's
    /// own in any case: one instance per config, with or without --pid-file)
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<std::path::PathBuf>,

    /// Write logs to FILE instead of stderr (reopened on SIGUSR1, for logrotate)
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<std::path::PathBuf>,

    /// Wait until every change made before this call is on every remote (or the --remote
    /// ones), asking the running instance: exit 0 once it is, 1 at the --timeout (naming
    /// the remotes behind, their pending and owed entries and lag), 2 on usage errors
    #[arg(long, conflicts_with_all = ["replay", "status", "test_config", "module"])]
    pub wait_synced: bool,

    /// With --wait-synced: give up after SECONDS (default 60; 0 waits for ever)
    #[arg(long, value_name = "SECONDS", requires = "wait_synced")]
    pub timeout: Option<u64>,

    /// Hold back every push of the running instance (asked over its control socket), or
    /// with --remote only those to that remote: changes are still read and wait, merged;
    /// --status says paused and how much waits; a stop keeps it in the fail log. Returns
    /// once the pushes running at the pause have ended. Lasts until --resume or a
    /// restart (a reload keeps it)
    #[arg(long, conflicts_with_all = ["replay", "status", "test_config", "module", "verify", "once", "daemon", "full_first"])]
    pub pause: bool,

    /// Let the running instance push again what a --pause held back (every remote, or
    /// with --remote only that one)
    #[arg(long, conflicts_with_all = ["replay", "status", "test_config", "module", "verify", "once", "daemon", "full_first"])]
    pub resume: bool,

    /// With --wait-synced: wait only for this remote; with --pause or --resume: pause or
    /// resume only this remote. As --status names it (host::module or host:dir); may be
    /// repeated
    #[arg(long, value_name = "LABEL", requires = "asks_remotes")]
    pub remote: Vec<String>,

    /// Most paths one rsync call carries (overrides <batch size>); 1 = one call per path
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: Option<u32>,

    /// Compare every remote with the source without changing anything (rsync --dry-run
    /// with the full sync's options, excludes and delete setting) and print what differs
    /// per remote: exit 0 if all are level, 1 if any differs or could not be checked.
    /// Safe beside a running instance
    #[arg(long)]
    pub verify: bool,

    /// With --verify: compare file contents by checksum, not only size and mtime (reads
    /// every file on both sides)
    #[arg(long, requires = "verify")]
    pub checksum: bool,

    /// Log format: text, or json (one object per line: time, level, message and fields
    /// such as remote, paths, rsync_exit, root)
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log records are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines of the form: [time LEVEL] message
    Text,
    /// One JSON object per line
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn golden_help() {
        let help = Args::command().render_long_help().to_string();
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/help.txt");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &help).expect("write golden");
        }
        let want = std::fs::read_to_string(&golden).expect("golden file tests/golden/help.txt");
        assert_eq!(
            help, want,
            "--help changed; if intended, rerun with UPDATE_GOLDEN=1"
        );
    }

    #[test]
    fn the_originals_flags_parse_combined() {
        let a =
            Args::try_parse_from(["sersync2", "-dr", "-o", "x.xml", "-n", "4"]).expect("parses");
        assert!(a.daemon && a.full_first);
        assert_eq!(a.workers, Some(4));
        assert_eq!(a.config, std::path::PathBuf::from("x.xml"));
        let a = Args::try_parse_from(["sersync2"]).expect("parses");
        assert_eq!(a.config, std::path::PathBuf::from("./confxml.xml"));
        assert_eq!(a.workers, None);
        assert!(Args::try_parse_from(["sersync2", "-n", "0"]).is_err());
    }

    #[test]
    fn pause_and_resume_take_remotes_and_exclude_each_other() {
        let a = Args::try_parse_from(["sersync2", "--pause", "--remote", "h::m"]).expect("parses");
        assert!(a.pause && !a.resume);
        assert_eq!(a.remote, ["h::m"]);
        let a = Args::try_parse_from(["sersync2", "--resume"]).expect("parses");
        assert!(a.resume && a.remote.is_empty());
        for bad in [
            &["sersync2", "--pause", "--resume"][..],
            &["sersync2", "--pause", "--wait-synced"],
            &["sersync2", "--pause", "--replay"],
            &["sersync2", "--remote", "h::m"],
            &["sersync2", "--resume", "--status"],
        ] {
            assert!(Args::try_parse_from(bad).is_err(), "{bad:?}");
        }
        let a = Args::try_parse_from(["sersync2", "--wait-synced", "--remote", "h::m"])
            .expect("--remote still goes with --wait-synced");
        assert_eq!(a.remote, ["h::m"]);
    }
}
