# A small asyncio MQTT 3.1.1 client for the box: QoS 0/1, retain, last will,
# TLS, keepalive, and a hard cap on inbound packet size. Why not umqtt or
# chumicro-mqtt: docs/decisions/0001-mqtt-client.md.
import asyncio
import struct

from agent.compat import ticks_diff, ticks_ms

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class MQTTError(Exception):
    pass


class ConnectRefused(MQTTError):
    def __init__(self, code):
        super().__init__("connection refused: %s" % CONNACK_REASONS.get(code, code))
        self.code = code


def _varlen(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return out


def _str(s):
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
        self._r = None
        self._w = None
        self._lock = asyncio.Lock()
        self._pid = 0
        self._acks = {}             # packet id -> Event, for PUBACK and SUBACK
        self._last_rx = 0
        self._tasks = []
        self._closed = asyncio.Event()
        self.error = None

    # ---- wire helpers -------------------------------------------------
    async def _send(self, data):
        async with self._lock:
            self._w.write(data)
            await self._w.drain()

    async def _read_exact(self, n):
        try:
            data = await self._r.readexactly(n)
        except Exception:
            data = b""
        if len(data) != n:
            raise MQTTError("connection lost")
        self._last_rx = ticks_ms()
        return data

    async def _read_packet_header(self):
        first = (await self._read_exact(1))[0]
        n = 0
        shift = 0
        while True:
            b = (await self._read_exact(1))[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return first, n
            shift += 7
            if shift > 21:
                raise MQTTError("malformed remaining length")

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    # ---- session --------------------------------------------------------
    async def connect(self, will_topic=None, will_payload=b"", will_retain=True,
                      will_qos=1, clean=True, timeout=10):
        self._r, self._w = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.ssl), timeout)
        flags = 0x02 if clean else 0
        payload = bytearray(_str(self.client_id))
        if will_topic:
            flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
            payload += _str(will_topic) + _str(will_payload)
        if self.user is not None:
            flags |= 0x80
            payload += _str(self.user)
            if self.password is not None:
                flags |= 0x40
                payload += _str(self.password)
        var = _str("MQTT") + bytes((4, flags)) + struct.pack("!H", self.keepalive)
        body = var + payload
        await self._send(bytes((CONNECT,)) + _varlen(len(body)) + body)
        first, n = await asyncio.wait_for(self._read_packet_header(), timeout)
        if first != CONNACK or n != 2:
            raise MQTTError("expected CONNACK")
        ack = await self._read_exact(2)
        if ack[1] != 0:
            raise ConnectRefused(ack[1])
        self._tasks.append(asyncio.create_task(self._reader()))
        if self.keepalive:
            self._tasks.append(asyncio.create_task(self._pinger()))

    async def publish(self, topic, payload, qos=1, retain=False, timeout=10):
        if isinstance(payload, str):
            payload = payload.encode()
        t = _str(topic)
        pid = 0
        if qos:
            pid = self._next_pid()
            ev = asyncio.Event()
            self._acks[pid] = ev
            body_len = len(t) + 2 + len(payload)
        else:
            body_len = len(t) + len(payload)
        hdr = bytes((PUBLISH | (qos << 1) | (1 if retain else 0),)) + _varlen(body_len) + t
        if qos:
            hdr += struct.pack("!H", pid)
        try:
            await self._send(hdr + payload)
            if qos:
                await self._wait_ack(ev, timeout)
        finally:
            if qos:
                self._acks.pop(pid, None)

    async def subscribe(self, topic, qos=1, timeout=10):
        pid = self._next_pid()
        ev = asyncio.Event()
        self._acks[pid] = ev
        body = struct.pack("!H", pid) + _str(topic) + bytes((qos,))
        try:
            await self._send(bytes((SUBSCRIBE,)) + _varlen(len(body)) + body)
            await self._wait_ack(ev, timeout)
        finally:
            self._acks.pop(pid, None)

    async def _wait_ack(self, ev, timeout):
        # Wake on the ack or on the connection closing, whichever comes first.
        t0 = ticks_ms()
        while not ev.is_set():
            if self._closed.is_set():
                raise MQTTError(self.error or "connection closed")
            if ticks_diff(ticks_ms(), t0) > timeout * 1000:
                raise MQTTError("ack timeout")
            try:
                await asyncio.wait_for(ev.wait(), 0.2)
            except asyncio.TimeoutError:
                pass

    async def disconnect(self):
        self.error = "closed by the box"
        try:
            await asyncio.wait_for(self._send(bytes((DISCONNECT, 0))), 2)
        except Exception:
            pass
        await self.close()

    async def close(self, error=None):
        if error and not self.error:
            self.error = error
        self._closed.set()
        me = asyncio.current_task()
        for t in self._tasks:
            if t is not me:
                t.cancel()
        self._tasks = []
        if self._w is not None:
            try:
                self._w.close()
                await self._w.wait_closed()
            except Exception:
                pass
            self._w = None

    async def wait_closed(self):
        await self._closed.wait()

    @property
    def connected(self):
        return self._w is not None and not self._closed.is_set()

    # ---- background tasks -------------------------------------------------
    async def _pinger(self):
        try:
            while True:
                await asyncio.sleep(self.keepalive / 2)
                if ticks_diff(ticks_ms(), self._last_rx) > self.keepalive * 1500:
                    await self.close("keepalive timeout")
                    return
                await self._send(bytes((PINGREQ, 0)))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await self.close("ping failed: %s" % e)

    async def _reader(self):
        try:
            while True:
                first, n = await self._read_packet_header()
                kind = first & 0xF0
                if kind == PUBLISH:
                    await self._on_publish(first, n)
                elif kind in (PUBACK, SUBACK):
                    data = await self._read_exact(n)
                    ev = self._acks.get(struct.unpack("!H", data[:2])[0])
                    if kind == SUBACK and len(data) > 2 and data[2] == 0x80:
                        await self.close("subscription refused")
                        return
                    if ev is not None:
                        ev.set()
                elif kind == PINGRESP:
                    if n:
                        await self._read_exact(n)
                else:
                    await self._discard(n)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await self.close(str(e) or "connection lost")

    async def _discard(self, n):
        while n > 0:
            k = n if n < 512 else 512
            await self._read_exact(k)
            n -= k

    async def _on_publish(self, first, n):
        qos = (first >> 1) & 3
        tlen = struct.unpack("!H", await self._read_exact(2))[0]
        if tlen > 256 or tlen + 2 > n:
            raise MQTTError("topic too long")
        topic = (await self._read_exact(tlen)).decode()
        n -= 2 + tlen
        pid = None
        if qos:
            pid = struct.unpack("!H", await self._read_exact(2))[0]
            n -= 2
        if n > self.max_packet:
            # Refuse without allocating it: a box has little RAM.
            await self._discard(n)
            if self.on_oversized:
                self.on_oversized(topic, n)
        else:
            payload = await self._read_exact(n) if n else b""
            if self.on_message:
                self.on_message(topic, payload)
        if qos == 1:
            await self._send(bytes((PUBACK, 2)) + struct.pack("!H", pid))
