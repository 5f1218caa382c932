#!/usr/bin/env python3
"""The soak's moving parts (scripts/soak.sh runs it; docs/BENCHMARKS.md, "The soak").

  soak_helper.py run  --dir D --bin B --out O ...   the whole run: daemons, agent, load,
                                                     samples, restarts, the end check
  soak_helper.py load --root R --rate N ...          the load alone (run starts it as a
                                                     process of its own, so that it has
                                                     a core of its own)
  soak_helper.py plot --out O                        redraw O/soak.png from O/samples.csv

Everything it starts (two rsync daemons, the agent, the load) it stops again, by pid,
on its way out, also on SIGTERM/SIGINT.
"""
import argparse
import csv
import hashlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

IPS = ("127.0.0.1", "127.0.0.2")


def now():
    return time.monotonic()


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def cpu_ticks(pid):
    """(own, reaped children's) CPU time of pid in seconds, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return (int(v[11]) + int(v[12])) / hz, (int(v[13]) + int(v[14])) / hz


def load_str():
    return "load average %s" % " ".join(loadavg())


# --------------------------------------------------------------------------- the load
#
# The tree: ROOT/tNN/dNNNNN/fNNNNNNN. Operations, each picked at random by weight:
#   create   a new file (100..4000 random bytes) in a random leaf directory
#   delete   a random file
#             (create or delete: whichever brings the file count back to its start)
#   modify   a random file: half the time 64..512 bytes appended, half the time
#            rewritten whole with a new size (never the same size: see docs)
#   rename   a random file to a new name in a random leaf directory; one in four onto
#            another existing file (replacing it, as editors and deploys do)
#   dirmove  a leaf directory, with its files, to a new name under a random top directory
#   mkdir / rmtree  a new empty leaf directory / a leaf directory removed with its files
#            (whichever brings the directory count back to its start)
#   toprename  a whole top directory renamed (every SOAK_TOPRENAME_SECS, not by weight)
WEIGHTS = [("create_or_delete", 0.40), ("modify", 0.35), ("rename", 0.18),
           ("dirmove", 0.05), ("mkdir_or_rmtree", 0.005)]


class Top:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class Leaf:
    __slots__ = ("top", "name", "files")

    def __init__(self, top, name):
        self.top = top
        self.name = name
        self.files = []

    def path(self, root):
        return os.path.join(root, self.top.name, self.name)


class Tree:
    def __init__(self, root, rng):
        self.root = root
        self.rng = rng
        self.tops = []
        self.leaves = []
        self.nfiles = 0
        self.seq = 0

    def uniq(self, prefix):
        self.seq += 1
        return "%s%08d" % (prefix, self.seq)

    def content(self, lo=100, hi=4000):
        return self.rng.randbytes(self.rng.randint(lo, hi))

    def write(self, path, data):
        with open(path, "wb") as f:
            f.write(data)

    def seed(self, tops, leaves, files):
        os.makedirs(self.root, exist_ok=True)
        for i in range(tops):
            t = Top("t%02d" % i)
            os.mkdir(os.path.join(self.root, t.name))
            self.tops.append(t)
        for i in range(leaves):
            lf = Leaf(self.tops[i % tops], self.uniq("d"))
            os.mkdir(lf.path(self.root))
            self.leaves.append(lf)
        for i in range(files):
            lf = self.leaves[i % leaves]
            name = self.uniq("f")
            self.write(os.path.join(lf.path(self.root), name), self.content())
            lf.files.append(name)
        self.nfiles = files

    def scan(self):
        """Learn a tree seeded earlier (the load runs in another process)."""
        for tname in sorted(os.listdir(self.root)):
            if not tname.startswith("t"):
                continue
            t = Top(tname)
            self.tops.append(t)
            for lname in sorted(os.listdir(os.path.join(self.root, tname))):
                lf = Leaf(t, lname)
                lf.files = sorted(os.listdir(lf.path(self.root)))
                self.nfiles += len(lf.files)
                self.leaves.append(lf)
                self.seq = max(self.seq, int(lname[1:]))
                for f in lf.files:
                    self.seq = max(self.seq, int(f[1:]))

    def leaf_with_file(self):
        for _ in range(50):
            lf = self.rng.choice(self.leaves)
            if lf.files:
                return lf
        return None

    def create(self):
        lf = self.rng.choice(self.leaves)
        name = self.uniq("f")
        self.write(os.path.join(lf.path(self.root), name), self.content())
        lf.files.append(name)
        self.nfiles += 1

    def delete(self):
        lf = self.leaf_with_file()
        if lf is None:
            return self.create()
        i = self.rng.randrange(len(lf.files))
        lf.files[i], lf.files[-1] = lf.files[-1], lf.files[i]
        os.unlink(os.path.join(lf.path(self.root), lf.files.pop()))
        self.nfiles -= 1

    def modify(self):
        lf = self.leaf_with_file()
        if lf is None:
            return self.create()
        p = os.path.join(lf.path(self.root), self.rng.choice(lf.files))
        if self.rng.random() < 0.5:
            with open(p, "ab") as f:
                f.write(self.content(64, 512))
        else:
            old = os.stat(p).st_size
            data = self.content()
            if len(data) == old:
                data += b"x"
            self.write(p, data)

    def rename(self):
        src = self.leaf_with_file()
        if src is None:
            return self.create()
        i = self.rng.randrange(len(src.files))
        src.files[i], src.files[-1] = src.files[-1], src.files[i]
        name = src.files.pop()
        dst = self.leaf_with_file() if self.rng.random() < 0.25 else None
        if dst is not None and dst.files:
            # onto an existing file: it is replaced
            j = self.rng.randrange(len(dst.files))
            dst.files[j], dst.files[-1] = dst.files[-1], dst.files[j]
            target = dst.files.pop()
            os.rename(os.path.join(src.path(self.root), name),
                      os.path.join(dst.path(self.root), target))
            dst.files.append(target)
            self.nfiles -= 1
            return "rename_over"
        dst = self.rng.choice(self.leaves)
        new = self.uniq("f")
        os.rename(os.path.join(src.path(self.root), name),
                  os.path.join(dst.path(self.root), new))
        dst.files.append(new)
        return None

    def dirmove(self):
        lf = self.rng.choice(self.leaves)
        old = lf.path(self.root)
        lf.top = self.rng.choice(self.tops)
        lf.name = self.uniq("d")
        os.rename(old, lf.path(self.root))

    def mkdir(self):
        lf = Leaf(self.rng.choice(self.tops), self.uniq("d"))
        os.mkdir(lf.path(self.root))
        self.leaves.append(lf)

    def rmtree(self):
        # the smallest of a few, so that one op is not hundreds of deletes
        cand = [self.rng.randrange(len(self.leaves)) for _ in range(8)]
        i = min(cand, key=lambda k: len(self.leaves[k].files))
        self.leaves[i], self.leaves[-1] = self.leaves[-1], self.leaves[i]
        lf = self.leaves.pop()
        p = lf.path(self.root)
        for f in lf.files:
            os.unlink(os.path.join(p, f))
        os.rmdir(p)
        self.nfiles -= len(lf.files)
        return len(lf.files)

    def toprename(self):
        t = self.rng.choice(self.tops)
        old = os.path.join(self.root, t.name)
        t.name = "t" + self.uniq("r")
        os.rename(old, os.path.join(self.root, t.name))


def cmd_load(a):
    rng = random.Random(a.seed)
    tree = Tree(a.root, rng)
    tree.scan()
    target_files = tree.nfiles
    target_leaves = len(tree.leaves)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    kinds = [k for k, _ in WEIGHTS]
    cum, acc = [], 0.0
    for _, w in WEIGHTS:
        acc += w
        cum.append(acc)
    counts = {k: 0 for k in ("create", "delete", "modify", "rename", "rename_over",
                             "dirmove", "mkdir", "rmtree", "rmtree_files", "toprename",
                             "errors")}
    done = 0
    skipped = 0  # ops not done because the generator fell more than 1 s behind
    t0 = now()
    next_report = t0
    next_top = t0 + a.toprename_secs if a.toprename_secs > 0 else float("inf")
    base = t0  # ops are due at base + (done + skipped) / rate

    def report(final=False):
        el = now() - t0
        tmp = a.status + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"elapsed": el, "done": done, "skipped": skipped,
                       "files": tree.nfiles, "leaves": len(tree.leaves),
                       "final": final, "counts": counts}, f)
        os.replace(tmp, a.status)

    while not stop.is_set():
        t = now()
        if t >= next_report:
            report()
            next_report = t + 1.0
        due = int((t - base) * a.rate) - done - skipped
        if due > a.rate:  # more than a second behind: drop the backlog, count it
            skipped += due - a.rate
            due = a.rate
        if due <= 0:
            time.sleep(0.002)
            continue
        for _ in range(min(due, 200)):
            try:
                if t >= next_top:
                    tree.toprename()
                    counts["toprename"] += 1
                    next_top += a.toprename_secs
                r = rng.random() * acc
                k = kinds[next(i for i, c in enumerate(cum) if r < c)]
                if k == "create_or_delete":
                    p_create = 0.5 + max(-0.4, min(0.4, (target_files - tree.nfiles)
                                                   / max(1, target_files) * 20))
                    if rng.random() < p_create:
                        tree.create()
                        counts["create"] += 1
                    else:
                        tree.delete()
                        counts["delete"] += 1
                elif k == "modify":
                    tree.modify()
                    counts["modify"] += 1
                elif k == "rename":
                    if tree.rename() == "rename_over":
                        counts["rename_over"] += 1
                    else:
                        counts["rename"] += 1
                elif k == "dirmove":
                    tree.dirmove()
                    counts["dirmove"] += 1
                else:
                    if len(tree.leaves) < target_leaves or len(tree.leaves) < 2:
                        tree.mkdir()
                        counts["mkdir"] += 1
                    else:
                        counts["rmtree_files"] += tree.rmtree()
                        counts["rmtree"] += 1
            except OSError as e:
                counts["errors"] += 1
                if counts["errors"] <= 10:
                    print("load: %s" % e, file=sys.stderr)
            done += 1
    report(final=True)


# --------------------------------------------------------------------------- the run

class Run:
    def __init__(self, a):
        self.a = a
        self.d = a.dir
        self.src = os.path.join(self.d, "src")
        self.dst = [os.path.join(self.d, "dst%d" % i) for i in (1, 2)]
        self.conf = os.path.join(self.d, "conf")
        self.daemons = [None, None]
        self.agent_pid = None
        self.load_proc = None
        self.lock = threading.Lock()
        self.events = []
        self.probes = []  # (t_elapsed_start, lag or None)
        self.probe_outstanding = None  # start time of the probe in flight
        self.stop_flag = threading.Event()
        self.t0 = None

    def say(self, msg):
        print("[soak %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)

    def event(self, what):
        el = now() - self.t0 if self.t0 else 0.0
        self.events.append((round(el, 2), what, " ".join(loadavg())))
        self.say("%s (%s)" % (what, load_str()))

    # ---- daemons
    def daemon_conf(self, i):
        p = os.path.join(self.conf, "rsyncd%d.conf" % (i + 1))
        with open(p, "w") as f:
            f.write("socket options = TCP_NODELAY\nuse chroot = no\nuid = root\n"
                    "gid = root\nlog file = %s/rsyncd%d.log\n[mod]\n"
                    "    path = %s\n    read only = no\n    auth users = soak\n"
                    "    secrets file = %s/secrets\n"
                    % (self.conf, i + 1, self.dst[i], self.conf))
        return p

    def start_daemon(self, i):
        p = subprocess.Popen(["rsync", "--daemon", "--no-detach", "--config=" + self.daemon_conf(i),
                              "--address=" + IPS[i], "--port=%d" % self.a.port],
                             start_new_session=True, stdin=subprocess.DEVNULL)
        self.daemons[i] = p
        deadline = now() + 30
        while now() < deadline:
            if p.poll() is not None:
                raise SystemExit("soak: rsync daemon on %s:%d exited %s (port taken?)"
                                 % (IPS[i], self.a.port, p.returncode))
            try:
                with socket.create_connection((IPS[i], self.a.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("soak: rsync daemon on %s:%d did not come up" % (IPS[i], self.a.port))

    def kill_group(self, p, grace=5.0):
        """SIGTERM the process group of p (the daemon and the connections it forked),
        SIGKILL what is left after grace seconds."""
        if p is None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the forked connections, if any are left
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    # ---- agent
    def write_agent_conf(self):
        p = os.path.join(self.conf, "sersync.xml")
        watcher = ""
        if self.a.watcher != "none":
            watcher = '  <watcher backend="%s"/>\n' % self.a.watcher
        with open(p, "w") as f:
            f.write("""<head version="2.5">
%s  <inotify><delete start="true"/><createFolder start="true"/><createFile start="false"/><closeWrite start="true"/><moveFrom start="true"/><moveTo start="true"/><attrib start="false"/><modify start="false"/></inotify>
  <sersync>
    <localpath watch="%s">
      <remote ip="127.0.0.1" name="mod"/>
      <remote ip="127.0.0.2" name="mod"/>
    </localpath>
    <rsync>
      <commonParams params="-artz"/>
      <auth start="true" users="soak" passwordfile="%s/pass"/>
      <userDefinedPort start="true" port="%d"/>
      <ssh start="false"/>
    </rsync>
    <failLog path="%s/fail.sh" timeToExecute="60"/>
  </sersync>
</head>
""" % (watcher, self.src, self.conf, self.a.port, self.conf))
        return p

    def agent_cmd(self, *args):
        return [self.a.bin, "-o", self.agent_conf] + list(args)

    def status(self):
        try:
            r = subprocess.run(self.agent_cmd("--status", "--json"), capture_output=True,
                               timeout=8, text=True)
            return json.loads(r.stdout)
        except (subprocess.TimeoutExpired, ValueError, OSError):
            return None

    def wait_synced(self, timeout):
        t = now()
        r = subprocess.run(self.agent_cmd("--wait-synced", "--timeout", str(timeout)),
                           capture_output=True, text=True)
        return r.returncode, now() - t, (r.stdout + r.stderr).strip()

    # ---- measures
    def proc_sample(self):
        pid = self.agent_pid
        st = {}
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    k, _, v = line.partition(":")
                    st[k] = v.strip()
            fds = len(os.listdir("/proc/%d/fd" % pid))
            children = 0
            for tid in os.listdir("/proc/%d/task" % pid):
                try:
                    with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                        children += len(f.read().split())
                except OSError:
                    pass
        except OSError:
            return None
        return {"rss_kb": int(st["VmRSS"].split()[0]), "hwm_kb": int(st["VmHWM"].split()[0]),
                "threads": int(st["Threads"]), "fds": fds, "children": children}

    def probe_loop(self):
        """A marker file every sample interval, each polled on both remotes until it is
        there with its contents (several may be in flight when the lag exceeds the
        interval). A marker that landed is removed again (that delete is pushed too, and
        the end's comparison checks it landed)."""
        pdir = os.path.join(self.src, "probe")
        seq = 0
        out = {}  # name -> (start, body)
        next_t = now()
        while True:
            t = now()
            if t >= next_t and not self.stop_flag.is_set():
                seq += 1
                name = "m%06d" % seq
                body = ("%d %f\n" % (seq, time.time())).encode()
                with open(os.path.join(pdir, name), "wb") as f:
                    f.write(body)
                out[name] = (now(), body)
                next_t += self.a.sample_secs
                while next_t < t:
                    next_t += self.a.sample_secs
            for name, (t1, body) in list(out.items()):
                ok = True
                for d in self.dst:
                    try:
                        with open(os.path.join(d, "probe", name), "rb") as f:
                            ok = f.read() == body
                    except OSError:
                        ok = False
                    if not ok:
                        break
                t2 = now()
                if ok or t2 - t1 > self.a.probe_deadline:
                    with self.lock:
                        self.probes.append((round(t1 - self.t0, 2), t2 - t1 if ok else None))
                    del out[name]
                    try:
                        os.unlink(os.path.join(pdir, name))
                    except OSError:
                        pass
            with self.lock:
                self.probe_outstanding = min((v[0] for v in out.values()), default=None)
            if self.stop_flag.is_set() and not out:
                return
            time.sleep(0.01 if any(now() - v[0] < 1 for v in out.values()) else 0.05)

    def read_load_status(self):
        try:
            with open(os.path.join(self.d, "load.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    # ---- tree comparison
    @staticmethod
    def walk(root):
        out = {}
        for dp, dns, fns in os.walk(root):
            rel = os.path.relpath(dp, root)
            for n in dns:
                p = os.path.join(dp, n)
                r = os.path.normpath(os.path.join(rel, n))
                out[r] = ("link", os.readlink(p)) if os.path.islink(p) else ("dir",)
            for n in fns:
                p = os.path.join(dp, n)
                r = os.path.normpath(os.path.join(rel, n))
                if os.path.islink(p):
                    out[r] = ("link", os.readlink(p))
                    continue
                try:
                    with open(p, "rb") as f:
                        data = f.read()
                except OSError as e:
                    out[r] = ("unreadable", str(e))
                    continue
                out[r] = ("file", len(data), hashlib.sha1(data).hexdigest())
        return out

    def compare(self):
        src = self.walk(self.src)
        res = []
        for d in self.dst:
            dst = self.walk(d)
            missing = sorted(set(src) - set(dst))
            extra = sorted(set(dst) - set(src))
            differ = sorted(p for p in set(src) & set(dst) if src[p] != dst[p])
            res.append({"missing": missing, "extra": extra, "differ": differ,
                        "src": src, "dst": dst})
        return len(src), res

    # ---- the run
    def main(self):
        a = self.a
        os.makedirs(self.conf, exist_ok=True)
        with open(os.path.join(self.conf, "pass"), "w") as f:
            f.write("soakpw\n")
        with open(os.path.join(self.conf, "secrets"), "w") as f:
            f.write("soak:soakpw\n")
        os.chmod(os.path.join(self.conf, "pass"), 0o600)
        os.chmod(os.path.join(self.conf, "secrets"), 0o600)
        self.say("seeding %d files in %d directories under %d top directories (%s)"
                 % (a.files, a.leaves, a.tops, load_str()))
        Tree(self.src, random.Random(a.seed)).seed(a.tops, a.leaves, a.files)
        os.mkdir(os.path.join(self.src, "probe"))
        for d in self.dst:  # the remotes start level: -r then checks, and sends nothing
            subprocess.run(["cp", "-a", self.src, d], check=True)
        for i in (0, 1):
            self.start_daemon(i)
        self.agent_conf = self.write_agent_conf()
        log = os.path.join(a.out, "agent.log")
        pidf = os.path.join(self.conf, "agent.pid")
        r = subprocess.run(self.agent_cmd("-d", "-r", "--pid-file", pidf, "--log-file", log),
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit("soak: the agent did not start (exit %d): %s"
                             % (r.returncode, (r.stdout + r.stderr).strip()))
        with open(pidf) as f:
            self.agent_pid = int(f.read().strip())
        code, secs, out = self.wait_synced(600)
        if code != 0:
            raise SystemExit("soak: the agent's first full sync did not land: " + out)
        self.say("agent pid %d live and level after -r (%.1f s); daemons on %s and %s port %d"
                 % (self.agent_pid, secs, IPS[0], IPS[1], a.port))
        info = {"start_load": loadavg(), "start_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

        # the load, the probe, the restarts, the samples
        self.t0 = now()
        self.event("load starts: %d ops/s for %d s, a remote restarted every %d s"
                   % (a.rate, a.secs, a.restart_secs))
        self.load_proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "load", "--root", self.src,
             "--rate", str(a.rate), "--seed", str(a.seed + 1),
             "--toprename-secs", str(a.toprename_secs),
             "--status", os.path.join(self.d, "load.json")], start_new_session=True)
        prober = threading.Thread(target=self.probe_loop, daemon=True)
        prober.start()
        samples = []
        fields = ["elapsed_s", "rss_kb", "hwm_kb", "fds", "threads", "children",
                  "agent_cpu_pct", "rsync_cpu_pct", "loadgen_cpu_pct",
                  "probe_lag_s", "probe_waiting_s", "agent_lag_s", "pending", "owed",
                  "states", "ops_done", "ops_per_s", "ops_skipped", "files",
                  "load1", "load5", "load15", "restarts", "phase"]
        fcsv = open(os.path.join(a.out, "samples.csv"), "w", newline="")
        w = csv.DictWriter(fcsv, fieldnames=fields)
        w.writeheader()
        next_sample = self.t0 + a.sample_secs
        next_restart = self.t0 + a.restart_secs if a.restart_secs > 0 else float("inf")
        restarts = 0
        nprobes = 0
        last_ops, last_t = 0, self.t0
        last_cpu = cpu_ticks(self.agent_pid) or (0.0, 0.0)
        last_gcpu = cpu_ticks(self.load_proc.pid) or (0.0, 0.0)
        end = self.t0 + a.secs
        while True:
            t = now()
            if t >= next_restart and t < end:
                i = restarts % 2
                self.event("restart %s: stopping the daemon" % IPS[i])
                self.kill_group(self.daemons[i])
                time.sleep(a.down_secs)
                self.start_daemon(i)
                restarts += 1
                self.event("restart %s: daemon up again (down %.1f s)" % (IPS[i], a.down_secs))
                next_restart += a.restart_secs
            t = now()
            if t >= next_sample:
                ps = self.proc_sample()
                if ps is None:
                    self.event("the agent (pid %d) is gone" % self.agent_pid)
                    break
                ls = self.read_load_status() or {}
                st = self.status() or {}
                rem = st.get("remotes") or []
                with self.lock:
                    new = [x for _, x in self.probes[nprobes:] if x is not None]
                    nprobes = len(self.probes)
                    lag = max(new) if new else None
                    waiting = (t - self.probe_outstanding) if self.probe_outstanding else 0.0
                ops = ls.get("done", 0)
                la = loadavg()
                cpu = cpu_ticks(self.agent_pid) or last_cpu
                gcpu = cpu_ticks(self.load_proc.pid) or last_gcpu
                dt = t - last_t
                row = {"elapsed_s": round(t - self.t0, 1), **ps,
                       "agent_cpu_pct": round((cpu[0] - last_cpu[0]) / dt * 100, 1),
                       "rsync_cpu_pct": round((cpu[1] - last_cpu[1]) / dt * 100, 1),
                       "loadgen_cpu_pct": round((gcpu[0] - last_gcpu[0]) / dt * 100, 1),
                       "probe_lag_s": "" if lag is None else round(lag, 3),
                       "probe_waiting_s": round(waiting, 1),
                       "agent_lag_s": round(max([r.get("lag_seconds", 0) or 0 for r in rem],
                                                default=0), 1),
                       "pending": sum(r.get("pending", 0) or 0 for r in rem),
                       "owed": sum(r.get("owed", 0) or 0 for r in rem),
                       "states": "|".join(str(r.get("state", "?")) for r in rem),
                       "ops_done": ops, "ops_per_s": round((ops - last_ops) / (t - last_t), 1),
                       "ops_skipped": ls.get("skipped", 0), "files": ls.get("files", ""),
                       "load1": la[0], "load5": la[1], "load15": la[2], "restarts": restarts,
                       "phase": "warmup" if t - self.t0 < a.warmup_secs else "steady"}
                last_ops, last_t, last_cpu, last_gcpu = ops, t, cpu, gcpu
                samples.append(row)
                w.writerow(row)
                fcsv.flush()
                if len(samples) % max(1, int(60 / a.sample_secs)) == 0:
                    self.say("%4.0fs rss %d kB fds %d threads %d probe lag %s (oldest waiting "
                             "%s s) agent lag %s pending %s cpu agent %s%% rsync %s%% ops %d "
                             "(%s/s) %s" % (row["elapsed_s"], row["rss_kb"], row["fds"],
                                            row["threads"], row["probe_lag_s"],
                                            row["probe_waiting_s"], row["agent_lag_s"],
                                            row["pending"], row["agent_cpu_pct"],
                                            row["rsync_cpu_pct"], ops, row["ops_per_s"],
                                            load_str()))
                next_sample += a.sample_secs
            if t >= end:
                break
            time.sleep(max(0.0, min(next_sample, next_restart, end) - now()))
        fcsv.close()

        # the end: stop the load, wait for the barrier, compare
        self.load_proc.send_signal(signal.SIGTERM)
        self.load_proc.wait()
        self.load_proc = None
        ls = self.read_load_status() or {}
        self.event("load stopped: %d ops done (%d skipped) in %.0f s"
                   % (ls.get("done", 0), ls.get("skipped", 0), ls.get("elapsed", 0)))
        self.stop_flag.set()  # no new markers; those in flight are still timed
        info["end_load"] = loadavg()
        agent_alive = self.proc_sample() is not None
        code, secs, out = self.wait_synced(a.settle_secs) if agent_alive else (-1, 0.0, "agent gone")
        prober.join(a.probe_deadline + 10)
        self.event("--wait-synced after the load: exit %d in %.1f s %s" % (code, secs, out))
        nsrc, cmp = self.compare()
        level = all(not (c["missing"] or c["extra"] or c["differ"]) for c in cmp)
        later = None
        if not level and agent_alive:
            # not level when the barrier said so: does it level later by itself?
            deadline = now() + a.recheck_secs
            while now() < deadline:
                time.sleep(10)
                _, cmp2 = self.compare()
                if all(not (c["missing"] or c["extra"] or c["differ"]) for c in cmp2):
                    later = now() - (deadline - a.recheck_secs)
                    break
        st = self.status()
        with open(os.path.join(a.out, "status_end.json"), "w") as f:
            json.dump(st, f, indent=1)
        with open(os.path.join(a.out, "events.csv"), "w", newline="") as f:
            cw = csv.writer(f)
            cw.writerow(["elapsed_s", "event", "loadavg"])
            cw.writerows(self.events)
        with open(os.path.join(a.out, "probes.csv"), "w", newline="") as f:
            cw = csv.writer(f)
            cw.writerow(["start_elapsed_s", "lag_s"])
            for t, lag in self.probes:
                cw.writerow([t, "" if lag is None else round(lag, 3)])
        with open(os.path.join(a.out, "load.json"), "w") as f:
            json.dump(ls, f, indent=1)
        return self.verdict(samples, info, ls, code, secs, nsrc, cmp, level, later, agent_alive)

    def verdict(self, samples, info, ls, code, wsecs, nsrc, cmp, level, later, agent_alive):
        a = self.a
        lines = []
        say = lines.append
        say("soak: %d ops/s asked for %d s (warm-up %d s), a remote restarted every %d s "
            "(down %.0f s), samples every %d s"
            % (a.rate, a.secs, a.warmup_secs, a.restart_secs, a.down_secs, a.sample_secs))
        say("machine: %d cores; load average %s at the start (%s), %s at the end"
            % (os.cpu_count(), " ".join(info["start_load"]), info["start_time"],
               " ".join(info["end_load"])))
        el = max(ls.get("elapsed", 0), 1e-9)
        say("load done: %d ops in %.0f s (%.0f/s; %d not done, the generator behind), "
            "%d errors; %s" % (ls.get("done", 0), el, ls.get("done", 0) / el,
                               ls.get("skipped", 0), ls.get("counts", {}).get("errors", 0),
                               json.dumps(ls.get("counts", {}))))
        fails = 0

        def check(name, ok, text):
            nonlocal fails
            if not ok:
                fails += 1
            say("%s %-18s %s" % ("PASS" if ok else "FAIL", name, text))

        steady = [s for s in samples if s["elapsed_s"] >= a.warmup_secs]
        win = 60.0
        first = [s for s in steady if s["elapsed_s"] < a.warmup_secs + win]
        last_t = samples[-1]["elapsed_s"] if samples else 0
        last = [s for s in steady if s["elapsed_s"] > last_t - win]
        la_s = " ".join(info["start_load"])

        def growth(key, label):
            if not first or not last:
                check(label, False, "no samples after the warm-up")
                return
            m1 = statistics.median(s[key] for s in first)
            m2 = statistics.median(s[key] for s in last)
            g = (m2 - m1) / m1 * 100 if m1 else 0.0
            mx = max(s[key] for s in steady)
            check(label, g <= a.max_growth,
                  "median %g in the first minute after the warm-up (%d samples, %.0f..%.0f s) "
                  "-> median %g in the last minute (%d samples): %+.1f%% (limit +%g%%); "
                  "max after the warm-up %g"
                  % (m1, len(first), first[0]["elapsed_s"], first[-1]["elapsed_s"], m2,
                     len(last), g, a.max_growth, mx))

        check("agent alive", agent_alive, "pid %s" % self.agent_pid)
        growth("rss_kb", "RSS growth (kB)")
        growth("fds", "fd growth")
        if first and last:
            say("info threads: median %g -> %g; children (rsync calls) max %d"
                % (statistics.median(s["threads"] for s in first),
                   statistics.median(s["threads"] for s in last),
                   max(s["children"] for s in samples)))
        lags = [lag for _, lag in self.probes]
        done = sorted(x for x in lags if x is not None)
        lost = len(lags) - len(done)
        if done:
            p99 = done[min(len(done) - 1, int(round(0.99 * (len(done) - 1))))]
            st_l = sorted(lag for t, lag in self.probes if lag is not None and t >= a.warmup_secs)
            p50 = statistics.median(done)
            check("lag bounded", lost == 0 and done[-1] <= a.lag_bound,
                  "%d probes, %d never seen on both remotes within %d s; max %.2f s, p99 %.2f s, "
                  "median %.2f s (bound %d s); after the warm-up max %.2f s"
                  % (len(lags), lost, a.probe_deadline, done[-1], p99, p50, a.lag_bound,
                     st_l[-1] if st_l else float("nan")))
        else:
            check("lag bounded", False, "no probe landed")
        if steady:
            say("info CPU after the warm-up (median of the samples, %% of one core): agent %.0f%%, "
                "its rsync calls %.0f%%, the load generator %.0f%%"
                % tuple(statistics.median(s[k] for s in steady)
                        for k in ("agent_cpu_pct", "rsync_cpu_pct", "loadgen_cpu_pct")))
        agl = [s["agent_lag_s"] for s in samples]
        if agl:
            say("info agent's own lag (--status lag_seconds, max of the remotes): max %.1f s, "
                "median %.1f s" % (max(agl), statistics.median(agl)))
        say("info --wait-synced after the load: exit %d in %.1f s" % (code, wsecs))
        for i, c in enumerate(cmp):
            n = len(c["missing"]) + len(c["extra"]) + len(c["differ"])
            txt = "%s: %d entries in the source; %d missing, %d extra, %d differ" % (
                IPS[i], nsrc, len(c["missing"]), len(c["extra"]), len(c["differ"]))
            check("trees level", n == 0, txt)
            for kind in ("missing", "extra", "differ"):
                for p in c[kind][:15]:
                    say("      %s %s src=%s dst=%s" % (kind, p, c["src"].get(p), c["dst"].get(p)))
                if len(c[kind]) > 15:
                    say("      ... %d more %s" % (len(c[kind]) - 15, kind))
        if not level:
            say("info not level when --wait-synced returned; %s" % (
                "level %.0f s later" % later if later is not None else
                "still not level %d s later" % a.recheck_secs))
        say("%s (%d checks failed); load average %s at the start, %s at the end"
            % ("PASS" if fails == 0 else "FAIL", fails, la_s, " ".join(info["end_load"])))
        text = "\n".join(lines) + "\n"
        with open(os.path.join(a.out, "summary.txt"), "w") as f:
            f.write(text)
        print(text, end="")
        return 0 if fails == 0 else 1

    def cleanup(self):
        self.stop_flag.set()
        if self.load_proc is not None:
            self.kill_group(self.load_proc, 5)
        if self.agent_pid:
            try:
                os.kill(self.agent_pid, signal.SIGTERM)
                deadline = now() + 30
                while now() < deadline and os.path.exists("/proc/%d" % self.agent_pid):
                    with open("/proc/%d/status" % self.agent_pid) as f:
                        if "zombie" in f.read():
                            break
                    time.sleep(0.1)
                if os.path.exists("/proc/%d" % self.agent_pid):
                    os.kill(self.agent_pid, signal.SIGKILL)
            except (ProcessLookupError, FileNotFoundError):
                pass
        for p in self.daemons:
            self.kill_group(p)


def cmd_run(a):
    os.makedirs(a.out, exist_ok=True)
    run = Run(a)

    def on_signal(sig, _frame):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        code = run.main()
    except SystemExit as e:
        if not isinstance(e.code, str):
            raise
        print(e.code, file=sys.stderr)  # could not run: no verdict
        return 2
    finally:
        run.cleanup()
    plot(a.out)
    print("soak: %s/samples.csv, %s/soak.png, %s/summary.txt" % (a.out, a.out, a.out))
    return code


# --------------------------------------------------------------------------- the plot

def plot(out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = list(csv.DictReader(open(os.path.join(out, "samples.csv"))))
    if not rows:
        return
    ev = []
    try:
        ev = [r for r in csv.DictReader(open(os.path.join(out, "events.csv")))
              if "stopping the daemon" in r["event"]]
    except OSError:
        pass

    def col(k):
        return [float(r[k]) if r[k] != "" else float("nan") for r in rows]
    x = [v / 60 for v in col("elapsed_s")]
    warm = next((float(r["elapsed_s"]) / 60 for r in rows if r["phase"] == "steady"), None)
    fig, ax = plt.subplots(5, 1, figsize=(11, 13), sharex=True)
    ax[0].plot(x, [v / 1024 for v in col("rss_kb")], label="RSS (MiB)")
    ax[0].set_ylabel("RSS, MiB")
    ax[1].plot(x, col("fds"), label="open descriptors")
    ax[1].plot(x, col("threads"), label="threads")
    ax[1].plot(x, col("children"), label="rsync children", alpha=0.6)
    ax[1].set_ylabel("count")
    try:
        pr = [r for r in csv.DictReader(open(os.path.join(out, "probes.csv"))) if r["lag_s"]]
        ax[2].plot([float(r["start_elapsed_s"]) / 60 for r in pr],
                   [float(r["lag_s"]) for r in pr], ".",
                   label="probe lag, at the time the marker was written")
    except OSError:  # a run cut short: the samples' column only
        ax[2].plot(x, col("probe_lag_s"), ".", label="probe lag (landed in the sample)")
    ax[2].plot(x, col("probe_waiting_s"), ":", label="probe waiting")
    ax[2].plot(x, col("agent_lag_s"), label="agent's own lag (--status, worst remote)", alpha=0.7)
    ax[2].set_ylabel("seconds")
    ax[3].plot(x, col("ops_per_s"), label="ops/s done")
    ax[3].set_ylabel("ops/s")
    ax3 = ax[3].twinx()
    ax3.plot(x, col("agent_cpu_pct"), "g", alpha=0.6, label="agent CPU %")
    ax3.plot(x, col("rsync_cpu_pct"), "m", alpha=0.6, label="its rsync calls' CPU %")
    ax3.set_ylabel("% of one core")
    ax3.legend(loc="upper right", fontsize=8)
    ax[4].plot(x, col("load1"), label="load average (1 min)")
    ax[4].plot(x, col("load5"), label="load average (5 min)")
    ax[4].set_ylabel("load")
    ax[4].set_xlabel("minutes since the load started")
    for a in ax:
        for e in ev:
            a.axvline(float(e["elapsed_s"]) / 60, color="red", alpha=0.3, lw=1)
        if warm is not None:
            a.axvspan(0, warm, color="grey", alpha=0.12)
        a.legend(loc="upper left", fontsize=8)
        a.grid(alpha=0.3)
    fig.suptitle("sersync2 soak: agent RSS, descriptors, threads, lag, load "
                 "(grey: warm-up; red: a remote restarted)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "soak.png"), dpi=90)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dir", required=True)
    r.add_argument("--bin", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--secs", type=int, default=3600)
    r.add_argument("--rate", type=int, default=2000)
    r.add_argument("--restart-secs", type=int, default=600)
    r.add_argument("--down-secs", type=float, default=2)
    r.add_argument("--warmup-secs", type=int, default=300)
    r.add_argument("--sample-secs", type=float, default=10)
    r.add_argument("--files", type=int, default=50000)
    r.add_argument("--leaves", type=int, default=1000)
    r.add_argument("--tops", type=int, default=20)
    r.add_argument("--toprename-secs", type=float, default=60)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--watcher", default="inotify")
    r.add_argument("--max-growth", type=float, default=5.0)
    r.add_argument("--lag-bound", type=int, default=120)
    r.add_argument("--probe-deadline", type=int, default=600)
    r.add_argument("--settle-secs", type=int, default=600)
    r.add_argument("--recheck-secs", type=int, default=120)
    ld = sub.add_parser("load")
    ld.add_argument("--root", required=True)
    ld.add_argument("--rate", type=int, required=True)
    ld.add_argument("--seed", type=int, default=2)
    ld.add_argument("--toprename-secs", type=float, default=60)
    ld.add_argument("--status", required=True)
    p = sub.add_parser("plot")
    p.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.cmd == "run":
        sys.exit(cmd_run(a))
    elif a.cmd == "load":
        cmd_load(a)
    else:
        plot(a.out)


if __name__ == "__main__":
    main()
