"""deploy/compose.yaml, deploy/nginx.conf and deploy/Dockerfile: valid against the Compose specification
(check-jsonschema's bundled compose-spec schema, offline) and wired the way KB Portal runs."""

import json
import re
import subprocess
import sys

from django.conf import settings

from tests.deploy.files import DEPLOY, app_services, compose, es_version, nginx_config, nginx_find, uvicorn_options

ELASTICSEARCH_NODES = ("es01", "es02", "es03")


def test_compose_file_is_valid_against_the_compose_specification():
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(DEPLOY / "compose.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_every_process_of_kb_portal_and_its_services():
    services = compose()["services"]
    assert set(services) == {
        "nginx", "web", "worker-main", "worker-batch", "scheduler", "migrate",
        "postgres", "redis", *ELASTICSEARCH_NODES, "minio",
    }
    assert services["web"]["deploy"]["replicas"] >= 2
    assert services["scheduler"]["deploy"]["replicas"] == 1
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    assert services["minio"]["image"].startswith("minio/minio:RELEASE.")
    nginx = re.fullmatch(r"nginx:1\.(\d+)(\.\d+)?", services["nginx"]["image"])
    assert nginx and int(nginx[1]) >= 28, "nginx.conf's upstream `resolve` needs 1.27.3 or later"


def test_every_kb_portal_process_waits_for_migrate_and_shares_the_settings():
    shared = compose()["x-kb-env"]
    services = app_services()
    assert set(services) == {"web", "worker-main", "worker-batch", "scheduler", "migrate"}
    for name, service in services.items():
        assert service["environment"].items() >= shared.items(), name
        if name != "migrate":
            assert service["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}, name
    migrate_waits_for = services["migrate"]["depends_on"]
    assert set(migrate_waits_for) == {"postgres", "redis", "minio", *ELASTICSEARCH_NODES}
    assert {entry["condition"] for entry in migrate_waits_for.values()} == {"service_healthy"}
    assert services["migrate"]["restart"] == "no"


def test_elasticsearch_is_a_three_node_cluster_of_the_version_the_scripts_run():
    services = compose()["services"]
    for name in ELASTICSEARCH_NODES:
        node = services[name]
        env = node["environment"]
        assert node["image"] == f"docker.elastic.co/elasticsearch/elasticsearch:{es_version()}"
        assert env["node.name"] == name
        assert set(env["discovery.seed_hosts"].split(",")) == set(ELASTICSEARCH_NODES)
        assert set(env["cluster.initial_master_nodes"].split(",")) == set(ELASTICSEARCH_NODES)
        assert env["xpack.security.enabled"] == "false"
        heap = re.fullmatch(r"-Xms(\w+) -Xmx(\w+)", env["ES_JAVA_OPTS"])
        assert heap and heap[1] == heap[2], "a fixed heap: -Xms equal to -Xmx"
        assert "elasticsearch" in node["networks"]["default"]["aliases"]
        assert "ports" not in node, "the nodes run without security: never publish them"
    assert compose()["x-kb-env"]["KB_ES_URL"] == "http://elasticsearch:9200"


def test_every_compose_variable_is_in_the_env_example():
    text = (DEPLOY / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)[:?}-]", text))
    example = {line.split("=", 1)[0] for line in (DEPLOY / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used == example


def test_healthchecks_use_the_liveness_endpoint():
    services = compose()["services"]
    assert "/health/live" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["nginx"]["depends_on"] == {"web": {"condition": "service_healthy"}}
    for name in ("postgres", "redis", "minio", *ELASTICSEARCH_NODES):
        assert services[name]["healthcheck"]["test"], name


def test_nginx_proxies_http_and_websockets_to_the_web_replicas():
    services = compose()["services"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    http = nginx_find(nginx_config(), "http")
    (upstream,) = nginx_find(http[0][2], "upstream")
    (server,) = [args for name, args, _ in upstream[2] if name == "server"]
    web_port = uvicorn_options(services["web"]["command"])["--port"]
    assert server[0] == f"web:{web_port}"
    assert "resolve" in server and any(arg.startswith("max_fails=") for arg in server)

    locations = {args[-1]: children for _, args, children in nginx_find(http[0][2], "server", "location")}
    websocket = {(name, *args) for name, args, _ in locations["/ws/"]}
    assert ("proxy_pass", f"http://{upstream[1][0]}") in websocket
    assert ("proxy_http_version", "1.1") in websocket
    assert ("proxy_set_header", "Upgrade", "$http_upgrade") in websocket
    assert ("proxy_set_header", "Connection", "$connection_upgrade") in websocket
    # proxy_set_header in a location replaces every one inherited: each proxied location sets them all.
    for path, children in locations.items():
        if "proxy_pass" in {name for name, _, _ in children}:
            headers = {args[0] for name, args, _ in children if name == "proxy_set_header"}
            assert headers >= {"Host", "X-Forwarded-For", "X-Forwarded-Proto"}, path
    assert ("return", "403") in {(name, *args) for name, args, _ in locations["/metrics"]}


def test_nginx_accepts_the_largest_request_the_application_accepts():
    (size,) = [args[0] for name, args, _ in nginx_find(nginx_config(), "http", "server", "client_max_body_size")]
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", size.lower()).groups()
    assert int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit] >= settings.KB_MAX_REQUEST_BYTES


def test_the_image_is_built_as_the_design_says():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"apt-get install .*\btesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim\b", text)
    assert "pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements/base.txt" in text
    assert "manage.py collectstatic --noinput" in text
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.M)
    assert json.loads(cmd) == compose()["services"]["web"]["command"]
