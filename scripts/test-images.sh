#!/usr/bin/env bash
# Checks the container images of deploy/docker (`make test-images`, part of `make test`):
#   scripts/test-images.sh BIN_DIR
#   scripts/test-images.sh --engine-only    (only checks that a Docker engine answers)
# BIN_DIR holds the static binaries (`make static-bins`). It builds the images under tags of its
# own, then checks, every container with --network none:
#   - runvoyd: `--version`, its CA bundle and PATH, host name resolution in the static binary (/etc/hosts, and DNS when
#     run as root), and `serve --backend gcp` starting on Cloud Run compute as the
#     image's unprivileged user, with the image's data dir and no runner or sidecar binary;
#   - runvoy-sidecar: with the job's args and a volume at /workspace it injects an executable
#     runvoy-runner, writes the ready marker, listens on the probe port and exits 0 after a probe;
#   - the injected runner, run from that volume as the job's runner container does, in a
#     FROM scratch image without libc or shell: JSON records on stdout and an exit record with the
#     command's exit code.
# It needs a Docker engine and fails when none answers. It removes what it created.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
  echo "FATAL: test-images needs a Docker engine and none answers (\`docker info\` failed)." >&2
  echo "       Start one (e.g. \`dockerd --bridge=none --iptables=false &\`, as .ci/run does) and rerun." >&2
  exit 1
fi
# --engine-only: just the check above, before the static binaries are built.
[ "${1:-}" != --engine-only ] || exit 0
bin_dir="${1:?usage: scripts/test-images.sh BIN_DIR | --engine-only}"

started=$SECONDS
id="rvtest$$"
repo="runvoy-test-$id"
runvoyd_img="$repo/runvoyd:t"
sidecar_img="$repo/runvoy-sidecar:t"
scratch_img="$repo/scratch-command:t"
volume="$id-workspace"
tmp=$(mktemp -d)
containers=()
dns_pid=

cleanup() {
  [ -z "$dns_pid" ] || kill "$dns_pid" 2>/dev/null || true
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
  docker volume rm -f "$volume" >/dev/null 2>&1 || true
  docker rmi -f "$runvoyd_img" "$sidecar_img" "$scratch_img" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
ok() { echo "ok: $*"; }

# Waits up to $2 seconds for container $1's output to contain $3.
wait_log() {
  for _ in $(seq 1 $(($2 * 10))); do
    grep -qF -- "$3" <<<"$(docker logs "$1" 2>&1)" && return 0
    [ "$(docker inspect -f '{{.State.Running}}' "$1")" = true ] || break
    sleep 0.1
  done
  grep -qF -- "$3" <<<"$(docker logs "$1" 2>&1)"
}

# Waits up to $3 seconds for file $1 to contain $2.
wait_file_line() {
  for _ in $(seq 1 $(($3 * 10))); do
    grep -qF -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# A DNS responder on 127.0.0.1:53 for the resolution check: A queries get 127.0.0.1, others an
# empty answer; it logs each queried name.
DNS_RESPONDER='
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("dns ready")
while True:
    data, peer = s.recvfrom(512)
    end = data.index(b"\0", 12) + 5
    question, qtype = data[12:end], struct.unpack(">H", data[end - 4:end - 2])[0]
    labels, i = [], 0
    while question[i]:
        labels.append(question[i + 1:i + 1 + question[i]].decode())
        i += 1 + question[i]
    print("query", ".".join(labels), qtype)
    answers = b""
    if qtype == 1:
        answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
    header = data[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, 1 if answers else 0, 0, 0)
    s.sendto(header + question + answers, peer)
'

bash scripts/images.sh "$bin_dir" "$repo" t

# runvoyd --version
out=$(docker run --rm --network none "$runvoyd_img" --version) || fail "runvoyd --version exited $?"
[[ "$out" == runvoyd\ * ]] || fail "runvoyd --version printed: $out"
ok "runvoyd image: $out"

# The CA bundle TLS to Google's APIs verifies against (rustls-native-certs reads SSL_CERT_FILE).
c="$id-files"
containers+=("$c")
docker create --name "$c" "$runvoyd_img" >/dev/null
docker cp "$c:/etc/ssl/certs/ca-certificates.crt" "$tmp/ca.crt"
certs=$(grep -c 'BEGIN CERTIFICATE' "$tmp/ca.crt" || true)
[ "$certs" -gt 0 ] || fail "the runvoyd image has no certificates in /etc/ssl/certs/ca-certificates.crt"
env=$(docker inspect -f '{{join .Config.Env " "}}' "$runvoyd_img")
for want in PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt; do
  [[ " $env " == *" $want "* ]] || fail "the runvoyd image's environment lacks $want: $env"
done
docker rm "$c" >/dev/null
ok "runvoyd image: $certs CA certificates, PATH=/usr/local/bin"

# Host names resolve in the static binary (glibc's built-in files and DNS lookups, no NSS
# modules to load): `localhost` from the /etc/hosts Docker provides reaches a connect attempt.
out=$(docker run --rm --network none -e FIRESTORE_EMULATOR_HOST=localhost:1 "$runvoyd_img" \
  admin create --store firestore --gcp-project-id test-project admin@example.com 2>&1) || true
grep -q '127.0.0.1:1.*Connection refused' <<<"$out" || {
  echo "$out" >&2
  fail "runvoyd did not resolve localhost to a connect attempt"
}
ok "runvoyd image: host names resolve (localhost -> 127.0.0.1, connection refused)"

# serve --backend gcp: Cloud Run compute needs neither runner nor sidecar binary. Firestore and
# KMS cannot be reached without a network, so the store is SQLite and the cipher a key file
# (both in the image's default data dir); the Cloud Run and Logging endpoints are never called
# before a run.
c="$id-runvoyd"
containers+=("$c")
docker run -d --name "$c" --network none \
  -e RUNVOY_STORE=sqlite -e RUNVOY_CIPHER=local -e RUNVOY_INSECURE_PUSH=true \
  -e RUNVOY_GCP_PROJECT_ID=test-project -e RUNVOY_GCP_REGION=us-central1 \
  -e RUNVOY_GCP_SIDECAR_IMAGE=example.invalid/runvoy-sidecar:t \
  -e RUNVOY_GCP_CLOUDRUN_ENDPOINT=http://127.0.0.1:9 -e RUNVOY_GCP_LOGGING_ENDPOINT=http://127.0.0.1:9 \
  -e RUNVOY_GCP_ACCESS_TOKEN=test-token -e RUNVOY_NO_CLIENT_CONFIG=true \
  "$runvoyd_img" >/dev/null
wait_log "$c" 30 "runvoyd: listening on" || {
  docker logs "$c" >&2
  fail "runvoyd serve --backend gcp did not start listening"
}
[ "$(docker inspect -f '{{.State.Running}}' "$c")" = true ] || fail "runvoyd exited after it started"
grep -qF 'compute on Cloud Run Jobs' <<<"$(docker logs "$c" 2>&1)" || {
  docker logs "$c" >&2
  fail "runvoyd did not start on Cloud Run compute"
}
user=$(docker inspect -f '{{.Config.User}}' "$runvoyd_img")
[ "$user" = 65532:65532 ] || fail "runvoyd image user is '$user', not 65532:65532"
ok "runvoyd image: serve --backend gcp (Cloud Run compute) listens as $user"
docker rm -f "$c" >/dev/null

# The sidecar as the Cloud Run job starts it: the image's entrypoint, the job's args, a volume
# at /workspace.
c="$id-sidecar"
containers+=("$c")
docker volume create "$volume" >/dev/null
docker run -d --name "$c" --network none -v "$volume:/workspace" "$sidecar_img" \
  --workspace /workspace --runner-binary /usr/local/bin/runvoy-runner \
  --serve-ready 0.0.0.0:8081 >/dev/null
wait_log "$c" 30 "answering probes on 0.0.0.0:8081" || {
  docker logs "$c" >&2
  fail "the sidecar did not reach its probe port"
}
docker cp "$c:/workspace/.runvoy" "$tmp/state"
[ -f "$tmp/state/ready" ] || fail "the sidecar wrote no /workspace/.runvoy/ready"
[ -x "$tmp/state/runvoy-runner" ] || fail "/workspace/.runvoy/runvoy-runner is missing or not executable"
cmp -s "$tmp/state/runvoy-runner" "$bin_dir/runvoy-runner" ||
  fail "/workspace/.runvoy/runvoy-runner differs from $bin_dir/runvoy-runner"
ok "sidecar image: /workspace/.runvoy/runvoy-runner is in place ($(stat -c %A "$tmp/state/runvoy-runner")) and the ready marker written"

# The startup probe: one TCP connection in the container's network namespace, after which the
# sidecar exits 0 by itself.
pid=$(docker inspect -f '{{.State.Pid}}' "$c")
if [ "$(id -u)" = 0 ] && command -v nsenter >/dev/null; then
  # While the sidecar waits, its network namespace (loopback only) also serves to check that the
  # static runvoyd resolves names through a nameserver, as it must for Google's APIs: a DNS
  # responder answering every A query with 127.0.0.1, and runvoyd pointed at it.
  nsenter -t "$pid" -n python3 -u -c "$DNS_RESPONDER" >"$tmp/dns.log" 2>&1 &
  dns_pid=$!
  wait_file_line "$tmp/dns.log" "dns ready" 10 || fail "the test's DNS responder did not start: $(cat "$tmp/dns.log")"
  echo "nameserver 127.0.0.1" >"$tmp/resolv.conf"
  out=$(docker run --rm --network "container:$c" -v "$tmp/resolv.conf:/etc/resolv.conf:ro" \
    -e FIRESTORE_EMULATOR_HOST=firestore.runvoy.test:1 "$runvoyd_img" \
    admin create --store firestore --gcp-project-id test-project admin@example.com 2>&1) || true
  grep -qF 'firestore.runvoy.test' "$tmp/dns.log" || fail "runvoyd sent no DNS query: $out"
  grep -q '127.0.0.1:1.*Connection refused' <<<"$out" || {
    echo "$out" >&2
    fail "runvoyd did not resolve firestore.runvoy.test through DNS"
  }
  kill "$dns_pid"
  dns_pid=
  ok "runvoyd image: names resolve through DNS (firestore.runvoy.test -> 127.0.0.1)"

  nsenter -t "$pid" -n bash -c 'exec 3<>/dev/tcp/127.0.0.1/8081' || fail "cannot connect to the sidecar's probe port"
  code=$(timeout 30 docker wait "$c") || fail "the sidecar did not exit after the probe"
  [ "$code" = 0 ] || fail "the sidecar exited $code after the probe"
  ok "sidecar image: answered the probe on 8081 and exited 0"
else
  # Without root the container's namespace cannot be entered: check the listening socket.
  grep -qE '^ *[0-9]+: 00000000:1F91 00000000:0000 0A' "/proc/$pid/net/tcp" ||
    fail "the sidecar does not listen on 0.0.0.0:8081"
  ok "sidecar image: listens on 0.0.0.0:8081"
  echo "note: not root: the probe connection and the DNS check were not run (they need nsenter)"
fi

# The runner container of the job: an image with neither libc nor shell, holding only the
# command (the static sidecar binary stands in for one), running the injected runner from the
# volume.
mkdir -p "$tmp/scratch"
cp "$bin_dir/runvoy-sidecar" "$tmp/scratch/"
printf 'FROM scratch\nCOPY runvoy-sidecar /usr/local/bin/runvoy-sidecar\n' >"$tmp/scratch/Dockerfile"
docker build -q -t "$scratch_img" "$tmp/scratch" >/dev/null

# run_runner NAME EXPECTED_EXIT ENV...: runs the runner as the job does; its stdout goes to
# $tmp/NAME.out.
run_runner() {
  local name=$1 want=$2 code=0
  shift 2
  docker run --rm --network none -v "$volume:/workspace" -e RUNVOY_WORKDIR=/workspace \
    -e "RUNVOY_EXECUTION_ID=exec-$name" "$@" \
    --entrypoint /workspace/.runvoy/runvoy-runner "$scratch_img" >"$tmp/$name.out" || code=$?
  [ "$code" = "$want" ] || {
    cat "$tmp/$name.out" >&2
    fail "runner ($name) exited $code, expected $want"
  }
}

# check_records NAME EXIT_CODE STREAM TEXT: every stdout line is a record of exec-NAME with
# seq 1, 2, ...; one log record on STREAM contains TEXT; the last is the exit record with
# EXIT_CODE and lines = number of log records.
check_records() {
  python3 - "$tmp/$1.out" "exec-$1" "$2" "$3" "$4" <<'PY' || fail "runner ($1) records: see above"
import json, sys
path, exec_id, want_code, stream, text = sys.argv[1:]
lines = open(path).read().splitlines()
recs = [json.loads(l) for l in lines]
assert recs, "no records on stdout"
for i, r in enumerate(recs, 1):
    assert r.get("exec") == exec_id and r.get("seq") == i, f"record {i}: {r}"
*logs, last = recs
assert all(r["runvoy"] == "log" for r in logs), logs
assert last["runvoy"] == "exit", f"last record is not the exit record: {last}"
assert last["exit_code"] == int(want_code), f"exit record: {last}"
assert last["lines"] == len(logs), f"exit record: {last}"
assert any(r["stream"] == stream and text in r["message"] for r in logs), \
    f"no {stream} record with {text!r}: {logs}"
PY
}

run_runner version 0 -e 'RUNVOY_ARGV=["/usr/local/bin/runvoy-sidecar","--version"]'
check_records version 0 stdout "runvoy-sidecar "
ok "runner in a FROM scratch image: exit 0, the command's stdout as records"

run_runner failing 1 -e 'RUNVOY_ARGV=["/usr/local/bin/runvoy-sidecar","--workspace","/w","--env-json","/missing.json"]'
check_records failing 1 stderr "cannot read /missing.json"
ok "runner in a FROM scratch image: exit 1 and the command's stderr as records"

# A shell line needs /bin/sh, which the image lacks: the runner says so in its exit record.
run_runner noshell 127 -e 'RUNVOY_COMMAND=echo hi'
python3 - "$tmp/noshell.out" <<'PY' || fail "runner (noshell): no exit record with an error"
import json, sys
last = json.loads(open(sys.argv[1]).read().splitlines()[-1])
assert last["runvoy"] == "exit" and last["exit_code"] == 127 and last.get("error"), last
PY
ok "runner in a FROM scratch image: a shell line without /bin/sh ends with exit 127 and an error"

echo "test-images: all passed in $((SECONDS - started))s"
