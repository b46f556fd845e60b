#!/usr/bin/env bash
# `make up`: everything on this machine, from a fresh clone. Safe to run again: it starts
# nothing twice. `make down` stops what it started.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_packages
ensure_venv
ensure_postgres
ensure_redis

export KB_ES_URL="${KB_ES_URL:-http://127.0.0.1:9200}"
# Production settings on plain HTTP (this machine): debug off (Django's per-query debug logging
# cost a cached search about a quarter of its time), a secret key made once and kept in var/.
export KB_DEBUG="${KB_DEBUG:-0}"
export KB_SECURE_SSL="${KB_SECURE_SSL:-0}"
mkdir -p "$VAR"
[ -s "$VAR/secret-key" ] || (umask 077 && "$PY" -c "import secrets; print(secrets.token_urlsafe(50))" > "$VAR/secret-key")
export KB_SECRET_KEY="${KB_SECRET_KEY:-$(cat "$VAR/secret-key")}"
HOST="${KB_HOST:-127.0.0.1}"
PORT="${KB_PORT:-8000}"
SERVER="${KB_SERVER:-uvicorn}"
RUN="$VAR/run"
LOG="$VAR/log"

# A node of our own (var/elasticsearch, var/run/elasticsearch.pid) unless one answers at KB_ES_URL.
ensure_elasticsearch "$KB_ES_URL" "$VAR/elasticsearch" "$RUN/elasticsearch.pid"

db_name=$(echo "${KB_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/kbportal}" | sed -E 's#.*/([^/?]+).*#\1#')
ensure_database "$db_name"
say "migrating database $db_name"
"$PY" manage.py migrate --noinput -v 0
"$PY" manage.py search_index --create
"$PY" manage.py sweep_orphans
"$PY" manage.py ensure_admin --password-file "$VAR/admin-password"

start() {  # name command...
  local name=$1; shift
  if running "$RUN/$name.pid"; then return 0; fi
  nohup "$@" >> "$LOG/$name.log" 2>&1 &
  echo $! > "$RUN/$name.pid"
  say "started $name (pid $!, log var/log/$name.log)"
}

if [ "$SERVER" = "daphne" ]; then
  start web "$VENV/bin/daphne" -b "$HOST" -p "$PORT" kbportal.asgi:application
else
  # No permessage-deflate: our WebSocket messages are small JSON; compressing each one took a fifth of
  # the server's CPU per delivered message, and ~100 KB per socket (manage.py bench_ws, 1,000 sockets).
  start web "$VENV/bin/uvicorn" kbportal.asgi:application --host "$HOST" --port "$PORT" --workers 2 --no-access-log --timeout-graceful-shutdown "${KB_WEB_GRACE:-10}" --ws-per-message-deflate false
fi
for n in 1 2; do
  KB_TORCH_THREADS="${KB_TORCH_THREADS:-1}" start "worker-$n" "$PY" manage.py rqworker high default ocr low answers --worker-class kbportal.worker.Worker --with-scheduler
done
start scheduler "$PY" manage.py scheduler ingestion/cron.py

wait_http "http://$HOST:$PORT/health/live" 60 || die "the web server did not start (see var/log/web.log)"
wait_http "http://$HOST:$PORT/health/ready" 30 || echo "warning: /health/ready is not all green yet: curl http://$HOST:$PORT/health/ready"
"$PY" manage.py load_demo

cat <<MSG

KB Portal is up.
  Dashboard     http://$HOST:$PORT/dashboard/
  Admin         http://$HOST:$PORT/admin/            login: admin / $(cat "$VAR/admin-password")
  API docs      http://$HOST:$PORT/api/docs/
  Demo API key  $(cat "$VAR/demo-api-key")   (var/demo-api-key)
  Search        curl -H "Authorization: Bearer \$(cat var/demo-api-key)" 'http://$HOST:$PORT/api/v1/search?kb=demo&q=information+retrieval'
  Health        http://$HOST:$PORT/health/ready
  Jobs          .venv/bin/python manage.py jobs --kb demo
  Search server $KB_ES_URL    Logs: var/log/    Stop: make down
MSG
