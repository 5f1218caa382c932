#!/usr/bin/env bash
# Warm restart at scale (docs/BENCHMARKS.md, "Warm restart"): a tree of DIRS x PER_DIR
# files (default 10,000 x 100 = 1,000,000) on tmpfs, two loopback rsync daemons.
#  1. `-r` start: time until the index is rebuilt (both full syncs landed), peak RSS.
#  2. Stop; while stopped create 1000, modify 1000, delete 1000 files and rename one
#     directory; start without -r: the catch-up line, time until both remotes are level
#     (`--wait-synced`), peak RSS (/usr/bin/time -v), the index's size.
#  3. The index thread's CPU (checkpoints) while RATE changes/s (default 5000) are made
#     for SECS seconds (default 30), beside the whole agent's.
# Usage: scripts/bench_warm.sh [BINARY] (default target/release/sersync2); run as root.
set -euo pipefail
BIN=$(realpath "${1:-target/release/sersync2}")
DIRS=${DIRS:-10000}
PER_DIR=${PER_DIR:-100}
RATE=${RATE:-5000}
SECS=${SECS:-30}
PORT=${PORT:-28730}
B=$(mktemp -d /tmp/sersync2-bench-warm.XXXXXX)
say() { printf '[bench-warm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pids=()
cleanup() {
    set +e
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    umount -l "$B" 2>/dev/null
    rm -rf "$B"
}
trap cleanup EXIT
mount -t tmpfs -o size=6g tmpfs "$B" 2>/dev/null || say "no tmpfs mount: $B as it is"
mkdir -p "$B"/{src,dst1,dst2,state}
printf 'benchpw\n' > "$B/pass"
printf 'bench:benchpw\n' > "$B/secrets"
chmod 600 "$B/pass" "$B/secrets"
for i in 1 2; do
    cat > "$B/rsyncd$i.conf" <<EOF
uid = root
gid = root
use chroot = no
address = 127.0.0.$i
port = $PORT
pid file = $B/rsyncd$i.pid
[mod]
    path = $B/dst$i
    read only = no
    auth users = bench
    secrets file = $B/secrets
EOF
    rsync --daemon --no-detach --config="$B/rsyncd$i.conf" &
    pids+=($!)
done
cat > "$B/sersync.xml" <<EOF
<head version="2.5">
  <sersync>
    <localpath watch="$B/src">
      <remote ip="127.0.0.1" name="mod"/>
      <remote ip="127.0.0.2" name="mod"/>
    </localpath>
    <rsync>
      <commonParams params="-artz"/>
      <auth start="true" users="bench" passwordfile="$B/pass"/>
      <userDefinedPort start="true" port="$PORT"/>
      <ssh start="false"/>
    </rsync>
    <failLog path="$B/state/fail.sh" timeToExecute="60"/>
  </sersync>
</head>
EOF
say "making $((DIRS * PER_DIR)) files in $DIRS directories"
python3 - "$B/src" "$DIRS" "$PER_DIR" <<'EOF'
import os, sys
root, dirs, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for d in range(dirs):
    p = "%s/d%05d" % (root, d)
    os.mkdir(p)
    for f in range(per):
        with open("%s/f%03d.txt" % (p, f), "w") as fh:
            fh.write("file %d %d\n" % (d, f))
EOF
echo $((4 * DIRS + 100000)) > /proc/sys/fs/inotify/max_user_watches 2>/dev/null || true

run_agent() { # NAME ARGS...: runs the agent under /usr/bin/time -v, log in $B/NAME.log
    local name=$1
    shift
    : > "$B/$name.log"
    setsid /usr/bin/time -v -o "$B/$name.time" "$BIN" -o "$B/sersync.xml" "$@" \
        2>>"$B/$name.log" &
    agent=$!
}
wait_log() { # NAME PATTERN
    until grep -q "$2" "$B/$1.log"; do
        kill -0 "$agent" 2>/dev/null || { tail -20 "$B/$1.log" >&2; exit 1; }
        sleep 0.2
    done
}
stop_agent() { # SIGTERM to the agent alone (time(1) above it writes its figures)
    kill -TERM "$(pgrep -P "$agent")" 2>/dev/null || true
    wait "$agent" 2>/dev/null || true
}
peak() { awk -F': ' '/Maximum resident/ {print $2}' "$B/$1.time"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

say "-r start"
t0=$(now_ms)
run_agent full -r
wait_log full "rebuilt:"
t_full=$(( $(now_ms) - t0 ))
stop_agent # the stop writes the index
say "-r: level and index rebuilt in ${t_full} ms; peak RSS $(peak full) KB"

say "changes while stopped"
python3 - "$B/src" "$DIRS" "$PER_DIR" <<'EOF'
import os, sys
root, dirs, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(1000):
    d = (i * 7) % (dirs - 1)
    with open("%s/d%05d/new%04d.txt" % (root, d, i), "w") as fh:
        fh.write("new %d\n" % i)
    d = (i * 11 + 1) % (dirs - 1)
    with open("%s/d%05d/f%03d.txt" % (root, d, 1), "a") as fh:
        fh.write("modified\n")
    d = (i * 13 + 2) % (dirs - 1)
    p = "%s/d%05d/f%03d.txt" % (root, d, 2)
    if os.path.exists(p):
        os.unlink(p)
# The directory renamed is one the changes above leave alone (they spread over the
# others, modulo dirs - 1): a directory renamed with changes inside is not one rename
# for the catch-up but one per file left as it was (docs/BENCHMARKS.md).
os.rename("%s/d%05d" % (root, dirs - 1), "%s/renamed" % root)
EOF

say "warm start"
t0=$(now_ms)
run_agent warm
wait_log warm "live:"
"$BIN" --wait-synced -o "$B/sersync.xml" --timeout 1200 >/dev/null
t_warm=$(( $(now_ms) - t0 ))
catchup=$(grep -o 'catch-up of .*' "$B/warm.log" | tail -1)
index_bytes=$(stat -c %s "$B/state/fail.sh.index")
say "warm: $catchup"
say "warm: both remotes level ${t_warm} ms after the start"

say "checkpoint CPU at $RATE changes/s for $SECS s"
apid=$(pgrep -P "$agent")
tid=
for t in /proc/"$apid"/task/*; do
    [ "$(cat "$t/comm")" = index ] && tid=$t
done
ticks() { awk '{print $14 + $15}' "$1/stat"; }
hz=$(getconf CLK_TCK)
i0=$(ticks "$tid")
a0=$(ticks "/proc/$apid")
python3 - "$B/src" "$RATE" "$SECS" <<'EOF'
import sys, time
root, rate, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
start = time.monotonic()
n = 0
while time.monotonic() - start < secs:
    for _ in range(rate // 10):
        with open("%s/d%05d/hot%03d.txt" % (root, n % 100, n % 1000), "w") as fh:
            fh.write("%d\n" % n)
        n += 1
    ahead = start + n / rate - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
print("made %d changes in %.1f s" % (n, time.monotonic() - start), file=sys.stderr)
EOF
i1=$(ticks "$tid")
a1=$(ticks "/proc/$apid")
stop_agent
cpu_index=$(awk -v a="$i0" -v b="$i1" -v hz="$hz" -v s="$SECS" 'BEGIN {printf "%.1f", 100 * (b - a) / hz / s}')
cpu_agent=$(awk -v a="$a0" -v b="$a1" -v hz="$hz" -v s="$SECS" 'BEGIN {printf "%.1f", 100 * (b - a) / hz / s}')
printf '\nentries\t%d\n' $((DIRS * PER_DIR + DIRS))
printf 'index bytes\t%s\n' "$index_bytes"
printf -- '-r: level, index rebuilt (ms)\t%s\tpeak RSS (KB)\t%s\n' "$t_full" "$(peak full)"
printf 'warm start: both level (ms)\t%s\tpeak RSS (KB)\t%s\n' "$t_warm" "$(peak warm)"
printf 'catch-up\t%s\n' "$catchup"
printf 'at %s changes/s: index thread CPU %%\t%s\tagent CPU %%\t%s\n' "$RATE" "$cpu_index" "$cpu_agent"
