//! Running as a service: detaching, the instance lock, logging (file or syslog), the
//! supervisor's notifications (sd_notify), the status endpoint and the scheduler.

pub mod daemon;
pub mod logging;
pub mod notify;
pub mod schedule;
pub mod status;
