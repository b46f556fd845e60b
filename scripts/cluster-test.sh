#!/usr/bin/env bash
# `make cluster-test`: KB Portal on ten hosts of this machine (network namespaces on one bridge,
# bench/hosts.py) while one host or link fails at a time (tests/cluster/). Needs root. Installs what
# is missing (HAProxy, iptables, PostgreSQL, Redis, the Elasticsearch distribution), runs the
# scenarios and prints their counts and its time. Everything it started is gone when it ends; the
# processes' logs of the last run stay in var/log/cluster/. Pass pytest options as ARGS="-k b_".
source "$(dirname "$0")/lib.sh"
is_root || die "the multi-host run needs root: network namespaces, a bridge, iptables"
exec 8>"$VAR/run/cluster-test.lock"
flock -n 8 || die "another multi-host run is under way (its hosts share one bridge)"
extra=(haproxy iptables redis-server)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || extra+=(postgresql)
ensure_packages "${extra[@]}"
ensure_venv
ensure_es_distribution
es_user_prefix  # the system user the Elasticsearch nodes run as
export KB_ES_HOME KB_ES_VERSION KB_ES_USER
KB_ES_JAVA_HOME="$(es_java_home)"
export KB_ES_JAVA_HOME

cd "$ROOT"
say "multi-host run"
started=$SECONDS
status=0
# Without the suite's root conftest (--noconftest), which prepares the single-node test services of
# `make test`: this run uses none of them. Its own fixtures are loaded as a plugin.
"$PY" -m pytest --noconftest -p tests.cluster.conftest -m cluster -s tests/cluster "$@" || status=$?
say "multi-host run: $((SECONDS - started)) s"
case $status in
  0) ;;
  5) echo "error: pytest ran no multi-host test (exit 5)" >&2 ;;
  *) echo "error: the multi-host run failed (exit $status); logs in var/log/cluster/" >&2 ;;
esac
exit "$status"
