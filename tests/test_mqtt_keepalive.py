"""The box's MQTT keepalive rule (agent/mqtt.py, docs/performance.md "Wire cost"):
a PINGREQ only after a keepalive without sending anything else, and a broker
that stops answering is seen within 1.5 x keepalive. Against a tiny fake broker
on CPython, keepalive 1 s."""
from __future__ import annotations

import asyncio
import time

from agent.mqtt import Client


class FakeBroker:
    """CONNACK, PUBACK for QoS 1 PUBLISH, PINGRESP; `mute` stops every answer."""

    def __init__(self):
        self.pings: list[float] = []
        self.publishes = 0
        self.mute = False

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                first = (await r.readexactly(1))[0]
                n, shift = 0, 0
                while True:
                    b = (await r.readexactly(1))[0]
                    n |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                body = await r.readexactly(n)
                kind = first & 0xF0
                if self.mute:
                    continue
                if kind == 0x10:
                    w.write(b"\x20\x02\x00\x00")
                elif kind == 0x30:
                    self.publishes += 1
                    tlen = int.from_bytes(body[:2], "big")
                    w.write(b"\x40\x02" + body[2 + tlen:4 + tlen])
                elif kind == 0xC0:
                    self.pings.append(time.monotonic())
                    w.write(b"\xd0\x00")
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


async def _session(scenario):
    fb = FakeBroker()
    srv = await asyncio.start_server(fb.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    c = Client("t1", "127.0.0.1", port, keepalive=1)
    await c.connect()
    try:
        return await scenario(c, fb)
    finally:
        await c.close()
        srv.close()


def test_no_ping_while_publishing_within_the_keepalive():
    async def scenario(c, fb):
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            await c.publish("homebox/v1/t1/telemetry/health", b"{}")
            await asyncio.sleep(0.4)
        return fb
    fb = asyncio.run(_session(scenario))
    assert fb.publishes >= 6 and fb.pings == []


def test_idle_box_pings_once_a_keepalive():
    async def scenario(c, fb):
        await asyncio.sleep(3.6)
        return fb
    fb = asyncio.run(_session(scenario))
    assert 2 <= len(fb.pings) <= 4, fb.pings
    gaps = [b - a for a, b in zip(fb.pings, fb.pings[1:])]
    assert all(0.9 <= g <= 1.6 for g in gaps), gaps          # a loaded machine runs late, never early


def test_silent_broker_is_seen_within_one_and_a_half_keepalives():
    async def scenario(c, fb):
        await c.publish("homebox/v1/t1/telemetry/health", b"{}")
        fb.mute = True
        t0 = time.monotonic()
        await asyncio.wait_for(c.wait_closed(), 5)
        return time.monotonic() - t0, c.error
    took, err = asyncio.run(_session(scenario))
    assert err == "keepalive timeout"
    assert 1.3 <= took <= 2.2, took
