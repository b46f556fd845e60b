"""The product's settings plus the bench app, for benchmarks and the test suite.

    .venv/bin/python manage.py bench_search --settings=bench.settings
"""

from kbportal.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]  # noqa: F405
