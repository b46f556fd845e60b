#!/usr/bin/env bash
# `make test`: prepares its own database, search server port and Redis database, then runs
# pytest and ruff. The S3 server is started by the test suite itself (tests/conftest.py).
source "$(dirname "$0")/lib.sh"
ensure_venv
ensure_postgres
ensure_redis
# The dashboard's browser test drives Debian's chromium through Playwright.
command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
export KB_DATABASE_URL="${KB_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/kbportal_tests}"
export KB_REDIS_URL="${KB_TEST_REDIS_URL:-redis://127.0.0.1:6379/13}"
export KB_ES_URL="${KB_TEST_ES_URL:-http://127.0.0.1:9201}"
export KB_ES_INDEX="test_kb_chunks"
export KB_EMBEDDER="hashing"
export KB_VAR_DIR="$VAR/test"
export KB_CACHE_PREFIX="kbtest"
unset KB_S3_ENDPOINT
mkdir -p "$KB_VAR_DIR"
rm -rf "$VAR/test/noida"
stop_pidfile "$VAR/run/test-noida.pid"
ensure_search_server "$KB_ES_URL" "${KB_ES_URL##*:}" "$VAR/test/noida" "$VAR/run/test-noida.pid"
trap 'stop_pidfile "$VAR/run/test-noida.pid"' EXIT
cd "$ROOT"
say "ruff"
"$VENV/bin/ruff" check .
say "pytest"
"$VENV/bin/pytest" "$@"
