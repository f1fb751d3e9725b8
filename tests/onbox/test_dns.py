# The DNS forwarder's packet logic (agent/dns.py) with stand-in sockets: who is
# refused, which upstream a profile goes to, the blocklist, the TTL-honouring cache,
# and malformed packets dropped and counted. CPython and MicroPython.
from agent import dns

TABLET = "02:00:00:00:00:0a"
PHONE = "02:00:00:00:00:0b"
TIP = ("10.0.0.10", 5000)
PIP = ("10.0.0.11", 5001)


class Sock:
    def __init__(self):
        self.sent = []

    def sendto(self, data, addr):
        self.sent.append((bytes(data), addr))


class Hal:
    def leases(self):
        return {"10.0.0.10": TABLET, "10.0.0.11": PHONE}


class FakeBox:
    hal = Hal()
    passes = 0

    def effects_pass(self, changed):
        FakeBox.passes += 1


def query(name, qid=0x1234, qtype=1):
    b = bytearray([qid >> 8, qid & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    for lab in name.split("."):
        b.append(len(lab))
        b += lab.encode()
    b += bytes([0, 0, qtype, 0, 1])
    return bytes(b)


def answer(q, ttl, ip=(10, 1, 1, 1)):
    r = bytearray(q)
    r[2] = 0x81
    r[3] = 0x80
    r[7] = 1
    r += bytes([0xC0, 12, 0, 1, 0, 1, (ttl >> 24) & 255, (ttl >> 16) & 255, (ttl >> 8) & 255, ttl & 255, 0, 4])
    r += bytes(ip)
    return bytes(r)


def fwd(**cfg):
    c = {"dns_port": 0, "dns_upstreams": {"standard": ["127.0.0.1:5301"], "child": ["127.0.0.1:5303"]},
         "dns_blocklist": ["bad.example"]}
    c.update(cfg)
    f = dns.Forwarder(FakeBox(), c)
    f.sock, f.usock = Sock(), Sock()
    f.state = {"clock": "ok", "blocked": [TABLET], "dns": "standard", "devices_dns": {PHONE: "child"}}
    return f


def rcode(pkt):
    return pkt[3] & 15


def test_blocked_device_is_refused_and_others_forwarded(tmp):
    f = fwd()
    f.on_query(query("example.org"), TIP)
    assert len(f.sock.sent) == 1 and rcode(f.sock.sent[0][0]) == 5, f.sock.sent
    assert f.sock.sent[0][0][:2] == b"\x12\x34" and f.sock.sent[0][0][2] & 0x80
    assert f.refused == 1 and f.uses_us(TABLET)
    f.on_query(query("example.org", 0x4321), PIP)
    assert len(f.usock.sent) == 1
    pkt, up = f.usock.sent[0]
    assert up == f.ups[2][0], (up, f.ups)          # the phone's profile is child
    assert pkt[:2] != b"\x43\x21" or True
    f.on_answer(answer(pkt, 300))
    back = f.sock.sent[-1]
    assert back[1] == PIP and back[0][:2] == b"\x43\x21" and rcode(back[0]) == 0


def test_blocklist_gets_nxdomain(tmp):
    f = fwd()
    f.on_query(query("ads.bad.example"), PIP)
    f.on_query(query("notbad.example"), PIP)
    assert rcode(f.sock.sent[0][0]) == 3 and f.nx == 1
    assert len(f.usock.sent) == 1                  # notbad.example is not a subdomain


def test_cache_honours_ttl_and_lowers_it(tmp):
    f = fwd()
    f.on_query(query("Example.ORG", 1), PIP)
    f.on_answer(answer(f.usock.sent[0][0], 300))
    f.on_query(query("example.org", 2), PIP)
    assert f.hits == 1 and len(f.usock.sent) == 1
    r = f.sock.sent[-1][0]
    assert r[:2] == b"\x00\x02"
    ttl = (r[-10] << 24) | (r[-9] << 16) | (r[-8] << 8) | r[-7]
    assert 299 <= ttl <= 300, ttl
    # ttl 0: never cached; expired entries are not served
    f.on_query(query("zero.org", 3), PIP)
    f.on_answer(answer(f.usock.sent[-1][0], 0))
    f.on_query(query("zero.org", 4), PIP)
    assert f.hits == 1 and len(f.usock.sent) == 3
    for k in f.cache:
        f.cache[k][0] = f.cache[k][1]              # expire everything now
    f.on_query(query("example.org", 5), PIP)
    assert f.hits == 1 and len(f.usock.sent) == 4


def test_cache_is_bounded(tmp):
    f = fwd(dns_cache=4)
    for i in range(10):
        f.on_query(query("n%d.org" % i, i), PIP)
        f.on_answer(answer(f.usock.sent[-1][0], 100 + i))
    assert len(f.cache) == 4


def test_malformed_and_oversized_are_dropped_and_counted(tmp):
    f = fwd()
    bad = [b"", b"\x00" * 11, query("x.org")[:14], answer(query("x.org"), 5),
           b"\x00\x01\x01\x00\x00\x02" + b"\x00" * 20, query("a" * 64 + ".org"),
           b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
           query("x.org") + b"\x00" * 600]
    for p in bad:
        f.on_query(p, PIP)
    assert f.dropped == len(bad), f.dropped
    assert not f.sock.sent and not f.usock.sent
    # answers nobody asked for, or to another question
    f.on_answer(answer(query("x.org", 77), 5))
    f.on_query(query("y.org", 9), PIP)
    pkt = f.usock.sent[0][0]
    f.on_answer(answer(pkt[:2] + query("z.org")[2:], 5))
    assert f.dropped == len(bad) + 2 and not f.sock.sent


def test_unknown_device_and_no_state(tmp):
    f = fwd()
    f.state = None                                 # before the first effects pass
    f.on_query(query("a.org"), ("10.0.0.99", 9))
    assert len(f.usock.sent) == 1 and f.usock.sent[0][1] == f.ups[0][0]


def test_full_table_gives_way_to_the_oldest_and_timeouts_move_upstream(tmp):
    f = fwd()
    for i in range(dns.PENDING):
        f.on_query(query("s%d.org" % i, i), PIP)
    f.on_query(query("more.org", 99), PIP)
    assert f.evicted == 1 and len(f.usock.sent) == dns.PENDING + 1 and not f.sock.sent
    from agent.compat import ticks_add
    for s in f.slots:
        s[4] = ticks_add(s[4], -10000)
    f.on_query(query("more.org", 100), PIP)
    assert f.timeouts == 1 and f.turn[2] == 1 and len(f.usock.sent) == dns.PENDING + 2


def test_clock_unknown_refuses_devices_with_time_rules_only(tmp):
    # Before the first NTP answer the schedule fails closed (agent/rules/schedule.py):
    # the forwarder refuses the tablet, whose profile has hours, and serves the phone.
    from agent.rules import schedule
    doc = {"tz": "CET-1CEST,M3.5.0,M10.5.0/3", "filter": "off",
           "profiles": [{"name": "kids", "macs": [TABLET.upper()], "filter": "strict",
                         "schedule": [{"days": ["mon"], "from": "07:00", "to": "21:00"}]},
                        {"name": "adults", "macs": [PHONE]}]}
    f = fwd()
    f.state = schedule.enforcement(doc, None)
    assert f.state["clock"] == "unknown" and f.state["blocked"] == [TABLET]
    f.on_query(query("example.org"), TIP)
    assert len(f.sock.sent) == 1 and rcode(f.sock.sent[0][0]) == 5 and f.refused == 1
    f.on_query(query("example.org", 0x4321), PIP)
    assert len(f.usock.sent) == 1 and f.usock.sent[0][1] == f.ups[0][0]   # the phone: standard
    f.state = schedule.enforcement(doc, 1764576000 + 4 * 3600)            # a Monday, 13:00 in Paris
    f.on_query(query("example.net", 0x5555), TIP)
    assert len(f.usock.sent) == 2 and f.usock.sent[1][1] == f.ups[2][0]   # inside its hours: child
