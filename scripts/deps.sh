#!/usr/bin/env bash
# Installs the machine packages a target needs, when they are missing.
#   runtime: bubblewrap (runvoyd refuses to start without it unless --isolation process)
#   test:    bubblewrap; docker.io and busybox-static for the Docker tests, and a running
#            Docker engine (started here as `dockerd --bridge=none --iptables=false` when
#            none answers and we are root); git and openssl (the git checkout tests serve
#            and sign with them)
#   web:     Debian's chromium for the browser tests, and node/npm
#   lint:    python-hcl2 (PyPI) for scripts/check_terraform.py
set -euo pipefail
what="${1:-runtime}"
need=()
have() { command -v "$1" >/dev/null 2>&1; }

if [ "$what" = lint ]; then
  python3 -c 'import hcl2' 2>/dev/null && exit 0
  echo "installing: python-hcl2"
  python3 -m pip install -q 'python-hcl2>=8,<9'
  exit 0
fi

case "$what" in
  runtime) have bwrap || need+=(bubblewrap) ;;
  test)
    have bwrap || need+=(bubblewrap)
    have dockerd || need+=(docker.io)
    [ -x /bin/busybox ] || need+=(busybox-static)
    have git || need+=(git)
    have openssl || need+=(openssl)
    ;;
  web) have chromium || need+=(chromium); have node || need+=(nodejs npm) ;;
  *) echo "deps.sh: unknown target $what" >&2; exit 2 ;;
esac

if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && have apt-get; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || true
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  elif [ "$what" = runtime ]; then
    echo "note: ${need[*]} missing and cannot be installed here; runvoyd will refuse to start (install it, or pass --isolation process on a single-user machine)" >&2
  else
    echo "error: missing ${need[*]}; install them (apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

if [ "$what" = test ] && ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && have dockerd; then
    echo "starting the Docker engine (dockerd --bridge=none --iptables=false; log: /tmp/dockerd.log)"
    (dockerd --bridge=none --iptables=false >/tmp/dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  fi
  docker info >/dev/null 2>&1 || {
    echo "error: the Docker tests need a Docker engine and none answers (see /tmp/dockerd.log)" >&2
    exit 1
  }
fi
