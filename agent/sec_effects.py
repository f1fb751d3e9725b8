# The effects of the applied documents, kept in force by one task:
# - parental: the enforcement state (agent/parental.py) is recomputed every
#   minute of box time and whenever a document is applied; each change goes to
#   the HAL's enforce_parental(state) and into the parental reported document.
# - channels/options: the effective lineup goes to the HAL's enforce_lineup(list)
#   and into the channels reported document ("effective": bouquets and LCNs).
# It runs from the stored documents only, so it keeps enforcing the last
# applied schedule while the broker or the backend is unreachable.
import asyncio

from agent.compat import forget

_RULES = ("agent.sections", "agent.sec_channels", "agent.sec_options", "agent.sec_parental",
          "agent.sign", "agent.parental", "agent.tz")


def release():
    # Drop the rule modules after use: updates are rare, enforcement runs once
    # a minute, and RAM is the box's scarcest resource.
    for m in _RULES:
        forget(m)


def verifier(box_id, key_hex):
    """The twin's verify hook, loading agent/sign.py only while a document is checked."""
    def verify(section, doc):
        from agent import sign
        try:
            sign.Verifier(box_id, key_hex)(section, doc)
        finally:
            release()
    return verify


class Bound:
    """The twin's validators, checking with the applied documents as context
    (options name bouquets of the lineup in force); rules released after use."""

    def __init__(self, names, applied):
        self.names = names
        self.applied = applied

    def __contains__(self, s):
        return s in self.names

    def __iter__(self):
        return iter(self.names)

    def __getitem__(self, s):
        if s not in self.names:
            raise KeyError(s)
        applied = self.applied

        def check(doc):
            from agent import sections
            try:
                sections.check(s, doc, ctx=applied)
            finally:
                release()
        return check


class Effects:
    def __init__(self, box):
        self.box = box
        self.ev = asyncio.Event()
        self.parental = None
        self.lineup = None
        inner = box.twin.on_apply

        def on_apply(section, doc):
            if inner:
                inner(section, doc)
            self.ev.set()
        box.twin.on_apply = on_apply
        self.tick(True)
        release()    # agent.sections, which attached us, is not needed in RAM

    def _report(self, section, key, value):
        t = self.box.twin
        rep = t.reported.get(section)
        if rep is not None and rep.get(key) != value:
            rep = dict(rep)
            rep[key] = value
            t._set_reported(section, rep)
            w = getattr(self.box, "wake", None)
            if w:
                w.set()

    def tick(self, applied_changed=False):
        box = self.box
        applied = box.twin.applied
        pdoc = applied.get("parental")
        if pdoc is None:
            # Nothing to enforce: the same state parental.enforcement(None, t)
            # gives, without loading the rules into RAM.
            st = {"clock": "unknown" if box.hal.now() is None else "ok",
                  "blocked": [], "dns": "standard", "devices_dns": {}}
        else:
            from agent import parental
            try:
                st = parental.enforcement(pdoc, box.hal.now())
            finally:
                release()
            del st["local"]   # changes every minute; not worth a publish
        if st != self.parental:
            self.parental = st
            fn = getattr(box.hal, "enforce_parental", None)
            if fn:
                fn(st)
        self._report("parental", "enforced", st)
        if applied_changed:
            from agent import sections
            eff = sections.effective(applied)
            ids = {"bouquets": sections.bouquets(applied), "lcns": [c["lcn"] for c in eff]}
            release()
            if ids != self.lineup:
                self.lineup = ids
                fn = getattr(box.hal, "enforce_lineup", None)
                if fn:
                    fn(eff)
        if self.lineup is not None:
            self._report("channels", "effective", self.lineup)

    async def run(self):
        speed = self.box.cfg.get("speedup") or 1
        while not self.box.stop.is_set():
            now = self.box.hal.now()
            wait = 60 if now is None else 60 - now % 60
            try:
                await asyncio.wait_for(self.ev.wait(), wait / speed)
            except asyncio.TimeoutError:
                pass
            changed = self.ev.is_set()
            self.ev.clear()
            try:
                self.tick(changed)
            except Exception as e:
                from agent.log import log
                log("effects_failed", "reason", e)
