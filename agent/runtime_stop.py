# The end of a run (the config's max_cycles or duration, a console stop): the
# outbox drained, the status "offline", a clean DISCONNECT. A module of its own,
# loaded only then: at the end of a long run the heap is at its most fragmented,
# and runtime_cold (the set-up) is several KB that the shutdown does not need.
import asyncio

from agent.compat import cold, mem
from agent.log import log


async def shutdown(box, tasks):
    # Give the outbox a moment to drain, then leave cleanly (status offline).
    for _ in range(int(box.cfg.get("shutdown_drain", 2) * 10)):
        if box.outbox.count == 0 and not box.twin.dirty:
            break
        box.wake.set()
        await asyncio.sleep(0.1)
    c = box.client
    if c is not None and c.connected:
        try:
            await asyncio.wait_for(c.publish(box.t_status, cold("agent.session_cold", "status_doc", box, "offline"), retain=True), 2)
        except Exception:
            pass
        await c.disconnect()
    for t in tasks:
        t.cancel()
    if box.fx_task is not None:
        box.fx_task.cancel()
    cons = box.consumption
    if cons is not None and cons.wm is not None:
        cons.wm.save()           # the water index (the poll task may not run again)
    if hasattr(box.hal, "clock"):
        box.hal.clock.save()
    free, alloc, peak = mem()
    log("stopped", "cycles", box.cycles, "seq", box.seq, "backlog", box.outbox.count,
        "heap_alloc", alloc, "heap_free", free, "heap_peak", peak)
