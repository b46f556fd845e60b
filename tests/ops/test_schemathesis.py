"""Schemathesis against /api/schema/, in process through the WSGI app: every operation, with an API key
holding every scope on a knowledge base that has a document, gets generated valid and invalid
requests; no answer may be a 5xx or contradict the documented response schema."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from kbportal.wsgi import application
from tests.ops.conftest import bearer
from tests.search.search_kbs import ingest

MAX_EXAMPLES = 12
CHECKS = [not_a_server_error, response_schema_conformance]

pytestmark = pytest.mark.django_db(transaction=True)


def retarget(case, known: dict[str, object]) -> None:
    """Point the case at objects that exist, so it reaches past the 404s random ids get."""
    for name in case.path_parameters or {}:
        if name == "slug":
            case.path_parameters[name] = known["slug"]
        elif name == "task_id":
            case.path_parameters[name] = known["task"]
        elif name == "id":
            collection = case.operation.path.split("/{id}")[0].rsplit("/", 1)[-1]  # jobs, sources, documents
            case.path_parameters[name] = known.get(collection, 1)
    if isinstance(case.body, dict) and "kb" in case.body:
        case.body["kb"] = [known["slug"]] if isinstance(case.body["kb"], list) else known["slug"]


def exercise(operation, headers: dict[str, str], known: dict[str, object], statuses: set[int]) -> list[str]:
    """Run the operation's generated cases, adding the statuses seen; the failures, one line each."""
    failures: list[str] = []

    @given(case=operation.as_strategy(), aim=st.booleans())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case, aim):
        if aim:
            retarget(case, known)
        response = case.call(headers=headers)
        statuses.add(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except Exception as exc:  # one failure, or a group of them
            for failure in getattr(exc, "exceptions", [exc]):
                title = getattr(failure, "title", "") or type(failure).__name__
                failures.append(f"{operation.label} -> {response.status_code}: {title}: "
                                f"{str(failure).strip()[:300]!r} <- {case.as_curl_command()}")

    run()
    return failures


def test_every_api_operation_answers_without_5xx_or_schema_violation(client, kb, search_index):
    source = ingest(kb, {"Passwords": "Reset your password from the settings page."})
    headers = bearer([kb], rate="10000/s")
    asked = client.post("/api/v1/ask", {"kb": kb.slug, "question": "How do I reset my password?"},
                        content_type="application/json", **headers)
    assert asked.status_code in (200, 202), asked.content
    known = {
        "slug": kb.slug,
        "sources": source.pk,
        "documents": source.documents.get().pk,
        "jobs": source.jobs.get().pk,
        "task": asked.json()["id"],
    }
    schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
    # Deletes last: the known source and document are gone once their DELETE succeeded.
    operations = sorted((result.ok() for result in schema.get_all_operations()), key=lambda op: op.method == "delete")
    assert len(operations) >= 15
    statuses: dict[str, set[int]] = {operation.label: set() for operation in operations}
    failures = [
        line
        for operation in operations
        for line in exercise(operation, {"Authorization": headers["HTTP_AUTHORIZATION"]}, known,
                             statuses[operation.label])
    ]
    assert failures == [], "\n".join(failures[:30])
    # The key and the known objects got through: most operations answered a success at least once.
    succeeded = [label for label, seen in statuses.items() if any(200 <= code < 300 for code in seen)]
    assert len(succeeded) >= len(operations) * 2 // 3, statuses
