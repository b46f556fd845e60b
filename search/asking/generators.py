"""Answer generators: numbered passages + a question -> an answer citing the passages it used.

A generator streams its text through `on_text(delta)` (called in order; the caller coalesces and
publishes, and may raise there to stop generation, e.g. on cancel) and returns a `Generation`.

- `extractive` (default; runs offline): the sentences of the passages most similar to the question
  by the knowledge base's embedder, each followed by its source number.
- `openai`: any OpenAI-compatible chat-completions endpoint, streamed over server-sent events, with
  timeouts, retries on 429/5xx/connection errors with backoff, and the "llm" circuit breaker.

Failure policy of `openai`: a 429/5xx or a refused connection is retried (KB_LLM_RETRIES times, with
exponential backoff honouring Retry-After); a model that stays silent for KB_LLM_TIMEOUT, a stream
cut after text was sent, an open circuit or a 4xx fail the answer with the reason
(`GenerationFailed`). The asker is waiting: answering minutes later from a task retry helps nobody.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from django.conf import settings

from kbportal.breaker import CircuitBreaker, CircuitOpen, shared_breaker
from knowledge.embedders import get_embedder

NOT_FOUND = "Not in the knowledge base."
#: Sentences the extractive answer quotes at most, and the least similarity a quoted sentence needs.
EXTRACTIVE_SENTENCES = 4
EXTRACTIVE_MIN_SIMILARITY = 0.2
#: Two sentences this similar say the same thing: quote only the first.
NEAR_DUPLICATE = 0.95
RETRY_AFTER_CAP = 10.0
CITATION = re.compile(r"\[(\d{1,3})\]")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources you are given. Cite the source of every "
    "statement by its number in square brackets, like [1] or [2][3]. Do not use outside knowledge. "
    f'If the sources do not contain the answer, reply exactly: "{NOT_FOUND}"'
)


class GenerationFailed(Exception):
    """The answer cannot be generated; the message is the reason shown to the asker."""


class LlmUnavailable(Exception):
    """The model endpoint failed in a way worth retrying (429, 5xx, refused connection)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class LlmTimeout(LlmUnavailable):
    """The model stayed silent too long; counted as a failure by the breaker, not retried."""


@dataclass
class Passage:
    """One numbered source of the context."""

    number: int
    chunk_id: str
    document_id: int | str
    source_id: int | str
    kb: str
    title: str
    url: str
    position: int
    content: str
    #: Where the passage is in its document, in words ("page 3"); "" for none.
    where: str = ""
    location: dict = field(default_factory=dict)


@dataclass
class Generation:
    text: str
    #: Numbers of the passages the answer cites, in order of first citation.
    cited: list[int]
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: Per cited passage, the text the answer quotes from it (extractive) - else a snippet is used.
    quotes: dict[int, str] = field(default_factory=dict)


TextSink = Callable[[str], None]


class Generator(Protocol):
    name: str

    def model_name(self) -> str: ...

    def generate(self, question: str, passages: list[Passage], on_text: TextSink) -> Generation: ...


def cited_numbers(text: str, passages: list[Passage]) -> list[int]:
    """Source numbers cited in `text` that name a passage, in order of first citation."""
    known = {passage.number for passage in passages}
    seen: list[int] = []
    for match in CITATION.finditer(text):
        number = int(match.group(1))
        if number in known and number not in seen:
            seen.append(number)
    return seen


def estimate_tokens(text: str) -> int:
    """About four characters per token for English text (no tokenizer of the model here)."""
    return max(1, len(text) // 4) if text else 0


# --- extractive ----------------------------------------------------------------------------------


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage; fragments under three words (headings, list bullets) are dropped."""
    sentences = []
    for part in SENTENCE_END.split(text):
        sentence = " ".join(part.split()).lstrip("#*-> ").strip()
        if len(sentence.split()) >= 3:
            sentences.append(sentence)
    return sentences


class ExtractiveGenerator:
    """Quotes the passages' sentences closest to the question, ordered as in the sources."""

    name = "extractive"

    def __init__(self, embedder: str):
        self.embedder = embedder

    def model_name(self) -> str:
        return f"extractive:{self.embedder}"

    def generate(self, question: str, passages: list[Passage], on_text: TextSink) -> Generation:
        candidates: list[tuple[int, int, str]] = []  # (passage number, index in passage, sentence)
        seen_text: set[str] = set()
        for passage in passages:
            # The document's title heads its first chunk: a title is not an answer.
            seen_text.add(" ".join(passage.title.split()).lower())
            for index, sentence in enumerate(split_sentences(passage.content)):
                key = sentence.lower()
                if key not in seen_text:  # overlapping chunks repeat sentences
                    seen_text.add(key)
                    candidates.append((passage.number, index, sentence))
        if not candidates:
            on_text(NOT_FOUND)
            return Generation(NOT_FOUND, [], self.model_name())
        vectors = get_embedder(self.embedder).embed([question] + [sentence for _, _, sentence in candidates])
        query, sentence_vectors = vectors[0], vectors[1:]
        scores = [sum(a * b for a, b in zip(query, vector, strict=True)) for vector in sentence_vectors]
        chosen: list[int] = []
        for index in sorted(range(len(candidates)), key=lambda i: -scores[i]):
            if scores[index] < EXTRACTIVE_MIN_SIMILARITY or len(chosen) == EXTRACTIVE_SENTENCES:
                break
            if any(_dot(sentence_vectors[index], sentence_vectors[other]) > NEAR_DUPLICATE for other in chosen):
                continue
            chosen.append(index)
        if not chosen:
            on_text(NOT_FOUND)
            return Generation(NOT_FOUND, [], self.model_name())
        chosen.sort(key=lambda i: candidates[i][:2])  # read in source order, not score order
        parts, quotes, cited = [], {}, []
        for position, index in enumerate(chosen):
            number, _, sentence = candidates[index]
            piece = f"{sentence} [{number}]"
            on_text(piece if position == 0 else " " + piece)
            parts.append(piece)
            quotes[number] = f"{quotes[number]} {sentence}" if number in quotes else sentence
            if number not in cited:
                cited.append(number)
        return Generation(" ".join(parts), cited, self.model_name(), quotes=quotes)


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# --- OpenAI-compatible chat completions ------------------------------------------------------------

def llm_breaker() -> CircuitBreaker:
    """The breaker around model calls, shared by every process through Redis (like the search one).

    Its half-open probe is a whole generation, so the probe slot lasts as long as one may take.
    """
    return shared_breaker("llm", failure_exceptions=(LlmUnavailable,), call_seconds=settings.KB_LLM_MAX_SECONDS)


def build_messages(question: str, passages: list[Passage]) -> list[dict]:
    sources = "\n\n".join(f"[{p.number}] {p.title}{f' ({p.where})' if p.where else ''}\n{p.content}" for p in passages)
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Sources:\n\n{sources}\n\nQuestion: {question}"},
    ]


def completions_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith("/chat/completions") else f"{base}/chat/completions"


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(float(response.headers.get("retry-after", "")), RETRY_AFTER_CAP)
    except ValueError:
        return None


def sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The `data:` payloads of a server-sent event stream (one per event; comments skipped)."""
    buffer: list[str] = []
    for line in lines:
        if line == "":
            if buffer:
                yield "\n".join(buffer)
                buffer = []
        elif line.startswith("data:"):
            buffer.append(line[5:].lstrip(" "))
    if buffer:
        yield "\n".join(buffer)


class OpenAIGenerator:
    """Streams a chat completion from an OpenAI-compatible endpoint (KB_LLM_URL, KB_LLM_MODEL)."""

    name = "openai"

    def __init__(
        self,
        url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        request_id: str = "",
    ):
        self.url = completions_url(url or settings.KB_LLM_URL)
        self.model = model or settings.KB_LLM_MODEL
        self.api_key = settings.KB_LLM_API_KEY if api_key is None else api_key
        self.request_id = request_id
        if not settings.KB_LLM_URL and not url:
            raise GenerationFailed("the openai generator needs KB_LLM_URL")

    def model_name(self) -> str:
        return self.model

    def generate(self, question: str, passages: list[Passage], on_text: TextSink) -> Generation:
        if not passages:
            # Nothing was retrieved: no model call can answer from the knowledge base.
            on_text(NOT_FOUND)
            return Generation(NOT_FOUND, [], self.model)
        messages = build_messages(question, passages)
        body = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0,
            "max_tokens": settings.KB_LLM_MAX_TOKENS,
        }
        attempts = settings.KB_LLM_RETRIES + 1
        for attempt in range(1, attempts + 1):
            try:
                with llm_breaker().guard():
                    text, usage, deltas = self._stream(body, on_text)
                break
            except CircuitOpen as exc:
                raise GenerationFailed(f"the model endpoint is failing (circuit open; retry after "
                                       f"{exc.retry_after:.0f}s)")
            except LlmTimeout as exc:
                raise GenerationFailed(str(exc))
            except LlmUnavailable as exc:
                if attempt == attempts:
                    raise GenerationFailed(f"the model endpoint failed {attempts} times; last: {exc}")
                time.sleep(exc.retry_after if exc.retry_after is not None else self._backoff(attempt))
        prompt_tokens = usage.get("prompt_tokens") or sum(estimate_tokens(m["content"]) for m in messages)
        completion_tokens = usage.get("completion_tokens") or deltas
        return Generation(text, cited_numbers(text, passages), self.model, prompt_tokens, completion_tokens)

    @staticmethod
    def _backoff(attempt: int) -> float:
        ceiling = settings.KB_LLM_RETRY_BASE_SECONDS * 2 ** (attempt - 1)
        return random.uniform(ceiling / 2, ceiling)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self.request_id:
            headers["X-Request-Id"] = self.request_id
        return headers

    def _stream(self, body: dict, on_text: TextSink) -> tuple[str, dict, int]:
        """One attempt: (text, usage, number of content deltas). Raises LlmUnavailable / GenerationFailed."""
        silent = settings.KB_LLM_TIMEOUT
        deadline = time.monotonic() + settings.KB_LLM_MAX_SECONDS
        timeout = httpx.Timeout(silent, connect=min(silent, 10.0))
        parts: list[str] = []
        usage: dict = {}
        deltas = 0
        try:
            with httpx.Client(timeout=timeout) as client, client.stream(
                "POST", self.url, json=body, headers=self._headers()
            ) as response:
                if response.status_code == 429 or response.status_code >= 500:
                    response.read()
                    raise LlmUnavailable(f"HTTP {response.status_code}: {response.text[:200]}",
                                         retry_after=_retry_after(response))
                if response.status_code >= 400:
                    response.read()
                    raise GenerationFailed(f"the model endpoint refused the request "
                                           f"(HTTP {response.status_code}): {response.text[:300]}")
                for data in sse_data(response.iter_lines()):
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    if event.get("error"):
                        raise GenerationFailed(f"the model reported an error: {str(event['error'])[:300]}")
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            parts.append(delta)
                            deltas += 1
                            on_text(delta)
                    if time.monotonic() > deadline:
                        raise GenerationFailed(f"the answer took longer than {settings.KB_LLM_MAX_SECONDS:.0f}s")
        except httpx.TimeoutException as exc:
            said = f" after {len(''.join(parts))} characters" if parts else ""
            raise LlmTimeout(f"the model did not answer within {silent:g}s{said} ({type(exc).__name__})")
        except httpx.TransportError as exc:
            if parts:
                raise GenerationFailed(f"the model's stream broke off: {type(exc).__name__}: {exc}")
            raise LlmUnavailable(f"{type(exc).__name__}: {exc}")
        except json.JSONDecodeError as exc:
            raise GenerationFailed(f"the model sent an unreadable event: {exc}")
        return "".join(parts), usage, deltas


# --- choosing ------------------------------------------------------------------------------------

GENERATORS = ("extractive", "openai")


def generator_name(kb_slug: str) -> str:
    """The generator of a knowledge base: KB_GENERATOR_BY_KB, else KB_GENERATOR."""
    name = settings.KB_GENERATOR_BY_KB.get(kb_slug, settings.KB_GENERATOR)
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")
    return name


def model_label(name: str, embedder: str) -> str:
    """The model a generator would use, without building it (part of the answer-reuse fingerprint)."""
    return settings.KB_LLM_MODEL if name == "openai" else f"extractive:{embedder}"


def get_generator(name: str, *, embedder: str, request_id: str = "") -> Generator:
    if name == "openai":
        return OpenAIGenerator(request_id=request_id)
    return ExtractiveGenerator(embedder)
