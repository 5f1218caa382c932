#!/usr/bin/env bash
# Times `sersync2 -t` on big and hostile configs (docs/BENCHMARKS.md, "Reading big and
# hostile configs"). Usage: scripts/bench_config.sh [BINARY] (default
# target/release/sersync2). Needs rsync on PATH (-t checks it) and python3.
# Each case gets at most $LIMIT seconds (default 300) and 8 GB of address space.
set -euo pipefail
BIN=${1:-target/release/sersync2}
BIN=$(realpath "$BIN")
LIMIT=${LIMIT:-300}
T=$(mktemp -d /tmp/sersync2-bench-config.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir "$T/www"
python3 - "$T" <<'EOF'
import sys
t = sys.argv[1]
head = '<?xml version="1.0" encoding="ISO-8859-1"?>\n<head version="2.5">\n'
body = ('<sersync><localpath watch="%s/www"><remote ip="127.0.0.1" name="m"/>'
        '</localpath></sersync>\n' % t)
n = 100_000
cases = {
    # 100,000 unknown elements, one a line / all on one line
    "many": head + body + "<a/>\n" * n + "</head>",
    "flat": head + body + "<a/>" * n + "\n</head>",
    # 100,000 known elements, kept by the parser (a filter that is off)
    "excludes-off": head + '<filter start="false">\n'
        + "".join('<exclude expression="x%d"/>\n' % i for i in range(n))
        + "</filter>\n" + body + "</head>",
    # the same filter on: 100,000 regular expressions
    "excludes-on": head + '<filter start="true">\n'
        + "".join('<exclude expression="x%d"/>\n' % i for i in range(n))
        + "</filter>\n" + body + "</head>",
    "remotes": head + '<sersync><localpath watch="%s/www">\n' % t
        + "".join('<remote ip="127.0.0.1" name="m%d"/>\n' % i for i in range(n))
        + "</localpath></sersync>\n</head>",
    "deep-50000": head + body + "<a>" * 50_000 + "</a>" * 50_000 + "\n</head>",
    "attributes": head + "<debug " + " ".join('a%d=""' % i for i in range(n))
        + "/>\n" + body + "</head>",
    "comment-3MB": head + "<!-- " + "x" * 3_000_000 + " -->\n" + body + "</head>",
}
for name, text in cases.items():
    with open("%s/%s.xml" % (t, name), "w") as f:
        f.write(text)
EOF
printf '%-14s %10s %8s %14s %s\n' case bytes seconds "max RSS (KB)" exit
for f in many flat excludes-off excludes-on remotes deep-50000 attributes comment-3MB; do
    size=$(stat -c %s "$T/$f.xml")
    out=$( (ulimit -v 8000000; /usr/bin/time -f '%e %M %x' timeout "$LIMIT" \
        "$BIN" -t -o "$T/$f.xml" 2>&1 >/dev/null) | tail -1) || true
    read -r secs rss code <<<"$out"
    printf '%-14s %10s %8s %14s %s\n' "$f" "$size" "$secs" "$rss" "$code"
done
