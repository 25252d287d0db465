#!/usr/bin/env bash
# Builds the images the `--compute docker` tests use, locally and without pulling anything:
#   scripts/docker-test-images.sh BIN_DIR
#   - runvoy-sidecar:test      deploy/docker/runvoy-sidecar.Dockerfile on BIN_DIR's static
#                              runvoy-sidecar and runvoy-runner;
#   - runvoy-test/busybox:test a `docker import` of a busybox-static root file system (sh and
#                              the usual tools as busybox links) with an /etc/os-release of its
#                              own, so a test can tell the image's files from the host's;
#   - runvoy-test/busybox-user:test the same, running as the non-root user `app` (1000:1000).
# Needs a Docker engine and /bin/busybox from busybox-static (apt-get install busybox-static);
# fails with the reason when either is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bin_dir="${1:?usage: scripts/docker-test-images.sh BIN_DIR}"
docker info >/dev/null 2>&1 || {
  echo "FATAL: the Docker tests need a Docker engine and none answers (\`docker info\` failed)" >&2
  exit 1
}
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || {
  [ -x /bin/busybox ] && busybox=/bin/busybox || {
    echo "FATAL: the Docker tests need a static busybox (apt-get install busybox-static)" >&2
    exit 1
  }
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cp "$bin_dir/runvoy-sidecar" "$bin_dir/runvoy-runner" "$tmp/"
docker build -q -t runvoy-sidecar:test -f deploy/docker/runvoy-sidecar.Dockerfile "$tmp" >/dev/null 2>&1 || docker build -t runvoy-sidecar:test -f deploy/docker/runvoy-sidecar.Dockerfile "$tmp"
echo "built runvoy-sidecar:test"

root="$tmp/rootfs"
mkdir -p "$root"/{bin,usr/bin,sbin,usr/sbin,etc,tmp,workspace}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
ln -sf /bin/busybox "$root/usr/bin/sh"
cat >"$root/etc/os-release" <<'OS'
NAME="runvoy test image"
ID=runvoy-test
PRETTY_NAME="runvoy busybox test image"
OS
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\napps:x:1000:\n' >"$root/etc/group"
chmod 1777 "$root/tmp"
for image in busybox:root busybox-user:app; do
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c "USER ${image#*:}" \
    -c 'CMD ["/bin/sh"]' - "runvoy-test/${image%:*}:test" >/dev/null
  echo "built runvoy-test/${image%:*}:test (user ${image#*:})"
done
