"""Readers of the deployment files (deploy/) and of what they must agree with (settings, docs, scripts/up.sh)."""

from __future__ import annotations

import ast
import copy
import re
import shlex
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CRDS = Path(__file__).resolve().parent / "crds"

KB_NAME = re.compile(r"\bKB_[A-Z0-9]+(?:_[A-Z0-9]+)*\b")


# --- deploy/ -------------------------------------------------------------------------------------


def deploy_files() -> list[Path]:
    return sorted(path for path in DEPLOY.rglob("*") if path.is_file())


@cache
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def app_services() -> dict[str, dict]:
    """The compose services that run KB Portal's image."""
    services = compose()["services"]
    return {name: service for name, service in services.items() if service.get("image") == "kbportal:latest"}


@cache
def k8s_documents() -> list[dict]:
    """Every document of the files kustomization.yaml lists, in its order."""
    documents = []
    for resource in kustomization()["resources"]:
        documents.extend(doc for doc in yaml.safe_load_all((K8S / resource).read_text()) if doc)
    return documents


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def k8s_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in k8s_documents() if doc["kind"] == kind}


def pod_specs() -> dict[str, dict]:
    """Pod specs of the Deployments and Jobs, by their owner's name."""
    return {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
        for doc in k8s_documents()
        if doc["kind"] in ("Deployment", "Job")
    }


def containers(pod_spec: dict) -> list[dict]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def secret_value(key: str) -> str:
    for secret in k8s_kind("Secret").values():
        if key in secret.get("stringData", {}):
            return secret["stringData"][key]
    raise KeyError(key)


def crd_schema(name: str, version: str) -> dict:
    """The openAPIV3Schema of a vendored CRD, made strict: unknown fields are errors, as the API server
    drops them silently (kubernetes-validate's strict schemas do the same for built-in kinds)."""
    crd = yaml.safe_load((CRDS / f"{name}.yaml").read_text())
    (served,) = [entry for entry in crd["spec"]["versions"] if entry["name"] == version]
    schema = copy.deepcopy(served["schema"]["openAPIV3Schema"])
    _forbid_unknown_fields(schema)
    return schema


def _forbid_unknown_fields(node):
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _forbid_unknown_fields(value)
    elif isinstance(node, list):
        for value in node:
            _forbid_unknown_fields(value)


# --- nginx.conf ----------------------------------------------------------------------------------

_NGINX_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{};]|[^\s{};]+')


def nginx_config() -> list[tuple]:
    """deploy/nginx.conf as a tree of (directive, args, children) - children is None for a simple directive."""
    text = "\n".join(line.split("#", 1)[0] for line in (DEPLOY / "nginx.conf").read_text().splitlines())
    tokens = _NGINX_TOKEN.findall(text)
    tree, rest = _nginx_block(tokens)
    assert not rest, f"unbalanced braces in nginx.conf near {rest[:5]}"
    return tree


def _nginx_block(tokens: list[str]) -> tuple[list[tuple], list[str]]:
    block, words = [], []
    while tokens:
        token, tokens = tokens[0], tokens[1:]
        if token == ";":
            block.append((words[0], words[1:], None))
            words = []
        elif token == "{":
            children, tokens = _nginx_block(tokens)
            block.append((words[0], words[1:], children))
            words = []
        elif token == "}":
            assert not words, f"directive {words} misses its ';'"
            return block, tokens
        else:
            words.append(token.strip("\"'") if token[0] in "\"'" else token)
    assert not words, f"directive {words} misses its ';'"
    return block, []


def nginx_find(tree: list[tuple], *path: str) -> list[tuple]:
    """Directives reached by a path of directive names, e.g. ("http", "server", "location")."""
    found = [entry for entry in tree if entry[0] == path[0]]
    if len(path) == 1:
        return found
    return [deeper for entry in found if entry[2] is not None for deeper in nginx_find(entry[2], *path[1:])]


# --- what deploy/ must agree with ----------------------------------------------------------------


def settings_names() -> set[str]:
    """KB_ variables kbportal/settings.py reads: the first argument of any call (envstr, os.environ.get, ...)."""
    tree = ast.parse((ROOT / "kbportal" / "settings.py").read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and KB_NAME.fullmatch(node.args[0].value)
    }


def documented_names() -> set[str]:
    return set(KB_NAME.findall((ROOT / "docs" / "operations.md").read_text()))


def up_sh_commands() -> dict[str, list[str]]:
    """Arguments of what scripts/up.sh runs, after the program: by `manage.py` subcommand, and `uvicorn`."""
    commands = {}
    for line in (ROOT / "scripts" / "up.sh").read_text().splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        words = shlex.split(line)
        if "manage.py" in words:
            args = words[words.index("manage.py") + 1 :]
            commands[args[0]] = args
        for position, word in enumerate(words):
            if word.endswith("/uvicorn"):
                commands["uvicorn"] = words[position + 1 :]
    return commands


def manage_py_commands(command: list[str]) -> list[list[str]]:
    """`manage.py` argument lists of a container command: `python manage.py ...` or `sh -c "... && ..."`."""
    if command[:2] == ["sh", "-c"]:
        parts = [shlex.split(part) for part in re.split(r"&&|;|\bdo\b|\bdone\b|\buntil\b", command[2])]
    else:
        parts = [command]
    return [part[part.index("manage.py") + 1 :] for part in parts if "manage.py" in part]


def uvicorn_options(args: list[str]) -> dict[str, str | None]:
    """uvicorn's `--option value` / `--flag` arguments as a dict (None for a flag)."""
    options, position = {}, 0
    while position < len(args):
        name = args[position]
        if name.startswith("--"):
            value = args[position + 1] if position + 1 < len(args) and not args[position + 1].startswith("--") else None
            options[name] = value
            position += 1 if value is None else 2
        else:
            position += 1
    return options


def es_version() -> str:
    """The Elasticsearch version the scripts run locally (scripts/lib.sh's KB_ES_VERSION default)."""
    return re.search(r'KB_ES_VERSION="\$\{KB_ES_VERSION:-([0-9.]+)\}"', (ROOT / "scripts" / "lib.sh").read_text())[1]
