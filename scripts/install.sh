#!/usr/bin/env bash
# Installs sersync2 as a service on a Debian machine (as root): the binary in
# /usr/local/bin, the systemd template unit, the logrotate snippet, and an example
# config in /etc/sersync/. Usage: scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v rsync >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync; }
cargo build --release --locked
install -m 0755 target/release/sersync2 /usr/local/bin/sersync2
install -d -m 0755 /etc/sersync /var/log/sersync2
[ -e /etc/sersync/example.xml ] || install -m 0644 confxml.xml /etc/sersync/example.xml
install -m 0644 scripts/packaging/sersync2@.service /etc/systemd/system/sersync2@.service
install -m 0644 scripts/packaging/logrotate /etc/logrotate.d/sersync2
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
cat <<MSG
sersync2 installed: $(/usr/local/bin/sersync2 --version)
Next: write /etc/sersync/NAME.xml (see /etc/sersync/example.xml), check it with
  sersync2 -t -o /etc/sersync/NAME.xml
then start it with
  systemctl enable --now sersync2@NAME
MSG
