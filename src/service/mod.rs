//! Running as a service: detaching, the instance lock, logging (file or syslog), the
//! supervisor's notifications (sd_notify), the status endpoint, the local control socket
//! and the scheduler.

pub mod control;
pub mod daemon;
pub mod logging;
pub mod notify;
pub mod schedule;
pub mod status;
