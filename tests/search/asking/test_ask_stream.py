"""/ws/answers/<id>/ over the real channels-redis layer: who may listen, state, ordered tokens, final answer."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from kbportal.asgi import application
from knowledge.services import api_key_create
from search.asking.services import answer_submit
from tests.search.asking.ask_support import llm, run_in_thread, space_kb  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.anyio]

TOKENS = [f"t{n:02d}" for n in range(30)]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
async def close_thread_connections():
    """The consumer reads the database in asgiref's sync thread; close that connection after each test."""
    yield
    await sync_to_async(connections.close_all)()


def new_key(kb, scopes=("ask",)) -> str:
    return api_key_create(name="asker", kb_slugs=[kb.slug], scopes=list(scopes))[1]


def socket(task_id: int, key: str = "", header: bool = False) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    path = f"/ws/answers/{task_id}/"
    if key and header:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    elif key:
        path += f"?key={key}"
    return WebsocketCommunicator(application, path, headers=headers)


@sync_to_async
def ask(kb, key: str, question: str = "How is bread baked?"):
    from knowledge.authentication import authenticate_key

    task, _ = answer_submit(kb_slug=kb.slug, question=question, api_key=authenticate_key(key))
    return task


async def close_code(communicator) -> int:
    output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close"
    return output.get("code", 1000)  # a plain close() sends no code: 1000


async def test_streamed_tokens_arrive_in_order_then_the_final_answer(llm, space_kb):  # noqa: F811
    llm.reply = " ".join(TOKENS)
    llm.answer_seconds = 1.5
    key = await sync_to_async(new_key)(space_kb)
    task = await ask(space_kb, key)
    communicator = socket(task.pk, key)
    connected, _ = await communicator.connect()
    assert connected
    state = await communicator.receive_json_from(timeout=5)
    assert (state["type"], state["status"], state["answer"]) == ("state", "queued", "")
    thread = await sync_to_async(run_in_thread)(task.pk)
    text, tokens, final = "", [], None
    while final is None:
        message = await communicator.receive_json_from(timeout=15)
        if message["type"] == "token":
            assert message["offset"] == len(text)
            text += message["text"]
            tokens.append(message)
        elif message["type"] == "state":
            text = message["answer"]
        else:
            final = message
    await sync_to_async(thread.join)(10)
    assert len(tokens) > 3  # streamed in several pieces, not at the end
    assert text.split() == TOKENS
    assert final["status"] == "succeeded" and final["answer"] == text
    assert await close_code(communicator) == 1000


async def test_socket_of_a_finished_task_gets_the_final_answer_at_once(llm, space_kb):  # noqa: F811
    key = await sync_to_async(new_key)(space_kb)
    task = await ask(space_kb, key)
    await sync_to_async(lambda: run_in_thread(task.pk).join(20))()
    communicator = socket(task.pk, key, header=True)
    await communicator.connect()
    final = await communicator.receive_json_from(timeout=5)
    assert final["type"] == "answer" and final["status"] == "succeeded" and final["citations"]


async def test_key_without_ask_scope_is_closed_with_4403(space_kb):  # noqa: F811
    key = await sync_to_async(new_key)(space_kb)
    task = await ask(space_kb, key)
    communicator = socket(task.pk, await sync_to_async(new_key)(space_kb, ("search",)))
    await communicator.connect()
    assert await close_code(communicator) == 4403


async def test_another_keys_task_is_closed_as_not_found(space_kb):  # noqa: F811
    task = await ask(space_kb, await sync_to_async(new_key)(space_kb))
    communicator = socket(task.pk, await sync_to_async(new_key)(space_kb))
    await communicator.connect()
    assert await close_code(communicator) == 4404


async def test_no_credentials_is_closed_with_4401(space_kb):  # noqa: F811
    task = await ask(space_kb, await sync_to_async(new_key)(space_kb))
    communicator = socket(task.pk, "kb_bad_key")
    await communicator.connect()
    assert await close_code(communicator) == 4401
