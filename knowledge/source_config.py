"""Validation of each source kind's configuration (what `Source.config` may hold)."""

from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

URL_DEFAULTS: dict[str, Any] = {
    "allowed_domains": [],
    "include": [],
    "exclude": [],
    "max_depth": 3,
    "max_pages": 500,
    "concurrency": 8,
    "delay": 0.0,
    "use_sitemap": False,
    "schedule_hours": None,
}


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        # Django's ValidationError cannot nest dicts: name the config field inside the message.
        raise ValidationError({"config": f"{field}: {message}"})


def _validate_text(config: dict) -> dict:
    text = config.get("text")
    _require(isinstance(text, str) and text.strip() != "", "text", "Text must be a non-empty string.")
    return {"text": text}


def _validate_file(config: dict) -> dict:
    """A file source is a set of stored files: {"files": [{object_key, filename, content_type, size}]}."""
    files = config.get("files")
    _require(isinstance(files, list) and len(files) > 0, "files", "Give at least one stored file.")
    normalised = []
    for item in files:
        _require(isinstance(item, dict), "files", "Each file must be an object.")
        for field in ("object_key", "filename"):
            _require(isinstance(item.get(field), str) and item[field] != "", "files", f"Each file needs {field}.")
        normalised.append(
            {
                "object_key": item["object_key"],
                "filename": item["filename"],
                "content_type": str(item.get("content_type") or "application/octet-stream"),
                "size": int(item.get("size") or 0),
            }
        )
    filenames = [item["filename"] for item in normalised]
    _require(len(set(filenames)) == len(filenames), "files", "File names must be unique within a source.")
    return {"files": normalised}


def _validate_url(config: dict) -> dict:
    start_urls = config.get("start_urls") or ([config["url"]] if config.get("url") else [])
    _require(isinstance(start_urls, list) and len(start_urls) > 0, "start_urls", "Give at least one start URL.")
    for url in start_urls:
        parts = urlsplit(str(url))
        _require(parts.scheme in ("http", "https") and bool(parts.hostname), "start_urls", f"Not an http(s) URL: {url}")
    result = {**URL_DEFAULTS, **{k: v for k, v in config.items() if k in URL_DEFAULTS}, "start_urls": start_urls}
    if not result["allowed_domains"]:
        result["allowed_domains"] = sorted({urlsplit(u).hostname for u in start_urls})
    for field, low, high in (("max_depth", 0, 50), ("max_pages", 1, 100_000), ("concurrency", 1, 64)):
        value = result[field]
        _require(isinstance(value, int) and low <= value <= high, field, f"Must be an integer from {low} to {high}.")
    _require(
        isinstance(result["delay"], (int, float)) and 0 <= result["delay"] <= 60, "delay", "Must be 0 to 60 seconds."
    )
    hours = result["schedule_hours"]
    _require(
        hours is None or (isinstance(hours, (int, float)) and hours > 0), "schedule_hours", "Must be positive or null."
    )
    for field in ("allowed_domains", "include", "exclude"):
        _require(
            isinstance(result[field], list) and all(isinstance(v, str) for v in result[field]),
            field,
            "Must be a list of strings.",
        )
    return result


VALIDATORS = {"text": _validate_text, "file": _validate_file, "url": _validate_url}


def validate_source_config(kind: str, config: Any) -> dict:
    """Return the normalised config for `kind`, or raise ValidationError naming the bad field."""
    if kind not in VALIDATORS:
        raise ValidationError({"kind": f"Unknown source kind {kind!r}; choose text, file or url."})
    if not isinstance(config, dict):
        raise ValidationError({"config": "Must be an object."})
    return VALIDATORS[kind](config)
