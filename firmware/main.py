# homebox board glue: the agent's boot (agent/boot.py, the path a host runs too),
# then the agent with its serial console (agent/console.py) on the board's UART.
# Kept this small because a board compiles it from source into the heap the agent
# lives in; the rest is .mpy and leaves RAM after boot.
import sys


def run():
    import asyncio

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
    # a release on trial (boot.py left firmware/otaboot.py loaded): with its deadline
    g = sys.modules.get("otaboot")
    asyncio.run(g.guarded(main, restart) if g else main)
    if box.failed:
        # A dead task (already logged) would leave a box that reports nothing for
        # years: restart, as the task watchdog of a real deployment would.
        print("homebox: an agent task failed; restarting")
        restart()
    if getattr(box, "reboot", None):
        print("homebox: restarting into release", box.reboot)    # agent/ota_cold.py
        restart()


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
    g = sys.modules.get("otaboot")        # a release on trial goes back at the next boot
    if (g and g.fail("crashed: %r" % e)) or sys.platform == "esp32":
        restart()
    raise
