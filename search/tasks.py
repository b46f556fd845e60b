"""rq entry points of the search app. Each body is gated on its PostgreSQL row (see kbportal.claiming)."""

from kbportal.claiming import sweep


def run_answer_task(task_id: int) -> str | None:
    from search.answering import AnswerRunner

    return AnswerRunner.execute(task_id)


def sweep_answers() -> dict:
    """Re-enqueue answer tasks Redis forgot and those whose worker died."""
    from search.models import AnswerTask

    return sweep(AnswerTask)


def purge_answers() -> int:
    """Delete answers older than KB_ANSWER_TTL_HOURS (run by the cron scheduler)."""
    from search.asking import purge_expired_answers

    return purge_expired_answers()
