//! Running as a service: detaching, the instance lock, logging, the status endpoint, the
//! local control socket and the scheduler.

pub mod control;
pub mod daemon;
pub mod logging;
pub mod schedule;
pub mod status;
