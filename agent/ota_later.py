# A release document, handled a while after it arrived (agent/runtime_cold.py): it
# comes retained right after a connection, the heap's busiest moment, and the
# release's code (agent/ota_cold.py, then agent/ota_install.py) is the largest cold
# code the box loads. This module is all that waits in RAM, with the document.

from agent.compat import cold


async def run(box, payload):
    # the config's ota_delay: s of box time after the document came (default 20)
    await box.hal.sleep(box.cfg.get("ota_delay", 20))
    me = box.ota_task
    box.ota_task = None             # handle() cancels a task under way: not this one
    try:
        r = cold("agent.ota_cold", "handle", box, payload)
        if r == "install":
            box.ota_task = me       # the install runs in this task, which a newer release cancels
            doc, box.ota_doc = box.ota_doc, None
            await cold("agent.ota_install", "run", box, doc)     # which ends the task
    except Exception as e:
        # the release's code did not fit in the heap (MemoryError): the document
        # comes again at the next connection
        box.ota_task = None
        from agent.log import log
        log("release_failed", "error", repr(e))
