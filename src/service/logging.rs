//! Log set-up: timestamped, levelled records to stderr or to a log file that logrotate
//! can move (reopened on SIGHUP).

use std::path::Path;
use std::sync::Arc;

use super::daemon::{LogFile, LogWriter};

/// Sets up the logger; with a log file, SIGHUP reopens it by name.
pub fn init(log_file: Option<&Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    let env = env_logger::Env::default().default_filter_or("info");
    let mut builder = env_logger::Builder::from_env(env);
    builder.format_timestamp_millis().format_target(false);
    if let Some(path) = log_file {
        let (file, reopen) = LogFile::open(path)
            .with_context(|| format!("cannot open the log file {}", path.display()))?;
        builder.target(env_logger::Target::Pipe(Box::new(LogWriter(Arc::new(
            file,
        )))));
        // SIGHUP: logrotate moved the file; the next record opens it again by name.
        signal_hook::flag::register(signal_hook::consts::SIGHUP, reopen)
            .context("cannot handle SIGHUP")?;
    }
    let _ = builder.try_init();
    Ok(())
}
