//! Running as a service: detaching, the instance lock, logging, the status endpoint and
//! the scheduler.

pub mod daemon;
pub mod logging;
pub mod schedule;
pub mod status;
