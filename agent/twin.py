# Desired/reported documents per section, in the style of a device twin.
#
# A desired document is a JSON object with an integer `version`. It is applied
# all-or-nothing: parsed, validated, persisted atomically (the previous copy is
# kept as last-known-good), and only then made current. Older or equal versions
# are replays and change nothing. Every outcome is recorded in the section's
# reported document, which the runtime publishes retained.
#
# Loading and processing documents is cold code (agent/twin_cold.py).
from agent import fsutil
from agent.compat import cold

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
        # verify(section, doc) raising Invalid checks who sent it (agent/rules/sign.py);
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
        cold("agent.twin_cold", "load", self)

    def doc_path(self, s):
        return "%s/%s.json" % (self.path, s)

    def lkg_path(self, s):
        return "%s/%s.lkg.json" % (self.path, s)

    def rep_path(self, s):
        return "%s/%s.reported.json" % (self.path, s)

    def version(self, s):
        d = self.applied.get(s)
        return d["version"] if d else 0

    def handle(self, section, payload):
        """Process one desired document. Returns the outcome: applied, rejected or replay."""
        return cold("agent.twin_cold", "handle", self, section, payload)

    def set_reported(self, section, rep):
        self.reported[section] = rep
        fsutil.write_json(self.rep_path(section), rep)
        if section not in self.dirty:
            self.dirty.append(section)


    def reject_oversized(self, section, length):
        cold("agent.twin_cold", "reject_oversized", self, section, length)
