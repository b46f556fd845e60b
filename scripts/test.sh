#!/usr/bin/env bash
# `make test`: installs what is missing, prepares its own database, Elasticsearch node (port 9201,
# fresh data each run) and Redis database, then runs ruff and pytest. The S3 server is started by
# the test suite itself (tests/conftest.py); tests that stop a search server start their own
# Elasticsearch nodes from KB_ES_HOME (tests/support.py: ElasticsearchNode).
source "$(dirname "$0")/lib.sh"
# The dashboard's browser test drives Debian's chromium through Playwright.
ensure_packages chromium
ensure_venv
ensure_postgres
ensure_redis
export KB_DATABASE_URL="${KB_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/kbportal_tests}"
export KB_REDIS_URL="${KB_TEST_REDIS_URL:-redis://127.0.0.1:6379/13}"
export KB_ES_URL="${KB_TEST_ES_URL:-http://127.0.0.1:9201}"
export KB_ES_INDEX="test_kb_chunks"
export KB_EMBEDDER="hashing"
export KB_VAR_DIR="$VAR/test"
export KB_CACHE_PREFIX="kbtest"
unset KB_S3_ENDPOINT
mkdir -p "$KB_VAR_DIR"

ES_PIDFILE="$VAR/run/test-elasticsearch.pid"
stop_pidfile "$ES_PIDFILE" TERM 30
rm -rf "$VAR/test/elasticsearch"
trap 'stop_pidfile "$ES_PIDFILE" TERM 30' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ensure_es_distribution  # the tests start nodes of their own even when KB_TEST_ES_URL is someone else's
ensure_elasticsearch "$KB_ES_URL" "$VAR/test/elasticsearch" "$ES_PIDFILE"
# For tests/support.py's ElasticsearchNode: the distribution, its JDK and the user it runs as.
export KB_ES_HOME KB_ES_VERSION KB_ES_USER
KB_ES_JAVA_HOME="$(es_java_home)"
export KB_ES_JAVA_HOME

cd "$ROOT"
say "ruff"
"$VENV/bin/ruff" check .
say "pytest"
status=0
"$VENV/bin/pytest" -m "not cluster" "$@" || status=$?  # `make cluster-test` runs the cluster ones
case $status in
  0) ;;
  5) echo "error: pytest collected no tests (exit 5): that is a failure too" >&2 ;;
  *) echo "error: pytest failed (exit $status)" >&2 ;;
esac
exit "$status"
