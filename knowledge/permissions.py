"""Who may do what: staff sessions may do everything; API keys need the scope and the knowledge base."""

from rest_framework.permissions import BasePermission

from knowledge.models import ApiKey, KnowledgeBase


def request_api_key(request) -> ApiKey | None:
    return request.auth if isinstance(request.auth, ApiKey) else None


def is_staff(request) -> bool:
    return bool(getattr(request.user, "is_staff", False) and request.user.is_active)


def may_use_kb(request, kb: KnowledgeBase) -> bool:
    if is_staff(request):
        return True
    key = request_api_key(request)
    return key is not None and key.knowledge_bases.filter(pk=kb.pk).exists()


def readable_kbs(request):
    """Knowledge bases the request may read."""
    if is_staff(request):
        return KnowledgeBase.objects.all()
    key = request_api_key(request)
    return key.knowledge_bases.all() if key else KnowledgeBase.objects.none()


class HasScope(BasePermission):
    """Staff, or an API key carrying `scope` (set `required_scope` on the view).

    A refusal names the scope: DRF makes one instance per request and reads `message` after a refusal.
    """

    message = "This API key lacks the required scope."

    def has_permission(self, request, view) -> bool:
        if is_staff(request):
            return True
        key = request_api_key(request)
        self.message = f"This API key lacks the {view.required_scope!r} scope."
        return key is not None and key.has_scope(view.required_scope)
