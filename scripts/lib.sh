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

is_root() { [ "$(id -u)" = 0 ]; }

# --- Debian packages ---------------------------------------------------------------------------

# Install, in ONE apt-get call (one `apt-get update`), every Debian package this machine is missing:
# PostgreSQL and Redis (unless something already answers on their ports), Maven, unzip and curl
# (to fetch Elasticsearch), a Java runtime, Python's venv, Tesseract OCR with its English and Simplified
# Chinese data (the languages KB_OCR_LANGS may name), and any EXTRA commands named, each from the
# Debian package of the same name (test.sh: chromium).
ensure_packages() {  # [extra-package...]
  local missing=() pkg langs=""
  if ! port_open 127.0.0.1 5432; then
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
  fi
  command -v psql >/dev/null || missing+=(postgresql-client)
  if ! port_open 127.0.0.1 6379; then command -v redis-server >/dev/null || missing+=(redis-server); fi
  command -v curl >/dev/null || missing+=(curl ca-certificates)
  command -v unzip >/dev/null || missing+=(unzip)
  command -v mvn >/dev/null || missing+=(maven)
  [ -x "$(es_java_home)/bin/java" ] || missing+=(openjdk-17-jre-headless)
  if [ ! -x "$PY" ]; then  # ensure_venv: python3 -m venv needs ensurepip
    command -v python3 >/dev/null || missing+=(python3)
    python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  fi
  command -v tesseract >/dev/null && langs=$(tesseract --list-langs 2>/dev/null || true)
  if ! grep -qx eng <<<"$langs" || ! grep -qx chi_sim <<<"$langs"; then
    missing+=(tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim)
  fi
  for pkg in "$@"; do command -v "$pkg" >/dev/null || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  is_root || die "missing Debian packages: ${missing[*]}. Install them (sudo apt-get install ${missing[*]}) or run as root."
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}" \
    || die "apt-get could not install: ${missing[*]}"
}

# --- PostgreSQL and Redis ----------------------------------------------------------------------

postgres_answers() { psql -h 127.0.0.1 -U postgres -w -tAc 'SELECT 1' postgres >/dev/null 2>&1; }

# The project's default URL, postgres://postgres@127.0.0.1:5432/<db>, carries no password. On a local
# Debian cluster we let exactly that in: a `host all postgres 127.0.0.1/32 trust` line placed first in
# pg_hba.conf (only the postgres role, only from loopback; every other rule stays as Debian wrote it).
# Chosen over a password kept in ~/.pgpass, which only the user who wrote it would have. The cost:
# every local user may connect as postgres over loopback; fine on a development or CI machine, not on
# a shared one.
ensure_postgres() {
  if port_open 127.0.0.1 5432 && postgres_answers; then return 0; fi
  if ! command -v pg_lsclusters >/dev/null && port_open 127.0.0.1 5432; then
    die "the PostgreSQL on 127.0.0.1:5432 refuses role postgres without a password, and it is no local Debian cluster this script can configure"
  fi
  compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || ensure_packages
  local ver name status hba
  read -r ver name _ status _ < <(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432' | head -1) || true
  if [ -z "${ver:-}" ]; then
    is_root || die "no PostgreSQL cluster on port 5432; create one: pg_createcluster --start \$(ls /usr/lib/postgresql | sort -V | tail -1) main"
    ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
    name=main
    [ -e "/etc/postgresql/$ver/main" ] && name=kbportal  # main exists, on another port
    say "creating PostgreSQL $ver cluster $name"
    pg_createcluster -p 5432 "$ver" "$name" >/dev/null
    status=down
  fi
  hba="/etc/postgresql/$ver/$name/pg_hba.conf"
  if is_root && [ -f "$hba" ] && ! grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+postgres[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    say "PostgreSQL: trusting role postgres from 127.0.0.1 ($hba)"
    sed -i '1i # Added by KB Portal (scripts/lib.sh): the project URL postgres://postgres@127.0.0.1:5432/ has no password.\nhost    all    postgres    127.0.0.1/32    trust' "$hba"
    if [[ "$status" == online* ]]; then pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload; fi
  fi
  if [[ "$status" != online* ]]; then
    say "starting PostgreSQL $ver/$name"
    pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start \
      || die "PostgreSQL $ver/$name did not start (see /var/log/postgresql/postgresql-$ver-$name.log)"
  fi
  local i
  for ((i = 0; i < 100; i++)); do postgres_answers && return 0; sleep 0.1; done
  port_open 127.0.0.1 5432 || die "PostgreSQL is not answering on 127.0.0.1:5432 (see /var/log/postgresql/postgresql-$ver-$name.log)"
  die "PostgreSQL on 127.0.0.1:5432 refuses role postgres without a password: add 'host all postgres 127.0.0.1/32 trust' first in $hba and reload"
}

ensure_redis() {
  if port_open 127.0.0.1 6379; then return 0; fi
  command -v redis-server >/dev/null || ensure_packages
  say "starting redis-server on 127.0.0.1:6379 (no persistence)"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --logfile "$VAR/log/redis.log" >/dev/null
  local i
  for ((i = 0; i < 50; i++)); do port_open 127.0.0.1 6379 && return 0; sleep 0.1; done
  die "Redis is not answering on 127.0.0.1:6379 (see var/log/redis.log)"
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

# --- Elasticsearch -------------------------------------------------------------------------------
#
# Elastic's minimal distribution (integ-test-zip) from Maven Central: the real server, with the
# modules transport-netty4, x-pack-core, x-pack-security and apm only (no `GET /`, no
# _delete_by_query, no language analyzers). It has no JDK inside (ES_JAVA_HOME), and it refuses to
# run as root: as root we run it as the system user KB_ES_USER (kbsearch), which must be able to
# read its home, so the cache is not under /root (mode 700).
KB_ES_VERSION="${KB_ES_VERSION:-8.19.21}"
if is_root; then KB_CACHE_DIR="${KB_CACHE_DIR:-/var/cache/kbportal}"; else KB_CACHE_DIR="${KB_CACHE_DIR:-$HOME/.cache/kbportal}"; fi
KB_ES_HOME="${KB_ES_HOME:-$KB_CACHE_DIR/elasticsearch-$KB_ES_VERSION}"
KB_ES_USER="${KB_ES_USER:-kbsearch}"
KB_ES_HEAP="${KB_ES_HEAP:-1g}"

es_java_home() {  # a JDK 17 (Elasticsearch 8 runs on 17+); KB_ES_JAVA_HOME overrides
  if [ -n "${KB_ES_JAVA_HOME:-}" ]; then echo "$KB_ES_JAVA_HOME"; return; fi
  if [ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]; then echo /usr/lib/jvm/java-17-openjdk-amd64; return; fi
  local java
  java=$(readlink -f "$(command -v java 2>/dev/null)" 2>/dev/null) || true
  if [ -n "$java" ]; then dirname "$(dirname "$java")"; else echo /usr/lib/jvm/java-17-openjdk-amd64; fi
}

# Run a command as KB_ES_USER when we are root (creating the system user once), as ourselves otherwise.
# setpriv execs (runuser stays as a parent that SIGKILLs the server 2 s after a SIGTERM).
es_user_prefix() {
  ES_AS_USER=()
  is_root || return 0
  id -u "$KB_ES_USER" >/dev/null 2>&1 \
    || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$KB_ES_USER" \
    || die "could not create the system user $KB_ES_USER"
  ES_AS_USER=(setpriv "--reuid=$KB_ES_USER" "--regid=$KB_ES_USER" --init-groups --)
}

es_chown() {  # path...: owned by the user the server runs as
  if is_root; then chown -R "$KB_ES_USER:$KB_ES_USER" "$@"; fi
}

# Download and unpack the distribution into KB_ES_HOME once (Maven's local repository keeps the zip).
ensure_es_distribution() {
  [ -x "$KB_ES_HOME/bin/elasticsearch" ] && return 0
  { command -v mvn && command -v unzip; } >/dev/null || ensure_packages
  es_user_prefix
  mkdir -p "$KB_CACHE_DIR"
  chmod 755 "$KB_CACHE_DIR"
  (
    flock 9  # `make up` and `make test` at once: one download
    [ -x "$KB_ES_HOME/bin/elasticsearch" ] && exit 0
    local tmp started=$SECONDS
    tmp=$(mktemp -d "$KB_CACHE_DIR/.es-download.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    say "fetching Elasticsearch $KB_ES_VERSION (minimal distribution) from Maven Central"
    mvn -q -B -Dstyle.color=never dependency:copy \
      "-Dartifact=org.elasticsearch.distribution.integ-test-zip:elasticsearch:$KB_ES_VERSION:zip" \
      "-DoutputDirectory=$tmp" || die "could not fetch Elasticsearch $KB_ES_VERSION with Maven"
    unzip -q "$tmp/elasticsearch-$KB_ES_VERSION.zip" -d "$tmp" || die "could not unpack $tmp/elasticsearch-$KB_ES_VERSION.zip"
    # The server writes its keystore into config/ on its first start.
    es_chown "$tmp/elasticsearch-$KB_ES_VERSION"
    mv "$tmp/elasticsearch-$KB_ES_VERSION" "$KB_ES_HOME"
    say "Elasticsearch $KB_ES_VERSION in $KB_ES_HOME ($((SECONDS - started)) s)"
  ) 9>"$KB_CACHE_DIR/.elasticsearch.lock"
  [ -x "$KB_ES_HOME/bin/elasticsearch" ] || die "no Elasticsearch in $KB_ES_HOME"
}

es_healthy() {  # url: the cluster answers and is at least yellow
  curl -fs -o /dev/null --max-time 5 "$1/_cluster/health?wait_for_status=yellow&timeout=1s"
}

# Start a single-node Elasticsearch on the URL's port, data and logs under DIR, unless something
# already answers there. Console log: var/log/elasticsearch-<port>.log. Waits for yellow health.
ensure_elasticsearch() {  # url datadir pidfile
  local url=${1%/} dir=$2 pidfile=$3 host port
  if curl -fs -o /dev/null --max-time 5 "$url/_cluster/health"; then return 0; fi
  host=$(echo "$url" | sed -E 's#^[a-z]+://([^/:]+).*#\1#')
  port=$(echo "$url" | sed -E 's#^[a-z]+://[^/]+:([0-9]+).*#\1#')
  [[ "$port" =~ ^[0-9]+$ ]] || port=9200
  case "$host" in
    127.0.0.1|localhost) ;;
    *)
      # A cluster of the user's: any HTTP answer (401 without KB_ES_API_KEY, say) means it is there;
      # the application authenticates with KB_ES_API_KEY and /health/ready says whether it can.
      [ "$(curl -ks -o /dev/null -w '%{http_code}' --max-time 5 "$url/_cluster/health")" != 000 ] && return 0
      die "no Elasticsearch answers at $url (only a loopback one is started here)" ;;
  esac
  local log="$VAR/log/elasticsearch-$port.log"
  if ! running "$pidfile"; then
    ensure_es_distribution
    es_user_prefix
    local java_home transport=$((port + 100))
    java_home=$(es_java_home)
    [ -x "$java_home/bin/java" ] || ensure_packages
    port_open 127.0.0.1 "$port" && die "port $port is taken by something that is not Elasticsearch ($url/_cluster/health does not answer)"
    port_open 127.0.0.1 "$transport" && die "transport port $transport (http port + 100) is taken"
    say "no Elasticsearch at $url: starting Elasticsearch $KB_ES_VERSION on port $port (data in ${dir#"$ROOT"/}, log ${log#"$ROOT"/})"
    mkdir -p "$dir/data" "$dir/logs"
    es_chown "$dir"
    if [ ${#ES_AS_USER[@]} -gt 0 ]; then
      "${ES_AS_USER[@]}" test -x "$KB_ES_HOME/bin/elasticsearch" \
        || die "user $KB_ES_USER cannot run $KB_ES_HOME/bin/elasticsearch: set KB_CACHE_DIR to a directory every user can traverse (not under /root)"
      "${ES_AS_USER[@]}" test -w "$dir/data" \
        || die "user $KB_ES_USER cannot write $dir/data: a parent directory is closed to other users (is the project under /root, mode 700?)"
    fi
    # setsid (its own session: a Ctrl-C in this terminal does not reach it) and setpriv exec
    # bin/elasticsearch, which execs the launcher JVM: $! is the launcher. It runs the server JVM and
    # stops it gracefully on SIGTERM; the server also exits when the launcher dies.
    # No disk watermarks: a nearly full disk must not turn the indices read-only under the tests.
    env -u JAVA_HOME -u JAVA_OPTS -u _JAVA_OPTIONS -u ES_PATH_CONF \
      ES_JAVA_HOME="$java_home" ES_JAVA_OPTS="-Xms$KB_ES_HEAP -Xmx$KB_ES_HEAP ${KB_ES_JAVA_OPTS:-}" \
      nohup setsid "${ES_AS_USER[@]}" "$KB_ES_HOME/bin/elasticsearch" \
        -E node.name="kb-$port" -E cluster.name="kbportal-$port" \
        -E discovery.type=single-node -E network.host=127.0.0.1 \
        -E http.port="$port" -E transport.port="$transport" \
        -E path.data="$dir/data" -E path.logs="$dir/logs" \
        -E xpack.security.enabled=false -E xpack.ml.enabled=false \
        -E cluster.routing.allocation.disk.threshold_enabled=false \
        < /dev/null > "$log" 2>&1 &
    echo $! > "$pidfile"
  else
    say "Elasticsearch (pid $(cat "$pidfile")) is starting: waiting for $url"
  fi
  local deadline=$((SECONDS + ${KB_ES_START_SECONDS:-90}))
  while ((SECONDS < deadline)); do
    es_healthy "$url" && return 0
    if ! running "$pidfile"; then
      tail -n 40 "$log" >&2
      rm -f "$pidfile"
      die "Elasticsearch exited before it answered at $url (log above; all of it in ${log#"$ROOT"/})"
    fi
    sleep 0.5
  done
  tail -n 40 "$log" >&2
  stop_pidfile "$pidfile" TERM 30
  die "Elasticsearch did not reach yellow health at $url within ${KB_ES_START_SECONDS:-90}s (log above; all of it in ${log#"$ROOT"/})"
}

# Signal the process, wait up to SECONDS for it to exit, then SIGKILL it (and its children).
stop_pidfile() {  # pidfile [signal] [seconds]
  local pidfile=$1 sig=${2:-TERM} seconds=${3:-10} pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((seconds * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "warning: $(basename "$pidfile" .pid) did not stop within ${seconds}s: killed" >&2
      pkill -KILL -P "$pid" 2>/dev/null || true  # its children (Elasticsearch's server JVM, uvicorn's workers)
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

running() {  # pidfile
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}
