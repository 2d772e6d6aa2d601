#!/usr/bin/env bash
# File Conveyor pipelines, ready to copy.  Each is a function; run one with
#   examples/pipelines.sh NAME [ARGS]
# Stages that are still being built are marked; the ones here run today.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PATH="$here/../bin:$PATH"

# What changed in a tree since the last run (first run: everything), then exit.
# The mode for cron:  */5 * * * *  fc-watch --scan-once /srv/www >> /var/log/fc-changes.jsonl
scan_once() {
  fc-watch --scan-once --ignore-dirs CVS:.svn "${1:-$here/site}"
}

# Live: every change as it happens, until Ctrl-C.
live() {
  fc-watch --ignore-dirs CVS:.svn "${1:-$here/site}"
}

# Your own stage in the middle: a few lines of awk that keep only CSS and JS
# files and pass every other field through untouched (docs/events.md, rule 2).
only_css_js() {
  fc-watch --scan-once "${1:-$here/site}" | awk '/"rel":"[^"]*\.(css|js)"/'
}

# The same with fc-filter: a rule's conditions, and any file name works.
css_js_images() {
  fc-watch --scan-once --ignore-dirs CVS:.svn "${1:-$here/site}" | fc-filter --extensions css:js:png:jpg:gif
}

# Read events in a shell loop: the exact path bytes of each event, base64-safe.
paths() {
  fc-watch --scan-once "${1:-$here/site}" | jq -r '.path_b64 // (.path | @base64)' | while read -r b64; do
    printf '%s\n' "$(printf '%s' "$b64" | base64 -d)"
  done
}

if [ $# -eq 0 ]; then
  echo "usage: $0 scan_once|live|only_css_js|css_js_images|paths [DIR]" >&2
  exit 2
fi
"$@"
