"""The apps import one way (dashboard -> ingestion -> search -> knowledge -> kbportal): the
import-linter contracts in pyproject.toml hold, so a wrong arrow fails the tests."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
