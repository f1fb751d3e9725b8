# Desired/reported documents per section, in the style of a device twin.
#
# A desired document is a JSON object with an integer `version`. It is applied
# all-or-nothing: parsed, validated, persisted atomically (the previous copy is
# kept as last-known-good), and only then made current. Older or equal versions
# are replays and change nothing. Every outcome is recorded in the section's
# reported document, which the runtime publishes retained.
import json

from agent import fsutil

MAX_DOC_BYTES = 8192


class Invalid(Exception):
    """A document breaks a rule. `field` is a path such as `schedules[2].start`."""

    def __init__(self, field, rule):
        super().__init__("%s: %s" % (field, rule))
        self.field = field
        self.rule = rule


def check_envelope(doc):
    if not isinstance(doc, dict):
        raise Invalid("$", "must be a JSON object")
    v = doc.get("version")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise Invalid("version", "must be an integer >= 1")


class Twin:
    def __init__(self, path, validators, on_apply=None, now=None, verify=None):
        # validators: {section: fn(doc)} raising Invalid; the engine checks
        # the envelope itself. on_apply(section, doc) takes effect of a document.
        # verify(section, doc) raising Invalid checks who sent it (agent/sign.py);
        # it runs before the replay check, so a forged old version is refused too.
        self.path = path
        self.validators = validators
        self.on_apply = on_apply
        self.now = now
        self.verify = verify
        fsutil.makedirs(path)
        self.applied = {}
        self.reported = {}
        self.dirty = []           # sections whose reported document must be (re)published
        for s in validators:
            self._load(s)

    def _doc_path(self, s):
        return "%s/%s.json" % (self.path, s)

    def _lkg_path(self, s):
        return "%s/%s.lkg.json" % (self.path, s)

    def _rep_path(self, s):
        return "%s/%s.reported.json" % (self.path, s)

    def _load(self, s):
        doc = fsutil.read_json(self._doc_path(s))
        source = "current"
        if not self._valid(s, doc):
            doc = fsutil.read_json(self._lkg_path(s))
            source = "last-known-good"
            if not self._valid(s, doc):
                doc, source = None, "none"
        if doc is not None:
            self.applied[s] = doc
            if self.on_apply:
                self.on_apply(s, doc)
        rep = fsutil.read_json(self._rep_path(s))
        if not isinstance(rep, dict) or rep.get("version", -1) != self.version(s):
            rep = {"section": s, "version": self.version(s),
                   "status": "applied" if doc else "none"}
            if doc is not None:
                rep["source"] = source
        self.reported[s] = rep
        self.dirty.append(s)

    def _valid(self, s, doc):
        try:
            check_envelope(doc)
            self.validators[s](doc)
            return True
        except Exception:
            return False

    def version(self, s):
        d = self.applied.get(s)
        return d["version"] if d else 0

    def handle(self, section, payload):
        """Process one desired document. Returns the outcome: applied, rejected or replay."""
        if section not in self.validators:
            return "ignored"
        prev = self.version(section)
        rep = dict(self.reported.get(section) or {"section": section})
        rep["version"] = prev
        try:
            if len(payload) > MAX_DOC_BYTES:
                raise Invalid("$", "document is %d bytes, the limit is %d" % (len(payload), MAX_DOC_BYTES))
            try:
                doc = json.loads(payload)
            except ValueError:
                raise Invalid("$", "not valid JSON")
            check_envelope(doc)
            if self.verify:
                self.verify(section, doc)
            v = doc["version"]
            if v <= prev:
                if v < prev or doc != self.applied.get(section):
                    rep["ignored"] = {"version": v, "reason": "replay: version %d <= applied %d" % (v, prev)}
                    self._set_reported(section, rep)
                return "replay"
            self.validators[section](doc)
        except Invalid as e:
            bad = {"field": e.field, "reason": e.rule}
            v = doc_version(payload)
            if isinstance(v, int):
                bad["version"] = v
            rep["status"] = "rejected"
            rep["rejected"] = bad
            self._set_reported(section, rep)
            return "rejected"
        # Persist, then switch. A cut before the rename keeps the old document.
        old = self.applied.get(section)
        if old is not None:
            fsutil.write_json(self._lkg_path(section), old)
        fsutil.write_json(self._doc_path(section), doc)
        self.applied[section] = doc
        if self.on_apply:
            self.on_apply(section, doc)
        rep = {"section": section, "version": v, "status": "applied"}
        if self.now:
            rep["applied_at"] = self.now()
        self._set_reported(section, rep)
        return "applied"

    def _set_reported(self, section, rep):
        self.reported[section] = rep
        fsutil.write_json(self._rep_path(section), rep)
        if section not in self.dirty:
            self.dirty.append(section)

    def reject_oversized(self, section, length):
        if section not in self.validators:
            return
        rep = dict(self.reported.get(section) or {"section": section, "version": 0})
        rep["status"] = "rejected"
        rep["rejected"] = {"field": "$", "reason": "document is %d bytes, the limit is %d" % (length, MAX_DOC_BYTES)}
        self._set_reported(section, rep)


def doc_version(payload):
    try:
        d = json.loads(payload)
        return d.get("version") if isinstance(d, dict) else None
    except Exception:
        return None
