//! The sersync2 command line: the original's short flags, plus a few long options.

use std::path::PathBuf;

use clap::Parser;

pub const AFTER_HELP: &str = "\
CONFIG FILE
    confxml.xml in sersync 2.5's format; see the README for every element. The watch
    directories, remotes and rsync options all come from it.

EXIT STATUS
    0  stopped cleanly (SIGTERM/SIGINT), or --test-config found the config valid,
       or --replay left nothing owed
    1  a runtime failure (could not start watching, --replay left entries owed)
    2  bad flags or a bad config: nothing was started

SIGNALS
    SIGTERM, SIGINT  stop watching, let running pushes finish, write what is still
                     queued to the fail log, exit 0

FILES
    ./confxml.xml            default config
    <failLog path>           failed pushes as a runnable sh script (mode 0600)

ENVIRONMENT
    RUST_LOG   log level (error, warn, info, debug); default info
    RSYNC_RSH  remote shell for ssh mode when <ssh> sets no command";

/// sersync2: mirror a directory tree to several hosts in real time with rsync.
#[derive(Debug, Parser)]
#[command(name = "sersync2", version, about, after_help = AFTER_HELP)]
pub struct Args {
    /// Run as a daemon (detach from the terminal)
    #[arg(short = 'd')]
    pub daemon: bool,

    /// Push the whole tree to every remote once at start-up, then sync live
    #[arg(short = 'r')]
    pub full_first: bool,

    /// Number of sync worker threads
    #[arg(short = 'n', value_name = "NUM", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub workers: u16,

    /// Config file
    #[arg(short = 'o', value_name = "FILE", default_value = "./confxml.xml")]
    pub config: PathBuf,

    /// Run only one plugin module (command, socket, refreshCDN, http), no rsync
    #[arg(short = 'm', value_name = "NAME")]
    pub module: Option<String>,

    /// Check the config, print the watches, remotes and rsync commands, and exit
    #[arg(short = 't', long = "test-config")]
    pub test_config: bool,

    /// Replay the fail log once and exit: 0 if nothing is left owed
    #[arg(long)]
    pub replay: bool,

    /// Print the running instance's status (needs <host start="true">) and exit
    #[arg(long)]
    pub status: bool,

    /// Pid and lock file (default: derived from the config path, under /run/sersync2)
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<std::path::PathBuf>,

    /// Write logs to FILE instead of stderr (reopened on SIGHUP, for logrotate)
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<std::path::PathBuf>,

    /// Most paths one rsync call carries (overrides <batch size>); 1 = one call per path
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: Option<u32>,
}
