#!/usr/bin/env bash
# `make run-gcp-local`: the Google Cloud backend on one machine. Google's Firestore and Pub/Sub
# emulators, runvoy-fake-gcp (the Cloud Run Admin API, Cloud Logging and Cloud KMS fakes; it runs
# each job execution's sidecar and runner for real on this machine and publishes their log
# entries to the Pub/Sub emulator as a log sink would), and runvoyd with `--backend gcp` pointed
# at them; a real push subscription delivers the entries to runvoyd. Leaves everything running
# (`make stop-gcp-local`).
set -euo pipefail
bin="$1"; data="$2"; listen="$3"
project=runvoy-local
topic="projects/$project/topics/runvoy-logs"
mkdir -p "$data"
for p in runvoyd fake emulators; do
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

wait_for() { # NAME FILE PIDFILE LOG: until the process writes FILE (30 s), or fail with its log
  for _ in $(seq 1 150); do
    [ -s "$2" ] && return 0
    if ! kill -0 "$(cat "$3")" 2>/dev/null; then
      echo "$1 failed to start:" >&2; cat "$4" >&2; exit 1
    fi
    sleep 0.2
  done
  echo "$1 did not start in 30 s:" >&2; cat "$4" >&2; exit 1
}

kms_key="projects/$project/locations/global/keyRings/runvoy/cryptoKeys/secrets"
rm -f "$data/fake/fake.json"
nohup "$bin/runvoy-fake-gcp" --state-dir "$data/fake" --pubsub-topic "$topic" --kms-key "$kms_key" \
  --runvoyd-bin "$bin/runvoyd" --runner-bin "$bin/runvoy-runner" --sidecar-bin "$bin/runvoy-sidecar" \
  >/dev/null 2>"$data/fake.log" &
echo $! >"$data/fake.pid"
wait_for runvoy-fake-gcp "$data/fake/fake.json" "$data/fake.pid" "$data/fake.log"
fake_url=$(sed -n 's/.*"url": *"\([^"]*\)".*/\1/p' "$data/fake/fake.json")
kms_url=$(sed -n 's/.*"kms_url": *"\([^"]*\)".*/\1/p' "$data/fake/fake.json")

RUNVOY_GCP_PROJECT_ID=$project RUNVOY_GCP_REGION=local \
  RUNVOY_GCP_SIDECAR_IMAGE=localhost/runvoy-sidecar:local \
  RUNVOY_GCP_CLOUDRUN_ENDPOINT="$fake_url" RUNVOY_GCP_LOGGING_ENDPOINT="$fake_url" \
  RUNVOY_GCP_ACCESS_TOKEN=local RUNVOY_GCP_SECRETS_KMS_KEY="$kms_key" \
  RUNVOY_GCP_KMS_ENDPOINT="$kms_url" RUNVOY_GCP_KMS_ACCESS_TOKEN=fake-gcp-token \
  nohup "$bin/runvoyd" serve --backend gcp --insecure-push --data-dir "$data" --listen "$listen" \
  --no-client-config >"$data/runvoyd.log" 2>&1 &
echo $! >"$data/runvoyd.pid"
wait_for runvoyd "$data/server.json" "$data/runvoyd.pid" "$data/runvoyd.log"
url=$(sed -n 's/.*"url": *"\([^"]*\)".*/\1/p' "$data/server.json")
put "projects/$project/subscriptions/runvoy-logs-push" \
  "{\"topic\":\"$topic\",\"pushConfig\":{\"pushEndpoint\":\"$url/push/pubsub/logs\"},\"ackDeadlineSeconds\":60}"

export RUNVOY_API_URL="$url" RUNVOY_API_KEY="$(cat "$data/admin.key")"
echo
echo "runvoyd is running at $url with --backend gcp: Firestore (emulator $FIRESTORE_EMULATOR_HOST),"
echo "Cloud Run and Cloud KMS (runvoy-fake-gcp at $fake_url); log entries travel through the Pub/Sub"
echo "emulator ($PUBSUB_EMULATOR_HOST, topic $topic) to $url/push/pubsub/logs."
echo
"$bin/runvoy" run -- 'echo hello through Pub/Sub; for i in 1 2 3; do echo step $i; sleep 0.2; done'
echo
echo "Everything keeps running (stop it with: make stop-gcp-local)."
echo "  use the CLI: export RUNVOY_API_URL=$url RUNVOY_API_KEY=\$(cat $data/admin.key)"
