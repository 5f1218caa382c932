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

cargo test --locked "$@"
