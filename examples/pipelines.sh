#!/usr/bin/env bash
# File Conveyor pipelines, ready to copy.  Each is a function; run one with
#   examples/pipelines.sh NAME [ARGS]
# Every function here is run by the test suite (tests/examples/), so each works as written.
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

# The whole job on one machine (what `make demo` runs): CSS and JS minified, every
# file given a unique name from its content, copied to a local "CDN" folder, and
# recorded in a synced-files database a web application can read.
#   examples/pipelines.sh sync_to_folder [SITE] [OUT]   (OUT/cdn, OUT/synced_files.db)
sync_to_folder() {
  local site="${1:-$here/site}" out="${2:-/tmp/fc-demo}"
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  fc-watch --scan-once --ignore-dirs CVS:.svn "$site" |
    fc-process --chain minify.CSS,minify.JS,unique_filename.MD5 |
    fc-transport --to "file://$out/cdn" --url "http://localhost:8000/" |
    fc-record --db "$out/synced_files.db"
}

# Read events in a shell loop: the exact path bytes of each event, base64-safe.
paths() {
  fc-watch --scan-once "${1:-$here/site}" | jq -r '.path_b64 // (.path | @base64)' | while read -r b64; do
    printf '%s\n' "$(printf '%s' "$b64" | base64 -d)"
  done
}

if [ $# -eq 0 ]; then
  echo "usage: $0 scan_once|live|only_css_js|css_js_images|sync_to_folder|paths [DIR]" >&2
  exit 2
fi
"$@"
