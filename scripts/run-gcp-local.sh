#!/usr/bin/env bash
# `make run-gcp-local`: the production event path on one machine. Google's Firestore and Pub/Sub
# emulators, runvoyd on Firestore with the push endpoints, and the local compute publishing each
# record to the Pub/Sub emulator shaped as the Cloud Logging sink's LogEntries; a real push
# subscription delivers them back to runvoyd. Leaves everything running (`make stop-gcp-local`).
set -euo pipefail
bin="$1"; data="$2"; listen="$3"
project=runvoy-local
topic="projects/$project/topics/runvoy-logs"
mkdir -p "$data"
for p in runvoyd emulators; do
  if [ -f "$data/$p.pid" ] && kill -0 "$(cat "$data/$p.pid")" 2>/dev/null; then
    echo "stopping the previous $p ($(cat "$data/$p.pid"))"
    kill "$(cat "$data/$p.pid")" || true
  fi
  rm -f "$data/$p.pid"
done
sleep 1
rm -f "$data/server.json" "$data/admin.key"

# The emulators keep everything in memory: a fresh start is an empty database.
nohup "$bin/runvoy-emulators" >"$data/emulators.env" 2>"$data/emulators.log" &
echo $! >"$data/emulators.pid"
for _ in $(seq 1 600); do
  grep -q '^# ready' "$data/emulators.env" 2>/dev/null && break
  if ! kill -0 "$(cat "$data/emulators.pid")" 2>/dev/null; then
    echo "the emulators failed to start:" >&2; cat "$data/emulators.log" >&2; exit 1
  fi
  sleep 0.2
done
grep -q '^# ready' "$data/emulators.env" || { echo "the emulators did not start in 120 s" >&2; exit 1; }
eval "$(grep '^export ' "$data/emulators.env")"

put() { # PUT on the Pub/Sub emulator's REST API; an existing resource is fine
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'content-type: application/json' \
    -d "$2" "http://$PUBSUB_EMULATOR_HOST/v1/$1")
  case "$code" in 200|409) ;; *) echo "PUT $1 answered $code" >&2; exit 1 ;; esac
}
put "$topic" '{}'

RUNVOY_GCP_PROJECT_ID=$project nohup "$bin/runvoyd" serve --data-dir "$data" --listen "$listen" \
  --no-client-config --store firestore --events pubsub --insecure-push \
  --gcp-local-sink-topic "$topic" >"$data/runvoyd.log" 2>&1 &
echo $! >"$data/runvoyd.pid"
for _ in $(seq 1 150); do
  [ -s "$data/server.json" ] && break
  if ! kill -0 "$(cat "$data/runvoyd.pid")" 2>/dev/null; then
    echo "runvoyd failed to start:" >&2; cat "$data/runvoyd.log" >&2; exit 1
  fi
  sleep 0.2
done
url=$(sed -n 's/.*"url": *"\([^"]*\)".*/\1/p' "$data/server.json")
put "projects/$project/subscriptions/runvoy-logs-push" \
  "{\"topic\":\"$topic\",\"pushConfig\":{\"pushEndpoint\":\"$url/push/pubsub/logs\"},\"ackDeadlineSeconds\":10}"

export RUNVOY_API_URL="$url" RUNVOY_API_KEY="$(cat "$data/admin.key")"
echo
echo "runvoyd is running at $url on Firestore (emulator $FIRESTORE_EMULATOR_HOST); records travel"
echo "through the Pub/Sub emulator ($PUBSUB_EMULATOR_HOST, topic $topic) to $url/push/pubsub/logs."
echo
"$bin/runvoy" run -- 'echo hello through Pub/Sub; for i in 1 2 3; do echo step $i; sleep 0.2; done'
echo
echo "Everything keeps running (stop it with: make stop-gcp-local)."
echo "  use the CLI: export RUNVOY_API_URL=$url RUNVOY_API_KEY=\$(cat $data/admin.key)"
