#!/usr/bin/env bash
# The simulator's soak: many more histories than the test suite runs (default a
# million), optimised, on every core. Every seed runs, failures or not: it prints each
# broken invariant's first failing seed when found, progress with histories per second,
# and at the end the mix of faults and events covered, per invariant the failures and
# their first seeds, and the shortest failing history. Usage:
#   scripts/sim.sh [HISTORIES] [FIRST_SEED]
# SIM_FAULTS (stops,overflows,outages,timeouts,hangs,reloads,roots,hardlinks,dironly,
# symlinks, linkwrites, warm, bigfiles, brake, rules, reads, refusing, or all) picks the faults; a failing seed replays
# with SIM_SEED=N cargo test --lib sim::tests -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."
SIM_HISTORIES="${1:-1000000}" SIM_FIRST="${2:-1}" \
    cargo test --release --locked --lib sync::sim::tests -- --exact \
    sync::sim::tests::simulated_histories_keep_every_remote_level --nocapture
