"""Settings come from the environment; production values pass `check --deploy`."""

import os
import subprocess
import sys

from django.conf import settings


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_values_pass_check_deploy():
    result = run_check(
        {
            "KB_DEBUG": "0",
            "KB_SECRET_KEY": "kq7-Zp2!rT9w@Lm4#Vx8$Bn6%Hc3^Jd5&Fg1*Ys0(Ue2)Wa7-Qi9",
            "KB_ALLOWED_HOSTS": "kb.example.com",
            "KB_SECURE_SSL": "1",
        }
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_debug_defaults_fail_check_deploy():
    result = run_check({"KB_DEBUG": "1"})
    assert result.returncode != 0
    assert "DEBUG" in result.stdout + result.stderr


def test_missing_secret_key_in_production_is_refused():
    result = run_check({"KB_DEBUG": "0", "KB_SECRET_KEY": ""})
    assert result.returncode != 0
    assert "KB_SECRET_KEY" in result.stderr
