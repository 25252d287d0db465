#!/usr/bin/env bash
# `make run`: start runvoyd (local backend) in the background, run a sample command through the
# CLI with streamed logs, and leave the server running.
set -euo pipefail
bin="$1"; data="$2"; listen="$3"
mkdir -p "$data"
if [ -f "$data/runvoyd.pid" ] && kill -0 "$(cat "$data/runvoyd.pid")" 2>/dev/null; then
  echo "stopping the previous runvoyd ($(cat "$data/runvoyd.pid"))"
  kill "$(cat "$data/runvoyd.pid")" || true
  sleep 1
fi
rm -f "$data/server.json"
nohup "$bin/runvoyd" serve --backend local --data-dir "$data" --listen "$listen" --no-client-config \
  >"$data/runvoyd.log" 2>&1 &
echo $! >"$data/runvoyd.pid"
for _ in $(seq 1 100); do
  [ -s "$data/server.json" ] && break
  if ! kill -0 "$(cat "$data/runvoyd.pid")" 2>/dev/null; then
    echo "runvoyd failed to start:" >&2; cat "$data/runvoyd.log" >&2; exit 1
  fi
  sleep 0.1
done
url=$(sed -n 's/.*"url": *"\([^"]*\)".*/\1/p' "$data/server.json")
export RUNVOY_API_URL="$url" RUNVOY_API_KEY="$(cat "$data/admin.key")"
echo
echo "runvoyd is running at $url (log: $data/runvoyd.log)"
echo "sample run: runvoy run -- 'echo hello from runvoy; uname -a; for i in 1 2 3; do echo step \$i; sleep 0.2; done'"
echo
"$bin/runvoy" run -- 'echo hello from runvoy; uname -a; for i in 1 2 3; do echo step $i; sleep 0.2; done; echo done >&2'
echo
echo "runvoyd keeps running (stop it with: make stop)."
echo "  web app:    $url/"
echo "  admin key:  $data/admin.key"
echo "  use the CLI: export RUNVOY_API_URL=$url RUNVOY_API_KEY=\$(cat $data/admin.key)"
echo "               $bin/runvoy run -- <command>"
