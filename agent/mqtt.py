# A small asyncio MQTT 3.1.1 client for the box: QoS 0/1, retain, last will,
# TLS, keepalive, and a hard cap on inbound packet size. Why not umqtt or
# chumicro-mqtt: docs/decisions/0001-mqtt-client.md.
# What runs once per connection or rarely (CONNECT, SUBSCRIBE, DISCONNECT, an
# inbound PUBLISH) is cold code in agent/mqtt_cold.py, loaded while it runs.
import asyncio
import struct

from agent.compat import cold, const, ticks_diff, ticks_ms

# Packet types; const(): no RAM on MicroPython.
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBACK = const(0x90)
_PINGREQ = const(0xC0)
_PINGRESP = const(0xD0)


class MQTTError(Exception):
    pass


class ConnectRefused(MQTTError):
    def __init__(self, code, reason):
        super().__init__("connection refused: %s" % reason)
        self.code = code


def varlen(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return out


def pack_str(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("!H", len(s)) + s


class Client:
    """One MQTT session. Create a new Client for each connection attempt."""

    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive=60, ssl=None, max_packet=16384):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.ssl = ssl
        self.max_packet = max_packet
        self.on_message = None      # fn(topic: str, payload: bytes)
        self.on_oversized = None    # fn(topic: str, length: int)
        self.on_close = None        # fn(), when the session ends
        self.reader = None
        self.writer = None
        self._busy = False          # a write is draining
        self._pid = 0
        self.acks = {}              # packet id -> Event, until its PUBACK or SUBACK
        self._last_rx = 0
        self._last_tx = 0
        self.tasks = []             # the reader and the pinger
        self._closed = asyncio.Event()
        self.error = None

    # ---- wire helpers -------------------------------------------------
    async def send(self, data):
        # One writer at a time: MicroPython's asyncio lets one task wait on a
        # stream for writing. Contention is rare (a PUBACK or a ping during a
        # publish), so a flag does what an asyncio.Lock would, without its module.
        while self._busy:
            await asyncio.sleep(0.002)
        self._busy = True
        try:
            self.writer.write(data)
            await self.writer.drain()
            self._last_tx = ticks_ms()
        finally:
            self._busy = False

    async def read_exact(self, n):
        try:
            data = await self.reader.readexactly(n)
        except Exception:
            data = b""
        if len(data) != n:
            raise MQTTError("connection lost")
        self._last_rx = ticks_ms()
        return data

    async def read_header(self):
        first = (await self.read_exact(1))[0]
        n = 0
        shift = 0
        while True:
            b = (await self.read_exact(1))[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return first, n
            shift += 7
            if shift > 21:
                raise MQTTError("malformed remaining length")

    def next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    # ---- session --------------------------------------------------------
    def connect(self, will_topic=None, will_payload=b"", will_retain=True, will_qos=1,
                clean=True, timeout=10):
        """Coroutine: open the connection, CONNECT, start the reader and pinger."""
        return cold("agent.mqtt_cold", "connect", self, will_topic, will_payload, will_retain, will_qos,
                    clean, timeout)

    def subscribe(self, topic, qos=1):
        """Coroutine: SUBSCRIBE and wait for the SUBACK."""
        return cold("agent.mqtt_cold", "subscribe", self, topic, qos)

    def disconnect(self):
        """Coroutine: DISCONNECT (no last will), then close."""
        return cold("agent.mqtt_cold", "disconnect", self)

    async def publish(self, topic, payload, qos=1, retain=False):
        """Send a PUBLISH; with QoS 1, return once its PUBACK came. A lost
        connection raises MQTTError: a dead broker is found by the keepalive
        (no packet for 1.5 x keepalive closes the session), so no per-message
        timer is needed. Bound it with asyncio.wait_for where one is."""
        if isinstance(payload, str):
            payload = payload.encode()
        t = pack_str(topic)
        pid = 0
        if qos:
            pid = self.next_pid()
            ev = asyncio.Event()
            self.acks[pid] = ev
            body_len = len(t) + 2 + len(payload)
        else:
            body_len = len(t) + len(payload)
        hdr = bytes((_PUBLISH | (qos << 1) | (1 if retain else 0),)) + varlen(body_len) + t
        if qos:
            hdr += struct.pack("!H", pid)
        try:
            # One write: a header sent on its own would wait for the broker's
            # delayed ACK before the payload could follow (Nagle).
            await self.send(hdr + payload)
            if qos:
                await self.wait_ack(pid, ev)
        finally:
            if qos:
                self.acks.pop(pid, None)

    async def wait_ack(self, pid, ev):
        # Woken by the ack (the reader removes the packet id) or by close(),
        # which wakes every waiter.
        if not self._closed.is_set():
            await ev.wait()
        if pid in self.acks:
            raise MQTTError(self.error or "connection closed")

    async def close(self, error=None):
        if error and not self.error:
            self.error = error
        self._closed.set()
        for ev in self.acks.values():
            ev.set()
        if self.on_close:
            self.on_close()
        me = asyncio.current_task()
        for t in self.tasks:
            if t is not me:
                t.cancel()
        self.tasks = []
        if self.writer is not None:
            try:
                self.writer.close()
                await self.writer.wait_closed()
            except Exception:
                pass
            self.writer = None

    async def wait_closed(self):
        await self._closed.wait()

    @property
    def connected(self):
        return self.writer is not None and not self._closed.is_set()

    # ---- background tasks -------------------------------------------------
    async def ping_loop(self):
        # Wire cost: a PINGREQ only when nothing else was sent for a keepalive
        # (MQTT needs one packet a keepalive; the broker drops us after 1.5x).
        # A dead broker: nothing received for 1.5 x keepalive closes the session
        # (every send but a PUBACK gets an answer; a keepalive without one, a ping).
        ka = self.keepalive * 1000
        try:
            while True:
                now = ticks_ms()
                rx = ticks_diff(now, self._last_rx)
                if rx >= ka * 3 // 2:
                    await self.close("keepalive timeout")
                    return
                tx = ticks_diff(now, self._last_tx)
                # also when nothing came back for a keepalive (a send with no answer)
                if tx >= ka or (rx >= ka and tx >= ka // 4):
                    await self.send(bytes((_PINGREQ, 0)))
                    tx = 0
                nxt = ka - rx if rx < ka else ka // 4 - tx
                await asyncio.sleep(max(100, min(ka - tx, ka * 3 // 2 - rx, nxt)) / 1000)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await self.close("ping failed: %s" % e)

    async def read_loop(self):
        try:
            while True:
                first, n = await self.read_header()
                kind = first & 0xF0
                if kind == _PUBLISH:
                    await cold("agent.mqtt_cold", "on_publish", self, first, n)
                elif kind in (_PUBACK, _SUBACK):
                    data = await self.read_exact(n)
                    if kind == _SUBACK and len(data) > 2 and data[2] == 0x80:
                        await self.close("subscription refused")   # wakes the waiter
                        return
                    ev = self.acks.pop(struct.unpack("!H", data[:2])[0], None)
                    if ev is not None:
                        ev.set()
                elif kind == _PINGRESP and not n:
                    pass
                else:
                    await cold("agent.mqtt_cold", "discard", self, n)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await self.close(str(e) or "connection lost")
