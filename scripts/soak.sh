#!/usr/bin/env bash
# The hour-long soak (not part of the test command; docs/BENCHMARKS.md, "The soak").
#
# The release build of the agent mirrors a tree under mixed load (create, modify,
# rename, rename onto an existing file, delete, directory moves, directories made and
# removed, a top directory renamed every minute) at SOAK_RATE operations/s for SOAK_SECS
# to two rsync daemons of its own (127.0.0.1 and 127.0.0.2, one port), one of which is
# stopped and started again every SOAK_RESTART_SECS, alternating. Every SOAK_SAMPLE_SECS
# it samples the agent's RSS (VmRSS), open descriptors, threads, rsync children, the lag
# (a marker file written into the tree, timed until both remotes have it), the agent's
# own lag (--status --json), the operations done and the machine's load (/proc/loadavg)
# into OUT/samples.csv, and draws OUT/soak.png with matplotlib. At the end it stops the
# load, waits for `sersync2 --wait-synced`, compares the source with both remotes (names,
# types, sizes, SHA-1 of contents) and prints PASS/FAIL for: RSS and descriptors grow
# at most SOAK_MAX_GROWTH % after the warm-up (median of the first minute after it
# against the median of the last minute), every probe landed within SOAK_LAG_BOUND s,
# the trees level. Exit 0 only if all pass; 2 if it could not run.
#
# Usage (as root: the daemons run as uid root):
#   scripts/soak.sh                                   # 2,000 ops/s for an hour
#   SOAK_SECS=240 SOAK_RESTART_SECS=60 SOAK_WARMUP_SECS=60 scripts/soak.sh   # a short run
# Knobs (environment; defaults: the issue's soak):
#   SOAK_SECS=3600 SOAK_RATE=2000 SOAK_RESTART_SECS=600 SOAK_WARMUP_SECS=300
#   SOAK_SAMPLE_SECS=10   SOAK_DOWN_SECS=2 (a stopped daemon stays down this long)
#   SOAK_FILES=50000 SOAK_LEAVES=1000 SOAK_TOPS=20   the tree at the start (the load
#                         keeps the file and directory counts about there)
#   SOAK_TOPRENAME_SECS=60   a whole top directory renamed this often (0: never)
#   SOAK_MAX_GROWTH=5 SOAK_LAG_BOUND=120 SOAK_SETTLE_SECS=600 (the --wait-synced timeout)
#   SOAK_WATCHER=inotify  the agent's <watcher backend> (auto|inotify|fanotify|none)
#   SOAK_DIR=/dev/shm/soak   where the trees, daemons and configs live (removed at exit;
#                         tmpfs by default; give another directory to soak a disk)
#   SOAK_OUT=target/soak  samples.csv, probes.csv, events.csv, summary.txt, soak.png,
#                         agent.log, the daemons' logs
#   SOAK_PORT=28830       rsync daemon port (the next free one if taken)
#   BIN=target/release/sersync2   another build (then nothing is built)
#
# Needs rsync and python3 with matplotlib. If matplotlib is missing the script installs
# it from PyPI: `python3 -m pip install --break-system-packages matplotlib`, and if pip
# cannot, Debian's package: `apt-get install -y python3-matplotlib`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

SOAK_SECS=${SOAK_SECS:-3600}
SOAK_RATE=${SOAK_RATE:-2000}
SOAK_RESTART_SECS=${SOAK_RESTART_SECS:-600}
SOAK_WARMUP_SECS=${SOAK_WARMUP_SECS:-300}
SOAK_SAMPLE_SECS=${SOAK_SAMPLE_SECS:-10}
SOAK_DOWN_SECS=${SOAK_DOWN_SECS:-2}
SOAK_FILES=${SOAK_FILES:-50000}
SOAK_LEAVES=${SOAK_LEAVES:-1000}
SOAK_TOPS=${SOAK_TOPS:-20}
SOAK_TOPRENAME_SECS=${SOAK_TOPRENAME_SECS:-60}
SOAK_MAX_GROWTH=${SOAK_MAX_GROWTH:-5}
SOAK_LAG_BOUND=${SOAK_LAG_BOUND:-120}
SOAK_SETTLE_SECS=${SOAK_SETTLE_SECS:-600}
SOAK_WATCHER=${SOAK_WATCHER:-inotify}
SOAK_DIR=${SOAK_DIR:-/dev/shm/soak}
SOAK_OUT=${SOAK_OUT:-$repo/target/soak}
SOAK_PORT=${SOAK_PORT:-28830}

say() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "soak: run as root (the rsync daemons run as uid root)" >&2; exit 2; }
if ! command -v rsync >/dev/null; then
    say "installing rsync"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync >/dev/null
fi
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    say "installing matplotlib"
    python3 -m pip install -q --break-system-packages matplotlib ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-matplotlib; }
    python3 -c 'import matplotlib' || { echo "soak: no matplotlib for $(command -v python3)" >&2; exit 2; }
fi
if [ -z "${BIN:-}" ]; then
    say "cargo build --release"
    cargo build --release --locked -q
    BIN=$repo/target/release/sersync2
fi
BIN=$(realpath "$BIN")

port_free() {
    python3 - "$1" <<'PY'
import socket, sys
for ip in ("127.0.0.1", "127.0.0.2"):
    s = socket.socket()
    try:
        s.bind((ip, int(sys.argv[1])))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
PY
}
for _ in $(seq 1 50); do port_free "$SOAK_PORT" && break; SOAK_PORT=$((SOAK_PORT + 1)); done

helper=
old_watches=$(cat /proc/sys/fs/inotify/max_user_watches)
old_queued=$(cat /proc/sys/fs/inotify/max_queued_events)
cleanup() {
    set +e
    if [ -n "$helper" ]; then kill -TERM "$helper" 2>/dev/null; wait "$helper" 2>/dev/null; fi
    cp "$SOAK_DIR"/conf/rsyncd*.log "$SOAK_OUT/" 2>/dev/null
    echo "$old_watches" > /proc/sys/fs/inotify/max_user_watches
    echo "$old_queued" > /proc/sys/fs/inotify/max_queued_events
    rm -rf "$SOAK_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$SOAK_DIR" "$SOAK_OUT"
mkdir -p "$SOAK_DIR" "$SOAK_OUT"
# Room for the tree's directories and a deep queue, as scripts/bench.sh sets; restored at exit.
echo $(( old_watches > 1048576 ? old_watches : 1048576 )) > /proc/sys/fs/inotify/max_user_watches
echo $(( old_queued > 327679 ? old_queued : 327679 )) > /proc/sys/fs/inotify/max_queued_events

say "$("$BIN" --version 2>/dev/null || echo "$BIN") at $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
set +e
python3 "$repo/scripts/soak_helper.py" run --dir "$SOAK_DIR" --bin "$BIN" --out "$SOAK_OUT" \
    --port "$SOAK_PORT" --secs "$SOAK_SECS" --rate "$SOAK_RATE" \
    --restart-secs "$SOAK_RESTART_SECS" --down-secs "$SOAK_DOWN_SECS" \
    --warmup-secs "$SOAK_WARMUP_SECS" --sample-secs "$SOAK_SAMPLE_SECS" \
    --files "$SOAK_FILES" --leaves "$SOAK_LEAVES" --tops "$SOAK_TOPS" \
    --toprename-secs "$SOAK_TOPRENAME_SECS" --watcher "$SOAK_WATCHER" \
    --max-growth "$SOAK_MAX_GROWTH" --lag-bound "$SOAK_LAG_BOUND" \
    --settle-secs "$SOAK_SETTLE_SECS" &
helper=$!
wait "$helper"
code=$?
helper=
set -e
exit "$code"
