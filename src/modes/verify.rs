//! `--verify`: compare every remote with its watch root, change nothing, print what
//! differs per remote; exit 0 only if every remote is level.
//!
//! It takes no lock and writes no file, so it runs beside a running instance. The
//! remotes are checked in parallel, each with the full sync's rsync call plus
//! `--dry-run --itemize-changes` (`src/sync/verify.rs`).

use std::collections::HashMap;
use std::path::PathBuf;

use super::pipeline::Parts;
use super::Exit;
use crate::cli::Args;
use crate::config::Config;
use crate::sync::verify::{self, Drift};
use crate::sync::Target;

/// Paths printed per remote before "... and N more".
const PATHS_PRINTED: usize = 10;

pub fn verify(config: &Config, args: &Args) -> Result<u8, Exit> {
    super::require_rsync()?;
    let parts = Parts::new(config, &super::own_files(config, args));
    let targets = &parts.targets;
    // One walk per root for the `<filter>` excludes, as a full sync does.
    let mut excluded: HashMap<PathBuf, Vec<PathBuf>> = HashMap::new();
    for t in targets {
        excluded.entry(t.root.clone()).or_insert_with(|| {
            let none = Default::default();
            let excludes = parts.excludes(&t.root).unwrap_or(&none);
            crate::watch::excluded_paths(&t.root, excludes)
        });
    }
    let no_excludes = Default::default();
    let check = |t: &Target| {
        let none = Vec::new();
        let ex = excluded.get(&t.root).unwrap_or(&none);
        let excludes = parts.excludes(&t.root).unwrap_or(&no_excludes);
        verify::check(t, ex, excludes, args.checksum).map_err(|e| e.to_string())
    };
    let results: Vec<Result<Drift, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|t| {
                std::thread::Builder::new()
                    .name("verify".into())
                    .spawn_scoped(s, move || check(t))
            })
            .collect();
        handles
            .into_iter()
            .zip(targets)
            .map(|(h, t)| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err("the check ended abnormally".to_owned())),
                // No thread to spare: check this one here.
                Err(_) => check(t),
            })
            .collect()
    });
    let mut all_level = true;
    for (t, result) in targets.iter().zip(&results) {
        print!("{}", report(t, result));
        all_level &= matches!(result, Ok(d) if d.is_level());
    }
    Ok(if all_level { 0 } else { 1 })
}

/// One remote's part of the report.
fn report(t: &Target, result: &Result<Drift, String>) -> String {
    let head = format!("{} ({})", t.label(), t.root.display());
    let mut s = match result {
        Err(e) => format!("{head}: could not be checked: {e}\n"),
        Ok(d) if d.is_level() => format!("{head}: level\n"),
        Ok(d) => {
            let mut s = format!(
                "{head}: {} path(s) not level: {} differing, {} missing, {} extra\n",
                d.paths.len(),
                d.differing,
                d.missing,
                d.extra
            );
            for line in d.first(PATHS_PRINTED) {
                s.push_str(&format!("    {line}\n"));
            }
            if d.paths.len() > PATHS_PRINTED {
                s.push_str(&format!(
                    "    ... and {} more\n",
                    d.paths.len() - PATHS_PRINTED
                ));
            }
            s
        }
    };
    if let Ok(d) = result {
        for line in &d.unmirrorable {
            s.push_str(&format!("    {line}\n"));
        }
    }
    s
}
