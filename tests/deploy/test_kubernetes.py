"""deploy/k8s: every built-in object valid against Kubernetes 1.30's schemas (kubernetes-validate, strict,
offline), KEDA's objects against the schemas of KEDA's own CRDs (vendored in tests/deploy/crds), and
the objects pointing at each other correctly."""

from collections.abc import Callable
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
from rq import Queue

from tests.deploy.files import (
    K8S,
    containers,
    crd_schema,
    k8s_documents,
    k8s_kind,
    kustomization,
    manage_py_commands,
    pod_specs,
    secret_value,
)

KUBERNETES_VERSION = "1.30"
KEDA_SCHEMAS = {
    "ScaledObject": ("keda.sh_scaledobjects", "v1alpha1"),
    "TriggerAuthentication": ("keda.sh_triggerauthentications", "v1alpha1"),
}


def _label(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def _schema_error(validate: Callable[[], object]) -> str | None:
    """Where and why a schema validation fails, in one line (None when it passes)."""
    try:
        validate()
    except jsonschema.ValidationError as error:  # kubernetes-validate's ValidationError is one too
        return f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
    return None


BUILT_IN = [doc for doc in k8s_documents() if not doc["apiVersion"].startswith("keda.sh/")]
KEDA = [doc for doc in k8s_documents() if doc["apiVersion"].startswith("keda.sh/")]


@pytest.mark.parametrize("doc", BUILT_IN, ids=_label)
def test_object_is_valid_kubernetes(doc):
    error = _schema_error(lambda: kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True))
    assert error is None, error


@pytest.mark.parametrize("doc", KEDA, ids=_label)
def test_keda_object_is_valid_against_its_crd(doc):
    name, version = KEDA_SCHEMAS[doc["kind"]]
    assert doc["apiVersion"] == f"keda.sh/{version}"
    error = _schema_error(lambda: jsonschema.validate(doc, crd_schema(name, version)))
    assert error is None, error


def test_kustomization_lists_every_manifest():
    listed = kustomization()["resources"]
    assert sorted(listed) == sorted(path.name for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")
    (image,) = kustomization()["images"]
    used = {container["image"] for spec in pod_specs().values() for container in containers(spec)}
    assert used == {image["name"]}


def test_every_container_has_resource_requests_and_limits():
    for owner, spec in pod_specs().items():
        for container in containers(spec):
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, (owner, container["name"], bound)


def test_every_kb_portal_container_gets_the_settings():
    for owner, spec in pod_specs().items():
        for container in containers(spec):
            sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
            assert sources == {"kbportal-settings", "kbportal-secrets"}, (owner, container["name"])
    assert set(k8s_kind("ConfigMap")) == {"kbportal-settings"}
    assert {"kbportal-secrets", "kbportal-redis"} <= set(k8s_kind("Secret"))


def test_deployments_start_after_the_migrations_and_the_scheduler_runs_once():
    for name, deployment in k8s_kind("Deployment").items():
        (wait,) = deployment["spec"]["template"]["spec"]["initContainers"]
        assert manage_py_commands(wait["command"]) == [["migrate", "--check", "-v", "0"]], name
    scheduler = k8s_kind("Deployment")["kbportal-scheduler"]["spec"]
    assert scheduler["replicas"] == 1
    assert scheduler["strategy"] == {"type": "Recreate"}


def test_selectors_match_their_pods():
    pods = {name: doc["spec"]["template"]["metadata"]["labels"] for name, doc in k8s_kind("Deployment").items()}
    for name, doc in k8s_kind("Deployment").items():
        assert doc["spec"]["selector"]["matchLabels"].items() <= pods[name].items(), name
    for kind in ("PodDisruptionBudget", "Service"):
        for name, doc in k8s_kind(kind).items():
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            matched = [pod for pod, labels in pods.items() if selector.items() <= labels.items()]
            assert len(matched) == 1, (kind, name, matched)
    (service,) = k8s_kind("Service").values()
    web_ports = {port["name"] for port in pod_specs()["kbportal-web"]["containers"][0]["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= web_ports


def test_disruption_budgets_cover_web_and_every_worker_pool():
    covered = {doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
               for doc in k8s_kind("PodDisruptionBudget").values()}
    assert covered == {"web", "worker-main", "worker-batch"}


def test_web_scales_on_cpu_and_the_workers_on_their_queues():
    deployments = k8s_kind("Deployment")
    (hpa,) = k8s_kind("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "kbportal-web"}
    assert [metric["resource"]["name"] for metric in hpa["spec"]["metrics"]] == ["cpu"]
    scaled = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in k8s_kind("ScaledObject").values()}
    assert set(scaled) == {name for name in deployments if "worker" in name}
    for name in (hpa["spec"]["scaleTargetRef"]["name"], *scaled):
        assert "replicas" not in deployments[name]["spec"], f"{name}: its autoscaler owns the replica count"


def test_keda_watches_exactly_the_queues_each_pool_works_on():
    for name, scaled_object in k8s_kind("ScaledObject").items():
        target = pod_specs()[scaled_object["spec"]["scaleTargetRef"]["name"]]
        (args,) = manage_py_commands(target["containers"][0]["command"])
        queues = args[1 : args.index("--worker-class")]
        lists = [trigger["metadata"]["listName"] for trigger in scaled_object["spec"]["triggers"]]
        assert lists == [Queue.redis_queue_namespace_prefix + queue for queue in queues], name


def test_keda_reads_the_redis_kb_portal_uses():
    redis_url = urlsplit(secret_value("KB_REDIS_URL"))
    authentications = k8s_kind("TriggerAuthentication")
    for name, scaled_object in k8s_kind("ScaledObject").items():
        for trigger in scaled_object["spec"]["triggers"]:
            assert trigger["type"] == "redis"
            metadata = trigger["metadata"]
            assert metadata["address"] == f"{redis_url.hostname}:{redis_url.port or 6379}", name
            assert metadata["databaseIndex"] == (redis_url.path.strip("/") or "0"), name
            assert metadata.get("enableTLS", "false") == ("true" if redis_url.scheme == "rediss" else "false"), name
            assert trigger["authenticationRef"]["name"] in authentications, name
    for authentication in authentications.values():
        for ref in authentication["spec"]["secretTargetRef"]:
            assert ref["key"] in k8s_kind("Secret")[ref["name"]]["stringData"]


def test_the_migration_job_migrates_then_creates_the_search_index():
    (job,) = k8s_kind("Job").values()
    spec = job["spec"]["template"]["spec"]
    assert [manage_py_commands(container["command"]) for container in containers(spec)] == [
        [["migrate", "--noinput"]],
        [["search_index", "--create"]],
    ]
    assert spec["restartPolicy"] == "Never"
