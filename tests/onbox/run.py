# Runs on-box unit tests under whichever interpreter runs this file
# (CPython or MicroPython), without pytest:
#     micropython tests/onbox/run.py test_outbox [test_name ...]
# Prints "PASS name" / "FAIL name: error" per test and exits 1 on any failure.
# Every test function takes one argument: a fresh scratch directory.
import os
import sys

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path.insert(0, HERE)

_counter = [0]


def scratch():
    base = os.getenv("HB_TMP") or "/tmp"
    _counter[0] += 1
    d = "%s/t%d" % (base, _counter[0])
    from agent.fsutil import makedirs
    makedirs(d)
    return d


def main(argv):
    mod = __import__(argv[1])
    wanted = argv[2:]
    names = [n for n in dir(mod) if n.startswith("test_") and (not wanted or n in wanted)]
    names.sort()
    failed = 0
    for n in names:
        fn = getattr(mod, n)
        try:
            fn(scratch())
            print("PASS", n)
        except Exception as e:
            failed += 1
            print("FAIL %s: %s: %s" % (n, type(e).__name__, e))
            if hasattr(sys, "print_exception"):
                sys.print_exception(e)
            else:
                import traceback
                traceback.print_exc()
    print("SUMMARY pass=%d fail=%d" % (len(names) - failed, failed))
    return 1 if failed else 0


sys.exit(main(sys.argv))
