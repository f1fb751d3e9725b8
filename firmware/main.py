# homebox board glue: the agent's boot (agent/boot.py, the path a host runs too),
# then the agent with its serial console (agent/console.py) on the board's UART.
# Kept this small because a board compiles it from source into the heap the agent
# lives in; the rest is .mpy and leaves RAM after boot.
import sys


def run():
    import asyncio

    t = _trial()
    from agent import boot
    box, fw = boot.board()
    del boot
    from agent.compat import forget
    forget("agent.boot")
    if box.cfg.get("console", True):
        from agent import console
        main = console.serve(box, fw)
    else:
        main = box.run()
    asyncio.run(_guarded(main, t) if t else main)
    if box.failed:
        # A dead task (already logged) would leave a box that reports nothing for
        # years: restart, as the task watchdog of a real deployment would.
        print("homebox: an agent task failed; restarting")
        if t:
            _fail("the agent task %s failed" % box.failed)
        restart()
    if getattr(box, "reboot", None):
        # a release was staged and its slot switched (agent/ota_cold.py)
        print("homebox: restarting into release %s" % box.reboot)
        restart()


def _trial():
    # A release on trial (over-the-air update, firmware/otaboot.py): its pointer.
    try:
        import os
        os.stat("/ota/boot.json")
    except OSError:
        return None
    import otaboot
    t = otaboot.trial()
    del sys.modules["otaboot"]
    return t


def _fail(why):
    # The release on trial failed: the next boot goes back to the previous slot.
    try:
        import otaboot
        return otaboot.fail(why)
    except Exception:
        return False


async def _guarded(main, t):
    import asyncio

    import otaboot
    asyncio.create_task(otaboot.guard(t, restart))
    await main


def restart():
    if sys.platform == "esp32":
        import time

        import machine
        time.sleep(5)
        machine.reset()
    raise SystemExit(3)          # the virtual box reboots on this code


try:
    run()
except KeyboardInterrupt:
    pass
except Exception as e:
    sys.print_exception(e)
    # A release on trial that crashes goes back to the previous slot.
    if _fail("crashed: %r" % e) or sys.platform == "esp32":
        restart()
    raise
