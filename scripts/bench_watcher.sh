#!/usr/bin/env bash
# One watcher backend on one directory tree, by hand (as root): time until the agent is
# live, one-change latency (10 single-file writes, each until the remote has it), the
# agent's CPU while idle for 60 s (/proc/PID/stat) and its peak RSS (/usr/bin/time -v).
# Figures in docs/BENCHMARKS.md ("Watcher backends"); scripts/bench.sh has the cases.
#
# Usage: scripts/bench_watcher.sh BACKEND NDIRS     (BACKEND: inotify | fanotify | auto)
#   The tree has NDIRS directories (the root included, two levels: bench_helper.py
#   mkdirs), on a tmpfs mounted at $B/t, or in the directory T (its filesystem) if set.
#   B=/tmp/bench-watcher  work directory; PORT=28941 rsync daemon port (127.0.0.1)
#   The tree is kept between runs with the same NDIRS (made-NDIRS marks it).
set -euo pipefail
W=$1; N=$2
REPO=$(cd "$(dirname "$0")/.." && pwd); BIN=$REPO/target/release/sersync2
B=${B:-/tmp/bench-watcher}; T=${T:-$B/t}; PORT=${PORT:-28941}
[ -x "$BIN" ] || (cd "$REPO" && cargo build --release --locked)
mkdir -p "$T"
[ "$T" != "$B/t" ] || mountpoint -q "$T" || mount -t tmpfs -o size=8g,nr_inodes=0 tmpfs "$T"
if [ ! -f "$T/made-$N" ]; then
    rm -rf "$T/tree" "$T"/made-*
    python3 "$REPO/scripts/bench_helper.py" mkdirs "$T/tree" $((N - 1)) >/dev/null
    touch "$T/made-$N"
fi
rm -rf "$T/dst"; mkdir -p "$T/dst"
cat > "$B/rsyncd.conf" <<EOT
pid file = $B/rsyncd.pid
port = $PORT
address = 127.0.0.1
use chroot = no
socket options = TCP_NODELAY
[m]
path = $T/dst
read only = no
uid = root
gid = root
EOT
rsync --daemon --no-detach --config="$B/rsyncd.conf" & rpid=$!
cat > "$B/conf.xml" <<EOT
<head version="2.5">
  <watcher backend="$W"/>
  <sersync>
    <localpath watch="$T/tree"><remote ip="127.0.0.1" name="m"/></localpath>
    <rsync><commonParams params="-artz"/><userDefinedPort start="true" port="$PORT"/></rsync>
    <failLog path="$B/fail.sh" timeToExecute="60"/>
  </sersync>
</head>
EOT
log=$B/log-$W-$N.txt
t0=$(date +%s%N)
/usr/bin/time -v -o "$B/time-$W-$N.txt" "$BIN" -n 2 -o "$B/conf.xml" --pid-file "$B/agent.pid" 2> "$log" & tpid=$!
until grep -q "live:" "$log"; do sleep 0.005; kill -0 $tpid; done   # poll, bounded by the agent
t1=$(date +%s%N)
apid=$(pgrep -P $tpid)
echo "backend=$W dirs=$N live_after_s=$(echo "scale=3; ($t1-$t0)/1000000000" | bc)"
grep "watching" "$log" | sed 's/^/  log: /'
lats=()
for i in $(seq 1 10); do
    f=t0005/c00007/lat$i
    s=$(date +%s%N); echo "$i" > "$T/tree/$f"
    until [ -e "$T/dst/$f" ]; do :; done
    e=$(date +%s%N); lats+=($(( (e - s) / 1000 )))
done
echo "  latency_us: ${lats[*]}"
read -r u1 s1 < <(awk '{print $14, $15}' /proc/$apid/stat)
sleep 60   # the measurement interval itself
read -r u2 s2 < <(awk '{print $14, $15}' /proc/$apid/stat)
echo "  idle_60s_cpu_ticks: $(( u2 + s2 - u1 - s1 )) (CLK_TCK $(getconf CLK_TCK))"
kill -TERM "$apid"; wait $tpid || true
echo "  peak_rss_kb: $(grep 'Maximum resident' "$B/time-$W-$N.txt" | awk '{print $NF}')"
kill $rpid; wait $rpid 2>/dev/null || true
