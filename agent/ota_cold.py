# Over-the-air agent releases, the box's side (docs/ota.md,
# docs/decisions/0019-ota-releases.md): the desired `release` document, the
# reports, the confirmation of a release on trial and the report of a fall-back.
# The install itself is agent/ota_install.py. Cold code: loaded for a document,
# a report, the confirmation; never resident.
#
# The desired document (signed as every desired document, agent/rules/sign.py):
#   {"version": 7, "box": "HB-1", "release": "0.2.0", "url": "http://ops:8070/0.2.0",
#    "manifest": "<sha256 hex of URL/manifest>", "confirm_s": 300, "sig": "..."}
import json

from agent import fsutil
from agent.log import log

SECTION = "release"
MAX_DOC = 1024


# ---- state ---------------------------------------------------------------------

def _state(box):
    return fsutil.read_json(box.cfg["state_dir"] + "/ota.json", {}) or {}


def _handled(box, v):
    # The highest release version acted on (installed, refused or rolled back):
    # a retained document of that version or lower changes nothing any more.
    st = _state(box)
    if v > (st.get("handled") or 0):
        st["handled"] = v
        fsutil.write_json(box.cfg["state_dir"] + "/ota.json", st)


def pointer(box):
    return fsutil.read_json(box.cfg["ota_dir"] + "/boot.json") or {}


def _report(box, rep):
    rep["section"] = SECTION
    box.twin.set_reported(SECTION, rep)


def _running(p):
    rep = {"version": p.get("version") or 0, "status": "applied" if p.get("version") else "none"}
    if p.get("release"):
        rep["release"] = p["release"]
        rep["slot"] = p.get("slot") or "factory"
    return rep


def reject(box, version, field, reason):
    rep = _running(pointer(box))
    rep["status"] = "rejected"
    rep["rejected"] = {"field": field, "reason": reason[:300]}
    if isinstance(version, int):
        rep["rejected"]["version"] = version
    _report(box, rep)
    log("release_rejected", "version", version, "field", field, "reason", reason)


# ---- the desired document --------------------------------------------------------

def _hex64(s):
    if not isinstance(s, str) or len(s) != 64:
        return False
    for c in s:
        if c not in "0123456789abcdef":
            return False
    return True


def validate(doc):
    from agent.twin import Invalid
    for k in doc:
        if k not in ("version", "box", "sig", "release", "url", "manifest", "confirm_s"):
            raise Invalid(str(k)[:32], "is not a known field")
    r = doc.get("release")
    if not isinstance(r, str) or not 1 <= len(r) <= 32:
        raise Invalid("release", "must be the release name, 1-32 characters")
    u = doc.get("url")
    if not isinstance(u, str) or not u.startswith("http://") or len(u) > 200:
        raise Invalid("url", "must be an http:// URL of at most 200 characters")
    if not _hex64(doc.get("manifest")):
        raise Invalid("manifest", "must be the SHA-256 of the manifest, 64 lowercase hex digits")
    c = doc.get("confirm_s", 300)
    if not isinstance(c, int) or isinstance(c, bool) or not 10 <= c <= 86400:
        raise Invalid("confirm_s", "must be an integer of seconds, 10-86400")


def _verify(box, doc):
    # as agent/runtime_cold.py verify, without loading that module beside this one
    from agent.rules import release, sign
    try:
        c = box.cfg
        sign.Verifier(box.id, c.get("hmac_key"), c.get("prev_hmac_key"), box.twin.version)(SECTION, doc)
    finally:
        release()


def handle(box, payload):
    """A desired release document: applied (this release already runs), install (to
    start), installing (under way), rejected, replay or busy (a release on trial)."""
    from agent.twin import Invalid, check_envelope
    v = None
    try:
        if len(payload) > MAX_DOC:
            raise Invalid("$", "document is %d bytes, the limit is %d" % (len(payload), MAX_DOC))
        try:
            doc = json.loads(payload.decode() if isinstance(payload, (bytes, bytearray)) else payload)
        except ValueError:
            raise Invalid("$", "not valid JSON")
        check_envelope(doc)
        v = doc["version"]
        _verify(box, doc)
        validate(doc)
    except Invalid as e:
        if box.cfg.get("ota_dir"):
            reject(box, v, e.field, e.rule)
        return "rejected"
    if not box.cfg.get("ota_dir"):
        reject(box, v, "$", "this box has no release slots (not a board)")
        return "rejected"
    if v <= (_state(box).get("handled") or 0):
        return "replay"
    p = pointer(box)
    if p.get("version") == v and p.get("state") == "ok":
        _handled(box, v)
        _report(box, _running(p))
        return "applied"
    if box.trial is not None:
        return "busy"                # the release on trial first
    t = box.ota_task
    if t is not None:
        if box.ota_version == v:
            return "installing"
        t.cancel()
    # the caller (agent/runtime_cold.py) starts agent/ota_install.py on it
    box.ota_version = v
    box.ota_doc = doc
    rep = _running(p)
    rep["installing"] = {"version": v, "release": doc["release"], "slot": "b" if p.get("slot") == "a" else "a"}
    _report(box, rep)
    return "install"


def failed(box, v, field, reason):
    # the install of version v failed for good: refused, and not tried again
    _handled(box, v)
    reject(box, v, field, reason)


def confirm(box):
    """The release on trial has connected and published: it stays."""
    t = box.trial
    box.trial = None
    od = box.cfg["ota_dir"]
    p = fsutil.read_json(od + "/boot.json")
    if not isinstance(p, dict) or p.get("state") != "trial" or p.get("slot") != t.get("slot"):
        return
    p["state"] = "ok"
    p["tries"] = 0
    p.pop("why", None)
    fsutil.write_json(od + "/boot.json", p)
    v = p.get("version") or 0
    _handled(box, v)
    rep = _running(p)
    rep["applied_at"] = box.now_ts()
    _report(box, rep)
    log("release_confirmed", "version", v, "release", p.get("release"), "slot", p.get("slot"))


def rolled_back(box, p):
    """The board's boot went back to the previous slot (firmware/otaboot.py): say why."""
    rb = p.get("rolled_back") or {}
    v = rb.get("version")
    reason = "rolled back to %s: %s" % (("slot " + p["slot"]) if p.get("slot") else "the factory agent",
                                        rb.get("reason"))
    if isinstance(v, int):
        _handled(box, v)
    reject(box, v, "release", reason)
    q = dict(p)
    q.pop("rolled_back", None)
    q["last_rollback"] = rb
    fsutil.write_json(box.cfg["ota_dir"] + "/boot.json", q)
