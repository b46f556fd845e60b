"""Chunking: a document's text -> overlapping passages of about `KB_CHUNK_TOKENS` tokens.

The text is cut into units: paragraphs (blank-line separated) into sentences, and sentences
longer than a chunk into runs of words. Units are packed greedily up to the target; each new
chunk starts with the last sentences of the previous one (about `KB_CHUNK_OVERLAP` of the
target) so a passage cut at a boundary is still found whole on one side.

Tokens are approximated, not computed with a model tokenizer: one token per word (`\\w+`) and one
per punctuation mark. That is fast (a regex), deterministic and embedder-independent. It
undercounts WordPiece tokens for rare words by roughly 10-30%, so keep the target under the
embedder's window (all-MiniLM-L6-v2 reads 256 WordPiece tokens and ignores the rest).

Every chunk's text is an exact slice of the input: `text[char_start:char_end]`.

A document made of sections (`chunk_sections`) is chunked section by section, so no chunk spans
two pages, slides or sheets, and each chunk keeps its section's location and heading. A table
is chunked by rows instead: as many whole rows as fit the target, each chunk starting with the
table's header row (a row without its header is meaningless), its location saying which rows.
"""

import re
from dataclasses import dataclass

from django.conf import settings

from ingestion.extraction.types import Section, Table

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends at . ! ? (possibly repeated, possibly closed by quotes/brackets) before whitespace.
# Abbreviations ("e.g. this") split too: harmless, the packer joins sentences again.
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s)")
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class Chunk:
    position: int  # 0-based order within the document
    text: str
    token_count: int
    char_start: int  # the chunk is text[char_start:char_end] of the chunked text
    char_end: int


@dataclass(frozen=True)
class SectionChunk:
    """A chunk of a document made of sections: its text, where it is, and under which heading."""

    position: int  # 0-based order within the document
    text: str
    token_count: int
    location: dict  # the section's location; a table's chunks add "rows": [first, last]
    heading: str


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int
    paragraph: int


def chunk_text(
    text: str,
    title: str = "",
    target_tokens: int | None = None,
    overlap: float | None = None,
) -> list[Chunk]:
    """Split a document's text into chunks; the same input always gives the same chunks.

    `title` is deliberately not added to the chunks: the indexer stores it in its own field
    (searched and embedded alongside). Empty or whitespace-only text gives no chunks.
    """
    target = settings.KB_CHUNK_TOKENS if target_tokens is None else target_tokens
    ratio = settings.KB_CHUNK_OVERLAP if overlap is None else overlap
    if target < 1:
        raise ValueError("target_tokens must be at least 1")
    if not 0 <= ratio < 1:
        raise ValueError("overlap must be in [0, 1)")
    overlap_budget = int(target * ratio)
    # Long sentences are cut shorter than the target so the carried overlap still fits beside one.
    units = list(_units(text, max(1, target - overlap_budget)))
    return [
        Chunk(
            position=position,
            text=text[group[0].start : group[-1].end],
            token_count=sum(unit.tokens for unit in group),
            char_start=group[0].start,
            char_end=group[-1].end,
        )
        for position, group in enumerate(_pack(text, units, target, overlap_budget))
    ]


def chunk_sections(
    sections: tuple[Section, ...] | list[Section],
    target_tokens: int | None = None,
    overlap: float | None = None,
) -> list[SectionChunk]:
    """Chunk each section on its own (text as `chunk_text` does, a table by rows), in order."""
    target = settings.KB_CHUNK_TOKENS if target_tokens is None else target_tokens
    chunks: list[SectionChunk] = []
    for section in sections:
        pieces = [
            (chunk.text, chunk.token_count, section.location)
            for chunk in chunk_text(section.text, target_tokens=target, overlap=overlap)
        ]
        if section.table is not None:
            pieces += _table_pieces(section.table, section.location, target)
        chunks += [
            SectionChunk(position=len(chunks) + offset, text=text, token_count=tokens, location=dict(location),
                         heading=section.heading)
            for offset, (text, tokens, location) in enumerate(pieces)
        ]
    return chunks


def _table_pieces(table: Table, location: dict, target: int) -> list[tuple[str, int, dict]]:
    """Runs of whole rows under the header, each about `target` tokens with the header counted."""
    header_tokens = _token_count(table.header)
    pieces = []
    run: list[str] = []
    size = header_tokens
    first = table.first_row
    for number, row in enumerate(table.rows, start=table.first_row):
        tokens = _token_count(row)
        if run and size + tokens > target:
            pieces.append(("\n".join((table.header, *run)), size, {**location, "rows": [first, number - 1]}))
            run, size, first = [], header_tokens, number
        run.append(row)
        size += tokens
    if run:
        last = table.first_row + len(table.rows) - 1
        pieces.append(("\n".join((table.header, *run)), size, {**location, "rows": [first, last]}))
    return pieces


def _token_count(text: str) -> int:
    return sum(1 for _ in _TOKEN.finditer(text))


def _pack(text: str, units: list[_Unit], target: int, overlap_budget: int) -> list[list[_Unit]]:
    groups: list[list[_Unit]] = []
    current: list[_Unit] = []
    size = 0
    for unit in units:
        full = size + unit.tokens > target
        # Prefer ending a chunk where a paragraph ends once it is mostly full.
        paragraph_end = bool(current) and unit.paragraph != current[-1].paragraph and size >= 0.8 * target
        if current and (full or paragraph_end):
            groups.append(current)
            current = _overlap(text, current, overlap_budget)
            size = sum(carried.tokens for carried in current)
            while current and size + unit.tokens > target:
                size -= current.pop(0).tokens
        current.append(unit)
        size += unit.tokens
    if current:
        groups.append(current)
    return groups


def _overlap(text: str, previous: list[_Unit], budget: int) -> list[_Unit]:
    """The tail of the previous chunk to repeat: whole sentences within budget, else its last words.

    Never the whole previous chunk, or a short chunk would be repeated entire inside the next one.
    """
    if budget <= 0:
        return []
    carried: list[_Unit] = []
    size = 0
    for unit in reversed(previous[1:]):
        if size + unit.tokens > budget:
            break
        carried.insert(0, unit)
        size += unit.tokens
    if carried:
        return carried
    last = previous[-1]
    tokens = list(_TOKEN.finditer(text, last.start, last.end))
    take = min(budget, len(tokens) // 2)
    if take == 0:
        return []
    tail = tokens[-take:]
    return [_Unit(tail[0].start(), last.end, take, last.paragraph)]


def _units(text: str, max_tokens: int):
    """Sentence spans (stripped of surrounding whitespace), long ones cut into word runs."""
    for paragraph, (start, end) in enumerate(_paragraph_spans(text)):
        for sentence_start, sentence_end in _sentence_spans(text, start, end):
            tokens = list(_TOKEN.finditer(text, sentence_start, sentence_end))
            if not tokens:
                continue
            if len(tokens) <= max_tokens:
                yield _Unit(sentence_start, sentence_end, len(tokens), paragraph)
                continue
            for first in range(0, len(tokens), max_tokens):
                run = tokens[first : first + max_tokens]
                yield _Unit(run[0].start(), run[-1].end(), len(run), paragraph)


def _paragraph_spans(text: str):
    start = 0
    for match in _PARAGRAPH_BREAK.finditer(text):
        yield from _stripped(text, start, match.start())
        start = match.end()
    yield from _stripped(text, start, len(text))


def _sentence_spans(text: str, start: int, end: int):
    for match in _SENTENCE_END.finditer(text, start, end):
        yield from _stripped(text, start, match.end())
        start = match.end()
    yield from _stripped(text, start, end)


def _stripped(text: str, start: int, end: int):
    """The span without its leading and trailing whitespace, if anything is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end:
        yield start, end
