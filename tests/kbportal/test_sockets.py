"""kbportal.sockets: group events reach a socket without Channels' per-message hop to the sync thread.

Channels' own dispatch runs `close_old_connections` in the process's one thread-sensitive executor
before every message; for a group of a thousand sockets that queued a thousand hops per event
(`manage.py bench_ws --settings=bench.settings`: progress p95 at 1,000 subscribers about three
times as long). The socket's close guard is proved with the job consumer (tests/dashboard).
"""

import pytest
from channels import consumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from kbportal.sockets import JsonSocketConsumer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def sync_hops(monkeypatch):
    """Each time a consumer closes old database connections through the sync thread."""
    hops = []

    async def noting_hop():
        hops.append(1)

    monkeypatch.setattr(consumer, "aclose_old_connections", noting_hop)
    return hops


class Relay:
    """Joins the group `relay`, sends on each `relay.event` what the event carries."""

    async def connect(self):
        await self.channel_layer.group_add("relay", self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard("relay", self.channel_name)

    async def relay_event(self, event):
        await self.send_json(event["payload"])


class OurRelay(Relay, JsonSocketConsumer):
    pass


class ChannelsRelay(Relay, AsyncJsonWebsocketConsumer):
    pass


async def relayed(consumer_class) -> dict:
    communicator = WebsocketCommunicator(consumer_class.as_asgi(), "/ws/relay/")
    connected, _ = await communicator.connect()
    assert connected
    await get_channel_layer().group_send("relay", {"type": "relay.event", "payload": {"n": 1}})
    message = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()
    return message


async def test_group_events_are_delivered_without_a_hop_to_the_sync_thread(sync_hops):
    assert await relayed(OurRelay) == {"n": 1}
    assert sync_hops == []


async def test_channels_own_dispatch_hops_for_every_message(sync_hops):
    assert await relayed(ChannelsRelay) == {"n": 1}
    assert len(sync_hops) >= 2  # the connect and the event, at least
