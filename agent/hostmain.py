# Entry point on a host (CPython or the MicroPython unix port):
#     micropython -m agent.hostmain CONFIG.json [SECRETS.json]
# On the ESP32 the same runtime is started by firmware/main.py.
import sys


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("-")]
    if not args:
        print("usage: agent.hostmain CONFIG.json [SECRETS.json]")
        return 2
    from agent import boot
    box = boot.build(args[0], args[1] if len(args) > 1 else None)
    del boot
    from agent.compat import forget
    forget("agent.boot")
    import asyncio
    import gc
    gc.collect()
    asyncio.run(box.run())
    return 3 if box.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
