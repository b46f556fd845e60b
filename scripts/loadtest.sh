#!/usr/bin/env bash
# `make loadtest` / `make soak`: drive the system `make up` started (http://$KB_HOST:$KB_PORT)
# with the dev-only bench app's commands.
#   make loadtest [ARGS="--steps 1,4,16,32,64 --seconds 15"]
#   make soak [MINUTES=30] [ARGS="--rate 20"]
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
mode=${1:-loadtest}; shift || true
URL="http://${KB_HOST:-127.0.0.1}:${KB_PORT:-8000}"
curl -fs -o /dev/null "$URL/health/live" || die "nothing answers at $URL: run \`make up\` first"
if [ "$mode" = soak ]; then
  exec "$PY" manage.py soak --settings=bench.settings --url "$URL" --minutes "${MINUTES:-30}" --run-dir "$VAR/run" "$@"
fi
exec "$PY" manage.py loadtest --settings=bench.settings --url "$URL" "$@"
