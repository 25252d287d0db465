#!/usr/bin/env bash
# Runs schemathesis against a real runvoyd (local backend) with the admin key, then with a
# viewer key: no server error, no response outside the OpenAPI document, no schema-valid
# request refused. Usage: run.sh BIN_DIR (runvoyd built there). Needs schemathesis on PATH
# (`pip install -r scripts/schemathesis/requirements.txt`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(cd "${1:?usage: run.sh BIN_DIR}" && pwd)"
command -v st >/dev/null || { echo "schemathesis (st) is not installed: pip install -r $here/requirements.txt" >&2; exit 1; }
data="$(mktemp -d)"
# Commands run as a uid of their own, which must be able to walk to the data dir.
chmod 755 "$data"
log="$data/runvoyd.log"
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
# The failed-authentication limit is raised: schemathesis sends bad credentials on purpose,
# and from one address the limiter would otherwise answer 429 to the valid requests after them
# (the limiter has its own tests).
"$bin/runvoyd" serve --backend local --data-dir "$data/runvoy" --listen 127.0.0.1:0 \
  --no-client-config --auth-failure-burst 1000000 --auth-failure-per-minute 1000000 \
  >"$log" 2>&1 &
pid=$!
url=""
for _ in $(seq 1 100); do
  url="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -1 || true)"
  [ -n "$url" ] && curl -fsS "$url/api/v1/health" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "runvoyd did not start" >&2; cat "$log" >&2; exit 1; }
admin="$(cat "$data/runvoy/admin.key")"
claim="$(curl -fsS -X POST -H "X-API-Key: $admin" -H 'Content-Type: application/json' \
  -d '{"email":"viewer@example.com","role":"viewer"}' "$url/api/v1/users/create" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["claim_token"])')"
viewer="$(curl -fsS -X POST "$url/api/v1/claim/$claim" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')"
status=0
for who in admin viewer; do
  key="$admin"; [ "$who" = viewer ] && key="$viewer"
  echo "== schemathesis as $who"
  st --config-file "$here/schemathesis.toml" run "$url/api/v1/openapi.json" \
    -H "X-API-Key: $key" --exclude-path /api/v1/users/revoke --exclude-path /api/v1/users/rotate-key \
    || status=1
done
exit $status
