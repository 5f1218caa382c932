//! The `sersync2` binary: flags to a mode, the mode run, its error to an exit status.

use std::process::ExitCode;

use clap::Parser;
use sersync::cli::Args;
use sersync::modes::{self, Mode};

fn main() -> ExitCode {
    // The agent's own helper for rsync (it never returns unless rsync cannot start).
    let raw: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(code) = modes::rsync_in_view(&raw) {
        return ExitCode::from(code);
    }
    let mut args = Args::parse();
    let outcome = modes::prepare(&mut args).and_then(|config| match Mode::of(&args) {
        Mode::TestConfig { module } => modes::test_config(&config, module.as_deref(), &args),
        Mode::Status => modes::status(&config, &args),
        Mode::Module(name) => modes::module(&config, &name, &args),
        Mode::Replay => modes::replay(&config, &args),
        Mode::WaitSynced => modes::wait_synced(&config, &args),
        Mode::Verify => modes::verify(&config, &args),
        Mode::Live => modes::live(&config, &args),
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sersync2: {:#}", e.error());
            ExitCode::from(e.code())
        }
    }
}
