"""Snippets: the part of a chunk shown under a hit, with the words that matched the query marked.

Marking happens here rather than in Elasticsearch's highlighter because the index matches
application-made terms (`search.analysis`): a word is marked when its term is one of the query's,
so "retrieving" is marked for the query "retrieval" exactly as it matched, in keyword and semantic
hits alike. The text is HTML-escaped; only the `<mark>` tags are markup.
"""

import html
import re

from search.analysis import tokens

SNIPPET_CHARS = 240
MARK_OPEN, MARK_CLOSE = "<mark>", "</mark>"
ELLIPSIS = " …"
#: A snippet is one line: line breaks and runs of spaces in the chunk become one space.
WHITESPACE = re.compile(r"\s+")


def _truncated(content: str, chars: int) -> str:
    if len(content) > chars:
        content = content[:chars].rsplit(" ", 1)[0] + ELLIPSIS
    return WHITESPACE.sub(" ", html.escape(content, quote=False)).strip()


def _densest_window(spans: list[tuple[int, int]], chars: int) -> int:
    """Start offset of the `chars`-long window holding the most matched words."""
    best_start, best_count = spans[0][0], 0
    for i, (start, _) in enumerate(spans):
        count = sum(1 for other, end in spans[i:] if end <= start + chars)
        if count > best_count:
            best_start, best_count = start, count
    return best_start


def snippet(content: str, *, query_terms: set[str], language: str, chars: int = SNIPPET_CHARS) -> str:
    """About `chars` characters of `content` around its densest run of matched words, marked."""
    if not query_terms:
        return _truncated(content, chars)
    spans = [(start, end) for start, end, term in tokens(content, language=language) if term in query_terms]
    if not spans:
        return _truncated(content, chars)
    start = _densest_window(spans, chars)
    # Some words of context before the first match, starting at a word boundary.
    start = max(0, start - chars // 6)
    if start:
        boundary = content.rfind(" ", 0, start)
        start = boundary + 1 if boundary >= 0 else 0
    end = min(len(content), start + chars)
    if end < len(content):
        boundary = content.rfind(" ", start, end)
        if boundary > start:
            end = boundary
    parts = ["… " if start else ""]
    position = start
    for span_start, span_end in spans:
        if span_start < start or span_end > end:
            continue
        parts += [html.escape(content[position:span_start], quote=False), MARK_OPEN,
                  html.escape(content[span_start:span_end], quote=False), MARK_CLOSE]
        position = span_end
    parts.append(html.escape(content[position:end], quote=False))
    if end < len(content):
        parts.append(ELLIPSIS)
    return WHITESPACE.sub(" ", "".join(parts)).strip()
