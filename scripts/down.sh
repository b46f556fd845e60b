#!/usr/bin/env bash
# `make down`: stop what `make up` started, gracefully.
#
# SIGTERM first, to everything at once, then wait for each within its deadline before SIGKILL:
# - web (uvicorn): stops accepting, closes WebSockets (code 1012, "service restart": the dashboard
#   reconnects), finishes in-flight requests within --timeout-graceful-shutdown (KB_WEB_GRACE, 10 s).
# - workers: the running job stops at its next batch boundary (the batch in flight is indexed),
#   its row is released and queued again at once. KB_WORKER_STOP_SECONDS (default 60) must cover
#   one batch: KB_EMBED_BATCH chunks embedded on CPU plus one bulk write to the search server.
source "$(dirname "$0")/lib.sh"
WEB_SECONDS=$(( ${KB_WEB_GRACE:-10} + 5 ))
WORKER_SECONDS=${KB_WORKER_STOP_SECONDS:-60}
stop() {  # name seconds
  if running "$VAR/run/$1.pid"; then say "stopping $1"; fi
  stop_pidfile "$VAR/run/$1.pid" TERM "$2"
}
stop web "$WEB_SECONDS" &
for name in worker-1 worker-2; do stop "$name" "$WORKER_SECONDS" & done
stop scheduler 10 &
wait
# The search server last: workers finishing their batch still write to it. Elasticsearch flushes
# and closes its shards on SIGTERM (a second or two).
stop elasticsearch 60
