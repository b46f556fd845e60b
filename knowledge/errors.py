"""The errors knowledge services and selectors raise: a knowledge base that does not exist, or is not
the caller's to use. Each is a `kbportal.errors.DomainError`, so the API answers it with its status."""

from kbportal.errors import DomainError


class UnknownKnowledgeBase(DomainError):
    status_code = 404
    code = "not_found"
    default_detail = "No such knowledge base."


class NotAllowed(DomainError):
    """The API key may not use a knowledge base it named, or has none to use."""

    status_code = 403
    code = "permission_denied"
    default_detail = "This API key may not search these knowledge bases."
