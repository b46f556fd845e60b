"""deploy/ agrees with the code: settings that exist and are documented, the commands `make up` runs
(scripts/up.sh), the queues the settings define, and health paths the URL map serves."""

import re

import pytest
from django.conf import settings
from django.urls import resolve

from kbportal import health
from tests.deploy.files import (
    DEPLOY,
    KB_NAME,
    app_services,
    compose,
    containers,
    deploy_files,
    documented_names,
    k8s_kind,
    manage_py_commands,
    pod_specs,
    settings_names,
    up_sh_commands,
    uvicorn_options,
)

WORKER_CLASS_OPTIONS = ["--worker-class", "kbportal.worker.Worker", "--with-scheduler"]


def _compose_commands() -> dict[str, list[str]]:
    return {name: service["command"] for name, service in app_services().items()}


def _k8s_commands() -> dict[str, list[str]]:
    return {f"{owner}/{container['name']}": container["command"]
            for owner, spec in pod_specs().items() for container in containers(spec)}


def _all_commands() -> dict[str, list[str]]:
    return {**{f"compose {k}": v for k, v in _compose_commands().items()},
            **{f"k8s {k}": v for k, v in _k8s_commands().items()}}


@pytest.mark.parametrize("path", deploy_files(), ids=lambda path: str(path.relative_to(DEPLOY)))
def test_every_kb_variable_is_a_documented_setting(path):
    used = set(KB_NAME.findall(path.read_text()))
    assert not used - settings_names(), "not read by kbportal/settings.py"
    assert not used - documented_names(), "not in docs/operations.md"


def test_the_deployments_set_the_production_settings():
    for env in (compose()["x-kb-env"], k8s_kind("ConfigMap")["kbportal-settings"]["data"]):
        assert env["KB_DEBUG"] == "0"
        assert env["KB_SECURE_SSL"] in ("1", "${KB_SECURE_SSL:-1}")
        assert env["KB_ALLOWED_HOSTS"].startswith("localhost,"), "the probes' Host header"
    secrets = set().union(*(secret["stringData"] for secret in k8s_kind("Secret").values()))
    assert {"KB_SECRET_KEY", "KB_DATABASE_URL", "KB_REDIS_URL", "KB_S3_SECRET_KEY", "KB_METRICS_TOKEN"} <= secrets
    assert not secrets & set(k8s_kind("ConfigMap")["kbportal-settings"]["data"])


def test_worker_pools_share_out_the_queues_make_up_runs():
    up = up_sh_commands()["rqworker"]
    up_queues = up[1 : up.index("--worker-class")]
    assert up[up.index("--worker-class") :] == WORKER_CLASS_OPTIONS
    assert set(up_queues) == {*settings.KB_INGESTION_QUEUES, "answers"} == set(settings.RQ_QUEUES)
    for platform, commands in (("compose", _compose_commands()), ("k8s", _k8s_commands())):
        pools = []
        for name, command in commands.items():
            for args in manage_py_commands(command):
                if args[0] == "rqworker":
                    assert args[args.index("--worker-class") :] == WORKER_CLASS_OPTIONS, name
                    queues = args[1 : args.index("--worker-class")]
                    assert queues == [queue for queue in up_queues if queue in queues], f"{name}: up.sh's order"
                    pools.append(queues)
        assert sorted(queue for pool in pools for queue in pool) == sorted(up_queues), platform
        assert len(pools) == 2, platform


def test_scheduler_and_migrations_run_as_make_up_runs_them():
    up = up_sh_commands()
    runs = [args for command in _all_commands().values() for args in manage_py_commands(command)]
    schedulers = [args for args in runs if args[0] == "scheduler"]
    assert schedulers == [up["scheduler"]] * 2, "one in compose, one in k8s"
    up_migrate = [arg for arg in up["migrate"] if arg not in ("-v", "0")]
    assert [args for args in runs if args[:2] == ["migrate", "--noinput"]] == [up_migrate] * 2
    assert [args for args in runs if args[0] == "search_index"] == [up["search_index"]] * 2
    assert {args[0] for args in runs} == {"rqworker", "scheduler", "migrate", "search_index"}


def test_web_runs_uvicorn_as_make_up_does():
    up = up_sh_commands()["uvicorn"]
    up_options = {name: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value) if value else value
                  for name, value in uvicorn_options(up).items()}
    webs = [command for command in _all_commands().values() if command[0] == "uvicorn"]
    assert len(webs) == 2
    for command in webs:
        assert command[1] == up[0] == "kbportal.asgi:application"
        options = uvicorn_options(command)
        assert set(options) >= set(up_options)
        for name in ("--workers", "--no-access-log", "--timeout-graceful-shutdown", "--ws-per-message-deflate"):
            assert options[name] == up_options[name], name


def _probe_paths() -> dict[str, str]:
    paths = {}
    for name, service in compose()["services"].items():
        test = " ".join(service.get("healthcheck", {}).get("test", []))
        if service.get("image") == "kbportal:latest" and "http://" in test:
            paths[f"compose {name}"] = re.search(r"http://[^/]+(/[^'\" ]*)", test)[1]
    for owner, spec in pod_specs().items():
        for container in spec["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in container:
                    paths[f"{owner} {probe}"] = container[probe]["httpGet"]["path"]
    return paths


def test_probes_ask_health_endpoints_of_the_url_map():
    paths = _probe_paths()
    assert {"compose web", "kbportal-web livenessProbe", "kbportal-web readinessProbe"} <= set(paths)
    for probe, path in paths.items():
        assert resolve(path).func in (health.live, health.ready), probe


def test_readiness_does_not_depend_on_the_search_server():
    """Readiness routes traffic. /health/ready is 503 on every pod at once while search is failing, so
    as a readiness probe it would empty the Service, and no search could then end the failing period
    (docs/operations.md, "When search is failing")."""
    for owner, spec in pod_specs().items():
        for container in spec["containers"]:
            if "readinessProbe" in container:
                assert resolve(container["readinessProbe"]["httpGet"]["path"]).func is health.live, owner


def test_probes_send_a_host_the_settings_allow():
    allowed = k8s_kind("ConfigMap")["kbportal-settings"]["data"]["KB_ALLOWED_HOSTS"].split(",")
    for owner, spec in pod_specs().items():
        for container in spec["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in container:
                    headers = {h["name"]: h["value"] for h in container[probe]["httpGet"]["httpHeaders"]}
                    assert headers["Host"] in allowed, (owner, probe)
    test = " ".join(compose()["services"]["web"]["healthcheck"]["test"])
    assert re.search(r"'Host': '([^']+)'", test)[1] in compose()["x-kb-env"]["KB_ALLOWED_HOSTS"].split(",")
