#!/usr/bin/env bash
# `make down`: stop what `make up` started (SIGTERM first: workers release their jobs).
source "$(dirname "$0")/lib.sh"
for name in web worker-1 worker-2 scheduler noida; do
  if running "$VAR/run/$name.pid"; then
    say "stopping $name"
  fi
  stop_pidfile "$VAR/run/$name.pid"
done
