#!/usr/bin/env bash
# Runs the browser end-to-end test: installs playwright-core if needed, then the test in headless Chromium.
# Needs REDIS_URL (e.g. redis://127.0.0.1:6379/0), Go, Node.js 20+, redis-cli and /usr/bin/chromium (Debian's chromium).
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${REDIS_URL:-}" ]; then
  echo "REDIS_URL is not set: the browser test needs a Redis, e.g. REDIS_URL=redis://127.0.0.1:6379/0" >&2
  exit 2
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "/usr/bin/chromium is missing: install Debian's chromium package (apt-get install -y chromium)" >&2
  exit 2
fi
if ! command -v redis-cli >/dev/null; then
  echo "redis-cli is missing: install Debian's redis-tools package" >&2
  exit 2
fi
if [ ! -d node_modules/playwright-core ]; then
  npm ci --no-audit --no-fund
fi
exec node --test --test-concurrency=1 chat.test.js
