"""The project's URLs plus views that exist only to prove error handling under /api/."""

import logging

from django.urls import include, path

logger = logging.getLogger("tests.ops")


def boom(request):
    logger.warning("about to fail")
    raise RuntimeError("boom")


urlpatterns = [path("api/v1/boom", boom), path("", include("kbportal.urls"))]
