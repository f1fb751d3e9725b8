# The MQTT client's cold code (agent/mqtt.py): the session set-up (CONNECT,
# SUBSCRIBE) and end (DISCONNECT), run once per connection, and inbound PUBLISH
# packets (desired documents: rare). Loaded while it runs, then released.
import asyncio
import struct

from agent.compat import const
from agent.mqtt import ConnectRefused, MQTTError, pack_str, varlen

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)
_DISCONNECT = const(0xE0)

REASONS = ("", "unacceptable protocol version", "client id rejected", "server unavailable",
           "bad user name or password", "not authorized")


async def connect(c, will_topic, will_payload, will_retain, will_qos, clean, timeout):
    c.reader, c.writer = await asyncio.wait_for(
        asyncio.open_connection(c.host, c.port, ssl=c.ssl), timeout)
    flags = 0x02 if clean else 0
    payload = bytearray(pack_str(c.client_id))
    if will_topic:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        payload += pack_str(will_topic) + pack_str(will_payload)
    if c.user is not None:
        flags |= 0x80
        payload += pack_str(c.user)
        if c.password is not None:
            flags |= 0x40
            payload += pack_str(c.password)
    var = pack_str("MQTT") + bytes((4, flags)) + struct.pack("!H", c.keepalive)
    body = var + payload
    await c.send(bytes((_CONNECT,)) + varlen(len(body)) + body)
    first, n = await asyncio.wait_for(c.read_header(), timeout)
    if first != _CONNACK or n != 2:
        raise MQTTError("expected CONNACK")
    ack = await c.read_exact(2)
    if ack[1] != 0:
        code = ack[1]
        raise ConnectRefused(code, REASONS[code] if code < len(REASONS) else code)
    c.tasks.append(asyncio.create_task(c.read_loop()))
    if c.keepalive:
        c.tasks.append(asyncio.create_task(c.ping_loop()))


async def subscribe(c, topic, qos):
    pid = c.next_pid()
    ev = asyncio.Event()
    c.acks[pid] = ev
    body = struct.pack("!H", pid) + pack_str(topic) + bytes((qos,))
    try:
        await c.send(bytes((_SUBSCRIBE,)) + varlen(len(body)) + body)
        await c.wait_ack(pid, ev)
    finally:
        c.acks.pop(pid, None)


async def disconnect(c):
    c.error = "closed by the box"
    try:
        await asyncio.wait_for(c.send(bytes((_DISCONNECT, 0))), 2)
    except Exception:
        pass
    await c.close()


async def discard(c, n):
    while n > 0:
        k = n if n < 512 else 512
        await c.read_exact(k)
        n -= k


async def on_publish(c, first, n):
    qos = (first >> 1) & 3
    tlen = struct.unpack("!H", await c.read_exact(2))[0]
    if tlen > 256 or tlen + 2 > n:
        raise MQTTError("topic too long")
    topic = (await c.read_exact(tlen)).decode()
    n -= 2 + tlen
    pid = None
    if qos:
        pid = struct.unpack("!H", await c.read_exact(2))[0]
        n -= 2
    if n > c.max_packet:
        # Refuse without allocating it: a box has little RAM.
        await discard(c, n)
        if c.on_oversized:
            c.on_oversized(topic, n)
    else:
        payload = await c.read_exact(n) if n else b""
        if c.on_message:
            c.on_message(topic, payload)
    if qos == 1:
        await c.send(bytes((_PUBACK, 2)) + struct.pack("!H", pid))
