"""rq entry points of asking. Each body is gated on its PostgreSQL row (see kbportal.claiming)."""

from kbportal.claiming import sweep
from search.asking.answering import AnswerRunner
from search.asking.services import purge_expired_answers
from search.models import AnswerTask


def run_answer_task(task_id: int) -> str | None:
    return AnswerRunner.execute(task_id)


def sweep_answers() -> dict:
    """Re-enqueue answer tasks Redis forgot and those whose worker died."""
    return sweep(AnswerTask)


def purge_answers() -> int:
    """Delete answers older than KB_ANSWER_TTL_HOURS (run by the cron scheduler)."""
    return purge_expired_answers()
