# Loaded by agent.compat.cold() in tests/onbox/test_cold.py; counts its loads.
import sys

from agent.compat import cold
from coldpkg import LOADS

LOADS[0] += 1
NAME = "coldpkg.probe"


def nested(k):
    # k calls deep into this same module; returns what the deepest one saw.
    if k:
        return cold(NAME, "nested", k - 1)
    return (LOADS[0], NAME in sys.modules, sys.modules.get(NAME))


def boom(k=0):
    if k:
        return cold(NAME, "boom", k - 1)
    raise ValueError("boom")


def caught():
    # A nested call that raises, caught here: the outer call's copy stays loaded.
    try:
        cold(NAME, "boom")
    except ValueError:
        pass
    return (LOADS[0], NAME in sys.modules)


async def coro(x):
    return x + 1
