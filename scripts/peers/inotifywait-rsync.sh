#!/usr/bin/env bash
# The "improved" inotifywait+rsync script that operators write instead of sersync or
# lsyncd, kept here as a benchmark contender (scripts/bench.sh). One recursive
# inotifywait in monitor mode feeds a loop; each batch of lines (read until the stream
# has been quiet for DRAIN seconds) triggers one whole-tree `rsync --delete` per remote,
# all remotes in parallel. It is "improved" over the one-rsync-per-event version by
# that batching; it keeps the usual weaknesses (every round walks the whole tree; files
# written into a new directory before inotifywait watches it are only caught by the
# next round, if there is one).
#
# Usage: inotifywait-rsync.sh SRC DEST [DEST...]
#   DEST is anything rsync accepts (user@host::module, host:/dir, /local/dir).
# Environment:
#   RSYNC_OPTS   rsync options (default: -az)
#   RSYNC_EXTRA  more rsync options, e.g. "--port=873 --password-file=/etc/rsync.pas"
#   DRAIN        read -t timeout in seconds that ends a batch (default: 0.05)
#
# inotifywait runs with -mr rather than the customary -mrq so that its "Watches
# established." line reaches stderr: the benchmark uses it as the ready signal. The
# event stream on stdout is the same either way.
set -u
[ $# -ge 2 ] || { echo "usage: $0 SRC DEST [DEST...]" >&2; exit 2; }
src=${1%/}
shift
opts=${RSYNC_OPTS:--az}
extra=${RSYNC_EXTRA:-}
drain=${DRAIN:-0.05}

# shellcheck disable=SC2086  # opts/extra are word lists on purpose
inotifywait -mr -e close_write,create,delete,moved_to,moved_from --format '%w%f' "$src" |
while read -r _; do
    while read -r -t "$drain" _; do :; done
    for dest in "$@"; do
        rsync $opts --delete $extra "$src/" "$dest" &
    done
    wait
done
