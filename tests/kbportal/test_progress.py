"""Progress events over the real Redis channel layer: throttled, coalesced, final always sent."""

import asyncio
from collections.abc import Callable

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer

from kbportal.progress import ProgressThrottle


def collect(group: str, produce: Callable[[], object], wait: float = 0.5) -> list[dict]:
    """The payloads a channel of `group` receives while `produce` (sync code) publishes.

    Subscribing and receiving happen in one event loop, as in a server process: the pub/sub layer
    keeps its subscriptions per loop. `produce` runs in this thread; its `async_to_sync` publishes
    from that same loop, as a worker's from its own.
    """

    async def listen() -> list[dict]:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await sync_to_async(produce)()
        events = []
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout=wait)
            except TimeoutError:
                return events
            events.append(message["payload"])

    return async_to_sync(listen)()


def test_a_burst_of_updates_is_coalesced_and_the_final_state_always_goes_out():
    throttle = ProgressThrottle(["job-burst"], interval=10)
    sent = []

    def burst():
        sent.extend(throttle.publish({"done": n}) for n in range(100))
        throttle.publish({"done": 100, "status": "succeeded"}, final=True)

    events = collect("job-burst", burst)
    assert sum(sent) == 1
    assert all(isinstance(event.pop("sent_at"), float) for event in events)  # publish time, for lag
    assert events == [{"done": 0}, {"done": 100, "status": "succeeded"}]
