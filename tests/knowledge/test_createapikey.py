from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from knowledge.authentication import authenticate_key
from knowledge.models import ApiKey

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("createapikey", *args, stdout=out)
    return out.getvalue()


def test_createapikey_prints_a_working_key_once(kb):
    output = run("--kb", "docs", "--scopes", "search,ingest", "--rate", "5/s", "--name", "ci")
    full = output.strip().splitlines()[-1]
    key = authenticate_key(full)
    assert key.name == "ci"
    assert key.scopes == ["search", "ingest"]
    assert key.rate == "5/s"
    assert output.count(full) == 1


def test_createapikey_accepts_several_kbs(kb, other_kb):
    run("--kb", "docs", "--kb", "other")
    key = ApiKey.objects.get()
    assert set(key.knowledge_bases.values_list("slug", flat=True)) == {"docs", "other"}
    assert key.scopes == ["search"]


def test_createapikey_unknown_kb_is_a_command_error(kb):
    with pytest.raises(CommandError, match=r"Unknown knowledge base.*nope"):
        run("--kb", "nope")
    assert not ApiKey.objects.exists()


def test_createapikey_unknown_scope_is_a_command_error(kb):
    with pytest.raises(CommandError, match="--scopes"):
        run("--kb", "docs", "--scopes", "search,admin")


def test_createapikey_bad_rate_is_a_command_error(kb):
    with pytest.raises(CommandError, match="--rate"):
        run("--kb", "docs", "--rate", "lots")


def test_createapikey_requires_a_kb(kb):
    with pytest.raises(CommandError, match="--kb"):
        run("--scopes", "search")
