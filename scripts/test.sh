#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine (as root): installs what the tests
# start for real (rsync for the loopback daemons, openssh for the ssh-mode sshd), then
# runs unit, property and integration tests. Usage: scripts/test.sh [cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v rsync >/dev/null || need+=(rsync)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
mkdir -p /run/sshd

# fs.inotify.max_user_watches is one setting for every process of the user: while the
# watch-limit scenario holds it at 64, any other agent the suite starts would raise it
# first. That scenario runs alone, after the rest.
alone=scenarios::the_watch_limit_is_raised_as_root_when_the_tree_needs_more
# The end-to-end modules that exercise the watcher run a second time on fanotify (the
# first run is on inotify, the config writer's default; tests/fanotify.rs covers
# fanotify's own cases and its queue overflow in the first run).
on_fanotify=(e2e:: churn:: moves:: faults_root:: links:: brake:: attributes::)
if [ $# -eq 0 ]; then
    cargo test --locked -- --skip "$alone"
    SERSYNC2_TEST_BACKEND=fanotify cargo test --locked --test integration -- "${on_fanotify[@]}"
    cargo test --locked --test integration -- --exact "$alone"
else
    cargo test --locked "$@"
fi
