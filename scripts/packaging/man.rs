//! `sersync2-man`: prints what the package ships beside the binary, from the same
//! definitions the program uses. scripts/package.sh runs it
//! (`cargo run --features man --bin sersync2-man -- WHAT`):
//! - no argument: the sersync2(1) man page (roff), from the flags and the long help;
//! - `sersync2.xml.5`: the sersync2.xml(5) man page, from the list of elements and
//!   attributes the config parser accepts;
//! - `completion bash|zsh|fish`: that shell's completions, from the flags (clap_complete).

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let page = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => sersync::cli::man::page().map_err(|e| e.to_string()),
        ["sersync2.xml.5"] => Ok(sersync::config_man_page(env!("CARGO_PKG_VERSION"))),
        ["completion", shell] => {
            sersync::cli::completions::script(shell).map_err(|e| e.to_string())
        }
        _ => Err("usage: sersync2-man [sersync2.xml.5 | completion bash|zsh|fish]".to_owned()),
    };
    let written = page.and_then(|page| {
        let mut out = std::io::stdout().lock();
        out.write_all(page.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write: {e}"))
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sersync2-man: {e}");
            ExitCode::FAILURE
        }
    }
}
