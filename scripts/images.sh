#!/usr/bin/env bash
# Builds the container images of deploy/docker from statically linked binaries (`make images`).
#   scripts/images.sh BIN_DIR [IMAGE_REPO] [IMAGE_TAG]
# BIN_DIR holds runvoyd, runvoy-sidecar and runvoy-runner built with +crt-static (`make
# static-bins`). The images are IMAGE_REPO/runvoyd:IMAGE_TAG and IMAGE_REPO/runvoy-sidecar:IMAGE_TAG
# (without IMAGE_REPO: runvoyd:IMAGE_TAG, ...; IMAGE_TAG defaults to dev). Each build context is
# staged under target/docker, so only what the image holds is sent to the engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bin_dir="${1:?usage: scripts/images.sh BIN_DIR [IMAGE_REPO] [IMAGE_TAG]}"
repo="${2:-}"
tag="${3:-dev}"
prefix="${repo:+${repo%/}/}"
ca_certs="${CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}"
stage=target/docker

die() { echo "images.sh: $*" >&2; exit 1; }
for b in runvoyd runvoy-sidecar runvoy-runner; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing: build it with \`make static-bins\`"
  # A dynamically linked binary would not start in a FROM scratch image (no loader, no libc).
  if command -v file >/dev/null && ! file -L "$bin_dir/$b" | grep -q 'statically linked\|static-pie linked'; then
    die "$bin_dir/$b is not statically linked: build it with \`make static-bins\`"
  fi
done
[ -s "$ca_certs" ] || die "no CA bundle at $ca_certs (install ca-certificates, or set CA_CERTS)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (\`docker info\` failed): start dockerd"

rm -rf "$stage"
# runvoyd: the binary, CA bundle, an unprivileged user and a sticky world-writable /tmp.
ctx="$stage/runvoyd"
mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp"
chmod 1777 "$ctx/rootfs/tmp"
cp "$ca_certs" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nrunvoy:x:65532:65532:runvoy:/tmp:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nrunvoy:x:65532:\n' >"$ctx/rootfs/etc/group"
cp "$bin_dir/runvoyd" "$ctx/"
# runvoy-sidecar: the sidecar and the runner it injects.
ctx="$stage/runvoy-sidecar"
mkdir -p "$ctx"
cp "$bin_dir/runvoy-sidecar" "$bin_dir/runvoy-runner" "$ctx/"

for img in runvoyd runvoy-sidecar; do
  ref="${prefix}${img}:${tag}"
  echo "== docker build $ref"
  docker build -q -f "deploy/docker/$img.Dockerfile" -t "$ref" "$stage/$img"
done
