//! The `sersync2` binary: parse flags, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = sersync::cli::Args::parse();
    match sersync::app::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sersync2: {:#}", e.error);
            ExitCode::from(e.code)
        }
    }
}
