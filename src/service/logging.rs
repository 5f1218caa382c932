//! Log set-up: timestamped, levelled records to stderr or to a log file that logrotate
//! can move (reopened on SIGUSR1, and on SIGHUP with the reload); once detached (`-d`)
//! without a log file, to syslog (facility daemon, `sersync2[PID]`;
//! `SERSYNC2_SYSLOG_SOCKET` names another socket than /dev/log).
//!
//! In the foreground under systemd (stderr is the stream `JOURNAL_STREAM` names) each
//! line starts with its priority as sd-daemon(3) has it (`<3>` error, `<4>` warning,
//! `<6>` info, `<7>` debug) and no timestamp (the journal has its own), so that
//! `journalctl -p err` finds the errors.
//!
//! Logs never vanish: detached without a log file where no syslog socket answers (a
//! container without /dev/log), the agent says so on stderr before it detaches and logs
//! to a default file instead ([`default_file`]).
//!
//! `--log-format json` writes one JSON object per line instead: `time` (RFC 3339, UTC,
//! milliseconds), `level`, `message`, and the record's key-values (`remote`, `paths`,
//! `rsync_exit`, `cause`, `stderr`, `root`, ...) as fields; to syslog, the message part
//! is that object.
//!
//! Neither SIGHUP nor SIGUSR1 ever kills the process: both are handled from the moment
//! logging is set up, in every mode (live mode also reloads its config on SIGHUP).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use super::daemon::{LogFile, LogWriter};
use crate::cli::LogFormat;
use crate::sys::syslog::{self, Severity, Syslog};

/// The environment variable naming the syslog socket (tests; default /dev/log).
pub const SYSLOG_SOCKET_ENV: &str = "SERSYNC2_SYSLOG_SOCKET";

/// Records are JSON objects (`--log-format json`).
static JSON: AtomicBool = AtomicBool::new(false);

/// Set once the process has detached with stderr as its log target.
static SYSLOG: OnceLock<Syslog> = OnceLock::new();
/// Set before the detach when no syslog socket answers: the log file used instead of
/// stderr, and its path.
static FALLBACK: OnceLock<(env_logger::Logger, PathBuf)> = OnceLock::new();
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
        if let Some((file, _)) = FALLBACK.get() {
            return file.log(record);
        }
        match SYSLOG.get() {
            Some(s) if JSON.load(Ordering::Relaxed) => {
                s.send(severity(record.level()), &json_line(record))
            }
            Some(s) => s.send(severity(record.level()), &record.args().to_string()),
            None => self.inner.log(record),
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// The sd-daemon(3) priority prefix of a level (`<3>` for errors).
pub fn journal_prefix(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "<3>",
        log::Level::Warn => "<4>",
        log::Level::Info => "<6>",
        log::Level::Debug | log::Level::Trace => "<7>",
    }
}

/// Is stderr the journal's stream? systemd sets `JOURNAL_STREAM` to `DEV:INODE` of the
/// stream it connected stderr to; a child whose stderr was redirected elsewhere
/// inherits the variable, so the pair is compared with stderr itself.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// env_logger set up for `format`: the level filter from RUST_LOG (default info),
/// millisecond timestamps, or one JSON object per record; with `journal`, sd-daemon
/// priority prefixes and no timestamp.
fn builder(format: LogFormat, journal: bool) -> env_logger::Builder {
    use std::io::Write;
    let env = env_logger::Env::default().default_filter_or("info");
    let mut builder = env_logger::Builder::from_env(env);
    builder.format_timestamp_millis().format_target(false);
    match (format == LogFormat::Json, journal) {
        (true, false) => {
            builder.format(|buf, record| writeln!(buf, "{}", json_line(record)));
        }
        (true, true) => {
            builder.format(|buf, record| {
                let prefix = journal_prefix(record.level());
                writeln!(buf, "{prefix}{}", json_line(record))
            });
        }
        (false, true) => {
            builder.format(|buf, record| {
                let prefix = journal_prefix(record.level());
                writeln!(buf, "{prefix}{}", record.args())
            });
        }
        (false, false) => {}
    }
    builder
}

fn severity(level: log::Level) -> Severity {
    match level {
        log::Level::Error => Severity::Err,
        log::Level::Warn => Severity::Warning,
        log::Level::Info => Severity::Info,
        log::Level::Debug | log::Level::Trace => Severity::Debug,
    }
}

/// One record as one JSON object (no newline): time, level, message, then its
/// key-values; a key-value never replaces the first three.
pub fn json_line(record: &log::Record) -> String {
    let mut obj = serde_json::Map::new();
    let time = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    obj.insert("time".into(), time.into());
    obj.insert(
        "level".into(),
        record.level().as_str().to_ascii_lowercase().into(),
    );
    obj.insert("message".into(), record.args().to_string().into());
    let mut fields = Fields(&mut obj);
    let _ = record.key_values().visit(&mut fields);
    serde_json::Value::Object(obj).to_string()
}

/// Collects a record's key-values into the JSON object.
struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let key = key.as_str();
        if matches!(key, "time" | "level" | "message") {
            return Ok(());
        }
        let v: serde_json::Value = if let Some(b) = value.to_bool() {
            b.into()
        } else if let Some(n) = value.to_i64() {
            n.into()
        } else if let Some(n) = value.to_u64() {
            n.into()
        } else if let Some(f) = value.to_f64() {
            serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)
        } else {
            value.to_string().into()
        };
        self.0.insert(key.to_owned(), v);
        Ok(())
    }
}

/// Sets up the logger; with a log file, SIGUSR1 (and SIGHUP) reopens it by name.
pub fn init(log_file: Option<&Path>, format: LogFormat) -> anyhow::Result<()> {
    use anyhow::Context;
    if format == LogFormat::Json {
        JSON.store(true, Ordering::Relaxed);
    }
    let mut builder = builder(format, log_file.is_none() && stderr_is_journal());
    // Without a log file SIGHUP and SIGUSR1 only have to leave the process alive (live
    // mode adds the reload); the flag is read by nobody.
    let mut reopen = Arc::new(AtomicBool::new(false));
    if let Some(path) = log_file {
        let (file, flag) = LogFile::open(path)
            .with_context(|| format!("cannot open the log file {}", path.display()))?;
        builder.target(env_logger::Target::Pipe(Box::new(LogWriter(Arc::new(
            file,
        )))));
        reopen = flag;
    }
    register_reopen(&reopen)?;
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Logger { inner })).is_ok() {
        log::set_max_level(max);
        TO_STDERR.store(log_file.is_none(), Ordering::Relaxed);
    }
    Ok(())
}

/// SIGUSR1 (logrotate) and SIGHUP (a reload) raise `reopen`: the next record opens the
/// log file again by name.
fn register_reopen(reopen: &Arc<AtomicBool>) -> anyhow::Result<()> {
    use anyhow::Context;
    use signal_hook::consts::{SIGHUP, SIGUSR1};
    signal_hook::flag::register(SIGHUP, Arc::clone(reopen)).context("cannot handle SIGHUP")?;
    signal_hook::flag::register(SIGUSR1, Arc::clone(reopen)).context("cannot handle SIGUSR1")?;
    Ok(())
}

/// The syslog socket records go to once detached.
fn syslog_socket() -> PathBuf {
    std::env::var_os(SYSLOG_SOCKET_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(syslog::DEFAULT_SOCKET), PathBuf::from)
}

/// Where a detached agent without a log file and without syslog logs: as root
/// `/var/log/sersync2/<config>.log`, else `<state dir>/sersync2/<config>.log` (the
/// state dir `$XDG_STATE_HOME`, or `~/.local/state`); `<config>` is the config's
/// absolute path written as for its pid file (`etc_sersync_web.xml`). `None` for a
/// user with no home.
pub fn default_file(config: &Path) -> Option<PathBuf> {
    let dir = if crate::sys::is_root() {
        PathBuf::from(DEFAULT_LOG_DIR)
    } else {
        let state = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .map(|h| h.join(".local/state"))
            })?;
        state.join("sersync2")
    };
    Some(dir.join(format!("{}.log", super::daemon::config_file_name(config))))
}

/// The log directory of the package (logrotate's `/var/log/sersync2/*.log`).
pub const DEFAULT_LOG_DIR: &str = "/var/log/sersync2";

/// Before `-d` detaches without a log file: if no syslog socket answers, says so (on
/// stderr, still the terminal or the caller's) and switches the records to
/// [`default_file`], so that nothing is dropped once stderr is /dev/null. `Err` when
/// that file cannot be opened either: the agent then does not start.
pub fn before_detach(config: &Path, format: LogFormat) -> anyhow::Result<()> {
    use anyhow::Context;
    if !TO_STDERR.load(Ordering::Relaxed) || FALLBACK.get().is_some() {
        return Ok(());
    }
    let socket = syslog_socket();
    let why = match std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.connect(&socket)) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let Some(path) = default_file(config) else {
        anyhow::bail!(
            "-d without --log-file: no syslog socket at {} ({why}) and no home directory \
             for a log file: give --log-file",
            socket.display()
        );
    };
    if let Some(dir) = path.parent() {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mode = if crate::sys::is_root() { 0o750 } else { 0o700 };
        crate::sys::fsafe::private_dir(dir, mode)
            .with_context(|| format!("cannot use {} for the log", dir.display()))?;
    }
    let (file, flag) = LogFile::open(&path).with_context(|| {
        format!(
            "-d without --log-file and no syslog socket at {} ({why}): cannot open the log \
             file {}",
            socket.display(),
            path.display()
        )
    })?;
    register_reopen(&flag)?;
    log::warn!(
        "no syslog socket at {} ({why}): once detached, logs go to {} (give --log-file to \
         choose the file)",
        socket.display(),
        path.display()
    );
    let mut builder = builder(format, false);
    builder.target(env_logger::Target::Pipe(Box::new(LogWriter(Arc::new(
        file,
    )))));
    let _ = FALLBACK.set((builder.build(), path.clone()));
    log::warn!(
        "no syslog socket at {} ({why}): logging to this file, {}",
        socket.display(),
        path.display()
    );
    Ok(())
}

/// The log file used because no syslog socket answered, if any (one of the agent's own
/// files, never pushed).
pub fn fallback_file() -> Option<PathBuf> {
    FALLBACK.get().map(|(_, p)| p.clone())
}

/// Called in the detached child: records meant for stderr (now /dev/null) go to syslog,
/// unless [`before_detach`] chose a file.
pub fn detached() {
    if !TO_STDERR.load(Ordering::Relaxed) || FALLBACK.get().is_some() {
        return;
    }
    let _ = SYSLOG.set(Syslog::new(
        &syslog_socket(),
        "sersync2",
        syslog::LOG_DAEMON,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_priorities_are_sd_daemons() {
        assert_eq!(journal_prefix(log::Level::Error), "<3>");
        assert_eq!(journal_prefix(log::Level::Warn), "<4>");
        assert_eq!(journal_prefix(log::Level::Info), "<6>");
        assert_eq!(journal_prefix(log::Level::Debug), "<7>");
        assert_eq!(journal_prefix(log::Level::Trace), "<7>");
    }

    #[test]
    fn the_default_log_file_is_named_after_the_config_as_its_pid_file() {
        let file = default_file(Path::new("/nonexistent/sersync/web_1.xml")).expect("a file");
        assert!(
            file.ends_with("nonexistent_sersync_web%5F1.xml.log"),
            "{}",
            file.display()
        );
        if crate::sys::is_root() {
            assert!(file.starts_with(DEFAULT_LOG_DIR), "{}", file.display());
        } else {
            assert!(file.parent().is_some_and(|d| d.ends_with("sersync2")));
        }
    }

    #[test]
    fn a_record_is_one_json_object_with_its_fields() {
        let args = format_args!("push failed");
        let kvs: [(&str, log::kv::Value); 4] = [
            ("remote", log::kv::Value::from("10.0.0.2::mod")),
            ("paths", log::kv::Value::from(3usize)),
            ("rsync_exit", log::kv::Value::from(-1i32)),
            ("message", log::kv::Value::from("not this")),
        ];
        let record = log::Record::builder()
            .args(args)
            .level(log::Level::Error)
            .key_values(&kvs)
            .build();
        let line = json_line(&record);
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["level"], "error");
        assert_eq!(v["message"], "push failed");
        assert_eq!(v["remote"], "10.0.0.2::mod");
        assert_eq!(v["paths"], 3);
        assert_eq!(v["rsync_exit"], -1);
        let time = v["time"].as_str().expect("time");
        // 2026-01-02T03:04:05.678Z
        assert_eq!(time.len(), 24, "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
    }
}
