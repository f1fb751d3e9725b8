# Linky TIC (Enedis-NOI-CPT_54E): group decoder and streaming frame reader.
#   historic: LF label SP data SP ck CR, ck over "label SP data"
#   standard: LF label HT [horodate HT] data HT ck CR, ck over all up to the last HT
#   ck = (sum & 0x3F) + 0x20 in both. STX..ETX is a frame; EOT interrupts it.
# A group's mode comes from its separators and only that mode's rule is tried.
# Labels and values must be 0x20..0x5F, horodates exactly [EHeh ]+12 digits:
# with the 6-bit checksum this catches every single flipped bit (a flip of bit 6
# keeps the sum mod 64). lax=True accepts 0x60..0x7E in values. See docs/decisions/0005.
STX = 2
ETX = 3
EOT = 4
HT = 9
LF = 10
CR = 13
SP = 32
GMAX = 200          # longest group (PJOURF+1 is 123 bytes)

HISTORIC = "historic"
STANDARD = "standard"

# Fixed-length numeric labels: a lost digit is caught even when the checksum is not.
# (width, "|label|...|"): strings, not a dict (~2 KB less on the unix port).
WIDTHS = ((12, "|ADCO|ADSC|"),
          (9, "|BASE|HCHC|HCHP|EJPHN|EJPHPM|BBRHCJB|BBRHPJB|BBRHCJW|BBRHPJW|BBRHCJR|BBRHPJR"
              "|EAST|EAIT|EASF01|EASF02|EASF03|EASF04|EASF05|EASF06|EASF07|EASF08|EASF09|EASF10"
              "|EASD01|EASD02|EASD03|EASD04|"),
          (5, "|PAPP|SINSTS|SINSTS1|SINSTS2|SINSTS3|"),
          (3, "|IINST|IINST1|IINST2|IINST3|"),
          (2, "|ISOUSC|PREF|PCOUP|"))


def digits(lb):
    """The fixed width of the label "|LABEL|", or None."""
    for w, s in WIDTHS:
        if lb in s:
            return w
    return None


# Every label of the specification, historic then standard, in one string (one
# object, in flash when frozen). A group with any other label is malformed unless
# lax: with a 6-bit checksum, a label cut out of another group must not pass.
LABELS_H = ("|ADCO|OPTARIF|ISOUSC|BASE|HCHC|HCHP|EJPHN|EJPHPM|BBRHCJB|BBRHPJB|BBRHCJW"
            "|BBRHPJW|BBRHCJR|BBRHPJR|PEJP|PTEC|DEMAIN|IINST|IINST1|IINST2|IINST3|ADPS"
            "|ADIR1|ADIR2|ADIR3|IMAX|IMAX1|IMAX2|IMAX3|PMAX|PAPP|HHPHC|MOTDETAT|PPOT|GAZ"
            "|AUTRE|")
LABELS_S = ("|ADSC|VTIC|NGTF|LTARF|EAST|EASF01|EASF02|EASF03|EASF04|EASF05"
            "|EASF06|EASF07|EASF08|EASF09|EASF10|EASD01|EASD02|EASD03|EASD04|EAIT|ERQ1"
            "|ERQ2|ERQ3|ERQ4|IRMS1|IRMS2|IRMS3|URMS1|URMS2|URMS3|PREF|PCOUP|SINSTS"
            "|SINSTS1|SINSTS2|SINSTS3|SINSTI|STGE|MSG1|MSG2|PRM|RELAIS|NTARF|NJOURF"
            "|NJOURF+1|PJOURF+1|PPOINTE|")
# Standard-mode labels that carry a horodate, and only those.
HORODATED = ("|DATE|SMAXSN|SMAXSN1|SMAXSN2|SMAXSN3|SMAXSN-1|SMAXSN1-1|SMAXSN2-1"
             "|SMAXSN3-1|SMAXIN|SMAXIN-1|CCASN|CCASN-1|CCAIN|CCAIN-1|UMOY1|UMOY2|UMOY3"
             "|DPM1|DPM2|DPM3|FPM1|FPM2|FPM3|")
HIST_WH = ("BASE", "HCHC", "HCHP", "EJPHN", "EJPHPM", "BBRHCJB", "BBRHPJB",
           "BBRHCJW", "BBRHPJW", "BBRHCJR", "BBRHPJR")
# What the consumption producer needs, as "|LABEL|...|" (a string, not a set);
# the CLI keeps everything (keep=None).
KEEP = ("|BASE|HCHC|HCHP|EJPHN|EJPHPM|BBRHCJB|BBRHPJB|BBRHCJW|BBRHPJW|BBRHCJR|BBRHPJR"
        "|ADCO|PAPP|PTEC|ISOUSC|ADSC|EAST|SINSTS|PREF|LTARF|NTARF|STGE"
        "|EASF01|EASF02|EASF03|EASF04|EASF05|EASF06|EASF07|EASF08|EASF09|EASF10|")


def checksum(buf, a, b):
    s = 0
    for i in range(a, b):
        s += buf[i]
    return (s & 0x3F) + 0x20


def _text(buf, a, b):
    return bytes(buf[a:b]).decode()


def parse_group(buf, n, mode=None, lax=False):
    """Decode buf[0:n] (between LF and CR). Returns (status, label, horodate, value, mode)
    with status "ok", "checksum" (well formed, bad checksum) or "malformed"."""
    nht = 0
    for i in range(n):
        c = buf[i]
        if c == HT:
            nht += 1
        elif c < SP or c > 0x7E:
            return ("malformed", None, None, None, mode)
    gm = STANDARD if nht else HISTORIC
    if mode is not None and gm != mode:
        return ("malformed", None, None, None, mode)
    if n < 4:
        return ("malformed", None, None, None, gm)
    if gm == HISTORIC:
        if buf[n - 2] != SP:
            return ("malformed", None, None, None, gm)
        end = n - 2           # checked: label SP data
        i = 0
        while i < end and buf[i] != SP:
            i += 1
        if i == 0 or i >= end:
            return ("malformed", None, None, None, gm)
        label = _text(buf, 0, i)
        horo = None
        value = _text(buf, i + 1, end)
        if " " in value:
            return ("malformed", None, None, None, gm)
    else:
        if buf[n - 2] != HT or nht not in (2, 3):
            return ("malformed", None, None, None, gm)
        end = n - 1           # checked: up to and including the last HT
        f = [0]
        for i in range(end - 1):
            if buf[i] == HT:
                f.append(i + 1)
        f.append(end)          # field k is buf[f[k]:f[k+1]-1]
        if f[1] - 1 == 0:
            return ("malformed", None, None, None, gm)
        label = _text(buf, 0, f[1] - 1)
        horo = None
        if len(f) == 4:
            horo = _text(buf, f[1], f[2] - 1)
            # season letter (lower case: the meter's clock is degraded), YYMMDDhhmmss
            if len(horo) != 13 or horo[0] not in "EHeh " or not horo[1:].isdigit():
                return ("malformed", None, None, None, gm)
        value = _text(buf, f[-2], f[-1] - 1)
    for ch in label:
        if not (ch.isdigit() or "A" <= ch <= "Z" or ch in "+-"):
            return ("malformed", None, None, None, gm)
    if not lax:
        lb = "|" + label + "|"
        if gm == HISTORIC:
            bad = lb not in LABELS_H
        else:
            bad = (horo is None) == (lb in HORODATED) or (horo is None and lb not in LABELS_S)
        if bad:
            return ("malformed", None, None, None, gm)
        for ch in value:
            if ch > "_":
                return ("malformed", None, None, None, gm)
    want = digits(lb if not lax else "|" + label + "|")
    if want is not None and (len(value) != want or not value.isdigit()):
        if checksum(buf, 0, end) != buf[n - 1]:
            return ("checksum", label, horo, value, gm)
        return ("malformed", None, None, None, gm)
    if checksum(buf, 0, end) != buf[n - 1]:
        return ("checksum", label, horo, value, gm)
    return ("ok", label, horo, value, gm)


class Frame:
    """One frame: groups {label: [value, horodate, checksum_ok]}, errors list."""

    def __init__(self):
        self.mode = None
        self.groups = {}
        self.errors = []
        self.nbytes = 0
        self.t = None           # for the caller: when the frame began, at the earliest

    def valid(self):
        return not self.errors and bool(self.groups)


class Reader:
    """Feed raw bytes in any chunking; complete frames come out of feed().
    mode: None (auto: per frame, from the first group's separator), HISTORIC or STANDARD.
    keep: labels to keep ("|A|B|" or a set; None: all). Errors are counted by kind in `errors`."""

    def __init__(self, mode=None, keep=None, lax=False, keep_bad=True):
        self.mode = mode
        self.keep = keep
        self.lax = lax
        self.keep_bad = keep_bad
        self.buf = bytearray(GMAX)
        self.n = -1             # -1: not in a group
        self.skip = False       # discarding up to the next LF after a fault
        self.frame = None
        self.errors = {"checksum": 0, "malformed": 0, "interrupted": 0}
        self.frames_ok = 0
        self.frames_bad = 0
        self.bytes = 0

    def _err(self, kind, label=None):
        self.errors[kind] += 1
        f = self.frame
        if f is not None:
            f.errors.append(kind if label is None else kind + ":" + label)

    def _end_group(self):
        f = self.frame
        st, label, horo, value, gm = parse_group(self.buf, self.n, f.mode or self.mode, self.lax)
        self.n = -1
        if st == "malformed":
            self._err("malformed")
            return
        if f.mode is None:
            f.mode = gm
        k = self.keep
        if k is not None and (("|" + label + "|") not in k if isinstance(k, str) else label not in k):
            if st == "checksum":
                self._err("checksum", label)
            return
        if st == "checksum":
            self._err("checksum", label)
            if not self.keep_bad:
                return
        f.groups[label] = [value, horo, st == "ok"]

    def _close(self, out):
        f = self.frame
        self.frame = None
        if f.valid():
            self.frames_ok += 1
        else:
            self.frames_bad += 1
        out.append(f)

    def feed(self, data, n=None):
        """Consume data[0:n]; returns the list of frames completed (valid or not)."""
        out = []
        if n is None:
            n = len(data)
        self.bytes += n
        buf = self.buf
        for i in range(n):
            c = data[i]
            f = self.frame
            if f is not None:
                f.nbytes += 1
            if c == STX:
                if f is not None:          # no ETX: the frame was cut short
                    if self.n >= 0:
                        self._err("malformed")
                    self._err("interrupted")
                    self._close(out)
                self.frame = Frame()
                self.n = -1
                self.skip = False
            elif f is None:
                continue                   # garbage between frames
            elif c == ETX or c == EOT:
                if self.n >= 0:            # a group cut short
                    self._err("malformed")
                    self.n = -1
                if c == EOT:
                    self._err("interrupted")
                self._close(out)
                self.skip = False
            elif c == LF:
                if self.n >= 0:            # CR lost: the group is unusable
                    self._err("malformed")
                self.n = 0
                self.skip = False
            elif c == CR:
                if self.n >= 0:
                    self._end_group()
                elif not self.skip:
                    self._err("malformed")
                self.skip = False
            elif self.n >= 0:
                if self.n >= GMAX:
                    self._err("malformed")
                    self.n = -1
                    self.skip = True
                else:
                    buf[self.n] = c
                    self.n += 1
            elif not self.skip:            # bytes outside a group: LF lost
                self._err("malformed")
                self.skip = True
        return out


    def flush(self):
        """End of input: a frame still open was cut short; returns it in a list."""
        out = []
        if self.frame is not None:
            if self.n >= 0:
                self._err("malformed")
                self.n = -1
            self._err("interrupted")
            self._close(out)
        return out


def _int(groups, label):
    g = groups.get(label)
    if g is None or not g[2]:
        return None
    try:
        return int(g[0])
    except ValueError:
        return None


def _str(groups, label):
    g = groups.get(label)
    if g is None or not g[2]:
        return None
    return g[0].strip()


def summary(frame):
    """The values the consumption report uses, from checksum-valid groups only:
    {"meter", "wh": {tariff: index}, "va", "period", "sub": [value, unit], "status"}."""
    g = frame.groups
    wh = {}
    if frame.mode == HISTORIC:
        for k in HIST_WH:
            v = _int(g, k)
            if v is not None:
                wh[k] = v
        isousc = _int(g, "ISOUSC")
        return {"meter": _str(g, "ADCO"), "wh": wh, "va": _int(g, "PAPP"),
                "period": _str(g, "PTEC"),
                "sub": None if isousc is None else [isousc, "A"], "status": None}
    for i in range(1, 11):
        k = "EASF%02d" % i
        v = _int(g, k)
        if v is not None:
            wh[k] = v
    pref = _int(g, "PREF")
    return {"meter": _str(g, "ADSC"), "wh": wh, "va": _int(g, "SINSTS"),
            "period": _str(g, "LTARF"), "sub": None if pref is None else [pref, "kVA"],
            "status": _str(g, "STGE")}
