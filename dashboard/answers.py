"""How the Ask tab shows an answer: its text cut at the [n] markers, and citations with their links.

The answer text is never marked safe: the template prints the text parts escaped and turns only
the markers of real citations into links. static/js/ask.js does the same for a streamed answer.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from urllib.parse import urlencode

from django.urls import reverse

from search.asking.generators import CITATION
from search.models import AnswerTask


@dataclass(frozen=True)
class AnswerPart:
    text: str
    #: The citation this part links to ([n]), or None for plain text.
    number: int | None = None


def answer_parts(text: str, cited: set[int]) -> list[AnswerPart]:
    """`text` split into plain runs and the [n] markers of cited sources (other brackets stay text)."""
    parts: list[AnswerPart] = []
    start = 0
    for match in CITATION.finditer(text):
        number = int(match.group(1))
        if number not in cited:
            continue
        if match.start() > start:
            parts.append(AnswerPart(text[start:match.start()]))
        parts.append(AnswerPart(match.group(0), number))
        start = match.end()
    if start < len(text):
        parts.append(AnswerPart(text[start:]))
    return parts


def document_link(kb_slug: str, citation: dict) -> str:
    """The cited document's row on its knowledge base page (filtered by title, so it is on page one)."""
    query = "?" + urlencode({"q": citation["title"]}) if citation.get("title") else ""
    return f"{reverse('dashboard:kb', args=[kb_slug])}{query}#doc-{citation['document_id']}"


def citation_links(task: AnswerTask) -> list[dict]:
    """The task's citations, each with `document_url` (dashboard), `source_url` (http(s) only) and
    `text` (the quoted sentences, else the snippet unescaped - the template escapes it again)."""
    return [
        {
            **citation,
            "document_url": document_link(task.kb.slug, citation),
            "source_url": citation["url"] if str(citation.get("url", "")).startswith(("http://", "https://")) else "",
            "text": citation.get("quote") or html.unescape(citation.get("snippet", "")),
        }
        for citation in task.citations
    ]
