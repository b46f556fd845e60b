"""The /ws/jobs/ consumer, driven through the real ASGI application (session auth, origin check)
over the real channels-redis layer: who may subscribe, the state on connect, relayed events."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client

from dashboard import consumers
from dashboard.consumers import MIN_INTERVAL
from ingestion.services import job_state
from kbportal.asgi import application
from kbportal.claiming import JobStatus
from kbportal.progress import ProgressThrottle, send_to_groups

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.anyio]


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def socket(query: str, user=None) -> WebsocketCommunicator:
    """A socket through the whole ASGI stack, signed in as `user` by a real session cookie."""
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if user is not None:
        cookie = await sync_to_async(session_cookie)(user)
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return WebsocketCommunicator(application, f"/ws/jobs/?{query}", headers=headers)


@pytest.fixture(autouse=True)
async def close_thread_connections():
    """The consumer reads the database in asgiref's sync thread; close that thread's connection
    after each test, or the test database cannot be dropped at the end of the run."""
    yield
    await sync_to_async(connections.close_all)()


def state_with(job, **changes) -> dict:
    return {**job_state(job), **changes}


async def close_code(communicator: WebsocketCommunicator) -> int:
    output = await communicator.receive_output(timeout=3)
    assert output["type"] == "websocket.close"
    return output["code"]


async def receive_until_final(communicator: WebsocketCommunicator, timeout: float = 5) -> list[dict]:
    messages = []
    while True:
        message = await communicator.receive_json_from(timeout=timeout)
        messages.append(message)
        if message.get("status") in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED):
            return messages


async def test_staff_socket_gets_the_jobs_state_on_connect(staff_user, make_job):
    job = await sync_to_async(make_job)(done=40)
    communicator = await socket(f"job={job.pk}", staff_user)
    connected, _ = await communicator.connect()
    assert connected
    state = await communicator.receive_json_from(timeout=3)
    assert state["type"] == "state" and state["scope"] == "job"
    assert [(j["id"], j["status"], j["done"], j["percent"]) for j in state["jobs"]] == [(job.pk, "running", 40, 40.0)]
    await communicator.disconnect()


async def test_anonymous_socket_is_closed_with_4401(make_job):
    job = await sync_to_async(make_job)()
    communicator = await socket(f"job={job.pk}")
    await communicator.connect()
    assert await close_code(communicator) == 4401


async def test_non_staff_socket_is_closed_with_4403(plain_user, make_job):
    job = await sync_to_async(make_job)()
    communicator = await socket(f"job={job.pk}", plain_user)
    await communicator.connect()
    assert await close_code(communicator) == 4403


async def test_socket_for_unknown_job_is_closed_with_4404(staff_user):
    communicator = await socket("job=999999", staff_user)
    await communicator.connect()
    assert await close_code(communicator) == 4404


async def test_socket_without_job_or_kb_is_closed_with_4400(staff_user):
    communicator = await socket("", staff_user)
    await communicator.connect()
    assert await close_code(communicator) == 4400


async def test_kb_socket_gets_active_and_recent_jobs_newest_first(staff_user, kb, make_job):
    old = await sync_to_async(make_job)(status=JobStatus.SUCCEEDED, done=100)
    active = await sync_to_async(make_job)(status=JobStatus.QUEUED, total=0)
    communicator = await socket(f"kb={kb.slug}", staff_user)
    await communicator.connect()
    state = await communicator.receive_json_from(timeout=3)
    assert (state["scope"], state["kb"]) == ("kb", kb.slug)
    assert [(j["id"], j["status"]) for j in state["jobs"]] == [(active.pk, "queued"), (old.pk, "succeeded")]
    await communicator.disconnect()


async def test_events_spaced_out_are_relayed_each_and_in_order(staff_user, make_job):
    job = await sync_to_async(make_job)()
    communicator = await socket(f"job={job.pk}", staff_user)
    await communicator.connect()
    await communicator.receive_json_from(timeout=3)
    for done in (10, 20, 30, 40):
        await asyncio.sleep(MIN_INTERVAL * 1.5)
        await sync_to_async(send_to_groups)([f"job-{job.pk}"], state_with(job, done=done))
    received = [(await communicator.receive_json_from(timeout=3))["done"] for _ in range(4)]
    assert received == [10, 20, 30, 40]
    await communicator.disconnect()


async def test_kb_socket_relays_events_of_the_kbs_jobs(staff_user, kb, make_job):
    job = await sync_to_async(make_job)()
    communicator = await socket(f"kb={kb.slug}", staff_user)
    await communicator.connect()
    await communicator.receive_json_from(timeout=3)
    await sync_to_async(send_to_groups)([f"job-{job.pk}", f"kb-{kb.slug}"], state_with(job, done=7))
    event = await communicator.receive_json_from(timeout=3)
    assert (event["type"], event["id"], event["done"]) == ("job", job.pk, 7)
    await communicator.disconnect()


def finish(job, **fields):
    """Finish the job's row as the pipeline does before it publishes the final state."""
    for name, value in {"status": JobStatus.SUCCEEDED, "stage": "done", **fields}.items():
        setattr(job, name, value)
    job.save()
    return job_state(job)


@pytest.fixture
def quick_recheck(monkeypatch):
    monkeypatch.setattr(consumers, "STALE_AFTER", 0.6)
    return 0.6


async def test_burst_is_coalesced_in_order_and_the_final_state_always_arrives(staff_user, make_job, quick_recheck):
    job = await sync_to_async(make_job)(total=300)
    communicator = await socket(f"job={job.pk}", staff_user)
    await communicator.connect()
    await communicator.receive_json_from(timeout=3)
    throttle = ProgressThrottle([f"job-{job.pk}"], interval=0)  # the producer's throttle off: a raw burst

    def burst():
        for done in range(1, 301):
            throttle.publish(state_with(job, done=done))
        throttle.publish(finish(job, done=300), final=True)

    await sync_to_async(burst)()
    # The channel layer delivers at most once and may lose part of a burst (even its last event):
    # the consumer's re-read of the silent job still delivers the final state.
    messages = await receive_until_final(communicator, timeout=quick_recheck * 5)
    # A running state at 300 and then the final one at 300 are two states; no state may come twice.
    states = [(message["done"], consumers.is_final(message)) for message in messages]
    assert states == sorted(set(states)), "events out of order or repeated"
    assert len(messages) < 100, f"{len(messages)} messages for 301 events: not coalesced"
    assert (messages[-1]["status"], messages[-1]["done"]) == ("succeeded", 300)
    assert await communicator.receive_nothing(timeout=quick_recheck * 2)
    await communicator.disconnect()


async def test_final_state_arrives_even_when_its_event_is_lost(staff_user, make_job, quick_recheck):
    job = await sync_to_async(make_job)(done=10)
    communicator = await socket(f"job={job.pk}", staff_user)
    await communicator.connect()
    await communicator.receive_json_from(timeout=3)
    await sync_to_async(finish)(job, done=100)  # finished in PostgreSQL, no event published
    message = await communicator.receive_json_from(timeout=quick_recheck * 4)
    assert (message["type"], message["status"], message["done"]) == ("job", "succeeded", 100)
    await communicator.disconnect()


async def test_silent_unchanged_job_is_not_sent_again(staff_user, make_job, quick_recheck):
    job = await sync_to_async(make_job)(status=JobStatus.QUEUED, total=0)
    communicator = await socket(f"job={job.pk}", staff_user)
    await communicator.connect()
    await communicator.receive_json_from(timeout=3)
    assert await communicator.receive_nothing(timeout=quick_recheck * 3)
    await communicator.disconnect()


async def test_latest_state_of_a_burst_is_flushed_without_a_final_event(staff_user, make_job):
    job = await sync_to_async(make_job)()
    communicator = await socket(f"job={job.pk}", staff_user)
    await communicator.connect()
    await communicator.receive_json_from(timeout=3)

    def burst():
        for done in range(1, 51):
            send_to_groups([f"job-{job.pk}"], state_with(job, done=done))

    await sync_to_async(burst)()
    last = None
    while last is None or last["done"] != 50:
        last = await communicator.receive_json_from(timeout=MIN_INTERVAL * 5)
    assert await communicator.receive_nothing(timeout=MIN_INTERVAL * 3)
    await communicator.disconnect()


async def test_late_progress_event_does_not_reopen_a_finished_job(staff_user, make_job):
    job = await sync_to_async(make_job)()
    communicator = await socket(f"job={job.pk}", staff_user)
    await communicator.connect()
    await communicator.receive_json_from(timeout=3)
    group = [f"job-{job.pk}"]
    await sync_to_async(send_to_groups)(group, state_with(job, status=JobStatus.CANCELED))
    await sync_to_async(send_to_groups)(group, state_with(job, status=JobStatus.RUNNING, done=99))
    assert (await communicator.receive_json_from(timeout=3))["status"] == "canceled"
    assert await communicator.receive_nothing(timeout=MIN_INTERVAL * 3)
    await communicator.disconnect()


async def test_resync_request_sends_the_current_state_again(staff_user, make_job):
    job = await sync_to_async(make_job)(done=5)
    communicator = await socket(f"job={job.pk}", staff_user)
    await communicator.connect()
    await communicator.receive_json_from(timeout=3)
    job.done = 60
    await sync_to_async(job.save)()
    await communicator.send_json_to({"type": "resync"})
    state = await communicator.receive_json_from(timeout=3)
    assert (state["type"], state["jobs"][0]["done"]) == ("state", 60)
    await communicator.disconnect()


async def test_a_socket_closed_by_the_server_is_never_sent_to(staff_user):
    """Refused with 4404 after joining the job's group (join first, read second): a job created
    meanwhile publishes into that group, and the closed socket must not be sent to (uvicorn raises
    "Unexpected ASGI message 'websocket.send', after sending 'websocket.close'")."""
    communicator = await socket("job=999999", staff_user)
    await communicator.connect()
    assert await close_code(communicator) == 4404
    await sync_to_async(send_to_groups)(["job-999999"], {"id": 999999, "status": "running", "done": 1})
    assert await communicator.receive_nothing(timeout=MIN_INTERVAL * 5)
