"""Progress events over the real Redis channel layer: throttled, coalesced, final always sent."""

import asyncio

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from kbportal.progress import ProgressThrottle


async def subscribe(group: str) -> str:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    return channel


async def drain(channel: str, wait: float = 0.5) -> list[dict]:
    layer = get_channel_layer()
    events = []
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), timeout=wait)
        except TimeoutError:
            return events
        events.append(message["payload"])


def test_a_burst_of_updates_is_coalesced_and_the_final_state_always_goes_out():
    channel = async_to_sync(subscribe)("job-burst")
    throttle = ProgressThrottle(["job-burst"], interval=10)
    sent = [throttle.publish({"done": n}) for n in range(100)]
    throttle.publish({"done": 100, "status": "succeeded"}, final=True)
    events = async_to_sync(drain)(channel)
    assert sum(sent) == 1
    assert all(isinstance(event.pop("sent_at"), float) for event in events)  # publish time, for lag
    assert events == [{"done": 0}, {"done": 100, "status": "succeeded"}]
