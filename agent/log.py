# Console log lines: "[hb] event key=value ...". Tests and the bench parse them.
# Never pass a secret here. The last RING_MAX lines stay in RAM for the serial
# console's `log` command (agent/console.py).
RING = []
RING_MAX = 8


def log(event, *pairs):
    # pairs: alternating key, value. No **kwargs: it allocates a dict per call.
    parts = ["[hb]", event]
    i = 0
    while i + 1 < len(pairs):
        parts.append("%s=%s" % (pairs[i], pairs[i + 1]))
        i += 2
    line = " ".join(parts)
    print(line)
    RING.append(line)
    if len(RING) > RING_MAX:
        RING.pop(0)
