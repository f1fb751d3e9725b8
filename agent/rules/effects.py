# The effects of the applied documents:
# - parental: the enforcement state (agent/rules/schedule.py), recomputed every minute
#   of box time and whenever a document is applied; each change goes to the
#   HAL's enforce_parental(state), to the DNS forwarder (agent/dns.py) when it runs,
#   and into the parental reported document, with what is really enforced per device.
# - channels/options: the effective lineup goes to the HAL's enforce_lineup(list)
#   and into the channels reported document ("effective": bouquets and LCNs, and
#   "served": the versions the playlist server, agent/playlist.py, serves).
# It works from the stored documents only, so it keeps enforcing the last
# applied schedule while the broker or the backend is unreachable.
#
# The runtime (Box.effects_pass, agent/runtime.py) loads this module for one pass
# (run) at boot, on each apply and when the clock becomes known, and keeps it in
# RAM only while a parental schedule needs its tick every minute. It is called
# with no other cold module loaded: at boot that keeps the peak of the heap low.
# The rules package is dropped after use (agent/rules release): updates are
# rare, enforcement runs once a minute, and RAM is the box's scarcest resource.
from agent.rules import release
from agent.rules.lineup import FREE_BOUQUETS, bouquets, default_lineup, effective


def run(box, changed):
    # One pass: enforcement handed to the HAL and reported. The Effects stay in
    # the box (box.sections) only while a parental schedule is applied.
    fx = box.sections
    if fx is None:
        fx = Effects(box, box.fx_state)
    fx.tick(changed)
    if "parental" in box.twin.applied:
        box.sections = fx
        box.start_fx_task()
    else:
        box.fx_state = (fx.parental, fx.lineup)


class Effects:
    def __init__(self, box, state=None):
        # state: (parental, lineup) of an earlier pass, so that only changes are
        # handed to the HAL.
        self.box = box
        self.parental, self.lineup = state or (None, None)

    def _report(self, section, key, value):
        t = self.box.twin
        rep = t.reported.get(section)
        if rep is not None and rep.get(key) != value:
            rep = dict(rep)
            rep[key] = value
            t.set_reported(section, rep)
            w = getattr(self.box, "wake", None)
            if w:
                w.set()

    def tick(self, applied_changed=False):
        box = self.box
        applied = box.twin.applied
        pdoc = applied.get("parental")
        if pdoc is None:
            # Nothing to enforce: the same state schedule.enforcement(None, t)
            # gives, without loading the rules into RAM.
            st = {"clock": "unknown" if box.hal.now() is None else "ok",
                  "blocked": [], "dns": "standard", "devices_dns": {}}
        else:
            from agent.rules import schedule
            try:
                st = schedule.enforcement(pdoc, box.hal.now())
            finally:
                release()
            del st["local"]   # changes every minute; not worth a publish
        d = box.dns
        if d is not None:
            d.state = st
        if st != self.parental:
            self.parental = st
            fn = getattr(box.hal, "enforce_parental", None)
            if fn:
                fn(st)
        if pdoc is not None:
            st = dict(st)
            st["by"] = "dns" if box.cfg.get("dns_port") is not None else "none"
            st["devices"] = devices(box, pdoc, st)
        self._report("parental", "enforced", st)
        if applied_changed:
            if "channels" in applied or "options" in applied:
                eff = effective(applied)
                b = bouquets(applied)
            else:
                # The default lineup, free bouquets only: without loading the rules.
                b = list(FREE_BOUQUETS)
                eff = [c for c in default_lineup() if c.get("bouquet") in b]
            ids = {"bouquets": b, "lcns": [c["lcn"] for c in eff]}
            if box.cfg.get("playlist_port") is not None:
                # what agent/playlist.py serves: built from these same documents
                c, o = applied.get("channels") or {}, applied.get("options") or {}
                ids["served"] = {"channels": c.get("version", 0), "options": o.get("version", 0),
                                 "m3u": "/playlist.m3u", "json": "/lineup.json",
                                 "port": box.cfg["playlist_port"]}
            if ids != self.lineup:
                self.lineup = ids
                fn = getattr(box.hal, "enforce_lineup", None)
                if fn:
                    fn(eff)
        if self.lineup is not None:
            self._report("channels", "effective", self.lineup)


NO_DNS = "not enforced: no DNS forwarder on this box"
NO_MAP = "not enforced: this box cannot tell devices apart (no MAC to IP map)"
NOT_SEEN = "not enforced: no DNS query from this device through the box (a device with its own DNS server is not filtered)"


def devices(box, pdoc, st):
    """What is really enforced for each device of the document, by the DNS forwarder
    (agent/dns.py): "refused" (blocked now, and its queries reach the box), the DNS
    profile its queries resolve through ("standard", "family", "child"), or "not
    enforced: why" where the box cannot (no forwarder, no MAC to IP map, or a
    device whose queries do not reach the box: it has its own DNS server, or has
    not asked anything in the last hour)."""
    d = box.dns
    on = box.cfg.get("dns_port") is not None
    out = {}
    for p in pdoc.get("profiles") or ():
        for mac in p["macs"]:
            mac = mac.lower()
            if not on:
                v = NO_DNS
            elif d is not None and not d.maps:
                v = NO_MAP
            elif d is None or not d.uses_us(mac):
                v = NOT_SEEN
            elif mac in st["blocked"]:
                v = "refused"
            else:
                v = st["devices_dns"].get(mac) or st["dns"]
            out[mac] = v
    return out
