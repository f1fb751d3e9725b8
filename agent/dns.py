# The box's DNS forwarder (issue 15, docs/decisions/0011-dns-enforcement.md): the
# home's devices get the box as their DNS server from its DHCP, so the parental
# state (agent/rules/schedule.py, handed in by the effects pass) is enforced here:
# - a device blocked now (schedule, pause, or the unknown-clock rule) gets REFUSED;
# - a name on the local blocklist (config "dns_blocklist", suffixes) gets NXDOMAIN;
# - the rest goes to the upstream resolvers of the device's DNS profile
#   ("standard" | "family" | "child", from the filtering level; config
#   "dns_upstreams"), with a small cache that honours the answers' TTLs.
# A device is known by its MAC: the HAL's leases() maps IP -> MAC (None where the
# HAL cannot, and then nothing is enforced per device). Malformed or oversized
# packets are dropped and counted (health: dns_dropped). It works from the stored
# state only: the broker may be down.
# Resident while enabled (config "dns_port"): two preallocated packet buffers,
# a fixed table of queries in flight, a bounded cache.
import asyncio
import socket

from agent.compat import MICROPYTHON, const, ticks_add, ticks_diff, ticks_ms
from agent.log import log

MAXQ = const(512)            # a query longer than this is dropped (oversized)
MAXR = const(1232)           # the largest upstream answer taken (EDNS's safe size)
PENDING = const(16)          # queries in flight to the upstreams
TIMEOUT_MS = const(3000)     # an unanswered query's slot is freed after this
PROFILES = ("standard", "family", "child")
# Public resolvers per profile (the config replaces them): Quad9 (malware
# blocking), Cloudflare for Families (malware + adult), CleanBrowsing Family.
UPSTREAMS = {"standard": ["9.9.9.9:53"], "family": ["1.1.1.3:53"], "child": ["185.228.168.168:53"]}

if MICROPYTHON:
    from asyncio import core as _core

    async def _readable(s):
        yield _core._io_queue.queue_read(s)
else:
    async def _readable(s):
        loop = asyncio.get_running_loop()
        f = loop.create_future()
        fd = s.fileno()
        loop.add_reader(fd, lambda: f.done() or f.set_result(None))
        try:
            await f
        finally:
            loop.remove_reader(fd)


def _addr(s):
    h, _, p = s.rpartition(":")
    return socket.getaddrinfo(h, int(p))[0][-1]


def _ip(a):
    # MicroPython's unix port gives a raw sockaddr_in, CPython and the ESP32 a tuple.
    if isinstance(a, tuple):
        return a[0]
    return "%d.%d.%d.%d" % (a[4], a[5], a[6], a[7])


def question_end(b, n):
    """End of the single question of a DNS query in b[:n], or -1 if it is not one
    well-formed standard query (header, one question, no answers)."""
    if n < 17 or b[2] & 0xF8 or b[4] or b[5] != 1 or b[6] or b[7] or b[8] or b[9] or b[10] or b[11] > 1:
        return -1                # a response, not QUERY, not one question, or answers in it
    i = 12
    while True:
        ln = b[i]
        if ln == 0:
            break
        if ln > 63 or i + ln + 1 >= n or i - 12 + ln > 253:
            return -1            # compression in a question, a label past the end, a long name
        i += ln + 1
    i += 5
    return i if i <= n else -1


def qname(b):
    """The query's name, lower case, as b"www.example.org" (question already checked)."""
    out = bytearray()
    i = 12
    while b[i]:
        if out:
            out.append(46)
        ln = b[i]
        for c in b[i + 1:i + 1 + ln]:
            out.append(c + 32 if 65 <= c <= 90 else c)
        i += ln + 1
    return bytes(out)


def walk(b, n, qend, age):
    """The answer's records after the question: with age < 0, the smallest TTL of
    the answer section (-1 if malformed or none); with age >= 0, every TTL is
    lowered by age seconds in place (a cached answer served later)."""
    cnt = ((b[6] << 8) | b[7], (b[8] << 8) | b[9], (b[10] << 8) | b[11])
    i = qend
    low = -1
    for sec in range(3):
        for _ in range(cnt[sec]):
            while i < n:            # the owner name: labels, or a pointer that ends it
                ln = b[i]
                if ln == 0:
                    i += 1
                    break
                if ln & 0xC0 == 0xC0:
                    i += 2
                    break
                if ln > 63:
                    return -1
                i += ln + 1
            if i + 10 > n:
                return -1
            typ = (b[i] << 8) | b[i + 1]
            ttl = (b[i + 4] << 24) | (b[i + 5] << 16) | (b[i + 6] << 8) | b[i + 7]
            if typ != 41:           # not EDNS's OPT, whose "TTL" is flags
                if age >= 0:
                    t = ttl - age if ttl > age else 0
                    b[i + 4] = (t >> 24) & 255
                    b[i + 5] = (t >> 16) & 255
                    b[i + 6] = (t >> 8) & 255
                    b[i + 7] = t & 255
                elif sec == 0 and (low < 0 or ttl < low):
                    low = ttl
            i += 10 + ((b[i + 8] << 8) | b[i + 9])
            if i > n:
                return -1
    return low


class Forwarder:
    # Counters (health): answered from cache, forwarded, refused, blocklisted,
    # dropped (malformed, oversized, unmatched answers), upstream timeouts.
    hits = fwd = refused = nx = dropped = timeouts = evicted = 0
    state = None             # the parental enforcement state (agent/rules/schedule.py)
    sock = usock = None
    miss = None              # the last address not found in the leases

    def __init__(self, box, cfg):
        self.box = box
        self.port = cfg["dns_port"]
        self.host = cfg.get("dns_host") or "0.0.0.0"
        ups = cfg.get("dns_upstreams") or UPSTREAMS
        self.ups = [[_addr(a) for a in ups.get(p) or ups.get("standard") or ()] for p in PROFILES]
        self.turn = [0, 0, 0]  # the upstream in use per profile; moves on after a timeout
        self.block = [d.lower().encode() for d in cfg.get("dns_blocklist") or ()]
        self.cache = {}      # question (profile byte + wire name, type, class) -> [expiry ms, stored ms, answer]
        self.cmax = cfg.get("dns_cache", 16)
        self.ttl_cap = cfg.get("dns_ttl_cap", 3600)
        self.buf = bytearray(MAXQ + 1)
        self.rbuf = bytearray(MAXR + 1)
        # the table of queries in flight: [upstream id, client addr, client id (2 bytes), key, sent ms, profile]
        self.slots = [[-1, None, 0, None, 0, 0] for _ in range(PENDING)]
        self.macs = {}       # ip -> mac, from the HAL's leases()
        self.maps = getattr(box.hal, "leases", None) is not None
        self.map_ms = ticks_ms()
        if self.maps:
            self.refresh()   # also learns whether this HAL can map at all
        self.seen = {}       # mac -> ticks of its last query (bounded): who really uses us
        import random
        self.rand = random.getrandbits

    # ---- the parental state and the per-device report -------------------------------
    def mac_of(self, ip):
        # A new address is looked up at once (the kernel or the DHCP server has it
        # by the time its first packet arrives); one not found is looked up again
        # at most once a second.
        m = self.macs.get(ip)
        if m is None and self.maps and (ip != self.miss or ticks_diff(ticks_ms(), self.map_ms) > 1000):
            self.refresh()
            m = self.macs.get(ip)
            self.miss = None if m is not None else ip
        return m

    def refresh(self):
        self.map_ms = ticks_ms()
        try:
            got = self.box.hal.leases()
        except Exception as e:
            log("dns_leases_failed", "error", repr(e))
            got = None
        if got is None:
            self.maps = False
        else:
            self.macs = got

    def saw(self, mac):
        s = self.seen
        new = mac not in s
        if new and len(s) >= 32:
            old = None
            for k in s:
                if old is None or ticks_diff(s[k], s[old]) < 0:
                    old = k
            del s[old]
        s[mac] = ticks_ms()
        if new:
            # A device's first query: the report now says its rules are in force.
            p = getattr(self.box, "effects_pass", None)
            if p is not None:
                try:
                    p(False)
                except Exception as e:
                    log("effects_failed", "reason", e)

    def uses_us(self, mac, window_s=3600):
        t = self.seen.get(mac)
        return t is not None and ticks_diff(ticks_ms(), t) < window_s * 1000

    def health(self):
        return {"dns_hits": self.hits, "dns_forwarded": self.fwd, "dns_refused": self.refused,
                "dns_blocklisted": self.nx, "dns_dropped": self.dropped, "dns_timeouts": self.timeouts,
                "dns_evicted": self.evicted}

    # ---- the sockets and their tasks ---------------------------------------------------
    def open(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(socket.getaddrinfo(self.host, self.port)[0][-1])
        s.setblocking(False)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.setblocking(False)
        self.sock, self.usock = s, u
        log("dns_listening", "port", self.port, "upstreams", sum(len(x) for x in self.ups))

    async def serve(self):
        s = self.sock
        while True:
            await _readable(s)
            for _ in range(16):
                try:
                    d, a = s.recvfrom(MAXQ + 1)
                except OSError:
                    break
                except MemoryError:         # a fragmented heap: this packet is lost, not the task
                    self.dropped += 1
                    break
                try:
                    self.on_query(d, a)
                except Exception as e:      # never let one packet stop the resolver
                    self.dropped += 1
                    log("dns_error", "error", repr(e))
                d = a = None

    async def relay(self):
        # Answers are read straight into the preallocated buffer: no allocation.
        u = self.usock
        rin = getattr(u, "recv_into", None) or u.readinto
        r = self.rbuf
        while True:
            await _readable(u)
            for _ in range(16):
                try:
                    n = rin(r)
                except OSError:
                    break
                if n is None:
                    break
                try:
                    self.answer(n)
                except Exception as e:
                    self.dropped += 1
                    log("dns_error", "error", repr(e))

    # ---- a query from a device ---------------------------------------------------------
    def on_query(self, d, a):
        n = len(d)
        b = self.buf
        if n > MAXQ:
            self.dropped += 1
            return
        b[:n] = d
        q = question_end(b, n)
        if q < 0:
            self.dropped += 1
            return
        mac = self.mac_of(_ip(a))
        st = self.state
        prof = 0
        if mac is not None:
            self.saw(mac)
        if st is not None:
            if mac is not None and mac in st["blocked"]:
                self.refused += 1
                self.reply(a, q, 5)       # REFUSED: not cached by the device, unlike NXDOMAIN
                return
            p = st["devices_dns"].get(mac) if mac is not None else None
            p = p or st["dns"]
            prof = PROFILES.index(p) if p in PROFILES else 0
        if self.block:
            name = qname(b)
            for dom in self.block:
                if name == dom or (name.endswith(dom) and name[-len(dom) - 1] == 46):
                    self.nx += 1
                    self.reply(a, q, 3)   # NXDOMAIN
                    return
        key = bytes([prof]) + bytes(b[12:q]).lower()
        c = self.cache.get(key)
        now = ticks_ms()
        if c is not None:
            if ticks_diff(c[0], now) > 0:
                self.hits += 1
                r = self.rbuf
                m = len(c[2])
                r[:m] = c[2]
                r[0], r[1] = b[0], b[1]
                walk(r, m, q, ticks_diff(now, c[1]) // 1000)
                self.sock.sendto(memoryview(r)[:m], a)
                return
            del self.cache[key]
        ups = self.ups[prof]
        if not ups:
            self.reply(a, q, 2)           # SERVFAIL: no upstream for this profile
            return
        # A free slot, else the oldest query in flight gives way (its device
        # retries): a lost answer never blocks the table.
        slot = None
        for x in self.slots:
            if x[0] < 0:
                slot = x
                break
            if slot is None or ticks_diff(x[4], slot[4]) < 0:
                slot = x
        if slot[0] >= 0:
            if ticks_diff(now, slot[4]) > TIMEOUT_MS:
                self.timeouts += 1
                self.turn[slot[5]] += 1   # that upstream did not answer: try the next one
            else:
                self.evicted += 1
        uid = self.rand(16)
        slot[0], slot[1], slot[2], slot[3], slot[4], slot[5] = uid, a, (b[0] << 8) | b[1], key, now, prof
        b[0], b[1] = uid >> 8, uid & 255
        self.fwd += 1
        self.usock.sendto(memoryview(b)[:n], ups[self.turn[prof] % len(ups)])

    def reply(self, a, q, rcode):
        # The query itself, turned into an empty answer: QR, RD kept, RA, rcode.
        b = self.buf
        b[2] = 0x80 | (b[2] & 0x01)
        b[3] = 0x80 | rcode
        b[6] = b[7] = b[8] = b[9] = b[10] = b[11] = 0
        self.sock.sendto(memoryview(b)[:q], a)

    # ---- an answer from an upstream ------------------------------------------------------
    def on_answer(self, d):
        n = len(d)
        if n > MAXR:
            self.dropped += 1
            return
        self.rbuf[:n] = d
        self.answer(n)

    def answer(self, n):
        # An upstream's answer, in rbuf[:n] (n > MAXR: it did not fit, dropped).
        r = self.rbuf
        if n < 17 or n > MAXR:
            self.dropped += 1
            return
        uid = (r[0] << 8) | r[1]
        for x in self.slots:
            if x[0] == uid:
                break
        else:
            self.dropped += 1             # late, duplicate or forged
            return
        key = x[3]
        q = 12 + len(key) - 1
        if not r[2] & 0x80 or q > n or bytes(r[12:q]).lower() != key[1:]:
            self.dropped += 1             # not the answer to that question
            return
        a = x[1]
        x[0], x[1], x[3] = -1, None, None
        cid = x[2]
        r[0], r[1] = cid >> 8, cid & 255
        self.sock.sendto(memoryview(r)[:n], a)
        if r[3] & 0x0F == 0 and n <= MAXQ and self.cmax:
            ttl = walk(r, n, q, -1)
            if ttl > 0:
                c = self.cache
                if len(c) >= self.cmax:
                    self.evict()
                now = ticks_ms()
                c[key] = [ticks_add(now, min(ttl, self.ttl_cap) * 1000), now, bytes(r[:n])]

    def evict(self):
        c = self.cache
        now = ticks_ms()
        first = None
        for k in c:
            if ticks_diff(c[k][0], now) <= 0:
                first = k
                break
            if first is None or ticks_diff(c[k][0], c[first][0]) < 0:
                first = k
        del c[first]


def start(box):
    """The forwarder's two tasks (queries from the home, answers from the upstreams)."""
    f = Forwarder(box, box.cfg)
    f.open()
    box.dns = f
    return [asyncio.create_task(box.guard("dns", f.serve)),
            asyncio.create_task(box.guard("dns_relay", f.relay))]
