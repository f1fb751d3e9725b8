# The section validators, the effective lineup, and all-or-nothing application
# through the twin of a real Box (agent/runtime.py), wired as on the box: the
# rules with the applied documents as context, the signature check, the effects.
# CPython and MicroPython.
import json
import sys

from agent import config
from agent.rules import SECTIONS, lineup, sections, tz
from agent.runtime import Box
from agent.twin import Invalid

PARENTAL = {"version": 1, "tz": "CET-1CEST,M3.5.0,M10.5.0/3", "filter": "moderate",
            "profiles": [{"id": "kids", "name": "Children", "macs": ["aa:bb:cc:00:00:01"], "filter": "strict",
                          "schedule": [{"days": ["mon", "tue"], "from": "07:00", "to": "21:00"}],
                          "pause_until": None}]}
CHANNELS = {"version": 1, "channels": [
    {"lcn": 1, "name": "TF1", "url": "dvb://tnt/1", "bouquet": "tnt"},
    {"lcn": 40, "name": "Cine+", "url": "udp://@239.1.1.40:1234", "bouquet": "cinema"},
    {"lcn": 50, "name": "Sport 1", "url": "udp://@239.1.1.50:1234", "bouquet": "sport"}]}
OPTIONS = {"version": 1, "speed_tier": "10M", "bouquets": ["cinema"], "phone": {"enabled": True, "number": "+33299000000"}}


def _fields(section, doc, ctx=None):
    return [f for f, r in sections.errors(section, doc, ctx)]


def _first(section, doc, ctx=None):
    try:
        sections.check(section, doc, ctx=ctx)
    except Invalid as e:
        return e.field
    return None


def _with(doc, path, value):
    d = json.loads(json.dumps(doc))
    o = d
    for k in path[:-1]:
        o = o[k]
    if value is KeyError:
        del o[path[-1]]
    else:
        o[path[-1]] = value
    return d


def test_valid_documents(tmp):
    assert sections.errors("parental", PARENTAL) == []
    assert sections.errors("channels", CHANNELS) == []
    assert sections.errors("options", OPTIONS, {"channels": CHANNELS}) == []
    assert sections.errors("channels", sections.module("channels") and
                           {"version": 1, "channels": lineup.default_lineup()}) == []


def test_parental_rules_name_the_field(tmp):
    cases = [
        (("tz",), "CET-1CEST"), (("tz",), KeyError), (("filter",), "max"), (("profiles",), "x"),
        (("profiles", 0, "macs", 0), "aa:bb:cc:00:00"), (("profiles", 0, "macs"), []),
        (("profiles", 0, "id"), "Kids!"), (("profiles", 0, "filter"), ["strict"]),
        (("profiles", 0, "schedule", 0, "from"), "7:00"), (("profiles", 0, "schedule", 0, "to"), "24:01"),
        (("profiles", 0, "schedule", 0, "to"), "07:00"), (("profiles", 0, "schedule", 0, "days", 0), "lun"),
        (("profiles", 0, "schedule", 0, "days", 1), "mon"), (("profiles", 0, "pause_until"), -1),
        (("profiles", 0, "pause_until"), True), (("profiles", 0, "colour"), "red"), (("extra",), 1),
    ]
    want = ["tz", "tz", "filter", "profiles", "profiles[0].macs[0]", "profiles[0].macs", "profiles[0].id",
            "profiles[0].filter", "profiles[0].schedule[0].from", "profiles[0].schedule[0].to",
            "profiles[0].schedule[0].to", "profiles[0].schedule[0].days[0]", "profiles[0].schedule[0].days[1]",
            "profiles[0].pause_until", "profiles[0].pause_until", "profiles[0].colour", "extra"]
    for (path, value), field in zip(cases, want):
        d = _with(PARENTAL, path, value)
        assert _first("parental", d) == field, (path, value, _first("parental", d))
        assert field in _fields("parental", d)
    two = _with(PARENTAL, ("profiles",), PARENTAL["profiles"] + [
        {"id": "kids", "macs": ["AA:BB:CC:00:00:01"]}])
    assert _fields("parental", two) == ["profiles[1].id", "profiles[1].macs[0]"]
    many = _with(PARENTAL, ("profiles",), [{"id": "p%d" % i, "macs": ["aa:bb:cc:00:01:%02x" % i]} for i in range(17)])
    assert _fields("parental", many) == ["profiles"]


def test_every_violation_is_listed(tmp):
    d = _with(PARENTAL, ("tz",), "nope")
    d = _with(d, ("profiles", 0, "schedule", 0, "from"), "25:00")
    d["version"] = 0
    assert _fields("parental", d) == ["version", "tz", "profiles[0].schedule[0].from"]


def test_channels_rules(tmp):
    assert _first("channels", _with(CHANNELS, ("channels", 2, "lcn"), 1)) == "channels[2].lcn"
    r = sections.errors("channels", _with(CHANNELS, ("channels", 2, "lcn"), 1))[0][1]
    assert "channels[0].lcn" in r
    for path, value in ((("channels", 1, "lcn"), 0), (("channels", 1, "lcn"), True), (("channels", 1, "name"), ""),
                        (("channels", 1, "url"), "239.1.1.1"), (("channels", 1, "url"), "udp://a b"),
                        (("channels", 1, "bouquet"), "Cinema"), (("channels", 1, "bouquet"), KeyError)):
        assert _first("channels", _with(CHANNELS, path, value)) == "channels[1]." + path[-1], (path, value)
    assert _first("channels", {"version": 1}) == "channels"
    assert _first("channels", {"version": 1, "channels": []}) == "channels"
    big = {"version": 1, "channels": [{"lcn": i + 1, "name": "c", "url": "dvb://x/%d" % i, "bouquet": "b"}
                                      for i in range(201)]}
    assert _first("channels", big) == "channels"


def test_options_rules_and_unknown_bouquet(tmp):
    ctx = {"channels": CHANNELS}
    assert _first("options", _with(OPTIONS, ("bouquets", 0), "music"), ctx) == "bouquets[0]"
    r = sections.errors("options", _with(OPTIONS, ("bouquets", 0), "music"), ctx)[0][1]
    assert "unknown bouquet music" in r and "cinema" in r
    # with the default lineup in force (no channels applied) only tnt exists
    assert _first("options", OPTIONS, {}) == "bouquets[0]"
    # without context (a file checked alone) the cross-section rule is skipped
    assert _first("options", OPTIONS) is None
    for path, value in ((("speed_tier",), "10"), (("speed_tier",), "0M"), (("speed_tier",), KeyError),
                        (("bouquets",), "cinema"), (("bouquets", 0), 3), (("phone",), True),
                        (("phone", "enabled"), "yes"), (("phone", "number"), "0299000000")):
        f = _first("options", _with(OPTIONS, path, value), ctx)
        assert f == ".".join(str(p) for p in path).replace(".0", "[0]"), (path, value, f)
    assert _first("options", _with(OPTIONS, ("bouquets",), ["cinema", "cinema"]), ctx) == "bouquets[1]"
    # the tenant's consent to the detailed consumption curve: a boolean, nothing else
    assert _first("options", _with(OPTIONS, ("consent",), {"detailed_consumption": True}), ctx) is None
    assert _first("options", _with(OPTIONS, ("consent",), {}), ctx) is None
    for value, field in (("yes", "consent"), (None, "consent"), ({"detailed_consumption": "yes"},
                         "consent.detailed_consumption"), ({"detailed_consumption": None},
                         "consent.detailed_consumption"), ({"curve": True}, "consent.curve")):
        assert _first("options", _with(OPTIONS, ("consent",), value), ctx) == field, (value, field)


def test_default_lineup_is_the_27_tnt_channels(tmp):
    ch = lineup.default_lineup()
    assert len(ch) == 27
    assert [c["lcn"] for c in ch] == list(range(1, 28))
    assert all(c["bouquet"] == "tnt" for c in ch)
    assert ch[0]["name"] == "TF1"


def test_options_gate_the_lineup(tmp):
    applied = {"channels": CHANNELS}
    assert [c["lcn"] for c in lineup.effective(applied)] == [1]
    applied["options"] = OPTIONS
    assert [c["lcn"] for c in lineup.effective(applied)] == [1, 40]
    assert lineup.bouquets(applied) == ["tnt", "cinema"]
    assert len(lineup.effective({})) == 27


class _Hal:
    # The HAL methods a Box uses for documents and their effects.
    name = "test"

    def __init__(self, t):
        self.t = t
        self.parental = []
        self.lineups = []

    def now(self):
        return self.t

    def enforce(self, section, doc):
        pass

    def enforce_parental(self, st):
        self.parental.append(st)

    def enforce_lineup(self, lineup):
        self.lineups.append([c["lcn"] for c in lineup])


def _box(tmp, hal, **cfg):
    cfg.update({"box_id": "hb-1", "state_dir": tmp + "/state"})
    return Box(config.load(overrides=cfg), hal)


def _rules_loaded():
    return [m for m in sys.modules if m == "agent.rules" or m.startswith("agent.rules.")]


def test_the_box_checks_every_section(tmp):
    box = _box(tmp, _Hal(None))
    assert list(box.twin.validators) == list(SECTIONS)
    try:
        sections.check("effects", {"version": 1})
    except KeyError:
        pass
    else:
        raise AssertionError("not a section")


def test_all_or_nothing_through_the_twin(tmp):
    box = _box(tmp, _Hal(None))
    t = box.twin
    assert t.handle("channels", json.dumps(CHANNELS)) == "applied"
    assert t.handle("options", json.dumps(OPTIONS)) == "applied"
    assert t.handle("parental", json.dumps(PARENTAL)) == "applied"
    bad = _with(OPTIONS, ("bouquets",), ["cinema", "music"])
    bad["version"] = 2
    bad["speed_tier"] = "100M"
    assert t.handle("options", json.dumps(bad)) == "rejected"
    assert t.reported["options"]["rejected"] == {"field": "bouquets[1]", "version": 2,
                                                 "reason": t.reported["options"]["rejected"]["reason"]}
    assert t.applied["options"]["speed_tier"] == "10M" and t.version("options") == 1
    # a restart finds the last applied documents, not the rejected one
    t2 = _box(tmp, _Hal(None)).twin
    assert t2.applied["options"] == OPTIONS and t2.applied["parental"] == PARENTAL
    assert t2.reported["options"]["status"] == "rejected"


def test_the_rules_are_released_after_use(tmp):
    box = _box(tmp, _Hal(tz_utc(2025, 6, 2, 20)))
    assert _rules_loaded() == []
    assert box.twin.handle("channels", json.dumps(CHANNELS)) == "applied"
    assert _rules_loaded() == []
    bad = dict(OPTIONS, version=1, bouquets=["music"])
    assert box.twin.handle("options", json.dumps(bad)) == "rejected"
    assert _rules_loaded() == []
    # a parental schedule keeps its effects for the minute tick, not the modules
    assert box.twin.handle("parental", json.dumps(PARENTAL)) == "applied"
    assert box.sections is not None and _rules_loaded() == []
    box.sections.tick()
    assert _rules_loaded() == []


def test_a_signed_box_refuses_an_unsigned_document(tmp):
    key = "00" * 32
    box = _box(tmp, _Hal(None), hmac_key=key)
    assert box.twin.handle("channels", json.dumps(CHANNELS)) == "rejected"
    assert box.twin.version("channels") == 0
    from binascii import unhexlify

    from agent.rules import sign
    d = dict(CHANNELS, box="hb-1")
    d["sig"] = sign.sign(d, unhexlify(key))
    assert box.twin.handle("channels", json.dumps(d)) == "applied"
    assert _rules_loaded() == []


def test_effects_enforce_and_report(tmp):
    hal = _Hal(tz_utc(2025, 6, 2, 20))   # Monday 22:00 in Paris: kids outside their window
    box = _box(tmp, hal)
    assert hal.lineups == [list(range(1, 28))]
    assert hal.parental[-1]["blocked"] == []
    box.twin.handle("channels", json.dumps(CHANNELS))
    box.twin.handle("options", json.dumps(OPTIONS))
    box.twin.handle("parental", json.dumps(PARENTAL))
    assert hal.lineups[-1] == [1, 40]
    assert box.twin.reported["channels"]["effective"] == {"bouquets": ["tnt", "cinema"], "lcns": [1, 40]}
    assert hal.parental[-1]["blocked"] == ["aa:bb:cc:00:00:01"]
    assert box.twin.reported["parental"]["enforced"]["blocked"] == ["aa:bb:cc:00:00:01"]
    n = len(hal.parental)
    hal.t = tz_utc(2025, 6, 2, 18, 59)   # 20:59 in Paris: inside the window
    box.sections.tick()                  # the minute tick (Box.effects_task)
    assert hal.parental[-1]["blocked"] == [] and len(hal.parental) == n + 1
    box.sections.tick()
    assert len(hal.parental) == n + 1     # no change, no new hand-over
    # the box stays enforcing after a restart without any broker: stored documents only
    hal2 = _Hal(tz_utc(2025, 6, 2, 20))
    _box(tmp, hal2)
    assert hal2.parental[-1]["blocked"] == ["aa:bb:cc:00:00:01"]
    assert hal2.lineups[-1] == [1, 40]


def tz_utc(y, m, d, hh=0, mm=0):
    return tz.days(y, m, d) * 86400 + hh * 3600 + mm * 60
