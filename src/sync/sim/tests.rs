//! The simulator as a test: many seeds, each one history, every invariant checked.

use super::history;

/// What a history's printed lines say it went through, by kind (for the fault mix).
const KINDS: [(&str, &str); 12] = [
    ("goes down", "outages"),
    ("agent stops", "stops"),
    ("agent starts again with -r", "restarts with -r"),
    ("kernel queue overflow", "overflows"),
    ("exit 30:", "timeouts after landing"),
    ("refuses:", "refused calls"),
    ("exit 23:", "partial transfers"),
    ("barrier synced (checked)", "barriers checked"),
    ("&& cp -a build/", "deploys"),
    ("mv -T --", "remote mv (ssh)"),
    ("--link-dest=", "rename pushes (daemon)"),
    ("--existing --ignore-existing", "clean-up calls"),
];

/// A failed history: its seed, the broken invariant, its printed lines.
type Failed = (u64, String, Vec<String>);

fn mix(history: &[String], totals: &mut [u64; KINDS.len()]) {
    for line in history {
        for (i, (needle, _)) in KINDS.iter().enumerate() {
            if line.contains(needle) {
                totals[i] += 1;
            }
        }
    }
}

/// Steps per history: enough for a few stops, outages and barriers each.
const STEPS: u64 = 120;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// `SIM_SEED=N`: that one history, printed. Else `SIM_HISTORIES` (default 20,000)
/// seeds from `SIM_FIRST` (default 1), on every core.
#[test]
fn simulated_histories_keep_every_remote_level() {
    if let Some(seed) = env_u64("SIM_SEED") {
        let ended = history(seed, env_u64("SIM_STEPS").unwrap_or(STEPS));
        for line in &ended.history {
            println!("{line}");
        }
        if let Some(why) = ended.broken {
            panic!("seed {seed}: {why}");
        }
        return;
    }
    let n = env_u64("SIM_HISTORIES").unwrap_or(20_000);
    let first = env_u64("SIM_FIRST").unwrap_or(1);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let started = std::time::Instant::now();
    let (failures, totals): (Vec<Failed>, [u64; KINDS.len()]) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut totals = [0u64; KINDS.len()];
                    let mut seed = first + k;
                    while seed < first + n {
                        let ended = history(seed, STEPS);
                        mix(&ended.history, &mut totals);
                        if let Some(why) = ended.broken {
                            out.push((seed, why, ended.history));
                            if out.len() >= 3 {
                                break;
                            }
                        }
                        seed += threads;
                    }
                    (out, totals)
                })
            })
            .collect();
        let mut failures = Vec::new();
        let mut totals = [0u64; KINDS.len()];
        for h in handles {
            let (f, t) = h.join().unwrap_or_default();
            failures.extend(f);
            for (a, b) in totals.iter_mut().zip(t) {
                *a += b;
            }
        }
        (failures, totals)
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{n} histories in {secs:.1}s ({:.0}/s), {} failed",
        n as f64 / secs,
        failures.len()
    );
    let shown: Vec<String> = KINDS
        .iter()
        .zip(totals)
        .map(|((_, name), count)| format!("{name} {count}"))
        .collect();
    println!("covered: {}", shown.join(", "));
    if let Some((seed, why, hist)) = failures.iter().min_by_key(|f| f.2.len()) {
        let tail: Vec<&String> = hist.iter().rev().take(60).collect();
        for line in tail.into_iter().rev() {
            println!("{line}");
        }
        let seeds: Vec<u64> = failures.iter().map(|f| f.0).collect();
        panic!("seeds {seeds:?} failed; shortest, seed {seed}: {why}\nreplay: SIM_SEED={seed} cargo test --lib sim::tests -- --nocapture");
    }
}
