#!/usr/bin/env bash
# Demo of the main job on the shipped defaults: confxml.xml watches /opt/tongbu and
# pushes to the rsync daemon module 127.0.0.1::tongbu1. This script installs what is
# missing (as root on Debian), starts that daemon on loopback (module path
# /tmp/sersync-demo/tongbu1), runs sersync2 -r on the shipped config, makes changes and
# shows them arriving, then stops everything. Usage: scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

need=()
command -v rsync >/dev/null || need+=(rsync)
command -v cargo >/dev/null || { echo "demo: cargo (Rust) is required" >&2; exit 1; }
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

cargo build --release -q
bin=$repo/target/release/sersync2

demo=/tmp/sersync-demo
rm -rf "$demo"; mkdir -p "$demo/tongbu1"
mkdir -p /opt/tongbu
config=$repo/confxml.xml
port=873
if (exec 3<>/dev/tcp/127.0.0.1/873) 2>/dev/null; then
    # Something already listens on 873: same config, another port.
    port=18873
    sed -e 's|<userDefinedPort start="false" port="874"/>|<userDefinedPort start="true" port="18873"/>|' \
        "$repo/confxml.xml" > "$demo/confxml.xml"
    config=$demo/confxml.xml
fi
cat > "$demo/rsyncd.conf" <<CONF
use chroot = no
uid = root
gid = root
pid file = $demo/rsyncd.pid
[tongbu1]
    path = $demo/tongbu1
    read only = no
CONF
rsync --daemon --no-detach --config="$demo/rsyncd.conf" --address=127.0.0.1 --port=$port \
    --log-file="$demo/rsyncd.log" &
daemon=$!
agent=
cleanup() {
    [ -n "$agent" ] && kill "$agent" 2>/dev/null && wait "$agent" 2>/dev/null
    kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true
}
trap cleanup EXIT

wait_for() { # wait_for DESCRIPTION COMMAND...: poll with a deadline
    local what=$1; shift
    for _ in $(seq 1 300); do "$@" && return 0; sleep 0.1; done
    echo "demo: timed out waiting for $what" >&2; exit 1
}
wait_for "the rsync daemon" rsync --port=$port 127.0.0.1:: >/dev/null 2>&1

echo "== sersync2 -t: what the shipped config does"
"$bin" -t -o "$config"
echo
echo "== starting sersync2 -r -o $config"
"$bin" -r -o "$config" 2> "$demo/sersync2.log" &
agent=$!
wait_for "sersync2 to go live" grep -q "live:" "$demo/sersync2.log"
cat "$demo/sersync2.log"

stamp=$(date +%s%N)
echo "hello from sersync2 $stamp" > "/opt/tongbu/demo-$stamp.txt"
mkdir -p "/opt/tongbu/demo-dir-$stamp/a/b"
echo nested > "/opt/tongbu/demo-dir-$stamp/a/b/file.txt"
start=$(date +%s%N)
wait_for "the file on the remote" test -f "$demo/tongbu1/demo-$stamp.txt"
wait_for "the nested file on the remote" test -f "$demo/tongbu1/demo-dir-$stamp/a/b/file.txt"
echo "== arrived at the remote in $(( ($(date +%s%N) - start) / 1000000 )) ms:"
cat "$demo/tongbu1/demo-$stamp.txt"
rm -rf "/opt/tongbu/demo-dir-$stamp"
wait_for "the delete on the remote" test ! -e "$demo/tongbu1/demo-dir-$stamp"
echo "== deleted on the remote too"
kill "$agent"; wait "$agent" || true; agent=
echo "== sersync2 log:"; cat "$demo/sersync2.log"
rm -f "/opt/tongbu/demo-$stamp.txt"
echo "demo: OK"
