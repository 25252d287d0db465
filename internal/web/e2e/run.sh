#!/usr/bin/env bash
# Runs the web app's end-to-end tests in headless Chromium against a real runvoyd.
#   RUNVOYD_BIN   path to runvoyd (default: target/debug/runvoyd at the repository root)
#   CHROMIUM_BIN  path to Chromium (default: /usr/bin/chromium)
# Screenshots are written to artifacts/web/ at the repository root.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/fast-check ]; then
  npm ci --no-audit --no-fund
fi
exec node --test --test-concurrency=1 --test-reporter=spec "$@" ansi.test.mjs ansi.property.test.mjs web.test.mjs
