"""Asking: questions answered from a knowledge base's passages, with citations.

`services` (submit, read, wait, cancel, retry, purge), `answering` (the runner of an `AnswerTask`:
retrieve, build the context, generate), `generators` (extractive, OpenAI-compatible), `relevance`
(whether retrieval found anything worth answering from), `api` (/api/v1/ask, /api/v1/queues),
`consumers` (/ws/answers/<id>/), `tasks` (rq entry points). The model is `search.models.AnswerTask`.
"""
