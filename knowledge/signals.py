"""Saves and deletes of what authentication reads (keys, knowledge bases, grants) move the key-cache epoch on."""

from django.db.models.signals import m2m_changed, post_delete, post_save

from knowledge.keycache import bump_epoch
from knowledge.models import ApiKey, KnowledgeBase


def connect_signals() -> None:
    """Connect the receivers (from KnowledgeConfig.ready)."""
    grants = ApiKey.knowledge_bases.through
    for model in (ApiKey, KnowledgeBase, grants):
        post_save.connect(_on_change, sender=model, dispatch_uid=f"keycache-save-{model._meta.label}")
        post_delete.connect(_on_change, sender=model, dispatch_uid=f"keycache-delete-{model._meta.label}")
    m2m_changed.connect(_on_change, sender=grants, dispatch_uid="keycache-grants")


def _on_change(sender, **kwargs) -> None:
    if kwargs.get("action", "post_").startswith("post_"):
        bump_epoch()
