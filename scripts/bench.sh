#!/usr/bin/env bash
# Benchmark: sersync2 against the floor (cp + one rsync per remote), sersync2 --batch 1
# (the original's one rsync per file), lsyncd (delay 0 and its default delay) and the
# inotifywait+rsync script operators write (scripts/peers/inotifywait-rsync.sh).
# Everything runs on /dev/shm against two rsync daemons of its own on 127.0.0.1 and
# 127.0.0.2 (same port). See docs/BENCHMARKS.md for what each case measures.
#
# Usage: scripts/bench.sh            (as root; installs rsync, lsyncd, inotify-tools)
# Sizes and knobs (environment; defaults are the full sizes):
#   FILES=20000 DIRS=2000   burst: files and directories copied in with cp -a
#   LAT_N=200 BARE_N=20     latency samples per agent; bare rsync pushes per run
#   SCALE_DIRS=100000       directories in the watch set-up tree (case c)
#   BIG=200000              files already in the tree for case e (BIG/100 directories)
#   RUNS=3                  runs per case; the table shows medians
#   SLOW_RUNS=1             runs for sersync2 --batch 1 and lsyncd's default delay
#   PEER_LAT_RUNS=1         runs in which contenders other than sersync2 do the latency case
#   B1_FILES=2000           sersync2 --batch 1 bursts this many files (in B1_FILES/10 dirs)
#                           and the result is scaled to FILES (one rsync per file is linear)
#   CASES="a c e"           a = burst + latency + CPU (cases a, b, d), c = scale, e = big;
#                           s = one change over ssh (loopback sshd), r = renames of a big
#                           directory and a big file (RN_MB=200, RBIG_MB=100) and a flood
#                           of RN_FLOOD=1000 renames in one directory (R_BASE_BIN: the
#                           same flood on another build first), g = a small
#                           edit while a GIG_MB=1024 MB file is pushed, m = a million
#                           directories (M_DIRS=1001000, M_IDLE=60 s idle CPU;
#                           M_CONTENDERS="sersync2 sersync2-inotify sersync2-fanotify
#                           inotifywait"), t = a storm of T_FILES=200000 files in one
#                           directory with the collapse on and off; f = fan-out to
#                           FAN_NS="2 5 10 20" remotes (FAN_FILES=10000, FAN_LAT_N=30,
#                           FAN_RUNS=1, FAN_CONTENDERS="floor sersync2 sersync2-n10
#                           lsyncd-d0"), one of them stopped; h = a relay (two hops);
#                           printed on their own
#   CONTENDERS="sersync2 sersync2-b1 floor lsyncd-d0 lsyncd-def iwrsync"
#                           (and sersync2-base: the agent built from another commit,
#                           BASE_BIN=path/to/sersync2, for a before/after in one run)
#   E_SKIP="sersync2-b1"    contenders left out of case e (too slow to be worth it)
#   LSYNCD_DEF_LAT_N=3      latency samples for lsyncd's default delay (15 s each), run 1 only
#   WATCHER=inotify         sersync2's <watcher backend> (auto|inotify|fanotify, none: no
#                           element); the results before the fanotify backend are all
#                           inotify; case m sets its own per contender
#   PARAMS=-artuz           rsync options of every contender (the script drops -u, see docs)
#   SSH_USER=root           the account case s logs in as over ssh (another name: made if
#                           missing, with no shell start-up files of its own, and given
#                           the remote directories; see docs, "One change over ssh")
#   BURST_DEADLINE=300      seconds before a burst counts as "timeout"
#   PORT=28730              rsync daemon port
#   DAEMON_NODELAY=1        the daemons set socket options = TCP_NODELAY (0: not)
#   OUT=target/bench        results.tsv, table.txt and the agents' logs of the last run
#   BENCH_DIR=/dev/shm/bench  where the trees, daemons and configs live (removed at exit)
# Quick run: FILES=2000 DIRS=200 SCALE_DIRS=10000 BIG=20000 RUNS=1 LAT_N=50 B1_FILES=500 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

FILES=${FILES:-20000}
DIRS=${DIRS:-2000}
LAT_N=${LAT_N:-200}
BARE_N=${BARE_N:-20}
SCALE_DIRS=${SCALE_DIRS:-100000}
BIG=${BIG:-200000}
BIG_DIRS=${BIG_DIRS:-$(( (BIG + 99) / 100 ))}
RUNS=${RUNS:-3}
SLOW_RUNS=${SLOW_RUNS:-1}
PEER_LAT_RUNS=${PEER_LAT_RUNS:-1}
B1_FILES=${B1_FILES:-$(( FILES < 2000 ? FILES : 2000 ))}
CASES=${CASES:-a c e}
CONTENDERS=${CONTENDERS:-sersync2 sersync2-b1 floor lsyncd-d0 lsyncd-def iwrsync}
E_SKIP=${E_SKIP:-sersync2-b1}
LSYNCD_DEF_LAT_N=${LSYNCD_DEF_LAT_N:-3}
PARAMS=${PARAMS:--artuz}
BURST_DEADLINE=${BURST_DEADLINE:-300}
PORT=${PORT:-28730}
OUT=${OUT:-$repo/target/bench}
B=${BENCH_DIR:-/dev/shm/bench}
IPS=(127.0.0.1 127.0.0.2)

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
has() { case " $1 " in *" $2 "*) return 0 ;; esac; return 1; }

# ---------------------------------------------------------------- tools and build
need=()
command -v rsync >/dev/null || need+=(rsync)
command -v lsyncd >/dev/null || need+=(lsyncd)
command -v inotifywait >/dev/null || need+=(inotify-tools)
command -v python3 >/dev/null || need+=(python3)
command -v setsid >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ "$(id -u)" = 0 ] || { echo "bench: run as root (daemons with uid root, inotify limits)" >&2; exit 1; }
say "cargo build --release"
cargo build --release --locked -q
bin=$repo/target/release/sersync2
helper=(python3 "$repo/scripts/bench_helper.py")
peer=$repo/scripts/peers/inotifywait-rsync.sh

mkdir -p "$OUT"
results=$OUT/results.tsv
: > "$results"
H() { "${helper[@]}" --out "$results" "$@"; }

# ---------------------------------------------------------------- clean-up
daemons=()
agent=
old_watches=$(cat /proc/sys/fs/inotify/max_user_watches)
old_queued=$(cat /proc/sys/fs/inotify/max_queued_events)
cleanup() {
    set +e
    if [ -n "$agent" ]; then
        kill -TERM -- "-$agent" 2>/dev/null
        kill -KILL -- "-$agent" 2>/dev/null
        wait "$agent" 2>/dev/null
    fi
    for d in "${daemons[@]}"; do kill -CONT "$d" 2>/dev/null; kill -TERM "$d" 2>/dev/null; done
    for d in "${daemons[@]}"; do wait "$d" 2>/dev/null; done
    echo "$old_watches" > /proc/sys/fs/inotify/max_user_watches
    echo "$old_queued" > /proc/sys/fs/inotify/max_queued_events
    rm -rf "$B"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- environment
rm -rf "$B"
mkdir -p "$B"/{src,dst1/mod,dst2/mod,dst1/big,dst2/big,dst1/scale,dst2/scale,conf}
# The same inotify limits for every contender: the original sersync's values as the
# floor of max_queued_events (tutorials tell lsyncd/inotifywait users the same), and
# enough watches for the scale tree twice over. Restored at exit.
echo $(( old_watches > 1048576 ? old_watches : 1048576 )) > /proc/sys/fs/inotify/max_user_watches
echo $(( old_queued > 327679 ? old_queued : 327679 )) > /proc/sys/fs/inotify/max_queued_events

printf 'benchpw\n' > "$B/pass"
printf 'bench:benchpw\n' > "$B/secrets"
chmod 600 "$B/pass" "$B/secrets"
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
for _ in $(seq 1 50); do port_free "$PORT" && break; PORT=$((PORT + 1)); done
# DAEMON_NODELAY=1 (default): the daemons set TCP_NODELAY, as docs/BENCHMARKS.md
# recommends for remotes; with two pushes in parallel the daemon side otherwise stalls
# on Nagle + delayed ACK (~40 ms a push, for every contender alike). 0 leaves it out.
DAEMON_NODELAY=${DAEMON_NODELAY:-1}
sockopts=""
[ "$DAEMON_NODELAY" = 1 ] && sockopts="socket options = TCP_NODELAY"
for i in 1 2; do
    cat > "$B/conf/rsyncd$i.conf" <<EOF
$sockopts
use chroot = no
uid = root
gid = root
pid file = $B/conf/rsyncd$i.pid
log file = $B/conf/rsyncd$i.log
[mod]
    path = $B/dst$i/mod
    read only = no
    auth users = bench
    secrets file = $B/secrets
[big]
    path = $B/dst$i/big
    read only = no
    auth users = bench
    secrets file = $B/secrets
[scale]
    path = $B/dst$i/scale
    read only = no
    auth users = bench
    secrets file = $B/secrets
EOF
    rsync --daemon --no-detach --config="$B/conf/rsyncd$i.conf" --address="${IPS[i-1]}" --port="$PORT" &
    daemons+=($!)
done
for ip in "${IPS[@]}"; do
    ok=
    for _ in $(seq 1 200); do
        if rsync --port="$PORT" "$ip::" 2>/dev/null | grep -q '^mod'; then ok=1; break; fi
        sleep 0.05
    done
    [ -n "$ok" ] || { echo "bench: rsync daemon on $ip:$PORT did not come up" >&2; exit 1; }
done
say "rsync daemons on 127.0.0.1 and 127.0.0.2 port $PORT (pids ${daemons[*]})"
auth=(--port="$PORT" --password-file="$B/pass")
read -ra params <<< "$PARAMS"

# ---------------------------------------------------------------- contenders
sersync_conf() { # ROOT MODULE OUTFILE (WATCHER=none: no <watcher> element)
    local watcher="  <watcher backend=\"${WATCHER:-inotify}\"/>"
    [ "${WATCHER:-inotify}" = none ] && watcher=""
    cat > "$3" <<EOF
<head version="2.5">
$watcher
  <inotify><delete start="true"/><createFolder start="true"/><createFile start="false"/><closeWrite start="true"/><moveFrom start="true"/><moveTo start="true"/><attrib start="false"/><modify start="false"/></inotify>
  <sersync>
    <localpath watch="$1">
      <remote ip="127.0.0.1" name="$2"/>
      <remote ip="127.0.0.2" name="$2"/>
    </localpath>
    <rsync>
      <commonParams params="$PARAMS"/>
      <auth start="true" users="bench" passwordfile="$B/pass"/>
      <userDefinedPort start="true" port="$PORT"/>
      <ssh start="false"/>
    </rsync>
    <failLog path="$B/conf/fail-$2.sh" timeToExecute="60"/>
  </sersync>
</head>
EOF
}

lsyncd_conf() { # ROOT MODULE DELAY(or "default") OUTFILE  (lsyncd logs to stdout)
    local delay=""
    [ "$3" = default ] || delay="delay = $3,"
    # PARAMS -artuz as lsyncd's rsync table: archive, update, compress.
    cat > "$4" <<EOF
settings { nodaemon = true, insist = false }
for _, ip in ipairs({ "127.0.0.1", "127.0.0.2" }) do
  sync { default.rsync, source = "$1", target = "bench@" .. ip .. "::$2", $delay
    rsync = { archive = true, update = true, compress = true,
              password_file = "$B/pass", _extra = { "--port=$PORT" } } }
end
EOF
}

# start_agent WHO ROOT MODULE: starts a contender in its own process group (agent = its
# pid = its pgid), logging to $log; t0 = start time in ns.
start_agent() {
    local who=$1 root=$2 mod=$3
    log=$OUT/$who-$mod.log
    : > "$log"
    rm -f "$B/conf/fail-$mod.sh"
    t0=$(date +%s%N)
    case $who in
        sersync2 | sersync2-b1 | sersync2-base)
            sersync_conf "$root" "$mod" "$B/conf/sersync-$mod.xml"
            local extra=() abin=$bin
            [ "$who" = sersync2-b1 ] && extra=(--batch 1)
            if [ "$who" = sersync2-base ]; then
                abin=${BASE_BIN:?sersync2-base needs BASE_BIN=path/to/another/sersync2}
            fi
            t0=$(date +%s%N)
            setsid "$abin" -o "$B/conf/sersync-$mod.xml" "${extra[@]}" 2>>"$log" &
            ;;
        lsyncd-d0 | lsyncd-def)
            local d=0
            [ "$who" = lsyncd-def ] && d=default
            lsyncd_conf "$root" "$mod" "$d" "$B/conf/$who-$mod.lua"
            t0=$(date +%s%N)
            setsid lsyncd "$B/conf/$who-$mod.lua" >>"$log" 2>&1 &
            ;;
        iwrsync)
            t0=$(date +%s%N)
            RSYNC_OPTS="${PARAMS//u/}" RSYNC_EXTRA="${auth[*]}" \
                setsid "$peer" "$root" "bench@127.0.0.1::$mod" "bench@127.0.0.2::$mod" 2>>"$log" &
            ;;
        *) echo "bench: unknown contender $who" >&2; exit 2 ;;
    esac
    agent=$!
}

# Log line that says the contender has its watches set (scale), or is set and idle.
watch_marker() {
    case $1 in
        sersync2*) echo "live:" ;;
        lsyncd*) echo "recursive startup rsync" ;;
        iwrsync) echo "Watches established." ;;
    esac
}
ready() { # WHO METRIC: wait until the contender is live and idle
    local pat n=1
    pat=$(watch_marker "$1")
    case $1 in lsyncd*) pat="Startup of"; n=2 ;; esac # both startup rsyncs finished
    if ! H --case "$CASE" --contender "$1" --run "$run" wait-log --log "$log" --pattern "$pat" \
        --count "$n" --start-ns "$t0" --pid "$agent" --deadline 600 --metric "$2" >/dev/null; then
        tail -20 "$log" >&2
        return 1
    fi
}

alive() { [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

stop_agent() {
    [ -n "$agent" ] || return 0
    kill -TERM -- "-$agent" 2>/dev/null || true
    for _ in $(seq 1 600); do
        alive "$agent" || break
        sleep 0.05
    done
    kill -KILL -- "-$agent" 2>/dev/null || true
    wait "$agent" 2>/dev/null || true
    agent=
    "${helper[@]}" wait-idle --daemons "${daemons[@]}" --deadline 60 || true
}

stop_agent_quick() { # the whole group at once: a push to a stopped daemon would hang the grace
    [ -n "$agent" ] || return 0
    kill -KILL -- "-$agent" 2>/dev/null || true
    wait "$agent" 2>/dev/null || true
    agent=
}

reset_mod() {
    rm -rf "$B/src" "$B/dst1/mod" "$B/dst2/mod"
    mkdir -p "$B/src/lat" "$B/dst1/mod/lat" "$B/dst2/mod/lat"
}

runs_for() { case $1 in sersync2-b1 | lsyncd-def) echo "$SLOW_RUNS" ;; *) echo "$RUNS" ;; esac; }

# ---------------------------------------------------------------- data
started=$(date +%s)
say "preparing the burst seed: $FILES files in $DIRS directories"
H mkfiles "$B/seed" "$FILES" "$DIRS" --seed 1 >/dev/null
b1_seed=$B/seed b1_scale=1
if [ "$B1_FILES" -lt "$FILES" ]; then
    b1_seed=$B/seed-b1
    b1_dirs=$(( B1_FILES * DIRS / FILES )); [ "$b1_dirs" -ge 1 ] || b1_dirs=1
    H mkfiles "$b1_seed" "$B1_FILES" "$b1_dirs" --seed 1 >/dev/null
    b1_scale=$(python3 -c "print($FILES / $B1_FILES)")
fi

# ---------------------------------------------------------------- cases a, b, d
if has "$CASES" a; then
    # sersync2's own live rsync command for remote 1, for the bare-push baseline.
    sersync_conf "$B/src" mod "$B/conf/sersync-mod.xml"
    "$bin" -t -o "$B/conf/sersync-mod.xml" > "$B/conf/test-config.txt"
    live_cmd=$(grep -m1 'live:' "$B/conf/test-config.txt")
    for run in $(seq 1 "$RUNS"); do
        CASE=b
        reset_mod
        H --case b --contender rsync-bare --run "$run" bare --cwd "$B/src" --dir bare1 --n "$BARE_N" \
            --dest "bench@127.0.0.1::mod" --remote "$B/dst1/mod" --opts "$PARAMS -R" -- rsync "${auth[@]}" >&2
        H --case b --contender rsync-bare-live --run "$run" bare --cwd "$B/src" --dir bare2 --n "$BARE_N" \
            --dest - --remote "$B/dst1/mod" --live-cmd "$live_cmd" >&2
        H --case b --contender rsync-bare-nodelay --run "$run" bare --cwd "$B/src" --dir bare3 --n "$BARE_N" \
            --dest - --remote "$B/dst1/mod" --live-cmd "$live_cmd" --extra-opt=--sockopts=TCP_NODELAY >&2
        for who in $CONTENDERS; do
            [ "$run" -le "$(runs_for "$who")" ] || continue
            reset_mod
            if [ "$who" = floor ]; then
                say "case a run $run: floor"
                H --case a --contender floor --run "$run" burst --cpu --seed "$B/seed" --dest "$B/src/burst" \
                    --remotes "$B/dst1/mod/burst" "$B/dst2/mod/burst" --daemons "${daemons[@]}" \
                    --count-log "$B/conf/rsyncd1.log" \
                    --floor --floor-dest "bench@127.0.0.1::mod/" "bench@127.0.0.2::mod/" \
                    --floor-cmd rsync "${params[@]}" "${auth[@]}" >&2 || true
                continue
            fi
            say "case a/b/d run $run: $who"
            CASE=a
            start_agent "$who" "$B/src" mod
            if ! ready "$who" ready_s; then stop_agent; continue; fi
            n=$LAT_N
            case $who in sersync2 | sersync2-base) ;; *) [ "$run" -le "$PEER_LAT_RUNS" ] || n=0 ;; esac
            if [ "$who" = lsyncd-def ]; then
                n=0
                [ "$run" = 1 ] && n=$LSYNCD_DEF_LAT_N
            fi
            if [ "$n" -gt 0 ]; then
                H --case b --contender "$who" --run "$run" latency --src "$B/src/lat" \
                    --r1 "$B/dst1/mod/lat" --rest "$B/dst2/mod/lat" --n "$n" --pgid "$agent" \
                    --deadline 60 >&2 || true
            fi
            seed=$B/seed scale=1
            [ "$who" = sersync2-b1 ] && seed=$b1_seed scale=$b1_scale
            H --case a --contender "$who" --run "$run" burst --cpu --seed "$seed" --dest "$B/src/burst" \
                --remotes "$B/dst1/mod/burst" "$B/dst2/mod/burst" --pgid "$agent" --scale "$scale" \
                --daemons "${daemons[@]}" --deadline "$BURST_DEADLINE" --count-log "$B/conf/rsyncd1.log" >&2 || true
            stop_agent
        done
    done
    rm -rf "$B/src" "$B/dst1/mod" "$B/dst2/mod"
fi

# ---------------------------------------------------------------- case c
if has "$CASES" c; then
    say "preparing the scale tree: $SCALE_DIRS directories"
    H mkdirs "$B/scale" "$SCALE_DIRS" >/dev/null
    for run in $(seq 1 "$RUNS"); do
        for who in $CONTENDERS; do
            case $who in sersync2 | lsyncd-d0 | iwrsync) ;; *) continue ;; esac
            say "case c run $run: $who"
            CASE=c
            rm -rf "$B/dst1/scale" "$B/dst2/scale"; mkdir -p "$B/dst1/scale" "$B/dst2/scale"
            start_agent "$who" "$B/scale" scale
            if H --case c --contender "$who" --run "$run" wait-log --log "$log" \
                --pattern "$(watch_marker "$who")" --start-ns "$t0" --pid "$agent" --deadline 600 \
                --metric watch_s >/dev/null; then
                H --case c --contender "$who" --run "$run" rss --pgid "$agent" >&2
            else
                tail -20 "$log" >&2
            fi
            stop_agent
        done
    done
    rm -rf "$B/scale" "$B/dst1/scale" "$B/dst2/scale"
fi

# ---------------------------------------------------------------- case e
if has "$CASES" e; then
    say "preparing the big tree: $BIG files in $BIG_DIRS directories, and both remotes' copies"
    H mkfiles "$B/big" "$BIG" "$BIG_DIRS" --seed 2 >/dev/null
    cp -a "$B/big/." "$B/dst1/big/"
    cp -a "$B/big/." "$B/dst2/big/"
    for run in $(seq 1 "$RUNS"); do
        for who in $CONTENDERS; do
            has "$E_SKIP" "$who" && continue
            [ "$run" -le "$(runs_for "$who")" ] || continue
            rm -rf "$B/big/burst" "$B/dst1/big/burst" "$B/dst2/big/burst"
            CASE=e
            if [ "$who" = floor ]; then
                say "case e run $run: floor"
                H --case e --contender floor --run "$run" burst --cpu --seed "$B/seed" --dest "$B/big/burst" \
                    --remotes "$B/dst1/big/burst" "$B/dst2/big/burst" --daemons "${daemons[@]}" \
                    --count-log "$B/conf/rsyncd1.log" \
                    --floor --floor-dest "bench@127.0.0.1::big/" "bench@127.0.0.2::big/" \
                    --floor-cmd rsync "${params[@]}" "${auth[@]}" >&2 || true
                continue
            fi
            say "case e run $run: $who"
            start_agent "$who" "$B/big" big
            if ! ready "$who" ready_s; then stop_agent; continue; fi
            H --case e --contender "$who" --run "$run" burst --seed "$B/seed" --dest "$B/big/burst" \
                --remotes "$B/dst1/big/burst" "$B/dst2/big/burst" --pgid "$agent" --cpu \
                --daemons "${daemons[@]}" --deadline "$BURST_DEADLINE" --count-log "$B/conf/rsyncd1.log" >&2 || true
            stop_agent
        done
    done
fi

# ---------------------------------------------------------------- case r (renames)
# A directory of RN_MB MB in many files and one file of RBIG_MB MB are renamed inside the
# tree: bytes each daemon received for the renames (its log's "received N bytes" lines
# after the data had arrived) and the time until both remotes show the new names and
# not the old ones, each rename timed on its own, beside a one-small-file push on the
# same agent and the plain push of the same data. Printed on its own; not in the table.
RN_MB=${RN_MB:-200}
RBIG_MB=${RBIG_MB:-100}
received_since() { # LOG OFFSET: bytes received in sessions logged after OFFSET
    tail -c +$(( $2 + 1 )) "$1" | grep -o 'received [0-9,]* bytes' | tr -d , |
        awk '{s += $2} END {print s + 0}'
}
small_edit() { # NAME: write one small file, print ms until both remotes have it
    local t0 t1
    t0=$(date +%s%N)
    printf 'small %s\n' "$1" > "$B/src/gig/$1"
    for _ in $(seq 1 20000); do
        [ -e "$B/dst1/mod/gig/$1" ] && [ -e "$B/dst2/mod/gig/$1" ] && break
        sleep 0.001
    done
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000 ))
}
if has "$CASES" r; then
    for run in $(seq 1 "$RUNS"); do
        reset_mod
        say "case r run $run: $RN_MB MB in a directory and a $RBIG_MB MB file"
        mkdir -p "$B/src/rn/old"
        python3 - "$B/src/rn/old" "$RN_MB" <<'PY'
import os, sys
d, mb = sys.argv[1], int(sys.argv[2])
for i in range(mb * 10):  # 100 KiB each
    sub = os.path.join(d, "d%03d" % (i // 100))
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, "f%05d.bin" % i), "wb") as f:
        f.write(os.urandom(100 * 1024))
PY
        head -c $(( RBIG_MB * 1024 * 1024 )) /dev/urandom > "$B/src/rn/big.bin"
        CASE=r
        start_agent sersync2 "$B/src" mod
        ready sersync2 ready_s || { stop_agent; continue; }
        # Everything there (the -r-less agent pushes what it sees: push it all once),
        # timed: what sending the data plain costs, for comparison.
        log1=$B/conf/rsyncd1.log log2=$B/conf/rsyncd2.log
        t0=$(date +%s%N)
        rsync -a "${auth[@]}" "$B/src/rn" "bench@127.0.0.1::mod/" 2>/dev/null &
        first=$!
        rsync -a "${auth[@]}" "$B/src/rn" "bench@127.0.0.2::mod/" 2>/dev/null
        wait "$first"
        t_plain=$(( ($(date +%s%N) - t0) / 1000000 ))
        sleep 1 # let the daemons finish logging those sessions
        o1=$(stat -c %s "$log1") o2=$(stat -c %s "$log2")
        # until_renamed NEW OLD [FILES]: ms until both remotes show NEW (with FILES
        # files below it) and not OLD.
        until_renamed() {
            local t0 t1 ok=0
            t0=$(date +%s%N)
            for _ in $(seq 1 2400); do
                ok=1
                for r in "$B/dst1/mod/rn" "$B/dst2/mod/rn"; do
                    [ -e "$r/$1" ] && [ ! -e "$r/$2" ] || ok=0
                    if [ -n "${3:-}" ] && [ $ok = 1 ]; then
                        [ "$(find "$r/$1" -type f 2>/dev/null | wc -l)" = "$3" ] || ok=0
                    fi
                done
                [ $ok = 1 ] && break
                sleep 0.005
            done
            t1=$(date +%s%N)
            [ $ok = 1 ] && echo $(( (t1 - t0) / 1000000 )) || echo TIMEOUT
        }
        mv "$B/src/rn/old" "$B/src/rn/new"
        t_dir=$(until_renamed new old $(( RN_MB * 10 )))
        mv "$B/src/rn/big.bin" "$B/src/rn/big2.bin"
        t_file=$(until_renamed big2.bin big.bin)
        idle=$(mkdir -p "$B/src/gig" && small_edit "rn-small.txt")
        sleep 1 # the last sessions' summary lines
        b1=$(received_since "$log1" "$o1") b2=$(received_since "$log2" "$o2")
        total=$(( (RN_MB + RBIG_MB) * 1024 * 1024 ))
        printf 'renames: the %s MB directory (%s files) on both remotes after %s ms, the %s MB file after %s ms; one small file after %s.%03d ms; the plain push of the same data took %s ms; received %s and %s bytes (%s%% and %s%% of %s MB)\n' \
            "$RN_MB" $(( RN_MB * 10 )) "$t_dir" "$RBIG_MB" "$t_file" $(( idle / 1000 )) $(( idle % 1000 )) "$t_plain" "$b1" "$b2" \
            "$(python3 -c "print(round(100 * $b1 / $total, 3))")" \
            "$(python3 -c "print(round(100 * $b2 / $total, 3))")" $(( RN_MB + RBIG_MB )) >&2
        stop_agent
    done
fi

# ---------------------------------------------------------------- case r, flood
# RN_FLOOD small files renamed in one directory at once (a script's mv loop, a cache
# rotating names), then one unrelated file written: the time until both remotes match the
# source, the unrelated file's latency (against the same write on the idle agent just
# before), how many rsync sessions each daemon ran for it, and the plain push of the same
# paths (rsync -R --delete-missing-args of the old and new names, both remotes at once,
# no agent) for comparison. With R_BASE_BIN (a sersync2 binary of another build, say
# main before a change) the same flood runs on it first, in the same run. RN_FLOOD=0
# skips it. Printed on its own; not in the table.
RN_FLOOD=${RN_FLOOD:-1000}
R_BASE_BIN=${R_BASE_BIN:-}
flood_once() { # SRC REMOTE...: prints ms to match, unrelated ms, idle ms, ms to issue
    python3 - "$RN_FLOOD" "$@" <<'PY'
import os, sys, time
n, src, remotes = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
def ms(t): return round((time.monotonic() - t) * 1000)
def until(ok, limit=600):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if ok():
            return True
        time.sleep(0.002)
    return False
def there(rel): return all(os.path.exists(os.path.join(r, rel)) for r in remotes)
os.makedirs(os.path.join(src, "flood"), exist_ok=True)
os.makedirs(os.path.join(src, "lat"), exist_ok=True)
for i in range(n):
    with open(os.path.join(src, "flood", "f%05d" % i), "wb") as f:
        f.write(os.urandom(1024))
old = set("f%05d" % i for i in range(n))
new = set("g%05d" % i for i in range(n))
def names(r):
    try:
        return set(os.listdir(os.path.join(r, "flood")))
    except OSError:
        return set()
if not until(lambda: all(names(r) == old for r in remotes)):
    sys.exit("the files never arrived")
time.sleep(1)  # idle again
t = time.monotonic()
with open(os.path.join(src, "lat", "idle.txt"), "w") as f:
    f.write("idle\n")
until(lambda: there("lat/idle.txt"))
idle = ms(t)
time.sleep(0.5)
t0 = time.monotonic()
for i in range(n):
    os.rename(os.path.join(src, "flood", "f%05d" % i), os.path.join(src, "flood", "g%05d" % i))
issued = ms(t0)
tu = time.monotonic()
with open(os.path.join(src, "lat", "after-flood.txt"), "w") as f:
    f.write("after\n")
lat = None
done = None
end = time.monotonic() + 900
while time.monotonic() < end and (lat is None or done is None):
    if lat is None and there("lat/after-flood.txt"):
        lat = ms(tu)
    if done is None and all(names(r) == new for r in remotes):
        done = ms(t0)
    time.sleep(0.002)
print(done if done is not None else "TIMEOUT", lat if lat is not None else "TIMEOUT", idle, issued)
PY
}
sessions_since() { # LOG OFFSET: rsync sessions a daemon logged after OFFSET
    tail -c +$(( $2 + 1 )) "$1" | grep -c '\] rsync to ' || true
}
if has "$CASES" r && [ "$RN_FLOOD" -gt 0 ]; then
    for run in $(seq 1 "$RUNS"); do
        for who in ${R_BASE_BIN:+sersync2-base} sersync2; do
            reset_mod
            say "case r flood run $run: $RN_FLOOD renames in one directory ($who)"
            CASE=r-flood
            own_bin=$bin
            [ "$who" = sersync2-base ] && bin=$R_BASE_BIN
            start_agent sersync2 "$B/src" mod
            bin=$own_bin
            ready sersync2 ready_s || { stop_agent; continue; }
            log1=$B/conf/rsyncd1.log log2=$B/conf/rsyncd2.log
            o1=$(stat -c %s "$log1") o2=$(stat -c %s "$log2")
            read -r f_done f_lat f_idle f_issued < <(flood_once "$B/src" "$B/dst1/mod" "$B/dst2/mod") || true
            sleep 1 # the last sessions' lines
            s1=$(sessions_since "$log1" "$o1") s2=$(sessions_since "$log2" "$o2")
            stop_agent
            # The plain push of the same paths, no agent: the new names back to the old
            # ones, then the old and new names to both remotes at once.
            for i in $(seq 0 $(( RN_FLOOD - 1 ))); do
                printf 'flood/g%05d\nflood/f%05d\n' "$i" "$i"
            done > "$B/conf/flood.list"
            (cd "$B/src/flood" && for i in $(seq 0 $(( RN_FLOOD - 1 ))); do
                printf 'g%05d\0f%05d\0' "$i" "$i"; done | xargs -0 -n 2 mv)
            t0=$(date +%s%N)
            (cd "$B/src" && rsync "${params[@]}" -R --delete-missing-args --files-from="$B/conf/flood.list" \
                "${auth[@]}" ./ bench@127.0.0.1::mod/) &
            first=$!
            (cd "$B/src" && rsync "${params[@]}" -R --delete-missing-args --files-from="$B/conf/flood.list" \
                "${auth[@]}" ./ bench@127.0.0.2::mod/)
            wait "$first"
            t_plain=$(( ($(date +%s%N) - t0) / 1000000 ))
            printf 'rename flood (%s): %s renames in one directory on both remotes after %s ms (issued in %s ms; the plain push of the same %s paths: %s ms); one file written right after: %s ms (idle agent: %s ms); rsync sessions per daemon: %s and %s\n' \
                "$who" "$RN_FLOOD" "${f_done:-?}" "${f_issued:-?}" $(( 2 * RN_FLOOD )) "$t_plain" \
                "${f_lat:-?}" "${f_idle:-?}" "$s1" "$s2" >&2
        done
    done
fi

# ---------------------------------------------------------------- case g (big file)
# While a GIG_MB MB file is being pushed, one small edit: the time until it is on both
# remotes, against the same edit on an idle agent. Printed on its own.
GIG_MB=${GIG_MB:-1024}
if has "$CASES" g; then
    for run in $(seq 1 "$RUNS"); do
        reset_mod
        mkdir -p "$B/src/gig" "$B/dst1/mod/gig" "$B/dst2/mod/gig"
        CASE=g
        start_agent sersync2 "$B/src" mod
        ready sersync2 ready_s || { stop_agent; continue; }
        idle=$(small_edit idle1.txt)
        head -c $(( GIG_MB * 1024 * 1024 )) /dev/urandom > "$B/src/gig.tmp"
        mv "$B/src/gig.tmp" "$B/src/gig/big.bin"
        # Once the big push has started on remote 1 (its temp file exists), edit.
        for _ in $(seq 1 5000); do
            ls -a "$B/dst1/mod/gig" | grep -q '^\.big\.bin\.' && break
            sleep 0.002
        done
        busy=$(small_edit busy1.txt)
        still=no
        [ -e "$B/dst1/mod/gig/big.bin" ] && [ -e "$B/dst2/mod/gig/big.bin" ] || still=yes
        printf 'big file: a small edit took %s.%03d ms while the %s MB push ran (%s), %s.%03d ms on the idle agent\n' \
            $(( busy / 1000 )) $(( busy % 1000 )) "$GIG_MB" \
            "$([ $still = yes ] && echo 'it was still running' || echo 'it had ended')" \
            $(( idle / 1000 )) $(( idle % 1000 )) >&2
        stop_agent
    done
fi

# ---------------------------------------------------------------- case s (ssh)
# One change over ssh to a loopback sshd: sersync2 in ssh mode (one ControlMaster
# connection per remote) against a bare `rsync -e ssh` push of one file (a handshake
# each); and a FILES-file burst over ssh to two remotes against the floor over ssh.
# Printed on its own (and in OUT/ssh.tsv); not part of the table.
if has "$CASES" s; then
    [ -x /usr/sbin/sshd ] || { apt-get install -y -qq openssh-server openssh-client >/dev/null; }
    SSH_USER=${SSH_USER:-root}
    if [ "$SSH_USER" != root ] && ! id "$SSH_USER" >/dev/null 2>&1; then
        # A sync account as an operator would make one: a shell, no start-up files,
        # key login only ('*': no password, not locked, which sshd without PAM refuses).
        useradd -M -s /bin/bash -p '*' "$SSH_USER"
    fi
    if [ "$SSH_USER" != root ]; then
        mkdir -p "$B/ssh/home"
        chown "$SSH_USER" "$B/ssh/home"
        usermod -d "$B/ssh/home" "$SSH_USER"
    fi
    # Remote directories, owned by the account the pushes log in as.
    sshdir() {
        mkdir -p "$@"
        [ "$SSH_USER" = root ] && return
        local d
        for d in "$@"; do
            chown -R "$SSH_USER" "$d"
            case $(dirname "$d") in "$B"/dst-*) chown "$SSH_USER" "$(dirname "$d")" ;; esac
        done
    }
    mkdir -p /run/sshd "$B/ssh" "$B/sshsrc/lat"
    sshdir "$B/dst-sshbare" "$B/dst-ssh/lat"
    ssh-keygen -q -t ed25519 -N '' -f "$B/ssh/host"
    ssh-keygen -q -t ed25519 -N '' -f "$B/ssh/client"
    cp "$B/ssh/client.pub" "$B/ssh/authorized_keys"
    chmod 600 "$B/ssh/authorized_keys"
    # sshd reads it as the user who logs in.
    [ "$SSH_USER" = root ] || chown "$SSH_USER" "$B/ssh/authorized_keys"
    sport=$(( PORT + 100 ))
    printf '%s\n' "Port $sport" "ListenAddress 127.0.0.1" "ListenAddress 127.0.0.2" "HostKey $B/ssh/host" \
        "AuthorizedKeysFile $B/ssh/authorized_keys" "PermitRootLogin prohibit-password" \
        "PasswordAuthentication no" "KbdInteractiveAuthentication no" "StrictModes no" \
        "UsePAM no" "PidFile $B/ssh/sshd.pid" "LogLevel ERROR" > "$B/ssh/sshd_config"
    /usr/sbin/sshd -D -f "$B/ssh/sshd_config" -E "$B/ssh/sshd.log" &
    daemons+=($!)
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$sport") 2>/dev/null && break; sleep 0.05; done
    sshcmd="ssh -F /dev/null -l $SSH_USER -p $sport -i $B/ssh/client -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
    # What every call pays on the remote besides rsync: a session on the shared
    # connection and the account's shell with its start-up files (`shell -c 'rsync
    # --server ...'`). Median of 9 `true` over one master connection.
    cm="$B/ssh/cm-%C"
    $sshcmd -o ControlMaster=yes -o ControlPath="$cm" -o ControlPersist=30 -f -N 127.0.0.1 || true
    shell_ms=$(for _ in $(seq 1 9); do
        t0=$(date +%s%N); $sshcmd -o ControlPath="$cm" 127.0.0.1 true; echo $(( ($(date +%s%N) - t0) / 1000000 ))
    done | sort -n | sed -n 5p)
    $sshcmd -o ControlPath="$cm" -O exit 127.0.0.1 2>/dev/null || true
    printf 'ssh: one remote command over a shared connection (session + %s'"'"'s shell start-up): %s ms\n' \
        "$SSH_USER" "${shell_ms:-?}" >&2
    for run in $(seq 1 "$RUNS"); do
        say "case s run $run: bare rsync -e ssh"
        rm -rf "$B/sshsrc/sshbare" "$B/dst-sshbare"
        sshdir "$B/dst-sshbare"
        "${helper[@]}" --out "$OUT/ssh.tsv" --case s --contender rsync-e-ssh --run "$run" bare \
            --cwd "$B/sshsrc" --dir sshbare --n "$BARE_N" --dest "127.0.0.1:$B/dst-sshbare" \
            --remote "$B/dst-sshbare" --opts "$PARAMS -R" -- rsync -e "$sshcmd" >&2 || true
        say "case s run $run: sersync2 over ssh"
        rm -rf "$B/sshsrc/lat" "$B/dst-ssh"
        mkdir -p "$B/sshsrc/lat"
        sshdir "$B/dst-ssh/lat"
        printf '%s\n' '<head version="2.5">' '  <sersync>' \
            "    <localpath watch=\"$B/sshsrc\"><remote ip=\"127.0.0.1\" name=\"$B/dst-ssh\"/></localpath>" \
            "    <rsync><commonParams params=\"$PARAMS\"/><ssh start=\"true\" command=\"$sshcmd\"/></rsync>" \
            "    <failLog path=\"$B/conf/fail-ssh.sh\" timeToExecute=\"60\"/>" '  </sersync>' '</head>' \
            > "$B/conf/sersync-ssh.xml"
        log=$OUT/sersync2-ssh.log
        : > "$log"
        setsid "$bin" -o "$B/conf/sersync-ssh.xml" 2>>"$log" &
        agent=$!
        for _ in $(seq 1 200); do grep -q 'live:' "$log" && break; sleep 0.05; done
        "${helper[@]}" --out "$OUT/ssh.tsv" --case s --contender sersync2-ssh --run "$run" latency \
            --src "$B/sshsrc/lat" --r1 "$B/dst-ssh/lat" --n "$LAT_N" --pgid "$agent" --deadline 60 >&2 || true
        # A directory of SSH_RN_FILES files of 100 KiB renamed: the time until the remote
        # shows the new name with every file and not the old one.
        python3 - "$B/sshsrc/rn/old" "${SSH_RN_FILES:-2000}" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    sub = os.path.join(d, "d%03d" % (i // 100))
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, "f%05d.bin" % i), "wb") as f:
        f.write(os.urandom(100 * 1024))
PY
        for _ in $(seq 1 1200); do
            [ "$(find "$B/dst-ssh/rn/old" -type f 2>/dev/null | wc -l)" = "${SSH_RN_FILES:-2000}" ] && break
            sleep 0.05
        done
        sleep 1 # the tree is there; let the agent go idle
        t0=$(date +%s%N)
        mv "$B/sshsrc/rn/old" "$B/sshsrc/rn/new"
        ok=0
        for _ in $(seq 1 4000); do
            if [ -d "$B/dst-ssh/rn/new" ] && [ ! -e "$B/dst-ssh/rn/old" ]; then ok=1; break; fi
            sleep 0.002
        done
        t1=$(date +%s%N)
        [ "$(find "$B/dst-ssh/rn/new" -type f | wc -l)" = "${SSH_RN_FILES:-2000}" ] || ok=0
        printf 'ssh rename: a directory of %s files of 100 KiB renamed, on the remote after %s ms (%s)\n' \
            "${SSH_RN_FILES:-2000}" $(( (t1 - t0) / 1000000 )) "$([ $ok = 1 ] && echo ok || echo INCOMPLETE)" >&2
        rm -rf "$B/sshsrc/rn"
        kill -TERM -- "-$agent" 2>/dev/null
        wait "$agent" 2>/dev/null
        agent=
        # The burst over ssh to two remotes (127.0.0.1 and 127.0.0.2, one sshd): the
        # floor (cp -a, then one `rsync -e ssh` per remote in parallel), then sersync2.
        say "case s run $run: burst over ssh, floor"
        rm -rf "$B/sshsrc/burst" "$B/dst-sshb1" "$B/dst-sshb2"
        sshdir "$B/dst-sshb1" "$B/dst-sshb2"
        "${helper[@]}" --out "$OUT/ssh.tsv" --case s-burst --contender floor-ssh --run "$run" burst \
            --seed "$B/seed" --dest "$B/sshsrc/burst" --remotes "$B/dst-sshb1/burst" "$B/dst-sshb2/burst" \
            --floor --floor-dest "127.0.0.1:$B/dst-sshb1/" "127.0.0.2:$B/dst-sshb2/" \
            --floor-cmd rsync "${params[@]}" -e "$sshcmd" >&2 || true
        say "case s run $run: burst over ssh, sersync2"
        rm -rf "$B/sshsrc/burst" "$B/dst-sshb1" "$B/dst-sshb2"
        sshdir "$B/dst-sshb1" "$B/dst-sshb2"
        printf '%s\n' '<head version="2.5">' '  <sersync>' \
            "    <localpath watch=\"$B/sshsrc\"><remote ip=\"127.0.0.1\" name=\"$B/dst-sshb1\"/><remote ip=\"127.0.0.2\" name=\"$B/dst-sshb2\"/></localpath>" \
            "    <rsync><commonParams params=\"$PARAMS\"/><ssh start=\"true\" command=\"$sshcmd\"/></rsync>" \
            "    <failLog path=\"$B/conf/fail-ssh2.sh\" timeToExecute=\"60\"/>" '  </sersync>' '</head>' \
            > "$B/conf/sersync-ssh2.xml"
        log=$OUT/sersync2-ssh2.log
        : > "$log"
        setsid "$bin" -o "$B/conf/sersync-ssh2.xml" 2>>"$log" &
        agent=$!
        for _ in $(seq 1 200); do grep -q 'live:' "$log" && break; sleep 0.05; done
        # One push first, so both master connections are up, as in steady operation.
        mkdir -p "$B/sshsrc/warm"
        for _ in $(seq 1 400); do
            [ -d "$B/dst-sshb1/warm" ] && [ -d "$B/dst-sshb2/warm" ] && break
            sleep 0.05
        done
        "${helper[@]}" --out "$OUT/ssh.tsv" --case s-burst --contender sersync2-ssh --run "$run" burst \
            --seed "$B/seed" --dest "$B/sshsrc/burst" --remotes "$B/dst-sshb1/burst" "$B/dst-sshb2/burst" \
            --pgid "$agent" --deadline "$BURST_DEADLINE" >&2 || true
        kill -TERM -- "-$agent" 2>/dev/null
        wait "$agent" 2>/dev/null
        agent=
        rm -rf "$B/sshsrc/burst" "$B/sshsrc/warm" "$B/dst-sshb1" "$B/dst-sshb2"
        # The rename flood of case r (RN_FLOOD renames in one directory, then one file)
        # over ssh to two remotes; with R_BASE_BIN on that build first. RN_FLOOD=0 skips.
        for who in ${R_BASE_BIN:+sersync2-base} sersync2; do
            [ "$RN_FLOOD" -gt 0 ] || break
            say "case s run $run: $RN_FLOOD renames over ssh ($who)"
            rm -rf "$B/sshsrc" "$B/dst-sshf1" "$B/dst-sshf2"
            mkdir -p "$B/sshsrc"
            sshdir "$B/dst-sshf1" "$B/dst-sshf2"
            printf '%s\n' '<head version="2.5">' '  <sersync>' \
                "    <localpath watch=\"$B/sshsrc\"><remote ip=\"127.0.0.1\" name=\"$B/dst-sshf1\"/><remote ip=\"127.0.0.2\" name=\"$B/dst-sshf2\"/></localpath>" \
                "    <rsync><commonParams params=\"$PARAMS\"/><ssh start=\"true\" command=\"$sshcmd\"/></rsync>" \
                "    <failLog path=\"$B/conf/fail-ssh3.sh\" timeToExecute=\"60\"/>" '  </sersync>' '</head>' \
                > "$B/conf/sersync-ssh3.xml"
            log=$OUT/sersync2-ssh3.log
            : > "$log"
            fbin=$bin
            [ "$who" = sersync2-base ] && fbin=$R_BASE_BIN
            setsid "$fbin" -o "$B/conf/sersync-ssh3.xml" 2>>"$log" &
            agent=$!
            for _ in $(seq 1 200); do grep -q 'live:' "$log" && break; sleep 0.05; done
            read -r f_done f_lat f_idle f_issued < <(flood_once "$B/sshsrc" "$B/dst-sshf1" "$B/dst-sshf2") || true
            printf 'ssh rename flood (%s): %s renames in one directory on both remotes after %s ms (issued in %s ms); one file written right after: %s ms (idle agent: %s ms)\n' \
                "$who" "$RN_FLOOD" "${f_done:-?}" "${f_issued:-?}" "${f_lat:-?}" "${f_idle:-?}" >&2
            kill -TERM -- "-$agent" 2>/dev/null
            wait "$agent" 2>/dev/null
            agent=
            rm -rf "$B/sshsrc" "$B/dst-sshf1" "$B/dst-sshf2"
            mkdir -p "$B/sshsrc/lat"
        done
    done
fi

# ---------------------------------------------------------------- case m (a million directories)
# A tree of M_DIRS directories below its root on /dev/shm (default 1,001,000: 1,000
# top-level directories of 1,000 each; 1,001,001 with the root). For each contender: seconds
# to ready (sersync2: its "live:" line; inotifywait -mr: "Watches established."), the
# CPU it took to get there (utime+stime) and peak RSS (VmHWM); then, for sersync2, the
# latency of one change (both remotes have it), and for every contender the CPU
# (utime+stime, /proc/PID/stat) of M_IDLE seconds idle.
# Contenders: sersync2 as configured by default (auto), with <watcher backend="inotify"/> and
# with <watcher backend="fanotify"/> in <head> (a build that refuses or does not know
# the element is skipped, saying why), and inotifywait -mr. Printed on its own and in
# OUT/million.tsv; not part of the table.
M_DIRS=${M_DIRS:-1001000}
M_IDLE=${M_IDLE:-60}
# M_BASE_BIN: a sersync2 binary of another build (say, the commit before a change),
# measured in the same run as "sersync2-base".
M_BASE_BIN=${M_BASE_BIN:-}
M_CONTENDERS=${M_CONTENDERS:-${M_BASE_BIN:+sersync2-base }sersync2 sersync2-inotify sersync2-fanotify inotifywait}
cpu_ticks() { # PID: utime+stime in clock ticks
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
group_ticks() { # PGID: utime+stime of every process of the group (children that ended included)
    local t=0 p
    for p in $(pgrep -g "$1"); do t=$(( t + $(cpu_ticks "$p") )); done
    echo "$t"
}
hz=$(getconf CLK_TCK)
million_conf() { # WHO ROOT OUT BIN: a sersync2 config for case m, or nothing and 1 if refused
    local watcher=auto
    case $1 in
        sersync2-base) watcher=none ;;
        sersync2-inotify) watcher=inotify ;;
        sersync2-fanotify) watcher=fanotify ;;
    esac
    WATCHER=$watcher sersync_conf "$2" scale "$3"
    local why
    if ! why=$("$4" -t -o "$3" 2>&1); then
        say "case m: skipping $1: the config is refused: $(printf '%s' "$why" | grep -v '^$' | tail -1)"
        return 1
    fi
    if printf '%s' "$why" | grep -q 'unknown element <head/watcher>'; then
        say "case m: skipping $1: this build does not know <watcher> (it would watch with its default)"
        return 1
    fi
}
if has "$CASES" m; then
    need_watches=$(( M_DIRS + 200000 ))
    cur=$(cat /proc/sys/fs/inotify/max_user_watches)
    [ "$cur" -ge "$need_watches" ] || echo "$need_watches" > /proc/sys/fs/inotify/max_user_watches
    say "case m: making $M_DIRS directories"
    ms=$(date +%s%N)
    H mkdirs "$B/million" "$M_DIRS" >/dev/null
    say "case m: tree made in $(( ($(date +%s%N) - ms) / 1000000 )) ms"
    mt=$OUT/million.tsv
    : > "$mt"
    for run in $(seq 1 "$RUNS"); do
        for who in $M_CONTENDERS; do
            CASE=m
            rm -rf "$B/dst1/scale" "$B/dst2/scale"; mkdir -p "$B/dst1/scale" "$B/dst2/scale"
            log=$OUT/$who-million.log
            : > "$log"
            case $who in
                sersync2*)
                    mbin=$bin
                    [ "$who" = sersync2-base ] && mbin=$M_BASE_BIN
                    million_conf "$who" "$B/million" "$B/conf/million-$who.xml" "$mbin" || continue
                    t0=$(date +%s%N)
                    setsid "$mbin" -o "$B/conf/million-$who.xml" 2>>"$log" &
                    agent=$!
                    pat="live:"
                    ;;
                inotifywait)
                    t0=$(date +%s%N)
                    setsid inotifywait -mr -e create,delete,move,close_write "$B/million" \
                        >"$OUT/inotifywait-million.events" 2>>"$log" &
                    agent=$!
                    pat="Watches established."
                    ;;
            esac
            say "case m run $run: $who"
            if ! "${helper[@]}" --out "$mt" --case m --contender "$who" --run "$run" wait-log --log "$log" \
                --pattern "$pat" --start-ns "$t0" --pid "$agent" --deadline 1800 --metric ready_s >&2; then
                tail -5 "$log" >&2
                stop_agent
                continue
            fi
            # CPU the set-up took (utime+stime until ready): less noisy than the time on a
            # loaded machine.
            setup=$(python3 -c "print('%.2f' % ($(group_ticks "$agent") / $hz))")
            printf 'm\t%s\t%s\tready_cpu_s\t%s\n' "$who" "$run" "$setup" >> "$mt"
            "${helper[@]}" --out "$mt" --case m --contender "$who" --run "$run" rss --pgid "$agent" >&2
            if [ "${who#sersync2}" != "$who" ]; then
                "${helper[@]}" --out "$mt" --case m --contender "$who" --run "$run" latency \
                    --src "$B/million/t0000" --r1 "$B/dst1/scale/t0000" --rest "$B/dst2/scale/t0000" \
                    --n 5 --pgid "$agent" --deadline 60 >&2 || true
            fi
            before=$(group_ticks "$agent")
            sleep "$M_IDLE"
            after=$(group_ticks "$agent")
            idle=$(python3 -c "print('%.2f' % (($after - $before) / $hz))")
            say "case m run $run: $who idle CPU over ${M_IDLE}s: ${idle}s"
            printf 'm\t%s\t%s\tidle_cpu_s\t%s\n' "$who" "$run" "$idle" >> "$mt"
            stop_agent
            rm -f "$OUT/inotifywait-million.events"
        done
    done
    rm -rf "$B/million" "$B/dst1/scale" "$B/dst2/scale"
    echo "case m ($M_DIRS directories below the root):" >&2
    cat "$mt" >&2
fi

# ---------------------------------------------------------------- case t (event storm)
# T_FILES (200,000) new empty files in one directory, made by `xargs touch` (a few
# seconds), while sersync2 watches: time until both remotes hold them all, the agent's peak
# RSS and its CPU (utime+stime) from the first write to then. With the collapse at its
# default (10,000 waiting in one directory) and off (SERSYNC2_COLLAPSE_AT=0).
# max_queued_events is raised for the case so that the kernel queue does not overflow
# (an overflow would turn the storm into a full sync). Printed on its own and in
# OUT/storm.tsv.
T_FILES=${T_FILES:-200000}
if has "$CASES" t; then
    echo 4194304 > /proc/sys/fs/inotify/max_queued_events
    st=$OUT/storm.tsv
    : > "$st"
    for run in $(seq 1 "$RUNS"); do
        for mode in collapse no-collapse; do
            reset_mod
            mkdir -p "$B/src/storm"
            env_c=()
            [ "$mode" = no-collapse ] && env_c=(SERSYNC2_COLLAPSE_AT=0)
            sersync_conf "$B/src" mod "$B/conf/storm.xml"
            log=$OUT/sersync2-storm-$mode.log
            : > "$log"
            t0=$(date +%s%N)
            env "${env_c[@]}" setsid "$bin" -o "$B/conf/storm.xml" 2>>"$log" &
            agent=$!
            CASE=t
            if ! "${helper[@]}" --out "$st" --case t --contender "sersync2-$mode" --run "$run" wait-log \
                --log "$log" --pattern "live:" --start-ns "$t0" --pid "$agent" --deadline 120 \
                --metric ready_s >/dev/null; then
                tail -5 "$log" >&2; stop_agent; continue
            fi
            say "case t run $run: sersync2 ($mode): $T_FILES files into one directory"
            before=$(cpu_ticks "$agent")
            python3 - "$B/src/storm" "$T_FILES" "$B/dst1/mod/storm" "$B/dst2/mod/storm" "$st" \
                "sersync2-$mode" "$run" <<'PY'
import os, subprocess, sys, time
src, n, d1, d2, out, who, run = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
t0 = time.monotonic()
# touch with many names per process: empty files, as fast as the kernel makes them.
subprocess.run("seq -f 'f%%06g' 0 %d | xargs touch" % (n - 1), shell=True, cwd=src, check=True)
wrote = time.monotonic() - t0
def count(d):
    try:
        return sum(1 for _ in os.scandir(d))
    except OSError:
        return 0
deadline = t0 + 1800
while time.monotonic() < deadline:
    if count(d1) >= n and count(d2) >= n:
        break
    time.sleep(0.5)
done = time.monotonic() - t0
ok = count(d1) >= n and count(d2) >= n
with open(out, "a") as f:
    f.write("t\t%s\t%s\twrite_s\t%.2f\n" % (who, run, wrote))
    f.write("t\t%s\t%s\tsynced_s\t%s\n" % (who, run, "%.2f" % done if ok else "timeout"))
print("%s: wrote %d files in %.2fs; both remotes have them after %.2fs%s" % (who, n, wrote, done, "" if ok else " (TIMEOUT)"), file=sys.stderr)
PY
            after=$(cpu_ticks "$agent")
            cpu=$(python3 -c "print('%.2f' % (($after - $before) / $hz))")
            printf 't\tsersync2-%s\t%s\tcpu_s\t%s\n' "$mode" "$run" "$cpu" >> "$st"
            "${helper[@]}" --out "$st" --case t --contender "sersync2-$mode" --run "$run" rss --pgid "$agent" >&2
            grep -c 'collapsed into one push' "$log" | sed "s/^/collapses logged: /" >&2 || true
            stop_agent
        done
    done
    rm -rf "$B/src" "$B/dst1/mod" "$B/dst2/mod"
    echo "case t ($T_FILES files in one directory):" >&2
    cat "$st" >&2
fi

# ---------------------------------------------------------------- case f (fan-out)
# FAN_MAX rsync daemons of its own on 127.0.0.1..127.0.0.FAN_MAX (one port, module fan,
# auth user bench). For each N in FAN_NS: the burst (cp -a of FAN_FILES files) to N
# remotes and the one-change latency to the first remote and to all N, for the floor
# (cp -a, then one rsync per remote, all in parallel), sersync2 (default workers),
# sersync2 -n 10 (the old default) and lsyncd delay=0 (one sync{} per remote). With
# N = FAN_MAX, the latency again with the last daemon SIGSTOPped (it accepts connections
# and never answers), to the other N-1. Case h (relay) uses the first two daemons:
# agent 1 pushes to daemon 1, agent 2 watches daemon 1's module path and pushes on to
# daemon 2. Printed as a table of its own (OUT/fan.txt); results.tsv has case f and t.
FAN_NS=${FAN_NS:-2 5 10 20}
FAN_FILES=${FAN_FILES:-10000}
FAN_DIRS=${FAN_DIRS:-1000}
FAN_LAT_N=${FAN_LAT_N:-30}
FAN_RUNS=${FAN_RUNS:-1}
FAN_CONTENDERS=${FAN_CONTENDERS:-floor sersync2 sersync2-n10 lsyncd-d0}
fan_daemons=()
if has "$CASES" f || has "$CASES" h; then
    FAN_MAX=0
    for n in $FAN_NS; do [ "$n" -gt "$FAN_MAX" ] && FAN_MAX=$n; done
    [ "$FAN_MAX" -lt 2 ] && FAN_MAX=2
    fan_ips=()
    for i in $(seq 1 "$FAN_MAX"); do fan_ips+=("127.0.0.$i"); done
    FPORT=$(( PORT + 1 ))
    fan_port_free() {
        python3 - "$1" "${fan_ips[@]}" <<'PY'
import socket, sys
for ip in sys.argv[2:]:
    s = socket.socket()
    try:
        s.bind((ip, int(sys.argv[1])))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
PY
    }
    for _ in $(seq 1 50); do fan_port_free "$FPORT" && break; FPORT=$((FPORT + 1)); done
    for i in $(seq 1 "$FAN_MAX"); do
        mkdir -p "$B/fan/dst$i"
        printf '%s\n' "$sockopts" "use chroot = no" "uid = root" "gid = root" \
            "pid file = $B/conf/fan$i.pid" "log file = $B/conf/fan$i.log" "transfer logging = yes" \
            "[fan]" "    path = $B/fan/dst$i" "    read only = no" "    auth users = bench" \
            "    secrets file = $B/secrets" > "$B/conf/fan$i.conf"
        rsync --daemon --no-detach --config="$B/conf/fan$i.conf" --address="127.0.0.$i" --port="$FPORT" &
        fan_daemons+=($!)
        daemons+=($!)
    done
    for ip in "${fan_ips[@]}"; do
        ok=
        for _ in $(seq 1 200); do
            if rsync --port="$FPORT" "$ip::" 2>/dev/null | grep -q '^fan'; then ok=1; break; fi
            sleep 0.05
        done
        [ -n "$ok" ] || { echo "bench: rsync daemon on $ip:$FPORT did not come up" >&2; exit 1; }
    done
    say "fan-out: $FAN_MAX rsync daemons on 127.0.0.1..$FAN_MAX port $FPORT"
    fauth=(--port="$FPORT" --password-file="$B/pass")
    fan_conf() { # ROOT OUTFILE IP...
        local root=$1 out=$2 ip
        shift 2
        {
            echo '<head version="2.5">'
            echo '  <inotify><delete start="true"/><createFolder start="true"/><createFile start="false"/><closeWrite start="true"/><moveFrom start="true"/><moveTo start="true"/><attrib start="false"/><modify start="false"/></inotify>'
            echo "  <sersync><localpath watch=\"$root\">"
            for ip in "$@"; do echo "      <remote ip=\"$ip\" name=\"fan\"/>"; done
            echo "    </localpath><rsync><commonParams params=\"$PARAMS\"/>"
            echo "      <auth start=\"true\" users=\"bench\" passwordfile=\"$B/pass\"/>"
            echo "      <userDefinedPort start=\"true\" port=\"$FPORT\"/><ssh start=\"false\"/></rsync>"
            echo "    <failLog path=\"$out.fail\" timeToExecute=\"60\"/></sersync>"
            echo '</head>'
        } > "$out"
        rm -f "$out.fail"
    }
    fan_lsyncd_conf() { # ROOT OUTFILE IP...
        local root=$1 out=$2 ips="" ip
        shift 2
        for ip in "$@"; do ips="$ips \"$ip\","; done
        printf '%s\n' 'settings { nodaemon = true, insist = false }' \
            "for _, ip in ipairs({$ips }) do" \
            "  sync { default.rsync, source = \"$root\", target = \"bench@\" .. ip .. \"::fan\", delay = 0," \
            "    rsync = { archive = true, update = true, compress = true," \
            "              password_file = \"$B/pass\", _extra = { \"--port=$FPORT\" } } }" \
            'end' > "$out"
    }
    # fan_start WHO ROOT N LOG: an agent for the first N daemons, in its own group,
    # waited for until it is live (lsyncd: its N start-up rsyncs done).
    fan_start() {
        local who=$1 root=$2 n=$3
        log=$4
        : > "$log"
        t0=$(date +%s%N)
        case $who in
            sersync2 | sersync2-n10)
                fan_conf "$root" "$B/conf/fan-$who-$n.xml" "${fan_ips[@]:0:n}"
                local extra=()
                [ "$who" = sersync2-n10 ] && extra=(-n 10)
                setsid "$bin" -o "$B/conf/fan-$who-$n.xml" "${extra[@]}" 2>>"$log" &
                agent=$!
                H --case f --contender "$who@$n" --run "$run" wait-log --log "$log" --pattern "live:" \
                    --start-ns "$t0" --pid "$agent" --deadline 120 --metric ready_s >/dev/null
                ;;
            lsyncd-d0)
                fan_lsyncd_conf "$root" "$B/conf/fan-lsyncd-$n.lua" "${fan_ips[@]:0:n}"
                setsid lsyncd "$B/conf/fan-lsyncd-$n.lua" >>"$log" 2>&1 &
                agent=$!
                H --case f --contender "$who@$n" --run "$run" wait-log --log "$log" --pattern "Startup of" \
                    --count "$n" --start-ns "$t0" --pid "$agent" --deadline 300 --metric ready_s >/dev/null
                ;;
        esac
    }
    fan_reset() {
        rm -rf "$B/fan/src"
        mkdir -p "$B/fan/src/lat"
        for i in $(seq 1 "$FAN_MAX"); do rm -rf "$B/fan/dst$i"; mkdir -p "$B/fan/dst$i/lat"; done
    }
fi
if has "$CASES" f; then
    say "preparing the fan-out burst seed: $FAN_FILES files in $FAN_DIRS directories"
    H mkfiles "$B/fanseed" "$FAN_FILES" "$FAN_DIRS" --seed 3 >/dev/null
    for run in $(seq 1 "$FAN_RUNS"); do
        for n in $FAN_NS; do
            remotes=() rests=() dests=()
            for i in $(seq 1 "$n"); do
                remotes+=("$B/fan/dst$i/burst")
                [ "$i" -gt 1 ] && rests+=("$B/fan/dst$i/lat")
                dests+=("bench@127.0.0.$i::fan/")
            done
            for who in $FAN_CONTENDERS; do
                fan_reset
                if [ "$who" = floor ]; then
                    say "case f run $run: $n remotes: floor"
                    H --case f --contender "floor@$n" --run "$run" burst --cpu --seed "$B/fanseed" \
                        --dest "$B/fan/src/burst" --remotes "${remotes[@]}" --daemons "${fan_daemons[@]:0:n}" \
                        --count-log "$B/conf/fan1.log" --floor --floor-dest "${dests[@]}" --floor-cmd rsync "${params[@]}" "${fauth[@]}" >&2 || true
                    continue
                fi
                say "case f run $run: $n remotes: $who"
                if ! fan_start "$who" "$B/fan/src" "$n" "$OUT/fan-$who-$n.log"; then
                    tail -20 "$log" >&2; stop_agent; continue
                fi
                H --case f --contender "$who@$n" --run "$run" latency --src "$B/fan/src/lat" \
                    --r1 "$B/fan/dst1/lat" --rest "${rests[@]}" --all --n "$FAN_LAT_N" --pgid "$agent" \
                    --daemons "${fan_daemons[@]:0:n}" --deadline 60 >&2 || true
                H --case f --contender "$who@$n" --run "$run" burst --cpu --seed "$B/fanseed" \
                    --dest "$B/fan/src/burst" --remotes "${remotes[@]}" --pgid "$agent" \
                    --daemons "${fan_daemons[@]:0:n}" --deadline "$BURST_DEADLINE" \
                    --count-log "$B/conf/fan1.log" >&2 || true
                stop_agent
            done
        done
        # One remote stopped: SIGSTOP on its daemon (it accepts connections, never answers).
        n=$FAN_MAX
        if [ "$n" -ge 3 ]; then
            for who in sersync2 sersync2-n10; do
                has "$FAN_CONTENDERS" "$who" || continue
                fan_reset
                say "case f run $run: $n remotes, the last one stopped: $who"
                fan_start "$who" "$B/fan/src" "$n" "$OUT/fan-$who-$n-stopped.log" || { stop_agent; continue; }
                stopped=${fan_daemons[n-1]}
                kill -STOP "$stopped"
                rests=()
                for i in $(seq 2 $(( n - 1 ))); do rests+=("$B/fan/dst$i/lat"); done
                H --case f --contender "$who-1stopped@$n" --run "$run" latency --src "$B/fan/src/lat" \
                    --r1 "$B/fan/dst1/lat" --rest "${rests[@]}" --all --n "$FAN_LAT_N" \
                    --deadline 60 >&2 || true
                stop_agent_quick
                kill -CONT "$stopped"
            done
        fi
    done
fi
if has "$CASES" h; then
    # Relay: agent 1 (src -> daemon 1), agent 2 (daemon 1's module path -> daemon 2).
    for run in $(seq 1 "$FAN_RUNS"); do
        fan_reset
        say "case h run $run: relay src -> 127.0.0.1 -> 127.0.0.2"
        fan_conf "$B/fan/dst1" "$B/conf/relay2.xml" 127.0.0.2
        : > "$OUT/relay-hop2.log"
        setsid "$bin" -o "$B/conf/relay2.xml" 2>>"$OUT/relay-hop2.log" &
        relay=$!
        for _ in $(seq 1 400); do grep -q 'live:' "$OUT/relay-hop2.log" && break; sleep 0.05; done
        if fan_start sersync2 "$B/fan/src" 1 "$OUT/relay-hop1.log"; then
            H --case h --contender relay --run "$run" latency --src "$B/fan/src/lat" \
                --r1 "$B/fan/dst1/lat" --rest "$B/fan/dst2/lat" --all --n "$FAN_LAT_N" --deadline 60 >&2 || true
        fi
        stop_agent
        kill -TERM -- "-$relay" 2>/dev/null || true
        wait "$relay" 2>/dev/null || true
        if grep -E ' (recv|send) .*/\.[^/]+\.[A-Za-z0-9]{6} ' "$B/conf/fan2.log"; then
            echo "relay: an rsync temp name reached the second hop (above)" >&2
        fi
    done
fi
if has "$CASES" f || has "$CASES" h; then
    python3 - "$results" "$FAN_NS" "$FAN_MAX" <<'PY' | tee "$OUT/fan.txt"
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    case, who, run, metric, value = line.rstrip("\n").split("\t")
    if case in ("f", "t"):
        try:
            rows[(who, metric)].append(float(value))
        except ValueError:
            rows[(who, metric)].append(float("nan"))
def g(who, metric, d=2):
    v = rows.get((who, metric))
    return "-" if not v else ("%%.%df" % d) % statistics.median(v)
def has(who):
    return any(key[0] == who for key in rows)
print("fan-out, medians of the runs: burst s; CPU s of the burst (agent + rsync clients + daemons);")
print("one change: p50 ms until the first remote has it, until all have it; CPU ms per change")
print("%-24s %8s %8s %6s %8s %8s %8s" % ("contender@remotes", "burst s", "cpu s", "calls", "p50 r1", "p50 all", "cpu/chg"))
for n in sys.argv[2].split():
    for who in ("floor", "sersync2", "sersync2-n10", "lsyncd-d0"):
        k = "%s@%s" % (who, n)
        if has(k):
            parts = [rows.get((k, m)) for m in ("cpu_agent_s", "cpu_rsync_s", "cpu_rsyncd_s")]
            cpu = "%.2f" % sum(statistics.median(p) for p in parts if p) if any(parts) else "-"
            print("%-24s %8s %8s %6s %8s %8s %8s" % (k, g(k, "burst_s"), cpu, g(k, "calls", 0), g(k, "lat_p50_ms", 1),
                                              g(k, "lat_all_p50_ms", 1), g(k, "cpu_change_ms", 1)))
for who in ("sersync2-1stopped", "sersync2-n10-1stopped"):
    k = "%s@%s" % (who, sys.argv[3])
    if has(k):
        print("%-24s %8s %8s %6s %8s %8s   (all = the %d not stopped)" % (
            k, "", "", "", g(k, "lat_p50_ms", 1), g(k, "lat_all_p50_ms", 1), int(sys.argv[3]) - 1))
if has("relay"):
    print("relay: one hop p50 %s ms, two hops p50 %s ms (p99 %s ms)" % (
        g("relay", "lat_p50_ms", 1), g("relay", "lat_all_p50_ms", 1), g("relay", "lat_all_p99_ms", 1)))
PY
fi

# ---------------------------------------------------------------- table
elapsed=$(( $(date +%s) - started ))
{
    echo "sersync2 benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), $(rsync --version | head -1 | sed 's/  protocol.*//'), lsyncd $(lsyncd --version 2>&1 | awk '/Version/ {print $2}')"
    echo "sizes: burst $FILES files in $DIRS dirs (--batch 1: $B1_FILES, scaled); latency $LAT_N writes (peers in $PEER_LAT_RUNS run(s)), bare push x$BARE_N; scale $SCALE_DIRS dirs; big tree $BIG files; runs $RUNS (--batch 1 and lsyncd default delay: $SLOW_RUNS); rsync $PARAMS; measuring took ${elapsed}s"
    echo
    "${helper[@]}" table "$results" --runs "$RUNS" --scale-dirs "$SCALE_DIRS"
} | tee "$OUT/table.txt"
