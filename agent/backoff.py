# Full-jitter exponential backoff (the AWS architecture blog's "full jitter"):
# delay = uniform(0, min(cap, base * 2**attempt)). A fleet that lost its broker
# spreads its reconnects over the whole window instead of arriving in waves.
from agent.compat import urandom


def _uniform01():
    b = urandom(4)
    return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) / 4294967296.0


def full_jitter(attempt, base=1.0, cap=300.0, rand=_uniform01):
    if attempt > 30:
        attempt = 30
    ceiling = base * (1 << attempt)
    if ceiling > cap:
        ceiling = cap
    return rand() * ceiling


def phase(box_id, period):
    # A stable per-box offset in [0, period): periodic work is spread by box id,
    # so a fleet never acts in lock-step. FNV-1a: cheap and the same everywhere.
    h = 2166136261
    for c in box_id.encode():
        h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    return h % int(period) if period >= 1 else 0
