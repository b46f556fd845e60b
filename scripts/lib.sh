# Shared shell helpers for `make up`, `make test` and `make down`. Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
VAR="$ROOT/var"
mkdir -p "$VAR/log" "$VAR/run"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ensure_venv() {
  local stamp="$VENV/.requirements.sha"
  local want
  want=$(cat "$ROOT"/requirements/*.txt | sha256sum | cut -d' ' -f1)
  if [ ! -x "$PY" ]; then
    say "creating .venv (Python 3.11)"
    (command -v python3.11 >/dev/null && python3.11 -m venv "$VENV") || python3 -m venv "$VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing pinned requirements (first run takes a few minutes)"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements/dev.txt"
    echo "$want" > "$stamp"
  fi
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

ensure_postgres() {
  if ! port_open 127.0.0.1 5432; then
    command -v pg_ctlcluster >/dev/null && pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start 2>/dev/null || true
    sleep 1
  fi
  port_open 127.0.0.1 5432 || die "PostgreSQL is not answering on 127.0.0.1:5432. Start it, e.g.: pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start"
}

ensure_redis() {
  if ! port_open 127.0.0.1 6379; then
    command -v redis-server >/dev/null && redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null 2>&1 || true
    sleep 1
  fi
  port_open 127.0.0.1 6379 || die "Redis is not answering on 127.0.0.1:6379. Start it, e.g.: redis-server --daemonize yes --port 6379"
}

ensure_database() {  # name
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$1'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE \"$1\"" >/dev/null
}

wait_http() {  # url seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  return 1
}

# Start the Elasticsearch-API server (noida-db) on PORT with data under DIR unless something answers.
ensure_search_server() {  # url port datadir pidfile
  local url=$1 port=$2 dir=$3 pidfile=$4
  if curl -fs -o /dev/null "$url"; then return 0; fi
  say "no search server at $url: starting noida-db (Elasticsearch 8 API) on port $port"
  mkdir -p "$dir"
  # Run the server binary itself, not the package's Python wrapper: the wrapper does not pass
  # SIGTERM on, so stopping it would leave the server running.
  local binary
  binary=$("$PY" -c "from importlib.resources import files; print(files('noida_db').joinpath('noida-db'))")
  chmod +x "$binary"
  nohup "$binary" start --only elasticsearch --elasticsearch-port "$port" --data-dir "$dir" \
    > "$VAR/log/noida-$port.log" 2>&1 &
  echo $! > "$pidfile"
  wait_http "$url" 30 || die "the search server did not come up on $url (see var/log/noida-$port.log)"
}

# Signal the process, wait up to SECONDS for it to exit, then SIGKILL it.
stop_pidfile() {  # pidfile [signal] [seconds]
  local pidfile=$1 sig=${2:-TERM} seconds=${3:-10} pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((seconds * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "warning: $(basename "$pidfile" .pid) did not stop within ${seconds}s: killed" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

running() {  # pidfile
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}
