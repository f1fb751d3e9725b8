# The boot side of over-the-air agent releases (docs/ota.md): which slot this
# boot runs, the try counter of a release on trial, the fall-back to the previous
# slot, and the health-check deadline. Board glue, like boot.py and main.py: it
# is never part of a release, so a broken release cannot break the way back.
# Imported by boot.py on a box that has a pointer file, and forgotten after,
# except on a trial boot: main.py then runs the agent beside guard() and calls
# fail() if the agent crashes.
#
# The pointer, /ota/boot.json (written whole, tmp + rename):
#   {"slot": "b", "state": "trial"|"ok", "tries": 1, "version": 7, "release": "0.2.0",
#    "prev": "a", "prev_version": 6, "prev_release": "0.1.9", "confirm_s": 300,
#    "why": "...",                       # set by main.py when a trial fails
#    "rolled_back": {...}}               # set here on a fall-back, cleared by the agent
# slot "" is the factory agent (/agent, from the bench); "a" and "b" are
# /ota/a/agent and /ota/b/agent.
import json
import os

ROOT = "/ota"
TRIES = 3          # boots of a release on trial without a confirmation, then back


def read(root=ROOT):
    try:
        with open(root + "/boot.json") as f:
            p = json.loads(f.read())
        return p if isinstance(p, dict) else None
    except (OSError, ValueError):
        return None


def write(p, root=ROOT):
    path = root + "/boot.json"
    with open(path + ".tmp", "w") as f:
        f.write(json.dumps(p))
        if hasattr(os, "fsync"):
            f.flush()
            os.fsync(f.fileno())
    os.rename(path + ".tmp", path)


def _bootable(root, slot):
    if not slot:
        return True
    try:
        os.stat("%s/%s/agent/__init__.mpy" % (root, slot))
        return True
    except OSError:
        try:
            os.stat("%s/%s/agent/__init__.py" % (root, slot))
            return True
        except OSError:
            return False


def pick(root=ROOT):
    """The slot this boot runs ("" the factory agent): counts a trial boot, and
    falls back to the previous slot once a trial has used its tries (or was
    marked failed by main.py). Returns the directory to put first on sys.path,
    or None."""
    p = read(root)
    if p is None:
        return None
    slot = p.get("slot") or ""
    if p.get("state") == "trial":
        n = p.get("tries") or 0
        if n >= TRIES or not _bootable(root, slot):
            why = p.get("why") or ("not confirmed after %d boots" % n if n else "the slot holds no agent")
            back = p.get("prev") or ""
            if not _bootable(root, back):
                back = ""
            p = {"slot": back, "state": "ok", "version": p.get("prev_version") or 0,
                 "release": p.get("prev_release"),
                 "rolled_back": {"version": p.get("version"), "release": p.get("release"), "slot": slot,
                                 "reason": why}}
            slot = back
        else:
            p["tries"] = n + 1
        write(p, root)
    return root + "/" + slot if slot else None


def trial(root=ROOT):
    """The pointer when this boot runs a release on trial, else None."""
    p = read(root)
    return p if p is not None and p.get("state") == "trial" else None


def fail(why, root=ROOT):
    """Mark the release on trial failed (the next boot falls back). True if one was."""
    p = trial(root)
    if p is None:
        return False
    p["tries"] = TRIES
    p["why"] = why[:200]
    write(p, root)
    return True


async def guarded(main, restart, root=ROOT):
    # main.py's agent coroutine, beside the health check of the release on trial
    import asyncio
    t = trial(root)
    if t is not None:
        asyncio.create_task(guard(t, restart, root))
    await main


async def guard(t, restart, root=ROOT):
    # The health check's deadline: a release that has not connected and
    # published by then (agent/ota_cold.py confirm) is marked failed, and the
    # board restarts into the previous slot.
    import asyncio
    s = t.get("confirm_s") or 300
    await asyncio.sleep(s)
    p = trial(root)
    if p is not None and p.get("slot") == t.get("slot") and p.get("version") == t.get("version"):
        print("homebox: release %s not confirmed within %d s; back to the previous slot" % (t.get("release"), s))
        fail("no connection and publish within %d s of boot" % s, root)
        restart()
