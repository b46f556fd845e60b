"""Text analysis for keyword search, done in the application: words, stop words, Snowball stems.

A stock Elasticsearch analyses `english` text with its analysis-common module; the minimal
distribution run locally has no such module, and a cluster's analyzers differ by version and
plugins. So the application turns text into terms itself (per knowledge-base language) and the
index stores them in `*_terms` fields split by the built-in `whitespace` analyzer, which every
Elasticsearch has. The same function analyses documents when they are indexed and queries when
they are searched, so both sides always agree, and snippets mark the words whose terms matched.

Tokens are runs of letters and digits; each Han, kana or Hangul character is a token of its own
(Elasticsearch's standard tokenizer does the same). A language whose words are not separated by
spaces can get a segmenter here. English drops Lucene's English stop words and possessive 's,
as Elasticsearch's `english` analyzer does.
"""

import re
from functools import cache

import Stemmer

#: Knowledge-base languages and their Snowball stemmers; "none" only lowercases.
STEMMERS = {
    "english": "english",
    "french": "french",
    "german": "german",
    "spanish": "spanish",
    "italian": "italian",
    "portuguese": "portuguese",
    "dutch": "dutch",
    "swedish": "swedish",
    "russian": "russian",
    "none": None,
}
DEFAULT_LANGUAGE = "english"

#: Lucene's EnglishAnalyzer stop set.
ENGLISH_STOP_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not",
    "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was",
    "will", "with",
})
STOP_WORDS = {"english": ENGLISH_STOP_WORDS}

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
WORD = re.compile(r"[^\W_]+")
HAS_CJK = re.compile(f"[{_CJK}]")
CJK_SPLIT = re.compile(f"[{_CJK}]|[^{_CJK}]+")
POSSESSIVE = re.compile("['\u2019][sS]\\b")


@cache
def _stemmer(language: str) -> Stemmer.Stemmer | None:
    algorithm = STEMMERS[language]
    return Stemmer.Stemmer(algorithm) if algorithm else None


def _spans(text: str) -> list[tuple[int, int]]:
    if not HAS_CJK.search(text):
        return [match.span() for match in WORD.finditer(text)]
    spans = []
    for match in WORD.finditer(text):
        if HAS_CJK.search(match.group()):
            offset = match.start()
            spans.extend((offset + part.start(), offset + part.end()) for part in CJK_SPLIT.finditer(match.group()))
        else:
            spans.append(match.span())
    return spans


def tokens(text: str, *, language: str) -> list[tuple[int, int, str | None]]:
    """Each word of `text` as (start, end, term), the term None for a stop word."""
    if language == "english":
        text = POSSESSIVE.sub("  ", text)  # same length: offsets stay valid
    stop_words = STOP_WORDS.get(language, frozenset())
    spans = _spans(text)
    words = [text[start:end].lower() for start, end in spans]
    stemmer = _stemmer(language)
    terms = stemmer.stemWords(words) if stemmer else words  # one call into C for the whole text
    return [(start, end, None if word in stop_words else term)
            for (start, end), word, term in zip(spans, words, terms, strict=True)]


def analyze(text: str, *, language: str) -> str:
    """The terms of `text`, space-separated: what a `*_terms` field holds and a query matches."""
    return " ".join(term for _, _, term in tokens(text, language=language) if term)
