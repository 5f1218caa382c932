#!/usr/bin/env bash
# The simulator's soak: many more histories than the test suite runs (default a
# million), optimised, on every core; prints histories per second, the mix of faults and
# events covered, and the shortest failing history if any. Usage:
#   scripts/sim.sh [HISTORIES] [FIRST_SEED]
# SIM_FAULTS (stops,overflows,outages,timeouts) picks the faults; a failing seed replays
# with SIM_SEED=N cargo test --lib sim::tests -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."
SIM_HISTORIES="${1:-1000000}" SIM_FIRST="${2:-1}" \
    cargo test --release --locked --lib sync::sim::tests -- --exact \
    sync::sim::tests::simulated_histories_keep_every_remote_level --nocapture
