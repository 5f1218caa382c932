#!/usr/bin/env bash
# The long churn run, for before a release: many seeds, each churning for longer than
# the test suite's short run. A failure prints the seed; replay one with
#   SERSYNC_CHURN_SEED=<seed> cargo test --release --test integration churn
# Usage: scripts/churn.sh [SEEDS] [SECONDS_PER_SEED]   (default 30 seeds, 20 s each)
set -euo pipefail
cd "$(dirname "$0")/.."
export SERSYNC_CHURN_SEEDS=${1:-30}
export SERSYNC_CHURN_SECS=${2:-20}
cargo test --release --test integration churn -- --nocapture --test-threads=1
