#!/usr/bin/env python3
"""Timing, polling and accounting helper for scripts/bench.sh (standard library only).

Subcommands (each measuring one appends "case<TAB>contender<TAB>run<TAB>metric<TAB>value"
lines to --out; "table" turns that file into the final table):

  mkfiles ROOT NFILES NDIRS     tree of NFILES random 1-4 KB files in NDIRS directories
  mkdirs ROOT NDIRS             tree of exactly NDIRS directories (two levels), no files
  wait-log                      seconds from --start-ns until --pattern is seen --count times
  rss --pgid P                  peak RSS (VmHWM) of the processes of a process group
  latency                       single-file writes, one at a time, until visible remotely
  bare                          single-file rsync pushes run directly (no agent)
  burst                         cp -a a prepared tree into the watched tree and wait until
                                every remote holds it (or, with --floor, cp then rsync)
  wait-idle                     until an agent has no rsync running
  table                         medians over the runs, the table, the targets

No sleep is used for synchronisation: every wait is a poll with a short interval and a
deadline.
"""

import argparse
import json
import os
import random
import re
import shlex
import resource
import statistics
import subprocess
import sys
import time

CLK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- trees

def mkfiles(root, nfiles, ndirs, seed=1):
    rnd = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    per = nfiles // ndirs
    extra = nfiles % ndirs
    n = 0
    for d in range(ndirs):
        dpath = os.path.join(root, "d%05d" % d)
        os.mkdir(dpath)
        for _ in range(per + (1 if d < extra else 0)):
            with open(os.path.join(dpath, "f%07d.dat" % n), "wb") as f:
                f.write(rnd.randbytes(rnd.randint(1024, 4096)))
            n += 1
    return n


def mkdirs(root, ndirs):
    """Exactly ndirs directories below root (root itself not counted): T top-level
    directories each holding the same number of children (give or take one)."""
    os.makedirs(root, exist_ok=True)
    top = max(1, int(round(ndirs ** 0.5)))
    rest = ndirs - top
    made = 0
    for t in range(top):
        tp = os.path.join(root, "t%04d" % t)
        os.mkdir(tp)
        made += 1
        k = rest // top + (1 if t < rest % top else 0)
        for c in range(k):
            os.mkdir(os.path.join(tp, "c%05d" % c))
            made += 1
    assert made == ndirs, (made, ndirs)
    return made


def list_files(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for f in sorted(filenames):
            out.append(f if rel == "." else os.path.join(rel, f))
    return out


# ------------------------------------------------------------------------- processes

def stat_fields(pid):
    """(comm, ppid, pgrp, utime, stime, cutime, cstime) or None; times in ticks."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    lp, rp = data.index(b"("), data.rindex(b")")
    comm = data[lp + 1:rp].decode(errors="replace")
    rest = data[rp + 2:].split()
    return (comm, int(rest[1]), int(rest[2]), int(rest[11]), int(rest[12]),
            int(rest[13]), int(rest[14]))


def alive(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except OSError:
        return False
    return True


def all_pids():
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def group(pgid):
    """{pid: stat_fields} for every live process in process group pgid."""
    out = {}
    for pid in all_pids():
        st = stat_fields(pid)
        if st and st[2] == pgid:
            out[pid] = st
    return out


def children_of(pids):
    kids = []
    for pid in pids:
        try:
            tasks = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                    kids.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    return kids


def cpu_snapshot(pgid, daemons):
    """agent = own CPU of the group's non-rsync processes; rsync = CPU of the rsync
    children they have reaped (cutime+cstime); rsyncd = CPU of the daemons' reaped
    children (the receiving side). Seconds."""
    agent = rsync = 0
    if pgid:
        for pid, st in group(pgid).items():
            if st[0] == "rsync":
                continue
            agent += st[3] + st[4]
            rsync += st[5] + st[6]
    rsyncd = 0
    for pid in daemons:
        st = stat_fields(pid)
        if st:
            rsyncd += st[5] + st[6]
    return {"agent": agent / CLK, "rsync": rsync / CLK, "rsyncd": rsyncd / CLK}


def wait_idle(pgid, daemons, deadline_s, stable_s=0.3, interval=0.02):
    """Until no rsync runs under the agent's group and the daemons have no children,
    continuously for stable_s (a whole-tree script may start another round)."""
    deadline = time.monotonic() + deadline_s
    base = [p for p, st in group(pgid).items() if st[0] != "rsync"] if pgid else []
    quiet_since = None
    while time.monotonic() < deadline:
        busy = bool(children_of(daemons))
        if not busy and base:
            for kid in children_of(base):
                st = stat_fields(kid)
                if st and st[0] == "rsync":
                    busy = True
                    break
        now = time.monotonic()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= stable_s:
            return True
        time.sleep(interval)
    return False


# --------------------------------------------------------------------------- results

def record(args, metric, value):
    if not args.out:
        return
    with open(args.out, "a") as f:
        f.write("%s\t%s\t%s\t%s\t%s\n" % (args.case, args.contender, args.run, metric, value))


def fmt(v, digits=2):
    return ("%%.%df" % digits) % v


# ---------------------------------------------------------------------- subcommands

def cmd_mkfiles(a):
    n = mkfiles(a.root, a.nfiles, a.ndirs, a.seed)
    print(n)


def cmd_mkdirs(a):
    print(mkdirs(a.root, a.ndirs))


def cmd_wait_log(a):
    deadline = time.monotonic() + a.deadline
    start = a.start_ns / 1e9
    while True:
        try:
            with open(a.log, errors="replace") as f:
                n = sum(line.count(a.pattern) for line in f)
        except OSError:
            n = 0
        if n >= a.count:
            secs = time.time() - start
            print(fmt(secs, 3))
            record(a, a.metric, fmt(secs, 3))
            return 0
        if a.pid and not alive(a.pid):
            print("wait-log: process %d died before '%s' appeared in %s" % (a.pid, a.pattern, a.log),
                  file=sys.stderr)
            record(a, a.metric, "fail")
            return 1
        if time.monotonic() > deadline:
            print("wait-log: '%s' x%d not in %s within %ss" % (a.pattern, a.count, a.log, a.deadline),
                  file=sys.stderr)
            record(a, a.metric, "timeout")
            return 1
        time.sleep(a.interval)


def cmd_rss(a):
    """Peak RSS of the agent proper: the group leader, plus any inotifywait in it."""
    best = 0
    what = []
    for pid, st in group(a.pgid).items():
        if pid != a.pgid and st[0] not in ("inotifywait",):
            continue
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        kb = int(line.split()[1])
                        best += kb
                        what.append("%s=%dkB" % (st[0], kb))
        except OSError:
            pass
    mb = best / 1024
    print("%s MB (%s)" % (fmt(mb, 1), " ".join(what)))
    record(a, "rss_mb", fmt(mb, 1))


def poll_exists(path, deadline, interval):
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def cmd_latency(a):
    rnd = random.Random(7)
    os.makedirs(a.src, exist_ok=True)
    base = [p for p, st in group(a.pgid).items() if st[0] != "rsync"] if a.pgid else []
    samples = []
    all_samples = []  # with --all: until every remote (r1 and the rest) has the file
    before = cpu_snapshot(a.pgid, a.daemons) if a.daemons else None
    for i in range(a.n):
        name = "%s%05d.txt" % (a.prefix, i)
        data = rnd.randbytes(rnd.randint(1024, 4096))
        t0 = time.monotonic()
        with open(os.path.join(a.src, name), "wb") as f:
            f.write(data)
        deadline = t0 + a.deadline
        if not poll_exists(os.path.join(a.r1, name), deadline, a.interval):
            print("latency: %s not on %s within %ss" % (name, a.r1, a.deadline), file=sys.stderr)
            record(a, "lat_p50_ms", "timeout")
            return 1
        samples.append(time.monotonic() - t0)
        # Idle again before the next write: the other remote has it too, no rsync runs.
        every = True
        for r in a.rest:
            every = poll_exists(os.path.join(r, name), deadline, a.interval) and every
        if a.all:
            if not every:
                print("latency: %s not on every remote within %ss" % (name, a.deadline), file=sys.stderr)
                record(a, "lat_all_p50_ms", "timeout")
                return 1
            all_samples.append(time.monotonic() - t0)
        while base and time.monotonic() < deadline:
            if not any((stat_fields(k) or ("",))[0] == "rsync" for k in children_of(base)):
                break
            time.sleep(a.interval)

    def pct(xs):
        xs = sorted(xs)
        return (statistics.median(xs) * 1000,
                xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))] * 1000)

    p50, p99 = pct(samples)
    print("latency n=%d p50 %s ms p99 %s ms (min %s max %s)" % (
        len(samples), fmt(p50, 1), fmt(p99, 1), fmt(min(samples) * 1000, 1), fmt(max(samples) * 1000, 1)))
    record(a, "lat_p50_ms", fmt(p50, 1))
    if len(samples) >= 20:
        record(a, "lat_p99_ms", fmt(p99, 1))
    if a.all:
        q50, q99 = pct(all_samples)
        print("latency to all %d remotes: p50 %s ms p99 %s ms" % (1 + len(a.rest), fmt(q50, 1), fmt(q99, 1)))
        record(a, "lat_all_p50_ms", fmt(q50, 1))
        record(a, "lat_all_p99_ms", fmt(q99, 1))
    if before is not None:
        wait_idle(a.pgid, a.daemons, 10)
        after = cpu_snapshot(a.pgid, a.daemons)
        per = {k: (after[k] - before[k]) * 1000 / a.n for k in after}
        print("cpu per change: agent %s ms, rsync clients %s ms, rsync daemons %s ms" % (
            fmt(per["agent"], 1), fmt(per["rsync"], 1), fmt(per["rsyncd"], 1)))
        record(a, "cpu_change_ms", fmt(per["agent"] + per["rsync"] + per["rsyncd"], 1))
    return 0


def live_argv(line, rel):
    """argv of the live rsync command that `sersync2 -t` prints, for one path:
    '    live:  cd DIR && rsync ARGS... ./PATH... DEST'."""
    text = line.split("live:", 1)[1]
    words = shlex.split(text.strip())
    words = words[words.index("&&") + 1:]
    return [rel if w == "./PATH..." else w for w in words]


def cmd_bare(a):
    """Bare single-file pushes, no agent. --live-cmd: sersync2's own live command (paths
    on stdin) as `sersync2 -t` prints it; otherwise the original sersync's per-file shape
    `cd SRC && rsync OPTS -R ./DIR/FILE DEST [extra]`. Measures the time until the file
    is visible on the remote (as the latency case does) and until rsync exits."""
    rnd = random.Random(11)
    d = os.path.join(a.cwd, a.dir)
    os.makedirs(d, exist_ok=True)
    times = []
    visible = []
    for i in range(a.n):
        name = "b%05d.txt" % i
        with open(os.path.join(d, name), "wb") as f:
            f.write(rnd.randbytes(rnd.randint(1024, 4096)))
        rel = "./%s/%s" % (a.dir, name)
        if a.live_cmd:
            argv = live_argv(a.live_cmd, rel)
            argv = argv[:1] + a.extra_opt + argv[1:]
            stdin = None
        else:
            argv = a.argv[:]
            if argv and argv[0] == "--":
                argv = argv[1:]
            argv = argv[:1] + a.opts.split() + a.extra_opt + [rel, a.dest] + argv[1:]
            stdin = None
        target = os.path.join(a.remote, a.dir, name)
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, cwd=a.cwd, stdin=stdin)
        if stdin:
            proc.stdin.write(rel.encode() + b"\0")
            proc.stdin.close()
        # Visible on the remote (what the latency case measures) and rsync exited.
        while not os.path.exists(target) and proc.poll() is None:
            time.sleep(a.interval)
        if os.path.exists(target):
            visible.append(time.monotonic() - t0)
        rc = proc.wait()
        times.append(time.monotonic() - t0)
        if rc != 0 or not os.path.exists(target):
            print("bare: rsync exited %d: %s" % (rc, argv), file=sys.stderr)
            return 1
    med = statistics.median(visible) * 1000
    medp = statistics.median(times) * 1000
    print("bare push %s n=%d: visible on the remote after %s ms median (min %s max %s); "
          "rsync exits after %s ms median" % (
              a.contender, a.n, fmt(med, 1), fmt(min(visible) * 1000, 1),
              fmt(max(visible) * 1000, 1), fmt(medp, 1)))
    record(a, "bare_ms", fmt(med, 1))
    record(a, "bare_exit_ms", fmt(medp, 1))
    return 0


def remote_complete(missing, remote_root):
    """Drops the leading entries of `missing` that exist under remote_root; stops at the
    first one still absent, so one poll costs one stat while the copy is far behind."""
    i = 0
    n = len(missing)
    while i < n and os.path.exists(os.path.join(remote_root, missing[i])):
        i += 1
    del missing[:i]
    return not missing


def count_lines(path, needle):
    if not path:
        return 0
    try:
        with open(path, errors="replace") as f:
            return sum(1 for line in f if needle in line)
    except OSError:
        return 0


def trees_equal(src, remote):
    r = subprocess.run(["diff", "-rq", src, remote], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    return r.returncode == 0, r.stdout.decode(errors="replace")


def cmd_burst(a):
    files = list_files(a.seed)
    dest = a.dest  # the new directory inside the watched tree (cp -a SEED DEST)
    remotes = a.remotes
    assert not os.path.exists(dest), dest
    calls0 = count_lines(a.count_log, "connect from")
    before = cpu_snapshot(a.pgid, a.daemons)
    rs0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    cp = subprocess.Popen(["cp", "-a", a.seed, dest])
    floor_cpu = None
    t_floor = None
    if a.floor:
        cp.wait()
        t_cp = time.monotonic() - t0
        rs1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        procs = [subprocess.Popen(a.floor_cmd + [dest, r]) for r in a.floor_dest]
        rcs = [p.wait() for p in procs]
        t_floor = time.monotonic() - t0
        rs2 = resource.getrusage(resource.RUSAGE_CHILDREN)
        floor_cpu = (rs2.ru_utime + rs2.ru_stime) - (rs1.ru_utime + rs1.ru_stime)
        if any(rcs):
            print("burst: floor rsync exited %s" % rcs, file=sys.stderr)
    deadline = t0 + a.deadline
    missing = {r: list(files) for r in remotes}
    done_at = None
    verify_fail = ""
    cp_done = t_cp if a.floor else None
    while time.monotonic() < deadline:
        if cp_done is None and cp.poll() is not None:
            cp_done = time.monotonic() - t0
        if all(remote_complete(missing[r], r) for r in remotes):
            t_all = time.monotonic() - t0
            if cp.poll() is None:
                cp.wait()
            ok = True
            for r in remotes:
                eq, out = trees_equal(dest, r)
                if not eq:
                    ok = False
                    verify_fail = out
                    break
            if ok:
                done_at = t_all if t_floor is None else t_floor
                break
            time.sleep(0.1)
            continue
        time.sleep(a.interval)
    if cp_done is None:
        cp.wait()
        cp_done = time.monotonic() - t0
    idle = True
    if a.pgid or a.daemons:
        idle = wait_idle(a.pgid, a.daemons, a.idle_deadline)
    after = cpu_snapshot(a.pgid, a.daemons)
    cpu = {k: after[k] - before[k] for k in after}
    calls = count_lines(a.count_log, "connect from") - calls0 if a.count_log else None
    if floor_cpu is not None:
        cpu["rsync"] = floor_cpu
        if cpu["agent"] == 0:
            cpu["agent"] = None
    k = a.scale
    if k != 1:
        record(a, "scaled", fmt(k, 2))
        cpu = {n: (None if v is None else v * k) for n, v in cpu.items()}
        if calls is not None:
            calls = int(round(calls * k))
        if done_at is not None:
            print("burst: measured %ss for %d files; scaled x%s to the full size" % (
                fmt(done_at), len(files), fmt(k, 2)))
            done_at *= k
    if done_at is None:
        left = {r: len(m) for r, m in missing.items()}
        print("burst: NOT complete after %ss (cp took %ss); files still missing: %s; %s" % (
            a.deadline, fmt(cp_done), left, verify_fail.strip()[:400]), file=sys.stderr)
        record(a, "burst_s", "timeout")
    else:
        print("burst %s files: %ss (cp alone %ss); %s rsync calls to remote 1; cpu agent %s rsync %s rsyncd %s%s" % (
            "%d" % len(files) if k == 1 else "%d x%s (scaled)" % (len(files), fmt(k, 2)), fmt(done_at), fmt(cp_done), "?" if calls is None else calls,
            "-" if cpu["agent"] is None else fmt(cpu["agent"]), fmt(cpu["rsync"]), fmt(cpu["rsyncd"]),
            "" if idle else " (agent still busy at the deadline)"))
        record(a, "burst_s", fmt(done_at, 3))
        record(a, "cp_s", fmt(cp_done, 3))
    if a.cpu:
        if cpu["agent"] is not None:
            record(a, "cpu_agent_s", fmt(cpu["agent"]))
        record(a, "cpu_rsync_s", fmt(cpu["rsync"]))
        record(a, "cpu_rsyncd_s", fmt(cpu["rsyncd"]))
    if calls is not None:
        record(a, "calls", calls)
    return 0 if done_at is not None else 1


def cmd_wait_idle(a):
    ok = wait_idle(a.pgid, a.daemons, a.deadline)
    return 0 if ok else 1


# ------------------------------------------------------------------------------ table

CONTENDERS = [
    ("sersync2-base", "sersync2 built from BASE_BIN"),
    ("sersync2", "sersync2 (default)"),
    ("sersync2-b1", "sersync2 --batch 1"),
    ("floor", "floor: cp + 1 rsync/remote"),
    ("lsyncd-d0", "lsyncd delay=0"),
    ("lsyncd-def", "lsyncd default delay"),
    ("iwrsync", "inotifywait+rsync script"),
    ("rsync-bare", "bare push: original's shape"),
    ("rsync-bare-live", "bare push: sersync2's cmd"),
    ("rsync-bare-nodelay", "  same + TCP_NODELAY"),
]

INF = float("inf")


def load(path):
    vals = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 5:
                continue
            case, who, run, metric, v = parts
            vals.setdefault((case, who, metric), []).append(v)
    return vals


def med(vals, case, who, metric):
    """(median or None, n, note): timeouts count as +inf."""
    raw = vals.get((case, who, metric))
    if not raw:
        return None, 0, ""
    nums = []
    bad = 0
    for v in raw:
        try:
            nums.append(float(v))
        except ValueError:
            nums.append(INF)
            bad += 1
    m = statistics.median(nums)
    return m, len(nums), ("%d of %d timed out" % (bad, len(nums)) if bad else "")


def cell(m, digits=2, n=None, runs=None):
    if m is None:
        return "-"
    if m == INF:
        return "timeout"
    s = fmt(m, digits)
    if n is not None and runs is not None and n < runs:
        s += " (n=%d)" % n
    return s


def cmd_table(a):
    vals = load(a.results)
    runs = a.runs
    cols = [
        ("a", "burst_s", "a. burst s", 2),
        ("b", "lat_p50_ms", "b. p50 ms", 1),
        ("b", "lat_p99_ms", "b. p99 ms", 1),
        ("c", "watch_s", "c. watch %s dirs s" % a.scale_dirs, 2),
        ("c", "rss_mb", "c. RSS MB", 1),
        ("a", "cpu_agent_s", "d. agent CPU s", 2),
        ("a", "cpu_rsync_s", "d. rsync CPU s", 2),
        ("a", "cpu_rsyncd_s", "d. rsyncd CPU s", 2),
        ("a", "calls", "d. rsync calls/remote", 0),
        ("e", "burst_s", "e. burst on big s", 2),
    ]
    header = ["contender"] + [c[2] for c in cols]
    rows = []
    notes = []
    for key, label in CONTENDERS:
        row = [label]
        anything = False
        for case, metric, _, digits in cols:
            who = key
            if key.startswith("rsync-bare"):
                if metric != "lat_p50_ms":
                    row.append("")
                    continue
                m, n, note = med(vals, "b", key, "bare_ms")
            else:
                m, n, note = med(vals, case, who, metric)
            if m is not None:
                anything = True
            if note:
                notes.append("%s %s %s: %s" % (label, case, metric, note))
            c = cell(m, digits, n, runs)
            if m is not None and vals.get((case, who, "scaled")) and metric in (
                    "burst_s", "cpu_agent_s", "cpu_rsync_s", "cpu_rsyncd_s", "calls"):
                c = "~" + c
                k = vals[(case, who, "scaled")][0]
                note = "%s case %s: ~ = measured on 1/%s of the files, scaled x%s" % (label, case, k, k)
                if note not in notes:
                    notes.append(note)
            row.append(c)
        if anything:
            rows.append(row)
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = []
    lines.append("| " + " | ".join(h.ljust(widths[i]) for i, h in enumerate(header)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        lines.append("| " + " | ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
                                       for i, c in enumerate(r)) + " |")
    print("\n".join(lines))
    if notes:
        print()
        for n in notes:
            print("note: " + n)

    # Targets from the issue.
    def g(case, who, metric):
        return med(vals, case, who, metric)[0]

    def verdict(ok):
        return "PASS" if ok else "MISS"

    print()
    print("Targets (medians of %d run(s)):" % runs)
    s = g("a", "sersync2", "burst_s")
    fl = g("a", "floor", "burst_s")
    b1 = g("a", "sersync2-b1", "burst_s")
    ls = [x for x in (g("a", "lsyncd-d0", "burst_s"), g("a", "lsyncd-def", "burst_s")) if x is not None]
    out = []
    if s is not None and fl is not None:
        out.append(("burst <= 1.2x floor", s <= 1.2 * fl,
                    "sersync2 %ss vs floor %ss = %sx" % (cell(s), cell(fl), cell(s / fl if fl else INF))))
    if s is not None and b1 is not None:
        out.append(("burst >= 5x faster than --batch 1", b1 >= 5 * s,
                    "--batch 1 %ss / sersync2 %ss = %sx" % (cell(b1), cell(s), cell(b1 / s if s else INF, 1))))
    if s is not None and ls:
        out.append(("burst ahead of lsyncd", s < min(ls),
                    "sersync2 %ss vs best lsyncd %ss" % (cell(s), cell(min(ls)))))
    p50 = g("b", "sersync2", "lat_p50_ms")
    bare = g("b", "rsync-bare-live", "bare_ms")
    orig = g("b", "rsync-bare", "bare_ms")
    if p50 is not None and (bare or orig):
        base, what = (bare, "sersync2's own command") if bare else (orig, "original's shape")
        extra = "" if not (bare and orig) else "; original's per-file shape %s ms" % cell(orig, 1)
        out.append(("latency p50 <= 1.3x bare rsync push", p50 <= 1.3 * base,
                    "p50 %s ms vs bare push (%s) %s ms = %sx%s" % (
                        cell(p50, 1), what, cell(base, 1), cell(p50 / base), extra)))
    w = g("c", "sersync2", "watch_s")
    r = g("c", "sersync2", "rss_mb")
    if w is not None and r is not None:
        out.append(("100k dirs watched <= 3 s, RSS <= 64 MB", w <= 3 and r <= 64,
                    "%s s, %s MB (%s directories)" % (cell(w), cell(r, 1), a.scale_dirs)))
    ag = g("a", "sersync2", "cpu_agent_s")
    rc = g("a", "sersync2", "cpu_rsync_s")
    rd = g("a", "sersync2", "cpu_rsyncd_s")
    if ag is not None and rc:
        out.append(("agent CPU <= 10% of rsync's", ag <= 0.10 * rc,
                    "agent %s s vs its rsync children %s s = %s%% (daemon side %s s more)" % (
                        cell(ag), cell(rc), cell(100 * ag / rc, 1), cell(rd))))
    for name, ok, detail in out:
        print("  %s  %-40s %s" % (verdict(ok), name, detail))


# ------------------------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out")
    p.add_argument("--case", default="")
    p.add_argument("--contender", default="")
    p.add_argument("--run", default="1")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("mkfiles")
    s.add_argument("root")
    s.add_argument("nfiles", type=int)
    s.add_argument("ndirs", type=int)
    s.add_argument("--seed", type=int, default=1)
    s.set_defaults(f=cmd_mkfiles)

    s = sub.add_parser("mkdirs")
    s.add_argument("root")
    s.add_argument("ndirs", type=int)
    s.set_defaults(f=cmd_mkdirs)

    s = sub.add_parser("wait-log")
    s.add_argument("--log", required=True)
    s.add_argument("--pattern", required=True)
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--start-ns", type=int, required=True)
    s.add_argument("--pid", type=int, default=0)
    s.add_argument("--deadline", type=float, default=300)
    s.add_argument("--interval", type=float, default=0.005)
    s.add_argument("--metric", default="ready_s")
    s.set_defaults(f=cmd_wait_log)

    s = sub.add_parser("rss")
    s.add_argument("--pgid", type=int, required=True)
    s.set_defaults(f=cmd_rss)

    s = sub.add_parser("latency")
    s.add_argument("--src", required=True)
    s.add_argument("--r1", required=True)
    s.add_argument("--rest", nargs="*", default=[])
    s.add_argument("--n", type=int, default=200)
    s.add_argument("--pgid", type=int, default=0)
    s.add_argument("--prefix", default="l")
    s.add_argument("--all", action="store_true", help="also time until every remote has it")
    s.add_argument("--daemons", type=int, nargs="*", default=[], help="rsync daemons: CPU per change")
    s.add_argument("--deadline", type=float, default=30)
    s.add_argument("--interval", type=float, default=0.001)
    s.set_defaults(f=cmd_latency)

    s = sub.add_parser("bare")
    s.add_argument("--cwd", required=True)
    s.add_argument("--dir", default="bare")
    s.add_argument("--dest", required=True)
    s.add_argument("--remote", required=True, help="local path of the destination module")
    s.add_argument("--interval", type=float, default=0.001)
    s.add_argument("--opts", default="")
    s.add_argument("--live-cmd", help="the 'live:' line of `sersync2 -t`")
    s.add_argument("--extra-opt", action="append", default=[], help="one more rsync option")
    s.add_argument("--n", type=int, default=20)
    s.add_argument("argv", nargs=argparse.REMAINDER)
    s.set_defaults(f=cmd_bare)

    s = sub.add_parser("burst")
    s.add_argument("--seed", required=True)
    s.add_argument("--dest", required=True)
    s.add_argument("--remotes", nargs="+", required=True)
    s.add_argument("--pgid", type=int, default=0)
    s.add_argument("--daemons", type=int, nargs="*", default=[])
    s.add_argument("--deadline", type=float, default=600)
    s.add_argument("--idle-deadline", type=float, default=120)
    s.add_argument("--interval", type=float, default=0.02)
    s.add_argument("--cpu", action="store_true")
    s.add_argument("--count-log", help="rsyncd log of remote 1: its 'connect from' lines are the rsync calls")
    s.add_argument("--scale", type=float, default=1.0,
                   help="multiply time, CPU and calls by this (a subset was measured)")
    s.add_argument("--floor", action="store_true")
    s.add_argument("--floor-dest", nargs="*", default=[])
    s.add_argument("--floor-cmd", nargs=argparse.REMAINDER, default=[])
    s.set_defaults(f=cmd_burst)

    s = sub.add_parser("wait-idle")
    s.add_argument("--pgid", type=int, default=0)
    s.add_argument("--daemons", type=int, nargs="*", default=[])
    s.add_argument("--deadline", type=float, default=120)
    s.set_defaults(f=cmd_wait_idle)

    s = sub.add_parser("table")
    s.add_argument("results")
    s.add_argument("--runs", type=int, default=1)
    s.add_argument("--scale-dirs", default="?")
    s.set_defaults(f=cmd_table)

    a = p.parse_args()
    sys.exit(a.f(a) or 0)


if __name__ == "__main__":
    main()
