"""Whether retrieval found anything relevant to a question, decided before an answer is generated.

Every search returns its best chunks, however poor, and its scores cannot tell good from poor: a
hybrid hit's score is a reciprocal-rank-fusion value (about 1/60 for a first place, whatever the
match), a keyword hit's an unbounded BM25 score. So each retrieved passage is judged on two
measures with a fixed scale:

- keyword: the share of the question's terms, analysed as keyword search analyses them (stop
  words dropped, stemmed in the knowledge base's language), that occur in the passage. In English
  the words that make a sentence a question ("how", "what", "does", "I"...) are not counted: any
  passage has them, so "How do penguins breed?" would otherwise half-match everything;
- semantic: the cosine similarity between the question's embedding and the passage's (the vector
  stored in the index, made by the knowledge base's embedder).

A passage is relevant when either reaches its threshold: `KB_ASK_MIN_TERM_SHARE` (default 0.5,
half of the question's terms) or `KB_ASK_MIN_SIMILARITY` (default 0.3). With all-MiniLM-L6-v2 on
CISI, the best judged-relevant abstract of 25 sampled queries scored 0.30-0.73 (all but one over
0.4), while off-topic questions ("How do penguins breed in Antarctica?") scored at most 0.20
against 400 abstracts. Only when both measures are weak for every passage does the answer say
that nothing relevant was found; the generator (a paid model, maybe) is not called for it.
"""

import math

from django.conf import settings

from knowledge.models import KnowledgeBase
from search.analysis import analyze
from search.asking.generators import Generation, Passage
from search.cache import normalise_query
from search.services import query_vector

#: Words that make an English sentence a question rather than say what it is about.
QUESTION_WORDS = (
    "how what why which who whom whose when where whether do does did can could should would may might must "
    "i me my we our you your please tell explain"
)


def question_terms(question: str, *, language: str) -> set[str]:
    """The terms of the question that say what it is about."""
    terms = set(analyze(question, language=language).split())
    if language == "english":
        terms -= set(analyze(QUESTION_WORDS, language=language).split())
    return terms


def term_share(question_terms: set[str], text: str, *, language: str) -> float:
    """The share of `question_terms` found among the terms of `text` (0 when there are none)."""
    if not question_terms:
        return 0.0
    return len(question_terms & set(analyze(text, language=language).split())) / len(question_terms)


def cosine(a: list[float], b: list[float]) -> float:
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norms if norms else 0.0


def any_relevant(
    question: str, passages: list[Passage], vectors: dict[str, list | None], *, embedder: str, language: str
) -> bool:
    """Whether any passage shares enough of the question's terms or meaning (see the module's docstring)."""
    if not passages:
        return False
    terms = question_terms(question, language=language)
    shares = (term_share(terms, f"{passage.title}\n{passage.content}", language=language) for passage in passages)
    if max(shares) >= settings.KB_ASK_MIN_TERM_SHARE:
        return True
    # The search embedded the normalised question moments ago: this reads it from the embedding cache.
    question_vector = query_vector(embedder, normalise_query(question))
    similarities = [cosine(question_vector, vectors[p.chunk_id]) for p in passages if vectors.get(p.chunk_id)]
    return max(similarities, default=0.0) >= settings.KB_ASK_MIN_SIMILARITY


def nothing_relevant(kb: KnowledgeBase) -> Generation:
    """The answer when nothing relevant was retrieved: said plainly, citing nothing, no model called."""
    return Generation(text=f"I found nothing relevant in {kb.name} for this question.", cited=[], model="")
