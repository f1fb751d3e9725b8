# The twin's cold code (agent/twin.py): loading the stored documents at boot and
# processing a desired document. Loaded when it runs, then released: a quiet box
# does not keep it in RAM.
import json

from agent import fsutil
from agent.twin import MAX_DOC_BYTES, Invalid, check_envelope


def load(t):
    for s in t.validators:
        load_section(t, s)


def load_section(t, s):
    doc = fsutil.read_json(t.doc_path(s))
    source = "current"
    if not valid(t, s, doc):
        doc = fsutil.read_json(t.lkg_path(s))
        source = "last-known-good"
        if not valid(t, s, doc):
            doc, source = None, "none"
    if doc is not None:
        t.applied[s] = doc
        if t.on_apply:
            t.on_apply(s, doc)
    rep = fsutil.read_json(t.rep_path(s))
    if not isinstance(rep, dict) or rep.get("version", -1) != t.version(s):
        rep = {"section": s, "version": t.version(s),
               "status": "applied" if doc else "none"}
        if doc is not None:
            rep["source"] = source
    t.reported[s] = rep
    t.dirty.append(s)


def valid(t, s, doc):
    try:
        check_envelope(doc)
        t.validators[s](doc)
        return True
    except Exception:
        return False


def handle(t, section, payload):
    """Process one desired document. Returns the outcome: applied, rejected or replay."""
    if section not in t.validators:
        return "ignored"
    prev = t.version(section)
    rep = dict(t.reported.get(section) or {"section": section})
    rep["version"] = prev
    try:
        if len(payload) > MAX_DOC_BYTES:
            raise Invalid("$", "document is %d bytes, the limit is %d" % (len(payload), MAX_DOC_BYTES))
        try:
            doc = _loads(payload)
        except ValueError:
            raise Invalid("$", "not valid JSON")
        except (RuntimeError, MemoryError):
            raise Invalid("$", "nested too deeply to parse")
        check_envelope(doc)
        if t.verify:
            t.verify(section, doc)
        v = doc["version"]
        if v <= prev:
            if v < prev or doc != t.applied.get(section):
                rep["ignored"] = {"version": v, "reason": "replay: version %d <= applied %d" % (v, prev)}
                t.set_reported(section, rep)
            return "replay"
        t.validators[section](doc)
    except Invalid as e:
        bad = {"field": e.field, "reason": e.rule}
        v = doc_version(payload)
        if isinstance(v, int) and not isinstance(v, bool):
            bad["version"] = v
        rep["status"] = "rejected"
        rep["rejected"] = bad
        t.set_reported(section, rep)
        return "rejected"
    # Persist, then switch. A cut before the rename keeps the old document.
    old = t.applied.get(section)
    if old is not None:
        fsutil.write_json(t.lkg_path(section), old)
    fsutil.write_json(t.doc_path(section), doc)
    t.applied[section] = doc
    rep = {"section": section, "version": v, "status": "applied"}
    if t.now:
        rep["applied_at"] = t.now()
    t.set_reported(section, rep)
    # Then take effect: what the effects report (parental "enforced", channels
    # "effective") goes into the reported document just written.
    if t.on_apply:
        t.on_apply(section, doc)
    return "applied"


def reject_oversized(t, section, length):
    if section not in t.validators:
        return
    rep = dict(t.reported.get(section) or {"section": section, "version": 0})
    rep["status"] = "rejected"
    rep["rejected"] = {"field": "$", "reason": "document is %d bytes, the limit is %d" % (length, MAX_DOC_BYTES)}
    t.set_reported(section, rep)


def _loads(payload):
    # str first: CPython's json.loads(bytes) skips a UTF-8 BOM, MicroPython's does
    # not; both refuse it in a str, so a box judges alike on either interpreter.
    if isinstance(payload, (bytes, bytearray)):
        payload = payload.decode()
    return json.loads(payload)


def doc_version(payload):
    try:
        d = _loads(payload)
        return d.get("version") if isinstance(d, dict) else None
    except Exception:
        return None
