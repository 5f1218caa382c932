//! Log set-up: timestamped, levelled records to stderr or to a log file that logrotate
//! can move (reopened on SIGHUP); once detached (`-d`) without a log file, to syslog
//! (facility daemon, `sersync2[PID]`; `SERSYNC2_SYSLOG_SOCKET` names another socket
//! than /dev/log).
//!
//! SIGHUP never kills the process: it is handled from the moment logging is set up, in
//! every mode (live mode also reloads its config on it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use super::daemon::{LogFile, LogWriter};
use crate::sys::syslog::{self, Severity, Syslog};

/// The environment variable naming the syslog socket (tests; default /dev/log).
pub const SYSLOG_SOCKET_ENV: &str = "SERSYNC2_SYSLOG_SOCKET";

/// Set once the process has detached with stderr as its log target.
static SYSLOG: OnceLock<Syslog> = OnceLock::new();
/// Whether records go to stderr (no log file): those move to syslog when detached.
static TO_STDERR: AtomicBool = AtomicBool::new(false);

/// env_logger's filter and format, or syslog once detached.
struct Logger {
    inner: env_logger::Logger,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.inner.matches(record) {
            return;
        }
        match SYSLOG.get() {
            Some(s) => s.send(severity(record.level()), &record.args().to_string()),
            None => self.inner.log(record),
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

fn severity(level: log::Level) -> Severity {
    match level {
        log::Level::Error => Severity::Err,
        log::Level::Warn => Severity::Warning,
        log::Level::Info => Severity::Info,
        log::Level::Debug | log::Level::Trace => Severity::Debug,
    }
}

/// Sets up the logger; with a log file, SIGHUP reopens it by name.
pub fn init(log_file: Option<&Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    let env = env_logger::Env::default().default_filter_or("info");
    let mut builder = env_logger::Builder::from_env(env);
    builder.format_timestamp_millis().format_target(false);
    // Without a log file SIGHUP only has to leave the process alive (live mode adds the
    // reload); the flag is read by nobody.
    let mut reopen = Arc::new(AtomicBool::new(false));
    if let Some(path) = log_file {
        let (file, flag) = LogFile::open(path)
            .with_context(|| format!("cannot open the log file {}", path.display()))?;
        builder.target(env_logger::Target::Pipe(Box::new(LogWriter(Arc::new(
            file,
        )))));
        // SIGHUP: logrotate moved the file; the next record opens it again by name.
        reopen = flag;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reopen)
        .context("cannot handle SIGHUP")?;
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Logger { inner })).is_ok() {
        log::set_max_level(max);
        TO_STDERR.store(log_file.is_none(), Ordering::Relaxed);
    }
    Ok(())
}

/// Called in the detached child: records meant for stderr (now /dev/null) go to syslog.
pub fn detached() {
    if !TO_STDERR.load(Ordering::Relaxed) {
        return;
    }
    let path = std::env::var_os(SYSLOG_SOCKET_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(syslog::DEFAULT_SOCKET), PathBuf::from);
    let _ = SYSLOG.set(Syslog::new(&path, "sersync2", syslog::LOG_DAEMON));
}
