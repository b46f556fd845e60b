"""Which knowledge base the dashboard's pickers (search playground, Ask) start on.

The one named in the URL (`?kb=`), else the one this operator used last (kept in the session by
`remember_kb`), else the one holding the most documents: the one in use, never merely the first
by name (often a test base).
"""

from django.db.models import Count
from django.http import HttpRequest

from knowledge.models import KnowledgeBase

SESSION_KEY = "dashboard_kb"


def picked_kb(request: HttpRequest) -> KnowledgeBase | None:
    for slug in (request.GET.get("kb"), request.session.get(SESSION_KEY)):
        kb = KnowledgeBase.objects.filter(slug=slug).first() if slug else None
        if kb is not None:
            return kb
    return KnowledgeBase.objects.annotate(documents=Count("sources__documents")).order_by("-documents", "slug").first()


def remember_kb(request: HttpRequest, kb: KnowledgeBase) -> None:
    """Note the knowledge base this operator is working on (opened, searched or asked)."""
    if request.session.get(SESSION_KEY) != kb.slug:
        request.session[SESSION_KEY] = kb.slug
