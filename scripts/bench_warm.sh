#!/usr/bin/env bash
# Warm restart at scale (docs/BENCHMARKS.md, "Warm restart at scale"): a tree of
# DIRS x PER_DIR files (default 10,000 x 100 = 1,000,000) on tmpfs, two loopback rsync
# daemons. The leaf directories are grouped GROUP to a top directory (default 100), so
# that a top directory holds GROUP x PER_DIR files (10,000): the directory renamed.
#  0. `-r` onto empty remotes: both level and the index made (the state every case
#     below starts from: remotes level with the tree, the index of it saved).
#  1. Changes while no agent runs: create 1000, modify 1000, delete 1000 files, rename
#     one top directory of GROUP x PER_DIR files (the changes spread over the other top
#     directories). The state before them is recorded, so that the remotes can be put
#     back to it (`revert`) before each case.
#  2. The cases, each from that same state (remotes as before the changes, tree after
#     them): warm restart (start without -r: catch-up from the index), `-r`, `--once`
#     (from the saved index), lsyncd's start-up init (one sync{} per remote). Each:
#     time from the start until both remotes are level, bytes on the loopback (the sum
#     of the daemons' "sent N bytes  received M bytes" session lines: rsync's protocol
#     bytes both ways, not TCP/IP headers), the agent's peak RSS (VmHWM of the agent
#     alone; /usr/bin/time -v's figure also counts the rsync children it waited for),
#     and a check on both remotes of every path changed.
#  3. The index thread's CPU (checkpoints) while RATE changes/s (default 5000) are made
#     for SECS seconds (default 30; 0 leaves it out), beside the whole agent's.
# Prints one table. Files are BASE_SIZE bytes (default 0: a million files of a page each
# would take 4 GB of tmpfs per tree), those of the renamed directory RENAMED_SIZE
# (default 1024, random: a rename sent as a copy shows in the bytes), the created files
# and the new contents of the modified ones CHANGE_SIZE (default 4096, random).
# Usage: scripts/bench_warm.sh [BINARY] (default target/release/sersync2); run as root.
set -euo pipefail
BIN=$(realpath "${1:-target/release/sersync2}")
DIRS=${DIRS:-10000}
PER_DIR=${PER_DIR:-100}
GROUP=${GROUP:-100}
BASE_SIZE=${BASE_SIZE:-0}
RENAMED_SIZE=${RENAMED_SIZE:-1024}
CHANGE_SIZE=${CHANGE_SIZE:-4096}
RATE=${RATE:-5000}
SECS=${SECS:-30}
PORT=${PORT:-28730}
TMPFS_SIZE=${TMPFS_SIZE:-8g}
OUT=$(realpath -m "${OUT:-target/bench-warm}") # the logs are kept there
CASES=${CASES:-warm full once lsyncd}
[ $((DIRS % GROUP)) -eq 0 ] && [ $((DIRS / GROUP)) -ge 2 ] || {
    echo "DIRS must be a multiple of GROUP, at least twice it" >&2
    exit 2
}
B=$(mktemp -d /tmp/sersync2-bench-warm.XXXXXX)
say() { printf '[bench-warm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pids=()
watches_was=
cleanup() {
    set +e
    [ -n "${agent:-}" ] && kill -TERM -- "-$agent" 2>/dev/null
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    [ -n "$watches_was" ] && echo "$watches_was" > /proc/sys/fs/inotify/max_user_watches
    mkdir -p "$OUT"
    cp "$B"/*.log "$B"/*.time "$B"/*.out "$B"/*.conf "$B"/*.lua "$B"/*.xml "$OUT/" 2>/dev/null
    umount -l "$B" 2>/dev/null
    rm -rf "$B"
}
trap cleanup EXIT
command -v lsyncd >/dev/null || case " $CASES " in
    *" lsyncd "*) apt-get install -y lsyncd >/dev/null ;;
esac
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
mount -t tmpfs -o size="$TMPFS_SIZE",nr_inodes=0 tmpfs "$B" 2>/dev/null || say "no tmpfs mount: $B as it is"
mkdir -p "$B"/{src,dst1,dst2,state}
printf 'benchpw\n' > "$B/pass"
printf 'bench:benchpw\n' > "$B/secrets"
chmod 600 "$B/pass" "$B/secrets"
daemons=()
for i in 1 2; do
    cat > "$B/rsyncd$i.conf" <<EOF
uid = root
gid = root
use chroot = no
address = 127.0.0.$i
port = $PORT
pid file = $B/rsyncd$i.pid
log file = $B/rsyncd$i.log
[mod]
    path = $B/dst$i
    read only = no
    auth users = bench
    secrets file = $B/secrets
EOF
    rsync --daemon --no-detach --config="$B/rsyncd$i.conf" &
    pids+=($!)
    daemons+=($!)
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
# lsyncd: as scripts/bench.sh configures it, with the agent's rsync options (-artz:
# archive and compress; -a holds -rt).
cat > "$B/lsyncd.lua" <<EOF
settings { nodaemon = true, insist = false }
for _, ip in ipairs({ "127.0.0.1", "127.0.0.2" }) do
  sync { default.rsync, source = "$B/src", target = "bench@" .. ip .. "::mod",
    rsync = { archive = true, compress = true,
              password_file = "$B/pass", _extra = { "--port=$PORT" } } }
end
EOF
need_watches=$((DIRS + DIRS / GROUP + 10000))
have_watches=$(cat /proc/sys/fs/inotify/max_user_watches)
if [ "$have_watches" -lt "$need_watches" ]; then
    watches_was=$have_watches
    echo "$need_watches" > /proc/sys/fs/inotify/max_user_watches
fi

say "making $((DIRS * PER_DIR)) files in $DIRS directories ($((DIRS / GROUP)) top directories)"
python3 - "$B/src" "$DIRS" "$PER_DIR" "$GROUP" "$BASE_SIZE" "$RENAMED_SIZE" <<'EOF'
import os, sys
root, dirs, per, group, base, renamed = sys.argv[1], *map(int, sys.argv[2:])
groups = dirs // group
body = b"x" * base
for g in range(groups):
    last = g == groups - 1
    for d in range(group):
        p = "%s/g%03d/d%03d" % (root, g, d)
        os.makedirs(p)
        for f in range(per):
            with open("%s/f%03d" % (p, f), "wb") as fh:
                fh.write(os.urandom(renamed) if last else body)
EOF

# Agents run in a process group of their own (setsid), under /usr/bin/time -v; the
# agent's own peak RSS is read from /proc while it runs (VmHWM).
agent=
run_agent() { # NAME ARGS...: the agent, log in $B/NAME.log
    local name=$1
    shift
    : > "$B/$name.log"
    rm -f "$B/$name.hwm"
    setsid /usr/bin/time -v -o "$B/$name.time" "$BIN" -o "$B/sersync.xml" "$@" \
        >"$B/$name.out" 2>>"$B/$name.log" &
    agent=$!
}
agent_pid() { pgrep -P "$agent" | head -1; }
hwm() { # NAME: the agent's VmHWM now (kB), kept in $B/NAME.hwm
    local p
    p=$(agent_pid) || return 0
    [ -n "$p" ] || return 0
    awk '/^VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null > "$B/$1.hwm.new" &&
        [ -s "$B/$1.hwm.new" ] && mv "$B/$1.hwm.new" "$B/$1.hwm"
    return 0
}
wait_log() { # NAME PATTERN [COUNT]
    until [ "$(grep -c "$2" "$B/$1.log")" -ge "${3:-1}" ]; do
        kill -0 "$agent" 2>/dev/null || { tail -20 "$B/$1.log" >&2; exit 1; }
        sleep 0.1
    done
}
stop_agent() { # SIGTERM to the agent alone (time(1) above it writes its figures)
    kill -TERM "$(agent_pid)" 2>/dev/null || true
    wait "$agent" 2>/dev/null || true
    agent=
}
peak_time() { awk -F': ' '/Maximum resident/ {print $2}' "$B/$1.time"; }
peak_own() { cat "$B/$1.hwm" 2>/dev/null || echo "?"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
synced() { "$BIN" --wait-synced -o "$B/sersync.xml" --timeout 3600 >/dev/null; }
# The daemons' logs: where each case's sessions begin, and their bytes once they ended.
log_marks() { for i in 1 2; do stat -c %s "$B/rsyncd$i.log" 2>/dev/null || echo 0; done; }
sessions_over() { # every daemon session ended (no child of a daemon left)
    local d n
    for _ in $(seq 1 600); do
        n=0
        for d in "${daemons[@]}"; do n=$((n + $(pgrep -c -P "$d" || true))); done
        [ "$n" -eq 0 ] && return 0
        sleep 0.1
    done
    say "daemon sessions still running"
}
bytes_since() { # MARK1 MARK2: rsync bytes (sent + received) both daemons logged since
    sessions_over
    python3 - "$B" "$@" <<'EOF'
import re, sys
b, marks = sys.argv[1], [int(m) for m in sys.argv[2:]]
total = sessions = 0
for i, mark in zip((1, 2), marks):
    with open("%s/rsyncd%d.log" % (b, i), "rb") as fh:
        fh.seek(mark)
        for line in fh.read().decode("utf-8", "replace").splitlines():
            m = re.search(r"sent ([\d,]+) bytes\s+received ([\d,]+) bytes", line)
            if m:
                total += sum(int(x.replace(",", "")) for x in m.groups())
                sessions += 1
print(total, sessions)
EOF
}
fail_log_clear() {
    if [ -s "$B/state/fail.sh" ]; then
        say "fail log not empty after $1:"
        head -5 "$B/state/fail.sh" >&2
    fi
    rm -f "$B/state/fail.sh"
}

say "0. -r onto empty remotes"
t0=$(now_ms)
run_agent initial -r
wait_log initial "rebuilt:" 1
synced
t_initial=$(($(now_ms) - t0))
hwm initial
stop_agent # the stop writes the index
fail_log_clear initial
mkdir -p "$B/saved"
cp -a "$B/state/." "$B/saved/"
index_bytes_t0=$(stat -c %s "$B/state/fail.sh.index")
say "0. level and index made in ${t_initial} ms; index $index_bytes_t0 bytes"

say "1. changes while no agent runs"
python3 - "$B" "$DIRS" "$PER_DIR" "$GROUP" "$CHANGE_SIZE" <<'EOF'
import base64, json, os, sys
b, dirs, per, group, size = sys.argv[1], *map(int, sys.argv[2:])
root = b + "/src"
groups = dirs // group
leaves = [(g, d) for g in range(groups - 1) for d in range(group)]  # not the renamed one
L = len(leaves)
leaf = lambda i: "g%03d/d%03d" % leaves[i % L]
def meta(p):
    st = os.lstat(os.path.join(root, p))
    return {"mode": st.st_mode & 0o7777, "mtime": st.st_mtime_ns}
created = ["%s/new%04d" % (leaf(i), i) for i in range(1000)]
modified = ["%s/f%03d" % (leaf(i), 1 + i // L) for i in range(1000)]
deleted = ["%s/f%03d" % (leaf(i + L // 2), per - 1 - i // L) for i in range(1000)]
assert not set(modified) & set(deleted)
renamed = ("g%03d" % (groups - 1), "renamed")
before = {"modified": {}, "deleted": {}, "dirs": {}}
for p in modified + deleted:
    m = meta(p)
    with open(os.path.join(root, p), "rb") as fh:
        m["data"] = base64.b64encode(fh.read()).decode()
    before["modified" if p in modified else "deleted"][p] = m
for d in {os.path.dirname(p) for p in created + deleted} | {"", renamed[0]}:
    before["dirs"][d] = meta(d)
changed = 0
for p in created:
    with open(os.path.join(root, p), "wb") as fh:
        fh.write(os.urandom(size))
    changed += size
for p in modified:
    with open(os.path.join(root, p), "wb") as fh:
        fh.write(os.urandom(size))
    changed += size
for p in deleted:
    os.unlink(os.path.join(root, p))
os.rename(os.path.join(root, renamed[0]), os.path.join(root, renamed[1]))
moved = sum(len(fs) for _, _, fs in os.walk(os.path.join(root, renamed[1])))
json.dump({"before": before, "created": created, "modified": modified, "deleted": deleted,
           "renamed": renamed, "moved": moved, "changed": changed},
          open(b + "/changes.json", "w"))
print("created %d, modified %d, deleted %d files; renamed %s -> %s (%d files); %d bytes of "
      "file data written" % (len(created), len(modified), len(deleted), renamed[0], renamed[1],
                             moved, changed), file=sys.stderr)
EOF
changed_bytes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["changed"])' "$B/changes.json")
moved=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["moved"])' "$B/changes.json")

revert() { # the remotes back to the state before the changes
    python3 - "$B" <<'EOF'
import base64, json, os, sys
b = sys.argv[1]
c = json.load(open(b + "/changes.json"))
for dst in (b + "/dst1", b + "/dst2"):
    old, new = (os.path.join(dst, p) for p in c["renamed"])
    if os.path.isdir(new):
        if os.path.isdir(old):
            raise SystemExit("%s: both %s and %s" % (dst, old, new))
        os.rename(new, old)
    for p in c["created"]:
        try:
            os.unlink(os.path.join(dst, p))
        except FileNotFoundError:
            pass
    for kind in ("modified", "deleted"):
        for p, m in c["before"][kind].items():
            f = os.path.join(dst, p)
            with open(f, "wb") as fh:
                fh.write(base64.b64decode(m["data"]))
            os.chmod(f, m["mode"])
            os.utime(f, ns=(m["mtime"], m["mtime"]))
    for p, m in c["before"]["dirs"].items():
        os.utime(os.path.join(dst, p), ns=(m["mtime"], m["mtime"]))
EOF
}

check() { # every path changed is on both remotes as in the tree: "ok" or what differs
    python3 - "$B" <<'EOF'
import json, os, sys
b = sys.argv[1]
c = json.load(open(b + "/changes.json"))
src = b + "/src"
bad = []
def same(dst, p):
    a, r = os.path.join(src, p), os.path.join(dst, p)
    try:
        sa, sr = os.lstat(a), os.lstat(r)
    except FileNotFoundError:
        return False
    if sa.st_size != sr.st_size or sa.st_mtime_ns // 10**9 != sr.st_mtime_ns // 10**9:
        return False
    return open(a, "rb").read() == open(r, "rb").read()
for dst in (b + "/dst1", b + "/dst2"):
    for p in c["created"] + c["modified"]:
        if not same(dst, p):
            bad.append("%s: %s differs" % (dst, p))
    for p in c["deleted"]:
        if os.path.lexists(os.path.join(dst, p)):
            bad.append("%s: %s not deleted" % (dst, p))
    old, new = c["renamed"]
    if os.path.lexists(os.path.join(dst, old)):
        bad.append("%s: %s still there" % (dst, old))
    n = sum(len(fs) for _, _, fs in os.walk(os.path.join(dst, new)))
    if n != c["moved"]:
        bad.append("%s: %s holds %d files, not %d" % (dst, new, n, c["moved"]))
    for top, _, fs in os.walk(os.path.join(src, new)):
        for f in fs[:3]:
            p = os.path.relpath(os.path.join(top, f), src)
            if not same(dst, p):
                bad.append("%s: %s differs" % (dst, p))
print("ok" if not bad else "; ".join(bad[:5]) + (" (%d in all)" % len(bad)))
EOF
}

declare -A T BYTES SESS RSS RSS_T CHECK
record() { # CASE MS MARKS...: the case's figures
    local name=$1 ms=$2
    shift 2
    read -r BYTES[$name] SESS[$name] < <(bytes_since "$@")
    T[$name]=$ms
    CHECK[$name]=$(check)
    say "$name: level in ${ms} ms, ${BYTES[$name]} bytes in ${SESS[$name]} session(s); check: ${CHECK[$name]}"
}

for c in $CASES; do
    case $c in
        warm)
            say "2. warm restart"
            rm -f "$B"/state/fail.sh*
            cp -a "$B/saved/." "$B/state/"
            read -r -a marks < <(log_marks | xargs)
            t0=$(now_ms)
            run_agent warm
            wait_log warm "live:"
            synced
            t=$(($(now_ms) - t0))
            hwm warm
            catchup=$(grep -o 'catch-up of .*' "$B/warm.log" | tail -1)
            stop_agent
            record warm "$t" "${marks[@]}"
            RSS[warm]=$(peak_own warm)
            RSS_T[warm]=$(peak_time warm)
            index_bytes=$(stat -c %s "$B/state/fail.sh.index")
            fail_log_clear warm
            revert
            ;;
        full)
            say "2. -r"
            read -r -a marks < <(log_marks | xargs)
            t0=$(now_ms)
            run_agent full -r
            wait_log full "rebuilt:" 1
            synced
            t=$(($(now_ms) - t0))
            hwm full
            stop_agent
            record full "$t" "${marks[@]}"
            RSS[full]=$(peak_own full)
            RSS_T[full]=$(peak_time full)
            fail_log_clear full
            revert
            ;;
        once)
            say "2. --once from the index"
            rm -f "$B"/state/fail.sh*
            cp -a "$B/saved/." "$B/state/"
            read -r -a marks < <(log_marks | xargs)
            t0=$(now_ms)
            run_agent once --once
            while kill -0 "$agent" 2>/dev/null; do
                hwm once
                sleep 0.2
            done
            wait "$agent" && once_rc=0 || once_rc=$?
            t=$(($(now_ms) - t0))
            agent=
            record once "$t" "${marks[@]}"
            RSS[once]=$(peak_own once)
            RSS_T[once]=$(peak_time once)
            [ "$once_rc" -eq 0 ] || CHECK[once]="exit $once_rc; ${CHECK[once]}"
            fail_log_clear once
            revert
            ;;
        lsyncd)
            say "2. lsyncd start-up init"
            read -r -a marks < <(log_marks | xargs)
            : > "$B/lsyncd.log"
            t0=$(now_ms)
            setsid /usr/bin/time -v -o "$B/lsyncd.time" lsyncd "$B/lsyncd.lua" \
                >>"$B/lsyncd.log" 2>&1 &
            agent=$!
            until [ "$(grep -c 'Startup of' "$B/lsyncd.log")" -ge 2 ]; do
                kill -0 "$agent" 2>/dev/null || { tail -20 "$B/lsyncd.log" >&2; exit 1; }
                sleep 0.1
            done
            t=$(($(now_ms) - t0))
            kill -TERM "$(pgrep -P "$agent" | head -1)" 2>/dev/null || true
            wait "$agent" 2>/dev/null || true
            agent=
            record lsyncd "$t" "${marks[@]}"
            RSS[lsyncd]="-"
            RSS_T[lsyncd]=$(peak_time lsyncd)
            [ "$(grep -c 'Startup of .* finished' "$B/lsyncd.log")" -ge 2 ] ||
                CHECK[lsyncd]="$(grep 'Startup of' "$B/lsyncd.log" | head -2 | xargs); ${CHECK[lsyncd]}"
            revert
            ;;
        *) echo "unknown case $c" >&2; exit 2 ;;
    esac
done

cpu_index=- cpu_agent=-
if [ "$SECS" -gt 0 ]; then
    say "3. checkpoint CPU at $RATE changes/s for $SECS s"
    rm -f "$B"/state/fail.sh*
    cp -a "$B/saved/." "$B/state/"
    run_agent hot
    wait_log hot "live:"
    synced
    apid=$(agent_pid)
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
        with open("%s/g000/d%03d/hot%03d" % (root, n % 100, n % 1000), "w") as fh:
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
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

entries=$((DIRS * PER_DIR + DIRS + DIRS / GROUP))
{
    printf '\nwarm restart at scale: %d files in %d directories (%d entries), %s, %s\n' \
        $((DIRS * PER_DIR)) $((DIRS + DIRS / GROUP)) "$entries" \
        "$(rsync --version | head -1 | sed 's/  protocol.*//')" "$(nproc) CPUs"
    printf 'load average at the start: %s; at the end: %s\n' "$load_start" "$load_end"
    printf 'changes while stopped: 1000 created, 1000 modified, 1000 deleted, one directory of %d files renamed; %d bytes of file data written (what each remote needs)\n' \
        "$moved" "$changed_bytes"
    printf 'catch-up line: %s\n' "${catchup:--}"
    printf 'index: %s bytes after -r (%s entries), %s bytes after the warm restart\n' \
        "$index_bytes_t0" "$entries" "${index_bytes:--}"
    printf '0. -r onto empty remotes: level in %s ms; agent peak RSS %s kB (with its rsync children %s kB)\n' \
        "$t_initial" "$(peak_own initial)" "$(peak_time initial)"
    printf '\n| case | both remotes level after | × the -r case | loopback bytes (sessions) | per remote, × changed data | agent peak RSS kB (with children) | remotes checked |\n'
    printf '|---|---|---|---|---|---|---|\n'
    for c in $CASES; do
        name=$c
        case $c in
            warm) name="warm restart" ;;
            full) name="-r" ;;
            once) name="--once (from the index)" ;;
            lsyncd) name="lsyncd start-up init" ;;
        esac
        ratio=-
        [ -n "${T[full]:-}" ] && ratio=$(awk -v a="${T[$c]}" -v b="${T[full]}" 'BEGIN {printf "%.3f", a / b}')
        printf '| %s | %.1f s | %s | %s (%s) | %s | %s (%s) | %s |\n' "$name" \
            "$(awk -v m="${T[$c]}" 'BEGIN {print m / 1000}')" "$ratio" "${BYTES[$c]}" "${SESS[$c]}" \
            "$(awk -v a="${BYTES[$c]}" -v b="$changed_bytes" 'BEGIN {printf "%.2f", a / 2 / b}')" \
            "${RSS[$c]}" "${RSS_T[$c]}" "${CHECK[$c]}"
    done
    printf '\nat %s changes/s for %s s: index thread CPU %s %%, agent CPU %s %%\n' \
        "$RATE" "$SECS" "$cpu_index" "$cpu_agent"
}
