#!/usr/bin/env bash
# Builds the Debian package (cargo-deb) from this checkout and prints its path, e.g.
# target/debian/sersync_0.1.0-1_amd64.deb. Installs cargo-deb first if it is missing.
# The package's man pages, shell completions, unit (with /usr/bin paths) and example
# config are written to target/deb-assets/ first; Cargo.toml [package.metadata.deb]
# lists what goes where.
# Usage: scripts/package.sh   then, as root: apt install ./target/debian/sersync_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deb --version >/dev/null 2>&1; then
    echo "package.sh: installing cargo-deb (cargo install cargo-deb --locked)" >&2
    cargo install cargo-deb --locked >&2
fi

assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/systemd"

# The man page, from the flags and the long help in src/cli.rs. Same features as the
# package build ([package.metadata.deb] features), so cargo deb does not rebuild.
cargo run --quiet --release --locked --features man --bin sersync2-man >"$assets/sersync2.1"
# sersync2.xml(5), from the elements and attributes the config parser accepts.
cargo run --quiet --release --locked --features man --bin sersync2-man -- sersync2.xml.5 \
    >"$assets/sersync2.xml.5"
# Shell completions from the same flags (clap_complete).
mkdir -p "$assets/completions"
cargo run --quiet --release --locked --features man --bin sersync2-man -- completion bash \
    >"$assets/completions/sersync2"
cargo run --quiet --release --locked --features man --bin sersync2-man -- completion zsh \
    >"$assets/completions/_sersync2"
cargo run --quiet --release --locked --features man --bin sersync2-man -- completion fish \
    >"$assets/completions/sersync2.fish"

# The template unit as the package installs it: the binary is /usr/bin/sersync2 there
# (scripts/install.sh puts it in /usr/local/bin). cargo-deb finds it as <package>@.service
# and installs it as sersync2@.service.
sed 's#/usr/local/bin/sersync2#/usr/bin/sersync2#g' scripts/packaging/sersync2@.service \
    >"$assets/systemd/sersync@.service"
if grep -q /usr/local/ "$assets/systemd/sersync@.service"; then
    echo "package.sh: the unit still names /usr/local/: fix the sed above" >&2
    exit 1
fi

# The example config, with its fail log in the package's root-only /var/lib/sersync.
sed 's#/tmp/rsync_fail_log.sh#/var/lib/sersync/rsync_fail_log.sh#' confxml.xml >"$assets/example.xml"

# --strip: the release profile keeps debug info (debug = 1); the
# package ships the binary without them.
cargo deb --locked --strip | tail -n 1
