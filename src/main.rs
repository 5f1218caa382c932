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
    // Every command that prints (`--status`, `-t`, `--help`, `--release-deletes`,
    // `--replay`...) ends quietly on a closed pipe (`| head -1`), as any Unix tool, instead
    // of a panic in println!; the daemon ignores SIGPIPE again (`modes::prepare`).
    modes::default_sigpipe();
    let mut args = Args::parse();
    // The modes that ask the running instance find it from the config's path and read
    // the file only if they must (a bad config on disk does not stop them).
    let outcome = modes::prepare(&mut args).and_then(|()| match Mode::of(&args) {
        Mode::Status => modes::status(&args),
        Mode::Held(release) => modes::held(&args, release),
        Mode::WaitSynced => modes::wait_synced(&args),
        Mode::Pause(pause) => modes::pause(&args, pause),
        Mode::Replay => modes::replay(&args),
        mode => {
            let config = modes::config(&args)?;
            match mode {
                Mode::TestConfig { module } => {
                    modes::test_config(&config, module.as_deref(), &args)
                }
                Mode::Module(name) => modes::module(&config, &name, &args),
                Mode::Verify => modes::verify(&config, &args),
                Mode::Once => modes::once(&config, &args),
                _ => modes::live(&config, &args),
            }
        }
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sersync2: {:#}", e.error());
            ExitCode::from(e.code())
        }
    }
}
