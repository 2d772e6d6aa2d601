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

# The whole job on one machine (what `make demo` runs): the site's web assets only
# (not index.php or readme.txt), CSS and JS minified, every file given a unique name
# from its content, the CSS rewritten to point at those names, copied to a local
# "CDN" folder, and recorded in a synced-files database a web application can read.
# link_updater.CSSURLUpdater finds where each referenced file went in that database,
# which fc-record fills: a stylesheet whose images are not recorded yet waits
# (--retry-delay, doubling) and is processed once they are, in the same run.
#   examples/pipelines.sh sync_to_folder [SITE] [OUT]   (OUT/cdn, OUT/synced_files.db)
sync_to_folder() {
  local site="${1:-$here/site}" out="${2:-/tmp/fc-demo}"
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  site=$(cd "$site" && pwd)
  fc-watch --scan-once --ignore-dirs CVS:.svn "$site" |
    fc-filter --extensions css:js:png:jpg:jpeg:gif:svg:ico:webp:woff:woff2:ttf:otf:eot |
    fc-process --chain minify.CSS,minify.JS,link_updater.CSSURLUpdater,unique_filename.MD5 \
      --server demo --record-db "$out/synced_files.db" --document-root "$site" --base-path / --retry-delay 0.5 |
    fc-transport --to "file://$out/cdn" --url "http://localhost:8000/" --set name=demo |
    fc-record --db "$out/synced_files.db"
}

# Read events in a shell loop: the exact path bytes of each event, base64-safe.
paths() {
  fc-watch --scan-once "${1:-$here/site}" | jq -r '.path_b64 // (.path | @base64)' | while read -r b64; do
    printf '%s\n' "$(printf '%s' "$b64" | base64 -d)"
  done
}

# Live to SFTP: every change is uploaded as it happens, until Ctrl-C (or SIGTERM).
# The server and its settings are one URL (`fc-transport --list` shows every setting);
# the URL the files are served at goes to --url.  From the arguments, else these
# variables, else the defaults shown:
#   FC_SFTP='sftp://deploy@static.example:22/var/www/static?key_file=~/.ssh/deploy' \
#   FC_SFTP_URL=https://static.example/ examples/pipelines.sh live_to_sftp /srv/www
# The host key must be in ~/.ssh/known_hosts (or give ?known_hosts=FILE); a key with a
# passphrase takes it from FC_PASSPHRASE.  A server that is down is retried with
# back-off; nothing is lost meanwhile.
live_to_sftp() {
  local site="${1:-$here/site}"
  local to="${2:-${FC_SFTP:-sftp://${USER:-$(id -un)}@localhost/var/www/static}}"
  local url="${3:-${FC_SFTP_URL:-https://static.example/}}"
  fc-watch --ignore-dirs CVS:.svn "$site" |
    fc-transport --to "$to" --url "$url"
}

# Images optimised and uploaded to S3 under unique names, and the CSS rewritten to
# point at them.  CSSURLUpdater needs to know where each referenced file went: it
# reads fc-record's database, so fc-record closes the loop.  A stylesheet whose
# images are not uploaded yet waits (--retry-delay, doubling) until fc-record has
# them, in the same run, so one run is enough (image_optimizer needs jpegtran,
# optipng and gifsicle; fc-process --list says what is missing).  The source is served at
# --base-path / from --document-root (so /misc/logo.png is SITE/misc/logo.png).
#   examples/pipelines.sh images_to_s3 [SITE] [s3://BUCKET/PREFIX]
# Variables: FC_S3 (the destination, default s3://my-bucket/static), FC_S3_ENDPOINT
# (an S3-compatible store such as MinIO; default: AWS), FC_DB (the synced-files
# database, default ~/synced_files.db).  Credentials: boto3's usual chain
# (AWS_PROFILE, AWS_ACCESS_KEY_ID..., ~/.aws/credentials); objects are public-read.
images_to_s3() {
  local site="${1:-$here/site}" to="${2:-${FC_S3:-s3://my-bucket/static}}"
  local db="${FC_DB:-$HOME/synced_files.db}" endpoint=()
  if [ -n "${FC_S3_ENDPOINT:-}" ]; then endpoint=(--endpoint-url "$FC_S3_ENDPOINT"); fi
  site=$(cd "$site" && pwd)
  fc-watch --scan-once --ignore-dirs CVS:.svn "$site" |
    fc-filter --extensions css:png:jpg:jpeg:gif |
    fc-process --chain image_optimizer.Max,link_updater.CSSURLUpdater,unique_filename.MD5 \
      --server s3cdn --record-db "$db" --document-root "$site" --base-path / --retry-delay 0.5 |
    fc-transport --to "$to" --set name=s3cdn "${endpoint[@]}" |
    fc-record --db "$db"
}

# cron: send what changed since the last run (the first run sends everything) and
# exit.  Each run's state is kept (~/.local/state/fileconveyor), so a run sends
# only the changes, and what a run could not send (a server down) is sent by the
# next.  crontab -e (cron's PATH is short: the python3 that has File Conveyor's
# packages must come first; flock skips a run while the last one still works):
#   PATH=/opt/fileconveyor/.venv/bin:/usr/bin:/bin
#   */5 * * * * flock -n /tmp/fc-cron.lock /opt/fileconveyor/examples/pipelines.sh cron_sync /srv/www >>/var/log/fc-cron.log 2>&1
# Variables: FC_TO (destination, default file:///var/www/cdn), FC_URL (its public
# URL, default http://localhost/cdn/), FC_DB (default ~/synced_files.db).
cron_sync() {
  local site="${1:-$here/site}" to="${2:-${FC_TO:-file:///var/www/cdn}}"
  fc-watch --scan-once --ignore-dirs CVS:.svn "$site" |
    fc-transport --to "$to" --url "${FC_URL:-http://localhost/cdn/}" |
    fc-record --db "${FC_DB:-$HOME/synced_files.db}"
}

# supervisord: each stage a separate program, connected by named FIFOs, so a crashed
# stage is restarted alone and nothing is lost (docs/durability.md).  The config is
# examples/supervisord.conf; this makes the FIFOs it uses (run it once, as the user
# the programs run as):
#   examples/pipelines.sh make_fifos /var/lib/fileconveyor/fifo
#   supervisord -c examples/supervisord.conf
#   supervisorctl -c examples/supervisord.conf status
make_fifos() {
  local dir="${1:-/var/lib/fileconveyor/fifo}" f
  mkdir -p "$dir"
  for f in watch filter process transport; do
    [ -p "$dir/$f" ] || mkfifo -m 600 "$dir/$f"
  done
}

# Fan-out: one watch, two rules.  tee gives every line to both branches; each
# branch's fc-filter acknowledges to fc-watch directly (tee passes the "hop" field
# through), so either branch can be killed and rerun without loss.  Each fc-record
# has its own --state: two stages with the same options would share one.  A >(...)
# branch writes to the tee's stdout unless told otherwise, and the shell does not
# wait for it: here both branches write to fd 3, the pipe into `cat`, which ends
# when both have finished (a >(...) branch's exit status is not seen: read its events).
# Without --scan-once the same runs live.
#   examples/pipelines.sh fan_out [SITE] [OUT]   (OUT/css-js, OUT/images, OUT/synced_files.db)
fan_out() {
  local site="${1:-$here/site}" out="${2:-/tmp/fc-fan-out}"
  local state="${FC_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/fileconveyor}"
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  {
    fc-watch --scan-once --ignore-dirs CVS:.svn "$site" |
      tee >(fc-filter --extensions css:js |
        fc-process --chain minify.CSS,minify.JS |
        fc-transport --to "file://$out/css-js" --url http://localhost:8000/css-js/ |
        fc-record --db "$out/synced_files.db" --state "$state/fan-out-css-js.db" >&3) |
      fc-filter --extensions png:jpg:gif |
      fc-transport --to "file://$out/images" --url http://localhost:8000/images/ |
      fc-record --db "$out/synced_files.db" --state "$state/fan-out-images.db" >&3
  } 3>&1 | cat
}

if [ $# -eq 0 ]; then
  echo "usage: $0 NAME [ARGS], NAME one of:" >&2
  echo "  scan_once|live|only_css_js|css_js_images|paths [SITE]" >&2
  echo "  sync_to_folder|fan_out [SITE] [OUT]" >&2
  echo "  live_to_sftp [SITE] [SFTP_URL] [PUBLIC_URL]" >&2
  echo "  images_to_s3 [SITE] [S3_URL]" >&2
  echo "  cron_sync [SITE] [DEST_URL]" >&2
  echo "  make_fifos [DIR]          (for examples/supervisord.conf)" >&2
  exit 2
fi
"$@"
