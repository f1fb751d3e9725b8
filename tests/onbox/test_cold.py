# agent.compat.cold(): the one cold-call helper (import, call, forget after the
# outermost call into the module). CPython and MicroPython.
import sys

import coldpkg

from agent import compat
from agent.compat import cold

NAME = "coldpkg.probe"


def _gone():
    assert NAME not in sys.modules
    assert not hasattr(coldpkg, "probe")
    assert NAME not in compat._depth


def test_a_call_loads_the_module_then_forgets_it(tmp):
    _gone()
    n = coldpkg.LOADS[0]
    loads, present, mod = cold(NAME, "nested", 0)
    assert loads == n + 1 and present and mod is not None
    _gone()
    cold(NAME, "nested", 0)
    assert coldpkg.LOADS[0] == n + 2          # a later call loads it afresh
    _gone()


def test_nested_calls_share_one_copy(tmp):
    n = coldpkg.LOADS[0]
    loads, present, mod = cold(NAME, "nested", 5)
    assert loads == n + 1, (loads, n)         # one load for six calls, five of them nested
    assert present                            # still loaded at the deepest call
    assert coldpkg.LOADS[0] == n + 1
    _gone()


def test_an_exception_propagates_and_still_forgets(tmp):
    for depth in (0, 3):
        try:
            cold(NAME, "boom", depth)
        except ValueError as e:
            assert str(e) == "boom"
        else:
            assert False, "no exception"
        _gone()


def test_a_caught_nested_exception_keeps_the_outer_copy(tmp):
    n = coldpkg.LOADS[0]
    loads, present = cold(NAME, "caught")
    assert loads == n + 1 and present
    assert coldpkg.LOADS[0] == n + 1
    _gone()


def test_a_missing_function_or_module_leaves_no_count(tmp):
    try:
        cold(NAME, "no_such_function")
    except AttributeError:
        pass
    else:
        assert False, "no AttributeError"
    _gone()
    try:
        cold("coldpkg.no_such_module", "f")
    except ImportError:
        pass
    else:
        assert False, "no ImportError"
    assert "coldpkg.no_such_module" not in compat._depth


def test_a_coroutine_outlives_its_module_in_sys_modules(tmp):
    import asyncio
    c = cold(NAME, "coro", 1)
    _gone()                                   # forgotten at once; the coroutine holds its code
    assert asyncio.run(c) == 2
