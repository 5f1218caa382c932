#!/usr/bin/env bash
# Benchmark: big files (<bigFiles>). One BIG_MB file (default 2048 MB) mirrored to two
# rsync daemons (127.0.0.1 and 127.0.0.2, one port), then appended by APPEND_MB (1 MB)
# APPENDS times (10), then a CHANGE_MB (1 MB) change written in its middle, one change at
# a time, each pushed before the next (sersync2 --wait-synced). Per push and per mirror:
# the bytes written on the mirror's disk (write_bytes of the daemon's /proc/PID/io, which
# takes in its reaped children: the receiver and generator of each connection) and the
# time from the change to the push landed on both (the page cache written back before
# each change, so that every page the push dirties counts). Three agents, one after the other, on
# the same tree: "off" (<bigFiles start="false">: today's behaviour, every push whole),
# "append" (the default: appends as appends) and "append+inplace" (inplace="true": the
# middle change in place too). The machine's load is printed beside the figures.
# Figures in docs/BENCHMARKS.md ("Big files").
#
# Usage: scripts/bench_bigfiles.sh          (as root: daemons with uid root)
#   BIG_MB=2048 APPENDS=10 APPEND_MB=1 CHANGE_MB=1
#   MODES="off append append+inplace"
#   B=/var/tmp/bench-bigfiles   work directory, on a disk (tmpfs counts no write_bytes);
#                               needs 3 x BIG_MB free; removed at the end
#   PORT=28961                  rsync daemon port
#   BIN=target/release/sersync2 the agent (built with cargo build --release if missing)
# Quick run: BIG_MB=64 APPENDS=3 scripts/bench_bigfiles.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
BIG_MB=${BIG_MB:-2048}
APPENDS=${APPENDS:-10}
APPEND_MB=${APPEND_MB:-1}
CHANGE_MB=${CHANGE_MB:-1}
MODES=${MODES:-off append append+inplace}
B=${B:-/var/tmp/bench-bigfiles}
PORT=${PORT:-28961}
BIN=${BIN:-$repo/target/release/sersync2}
IPS=(127.0.0.1 127.0.0.2)

say() { printf '[bench-big %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "bench_bigfiles: run as root" >&2; exit 1; }
if [ ! -x "$BIN" ]; then
    say "cargo build --release"
    cargo build --release --locked -q
fi
case "$(stat -f -c %T "$(dirname "$B")")" in
    tmpfs|ramfs) echo "bench_bigfiles: $B is on $(stat -f -c %T "$(dirname "$B")"), which counts no write_bytes: set B to a directory on a disk" >&2; exit 1 ;;
esac

daemons=()
agent=
cleanup() {
    set +e
    [ -n "$agent" ] && { kill -TERM "$agent" 2>/dev/null; wait "$agent" 2>/dev/null; }
    for d in "${daemons[@]}"; do kill -TERM "$d" 2>/dev/null; wait "$d" 2>/dev/null; done
    rm -rf "$B"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$B"
mkdir -p "$B"/{src,dst1,dst2,conf}
for i in 1 2; do
    cat > "$B/conf/rsyncd$i.conf" <<EOF
socket options = TCP_NODELAY
use chroot = no
uid = root
gid = root
pid file = $B/conf/rsyncd$i.pid
log file = $B/conf/rsyncd$i.log
[m]
    path = $B/dst$i
    read only = no
EOF
    rsync --daemon --no-detach --config="$B/conf/rsyncd$i.conf" --address="${IPS[i-1]}" --port="$PORT" &
    daemons+=($!)
done
for ip in "${IPS[@]}"; do
    ok=
    for _ in $(seq 1 200); do
        if rsync --port="$PORT" "$ip::" 2>/dev/null | grep -q '^m'; then ok=1; break; fi
        sleep 0.05   # polling for the daemon, bounded
    done
    [ -n "$ok" ] || { echo "bench_bigfiles: rsync daemon on $ip:$PORT did not come up" >&2; exit 1; }
done

# write_bytes of daemon i (1 or 2), once it has reaped every connection's processes.
written() {
    local pid=${daemons[$1-1]}
    for _ in $(seq 1 500); do
        [ -z "$(pgrep -P "$pid")" ] && break
        sleep 0.01   # polling for the connection's processes to end, bounded
    done
    awk '/^write_bytes/ {print $2}' "/proc/$pid/io"
}
now_ns() { date +%s%N; }
mb() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }

say "making the ${BIG_MB} MB file"
head -c "${BIG_MB}M" /dev/urandom > "$B/seed.bin"
sync

table=$B/table.txt
printf '%-16s %-9s %12s %12s %9s\n' mode push "mirror1_MB" "mirror2_MB" "time_s" > "$table"
for mode in $MODES; do
    case "$mode" in
        off) big='<bigFiles start="false"/>' ;;
        append) big='<bigFiles size="64M" append="true" inplace="false"/>' ;;
        append+inplace) big='<bigFiles size="64M" append="true" inplace="true"/>' ;;
        *) echo "bench_bigfiles: unknown mode $mode" >&2; exit 2 ;;
    esac
    rm -rf "$B/src" "$B/dst1" "$B/dst2" "$B/fail.sh"*
    mkdir -p "$B/src" "$B/dst1" "$B/dst2"
    cat > "$B/conf/agent.xml" <<EOF
<head version="2.5">
  <debug start="true"/>
  <watcher backend="inotify"/>
  <sersync>
    <localpath watch="$B/src"><remote ip="127.0.0.1" name="m"/><remote ip="127.0.0.2" name="m"/></localpath>
    <rsync><commonParams params="-artz"/><userDefinedPort start="true" port="$PORT"/></rsync>
    <failLog path="$B/fail.sh" timeToExecute="60"/>
    $big
  </sersync>
</head>
EOF
    log=$B/agent-$mode.log
    : > "$log"
    "$BIN" -n 4 -o "$B/conf/agent.xml" > "$log" 2>&1 & agent=$!
    until grep -q "live:" "$log"; do kill -0 "$agent"; sleep 0.02; done   # bounded by the agent
    synced() { "$BIN" --wait-synced -o "$B/conf/agent.xml" --timeout 3600 > /dev/null; }
    push() { # NAME COMMAND...: runs the change, waits for it on both mirrors, one row
        local name=$1; shift
        local w1 w2 t0 t1
        # Every page clean first: a page dirtied again before its writeback is not
        # counted again, and the last push's pages would hide this one's writes.
        sync
        w1=$(written 1); w2=$(written 2)
        t0=$(now_ns)
        "$@"
        synced
        t1=$(now_ns)
        local d1=$(( $(written 1) - w1 )) d2=$(( $(written 2) - w2 ))
        printf '%-16s %-9s %12s %12s %9s\n' "$mode" "$name" "$(mb "$d1")" "$(mb "$d2")" \
            "$(awk -v n=$(( t1 - t0 )) 'BEGIN { printf "%.3f", n / 1e9 }')" >> "$table"
        say "$mode $name: mirror1 $(mb "$d1") MB, mirror2 $(mb "$d2") MB"
    }
    push initial cp "$B/seed.bin" "$B/src/big.bin"
    for i in $(seq 1 "$APPENDS"); do
        push "append$i" sh -c "head -c ${APPEND_MB}M /dev/urandom >> '$B/src/big.bin'"
    done
    push middle dd if=/dev/urandom of="$B/src/big.bin" bs=1M count="$CHANGE_MB" \
        seek=$(( BIG_MB / 2 )) conv=notrunc status=none
    for i in 1 2; do
        cmp "$B/src/big.bin" "$B/dst$i/big.bin" || { echo "bench_bigfiles: mirror $i differs ($mode)" >&2; exit 1; }
    done
    kill -TERM "$agent"; wait "$agent" || true; agent=
done

echo "big files: BIG_MB=$BIG_MB APPENDS=$APPENDS APPEND_MB=$APPEND_MB CHANGE_MB=$CHANGE_MB on $(stat -f -c %T "$B") ($B)"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; rsync $(rsync --version | head -1 | awk '{print $3}')"
cat "$table"
# Per mode: the appends' mean per mirror, against APPEND_MB.
awk -v a="$APPEND_MB" '$2 ~ /^append/ { s[$1] += $3 + $4; n[$1] += 2; t[$1] += $5; c[$1]++ }
    END { for (m in s) printf "%-16s appends: %.2f MB written per mirror per push (%.2fx the %s MB appended), %.3f s per push\n", m, s[m] / n[m], s[m] / n[m] / a, a, t[m] / c[m] }' "$table" | sort
