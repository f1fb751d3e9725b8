# The virtual box's ROM boot, before main.py: what MicroPython's esp32 port does
# in C. Runs under the MicroPython unix port, loaded by vbox/apprunner.py and
# dropped from RAM once the filesystem is mounted (a board spends no heap on it).
import os
import sys

import vfs
from app_flashdev import SEC, FlashBdev


def fs_corrupted():
    import time
    while 1:
        print("The filesystem appears to be corrupted. If you had important data there, you\n"
              "may want to make a flash snapshot to try to recover it. Otherwise, perform\n"
              "factory reprogramming of MicroPython firmware (completely erase flash, followed\n"
              "by firmware programming).\n")
        time.sleep(3)


def mount(bdev):
    try:
        fs = vfs.VfsLfs2(bdev, readsize=32, progsize=32, lookahead=32)
    except OSError:
        buf = bytearray(SEC)
        bdev.readblocks(0, buf)
        for b in buf:
            if b != 0xFF:
                fs_corrupted()
        print("Performing initial setup")
        vfs.VfsLfs2.mkfs(bdev, readsize=32, progsize=32, lookahead=32)
        fs = vfs.VfsLfs2(bdev, readsize=32, progsize=32, lookahead=32)
        vfs.umount("/")
        vfs.mount(fs, "/")
        with open("/boot.py", "w") as f:
            f.write("# This file is executed on every boot (including wake-boot from deepsleep)\n")
        return
    vfs.umount("/")
    vfs.mount(fs, "/")


def start(argv):
    # Returns the bytes the mounted filesystem holds in the heap: a board's C boot
    # holds as much (the rest of this emulation it does not hold at all).
    import gc
    path, off, size, scenario = argv[1:5]
    sc = None
    if scenario != "-":
        import json
        with open(scenario) as f:
            sc = json.load(f)

    class Env:
        pass

    Env.scenario = sc
    # The eFuse base MAC, as machine.unique_id() gives it on the chip.
    Env.mac = argv[6]
    # The emulated ESP32 board (vbox/board/): its host's UDP port, the reset
    # cause, the RTC memory that survived the reset; its modules are mounted at
    # /board, which the runner puts on sys.path ahead of the built-ins.
    Env.board = int(argv[9]) if len(argv) > 9 and argv[9] != "-" else None
    Env.reset = int(argv[10]) if len(argv) > 10 else 1
    Env.rtcmem = bytes.fromhex(argv[11]) if len(argv) > 11 and argv[11] != "-" else b""
    # Box time's speedup at power-on (vbox --speedup; the config's may follow).
    Env.speedup = float(argv[12]) if len(argv) > 12 else 1
    sys.modules["vboxenv"] = Env
    flash = open(path, "r+b")
    Env.flash = flash
    board = None
    if Env.board is not None:
        board = vfs.VfsPosix(sys.path[0] + "/board")
    bdev = FlashBdev(flash, int(off), int(size))
    gc.collect()
    before = gc.mem_alloc()
    mount(bdev)
    gc.collect()
    held = gc.mem_alloc() - before
    if board is not None:
        vfs.mount(board, "/board")
    os.chdir("/")
    return held
