//! Running as a service: detaching, the instance lock, logging (file or syslog), the
//! supervisor's notifications (sd_notify), the status endpoint, the local control socket
//! and the scheduler.

pub mod control;
pub mod daemon;
pub mod logging;
pub mod notify;
pub mod schedule;
pub mod status;

/// Time since the process started (first called at the top of `main`): status's
/// uptime, which a reload does not reset.
pub fn uptime() -> std::time::Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}
