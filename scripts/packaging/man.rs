//! `sersync2-man`: prints the sersync2(1) man page (roff) to stdout. scripts/package.sh
//! runs it (`cargo run --features man --bin sersync2-man`) to build the package's page.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let written = sersync::cli::man::page().and_then(|page| {
        let mut out = std::io::stdout().lock();
        out.write_all(page.as_bytes())?;
        out.flush()
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sersync2-man: cannot write the man page: {e}");
            ExitCode::FAILURE
        }
    }
}
