# Console log lines: "[hb] event key=value ...". Tests and the bench parse them.
# Never pass a secret here.
def log(event, *pairs):
    # pairs: alternating key, value. No **kwargs: it allocates a dict per call.
    parts = ["[hb]", event]
    i = 0
    while i + 1 < len(pairs):
        parts.append("%s=%s" % (pairs[i], pairs[i + 1]))
        i += 2
    print(" ".join(parts))
